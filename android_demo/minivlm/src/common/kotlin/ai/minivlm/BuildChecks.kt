package ai.minivlm

import java.io.File

/** The accelerator a user picks on Android; AUTO follows the build (its delegate). */
enum class Accelerator { AUTO, CPU, GPU, NPU }

/** What the user asked for; `threads` 0 = auto. `availableCores` is the device's (Runtime.availableProcessors()). */
data class RuntimeRequest(val accelerator: Accelerator = Accelerator.AUTO, val threads: Int = 0, val availableCores: Int)

/**
 * What the app applies and shows: the backend ("executorch" or "litert"), the accelerator and CPU thread count it
 * runs with, and a note on what was changed or is worth knowing ("" when nothing), e.g. that an NNAPI build runs
 * on LiteRT's NPU accelerator.
 */
data class RuntimePlan(val backend: String, val accelerator: Accelerator, val threads: Int, val note: String)

/** How to decode a photo: Android's BitmapFactory `inSampleSize`, and the longest side preprocessing can use. */
data class DecodeSize(val sampleSize: Int, val maxSide: Int)

/**
 * Decisions about a build folder before anything runs, made by the native core (sdk/native, minivlm.h "Build
 * checks") so that Android and iOS decide alike. Every failure is a [MiniVlmException] with a one-line message.
 */
object BuildChecks {
    /**
     * Verifies `dir` for `runtime` ("executorch", "litert"): the manifest's own checksum, the sha256 of every file it
     * lists, that the build targets this runtime, and that `runtimeVersion` (null: unchecked) can run what the
     * exporter's version wrote (same major, minor at least the build's). Hashes every byte of the build (minivlm.h
     * gives the cost): `AndroidMiniVlm.open` calls it at every load.
     */
    fun verify(dir: File, runtime: String, runtimeVersion: String?) {
        Native.buildVerify(dir.path, runtime, runtimeVersion)
    }

    /** The plan Android can honour for the build (platform "android"); refused in one line when it cannot. */
    fun plan(dir: File, request: RuntimeRequest): RuntimePlan = withManifest(dir) { m ->
        val threads = IntArray(1)
        val fields = Native.planRuntime(m, "android", request.accelerator.name.lowercase(), null, request.threads, request.availableCores, threads)
        RuntimePlan(fields[0], Accelerator.valueOf(fields[1].uppercase()), threads[0], fields[3])
    }

    /** The decode size of a `width` x `height` photo for this build's preprocessing. */
    fun decodeSize(dir: File, width: Int, height: Int): DecodeSize = withManifest(dir) { m ->
        val size = Native.decodeSize(m, width, height)
        DecodeSize(size[0], size[1])
    }

    private fun <T> withManifest(dir: File, body: (Long) -> T): T {
        val manifest = Native.buildManifestLoad(dir.path)
        try {
            return body(manifest)
        } finally {
            Native.manifestFree(manifest)
        }
    }
}

package ai.minivlm

import kotlin.math.max
import kotlin.math.roundToInt

/**
 * How the Android runners apply a runtime plan, kept apart from the runtimes so that the JVM test checks it.
 * Accelerator names are the plan's, lower case: "auto", "cpu", "gpu", "npu".
 */
object AppliedRuntime {
    private fun expect(ok: Boolean, message: () -> String) {
        if (!ok) throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, message())
    }

    private val ACCELERATORS = listOf("auto", "cpu", "gpu", "npu")

    /**
     * The accelerators to try, in order, for a plan that chose `planned` when the user asked for `requested`: the
     * planned one, then the CPU only when the user left the choice to the app ("auto"). A GPU or NPU the user chose
     * explicitly either loads or fails with its reason; it never silently becomes the CPU.
     */
    fun attempts(requested: String, planned: String): List<String> {
        expect(requested in ACCELERATORS) { "requested accelerator '$requested', expected one of $ACCELERATORS" }
        expect(planned in ACCELERATORS.drop(1)) { "planned accelerator '$planned', expected cpu, gpu or npu" }
        return if (requested == "auto" && planned != "cpu") listOf(planned, "cpu") else listOf(planned)
    }

    /** The note a fallback adds to the plan's: which accelerator failed and why, in one line. */
    fun fallbackNote(failed: String, reason: String): String =
        "${failed.uppercase()} could not load the model (${reason.lineSequence().firstOrNull()?.trim().orEmpty()}); running on the CPU"

    /** One line for the UI: `litert · GPU · 4 threads — note`. Threads apply to the CPU only. */
    fun describe(backend: String, accelerator: String, threads: Int, note: String): String {
        val threadPart = if (accelerator == "cpu") " · ${if (threads > 0) "$threads threads" else "threads: runtime default"}" else ""
        return "$backend · ${accelerator.uppercase()}$threadPart" + if (note.isNotBlank()) " — $note" else ""
    }

    /** The build's runtime name for `BuildChecks.verify` from a manifest `target` ("tflite" builds run on LiteRT). */
    fun runtimeOf(target: String): String = when (target) {
        "tflite" -> "litert"
        else -> target
    }

    /**
     * The size to decode a `width`×`height` photo to, given the core's decode size: decoding with `sampleSize`
     * (Android's inSampleSize, a power of two) gives ceil(w / s) × ceil(h / s); that is then scaled so that its
     * longest side is at most `maxSide`, keeping the aspect ratio (each side at least 1 pixel).
     */
    fun decodedSize(width: Int, height: Int, sampleSize: Int, maxSide: Int): Pair<Int, Int> {
        expect(width > 0 && height > 0) { "image is ${width}x$height, expected a positive size" }
        expect(sampleSize >= 1 && sampleSize and (sampleSize - 1) == 0) { "sample size $sampleSize, expected a power of two" }
        expect(maxSide > 0) { "max side $maxSide, expected > 0" }
        val w = (width + sampleSize - 1) / sampleSize
        val h = (height + sampleSize - 1) / sampleSize
        val longest = max(w, h)
        if (longest <= maxSide) return w to h
        val k = maxSide.toDouble() / longest
        return max(1, (w * k).roundToInt()) to max(1, (h * k).roundToInt())
    }
}

package ai.minivlm.android

import ai.minivlm.Accelerator
import ai.minivlm.AppliedRuntime
import ai.minivlm.BuildChecks
import ai.minivlm.BuildConfig
import ai.minivlm.BuildInstall
import ai.minivlm.EfficientVlm
import ai.minivlm.ErrorKind
import ai.minivlm.GraphBackend
import ai.minivlm.GraphReplay
import ai.minivlm.GraphRunner
import ai.minivlm.GraphSpec
import ai.minivlm.Image
import ai.minivlm.Json
import ai.minivlm.JsonPath
import ai.minivlm.MiniVlm
import ai.minivlm.MiniVlmException
import ai.minivlm.Native
import ai.minivlm.RuntimePlan
import ai.minivlm.RuntimeRequest
import ai.minivlm.buildFamily
import android.content.Context
import android.content.res.AssetManager
import android.graphics.Bitmap
import java.io.File
import java.nio.ByteBuffer

/** What runs a build's graphs: the runtime, the accelerator that actually loaded the graphs, CPU threads and why. */
class RunningOn(val backend: String, val accelerator: String, val threads: Int, val note: String) {
    override fun toString(): String = AppliedRuntime.describe(backend, accelerator, threads, note)
}

/** A graph backend with what it runs on; closing it releases what it compiled (runners close on their own). */
class PlannedBackend(val plan: RuntimePlan, val runningOn: RunningOn, private val backend: GraphBackend, private val release: () -> Unit) :
    GraphBackend, AutoCloseable {
    override fun open(buildDir: File, spec: GraphSpec): GraphRunner = backend.open(buildDir, spec)
    override fun close() = release()
}

/**
 * An opened build of either family: [miniVlm] (detections, caption, answers, match) or [efficientVlm] (caption,
 * answers, match; no detector). [plan] is what `BuildChecks.plan` chose for the request, [runningOn] what loaded.
 */
class AndroidVlm internal constructor(
    val buildDir: File,
    val family: String,
    val plan: RuntimePlan,
    val runningOn: RunningOn,
    /** Install, checks, plan and pipeline construction (a LiteRT build's graphs compile here), in ms. */
    val loadMs: Double,
    val miniVlm: MiniVlm?,
    val efficientVlm: EfficientVlm?,
    private val backend: PlannedBackend,
) : AutoCloseable {
    override fun close() {
        miniVlm?.close()
        efficientVlm?.close()
        backend.close()
    }
}

/** Android entry points: install a build from the APK's assets, check it, plan and open its runtime, convert bitmaps. */
object AndroidMiniVlm {
    /** The version of each linked graph runtime (from the version catalog), for `BuildChecks.verify`. */
    fun linkedRuntimeVersion(runtime: String): String? = when (runtime) {
        "executorch" -> BuildConfig.EXECUTORCH_VERSION
        "litert" -> BuildConfig.LITERT_VERSION
        else -> null
    }

    /**
     * Opens the build copied into `assets/<assetDir>/` (a folder written by `minivlm-convert`, MiniVLM or EfficientVLM):
     * installs it to app storage, plans the runtime for `request` (`BuildChecks.plan`), verifies the build against the
     * linked runtime (`BuildChecks.verify`: file hashes, target, tool versions) and opens the family's pipeline.
     * Every failure is a one-line [MiniVlmException].
     */
    fun open(
        context: Context,
        request: RuntimeRequest = RuntimeRequest(availableCores = Runtime.getRuntime().availableProcessors()),
        assetDir: String = "minivlm",
    ): AndroidVlm {
        val start = System.nanoTime()
        val dir = install(context.assets, assetDir, context.filesDir)
        val backend = openBackend(dir, request)
        try {
            val family = buildFamily(dir)
            val mini = if (family == "minivlm") MiniVlm(dir, backend) else null
            val efficient = if (family == "efficientvlm") EfficientVlm(dir, backend) else null
            if (mini == null && efficient == null) throw MiniVlmException(ErrorKind.CONFIG, "manifest family '$family', expected minivlm or efficientvlm")
            mini?.loadGraphs()
            efficient?.loadGraphs()
            return AndroidVlm(dir, family, backend.plan, backend.runningOn, (System.nanoTime() - start) / 1e6, mini, efficient, backend)
        } catch (e: Throwable) {
            backend.close()
            throw e
        }
    }

    /**
     * Plans, verifies and opens the graph runtime of the build in `dir` for `request`: ExecuTorch (XNNPACK, CPU) or
     * LiteRT's CompiledModel on the planned accelerator; a GPU or NPU that fails to load falls back to the CPU only
     * when the request left the accelerator to the app (AUTO), and [PlannedBackend.runningOn] says so.
     */
    fun openBackend(dir: File, request: RuntimeRequest): PlannedBackend {
        val plan = BuildChecks.plan(dir, request)
        BuildChecks.verify(dir, plan.backend, linkedRuntimeVersion(plan.backend))
        // The plan names the accelerator it chose; AUTO there means the runtime's default, the CPU.
        val planned = if (plan.accelerator == Accelerator.AUTO) "cpu" else plan.accelerator.name.lowercase()
        val attempts = AppliedRuntime.attempts(request.accelerator.name.lowercase(), planned)
        return when (plan.backend) {
            "executorch" -> {
                if ("cpu" !in attempts) {
                    throw MiniVlmException(ErrorKind.CONFIG, "ExecuTorch runs this build with XNNPACK on the CPU; ${planned.uppercase()} is not available for it (choose CPU or AUTO)")
                }
                val note = listOfNotNull(plan.note.takeIf { it.isNotBlank() },
                    if (planned != "cpu") AppliedRuntime.fallbackNote(planned, "ExecuTorch's XNNPACK delegate runs on the CPU") else null).joinToString("; ")
                val weights = manifest(dir).opt("weights_file")?.string?.let { File(dir, it) }
                PlannedBackend(plan, RunningOn("executorch", "cpu", plan.threads, note),
                    GraphBackend { d, spec -> ExecuTorchRunner(File(d, spec.file), weights, spec, plan.threads) }) {}
            }
            "litert" -> {
                val files = GraphReplay.graphSpecs(dir).values.map { it.file }.toSet()
                val compiled = LiteRtBackend.compile(dir, files, attempts, plan.threads)
                val note = listOf(plan.note, compiled.fallbackNote).filter { it.isNotBlank() }.joinToString("; ")
                PlannedBackend(plan, RunningOn("litert", compiled.accelerator, plan.threads, note), compiled, compiled::close)
            }
            else -> throw MiniVlmException(ErrorKind.CONFIG, "a '${plan.backend}' build does not run on Android; convert with --target executorch or tflite")
        }
    }

    private fun manifest(dir: File): JsonPath =
        JsonPath(Json.parseObject(File(dir, "manifest.json").readText(), "manifest.json"), "manifest")

    /**
     * Copies `assets/<assetDir>/` to `<into>/<assetDir>` (both runtimes load graphs from file paths), again whenever
     * its manifest.json changes (a new build in a new APK). The copy goes to a staging folder renamed into place
     * (`BuildInstall.replace`): the installed copy is deleted only once the new one has taken its name.
     */
    fun install(assets: AssetManager, assetDir: String, into: File): File {
        val manifest = try {
            assets.open("$assetDir/manifest.json").use { it.readBytes() }
        } catch (e: java.io.IOException) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "no build in assets/$assetDir (manifest.json missing); see android_demo/README.md", e)
        }
        val target = File(into, assetDir)
        val installed = File(target, "manifest.json")
        if (installed.isFile && installed.readBytes().contentEquals(manifest)) return target
        val staging = File(into, "$assetDir.partial").apply { deleteRecursively() }
        copyTree(assets, assetDir, staging)
        BuildInstall.replace(staging, target) // the installed copy goes only once the new one is in place
        return target
    }

    private fun copyTree(assets: AssetManager, path: String, to: File) {
        val children = assets.list(path).orEmpty()
        if (children.isEmpty()) { // a file
            to.parentFile?.mkdirs()
            assets.open(path).use { input -> to.outputStream().use { input.copyTo(it) } }
            return
        }
        to.mkdirs()
        for (child in children) copyTree(assets, "$path/$child", File(to, child))
    }
}

/** The pixels of an ARGB_8888 bitmap (R, G, B, A bytes in memory) as an [Image] for the core. */
fun Bitmap.toMiniVlmImage(): Image {
    val argb = if (config == Bitmap.Config.ARGB_8888) this else copy(Bitmap.Config.ARGB_8888, false)
    val buffer = ByteBuffer.allocate(argb.rowBytes * argb.height)
    argb.copyPixelsToBuffer(buffer)
    return Image(buffer.array(), argb.width, argb.height, argb.rowBytes, Native.PIXELS_RGBA8)
}

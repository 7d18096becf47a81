package ai.minivlm.android

import ai.minivlm.BuildSpec
import ai.minivlm.ErrorKind
import ai.minivlm.GraphBackend
import ai.minivlm.Image
import ai.minivlm.MiniVlm
import ai.minivlm.MiniVlmException
import ai.minivlm.Native
import android.content.Context
import android.graphics.Bitmap
import java.io.File
import java.nio.ByteBuffer

/** Android entry points: install a build from the APK's assets, pick its runtime, convert bitmaps. */
object AndroidMiniVlm {
    /**
     * Opens the build copied into `assets/<assetDir>/` (a folder written by `minivlm-convert`). Both
     * runtimes load graphs from file paths, so the folder is copied once to app storage; it is copied
     * again whenever its manifest.json changes (a new build in a new APK).
     */
    fun open(context: Context, assetDir: String = "minivlm"): MiniVlm {
        val dir = install(context, assetDir)
        return MiniVlm(dir, backendFor(BuildSpec.load(dir)))
    }

    /** The graph runtime of a build's manifest `target` (an ExecuTorch build's graphs share its weights file). */
    fun backendFor(build: BuildSpec): GraphBackend = when (build.target) {
        "executorch" -> GraphBackend { dir, spec -> ExecuTorchRunner(File(dir, spec.file), build.weightsFile?.let { File(dir, it) }, spec) }
        "tflite" -> LiteRtRunner.backend() // the build's one model.tflite, one interpreter for all its graphs
        else -> throw MiniVlmException(ErrorKind.CONFIG, "a '${build.target}' build does not run on Android; convert with --target executorch or tflite")
    }

    fun install(context: Context, assetDir: String): File {
        val assets = context.assets
        val manifest = try {
            assets.open("$assetDir/manifest.json").use { it.readBytes() }
        } catch (e: java.io.IOException) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "no build in assets/$assetDir (manifest.json missing); see android_demo/README.md", e)
        }
        val target = File(context.filesDir, assetDir)
        val installed = File(target, "manifest.json")
        if (installed.isFile && installed.readBytes().contentEquals(manifest)) return target
        val staging = File(context.filesDir, "$assetDir.partial").apply { deleteRecursively() }
        copyTree(context, assetDir, staging)
        target.deleteRecursively()
        if (!staging.renameTo(target)) throw MiniVlmException(ErrorKind.IO_ERROR, "cannot move the build into ${target.path}")
        return target
    }

    private fun copyTree(context: Context, path: String, to: File) {
        val children = context.assets.list(path).orEmpty()
        if (children.isEmpty()) { // a file
            to.parentFile?.mkdirs()
            context.assets.open(path).use { input -> to.outputStream().use { input.copyTo(it) } }
            return
        }
        to.mkdirs()
        for (child in children) copyTree(context, "$path/$child", File(to, child))
    }
}

/** The pixels of an ARGB_8888 bitmap (R, G, B, A bytes in memory) as an [Image] for the core. */
fun Bitmap.toMiniVlmImage(): Image {
    val argb = if (config == Bitmap.Config.ARGB_8888) this else copy(Bitmap.Config.ARGB_8888, false)
    val buffer = ByteBuffer.allocate(argb.rowBytes * argb.height)
    argb.copyPixelsToBuffer(buffer)
    return Image(buffer.array(), argb.width, argb.height, argb.rowBytes, Native.PIXELS_RGBA8)
}

package ai.minivlm.demo

import ai.minivlm.AppliedRuntime
import ai.minivlm.BuildChecks
import android.content.Context
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ImageDecoder
import android.graphics.Matrix
import android.media.ExifInterface
import android.net.Uri
import android.os.Build
import java.io.File
import java.io.IOException
import java.io.InputStream

/** Where a photo comes from: a content URI (gallery, camera file) or a file in the APK's assets (demo scenes). */
sealed interface PhotoSource {
    data class Content(val uri: Uri) : PhotoSource
    data class Asset(val path: String) : PhotoSource
}

/**
 * Decodes photos straight to the size the model needs, never at full resolution: the native core's decode size
 * (`BuildChecks.decodeSize`: a power-of-two sample size and the longest side preprocessing uses) gives the target
 * size (`AppliedRuntime.decodedSize`). API 28+: ImageDecoder with that target size (it samples while decoding and
 * applies the EXIF orientation). API 26–27: BitmapFactory with inSampleSize, then a scaled bitmap if still larger,
 * then the EXIF rotation.
 */
class PhotoDecoder(private val context: Context) {
    fun decode(source: PhotoSource, buildDir: File): Bitmap =
        if (Build.VERSION.SDK_INT >= 28) decodeWithImageDecoder(source, buildDir) else decodeWithBitmapFactory(source, buildDir)

    private fun decodeWithImageDecoder(source: PhotoSource, buildDir: File): Bitmap {
        val src = when (source) {
            is PhotoSource.Content -> ImageDecoder.createSource(context.contentResolver, source.uri)
            is PhotoSource.Asset -> ImageDecoder.createSource(context.assets, source.path)
        }
        return ImageDecoder.decodeBitmap(src) { decoder, info, _ ->
            val d = BuildChecks.decodeSize(buildDir, info.size.width, info.size.height)
            val (w, h) = AppliedRuntime.decodedSize(info.size.width, info.size.height, d.sampleSize, d.maxSide)
            decoder.setTargetSize(w, h)
            decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE // the core reads the pixels on the CPU
        }
    }

    private fun decodeWithBitmapFactory(source: PhotoSource, buildDir: File): Bitmap {
        val bounds = BitmapFactory.Options().apply { inJustDecodeBounds = true }
        open(source).use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("not an image this device can decode")
        val d = BuildChecks.decodeSize(buildDir, bounds.outWidth, bounds.outHeight)
        val options = BitmapFactory.Options().apply {
            inSampleSize = d.sampleSize
            inPreferredConfig = Bitmap.Config.ARGB_8888
        }
        val sampled = open(source).use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw IOException("the image could not be decoded")
        // BitmapFactory rounds the sampled size its own way: cap what it produced.
        val (w, h) = AppliedRuntime.decodedSize(sampled.width, sampled.height, 1, d.maxSide)
        val scaled = if (w != sampled.width || h != sampled.height) {
            Bitmap.createScaledBitmap(sampled, w, h, true).also { if (it !== sampled) sampled.recycle() }
        } else {
            sampled
        }
        return upright(scaled, open(source).use { ExifInterface(it) }.getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL))
    }

    private fun open(source: PhotoSource): InputStream = when (source) {
        is PhotoSource.Content -> context.contentResolver.openInputStream(source.uri) ?: throw IOException("cannot open ${source.uri}")
        is PhotoSource.Asset -> context.assets.open(source.path)
    }

    private fun upright(bitmap: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_ROTATE_90 -> m.postRotate(90f)
            ExifInterface.ORIENTATION_ROTATE_180 -> m.postRotate(180f)
            ExifInterface.ORIENTATION_ROTATE_270 -> m.postRotate(270f)
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.postScale(-1f, 1f)
            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.postScale(1f, -1f)
            ExifInterface.ORIENTATION_TRANSPOSE -> { m.postRotate(90f); m.postScale(-1f, 1f) }
            ExifInterface.ORIENTATION_TRANSVERSE -> { m.postRotate(270f); m.postScale(-1f, 1f) }
            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, true).also { if (it !== bitmap) bitmap.recycle() }
    }
}

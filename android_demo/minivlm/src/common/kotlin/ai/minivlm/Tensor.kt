package ai.minivlm

import java.nio.Buffer
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.FloatBuffer
import java.nio.LongBuffer

/** Element types the graphs exchange with the host (manifest `dtype`; runtimes may use others inside). */
enum class DType(val manifestName: String, val bytes: Int) {
    FLOAT32("float32", 4), INT64("int64", 8), INT32("int32", 4), FLOAT16("float16", 2), BOOL("bool", 1), UINT8("uint8", 1);

    companion object {
        fun of(name: String): DType = entries.firstOrNull { it.manifestName == name }
            ?: throw MiniVlmException(ErrorKind.BAD_FILE, "unknown dtype '$name'")
    }
}

/**
 * A host tensor: C-order data in a java.nio buffer (heap or direct) and its shape.
 *
 * Host code only ever holds float32 or int64 (the manifest's graph dtypes); a runner converts to the
 * runtime's own dtypes (int32 token ids in TFLite/Core ML, float16 outputs of an fp16 build) at its edge.
 * Direct buffers handed over by the caption callback point into native memory that is valid only during
 * that callback.
 */
sealed class Tensor(val shape: LongArray) {
    val count: Int = shape.fold(1L) { a, b -> a * b }.also {
        if (shape.any { d -> d < 0 } || it > Int.MAX_VALUE) throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, "bad shape ${shape.contentToString()}")
    }.toInt()

    abstract val dtype: DType
    abstract val buffer: Buffer

    fun shapeString(): String = shape.joinToString(", ", "(", ")")

    class F32(shape: LongArray, val data: FloatBuffer) : Tensor(shape) {
        init { check(data.remaining() == count) { "float tensor ${shapeString()} holds ${data.remaining()} values" } }
        override val dtype get() = DType.FLOAT32
        override val buffer: Buffer get() = data
        /** A copy as a float array (reads from the buffer's position, leaves it unchanged). */
        fun toArray(): FloatArray = FloatArray(count).also { data.duplicate().get(it) }
    }

    class I64(shape: LongArray, val data: LongBuffer) : Tensor(shape) {
        init { check(data.remaining() == count) { "int64 tensor ${shapeString()} holds ${data.remaining()} values" } }
        override val dtype get() = DType.INT64
        override val buffer: Buffer get() = data
        fun toArray(): LongArray = LongArray(count).also { data.duplicate().get(it) }
    }

    companion object {
        fun of(data: FloatArray, vararg shape: Long): F32 = F32(shape, FloatBuffer.wrap(data))
        fun of(data: LongArray, vararg shape: Long): I64 = I64(shape, LongBuffer.wrap(data))

        /** A native-order direct byte buffer of `bytes` bytes (what JNI-based runtimes want). */
        fun directBytes(bytes: Int): ByteBuffer = ByteBuffer.allocateDirect(bytes).order(ByteOrder.nativeOrder())

        /** This float data in a direct native-order buffer (the same buffer when it already is one). */
        fun direct(data: FloatBuffer): FloatBuffer =
            if (data.isDirect && data.order() == ByteOrder.nativeOrder()) data
            else directBytes(data.remaining() * 4).asFloatBuffer().also { it.put(data.duplicate()); it.rewind() }

        /** IEEE 754 half (as its 16 bits) to float: fp16 outputs of a half-precision build. */
        fun halfToFloat(bits: Short): Float {
            val h = bits.toInt() and 0xFFFF
            val sign = (h ushr 15) shl 31
            val exponent = (h ushr 10) and 0x1F
            val mantissa = h and 0x3FF
            val f = when {
                exponent == 0 && mantissa == 0 -> sign
                exponent == 0 -> { // subnormal: renormalise
                    var e = -1; var m = mantissa
                    while (m and 0x400 == 0) { m = m shl 1; e++ }
                    sign or ((127 - 15 - e) shl 23) or ((m and 0x3FF) shl 13)
                }
                exponent == 0x1F -> sign or 0x7F800000 or (mantissa shl 13)
                else -> sign or ((exponent - 15 + 127) shl 23) or (mantissa shl 13)
            }
            return java.lang.Float.intBitsToFloat(f)
        }

        fun direct(data: LongBuffer): LongBuffer =
            if (data.isDirect && data.order() == ByteOrder.nativeOrder()) data
            else directBytes(data.remaining() * 8).asLongBuffer().also { it.put(data.duplicate()); it.rewind() }
    }
}

/** One graph input or output as the manifest describes it. */
data class TensorSpec(
    val name: String,
    val shape: LongArray,
    val dtype: DType,
    val batchAxis: Int,
    val runtimeName: String,
    val runtimeDtype: DType,
) {
    val count: Int get() = shape.fold(1L) { a, b -> a * b }.toInt()
}

/**
 * A graph of a build: its file and its ordered inputs and outputs (manifest `graphs.<name>`); `signature` is the
 * key of its signature in the file (TFLite: every graph is a signature of the one `model.tflite`), else null.
 */
data class GraphSpec(
    val name: String,
    val file: String,
    val inputs: List<TensorSpec>,
    val outputs: List<TensorSpec>,
    val signature: String? = null,
)

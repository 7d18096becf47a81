package ai.minivlm.android

import ai.minivlm.DType
import ai.minivlm.ErrorKind
import ai.minivlm.GraphRunner
import ai.minivlm.GraphSpec
import ai.minivlm.MiniVlmException
import ai.minivlm.Tensor
import ai.minivlm.TensorSpec
import java.io.File
import java.nio.ByteBuffer
import org.tensorflow.lite.Interpreter

/**
 * Runs one `.tflite` graph with LiteRT's Interpreter (`com.google.ai.edge.litert:litert`, CPU with the
 * default XNNPACK delegate) through its "serving_default" signature, addressing tensors by the manifest's
 * `runtime_name` and converting to the manifest's `runtime_dtype` (int32 token ids; float16 outputs of an
 * fp16 build are widened back to float32).
 */
class LiteRtRunner(file: File, override val spec: GraphSpec, threads: Int = 2) : GraphRunner {
    private val interpreter: Interpreter = try {
        Interpreter(file, Interpreter.Options().setNumThreads(threads))
    } catch (e: Exception) {
        throw MiniVlmException(ErrorKind.RUNTIME, "LiteRT cannot load ${file.name}: ${e.message}", e)
    }

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val feeds = spec.inputs.associate { s -> s.runtimeName to toRuntime(inputs.getValue(s.name), s) as Any }
        val fetches = spec.outputs.associate { s -> s.runtimeName to Tensor.directBytes(s.count * s.runtimeDtype.bytes) as Any }
        try {
            interpreter.runSignature(feeds, fetches, SIGNATURE)
        } catch (e: Exception) {
            throw MiniVlmException(ErrorKind.RUNTIME, "LiteRT ${spec.name} failed: ${e.message}", e)
        }
        return spec.outputs.associate { s -> s.name to fromRuntime(fetches.getValue(s.runtimeName) as ByteBuffer, s) }
    }

    override fun close() = interpreter.close()

    private fun toRuntime(t: Tensor, s: TensorSpec): ByteBuffer {
        val out = Tensor.directBytes(t.count * s.runtimeDtype.bytes)
        when (t) {
            is Tensor.F32 -> out.asFloatBuffer().put(t.data.duplicate())
            is Tensor.I64 -> when (s.runtimeDtype) {
                DType.INT32 -> {
                    val ints = out.asIntBuffer()
                    for (v in t.toArray()) {
                        if (v < Int.MIN_VALUE || v > Int.MAX_VALUE) throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, "${s.name}: $v does not fit int32")
                        ints.put(v.toInt())
                    }
                }
                else -> out.asLongBuffer().put(t.data.duplicate())
            }
        }
        return out
    }

    private fun fromRuntime(b: ByteBuffer, s: TensorSpec): Tensor {
        b.rewind()
        return when {
            s.dtype == DType.INT64 && s.runtimeDtype == DType.INT32 ->
                Tensor.of(LongArray(s.count).also { val ints = b.asIntBuffer(); for (i in it.indices) it[i] = ints.get(i).toLong() }, *s.shape)
            s.dtype == DType.INT64 -> Tensor.of(LongArray(s.count).also { b.asLongBuffer().get(it) }, *s.shape)
            s.runtimeDtype == DType.FLOAT16 ->
                Tensor.of(FloatArray(s.count).also { val h = b.asShortBuffer(); for (i in it.indices) it[i] = Tensor.halfToFloat(h.get(i)) }, *s.shape)
            else -> Tensor.of(FloatArray(s.count).also { b.asFloatBuffer().get(it) }, *s.shape)
        }
    }

    private companion object {
        const val SIGNATURE = "serving_default"
    }
}

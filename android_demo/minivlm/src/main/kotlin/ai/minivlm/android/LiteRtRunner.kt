package ai.minivlm.android

import ai.minivlm.DType
import ai.minivlm.ErrorKind
import ai.minivlm.GraphBackend
import ai.minivlm.GraphRunner
import ai.minivlm.GraphSpec
import ai.minivlm.MiniVlmException
import ai.minivlm.SharedFiles
import ai.minivlm.Tensor
import ai.minivlm.TensorSpec
import java.io.File
import java.nio.ByteBuffer
import org.tensorflow.lite.Interpreter

/**
 * Runs one graph of a TFLite build with LiteRT's Interpreter (`com.google.ai.edge.litert:litert`, CPU with the
 * default XNNPACK delegate): the signature the manifest names (`graphs.<name>.signature`) of the build's one
 * `model.tflite`, whose interpreter every graph shares ([backend]), addressing tensors by the manifest's
 * `runtime_name` and converting to the manifest's `runtime_dtype` (int32 token ids; float16 outputs of an
 * fp16 build are widened back to float32).
 */
class LiteRtRunner private constructor(
    private val interpreter: Interpreter,
    override val spec: GraphSpec,
    private val signature: String,
    private val onClose: () -> Unit,
) : GraphRunner {
    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val feeds = spec.inputs.associate { s -> s.runtimeName to toRuntime(inputs.getValue(s.name), s) as Any }
        val fetches = spec.outputs.associate { s -> s.runtimeName to Tensor.directBytes(s.count * s.runtimeDtype.bytes) as Any }
        try {
            interpreter.runSignature(feeds, fetches, signature)
        } catch (e: Exception) {
            throw MiniVlmException(ErrorKind.RUNTIME, "LiteRT ${spec.name} failed: ${e.message}", e)
        }
        return spec.outputs.associate { s -> s.name to fromRuntime(fetches.getValue(s.runtimeName) as ByteBuffer, s) }
    }

    private var closed = false

    override fun close() {
        if (!closed) onClose() // the shared interpreter closes with its last runner
        closed = true
    }

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

    companion object {
        /**
         * Opens graphs of one build: one Interpreter per model file, shared by the runners of its signatures and
         * closed with the last of them. A graph whose signature the manifest does not name, or the file lacks,
         * is a one-line [MiniVlmException].
         */
        fun backend(threads: Int = 2): GraphBackend {
            val interpreters = SharedFiles { file: File ->
                try {
                    Interpreter(file, Interpreter.Options().setNumThreads(threads))
                } catch (e: Exception) {
                    throw MiniVlmException(ErrorKind.RUNTIME, "LiteRT cannot load ${file.name}: ${e.message}", e)
                }
            }
            return GraphBackend { dir, spec ->
                val file = File(dir, spec.file)
                val signature = spec.signature ?: throw MiniVlmException(
                    ErrorKind.BAD_FILE, "graph ${spec.name} names no signature of ${spec.file} (an older build: convert it again)")
                val interpreter = interpreters.acquire(file)
                val keys = interpreter.signatureKeys
                if (signature !in keys) {
                    interpreters.release(file)
                    throw MiniVlmException(ErrorKind.BAD_FILE, "graph ${spec.name}: ${spec.file} has no signature '$signature' (it has ${keys.joinToString()})")
                }
                LiteRtRunner(interpreter, spec, signature) { interpreters.release(file) }
            }
        }
    }
}

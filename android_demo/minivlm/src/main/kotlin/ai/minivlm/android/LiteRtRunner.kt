package ai.minivlm.android

import ai.minivlm.AppliedRuntime
import ai.minivlm.DType
import ai.minivlm.ErrorKind
import ai.minivlm.GraphBackend
import ai.minivlm.GraphRunner
import ai.minivlm.GraphSpec
import ai.minivlm.MiniVlmException
import ai.minivlm.Tensor
import ai.minivlm.TensorSpec
import com.google.ai.edge.litert.CompiledModel
import com.google.ai.edge.litert.TensorBuffer
import java.io.File
import com.google.ai.edge.litert.Accelerator as LiteRtAccelerator

/**
 * The model files of a TFLite build compiled with LiteRT 2.x's CompiledModel API (`com.google.ai.edge.litert:litert`)
 * on one accelerator, shared by the runners of their signatures. [compile] tries the accelerators in order (the plan's,
 * then the CPU when the user chose AUTO: AppliedRuntime.attempts) and keeps the first that compiles every file;
 * [accelerator] is the one that did, [fallbackNote] says why an earlier one did not.
 *
 * Each attempt passes one accelerator alone: given GPU and CPU together, CompiledModel quietly runs on the CPU when
 * the GPU accelerator cannot load (e.g. without the litert-gpu artifact), and the app would report the wrong one.
 */
class LiteRtBackend private constructor(
    private val models: Map<String, CompiledModel>,
    val accelerator: String,
    val fallbackNote: String,
) : GraphBackend, AutoCloseable {
    override fun open(buildDir: File, spec: GraphSpec): GraphRunner {
        val model = models[spec.file]
            ?: throw MiniVlmException(ErrorKind.BAD_FILE, "graph ${spec.name}: ${spec.file} is not a model file this build lists")
        val signature = spec.signature
            ?: throw MiniVlmException(ErrorKind.BAD_FILE, "graph ${spec.name} names no signature of ${spec.file} (an older build: convert it again)")
        return LiteRtRunner(model, spec, signature)
    }

    override fun close() = models.values.forEach { it.close() }

    companion object {
        /** Compiles `files` of `dir` on the first of `attempts` ("cpu", "gpu", "npu") that takes them all. */
        fun compile(dir: File, files: Set<String>, attempts: List<String>, threads: Int): LiteRtBackend {
            val failures = mutableListOf<Pair<String, String>>()
            for (accelerator in attempts) {
                val compiled = LinkedHashMap<String, CompiledModel>()
                try {
                    for (file in files) compiled[file] = CompiledModel.create(File(dir, file).path, options(accelerator, threads))
                    val note = failures.joinToString("; ") { (a, why) -> AppliedRuntime.fallbackNote(a, why) }
                    return LiteRtBackend(compiled, accelerator, note)
                } catch (e: Exception) { // LiteRtException, or an IllegalStateException from the JNI layer
                    compiled.values.forEach { it.close() }
                    failures += accelerator to (e.message ?: e::class.java.simpleName)
                }
            }
            throw MiniVlmException(ErrorKind.RUNTIME,
                "LiteRT cannot compile ${files.joinToString()}: " + failures.joinToString("; ") { (a, why) -> "${a.uppercase()}: ${why.lineSequence().first()}" })
        }

        private fun options(accelerator: String, threads: Int): CompiledModel.Options = when (accelerator) {
            "cpu" -> CompiledModel.Options(LiteRtAccelerator.CPU).apply {
                // XNNPACK's thread count; 0 leaves LiteRT's default.
                if (threads > 0) cpuOptions = CompiledModel.CpuOptions(numThreads = threads)
            }
            "gpu" -> CompiledModel.Options(LiteRtAccelerator.GPU)
            "npu" -> CompiledModel.Options(LiteRtAccelerator.NPU)
            else -> throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, "accelerator '$accelerator', expected cpu, gpu or npu")
        }
    }
}

/**
 * Runs one graph of a TFLite build: the signature the manifest names (`graphs.<name>.signature`) of a compiled model
 * ([LiteRtBackend]), addressing tensors by the manifest's `runtime_name` and converting to its `runtime_dtype` (int32
 * token ids). The input and output buffers are created once and reused by every call.
 */
class LiteRtRunner internal constructor(
    private val model: CompiledModel,
    override val spec: GraphSpec,
    private val signature: String,
) : GraphRunner {
    init {
        for (s in spec.inputs + spec.outputs) {
            if (s.runtimeDtype !in SUPPORTED) {
                throw MiniVlmException(ErrorKind.CONFIG, "graph ${spec.name}: ${s.name} is ${s.runtimeDtype.manifestName} in the model; LiteRT's TensorBuffer reads and writes float32, int32 and int64 only")
            }
        }
    }

    private val buffers = ArrayList<TensorBuffer>()
    private val inputBuffers = openBuffers(spec.inputs) { model.createInputBuffer(it, signature) }
    private val outputBuffers = openBuffers(spec.outputs) { model.createOutputBuffer(it, signature) }

    /** One buffer per tensor by runtime name; on a missing tensor every buffer opened so far is closed. */
    private fun openBuffers(specs: List<TensorSpec>, create: (String) -> TensorBuffer): Map<String, TensorBuffer> =
        specs.associate { s ->
            val b = try {
                create(s.runtimeName)
            } catch (e: Exception) {
                close()
                throw MiniVlmException(ErrorKind.BAD_FILE, "graph ${spec.name}: signature '$signature' has no tensor '${s.runtimeName}' (${e.message})")
            }
            buffers += b
            s.runtimeName to b
        }

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        try {
            for (s in spec.inputs) write(inputBuffers.getValue(s.runtimeName), inputs.getValue(s.name), s)
            model.run(inputBuffers, outputBuffers, signature)
        } catch (e: MiniVlmException) {
            throw e
        } catch (e: Exception) {
            throw MiniVlmException(ErrorKind.RUNTIME, "LiteRT ${spec.name} failed: ${e.message}", e)
        }
        return spec.outputs.associate { s -> s.name to read(outputBuffers.getValue(s.runtimeName), s) }
    }

    override fun close() {
        buffers.forEach { it.close() }
        buffers.clear()
    }

    private fun write(b: TensorBuffer, t: Tensor, s: TensorSpec) = when (t) {
        is Tensor.F32 -> b.writeFloat(t.toArray())
        is Tensor.I64 -> when (s.runtimeDtype) {
            DType.INT32 -> b.writeInt(IntArray(t.count).also { ints ->
                val values = t.toArray()
                for (i in values.indices) {
                    val v = values[i]
                    if (v < Int.MIN_VALUE || v > Int.MAX_VALUE) throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, "${s.name}: $v does not fit int32")
                    ints[i] = v.toInt()
                }
            })
            else -> b.writeLong(t.toArray())
        }
    }

    private fun read(b: TensorBuffer, s: TensorSpec): Tensor =
        try {
            when (s.runtimeDtype) {
                DType.INT32 -> b.readInt().let { ints -> Tensor.of(LongArray(ints.size) { ints[it].toLong() }, *s.shape) }
                DType.INT64 -> Tensor.of(b.readLong(), *s.shape)
                else -> Tensor.of(b.readFloat(), *s.shape)
            }
        } catch (e: IllegalStateException) { // Tensor's size check: the buffer does not hold the manifest's shape
            throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} output ${s.name}: ${e.message}, expected shape ${s.shape.contentToString()}")
        }

    private companion object {
        val SUPPORTED = setOf(DType.FLOAT32, DType.INT32, DType.INT64)
    }
}

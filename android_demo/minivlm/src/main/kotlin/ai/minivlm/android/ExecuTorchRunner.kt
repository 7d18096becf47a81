package ai.minivlm.android

import ai.minivlm.DType
import ai.minivlm.ErrorKind
import ai.minivlm.GraphRunner
import ai.minivlm.GraphSpec
import ai.minivlm.MiniVlmException
import ai.minivlm.Tensor
import ai.minivlm.TensorSpec
import java.io.File
import org.pytorch.executorch.EValue
import org.pytorch.executorch.Module
import org.pytorch.executorch.Tensor as EtTensor

/**
 * Runs one `.pte` graph with the ExecuTorch Android runtime (`org.pytorch:executorch-android`), method
 * "forward", inputs and outputs in manifest order. The AAR's kernels and XNNPACK delegate are the ones the
 * build was exported for (manifest `delegate`).
 *
 * A build's graphs read their constants from its one weights file (manifest `weights_file`, a `.ptd`). The
 * Android `Module` of executorch-android 1.5.1 (and of upstream main, extension/android/.../Module.kt) takes a
 * program path only, no data path (only its LLM, ASR and training modules take one), so such a build is
 * refused here in one line rather than failing inside the runtime at its first constant.
 *
 * Threads: `Module.load(path, loadMode, numThreads)` (in executorch-android 1.4.1 and in upstream main; 0 = the
 * runtime's default, half the cores). In the published AAR this resets ExecuTorch's one process-wide thread pool
 * (extension/android/jni/jni_layer.cpp), so the count of the module loaded last applies to every module of the
 * process. The plan gives every graph of a build the same count, so the build runs on that many.
 */
class ExecuTorchRunner(file: File, weights: File?, override val spec: GraphSpec, threads: Int = 0) : GraphRunner {
    private val module: Module = try {
        if (weights != null) {
            throw MiniVlmException(ErrorKind.CONFIG, "${file.name} keeps its weights in ${weights.name}, which ExecuTorch's Android Module cannot load (Module.load takes no data path); run a --target tflite build on Android")
        }
        Module.load(file.path, Module.LOAD_MODE_MMAP, threads)
    } catch (e: MiniVlmException) {
        throw e
    } catch (e: Exception) {
        throw MiniVlmException(ErrorKind.RUNTIME, "ExecuTorch cannot load ${file.name}: ${e.message}", e)
    }

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        val values = spec.inputs.map { s -> EValue.from(toExecuTorch(inputs.getValue(s.name), s)) }.toTypedArray()
        val outputs = try {
            module.forward(*values)
        } catch (e: Exception) {
            throw MiniVlmException(ErrorKind.RUNTIME, "ExecuTorch ${spec.name} failed: ${e.message}", e)
        }
        if (outputs.size != spec.outputs.size) {
            throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} returned ${outputs.size} outputs, the manifest lists ${spec.outputs.size}")
        }
        return spec.outputs.mapIndexed { i, s -> s.name to fromExecuTorch(outputs[i].toTensor(), s) }.toMap()
    }

    override fun close() = module.destroy()

    private fun toExecuTorch(t: Tensor, s: TensorSpec): EtTensor = when (t) {
        // fromBlob(Buffer) wants direct native-order buffers; the caption callback's already are (no copy).
        is Tensor.F32 -> EtTensor.fromBlob(Tensor.direct(t.data), s.shape)
        is Tensor.I64 -> if (s.runtimeDtype == DType.INT32) {
            EtTensor.fromBlob(t.toArray().map { it.toInt() }.toIntArray(), s.shape)
        } else {
            EtTensor.fromBlob(Tensor.direct(t.data), s.shape)
        }
    }

    private fun fromExecuTorch(t: EtTensor, s: TensorSpec): Tensor {
        if (!t.shape().contentEquals(s.shape)) {
            throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} output ${s.name} has shape ${t.shape().contentToString()}, expected ${s.shape.contentToString()}")
        }
        return when (s.dtype) {
            DType.INT64 -> Tensor.of(t.dataAsLongArray, *s.shape)
            else -> Tensor.of(t.dataAsFloatArray, *s.shape)
        }
    }
}

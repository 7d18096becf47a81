package ai.minivlm

import java.io.File

/**
 * Runs one graph of a build. Implementations: `ExecuTorchRunner` (.pte) and `LiteRtRunner` (.tflite) on
 * Android, `ReplayRunner` (recorded golden calls) on the JVM.
 *
 * `run` takes the inputs by manifest name and returns every output by manifest name, as float32 / int64
 * host tensors of the manifest shapes (batch 1, as exported). Implementations throw [MiniVlmException].
 */
interface GraphRunner : AutoCloseable {
    val spec: GraphSpec

    fun run(inputs: Map<String, Tensor>): Map<String, Tensor>

    override fun close() {}
}

/** Opens the runner of one graph of a build folder; chosen by the manifest's `target`. */
fun interface GraphBackend {
    fun open(buildDir: File, spec: GraphSpec): GraphRunner
}

/**
 * One open instance per file, shared by every graph in it (a TFLite build's graphs are the signatures of one
 * `model.tflite`: one interpreter loads its weights once) and closed when its last user releases it.
 * Not thread-safe, like the [MiniVlm] that owns it.
 */
class SharedFiles<T : AutoCloseable>(private val open: (File) -> T) {
    private class Entry<T>(val value: T, var users: Int)

    private val entries = HashMap<String, Entry<T>>()

    /** The instance of `file`, opened on first use; pair every call with [release]. */
    fun acquire(file: File): T {
        val entry = entries.getOrPut(file.canonicalPath) { Entry(open(file), 0) }
        entry.users++
        return entry.value
    }

    /** One user of `file` is done; the last one closes it. */
    fun release(file: File) {
        val key = file.canonicalPath
        val entry = entries[key] ?: return
        if (--entry.users == 0) {
            entries.remove(key)
            entry.value.close()
        }
    }

    /** Files open now (for tests). */
    val openCount: Int get() = entries.size
}

/** Checks inputs against the spec before a runtime sees them: a wrong shape is a clear error, not a crash. */
fun GraphSpec.checkInputs(inputs: Map<String, Tensor>) {
    for (s in this.inputs) {
        val t = inputs[s.name] ?: throw MiniVlmException(ErrorKind.INVALID_ARGUMENT, "graph $name: missing input '${s.name}'")
        if (!t.shape.contentEquals(s.shape) || t.dtype != s.dtype) {
            throw MiniVlmException(
                ErrorKind.INVALID_ARGUMENT,
                "graph $name: input '${s.name}' is ${t.dtype.manifestName}${t.shapeString()}, " +
                    "expected ${s.dtype.manifestName}${s.shape.joinToString(", ", "(", ")")}",
            )
        }
    }
}

/**
 * Runs a graph exported with batch 1 on a batch of N along each tensor's manifest `batch_axis`: N
 * single-example calls, outputs concatenated (beam search feeds the caption step N beams at once).
 * The same rule as sdk/runtime.py, so the phone reproduces the Python artifact runner.
 */
class BatchedGraph(private val runner: GraphRunner) {
    val spec: GraphSpec get() = runner.spec

    fun run(inputs: Map<String, Tensor>, batch: Int): Map<String, Tensor> {
        if (batch == 1) return runner.run(inputs)
        require(batch > 1) { "batch must be >= 1, got $batch" }
        val parts = (0 until batch).map { i ->
            runner.run(spec.inputs.associate { s -> s.name to slice(inputs.getValue(s.name), s.batchAxis, i, batch) })
        }
        return spec.outputs.associate { s -> s.name to concat(parts.map { it.getValue(s.name) }, s.batchAxis) }
    }

    companion object {
        /** Example `index` of a batch-`batch` tensor along `axis`, as a batch-1 tensor. */
        fun slice(t: Tensor, axis: Int, index: Int, batch: Int): Tensor {
            val shape = t.shape.copyOf().also { it[axis] = 1 }
            val outer = t.shape.take(axis).fold(1L) { a, b -> a * b }.toInt()
            val inner = t.shape.drop(axis + 1).fold(1L) { a, b -> a * b }.toInt()
            require(t.shape[axis] == batch.toLong()) { "axis $axis of ${t.shapeString()} is not the batch $batch" }
            return when (t) {
                is Tensor.F32 -> {
                    val src = t.toArray(); val dst = FloatArray(outer * inner)
                    for (o in 0 until outer) System.arraycopy(src, (o * batch + index) * inner, dst, o * inner, inner)
                    Tensor.of(dst, *shape)
                }
                is Tensor.I64 -> {
                    val src = t.toArray(); val dst = LongArray(outer * inner)
                    for (o in 0 until outer) System.arraycopy(src, (o * batch + index) * inner, dst, o * inner, inner)
                    Tensor.of(dst, *shape)
                }
            }
        }

        /** Batch-1 tensors joined along `axis`. */
        fun concat(parts: List<Tensor>, axis: Int): Tensor {
            val first = parts.first()
            val n = parts.size
            val shape = first.shape.copyOf().also { it[axis] = n.toLong() }
            val outer = first.shape.take(axis).fold(1L) { a, b -> a * b }.toInt()
            val inner = first.shape.drop(axis).fold(1L) { a, b -> a * b }.toInt() // axis has size 1
            return when (first) {
                is Tensor.F32 -> {
                    val dst = FloatArray(first.count * n)
                    parts.forEachIndexed { i, p ->
                        val src = (p as Tensor.F32).toArray()
                        for (o in 0 until outer) System.arraycopy(src, o * inner, dst, (o * n + i) * inner, inner)
                    }
                    Tensor.of(dst, *shape)
                }
                is Tensor.I64 -> {
                    val dst = LongArray(first.count * n)
                    parts.forEachIndexed { i, p ->
                        val src = (p as Tensor.I64).toArray()
                        for (o in 0 until outer) System.arraycopy(src, o * inner, dst, (o * n + i) * inner, inner)
                    }
                    Tensor.of(dst, *shape)
                }
            }
        }
    }
}

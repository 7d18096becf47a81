package ai.minivlm

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import kotlin.math.abs

/**
 * Golden records written by python_ref (a build's `golden/` folder, or the repository's tests/golden/): a JSON
 * index whose arrays are `{"file", "dtype", "shape"}` entries pointing at raw little-endian C-order files,
 * and whose small values are inline. Used by the on-device replay test and by the JVM golden test.
 */
class Golden(val dir: File, indexName: String = "index.json") {
    val index: JsonPath = JsonPath(Json.parseObject(BuildSpec.readText(File(dir, indexName)), indexName), indexName)

    /** The array an index entry `{"file", "dtype", "shape"}` points at. */
    fun array(entry: JsonPath): GoldenArray {
        val dtype = DType.of(entry["dtype"].string)
        val shape = entry["shape"].list.map { it.long }.toLongArray()
        val file = File(dir, entry["file"].string)
        val bytes = try {
            file.readBytes()
        } catch (e: java.io.IOException) {
            throw MiniVlmException(ErrorKind.IO_ERROR, "golden file ${file.path} cannot be read: ${e.message}")
        }
        val count = shape.fold(1L) { a, b -> a * b }
        if (bytes.size.toLong() != count * dtype.bytes) {
            throw MiniVlmException(ErrorKind.BAD_FILE, "${file.name} has ${bytes.size} bytes, ${dtype.manifestName}${shape.contentToString()} needs ${count * dtype.bytes}")
        }
        return GoldenArray(dtype, shape, ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN))
    }

    /** `array(entry)` when the entry names a file, else null (an inline `value`). */
    fun arrayOrNull(entry: JsonPath): GoldenArray? = if (entry.has("file")) array(entry) else null
}

/** One golden array; accessors convert to the host types (bool and uint8 as bytes). */
class GoldenArray(val dtype: DType, val shape: LongArray, private val data: ByteBuffer) {
    val count: Int = shape.fold(1L) { a, b -> a * b }.toInt()

    fun floats(): FloatArray = when (dtype) {
        DType.FLOAT32 -> FloatArray(count).also { data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer().get(it) }
        DType.FLOAT16 -> FloatArray(count).also { val h = data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asShortBuffer(); for (i in it.indices) it[i] = Tensor.halfToFloat(h.get(i)) }
        else -> throw MiniVlmException(ErrorKind.BAD_FILE, "expected a float array, got ${dtype.manifestName}")
    }

    fun longs(): LongArray = when (dtype) {
        DType.INT64 -> LongArray(count).also { data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asLongBuffer().get(it) }
        DType.INT32 -> LongArray(count).also { val b = data.duplicate().order(ByteOrder.LITTLE_ENDIAN).asIntBuffer(); for (i in it.indices) it[i] = b.get(i).toLong() }
        else -> throw MiniVlmException(ErrorKind.BAD_FILE, "expected an integer array, got ${dtype.manifestName}")
    }

    fun bytes(): ByteArray = when (dtype) {
        DType.BOOL, DType.UINT8 -> ByteArray(count).also { data.duplicate().get(it) }
        else -> throw MiniVlmException(ErrorKind.BAD_FILE, "expected a byte array, got ${dtype.manifestName}")
    }

    /** As a host tensor (float32 or int64). */
    fun tensor(): Tensor = when (dtype) {
        DType.INT64, DType.INT32 -> Tensor.of(longs(), *shape)
        else -> Tensor.of(floats(), *shape)
    }
}

/** Max |a - b| (infinite on a length mismatch; NaN on either side counts as a mismatch). */
fun maxAbsDiff(a: FloatArray, b: FloatArray): Double {
    if (a.size != b.size) return Double.POSITIVE_INFINITY
    var worst = 0.0
    for (i in a.indices) {
        val d = abs(a[i].toDouble() - b[i].toDouble())
        if (d.isNaN()) return Double.POSITIVE_INFINITY
        if (d > worst) worst = d
    }
    return worst
}

/**
 * A [GraphRunner] that replays recorded calls of one graph: call i must receive the recorded inputs of call i
 * (floats within `tolerance`, integers exactly) and returns the recorded outputs. Lets the whole Kotlin
 * pipeline (host steps in the core, orchestration, caption callback) run against python_ref's numbers on a
 * machine without a graph runtime.
 */
class ReplayRunner(
    override val spec: GraphSpec,
    private val calls: List<Pair<Map<String, GoldenArray>, Map<String, GoldenArray>>>,
    private val tolerance: Double,
) : GraphRunner {
    var callsMade = 0
        private set

    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> {
        if (callsMade >= calls.size) {
            throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name}: call ${callsMade + 1}, but only ${calls.size} were recorded")
        }
        val (expectedIn, recordedOut) = calls[callsMade]
        for ((name, expected) in expectedIn) {
            val got = inputs[name] ?: throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} call $callsMade: no input '$name'")
            if (!got.shape.contentEquals(expected.shape)) {
                throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} call $callsMade: '$name' is ${got.shapeString()}, recorded ${expected.shape.contentToString()}")
            }
            when (got) {
                is Tensor.I64 -> if (!got.toArray().contentEquals(expected.longs())) {
                    throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} call $callsMade: '$name' differs from the recorded ids")
                }
                is Tensor.F32 -> {
                    val d = maxAbsDiff(got.toArray(), expected.floats())
                    if (d > tolerance) throw MiniVlmException(ErrorKind.RUNTIME, "${spec.name} call $callsMade: '$name' max |diff| $d > $tolerance")
                }
            }
        }
        callsMade++
        return recordedOut.mapValues { it.value.tensor() }
    }
}

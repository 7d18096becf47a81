package ai.minivlm

import java.io.File
import kotlin.math.abs
import kotlin.math.log10
import kotlin.math.max
import kotlin.math.min
import kotlin.math.sqrt

/**
 * Replays a build's `golden/` on a graph runtime: every recorded call of every graph (manifest `graph_order`, so
 * both model families) runs on the runner `backend` opens, and each output is compared with python_ref's by the
 * statistics and limits of sdk/parity (`max |build - ref| / max |ref|`, PSNR with peak `max |ref|`, per-call
 * cosine; the limits are the manifest's `tolerances`). The on-device test (androidTest) only copies the build and
 * calls [run] with the device runtime; the JVM test runs the same code over recorded and perturbed runners.
 */
class GraphReplay(private val buildDir: File, private val backend: GraphBackend) {
    private val manifest = JsonPath(Json.parseObject(BuildSpec.readText(File(buildDir, "manifest.json")), "manifest.json"), "manifest")
    private val golden = Golden(File(buildDir, manifest.opt("golden_dir")?.string ?: "golden"))
    val limits: GraphLimits = GraphLimits.of(manifest["tolerances"])

    /** Every graph of the goldens, each judged over all its recorded calls on all images. */
    fun run(): List<GraphVerdict> {
        val cases = golden.index["cases"]
        val images = golden.index["images"].list.map { it.string }
        val specs = graphSpecs(manifest)
        return specs.keys.filter { g -> images.any { cases[it]["graphs"].has(g) } }.map { graph ->
            backend.open(buildDir, specs.getValue(graph)).use { runner -> replay(graph, runner, images.map { it to cases[it]["graphs"] }) }
        }
    }

    private fun replay(graph: String, runner: GraphRunner, cases: List<Pair<String, JsonPath>>): GraphVerdict {
        val stats = LinkedHashMap<String, OutputStats>()
        var calls = 0
        for ((image, graphs) in cases) {
            if (!graphs.has(graph)) continue
            for (call in graphs[graph].list) {
                val where = "$image call ${call["call"].int}"
                val inputs = call["inputs"].let { ins -> ins.keys.associateWith { golden.array(ins[it]).tensor() } }
                val got = try {
                    runner.spec.checkInputs(inputs) // recorded dtypes and shapes against the manifest's
                    runner.run(inputs)
                } catch (e: MiniVlmException) {
                    return GraphVerdict(graph, calls, stats.values.toList(), listOf("$where: ${e.message}"))
                }
                val recorded = call["outputs"]
                for (name in recorded.keys) {
                    val s = stats.getOrPut(name) { OutputStats(name) }
                    val output = got[name]
                    if (output == null) s.problem("$where: the runtime returned no '$name'") else s.add(golden.array(recorded[name]), output, where)
                }
                calls++
            }
        }
        return GraphVerdict(graph, calls, stats.values.toList(), limits.failures(stats.values))
    }

    companion object {
        /**
         * The graphs of a build's manifest in `graph_order` (MiniVLM or EfficientVLM), with their I/O specs. Read
         * here rather than through [BuildSpec], whose graph list is MiniVLM's.
         */
        fun graphSpecs(manifest: JsonPath): Map<String, GraphSpec> {
            val graphs = manifest["graphs"]
            val order = manifest.opt("graph_order")?.list?.map { it.string } ?: GRAPH_NAMES
            return order.associateWith { name ->
                val g = graphs[name]
                GraphSpec(name, g["file"].string, g["inputs"].list.map(::tensorSpec), g["outputs"].list.map(::tensorSpec), g.opt("signature")?.string)
            }
        }

        fun graphSpecs(buildDir: File): Map<String, GraphSpec> =
            graphSpecs(JsonPath(Json.parseObject(BuildSpec.readText(File(buildDir, "manifest.json")), "manifest.json"), "manifest"))

        private fun tensorSpec(t: JsonPath): TensorSpec {
            val dtype = DType.of(t["dtype"].string)
            return TensorSpec(
                name = t["name"].string,
                shape = t["shape"].list.map { it.long.also { d -> if (d < 1) throw MiniVlmException(ErrorKind.BAD_FILE, "${t["name"].string}: bad dimension $d") } }.toLongArray(),
                dtype = dtype,
                batchAxis = t.opt("batch_axis")?.int ?: 0,
                runtimeName = t.opt("runtime_name")?.string ?: t["name"].string,
                runtimeDtype = t.opt("runtime_dtype")?.string?.let(DType::of) ?: dtype,
            )
        }
    }
}

/** The manifest's graph limits (sdk's Tolerance rows `graph_max_abs`, `graph_min_psnr_db`, `graph_min_cosine`); null = not judged. */
class GraphLimits(val maxAbsOverPeak: Double?, val minPsnrDb: Double?, val minCosine: Double?) {
    fun failures(stats: Collection<OutputStats>): List<String> = stats.flatMap { s ->
        buildList {
            addAll(s.problems)
            if (s.problems.isEmpty()) {
                if (maxAbsOverPeak != null && !(s.relativeMaxAbs <= maxAbsOverPeak)) {
                    add("${s.name}: max abs / peak ${fmt(s.relativeMaxAbs)} > ${fmt(maxAbsOverPeak)} (max abs ${fmt(s.maxAbs)} at ${s.worstCall}, peak ${fmt(s.peak)})")
                }
                if (minPsnrDb != null && !(s.psnrDb >= minPsnrDb)) add("${s.name}: PSNR ${fmt(s.psnrDb)} dB < ${fmt(minPsnrDb)} dB")
                if (minCosine != null && !(s.minCosine >= minCosine)) add("${s.name}: cosine ${fmt(s.minCosine)} < ${fmt(minCosine)}")
            }
        }
    }

    companion object {
        fun of(tolerances: JsonPath): GraphLimits {
            fun value(key: String): Double? = tolerances.opt(key)?.get("value")?.double
            return GraphLimits(value("graph_max_abs"), value("graph_min_psnr_db"), value("graph_min_cosine"))
        }

        internal fun fmt(x: Double): String = if (x.isFinite()) "%.4g".format(x) else x.toString()
    }
}

/**
 * Error of one graph output over every call, as sdk/parity/statistics.py `ErrorStats`: a non-finite output counts
 * as an infinite error, integer outputs must be equal.
 */
class OutputStats(val name: String) {
    var calls = 0; private set
    var maxAbs = 0.0; private set
    var peak = 0.0; private set
    var minCosine = 1.0; private set
    var worstCall = ""; private set
    private var numel = 0L
    private var sumSqErr = 0.0
    val problems = mutableListOf<String>()

    fun problem(why: String) { problems += why }

    fun add(expected: GoldenArray, got: Tensor, where: String) {
        calls++
        if (!got.shape.contentEquals(expected.shape)) {
            problem("$where: shape ${got.shapeString()}, recorded ${expected.shape.contentToString()}")
            return
        }
        when (got) {
            is Tensor.I64 -> if (!got.toArray().contentEquals(expected.longs())) problem("$where: integer output differs from the recorded one")
            is Tensor.F32 -> addFloats(expected.floats(), got.toArray(), where)
        }
    }

    private fun addFloats(r: FloatArray, g: FloatArray, where: String) {
        var biggest = 0.0
        var dot = 0.0; var nr = 0.0; var ng = 0.0; var sq = 0.0
        var finite = true
        for (i in r.indices) {
            val rv = r[i].toDouble(); val gv = g[i].toDouble()
            if (!gv.isFinite()) finite = false
            val d = abs(gv - rv)
            biggest = max(biggest, d); sq += d * d
            dot += rv * gv; nr += rv * rv; ng += gv * gv
            peak = max(peak, abs(rv))
        }
        if (!finite) biggest = Double.POSITIVE_INFINITY
        if (biggest > maxAbs || worstCall.isEmpty()) { maxAbs = biggest; worstCall = where }
        numel += r.size
        sumSqErr += if (finite) sq else Double.POSITIVE_INFINITY
        val cos = when {
            !finite -> -1.0
            nr == 0.0 || ng == 0.0 -> if (nr == ng) 1.0 else 0.0
            else -> dot / (sqrt(nr) * sqrt(ng))
        }
        minCosine = min(minCosine, cos)
    }

    /** max |build - ref| / max |ref|. */
    val relativeMaxAbs: Double get() = if (peak > 0) maxAbs / peak else if (maxAbs == 0.0) 0.0 else Double.POSITIVE_INFINITY

    /** 10 log10(peak² / mse); infinite when equal. */
    val psnrDb: Double get() {
        val mse = if (numel > 0) sumSqErr / numel else 0.0
        if (mse == 0.0) return Double.POSITIVE_INFINITY
        return if (peak > 0 && mse.isFinite()) 10 * log10(peak * peak / mse) else Double.NEGATIVE_INFINITY
    }

    override fun toString() = "$name: max abs ${GraphLimits.fmt(maxAbs)} (/peak ${GraphLimits.fmt(relativeMaxAbs)}), " +
        "PSNR ${GraphLimits.fmt(psnrDb)} dB, cosine ${GraphLimits.fmt(minCosine)}"
}

/** One graph's replay: passed when every output is within the build's limits on every call. */
class GraphVerdict(val graph: String, val calls: Int, val outputs: List<OutputStats>, val failures: List<String>) {
    val passed: Boolean get() = failures.isEmpty() && calls > 0

    /** One line: `PASS graph (N calls): worst output stats` or `FAIL graph: first failure`. */
    override fun toString(): String = if (passed) {
        "PASS $graph ($calls calls): ${outputs.maxByOrNull { it.relativeMaxAbs }}"
    } else {
        "FAIL $graph ($calls calls): ${failures.firstOrNull() ?: "no recorded calls"}" + if (failures.size > 1) " (+${failures.size - 1} more)" else ""
    }
}

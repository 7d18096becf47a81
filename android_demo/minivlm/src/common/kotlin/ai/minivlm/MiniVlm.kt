package ai.minivlm

import java.io.File
import java.nio.ByteOrder
import kotlin.math.exp

/** An 8-bit image in memory: `height` rows of `rowBytes` bytes, pixel layout one of Native.PIXELS_*. */
class Image(val pixels: ByteArray, val width: Int, val height: Int, val rowBytes: Int, val format: Int) {
    companion object {
        fun rgb(pixels: ByteArray, width: Int, height: Int) = Image(pixels, width, height, width * 3, Native.PIXELS_RGB8)
        fun rgba(pixels: ByteArray, width: Int, height: Int) = Image(pixels, width, height, width * 4, Native.PIXELS_RGBA8)
    }
}

/** One detection in original-image pixels. */
class Detection(val box: FloatArray, val label: String, val score: Float, val attribute: String) {
    override fun toString() = "Detection($label ${"%.3f".format(score)} ${box.joinToString(prefix = "[", postfix = "]") { "%.1f".format(it) }})"
}

/** Wall time per pipeline stage in milliseconds, in the order the stages ran. */
class Timings {
    private val stages = LinkedHashMap<String, Double>()

    fun <T> measure(stage: String, block: () -> T): T {
        val start = System.nanoTime()
        try {
            return block()
        } finally {
            add(stage, (System.nanoTime() - start) / 1e6)
        }
    }

    fun add(stage: String, ms: Double) {
        stages[stage] = (stages[stage] ?: 0.0) + ms
    }

    val entries: Map<String, Double> get() = stages
    val totalMs: Double get() = stages.values.sum()
    override fun toString() = stages.entries.joinToString(", ") { "${it.key} ${"%.1f".format(it.value)} ms" }
}

/** What the detector hands the fusion model for one image (python_ref `ImageRegions`). */
class Analysis internal constructor(
    /** [height, width, scale, resized_height, resized_width] of the letterbox. */
    val letterbox: DoubleArray,
    /** Class names in region order (the tags of the fusion input). */
    val tags: List<String>,
    /** Region tokens (K, region_dim), row-major. */
    val regionTokens: FloatArray,
    /** Detections by descending score (python_ref `detections_of`). */
    val detections: List<Detection>,
    val timings: Timings,
) {
    val regionCount: Int get() = tags.size
}

/** A result with the time each stage took. */
class Timed<T>(val value: T, val timings: Timings)

/** `[CLS] text [SEP] | tags [SEP] | regions` as the core packs it (python_ref `FusionInputs`). */
class FusionInputs(val inputIds: LongArray, val tokenTypeIds: LongArray, val tokenMask: FloatArray,
                   val regions: FloatArray, val regionMask: FloatArray)

/** A caption with its decoding record. */
class Caption(val text: String, val tokenIds: LongArray, val score: Double, val finished: Boolean)

/**
 * The MiniVLM pipeline on a phone build: the native core runs every host step, `backend` runs the graphs.
 *
 * preprocess -> tee_stage1 -> proposals -> tee_stage2 -> region selection -> region tokens, then per task
 * pack -> caption_prefix + caption_step loop (decoding in the core) / vqa / match. Mirrors
 * python_ref/pipeline.py `Pipeline`; an [Analysis] is reused for several questions about one image.
 * Not thread-safe: use one instance per thread (graph runtimes hold per-call state).
 */
class MiniVlm internal constructor(
    val buildDir: File,
    val spec: BuildSpec,
    backend: GraphBackend,
    vocab: File?, // null: the build's own vocab.txt
) : AutoCloseable {
    /** The build written by `minivlm-convert` in `buildDir`, its graphs run by `backend`. */
    constructor(buildDir: File, backend: GraphBackend) : this(buildDir, BuildSpec.load(buildDir), backend, null)

    private val manifest = CoreManifest.load(File(buildDir, "manifest.json"))
    val config: CoreConfig = manifest.config()
    val tokenizer: CoreTokenizer = CoreTokenizer.load(vocab ?: manifest.file("vocab"))
    val classNames: List<String> = manifest.classNames
    private val anchors: FloatArray = Native.makeAnchors(config.handle)
    private val runners = GRAPH_NAMES.associateWith { lazy { backend.open(buildDir, spec.graph(it)) } }

    init {
        if (classNames.size != config.numClasses) {
            throw MiniVlmException(ErrorKind.CONFIG, "the vocabularies list ${classNames.size} classes, the model predicts ${config.numClasses}")
        }
    }

    private fun graph(name: String): GraphRunner = runners.getValue(name).value

    /** Opens every graph now (model load), so the first image does not pay for it. */
    fun loadGraphs() = runners.values.forEach { it.value }

    private fun run(name: String, inputs: Map<String, Tensor>, timings: Timings): Map<String, Tensor> {
        val runner = graph(name)
        runner.spec.checkInputs(inputs)
        return timings.measure(name) { runner.run(inputs) }
    }

    /** Detections, tags and region tokens of one image. */
    fun analyze(image: Image): Analysis {
        val timings = Timings()
        val s = config.imageSize
        val pixels = FloatArray(3 * s * s)
        val letterbox = timings.measure("preprocess") {
            Native.preprocess(config.handle, image.pixels, image.width, image.height, image.rowBytes, image.format, pixels)
        }
        val stage1 = run("tee_stage1", mapOf("images" to Tensor.of(pixels, 1, 3, s.toLong(), s.toLong())), timings)
        val k = config.postNmsTopN
        val proposals = FloatArray(4 * k)
        val valid = ByteArray(k)
        timings.measure("proposals") {
            Native.selectProposals(config.handle, f32(stage1, "objectness"), f32(stage1, "deltas"), anchors, proposals, valid)
        }
        val stage2Inputs = graph("tee_stage2").spec.inputs.associate { input ->
            input.name to (if (input.name == "boxes") Tensor.of(proposals, 1, k.toLong(), 4) else stage1[input.name]
                ?: throw MiniVlmException(ErrorKind.CONFIG, "tee_stage2 input '${input.name}' is not an output of tee_stage1"))
        }
        val stage2 = run("tee_stage2", stage2Inputs, timings)
        return timings.measure("regions") { regionsOf(stage2, proposals, valid, letterbox, timings) }
    }

    private fun regionsOf(stage2: Map<String, Tensor>, proposals: FloatArray, valid: ByteArray, letterbox: DoubleArray,
                          timings: Timings): Analysis {
        val m = config.maxRegions
        val boxes = FloatArray(4 * m)
        val labels = LongArray(m)
        val scores = FloatArray(m)
        val indices = LongArray(m)
        val count = Native.selectRegions(config.handle, proposals, valid, f32(stage2, "class_logits"), f32(stage2, "box_deltas"),
            boxes, labels, scores, indices)
        val tokens = FloatArray(count * config.regionDim)
        val imageBoxes = FloatArray(4 * count)
        Native.regionTokens(config.handle, count, boxes, labels, scores, indices, f32(stage2, "region_features"), letterbox,
            tokens, imageBoxes)
        val attributeLogits = f32(stage2, "attribute_logits")
        val numAttributes = config.numAttributes
        val tags = (0 until count).map { classNames[labels[it].toInt()] }
        val detections = (0 until count).map { i ->
            val row = indices[i].toInt() * numAttributes // attribute of the proposal the region came from
            val best = (0 until numAttributes).maxByOrNull { attributeLogits[row + it] } ?: 0 // first max, as torch.argmax
            Detection(imageBoxes.copyOfRange(4 * i, 4 * i + 4), tags[i], scores[i], spec.attributes.getOrElse(best) { "attribute_$best" })
        }.sortedByDescending { it.score } // stable: equal scores keep region order
        return Analysis(letterbox, tags, tokens, detections, timings)
    }

    /** The five fusion inputs for `text` (null: the caption layout with an empty text segment). */
    fun pack(analysis: Analysis, text: String?): FusionInputs {
        val tt = config.maxTextTagsLen
        val out = FusionInputs(LongArray(tt), LongArray(tt), FloatArray(tt), FloatArray(config.maxRegions * config.regionDim),
            FloatArray(config.maxRegions))
        Native.packInputs(tokenizer.handle, config.handle, text?.toByteArray(Charsets.UTF_8),
            analysis.tags.map { it.toByteArray(Charsets.UTF_8) }.toTypedArray(), analysis.regionTokens, analysis.regionCount,
            text != null, out.inputIds, out.tokenTypeIds, out.tokenMask, out.regions, out.regionMask)
        return out
    }

    /** A caption: greedy (numBeams = 1) or beam search, decoded by the core over the caption_step graph. */
    fun caption(analysis: Analysis, numBeams: Int = 1, lengthPenalty: Double = 1.0): Timed<Caption> {
        val timings = Timings()
        val inputs = timings.measure("pack") { pack(analysis, null) }
        val c = config.maxTextLen.toLong()
        val tags = config.maxTagsLen.toLong()
        val r = config.maxRegions.toLong()
        val prefix = run("caption_prefix", mapOf(
            "tag_ids" to Tensor.of(inputs.inputIds.copyOfRange(c.toInt(), inputs.inputIds.size), 1, tags),
            "tag_type_ids" to Tensor.of(inputs.tokenTypeIds.copyOfRange(c.toInt(), inputs.tokenTypeIds.size), 1, tags),
            "tag_mask" to Tensor.of(inputs.tokenMask.copyOfRange(c.toInt(), inputs.tokenMask.size), 1, tags),
            "regions" to Tensor.of(inputs.regions, 1, r, config.regionDim.toLong()),
            "region_mask" to Tensor.of(inputs.regionMask, 1, r),
        ), timings)
        val step = CaptionStepAdapter(BatchedGraph(graph("caption_step")), timings)
        val result = DoubleArray(2)
        val start = System.nanoTime()
        val ids = Native.captionDecode(config.handle, inputs.inputIds, inputs.tokenTypeIds, inputs.tokenMask, inputs.regions,
            inputs.regionMask, f32(prefix, "prefix_keys"), f32(prefix, "prefix_values"), numBeams, lengthPenalty, 0, step, result)
        timings.add("decode (host)", (System.nanoTime() - start) / 1e6 - (timings.entries["caption_step"] ?: 0.0))
        val text = timings.measure("detokenize") { tokenizer.decode(ids) }
        return Timed(Caption(text, ids, result[0], result[1] != 0.0), timings)
    }

    /** The most likely answer from the model's answer vocabulary. */
    fun answer(analysis: Analysis, question: String): Timed<String> {
        val timings = Timings()
        val logits = f32(run("vqa", fusionGraphInputs(timings.measure("pack") { pack(analysis, question) }), timings), "answer_logits")
        var best = 0
        for (i in logits.indices) if (logits[i] > logits[best]) best = i
        val answer = spec.answers.getOrElse(best) { throw MiniVlmException(ErrorKind.CONFIG, "answer $best is outside the vocabulary") }
        return Timed(answer, timings)
    }

    /** Probability that `text` describes the image (softmax of the match head, class 1). */
    fun match(analysis: Analysis, text: String): Timed<Float> {
        val timings = Timings()
        val logits = f32(run("match", fusionGraphInputs(timings.measure("pack") { pack(analysis, text) }), timings), "match_logits")
        if (logits.size != 2) throw MiniVlmException(ErrorKind.CONFIG, "match_logits has ${logits.size} values, expected 2")
        val p = 1.0 / (1.0 + exp((logits[0] - logits[1]).toDouble()))
        return Timed(p.toFloat(), timings)
    }

    private fun fusionGraphInputs(p: FusionInputs): Map<String, Tensor> {
        val tt = config.maxTextTagsLen.toLong()
        val r = config.maxRegions.toLong()
        return mapOf(
            "input_ids" to Tensor.of(p.inputIds, 1, tt),
            "token_type_ids" to Tensor.of(p.tokenTypeIds, 1, tt),
            "token_mask" to Tensor.of(p.tokenMask, 1, tt),
            "regions" to Tensor.of(p.regions, 1, r, config.regionDim.toLong()),
            "region_mask" to Tensor.of(p.regionMask, 1, r),
        )
    }

    override fun close() {
        runners.values.filter { it.isInitialized() }.forEach { it.value.close() }
        tokenizer.close()
        config.close()
        manifest.close()
    }

    companion object {
        internal fun f32(outputs: Map<String, Tensor>, name: String): FloatArray {
            val t = outputs[name] ?: throw MiniVlmException(ErrorKind.RUNTIME, "the graph returned no output '$name'")
            return (t as? Tensor.F32)?.toArray() ?: throw MiniVlmException(ErrorKind.RUNTIME, "output '$name' is ${t.dtype}, expected float32")
        }
    }
}

/**
 * Runs caption_step for the core's decoder: wraps the request's native arrays as tensors (no copy), runs the
 * graph on the N beams and writes its three outputs into the core's buffers.
 */
class CaptionStepAdapter(private val graph: BatchedGraph, private val timings: Timings?) : NativeStepCallback {
    override fun onStep(step: Int, numBeams: Int, buffers: Array<java.nio.ByteBuffer>) {
        val b = buffers.map { it.order(ByteOrder.nativeOrder()) }
        val spec = graph.spec
        fun shape(s: TensorSpec) = s.shape.copyOf().also { it[s.batchAxis] = numBeams.toLong() }
        val inputNames = listOf("token_ids", "position_ids", "prefix_keys", "prefix_values", "prefix_mask", "cache_keys", "cache_values", "cache_mask")
        val inputs = inputNames.mapIndexed { i, name ->
            val s = spec.inputs.firstOrNull { it.name == name } ?: throw MiniVlmException(ErrorKind.CONFIG, "caption_step has no input '$name'")
            val buf = b[i + 1].asReadOnlyBuffer().order(ByteOrder.nativeOrder())
            name to when (s.dtype) {
                DType.INT64 -> Tensor.I64(shape(s), buf.asLongBuffer())
                else -> Tensor.F32(shape(s), buf.asFloatBuffer())
            }
        }.toMap()
        val outputs = if (timings != null) timings.measure("caption_step") { graph.run(inputs, numBeams) } else graph.run(inputs, numBeams)
        listOf("mask_logits", "new_keys", "new_values").forEachIndexed { i, name ->
            val target = b[9 + i].asFloatBuffer()
            val t = outputs[name] as? Tensor.F32 ?: throw MiniVlmException(ErrorKind.RUNTIME, "caption_step returned no float output '$name'")
            if (t.count != target.remaining()) {
                throw MiniVlmException(ErrorKind.RUNTIME, "caption_step output '$name' has ${t.count} values, the decoder expects ${target.remaining()}")
            }
            target.put(t.data.duplicate())
        }
    }
}

package ai.minivlm

import java.io.File
import java.nio.ByteOrder
import kotlin.math.exp

/**
 * The model family of the build in `dir` ("minivlm" | "efficientvlm"), from its manifest.json: which pipeline
 * to open it with ([MiniVlm] or [EfficientVlm]).
 */
fun buildFamily(dir: File): String {
    val file = File(dir, "manifest.json")
    return familyOf(JsonPath(Json.parseObject(BuildSpec.readText(file), file.path), "manifest"))
}

/** What the vision graph makes of one image: its tokens (1, N, Dv) and its unit ITC feature (E,). */
class ImageEncoding(val tokens: Tensor, val feature: FloatArray)

/** An `mvlm_evlm_config` owned by Kotlin: the EfficientVLM host-step constants of a build's manifest. */
class EvlmConfig private constructor(handle: Long) : NativeHandle(handle, NativeEvlm::evlmConfigFree) {
    private val ints = NativeEvlm.evlmConfigInts(handle)

    val imageSize get() = ints[NativeEvlm.IMAGE_SIZE]
    val numImageTokens get() = ints[NativeEvlm.NUM_IMAGE_TOKENS]
    val visionWidth get() = ints[NativeEvlm.VISION_WIDTH]
    val embedDim get() = ints[NativeEvlm.EMBED_DIM]
    val maxTextLen get() = ints[NativeEvlm.MAX_TEXT_LEN]
    val vocabSize get() = ints[NativeEvlm.VOCAB_SIZE]
    val numAnswers get() = ints[NativeEvlm.NUM_ANSWERS]

    /** [PAD], [UNK], [CLS], [SEP], [MASK] as the manifest gives them. */
    val specialIds: LongArray get() = NativeEvlm.evlmConfigSpecialIds(handle)

    companion object {
        /** `path` is manifest.json or the build folder holding it; refuses a build of another family. */
        fun load(path: File): EvlmConfig = EvlmConfig(NativeEvlm.evlmConfigLoad(path.path))
    }
}

/**
 * The EfficientVLM pipeline on a phone build: the native core runs every host step (Pillow-exact bicubic
 * preprocessing, text packing, greedy caption decoding), `backend` runs the five graphs.
 *
 * image -> preprocess -> vision -> [ImageEncoding], then per task: caption_step loop (decoding in the core) /
 * pack -> vqa -> argmax / pack -> match -> softmax[1]. Mirrors python_ref/efficientvlm/pipeline.py `Pipeline`;
 * an [ImageEncoding] is reused for several questions about one image. Graph inputs and outputs are those the
 * manifest lists. Not thread-safe: use one instance per thread (graph runtimes hold per-call state).
 */
class EfficientVlm internal constructor(
    val buildDir: File,
    val spec: BuildSpec,
    backend: GraphBackend,
) : AutoCloseable {
    /** The build written by `minivlm-convert` in `buildDir` (manifest family "efficientvlm"), its graphs run by `backend`. */
    constructor(buildDir: File, backend: GraphBackend) : this(buildDir, BuildSpec.load(buildDir), backend)

    val config: EvlmConfig
    val tokenizer: CoreTokenizer
    private val runners: Map<String, Lazy<GraphRunner>>

    init {
        if (spec.family != "efficientvlm") {
            throw MiniVlmException(ErrorKind.CONFIG, "${buildDir.path} is a ${spec.family} build; EfficientVlm runs efficientvlm builds (use MiniVlm)")
        }
        if (File(spec.vocabFile).isAbsolute || spec.vocabFile.split('/', '\\').any { it == ".." }) {
            throw MiniVlmException(ErrorKind.BAD_FILE, "manifest tokenizer.vocab_file is '${spec.vocabFile}', expected a file inside the build folder")
        }
        config = EvlmConfig.load(File(buildDir, "manifest.json"))
        try {
            tokenizer = CoreTokenizer.load(File(buildDir, spec.vocabFile))
            if (spec.answers.size != config.numAnswers) {
                throw MiniVlmException(ErrorKind.CONFIG, "the vocabularies list ${spec.answers.size} answers, the model predicts ${config.numAnswers}")
            }
        } catch (e: Throwable) {
            config.close()
            throw e
        }
        runners = spec.graphOrder.associateWith { lazy { backend.open(buildDir, spec.graph(it)) } }
    }

    /** Opens every graph now (model load), so the first image does not pay for it. */
    fun loadGraphs() {
        runners.values.forEach { it.value }
    }

    private fun run(name: String, inputs: Map<String, Tensor>, timings: Timings): Map<String, Tensor> {
        val runner = runners[name]?.value ?: throw MiniVlmException(ErrorKind.CONFIG, "the build has no graph '$name'")
        runner.spec.checkInputs(inputs)
        return timings.measure(name) { runner.run(inputs) }
    }

    /** The vision graph's input for `image`: (1, 3, S, S), resized as Pillow's bicubic and normalised. */
    fun preprocess(image: Image): FloatArray {
        val s = config.imageSize
        return FloatArray(3 * s * s).also {
            NativeEvlm.evlmPreprocess(config.handle, image.pixels, image.width, image.height, image.rowBytes, image.format, it)
        }
    }

    /** Preprocess one image and run the vision graph. */
    fun encode(image: Image): Timed<ImageEncoding> {
        val timings = Timings()
        val s = config.imageSize.toLong()
        val pixels = timings.measure("preprocess") { preprocess(image) }
        val out = run("vision", mapOf("images" to Tensor.of(pixels, 1, 3, s, s)), timings)
        val tokens = out["image_tokens"] ?: throw MiniVlmException(ErrorKind.RUNTIME, "vision returned no output 'image_tokens'")
        val want = longArrayOf(1, config.numImageTokens.toLong(), config.visionWidth.toLong())
        if (tokens !is Tensor.F32 || !tokens.shape.contentEquals(want)) {
            throw MiniVlmException(ErrorKind.RUNTIME, "vision output 'image_tokens' is ${tokens.dtype.manifestName}${tokens.shapeString()}, expected float32${want.joinToString(", ", "(", ")")}")
        }
        val feature = MiniVlm.f32(out, "image_feature")
        if (feature.size != config.embedDim) {
            throw MiniVlmException(ErrorKind.RUNTIME, "vision output 'image_feature' has ${feature.size} values, expected ${config.embedDim}")
        }
        return Timed(ImageEncoding(tokens, feature), timings)
    }

    /** `[CLS] text [SEP]` padded to max_text_len: the text inputs of text_feature, match and vqa. */
    fun pack(text: String): Map<String, Tensor> {
        val t = config.maxTextLen
        val ids = LongArray(t)
        val mask = FloatArray(t)
        NativeEvlm.evlmPackText(tokenizer.handle, config.handle, text.toByteArray(Charsets.UTF_8), ids, mask)
        return mapOf("input_ids" to Tensor.of(ids, 1, t.toLong()), "token_mask" to Tensor.of(mask, 1, t.toLong()))
    }

    /**
     * The greedy caption after the prompt "a picture of", decoded by the core over the caption_step graph.
     * Greedy decoding keeps no score: [Caption.score] is NaN.
     */
    fun caption(encoding: ImageEncoding): Timed<Caption> {
        val timings = Timings()
        val step = EvlmCaptionStep(this, encoding, timings)
        val result = IntArray(1)
        val start = System.nanoTime()
        val ids = NativeEvlm.evlmCaptionDecode(tokenizer.handle, config.handle, step, result)
        timings.add("decode (host)", (System.nanoTime() - start) / 1e6 - (timings.entries["caption_step"] ?: 0.0))
        val text = timings.measure("detokenize") { tokenizer.decode(ids) }
        return Timed(Caption(text, ids, Double.NaN, result[0] != 0), timings)
    }

    internal fun runCaptionStep(inputs: Map<String, Tensor>, timings: Timings): Map<String, Tensor> = run("caption_step", inputs, timings)

    /** The most likely answer from the model's answer vocabulary. */
    fun answer(encoding: ImageEncoding, question: String): Timed<String> {
        val timings = Timings()
        val text = timings.measure("pack") { pack(question) }
        val logits = MiniVlm.f32(run("vqa", mapOf("image_tokens" to encoding.tokens) + text, timings), "answer_logits")
        var best = 0
        for (i in logits.indices) if (logits[i] > logits[best]) best = i // the first maximum, as torch.argmax
        val answer = spec.answers.getOrElse(best) { throw MiniVlmException(ErrorKind.CONFIG, "answer $best is outside the vocabulary") }
        return Timed(answer, timings)
    }

    /** Probability that `text` describes the image (softmax of the ITM head, class 1). */
    fun match(encoding: ImageEncoding, text: String): Timed<Float> {
        val timings = Timings()
        val packed = timings.measure("pack") { pack(text) }
        val logits = MiniVlm.f32(run("match", mapOf("image_tokens" to encoding.tokens) + packed, timings), "match_logits")
        if (logits.size != 2) throw MiniVlmException(ErrorKind.CONFIG, "match_logits has ${logits.size} values, expected 2")
        return Timed((1.0 / (1.0 + exp((logits[0] - logits[1]).toDouble()))).toFloat(), timings)
    }

    /** The text's unit ITC feature (E,), for retrieval: its dot product with [ImageEncoding.feature] ranks texts. */
    fun textFeature(text: String): Timed<FloatArray> {
        val timings = Timings()
        val packed = timings.measure("pack") { pack(text) }
        return Timed(MiniVlm.f32(run("text_feature", packed, timings), "text_feature"), timings)
    }

    override fun close() {
        runners.values.filter { it.isInitialized() }.forEach { it.value.close() }
        tokenizer.close()
        config.close()
    }
}

/**
 * Runs caption_step for the core's greedy decoder: the request's input_ids and token_mask (native arrays,
 * wrapped without a copy) with the image's tokens, and the graph's token_logits written into the core's buffer.
 */
internal class EvlmCaptionStep(
    private val pipeline: EfficientVlm,
    private val encoding: ImageEncoding,
    private val timings: Timings,
) : EvlmStepCallback {
    override fun onStep(step: Int, inputIds: java.nio.ByteBuffer, tokenMask: java.nio.ByteBuffer, tokenLogits: java.nio.ByteBuffer) {
        val t = pipeline.config.maxTextLen.toLong()
        val inputs = mapOf(
            "image_tokens" to encoding.tokens,
            "input_ids" to Tensor.I64(longArrayOf(1, t), inputIds.asReadOnlyBuffer().order(ByteOrder.nativeOrder()).asLongBuffer()),
            "token_mask" to Tensor.F32(longArrayOf(1, t), tokenMask.asReadOnlyBuffer().order(ByteOrder.nativeOrder()).asFloatBuffer()),
        )
        val out = pipeline.runCaptionStep(inputs, timings)["token_logits"] as? Tensor.F32
            ?: throw MiniVlmException(ErrorKind.RUNTIME, "caption_step returned no float output 'token_logits'")
        val target = tokenLogits.order(ByteOrder.nativeOrder()).asFloatBuffer()
        if (out.count != target.remaining()) {
            throw MiniVlmException(ErrorKind.RUNTIME, "caption_step output 'token_logits' has ${out.count} values, the decoder expects ${target.remaining()}")
        }
        target.put(out.data.duplicate())
    }
}

package ai.minivlm

import java.nio.ByteBuffer

/**
 * JNI declarations of `libminivlm_jni` (minivlm/src/main/cpp/minivlm_jni.cpp), one per function of the
 * native core's C ABI (sdk/native/include/minivlm/minivlm.h) that the app uses.
 *
 * Handles are the core's opaque pointers as `Long` (0 is never a valid handle); each `*Free` accepts 0.
 * The bridge checks every array length against the sizes the config implies before the core sees a
 * pointer, and turns every non-OK status into a [MiniVlmException] carrying `mvlm_last_error()`. Text goes
 * in and out as UTF-8 bytes, never through JNI's modified UTF-8, so that any byte sequence a user or a
 * file supplies reaches the core's own UTF-8 validation.
 *
 * Prefer the typed wrappers ([MiniVlm], [CoreTokenizer], [CoreManifest]) over calling these directly.
 */
object Native {
    init {
        System.loadLibrary("minivlm_jni")
    }

    // Index of each field in `configInts` (the bridge fills the same order; see CONFIG_FIELDS there).
    const val CFG_IMAGE_SIZE = 0
    const val CFG_NUM_LEVELS = 1
    const val CFG_NUM_RATIOS = 2
    const val CFG_POST_NMS_TOP_N = 3
    const val CFG_NUM_CLASSES = 4
    const val CFG_NUM_ATTRIBUTES = 5
    const val CFG_REPRESENTATION_SIZE = 6
    const val CFG_MAX_REGIONS = 7
    const val CFG_VOCAB_SIZE = 8
    const val CFG_NUM_LAYERS = 9
    const val CFG_NUM_HEADS = 10
    const val CFG_HEAD_DIM = 11
    const val CFG_MAX_TEXT_LEN = 12
    const val CFG_MAX_TEXT_TAGS_LEN = 13
    const val CFG_MAX_TAGS_LEN = 14
    const val CFG_REGION_DIM = 15
    const val CFG_MAX_CAPTION_TOKENS = 16
    const val CFG_REGION_ORDER = 17
    const val CFG_COUNT = 18

    // Pixel formats of `preprocess` (MVLM_PIXELS_*).
    const val PIXELS_RGB8 = 0
    const val PIXELS_RGBA8 = 1
    const val PIXELS_BGRA8 = 2
    const val PIXELS_BGR8 = 3

    @JvmStatic external fun apiVersion(): Int
    @JvmStatic external fun statusName(status: Int): String

    // Manifest and config --------------------------------------------------------------------------------
    @JvmStatic external fun manifestLoad(path: String): Long
    /** `text` is the manifest.json bytes; `folder` (nullable) resolves relative file names. */
    @JvmStatic external fun manifestParse(text: ByteArray, folder: String?): Long
    @JvmStatic external fun manifestFree(manifest: Long)
    /** Path of "vocab", "vocabularies" or a graph's file. */
    @JvmStatic external fun manifestFile(manifest: Long, which: String): String
    @JvmStatic external fun manifestClassNames(manifest: Long): Array<String>
    /** A new `mvlm_config` filled from the manifest and checked (free with [configFree]). */
    @JvmStatic external fun configFromManifest(manifest: Long): Long
    /** A copy of `config` with another square input size, for preprocessing only (free with [configFree]). */
    @JvmStatic external fun configWithImageSize(config: Long, imageSize: Int): Long
    @JvmStatic external fun configFree(config: Long)
    /** The integer sizes of a config, indexed by the CFG_* constants. */
    @JvmStatic external fun configInts(config: Long): IntArray

    // Tokenizer ------------------------------------------------------------------------------------------
    @JvmStatic external fun tokenizerLoad(vocabPath: String): Long
    @JvmStatic external fun tokenizerParse(vocabText: ByteArray): Long
    @JvmStatic external fun tokenizerFree(tokenizer: Long)
    @JvmStatic external fun tokenizerVocabSize(tokenizer: Long): Int
    /** [PAD], [UNK], [CLS], [SEP], [MASK]. */
    @JvmStatic external fun tokenizerSpecialIds(tokenizer: Long): LongArray
    @JvmStatic external fun tokenize(tokenizer: Long, utf8: ByteArray): LongArray
    @JvmStatic external fun detokenize(tokenizer: Long, ids: LongArray): ByteArray
    @JvmStatic external fun tokenText(tokenizer: Long, id: Long): ByteArray

    // Image and boxes ------------------------------------------------------------------------------------
    /** Fills `out` (3*S*S floats) and returns the letterbox [height, width, scale, resized_h, resized_w]. */
    @JvmStatic external fun preprocess(config: Long, pixels: ByteArray, width: Int, height: Int, rowBytes: Int, format: Int, out: FloatArray): DoubleArray
    /** Anchors per level (num_levels entries; their sum is N). */
    @JvmStatic external fun anchorLevelSizes(config: Long): LongArray
    /** Anchors (N, 4) flattened. */
    @JvmStatic external fun makeAnchors(config: Long): FloatArray
    @JvmStatic external fun decodeBoxes(deltas: FloatArray, references: FloatArray, weights: DoubleArray): FloatArray
    @JvmStatic external fun nms(boxes: FloatArray, scores: FloatArray, iouThreshold: Double): LongArray
    /** objectness (N,), deltas (N, 4), anchors (N, 4) -> proposals (post_nms_top_n, 4), valid (post_nms_top_n,). */
    @JvmStatic external fun selectProposals(config: Long, objectness: FloatArray, deltas: FloatArray, anchors: FloatArray, proposals: FloatArray, valid: ByteArray)
    /** Outputs are (max_regions, ...) arrays; returns the region count K. */
    @JvmStatic external fun selectRegions(
        config: Long, proposals: FloatArray, valid: ByteArray, classLogits: FloatArray, boxDeltas: FloatArray,
        boxes: FloatArray, labels: LongArray, scores: FloatArray, proposalIndices: LongArray,
    ): Int
    /** Region tokens (K, region_dim) and boxes in original-image pixels (K, 4) of the first `count` regions. */
    @JvmStatic external fun regionTokens(
        config: Long, count: Int, boxes: FloatArray, labels: LongArray, scores: FloatArray, proposalIndices: LongArray,
        features: FloatArray, letterbox: DoubleArray, tokens: FloatArray, imageBoxes: FloatArray,
    )

    // Fusion ---------------------------------------------------------------------------------------------
    /** `[CLS] text [SEP] | tags [SEP] | regions` into the five output arrays. `text` null only when !requireText. */
    @JvmStatic external fun packInputs(
        tokenizer: Long, config: Long, text: ByteArray?, tags: Array<ByteArray>, regionTokens: FloatArray, numRegions: Int,
        requireText: Boolean, inputIds: LongArray, tokenTypeIds: LongArray, tokenMask: FloatArray, regions: FloatArray,
        regionMask: FloatArray,
    )

    /**
     * Greedy (numBeams = 1) or beam-search caption over `step`, which runs the caption_step graph. Returns the
     * token ids; `result` receives [score, finished (0/1)]. An exception thrown by `step` stops decoding and
     * propagates unchanged.
     */
    @JvmStatic external fun captionDecode(
        config: Long, inputIds: LongArray, tokenTypeIds: LongArray, tokenMask: FloatArray, regions: FloatArray,
        regionMask: FloatArray, prefixKeys: FloatArray, prefixValues: FloatArray, numBeams: Int, lengthPenalty: Double,
        maxCaptionTokens: Int, step: NativeStepCallback, result: DoubleArray,
    ): LongArray

    // Build checks (minivlm.h "Build checks"; typed wrapper: [BuildChecks]) ---------------------------------
    /** The manifest of a build folder of any model family (an EfficientVLM one has no MiniVLM config). */
    @JvmStatic external fun buildManifestLoad(folder: String): Long
    /** Throws [MiniVlmException] unless the folder's files, manifest checksum, runtime and version check out. */
    @JvmStatic external fun buildVerify(folder: String, runtime: String, runtimeVersion: String?)
    /** [backend, accelerator, compute_units, note] of `mvlm_plan_runtime`; `threadsOut[0]` receives the threads. */
    @JvmStatic external fun planRuntime(
        manifest: Long, platform: String, accelerator: String?, computeUnits: String?, threads: Int, availableCores: Int,
        threadsOut: IntArray,
    ): Array<String>
    /** [sample_size, max_side] of a width x height photo. */
    @JvmStatic external fun decodeSize(manifest: Long, width: Int, height: Int): IntArray
    /** `<cachesDir>/minivlm-compiled/<manifest sha256 prefix>/<graph>.mlmodelc`. */
    @JvmStatic external fun compiledCachePath(manifest: Long, cachesDir: String, graph: String): String
}

/**
 * Called by the bridge once per decoding step. `buffers` are direct native-order views of the core's
 * `mvlm_step_request` arrays, in this order: history, token_ids, position_ids, prefix_keys, prefix_values,
 * prefix_mask, cache_keys, cache_values, cache_mask (inputs, read-only) and mask_logits, new_keys,
 * new_values (outputs to fill). They are valid only until this call returns.
 */
fun interface NativeStepCallback {
    fun onStep(step: Int, numBeams: Int, buffers: Array<ByteBuffer>)
}

// =========================================================================================================
// EfficientVLM host steps (the core's mvlm_evlm_* functions), used by [EfficientVlm].

/**
 * JNI declarations of the EfficientVLM section of `libminivlm_jni` (same rules as [Native]: lengths checked by
 * the bridge, every non-OK status a [MiniVlmException], text as UTF-8 bytes). Config handles come from
 * [evlmConfigLoad] and are freed by [evlmConfigFree] (which accepts 0).
 */
object NativeEvlm {
    init {
        System.loadLibrary("minivlm_jni")
    }

    // Index of each field in `evlmConfigInts`.
    const val IMAGE_SIZE = 0
    const val NUM_IMAGE_TOKENS = 1
    const val VISION_WIDTH = 2
    const val EMBED_DIM = 3
    const val MAX_TEXT_LEN = 4
    const val VOCAB_SIZE = 5
    const val NUM_ANSWERS = 6

    /** A new `mvlm_evlm_config` read from manifest.json (or its build folder); refuses other families. */
    @JvmStatic external fun evlmConfigLoad(path: String): Long
    @JvmStatic external fun evlmConfigFree(config: Long)
    @JvmStatic external fun evlmConfigInts(config: Long): IntArray
    /** [PAD], [UNK], [CLS], [SEP], [MASK] as the manifest gives them. */
    @JvmStatic external fun evlmConfigSpecialIds(config: Long): LongArray
    /** Pillow-exact bicubic resize to size x size: (size, size, 3) RGB bytes. */
    @JvmStatic external fun evlmResize(size: Int, pixels: ByteArray, width: Int, height: Int, rowBytes: Int, format: Int): ByteArray
    /** The vision graph's `images` (1, 3, S, S) into `out` (3*S*S floats). */
    @JvmStatic external fun evlmPreprocess(config: Long, pixels: ByteArray, width: Int, height: Int, rowBytes: Int, format: Int, out: FloatArray)
    /** `[CLS] text [SEP]` padded to max_text_len into `inputIds` and `tokenMask` (max_text_len each). */
    @JvmStatic external fun evlmPackText(tokenizer: Long, config: Long, text: ByteArray, inputIds: LongArray, tokenMask: FloatArray)
    /** The caption prompt padded the same way; returns its token count. */
    @JvmStatic external fun evlmCaptionPrompt(tokenizer: Long, config: Long, inputIds: LongArray, tokenMask: FloatArray): Int
    /**
     * Greedy caption over `step` (one caption_step call per token); returns the token ids after the prompt,
     * `result[0]` = 1 if [SEP] ended it. An exception thrown by `step` stops decoding and propagates unchanged.
     */
    @JvmStatic external fun evlmCaptionDecode(tokenizer: Long, config: Long, step: EvlmStepCallback, result: IntArray): LongArray
}

/**
 * Called once per caption token: `inputIds` (T int64) and `tokenMask` (T float32) are the core's caption_step
 * inputs (read-only), `tokenLogits` (T*V float32) the output to fill; direct native-order views, valid only
 * until this call returns.
 */
fun interface EvlmStepCallback {
    fun onStep(step: Int, inputIds: java.nio.ByteBuffer, tokenMask: java.nio.ByteBuffer, tokenLogits: java.nio.ByteBuffer)
}

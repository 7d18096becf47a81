package ai.minivlm

import java.io.File

/** Owns one native handle; `close` frees it once, later use raises (the bridge rejects handle 0). */
abstract class NativeHandle(handle: Long, private val free: (Long) -> Unit) : AutoCloseable {
    @Volatile
    var handle: Long = handle
        private set

    @Synchronized
    override fun close() {
        val h = handle
        handle = 0
        if (h != 0L) free(h)
    }
}

/** A build's manifest.json as the native core reads and checks it (`mvlm_manifest`). */
class CoreManifest private constructor(handle: Long) : NativeHandle(handle, Native::manifestFree) {
    /** Path of "vocab", "vocabularies" or a graph's file, resolved in the build folder. */
    fun file(which: String): File = File(Native.manifestFile(handle, which))

    /** Detector class names; index 0 is the background. */
    val classNames: List<String> by lazy { Native.manifestClassNames(handle).toList() }

    /** The host-step constants, checked by the core (`mvlm_manifest_config` + `mvlm_config_check`). */
    fun config(): CoreConfig = CoreConfig(Native.configFromManifest(handle))

    companion object {
        /** `path` is manifest.json or the build folder holding it. */
        fun load(path: File): CoreManifest = CoreManifest(Native.manifestLoad(path.path))

        /** From bytes; `folder` resolves relative file names (may be null). */
        fun parse(bytes: ByteArray, folder: File?): CoreManifest = CoreManifest(Native.manifestParse(bytes, folder?.path))
    }
}

/** An `mvlm_config` owned by Kotlin, with the sizes the pipeline allocates by. */
class CoreConfig internal constructor(handle: Long) : NativeHandle(handle, Native::configFree) {
    private val ints = Native.configInts(handle)
    private fun at(i: Int) = ints[i]

    val imageSize get() = at(Native.CFG_IMAGE_SIZE)
    val postNmsTopN get() = at(Native.CFG_POST_NMS_TOP_N)
    val numClasses get() = at(Native.CFG_NUM_CLASSES)
    val numAttributes get() = at(Native.CFG_NUM_ATTRIBUTES)
    val representationSize get() = at(Native.CFG_REPRESENTATION_SIZE)
    val maxRegions get() = at(Native.CFG_MAX_REGIONS)
    val vocabSize get() = at(Native.CFG_VOCAB_SIZE)
    val numLayers get() = at(Native.CFG_NUM_LAYERS)
    val numHeads get() = at(Native.CFG_NUM_HEADS)
    val headDim get() = at(Native.CFG_HEAD_DIM)
    val maxTextLen get() = at(Native.CFG_MAX_TEXT_LEN)
    val maxTextTagsLen get() = at(Native.CFG_MAX_TEXT_TAGS_LEN)
    val maxTagsLen get() = at(Native.CFG_MAX_TAGS_LEN)
    val regionDim get() = at(Native.CFG_REGION_DIM)
    val maxCaptionTokens get() = at(Native.CFG_MAX_CAPTION_TOKENS)

    /** Keys/values of the caption prefix: P = max_tags_len + max_regions positions. */
    val prefixLength get() = maxTagsLen + maxRegions
}

/** BERT uncased WordPiece, run by the core (identical to python_ref/tokenizer.py). */
class CoreTokenizer private constructor(handle: Long) : NativeHandle(handle, Native::tokenizerFree) {
    val vocabSize: Int get() = Native.tokenizerVocabSize(handle)

    /** [PAD], [UNK], [CLS], [SEP], [MASK]. */
    val specialIds: LongArray get() = Native.tokenizerSpecialIds(handle)

    fun encode(text: String): LongArray = Native.tokenize(handle, text.toByteArray(Charsets.UTF_8))

    /** Raw UTF-8 bytes, checked by the core (bad UTF-8 raises [ErrorKind.BAD_INPUT]). */
    fun encodeUtf8(bytes: ByteArray): LongArray = Native.tokenize(handle, bytes)

    fun decode(ids: LongArray): String = String(Native.detokenize(handle, ids), Charsets.UTF_8)

    fun tokenText(id: Long): String = String(Native.tokenText(handle, id), Charsets.UTF_8)

    companion object {
        fun load(vocab: File): CoreTokenizer = CoreTokenizer(Native.tokenizerLoad(vocab.path))
        fun parse(vocabText: ByteArray): CoreTokenizer = CoreTokenizer(Native.tokenizerParse(vocabText))
    }
}

package ai.minivlm

import java.io.File
import java.nio.ByteOrder
import kotlin.math.abs
import kotlin.math.ln
import kotlin.math.max
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

// The JVM golden test of the Android library: Kotlin -> JNI bridge -> native core, on python_ref's goldens
// (tests/golden/, written by scripts/update_goldens.py). Every expected value is read from the goldens.
//
//   java -Djava.library.path=DIR -cp ... ai.minivlm.GoldenReplayMainKt GOLDEN_DIR VOCAB_TXT [BUILDS_DIR]
//
// Three parts: each host step through `Native` (as sdk/native/tests/test_host_steps.cpp does in C, here through
// the bridge's array checks and copies); the `MiniVlm` pipeline itself, with graph runners that replay the
// recorded graph outputs (analyze, caption greedy and beam through CaptionStepAdapter, answer); and malformed
// input, which must raise MiniVlmException and leave the process working. Prints one line per check and
// "N passed, M failed"; exits 1 on any failure.

// Tolerances of sdk/native/tests/check.hpp, for the same reasons:
/** Normalised floats (pixels, scores, region tokens): python_ref's float32 ops repeated one by one. */
const val FLOAT_TOL = 1e-5
/** Box coordinates in input pixels, relative to max(1, |expected|): expf differs by an ulp or two. */
const val COORD_REL_TOL = 1e-5
/** A caption score: a sum of up to 20 float32 log-probabilities. */
const val SCORE_TOL = 1e-4

class Checks {
    var passed = 0
    var failed = 0

    fun check(name: String, body: () -> Unit) {
        try {
            body()
            passed++
            println("PASS $name")
        } catch (e: Throwable) {
            failed++
            println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        }
    }
}

fun assertClose(got: FloatArray, expected: FloatArray, tol: Double, what: String, relative: Boolean = false) {
    assertEquals(expected.size, got.size, "$what: size")
    var worst = 0.0
    var at = -1
    for (i in got.indices) {
        val bound = tol * (if (relative) max(1.0, abs(expected[i].toDouble())) else 1.0)
        val d = abs(got[i].toDouble() - expected[i].toDouble())
        val bothNan = got[i].isNaN() && expected[i].isNaN()
        if (!bothNan && !(d <= bound) && (at < 0 || d > worst)) { worst = d; at = i }
    }
    assertTrue(at < 0, "$what: max |diff| $worst at $at (got ${got.getOrNull(at)}, expected ${expected.getOrNull(at)}), tolerance $tol${if (relative) " x max(1, |e|)" else ""}")
}

/** The table of one recorded decode (converters/caption_goldens.py `decode_table`): rows by token history, [CLS] first. */
class DecodeTable(golden: Golden, table: JsonPath, private val vocab: Int) {
    private val rows = HashMap<List<Long>, Int>()
    private val topIndices: LongArray
    private val topLogits: FloatArray
    private val restLogsumexp: FloatArray
    private val k: Int

    init {
        val histories = golden.array(table["histories"])
        val h = histories.longs()
        val width = histories.shape[1].toInt()
        for (m in 0 until histories.shape[0].toInt()) {
            rows[(0 until width).map { h[m * width + it] }.takeWhile { it >= 0 }] = m
        }
        val indices = golden.array(table["top_indices"])
        k = indices.shape[1].toInt()
        topIndices = indices.longs()
        topLogits = golden.array(table["top_logits"]).floats()
        restLogsumexp = golden.array(table["rest_logsumexp"]).floats()
    }

    /** The full logits row of `history` (converters/caption_goldens.py `reconstruct_logits`). */
    fun logits(history: List<Long>): FloatArray {
        val m = rows[history] ?: throw AssertionError("the decoder asked for unrecorded history $history")
        var lowest = Float.POSITIVE_INFINITY
        for (j in 0 until k) lowest = minOf(lowest, topLogits[m * k + j])
        val filler = minOf((restLogsumexp[m].toDouble() - ln((vocab - k).toDouble())).toFloat(), Math.nextDown(lowest))
        val row = FloatArray(vocab) { filler }
        for (j in 0 until k) row[topIndices[m * k + j].toInt()] = topLogits[m * k + j]
        return row
    }
}

/** Graph specs as a build's manifest would list them, from the config's sizes (tests/golden has no graphs). */
fun syntheticSpec(c: CoreConfig, numAnchors: Int, answers: List<String>, attributes: List<String>): BuildSpec {
    fun f(name: String, vararg shape: Int, axis: Int = 0) = TensorSpec(name, shape.map { it.toLong() }.toLongArray(), DType.FLOAT32, axis, name, DType.FLOAT32)
    fun i(name: String, vararg shape: Int) = TensorSpec(name, shape.map { it.toLong() }.toLongArray(), DType.INT64, 0, name, DType.INT64)
    val s = c.imageSize; val k = c.postNmsTopN; val cl = c.numClasses; val tags = c.maxTagsLen; val r = c.maxRegions
    val l = c.numLayers; val h = c.numHeads; val p = c.prefixLength; val d = c.headDim; val t = c.maxTextLen; val tt = c.maxTextTagsLen
    val fusionIn = listOf(i("input_ids", 1, tt), i("token_type_ids", 1, tt), f("token_mask", 1, tt), f("regions", 1, r, c.regionDim), f("region_mask", 1, r))
    val graphs = listOf(
        GraphSpec("tee_stage1", "-", listOf(f("images", 1, 3, s, s)), listOf(f("objectness", 1, numAnchors), f("deltas", 1, numAnchors, 4))),
        GraphSpec("tee_stage2", "-", listOf(f("boxes", 1, k, 4)), listOf(f("region_features", 1, k, c.representationSize),
            f("class_logits", 1, k, cl), f("box_deltas", 1, k, 4 * cl), f("attribute_logits", 1, k, c.numAttributes))),
        GraphSpec("caption_prefix", "-", listOf(i("tag_ids", 1, tags), i("tag_type_ids", 1, tags), f("tag_mask", 1, tags),
            f("regions", 1, r, c.regionDim), f("region_mask", 1, r)), listOf(f("prefix_keys", l, 1, h, p, d, axis = 1), f("prefix_values", l, 1, h, p, d, axis = 1))),
        GraphSpec("caption_step", "-", listOf(i("token_ids", 1, 2), i("position_ids", 1, 2), f("prefix_keys", l, 1, h, p, d, axis = 1),
            f("prefix_values", l, 1, h, p, d, axis = 1), f("prefix_mask", 1, p), f("cache_keys", l, 1, h, t, d, axis = 1),
            f("cache_values", l, 1, h, t, d, axis = 1), f("cache_mask", 1, t)),
            listOf(f("mask_logits", 1, c.vocabSize), f("new_keys", l, 1, h, 1, d, axis = 1), f("new_values", l, 1, h, 1, d, axis = 1))),
        GraphSpec("vqa", "-", fusionIn, listOf(f("answer_logits", 1, answers.size))),
        GraphSpec("match", "-", fusionIn, listOf(f("match_logits", 1, 2))),
    )
    return BuildSpec("replay", null, "fp32", graphs.associateBy { it.name }, answers, attributes)
}

/** A graph runner from a lambda (the replaying fakes below). */
class FakeRunner(override val spec: GraphSpec, private val body: (Map<String, Tensor>) -> Map<String, Tensor>) : GraphRunner {
    var calls = 0
    override fun run(inputs: Map<String, Tensor>): Map<String, Tensor> { calls++; return body(inputs) }
}

fun f32(t: Tensor?): FloatArray = (t as Tensor.F32).toArray()
fun i64(t: Tensor?): LongArray = (t as Tensor.I64).toArray()

/**
 * caption_step replayed from a decode table: the history of a batch-1 call is its cache's stored keys plus the
 * fed token, because this fake returns the fed token as every new key (converters/caption_goldens.py `check_replay`).
 */
fun stepReplay(spec: GraphSpec, table: () -> DecodeTable, c: CoreConfig) = FakeRunner(spec) { inputs ->
    val tokenIds = i64(inputs["token_ids"]); val positions = i64(inputs["position_ids"])
    val t = positions[1].toInt()
    assertEquals(t - 1L, positions[0], "position_ids")
    val cache = f32(inputs["cache_keys"]) // (L, 1, H, C, d): slot j of layer 0, head 0 at j * d
    val history = (0 until t - 1).map { cache[it * c.headDim].toLong() } + tokenIds[0]
    val fed = FloatArray(c.numLayers * c.numHeads * c.headDim) { tokenIds[0].toFloat() }
    mapOf("mask_logits" to Tensor.of(table().logits(history), 1, c.vocabSize.toLong()),
        "new_keys" to Tensor.of(fed, *spec.outputs[1].shape), "new_values" to Tensor.of(fed.copyOf(), *spec.outputs[2].shape))
}

fun main(args: Array<String>) {
    require(args.size in 2..3) { "usage: GoldenReplayMain GOLDEN_DIR VOCAB_TXT [BUILDS_DIR]" }
    val goldenDir = File(args[0])
    val vocabFile = File(args[1])
    val checks = Checks()
    val golden = Golden(goldenDir)
    val index = golden.index
    val manifest = CoreManifest.load(File(goldenDir, "manifest.json"))
    val config = manifest.config()
    val tokenizer = CoreTokenizer.load(vocabFile)
    val classNames = manifest.classNames
    val vocabularies = JsonPath(Json.parseObject(BuildSpec.readText(File(goldenDir, "vocabularies.json")), "vocabularies.json"), "vocabularies")
    val answers = vocabularies["answers"].list.map { it.string }
    val attributes = vocabularies["attributes"].list.map { it.string }

    checks.check("api version and config") {
        assertEquals(1, Native.apiVersion())
        assertEquals(classNames.size, config.numClasses)
        assertContentEquals(vocabularies["classes"].list.map { it.string }, classNames)
        val specials = tokenizer.specialIds
        val want = JsonPath(Json.parseObject(BuildSpec.readText(File(goldenDir, "manifest.json")), "manifest"), "manifest")["tokenizer"]["specials"]
        assertContentEquals(listOf("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]").map { want[it].long }.toLongArray(), specials)
    }

    // 1. Tokenizer.
    for ((n, case) in index["tokenizer"].list.withIndex()) {
        val text = case["text"].string
        val label = text.take(24).map { if (it.isISOControl() || it.isWhitespace() && it != ' ') "\\u%04x".format(it.code) else "$it" }.joinToString("")
        checks.check("tokenizer $n $label") {
            val ids = tokenizer.encode(text)
            assertContentEquals(case["ids"].list.map { it.long }.toLongArray(), ids)
            assertEquals(case["decoded"].string, tokenizer.decode(ids))
        }
    }

    // 2. Host steps through Native, case by case.
    val anchors = Native.makeAnchors(config.handle)
    checks.check("anchors") {
        assertClose(anchors, golden.array(index["anchors"]).floats(), COORD_REL_TOL, "anchors", relative = true)
        assertContentEquals(index["level_sizes"].list.map { it.long }.toLongArray(), Native.anchorLevelSizes(config.handle))
    }
    for ((n, case) in index["preprocess_cases"].list.withIndex()) {
        checks.check("preprocess $n ${case["source"].string}") {
            val image = golden.array(case["image"])
            val (h, w) = image.shape[0].toInt() to image.shape[1].toInt()
            val size = case["size"].int
            val small = Native.configWithImageSize(config.handle, size)
            try {
                val out = FloatArray(3 * size * size)
                val box = Native.preprocess(small, image.bytes(), w, h, 3 * w, Native.PIXELS_RGB8, out)
                assertClose(out, golden.array(case["pixels"]).floats(), FLOAT_TOL, "pixels")
                val lb = case["letterbox"]
                assertContentEquals(doubleArrayOf(lb["height"].double, lb["width"].double, lb["scale"].double, lb["resized_height"].double,
                    lb["resized_width"].double), box)
                // RGBA with a padded row stride gives the same floats (the Android Bitmap path).
                val stride = 4 * w + 12
                val rgba = ByteArray(stride * h) { 0x5A }
                val rgb = image.bytes()
                for (y in 0 until h) for (x in 0 until w) for (ch in 0 until 3) rgba[y * stride + 4 * x + ch] = rgb[(y * w + x) * 3 + ch]
                val out2 = FloatArray(3 * size * size)
                Native.preprocess(small, rgba, w, h, stride, Native.PIXELS_RGBA8, out2)
                assertContentEquals(out, out2)
            } finally {
                Native.configFree(small)
            }
        }
    }

    val caseNames = index["cases"].keys
    for (name in caseNames) {
        val case = index["cases"][name]
        val hs = case["host_steps"]
        checks.check("$name host steps") {
            val k = config.postNmsTopN
            val proposals = FloatArray(4 * k)
            val valid = ByteArray(k)
            Native.selectProposals(config.handle, golden.array(hs["proposals"]["inputs"]["objectness"]).floats(),
                golden.array(hs["proposals"]["inputs"]["deltas"]).floats(), anchors, proposals, valid)
            assertClose(proposals, golden.array(hs["proposals"]["outputs"]["proposals"]).floats(), COORD_REL_TOL, "proposals", relative = true)
            assertContentEquals(golden.array(hs["proposals"]["outputs"]["valid"]).bytes(), valid, "valid")

            val rs = hs["region_selection"]
            val m = config.maxRegions
            val boxes = FloatArray(4 * m); val labels = LongArray(m); val scores = FloatArray(m); val rows = LongArray(m)
            val count = Native.selectRegions(config.handle, proposals, valid, golden.array(rs["inputs"]["class_logits"]).floats(),
                golden.array(rs["inputs"]["box_deltas"]).floats(), boxes, labels, scores, rows)
            val wantLabels = golden.array(rs["outputs"]["labels"]).longs()
            assertEquals(wantLabels.size, count, "region count")
            assertContentEquals(wantLabels, labels.copyOf(count), "labels")
            assertContentEquals(golden.array(rs["outputs"]["proposal_indices"]).longs(), rows.copyOf(count), "proposal indices")
            assertClose(boxes.copyOf(4 * count), golden.array(rs["outputs"]["boxes"]).floats(), COORD_REL_TOL, "region boxes", relative = true)
            assertClose(scores.copyOf(count), golden.array(rs["outputs"]["scores"]).floats(), FLOAT_TOL, "scores")

            val lb = case["letterbox"]
            val letterbox = doubleArrayOf(lb["height"].double, lb["width"].double, lb["scale"].double, lb["resized_height"].double, lb["resized_width"].double)
            val tokens = FloatArray(count * config.regionDim); val imageBoxes = FloatArray(4 * count)
            Native.regionTokens(config.handle, count, boxes, labels, scores, rows, golden.array(rs["inputs"]["features"]).floats(), letterbox, tokens, imageBoxes)
            val det = hs["detections"]["outputs"]
            assertClose(tokens, golden.array(det["region_tokens"]).floats(), FLOAT_TOL, "region tokens")
            assertClose(imageBoxes, golden.array(det["boxes"]).floats(), COORD_REL_TOL, "image boxes", relative = true)
            val tags = (0 until count).map { classNames[labels[it].toInt()] }
            assertEquals(det["tags"]["value"].list.map { it.string }, tags, "tags")

            for ((step, text) in listOf("caption_packing" to null, "question_packing" to hs["question_packing"]["inputs"]["question"]["value"].string)) {
                val tt = config.maxTextTagsLen
                val ids = LongArray(tt); val types = LongArray(tt); val mask = FloatArray(tt)
                val regions = FloatArray(m * config.regionDim); val regionMask = FloatArray(m)
                Native.packInputs(tokenizer.handle, config.handle, text?.toByteArray(), tags.map { it.toByteArray() }.toTypedArray(),
                    tokens, count, text != null, ids, types, mask, regions, regionMask)
                val out = hs[step]["outputs"]
                assertContentEquals(golden.array(out["input_ids"]).longs(), ids, "$step input_ids")
                assertContentEquals(golden.array(out["token_type_ids"]).longs(), types, "$step token_type_ids")
                assertContentEquals(golden.array(out["token_mask"]).floats(), mask, "$step token_mask")
                assertClose(regions, golden.array(out["regions"]).floats(), FLOAT_TOL, "$step regions")
                assertContentEquals(golden.array(out["region_mask"]).floats(), regionMask, "$step region_mask")
            }
        }

        // Caption decoding through the raw callback: the core hands over each beam's history.
        val decoding = case["caption_decoding"]
        for (kind in listOf("greedy", "beam").filter { decoding.has(it) }) {
            val record = decoding[kind]
            checks.check("$name caption $kind (Native.captionDecode)") {
                val table = DecodeTable(golden, record["table"], config.vocabSize)
                val packed = hs["caption_packing"]["outputs"]
                val prefix = FloatArray(config.numLayers * config.numHeads * config.prefixLength * config.headDim)
                var steps = 0
                val callback = NativeStepCallback { step, beams, buffers ->
                    steps++
                    val history = buffers[0].order(ByteOrder.nativeOrder()).asLongBuffer()
                    val logits = buffers[9].order(ByteOrder.nativeOrder()).asFloatBuffer()
                    for (b in 0 until beams) logits.put(table.logits((0 until step).map { history.get(b * step + it) }))
                }
                val result = DoubleArray(2)
                val ids = Native.captionDecode(config.handle, golden.array(packed["input_ids"]).longs(), golden.array(packed["token_type_ids"]).longs(),
                    golden.array(packed["token_mask"]).floats(), golden.array(packed["regions"]).floats(), golden.array(packed["region_mask"]).floats(),
                    prefix, prefix.copyOf(), record["num_beams"].int, record["length_penalty"].double, record["max_caption_tokens"].int, callback, result)
                assertContentEquals(record["token_ids"].list.map { it.long }.toLongArray(), ids, "token ids")
                assertEquals(record["finished"].bool, result[1] != 0.0, "finished")
                assertTrue(abs(result[0] - record["score"].double) <= SCORE_TOL, "score ${result[0]} vs ${record["score"].double}")
                assertEquals(record["caption"].string, tokenizer.decode(ids), "caption text")
                assertEquals(record["steps"].int, steps, "caption_step calls")
            }
        }
        checks.check("$name greedy caption text") {
            val out = hs["greedy_caption"]["outputs"]
            assertEquals(out["caption"]["value"].string, tokenizer.decode(golden.array(out["token_ids"]).longs()))
        }
    }

    // 3. The MiniVlm pipeline over replaying graph runners.
    val numAnchors = anchors.size / 4
    for ((caseIndex, name) in caseNames.withIndex()) {
        val case = index["cases"][name]
        val hs = case["host_steps"]
        val rs = hs["region_selection"]["inputs"]
        var table: DecodeTable? = null
        var vqaChecked = false
        val answerIndex = caseIndex % answers.size
        val spec = syntheticSpec(config, numAnchors, answers, attributes)
        val k = config.postNmsTopN.toLong()
        val backend = GraphBackend { _, g ->
            when (g.name) {
                "tee_stage1" -> FakeRunner(g) {
                    mapOf("objectness" to Tensor.of(golden.array(hs["proposals"]["inputs"]["objectness"]).floats(), 1, numAnchors.toLong()),
                        "deltas" to Tensor.of(golden.array(hs["proposals"]["inputs"]["deltas"]).floats(), 1, numAnchors.toLong(), 4))
                }
                "tee_stage2" -> FakeRunner(g) { inputs ->
                    assertClose(f32(inputs["boxes"]), golden.array(hs["proposals"]["outputs"]["proposals"]).floats(), COORD_REL_TOL, "stage-2 boxes", relative = true)
                    val cl = config.numClasses.toLong()
                    mapOf("region_features" to Tensor.of(golden.array(rs["features"]).floats(), 1, k, config.representationSize.toLong()),
                        "class_logits" to Tensor.of(golden.array(rs["class_logits"]).floats(), 1, k, cl),
                        "box_deltas" to Tensor.of(golden.array(rs["box_deltas"]).floats(), 1, k, 4 * cl),
                        "attribute_logits" to Tensor.of(golden.array(rs["attribute_logits"]).floats(), 1, k, config.numAttributes.toLong()))
                }
                "caption_prefix" -> FakeRunner(g) { inputs ->
                    val packed = hs["caption_packing"]["outputs"]
                    val c = config.maxTextLen
                    assertContentEquals(golden.array(packed["input_ids"]).longs().drop(c), i64(inputs["tag_ids"]).toList(), "tag_ids")
                    assertContentEquals(golden.array(packed["token_type_ids"]).longs().drop(c), i64(inputs["tag_type_ids"]).toList(), "tag_type_ids")
                    assertContentEquals(golden.array(packed["token_mask"]).floats().drop(c), f32(inputs["tag_mask"]).toList(), "tag_mask")
                    assertClose(f32(inputs["regions"]), golden.array(packed["regions"]).floats(), FLOAT_TOL, "prefix regions")
                    assertContentEquals(golden.array(packed["region_mask"]).floats(), f32(inputs["region_mask"]), "prefix region_mask")
                    val zeros = FloatArray(g.outputs[0].count)
                    mapOf("prefix_keys" to Tensor.of(zeros, *g.outputs[0].shape), "prefix_values" to Tensor.of(zeros.copyOf(), *g.outputs[1].shape))
                }
                "caption_step" -> stepReplay(g, { table!! }, config)
                "vqa" -> FakeRunner(g) { inputs ->
                    val packed = hs["question_packing"]["outputs"]
                    assertContentEquals(golden.array(packed["input_ids"]).longs(), i64(inputs["input_ids"]), "vqa input_ids")
                    assertContentEquals(golden.array(packed["token_type_ids"]).longs(), i64(inputs["token_type_ids"]), "vqa token_type_ids")
                    assertContentEquals(golden.array(packed["token_mask"]).floats(), f32(inputs["token_mask"]), "vqa token_mask")
                    assertClose(f32(inputs["regions"]), golden.array(packed["regions"]).floats(), FLOAT_TOL, "vqa regions")
                    vqaChecked = true
                    mapOf("answer_logits" to Tensor.of(FloatArray(answers.size) { if (it == answerIndex) 3f else -1f }, 1, answers.size.toLong()))
                }
                else -> FakeRunner(g) { throw AssertionError("graph ${g.name} is not used here") }
            }
        }
        val vlm = MiniVlm(goldenDir, spec, backend, vocabFile)
        try {
            val height = case["height"].int
            val width = case["width"].int
            var analysis: Analysis? = null
            checks.check("$name MiniVlm.analyze") {
                val a = vlm.analyze(Image.rgb(ByteArray(height * width * 3), width, height))
                analysis = a
                val lb = case["letterbox"]
                assertEquals(lb["scale"].double, a.letterbox[2], "letterbox scale")
                assertEquals(lb["resized_height"].double, a.letterbox[3], "resized height")
                val det = hs["detections"]["outputs"]
                val tags = det["tags"]["value"].list.map { it.string }
                assertEquals(tags, a.tags, "tags in region order")
                assertClose(a.regionTokens, golden.array(det["region_tokens"]).floats(), FLOAT_TOL, "region tokens")
                // Detections by descending score, stable (python_ref detections_of).
                val scores = golden.array(hs["region_selection"]["outputs"]["scores"]).floats()
                val boxes = golden.array(det["boxes"]).floats()
                val order = scores.indices.sortedByDescending { scores[it] }
                assertEquals(order.map { tags[it] }, a.detections.map { it.label }, "detections by score")
                assertClose(a.detections.flatMap { it.box.toList() }.toFloatArray(), order.flatMap { boxes.slice(4 * it until 4 * it + 4) }.toFloatArray(),
                    COORD_REL_TOL, "detection boxes", relative = true)
                assertTrue(a.detections.all { it.attribute in attributes }, "attributes name the vocabulary")
                assertTrue(a.timings.entries.keys.containsAll(listOf("preprocess", "tee_stage1", "proposals", "tee_stage2", "regions")), "stage timings ${a.timings}")
            }
            val decoding = case["caption_decoding"]
            for (kind in listOf("greedy", "beam").filter { decoding.has(it) }) {
                val record = decoding[kind]
                checks.check("$name MiniVlm.caption $kind (${record["num_beams"].int} beams)") {
                    table = DecodeTable(golden, record["table"], config.vocabSize)
                    val result = vlm.caption(analysis!!, record["num_beams"].int, record["length_penalty"].double)
                    assertEquals(record["caption"].string, result.value.text)
                    assertContentEquals(record["token_ids"].list.map { it.long }.toLongArray(), result.value.tokenIds)
                    assertEquals(record["finished"].bool, result.value.finished)
                    assertTrue(abs(result.value.score - record["score"].double) <= SCORE_TOL, "score ${result.value.score}")
                    assertTrue("caption_step" in result.timings.entries, "caption_step timing")
                }
            }
            checks.check("$name MiniVlm.answer") {
                val question = hs["question_packing"]["inputs"]["question"]["value"].string
                assertEquals(answers[answerIndex], vlm.answer(analysis!!, question).value)
                assertTrue(vqaChecked, "the vqa graph saw the packed question")
            }
        } finally {
            vlm.close()
        }
    }

    // 4. Malformed input: exceptions of the right kind, never a crash; the process keeps working.
    fun expectError(kind: ErrorKind, name: String, body: () -> Unit) = checks.check("malformed: $name") {
        val e = assertFailsWith<MiniVlmException> { body() }
        assertEquals(kind, e.kind, "kind (message: ${e.message})")
        assertTrue(!e.message.isNullOrBlank(), "a message")
    }
    expectError(ErrorKind.BAD_INPUT, "bad UTF-8 to the tokenizer") { tokenizer.encodeUtf8(byteArrayOf('a'.code.toByte(), 0xC3.toByte(), 0x28)) }
    expectError(ErrorKind.BAD_INPUT, "overlong UTF-8 encoding") { tokenizer.encodeUtf8(byteArrayOf(0xC0.toByte(), 0xAF.toByte())) }
    expectError(ErrorKind.BAD_INPUT, "truncated UTF-8 sequence") { tokenizer.encodeUtf8(byteArrayOf('x'.code.toByte(), 0xE2.toByte(), 0x82.toByte())) }
    expectError(ErrorKind.BAD_FILE, "empty vocab") { CoreTokenizer.parse(ByteArray(0)) }
    expectError(ErrorKind.BAD_FILE, "vocab without the special tokens") { CoreTokenizer.parse("hello\nworld\n".toByteArray()) }
    expectError(ErrorKind.IO_ERROR, "missing vocab file") { CoreTokenizer.load(File(goldenDir, "no-such-vocab.txt")) }
    val manifestBytes = File(goldenDir, "manifest.json").readBytes()
    expectError(ErrorKind.BAD_FILE, "truncated manifest") { CoreManifest.parse(manifestBytes.copyOf(manifestBytes.size / 2), goldenDir) }
    expectError(ErrorKind.BAD_FILE, "empty manifest") { CoreManifest.parse(ByteArray(0), null) }
    expectError(ErrorKind.BAD_FILE, "manifest of the wrong type") { CoreManifest.parse("[1, 2, 3]".toByteArray(), null) }
    expectError(ErrorKind.BAD_FILE, "truncated JSON in Kotlin") { Json.parse(String(manifestBytes.copyOf(manifestBytes.size / 3))) }
    expectError(ErrorKind.BAD_FILE, "JSON nested too deep") { Json.parse("[".repeat(100_000)) }
    val s = config.imageSize
    expectError(ErrorKind.BAD_INPUT, "zero-size image") { Native.preprocess(config.handle, ByteArray(0), 0, 0, 0, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.BAD_INPUT, "zero-width image") { Native.preprocess(config.handle, ByteArray(30), 0, 10, 3, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "negative image size") { Native.preprocess(config.handle, ByteArray(30), -4, 10, 3, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "pixel buffer shorter than its rows") { Native.preprocess(config.handle, ByteArray(100), 10, 10, 30, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "unknown pixel format") { Native.preprocess(config.handle, ByteArray(300), 10, 10, 30, 42, FloatArray(3 * s * s)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "preprocess output of the wrong size") { Native.preprocess(config.handle, ByteArray(300), 10, 10, 30, Native.PIXELS_RGB8, FloatArray(7)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "stage-1 outputs of the wrong size") {
        Native.selectProposals(config.handle, FloatArray(5), FloatArray(20), anchors, FloatArray(4 * config.postNmsTopN), ByteArray(config.postNmsTopN))
    }
    expectError(ErrorKind.INVALID_ARGUMENT, "mismatched box deltas") { Native.decodeBoxes(FloatArray(8), FloatArray(4), doubleArrayOf(1.0, 1.0, 1.0, 1.0)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "NMS boxes without scores") { Native.nms(FloatArray(8), FloatArray(1), 0.5) }
    val m = config.maxRegions
    expectError(ErrorKind.INVALID_ARGUMENT, "region count above max_regions") {
        Native.regionTokens(config.handle, m + 1, FloatArray(4 * m), LongArray(m), FloatArray(m), LongArray(m), FloatArray(config.representationSize),
            doubleArrayOf(256.0, 256.0, 1.0, 256.0, 256.0), FloatArray((m + 1) * config.regionDim), FloatArray(4 * (m + 1)))
    }
    checks.check("malformed: region from a proposal that does not exist") {
        val e = assertFailsWith<MiniVlmException> {
            Native.regionTokens(config.handle, 1, FloatArray(4 * m) { 10f }, LongArray(m) { 1 }, FloatArray(m) { 0.9f }, LongArray(m) { 99 },
                FloatArray(2 * config.representationSize), doubleArrayOf(256.0, 256.0, 1.0, 256.0, 256.0), FloatArray(config.regionDim), FloatArray(4))
        }
        assertTrue(e.kind == ErrorKind.INVALID_ARGUMENT || e.kind == ErrorKind.BAD_INPUT, "kind ${e.kind}: ${e.message}")
    }
    val dim = config.regionDim
    fun pack(text: ByteArray?, tags: Array<ByteArray>, regions: FloatArray, n: Int) {
        val tt = config.maxTextTagsLen
        Native.packInputs(tokenizer.handle, config.handle, text, tags, regions, n, text != null, LongArray(tt), LongArray(tt), FloatArray(tt),
            FloatArray(m * dim), FloatArray(m))
    }
    expectError(ErrorKind.BAD_INPUT, "bad UTF-8 question") { pack(byteArrayOf(0xFF.toByte(), 0xFE.toByte()), arrayOf("red circle".toByteArray()), FloatArray(dim), 1) }
    expectError(ErrorKind.BAD_INPUT, "bad UTF-8 tag") { pack("what color?".toByteArray(), arrayOf(byteArrayOf(0xC3.toByte())), FloatArray(dim), 1) }
    expectError(ErrorKind.BAD_INPUT, "non-finite region token") { pack("a question".toByteArray(), arrayOf("red circle".toByteArray()), FloatArray(dim) { if (it == 3) Float.NaN else 0f }, 1) }
    expectError(ErrorKind.BAD_INPUT, "more regions than max_regions") { pack("a question".toByteArray(), arrayOf(), FloatArray((m + 1) * dim), m + 1) }
    expectError(ErrorKind.INVALID_ARGUMENT, "region tokens of the wrong width") { pack("a question".toByteArray(), arrayOf(), FloatArray(dim + 1), 1) }
    checks.check("malformed: empty or too long question") {
        for (text in listOf("", "   ", "word ".repeat(200))) {
            val e = assertFailsWith<MiniVlmException> { pack(text.toByteArray(), arrayOf("red circle".toByteArray()), FloatArray(dim), 1) }
            assertTrue(e.kind == ErrorKind.BAD_INPUT || e.kind == ErrorKind.INVALID_ARGUMENT, "'${text.take(10)}': ${e.kind} ${e.message}")
        }
    }
    val tt = config.maxTextTagsLen
    val prefixSize = config.numLayers * config.numHeads * config.prefixLength * config.headDim
    fun decode(beams: Int, callback: NativeStepCallback) = Native.captionDecode(config.handle, LongArray(tt) { if (it == 0) 101 else 0 }, LongArray(tt),
        FloatArray(tt) { if (it < 2) 1f else 0f }, FloatArray(m * dim), FloatArray(m), FloatArray(prefixSize), FloatArray(prefixSize), beams, 1.0, 0, callback, DoubleArray(2))
    expectError(ErrorKind.INVALID_ARGUMENT, "zero beams") { decode(0) { _, _, _ -> } }
    expectError(ErrorKind.INVALID_ARGUMENT, "prefix keys of the wrong size") {
        Native.captionDecode(config.handle, LongArray(tt), LongArray(tt), FloatArray(tt), FloatArray(m * dim), FloatArray(m), FloatArray(3), FloatArray(3), 1, 1.0, 0, { _, _, _ -> }, DoubleArray(2))
    }
    class GraphBroke : RuntimeException("the step graph failed")
    checks.check("malformed: an exception in the step callback propagates unchanged") {
        assertFailsWith<GraphBroke> { decode(1) { _, _, _ -> throw GraphBroke() } }
    }
    checks.check("malformed: a closed handle raises") {
        val t = CoreTokenizer.load(vocabFile)
        t.close()
        t.close() // idempotent
        assertEquals(ErrorKind.INVALID_ARGUMENT, assertFailsWith<MiniVlmException> { t.encode("hello") }.kind)
    }
    checks.check("half floats") {
        assertEquals(1.0f, Tensor.halfToFloat(0x3C00.toShort()))
        assertEquals(-2.0f, Tensor.halfToFloat(0xC000.toShort()))
        assertEquals(65504.0f, Tensor.halfToFloat(0x7BFF.toShort()))
        assertEquals(5.9604645E-8f, Tensor.halfToFloat(0x0001.toShort())) // smallest subnormal, 2^-24
        assertEquals(Float.POSITIVE_INFINITY, Tensor.halfToFloat(0x7C00.toShort()))
        assertTrue(Tensor.halfToFloat(0x7E00.toShort()).isNaN())
    }
    checks.check("BatchedGraph splits and joins along the batch axis") {
        val spec = GraphSpec("g", "-", listOf(TensorSpec("x", longArrayOf(2, 1, 3), DType.FLOAT32, 1, "x", DType.FLOAT32)),
            listOf(TensorSpec("y", longArrayOf(2, 1, 3), DType.FLOAT32, 1, "y", DType.FLOAT32)))
        val seen = mutableListOf<List<Float>>()
        val graph = BatchedGraph(FakeRunner(spec) { inputs -> val x = f32(inputs["x"]); seen.add(x.toList()); mapOf("y" to Tensor.of(FloatArray(6) { x[it] * 10 }, 2, 1, 3)) })
        val x = FloatArray(12) { it.toFloat() } // (2, 2, 3): axis 1 is the batch
        val y = f32(graph.run(mapOf("x" to Tensor.of(x, 2, 2, 3)), 2)["y"])
        assertEquals(listOf(listOf(0f, 1f, 2f, 6f, 7f, 8f), listOf(3f, 4f, 5f, 9f, 10f, 11f)), seen)
        assertContentEquals(FloatArray(12) { it * 10f }, y)
    }
    checks.check("SharedFiles opens a file once for all its graphs and closes it with the last") {
        val opened = mutableListOf<String>()
        val closed = mutableListOf<String>()
        val files = SharedFiles { f: File -> opened.add(f.name); AutoCloseable { closed.add(f.name) } }
        val model = File("build/model.tflite")
        val a = files.acquire(model)
        val b = files.acquire(File("build/./model.tflite"))
        assertTrue(a === b)
        assertEquals(listOf("model.tflite"), opened)
        files.release(model)
        assertEquals(emptyList<String>(), closed)
        files.release(model)
        assertEquals(listOf("model.tflite"), closed)
        assertEquals(0, files.openCount)
    }
    checks.check("BuildSpec reads each graph's signature (null where the manifest names none)") {
        val tensor = """{"name": "x", "shape": [1], "dtype": "float32"}"""
        val graphs = GRAPH_NAMES.joinToString(", ") { n ->
            val signature = if (n == "vqa") "" else """, "signature": "$n""""
            """"$n": {"file": "model.tflite"$signature, "inputs": [$tensor], "outputs": [$tensor]}"""
        }
        val manifest = JsonPath(Json.parseObject("""{"target": "tflite", "precision": "fp32", "graphs": {$graphs}}""", "manifest"), "manifest")
        val vocab = JsonPath(Json.parseObject("""{"answers": ["yes"], "attributes": []}""", "vocabularies"), "vocabularies")
        val spec = BuildSpec.parse(manifest, vocab)
        assertEquals("match", spec.graph("match").signature)
        assertEquals(null, spec.graph("vqa").signature)
        assertEquals("model.tflite", spec.graph("vqa").file)
    }
    checks.check("the core still works after the malformed calls") {
        val case = index["tokenizer"][0]
        assertContentEquals(case["ids"].list.map { it.long }.toLongArray(), tokenizer.encode(case["text"].string))
    }

    // 5. Build checks on the synthetic build folders in args[2] (BuildChecksTest.kt).
    if (args.size > 2) buildChecksTests(checks, File(args[2]))
    // 6. The EfficientVLM pipeline (EfficientVlmReplay.kt) on tests/golden_efficientvlm, beside the goldens folder.
    replayEfficientVlm(File(goldenDir.absoluteFile.parentFile, "golden_efficientvlm"), checks)

    tokenizer.close()
    config.close()
    manifest.close()
    println("${checks.passed} passed, ${checks.failed} failed")
    if (checks.failed > 0) kotlin.system.exitProcess(1)
}

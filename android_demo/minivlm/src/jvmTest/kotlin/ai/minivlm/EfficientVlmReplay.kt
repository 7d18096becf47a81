package ai.minivlm

import java.io.File
import kotlin.test.assertContentEquals
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

// The EfficientVLM part of the JVM golden test: tests/golden_efficientvlm (a graph-less build folder of a seeded
// efficientvlm-demo-tiny, written by sdk/native/tools/make_efficientvlm_goldens.py from python_ref, with every graph
// call recorded) through NativeEvlm and the EfficientVlm pipeline, whose graphs are ReplayRunners: each call must
// receive python_ref's recorded inputs and returns its recorded outputs. Every expected value is read from the goldens.

/** Match probability: python_ref's float32 softmax against Kotlin's double logistic of the two logits. */
const val PROBABILITY_TOL = 1e-6

/** Replays every graph of `dir`'s golden/ for the image `case`: calls in recorded order, inputs checked. */
fun evlmReplayBackend(golden: Golden, case: String): GraphBackend = GraphBackend { _, spec ->
    val calls = golden.index["cases"][case]["graphs"][spec.name].list.map { call ->
        val inputs = spec.inputs.associate { it.name to golden.array(call["inputs"][it.name]) }
        val outputs = spec.outputs.associate { it.name to golden.array(call["outputs"][it.name]) }
        inputs to outputs
    }
    // Pixels and image tokens are handed on exactly (the core's preprocessing is bit-exact with python_ref's).
    ReplayRunner(spec, calls, tolerance = 0.0)
}

fun replayEfficientVlm(dir: File, checks: Checks) {
    val golden = Golden(File(dir, "golden"))
    val index = golden.index
    checks.check("efficientvlm build family and spec") {
        assertEquals("efficientvlm", buildFamily(dir))
        val spec = BuildSpec.load(dir)
        assertEquals(EFFICIENTVLM_GRAPH_NAMES, spec.graphOrder)
        assertEquals(listOf("images"), spec.graph("vision").inputs.map { it.name })
        assertEquals(listOf("image_tokens", "input_ids", "token_mask"), spec.graph("caption_step").inputs.map { it.name })
        assertEquals(emptyList(), spec.attributes)
    }
    val config = EvlmConfig.load(dir)
    val tokenizer = CoreTokenizer.load(File(dir, "vocab.txt"))
    checks.check("efficientvlm config") {
        val manifest = JsonPath(Json.parseObject(BuildSpec.readText(File(dir, "manifest.json")), "manifest"), "manifest")
        val vision = manifest["graphs"]["vision"]["outputs"]
        assertContentEquals(vision[0]["shape"].list.map { it.long }, listOf(1L, config.numImageTokens.toLong(), config.visionWidth.toLong()))
        assertContentEquals(vision[1]["shape"].list.map { it.long }, listOf(1L, config.embedDim.toLong()))
        assertContentEquals(tokenizer.specialIds, config.specialIds)
    }

    // Preprocessing cases through the bridge: other sizes, Pillow-exact resize, normalised pixels.
    for ((n, case) in index["preprocess_cases"].list.withIndex()) {
        checks.check("efficientvlm preprocess case $n (NativeEvlm.evlmResize)") {
            val image = golden.array(case["image"])
            val h = image.shape[0].toInt(); val w = image.shape[1].toInt()
            val size = case["size"].int
            assertContentEquals(golden.array(case["resized"]).bytes(), NativeEvlm.evlmResize(size, image.bytes(), w, h, 3 * w, Native.PIXELS_RGB8))
        }
    }

    for (name in index["images"].list.map { it.string }) {
        val case = index["cases"][name]
        val hs = case["host_steps"]
        val image = golden.array(hs["preprocess"]["inputs"]["image"])
        val h = image.shape[0].toInt(); val w = image.shape[1].toInt()
        checks.check("efficientvlm $name host steps (NativeEvlm)") {
            val s = config.imageSize
            val pixels = FloatArray(3 * s * s)
            // RGBA with padded rows, as a decoded Android bitmap may come.
            val rgb = image.bytes()
            val rowBytes = 4 * w + 8
            val rgba = ByteArray(rowBytes * h)
            for (y in 0 until h) for (x in 0 until w) {
                for (ch in 0 until 3) rgba[y * rowBytes + 4 * x + ch] = rgb[(y * w + x) * 3 + ch]
                rgba[y * rowBytes + 4 * x + 3] = 0xFF.toByte()
            }
            NativeEvlm.evlmPreprocess(config.handle, rgba, w, h, rowBytes, Native.PIXELS_RGBA8, pixels)
            assertClose(pixels, golden.array(hs["preprocess"]["outputs"]["pixels"]).floats(), FLOAT_TOL, "pixels")
            val t = config.maxTextLen
            val ids = LongArray(t); val mask = FloatArray(t)
            assertEquals(4, NativeEvlm.evlmCaptionPrompt(tokenizer.handle, config.handle, ids, mask))
            assertContentEquals(golden.array(hs["caption_packing"]["outputs"]["input_ids"]).longs(), ids)
            assertContentEquals(golden.array(hs["caption_packing"]["outputs"]["token_mask"]).floats(), mask)
            for ((step, input) in listOf("question_packing" to "question", "text_packing" to "text")) {
                NativeEvlm.evlmPackText(tokenizer.handle, config.handle, hs[step]["inputs"][input]["value"].string.toByteArray(), ids, mask)
                assertContentEquals(golden.array(hs[step]["outputs"]["input_ids"]).longs(), ids, step)
                assertContentEquals(golden.array(hs[step]["outputs"]["token_mask"]).floats(), mask, step)
            }
        }
        val vlm = EfficientVlm(dir, evlmReplayBackend(golden, name))
        try {
            var encoding: ImageEncoding? = null
            checks.check("efficientvlm $name EfficientVlm.encode") {
                val encoded = vlm.encode(Image.rgb(image.bytes(), w, h)).value
                encoding = encoded
                assertContentEquals(golden.array(hs["retrieval"]["outputs"]["image_feature"]).floats(), encoded.feature)
            }
            checks.check("efficientvlm $name EfficientVlm.caption") {
                val caption = vlm.caption(encoding!!)
                val want = hs["greedy_caption"]["outputs"]
                assertContentEquals(golden.array(want["token_ids"]).longs(), caption.value.tokenIds)
                assertEquals(want["caption"]["value"].string, caption.value.text)
                assertEquals(want["finished"]["value"].bool, caption.value.finished)
                assertTrue(caption.value.tokenIds.isNotEmpty(), "the goldens decode past the first step")
                assertTrue((caption.timings.entries["caption_step"] ?: 0.0) > 0.0, "caption_step timed")
            }
            checks.check("efficientvlm $name EfficientVlm.answer") {
                val question = hs["answer"]["inputs"]["question"]["value"].string
                assertEquals(hs["answer"]["outputs"]["answer"]["value"].string, vlm.answer(encoding!!, question).value)
            }
            checks.check("efficientvlm $name EfficientVlm.match") {
                val text = hs["match"]["inputs"]["text"]["value"].string
                val p = vlm.match(encoding!!, text).value
                val want = hs["match"]["outputs"]["probability"]["value"].double
                assertTrue(kotlin.math.abs(p - want) <= PROBABILITY_TOL, "match $p, python_ref $want")
            }
            checks.check("efficientvlm $name EfficientVlm.textFeature") {
                val text = hs["retrieval"]["inputs"]["text"]["value"].string
                assertClose(vlm.textFeature(text).value, golden.array(hs["retrieval"]["outputs"]["text_feature"]).floats(), 0.0, "text_feature")
            }
        } finally {
            vlm.close()
        }
    }

    // Bad input: MiniVlmException of the right kind, never a crash.
    fun expectError(kind: ErrorKind, what: String, body: () -> Unit) = checks.check("malformed: efficientvlm $what") {
        val e = assertFailsWith<MiniVlmException> { body() }
        assertEquals(kind, e.kind, "kind (message: ${e.message})")
        assertTrue(!e.message.isNullOrBlank() && '\n' !in e.message!!, "a one-line message")
    }
    val t = config.maxTextLen
    expectError(ErrorKind.BAD_INPUT, "empty text") { NativeEvlm.evlmPackText(tokenizer.handle, config.handle, "  ".toByteArray(), LongArray(t), FloatArray(t)) }
    expectError(ErrorKind.BAD_INPUT, "text longer than max_text_len") {
        NativeEvlm.evlmPackText(tokenizer.handle, config.handle, "red ".repeat(t).toByteArray(), LongArray(t), FloatArray(t))
    }
    expectError(ErrorKind.BAD_INPUT, "bad UTF-8 text") { NativeEvlm.evlmPackText(tokenizer.handle, config.handle, byteArrayOf(0xC3.toByte()), LongArray(t), FloatArray(t)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "packed arrays of the wrong size") { NativeEvlm.evlmPackText(tokenizer.handle, config.handle, "red".toByteArray(), LongArray(3), FloatArray(t)) }
    val s = config.imageSize
    expectError(ErrorKind.INVALID_ARGUMENT, "pixel buffer shorter than its rows") { NativeEvlm.evlmPreprocess(config.handle, ByteArray(10), 10, 10, 30, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.INVALID_ARGUMENT, "zero-size image") { NativeEvlm.evlmPreprocess(config.handle, ByteArray(0), 0, 0, 0, Native.PIXELS_RGB8, FloatArray(3 * s * s)) }
    expectError(ErrorKind.BAD_INPUT, "NaN caption logits") {
        NativeEvlm.evlmCaptionDecode(tokenizer.handle, config.handle, { _, _, _, logits -> logits.order(java.nio.ByteOrder.nativeOrder()).asFloatBuffer().apply { while (hasRemaining()) put(Float.NaN) } }, IntArray(1))
    }
    expectError(ErrorKind.BAD_FILE, "MiniVLM manifest to the EfficientVLM config") { EvlmConfig.load(File(dir.parentFile, "golden/manifest.json")) }
    expectError(ErrorKind.CONFIG, "MiniVLM spec to EfficientVlm") {
        val spec = BuildSpec.load(dir).copy(family = "minivlm")
        EfficientVlm(dir, spec, evlmReplayBackend(golden, index["images"][0].string))
    }
    class GraphBroke : RuntimeException("the step graph failed")
    checks.check("malformed: efficientvlm exception in the step callback propagates unchanged") {
        assertFailsWith<GraphBroke> { NativeEvlm.evlmCaptionDecode(tokenizer.handle, config.handle, { _, _, _, _ -> throw GraphBroke() }, IntArray(1)) }
    }
    checks.check("efficientvlm greedy decode stops at max_text_len without [SEP]") {
        val v = config.vocabSize
        val finished = IntArray(1) { -1 }
        val ids = NativeEvlm.evlmCaptionDecode(tokenizer.handle, config.handle, { step, _, _, logits ->
            val row = logits.order(java.nio.ByteOrder.nativeOrder()).asFloatBuffer()
            for (i in 0 until t * v) row.put(i, 0f)
            row.put((step - 1) * v + 9, 1f)
        }, finished)
        assertEquals(t - 4, ids.size)
        assertTrue(ids.all { it == 9L })
        assertEquals(0, finished[0])
    }
    tokenizer.close()
    config.close()
}

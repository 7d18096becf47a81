package ai.minivlm

import java.io.File
import kotlin.test.assertContains
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

// The common Kotlin behind the Android app's own checks, on the desktop JVM (tests/apps/test_android_support.py):
//
//   java -cp ... ai.minivlm.AndroidSupportMain BUILD_DIR
//
// 1. GraphReplay (what the androidTest runs on a device) over a build folder with golden/: with runners that return
//    the recorded outputs every graph passes; with a runner that adds DELTA to one output, returns NaN, the wrong
//    shape, or throws, that graph fails with the measured numbers printed (the Python side recomputes them).
// 2. AppliedRuntime: accelerator fallback order, the UI line, the decoded photo size.
// 3. DemoScenes' index; BuildInstall's swap of a new build folder for the installed one, with failing renames.
// Prints PASS/FAIL lines and "N passed, M failed"; exits 1 on any failure.
object AndroidSupportMain {
    /** What the perturbed runner adds to every value of one output. */
    const val DELTA = 0.5f

    private var passed = 0
    private var failed = 0

    private fun check(name: String, body: () -> Unit) {
        try {
            body(); passed++; println("PASS $name")
        } catch (e: Throwable) {
            failed++; println("FAIL $name: ${e::class.simpleName}: ${e.message}")
        }
    }

    /** Every recorded call of each graph, in image order: the inputs it must receive and the outputs it returns. */
    private fun recordedCalls(build: File): Map<String, List<Pair<Map<String, GoldenArray>, Map<String, GoldenArray>>>> {
        val manifest = JsonPath(Json.parseObject(File(build, "manifest.json").readText(), "manifest.json"), "manifest")
        val golden = Golden(File(build, "golden"))
        val cases = golden.index["cases"]
        return GraphReplay.graphSpecs(manifest).keys.associateWith { graph ->
            golden.index["images"].list.map { cases[it.string]["graphs"] }.filter { it.has(graph) }.flatMap { it[graph].list }.map { call ->
                val ins = call["inputs"]; val outs = call["outputs"]
                ins.keys.associateWith { golden.array(ins[it]) } to outs.keys.associateWith { golden.array(outs[it]) }
            }
        }
    }

    /** Runners that replay the recorded calls; `change` may alter the outputs of one graph. */
    private fun backend(build: File, graph: String? = null, change: (Map<String, Tensor>) -> Map<String, Tensor> = { it }): GraphBackend {
        val calls = recordedCalls(build)
        return GraphBackend { _, spec ->
            val replay = ReplayRunner(spec, calls.getValue(spec.name), 0.0)
            if (spec.name != graph) replay else object : GraphRunner {
                override val spec = spec
                override fun run(inputs: Map<String, Tensor>) = change(replay.run(inputs))
            }
        }
    }

    private fun shifted(t: Tensor): Tensor = when (t) {
        is Tensor.F32 -> Tensor.of(t.toArray().map { it + DELTA }.toFloatArray(), *t.shape)
        is Tensor.I64 -> Tensor.of(t.toArray().map { it + 1 }.toLongArray(), *t.shape)
    }

    @JvmStatic
    fun main(args: Array<String>) {
        val build = File(args[0])
        val graphs = GraphReplay.graphSpecs(build).keys.toList()
        val first = graphs.first()
        val firstOutput = GraphReplay.graphSpecs(build).getValue(first).outputs.first().name

        check("replay: recorded outputs pass every graph") {
            val verdicts = GraphReplay(build, backend(build)).run()
            verdicts.forEach { println("  $it") }
            assertEquals(graphs, verdicts.map { it.graph })
            assertTrue(verdicts.all { it.passed }, verdicts.joinToString("; "))
            verdicts.forEach { v -> assertTrue(v.outputs.all { it.maxAbs == 0.0 && it.psnrDb.isInfinite() && it.minCosine > 1 - 1e-9 }, "$v") }
        }
        check("replay: an output off by DELTA fails that graph only, with its max abs / peak") {
            val verdicts = GraphReplay(build, backend(build, first) { outs -> outs.mapValues { (k, v) -> if (k == firstOutput) shifted(v) else v } }).run()
            verdicts.forEach { println("  $it") }
            val bad = verdicts.single { !it.passed }
            assertEquals(first, bad.graph)
            val stats = bad.outputs.single { it.name == firstOutput }
            println("MEASURED $first $firstOutput max_abs=${stats.maxAbs} peak=${stats.peak} psnr_db=${stats.psnrDb} min_cosine=${stats.minCosine}")
            assertContains(bad.failures.first(), "$firstOutput: max abs / peak")
        }
        check("replay: a NaN output fails") {
            val verdicts = GraphReplay(build, backend(build, first) { outs ->
                outs.mapValues { (k, v) -> if (k == firstOutput && v is Tensor.F32) Tensor.of(v.toArray().also { it[0] = Float.NaN }, *v.shape) else v }
            }).run()
            val bad = verdicts.single { !it.passed }
            assertTrue(bad.outputs.single { it.name == firstOutput }.maxAbs.isInfinite(), "$bad")
        }
        check("replay: a wrong output shape fails, naming both shapes") {
            val verdicts = GraphReplay(build, backend(build, first) { outs ->
                outs.mapValues { (k, v) -> if (k == firstOutput && v is Tensor.F32) Tensor.of(v.toArray() + 0f, 1, v.count.toLong() + 1) else v }
            }).run()
            assertContains(verdicts.single { !it.passed }.failures.first(), "recorded")
        }
        check("replay: a missing output fails") {
            val verdicts = GraphReplay(build, backend(build, first) { outs -> outs - firstOutput }).run()
            assertContains(verdicts.single { !it.passed }.failures.first(), "returned no '$firstOutput'")
        }
        check("replay: a runtime error fails that graph with its message") {
            val verdicts = GraphReplay(build, backend(build, first) { throw MiniVlmException(ErrorKind.RUNTIME, "GPU delegate lost") }).run()
            assertContains(verdicts.single { !it.passed }.toString(), "GPU delegate lost")
        }

        check("replay: recorded inputs that disagree with the manifest's specs fail before the runtime sees them") {
            val specs = GraphReplay.graphSpecs(build)
            val misdeclared = GraphBackend { dir, spec ->
                val real = backend(build).open(dir, spec)
                val wrong = spec.copy(inputs = spec.inputs.map { it.copy(shape = it.shape + 1L) })
                object : GraphRunner {
                    override val spec = if (spec.name == first) wrong else specs.getValue(spec.name)
                    override fun run(inputs: Map<String, Tensor>) = real.run(inputs)
                }
            }
            assertContains(GraphReplay(build, misdeclared).run().single { !it.passed }.failures.first(), "expected")
        }

        check("accelerators: auto falls back to the CPU, an explicit choice does not") {
            assertEquals(listOf("gpu", "cpu"), AppliedRuntime.attempts("auto", "gpu"))
            assertEquals(listOf("npu", "cpu"), AppliedRuntime.attempts("auto", "npu"))
            assertEquals(listOf("cpu"), AppliedRuntime.attempts("auto", "cpu"))
            assertEquals(listOf("gpu"), AppliedRuntime.attempts("gpu", "gpu"))
            assertEquals(listOf("npu"), AppliedRuntime.attempts("npu", "npu"))
            assertEquals(listOf("cpu"), AppliedRuntime.attempts("cpu", "cpu"))
            assertEquals(ErrorKind.INVALID_ARGUMENT, assertFailsWith<MiniVlmException> { AppliedRuntime.attempts("tpu", "cpu") }.kind)
            assertEquals(ErrorKind.INVALID_ARGUMENT, assertFailsWith<MiniVlmException> { AppliedRuntime.attempts("auto", "auto") }.kind)
        }
        check("accelerators: the UI line names backend, accelerator, threads and the note") {
            assertEquals("litert · CPU · 4 threads — two big cores", AppliedRuntime.describe("litert", "cpu", 4, "two big cores"))
            assertEquals("litert · GPU", AppliedRuntime.describe("litert", "gpu", 4, ""))
            assertEquals("executorch · CPU · threads: runtime default", AppliedRuntime.describe("executorch", "cpu", 0, " "))
            assertEquals("GPU could not load the model (no OpenCL); running on the CPU",
                AppliedRuntime.fallbackNote("gpu", "no OpenCL\n  at native code"))
            assertEquals("litert", AppliedRuntime.runtimeOf("tflite"))
            assertEquals("executorch", AppliedRuntime.runtimeOf("executorch"))
        }
        check("photos: decoded size after inSampleSize, then capped at the max side") {
            assertEquals(500 to 375, AppliedRuntime.decodedSize(4000, 3000, 8, 512))   // 4000/8 = 500 <= 512: kept
            assertEquals(512 to 384, AppliedRuntime.decodedSize(4032, 3024, 4, 512))   // 1008x756 -> x512/1008
            assertEquals(1 to 512, AppliedRuntime.decodedSize(3, 3000, 2, 512))        // 2x1500 -> 0.68 rounds to 1, floor 1
            assertEquals(256 to 256, AppliedRuntime.decodedSize(256, 256, 1, 256))     // a demo scene: unchanged
            assertEquals(ErrorKind.INVALID_ARGUMENT, assertFailsWith<MiniVlmException> { AppliedRuntime.decodedSize(100, 100, 3, 64) }.kind)
            assertEquals(ErrorKind.INVALID_ARGUMENT, assertFailsWith<MiniVlmException> { AppliedRuntime.decodedSize(0, 100, 1, 64) }.kind)
        }

        check("scenes: the index lists file, caption and questions; a path outside the folder is refused") {
            val scenes = DemoScenes.parse("""{"scenes": [{"file": "scene_0.png", "source": "x", "caption": "an orange triangle",
                "questions": [{"question": "how many shapes are there?", "answer": "one"}]}, {"file": "scene_1.png", "caption": "a red circle"}]}""")
            assertEquals(listOf("scene_0.png", "scene_1.png"), scenes.map { it.file })
            assertEquals("an orange triangle", scenes[0].caption)
            assertEquals(listOf("how many shapes are there?" to "one"), scenes[0].questions)
            assertEquals(emptyList(), scenes[1].questions)
            val e = assertFailsWith<MiniVlmException> { DemoScenes.parse("""{"scenes": [{"file": "../manifest.json", "caption": "x"}]}""") }
            assertEquals(ErrorKind.BAD_FILE, e.kind)
            assertEquals(ErrorKind.BAD_FILE, assertFailsWith<MiniVlmException> { DemoScenes.parse("""{"scenes": [{"caption": "x"}]}""") }.kind)
        }

        check("install: the new build replaces the installed one, which goes only after") {
            val root = kotlin.io.path.createTempDirectory("install").toFile()
            try {
                val target = File(root, "build")
                fun staged(text: String) = File(root, "build.partial").apply { mkdirs(); File(this, "manifest.json").writeText(text) }
                BuildInstall.replace(staged("v1"), target)  // first install: nothing to move aside
                assertEquals("v1", File(target, "manifest.json").readText())
                BuildInstall.replace(staged("v2"), target)
                assertEquals("v2", File(target, "manifest.json").readText())
                assertEquals(listOf("build"), root.list()!!.sorted())  // neither staging nor the previous copy is left
            } finally {
                root.deleteRecursively()
            }
        }
        check("install: a failed rename keeps the installed build, in place or named in the error") {
            val root = kotlin.io.path.createTempDirectory("install").toFile()
            try {
                val target = File(root, "build").apply { mkdirs(); File(this, "manifest.json").writeText("old") }
                val staging = File(root, "build.partial").apply { mkdirs(); File(this, "manifest.json").writeText("new") }
                var calls = 0
                // The second rename (staging -> target) fails: the installed copy is renamed back.
                val e = assertFailsWith<MiniVlmException> {
                    BuildInstall.replace(staging, target) { from, to -> ++calls != 2 && from.renameTo(to) }
                }
                assertEquals(ErrorKind.IO_ERROR, e.kind)
                assertContains(e.message!!, "the installed build is unchanged")
                assertEquals("old", File(target, "manifest.json").readText())
                // The rename back fails too: the error says where the installed copy is, and it is intact there.
                calls = 0
                val e2 = assertFailsWith<MiniVlmException> {
                    BuildInstall.replace(staging, target) { from, to -> ++calls == 1 && from.renameTo(to) }
                }
                val previous = BuildInstall.previousOf(target)
                assertContains(e2.message!!, previous.path)
                assertEquals("old", File(previous, "manifest.json").readText())
                // A later install that fails too puts that copy back in place rather than deleting it.
                val e3 = assertFailsWith<MiniVlmException> { BuildInstall.replace(staging, target) { from, to -> from != staging && from.renameTo(to) } }
                assertContains(e3.message!!, "the installed build is unchanged")
                assertEquals("old", File(target, "manifest.json").readText())
                // The next install deletes the left-over previous copy and puts the new build in place.
                BuildInstall.replace(staging, target)
                assertEquals("new", File(target, "manifest.json").readText())
                assertEquals(listOf("build"), root.list()!!.sorted())
                assertEquals(ErrorKind.IO_ERROR, assertFailsWith<MiniVlmException> { BuildInstall.replace(staging, target) }.kind)
            } finally {
                root.deleteRecursively()
            }
        }

        println("$passed passed, $failed failed")
        if (failed > 0) kotlin.system.exitProcess(1)
    }
}

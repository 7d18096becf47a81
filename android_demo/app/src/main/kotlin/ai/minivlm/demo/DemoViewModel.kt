package ai.minivlm.demo

import ai.minivlm.Accelerator
import ai.minivlm.Analysis
import ai.minivlm.AppliedRuntime
import ai.minivlm.DemoScene
import ai.minivlm.DemoScenes
import ai.minivlm.Detection
import ai.minivlm.ErrorKind
import ai.minivlm.ImageEncoding
import ai.minivlm.MiniVlmException
import ai.minivlm.RuntimeRequest
import ai.minivlm.Timings
import ai.minivlm.android.AndroidMiniVlm
import ai.minivlm.android.AndroidVlm
import ai.minivlm.android.toMiniVlmImage
import android.app.Application
import android.graphics.Bitmap
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.util.concurrent.Executors
import kotlinx.coroutines.CancellationException
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** One question (or match text) and its answer, with the stage latencies of answering it. */
data class QA(val question: String, val answer: String, val timings: Timings)

/** What the user asked the runtime for; applied by reloading the build. */
data class RuntimeChoice(val accelerator: Accelerator = Accelerator.AUTO, val threads: Int = 0)

data class DemoState(
    val status: String = "Loading the model…",
    val busy: Boolean = true,
    /** The last failure, one line (SDK or not); null when the last action worked. */
    val error: String? = null,
    val choice: RuntimeChoice = RuntimeChoice(),
    /** "minivlm" or "efficientvlm" once a build is open. */
    val family: String = "",
    val modelInfo: String = "",
    /** What the plan chose (backend · accelerator · threads — its note). */
    val plan: String = "",
    /** What actually runs the graphs (a fallback from GPU/NPU to the CPU shows here). */
    val runningOn: String = "",
    val loadMs: Double? = null,
    /** The first image after a load: graph loading and runtime warm-up, end to end. */
    val warmupMs: Double? = null,
    val scenes: List<DemoScene> = emptyList(),
    val scene: DemoScene? = null,
    val bitmap: Bitmap? = null,
    /** MiniVLM only: EfficientVLM has no detector. */
    val detections: List<Detection>? = null,
    val caption: String? = null,
    /** Latency per stage of the last image (encode/TEE + caption), in ms, in pipeline order. */
    val stages: List<Pair<String, Double>> = emptyList(),
    val answers: List<QA> = emptyList(),
) {
    val imageReady: Boolean get() = caption != null
}

/** The image a pipeline has seen: MiniVLM's analysis (regions, tags) or EfficientVLM's image encoding. */
private sealed interface Seen {
    class Mini(val analysis: Analysis) : Seen
    class Efficient(val encoding: ImageEncoding) : Seen
}

/**
 * Owns the opened build. Every pipeline call runs on one background thread: the graph runtimes keep per-call state,
 * and a phone has no use for two pipelines at once. Any exception (the SDK's or not) becomes one line in the state.
 */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val executor = Executors.newSingleThreadExecutor { r -> Thread(r, "minivlm") }
    private val worker = executor.asCoroutineDispatcher()
    private val decoder = PhotoDecoder(app)
    @Volatile private var vlm: AndroidVlm? = null
    @Volatile private var seen: Seen? = null
    @Volatile private var warmedUp = false
    private val _state = MutableStateFlow(DemoState())
    val state: StateFlow<DemoState> = _state

    init {
        val scenes = try {
            DemoScenes.parse(app.assets.open("$SCENES/scenes.json").use { it.readBytes().toString(Charsets.UTF_8) })
        } catch (e: Exception) {
            _state.update { it.copy(error = "Demo scenes unavailable: ${oneLine(e)}") }
            emptyList()
        }
        _state.update { it.copy(scenes = scenes) }
        load(RuntimeChoice())
    }

    /** (Re)opens the bundled build for `choice`: plan, verify, open; shows load time and what runs. */
    fun load(choice: RuntimeChoice) {
        _state.update { it.copy(status = "Loading the model…", busy = true, error = null, choice = choice) }
        launchCatching("Cannot load the model") {
            val opened = withContext(worker) {
                vlm?.close()
                vlm = null
                seen = null
                warmedUp = false
                val request = RuntimeRequest(choice.accelerator, choice.threads, Runtime.getRuntime().availableProcessors())
                AndroidMiniVlm.open(getApplication(), request)
            }
            vlm = opened
            val p = opened.plan
            _state.update {
                it.copy(status = "Pick a demo scene, take a photo or choose one", busy = false, family = opened.family,
                    modelInfo = "${opened.family} · ${opened.buildDir.name}",
                    plan = "plan: " + AppliedRuntime.describe(p.backend, p.accelerator.name.lowercase(), p.threads, p.note),
                    runningOn = "running on: ${opened.runningOn}", loadMs = opened.loadMs, warmupMs = null,
                    bitmap = null, detections = null, caption = null, stages = emptyList(), answers = emptyList())
            }
            // A new user sees sensible output at once: the first demo scene, which also measures the warm-up.
            _state.value.scenes.firstOrNull()?.let(::pickScene)
        }
    }

    fun pickScene(scene: DemoScene) = analyze(PhotoSource.Asset("$SCENES/${scene.file}"), scene)

    fun pickPhoto(source: PhotoSource) = analyze(source, null)

    /** Decode (downscaled to the model's input) and describe a new image. */
    private fun analyze(source: PhotoSource, scene: DemoScene?) {
        val v = vlm ?: return
        _state.update { it.copy(status = "Running…", busy = true, error = null, scene = scene, bitmap = null, detections = null, caption = null,
            stages = emptyList(), answers = emptyList()) }
        seen = null
        launchCatching("Failed") {
            val start = System.nanoTime()
            val (bitmap, result) = withContext(worker) {
                val bitmap = decoder.decode(source, v.buildDir)
                bitmap to describe(v, bitmap)
            }
            val ms = (System.nanoTime() - start) / 1e6
            val warmup = if (!warmedUp) ms.also { warmedUp = true } else null
            _state.update {
                it.copy(status = "${result.detections?.let { d -> "${d.size} objects · " } ?: ""}${"%.0f".format(result.stages.sumOf { s -> s.second })} ms in the pipeline",
                    busy = false, bitmap = bitmap, detections = result.detections, caption = result.caption, stages = result.stages,
                    warmupMs = warmup ?: it.warmupMs)
            }
        }
    }

    private class Described(val caption: String, val detections: List<Detection>?, val stages: List<Pair<String, Double>>)

    private fun describe(v: AndroidVlm, bitmap: Bitmap): Described {
        val image = bitmap.toMiniVlmImage()
        v.miniVlm?.let { p ->
            val analysis = p.analyze(image)
            val caption = p.caption(analysis)
            seen = Seen.Mini(analysis)
            return Described(caption.value.text, analysis.detections, analysis.timings.entries.toList() + caption.timings.entries.toList())
        }
        val p = v.efficientVlm ?: throw MiniVlmException(ErrorKind.CONFIG, "no pipeline is open")
        val encoding = p.encode(image)
        val caption = p.caption(encoding.value)
        seen = Seen.Efficient(encoding.value)
        return Described(caption.value.text, null, encoding.timings.entries.toList() + caption.timings.entries.toList())
    }

    /** Answer a typed question about the current image (the image encoder does not run again). */
    fun ask(question: String) = query(question) { v, s ->
        when (s) {
            is Seen.Mini -> v.miniVlm!!.answer(s.analysis, question).let { it.value to it.timings }
            is Seen.Efficient -> v.efficientVlm!!.answer(s.encoding, question).let { it.value to it.timings }
        }
    }

    /** How well `text` describes the current image (the match head's probability). */
    fun match(text: String) = query("match: $text") { v, s ->
        val timed = when (s) {
            is Seen.Mini -> v.miniVlm!!.match(s.analysis, text)
            is Seen.Efficient -> v.efficientVlm!!.match(s.encoding, text)
        }
        "%.3f".format(timed.value) to timed.timings
    }

    private fun query(label: String, run: (AndroidVlm, Seen) -> Pair<String, Timings>) {
        val v = vlm ?: return
        val s = seen ?: return
        if (label.isBlank()) return
        _state.update { it.copy(busy = true, error = null) }
        launchCatching("Failed") {
            val (answer, timings) = withContext(worker) { run(v, s) }
            _state.update { it.copy(busy = false, answers = listOf(QA(label, answer, timings)) + it.answers) }
        }
    }

    fun showError(message: String) = _state.update { it.copy(busy = false, error = message) }

    /** Runs `block`; any exception but cancellation ends as one line in the state, never as a crash. */
    private fun launchCatching(what: String, block: suspend () -> Unit) {
        viewModelScope.launch {
            try {
                block()
            } catch (e: CancellationException) {
                throw e
            } catch (e: Throwable) { // MiniVlmException, IOException from a decoder, OutOfMemoryError on a huge photo, …
                _state.update { it.copy(busy = false, status = "", error = "$what: ${oneLine(e)}") }
            }
        }
    }

    override fun onCleared() {
        // viewModelScope is already cancelled here: close on the worker thread directly, after any running call.
        val v = vlm
        vlm = null
        executor.execute { v?.close() }
        executor.shutdown()
    }

    companion object {
        const val SCENES = "scenes"

        /** An exception as one line: its message (first line) or, without one, its class name. */
        fun oneLine(e: Throwable): String {
            val message = e.message?.lineSequence()?.firstOrNull()?.trim()
            return if (message.isNullOrEmpty()) e::class.java.simpleName else if (e is MiniVlmException) message else "${e::class.java.simpleName}: $message"
        }
    }
}

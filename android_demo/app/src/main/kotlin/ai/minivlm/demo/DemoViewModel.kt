package ai.minivlm.demo

import ai.minivlm.Analysis
import ai.minivlm.MiniVlm
import ai.minivlm.MiniVlmException
import ai.minivlm.Timings
import ai.minivlm.android.AndroidMiniVlm
import ai.minivlm.android.toMiniVlmImage
import android.app.Application
import android.graphics.Bitmap
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import java.util.concurrent.Executors
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.flow.MutableStateFlow
import kotlinx.coroutines.flow.StateFlow
import kotlinx.coroutines.flow.update
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

/** One question and its answer, with the stage latencies of answering it. */
data class QA(val question: String, val answer: String, val timings: Timings)

data class DemoState(
    val status: String = "Loading the model…",
    val busy: Boolean = true,
    val modelInfo: String = "",
    val bitmap: Bitmap? = null,
    val analysis: Analysis? = null,
    val caption: String? = null,
    /** Latency per stage of the last image (TEE + caption), in ms, in pipeline order. */
    val stages: List<Pair<String, Double>> = emptyList(),
    val answers: List<QA> = emptyList(),
)

/**
 * Owns the [MiniVlm] pipeline. Every pipeline call runs on one background thread: the graph runtimes keep
 * per-call state, and a phone has no use for two pipelines at once.
 */
class DemoViewModel(app: Application) : AndroidViewModel(app) {
    private val executor = Executors.newSingleThreadExecutor { r -> Thread(r, "minivlm") }
    private val worker = executor.asCoroutineDispatcher()
    private var pipeline: MiniVlm? = null
    private val _state = MutableStateFlow(DemoState())
    val state: StateFlow<DemoState> = _state

    init {
        viewModelScope.launch {
            try {
                val p = withContext(worker) { AndroidMiniVlm.open(getApplication()) }
                pipeline = p
                val s = p.spec
                _state.update {
                    it.copy(status = "Take a photo or pick one", busy = false,
                        modelInfo = "${s.target} · ${s.delegate ?: "default"} · ${s.precision} · ${p.config.imageSize}² input")
                }
            } catch (e: MiniVlmException) {
                _state.update { it.copy(status = "Cannot load the model: ${e.message}", busy = false) }
            }
        }
    }

    /** Detect and caption a new image. */
    fun analyze(bitmap: Bitmap) {
        val p = pipeline ?: return
        _state.update { DemoState(status = "Running…", busy = true, modelInfo = it.modelInfo, bitmap = bitmap) }
        viewModelScope.launch {
            try {
                val (analysis, caption) = withContext(worker) {
                    val a = p.analyze(bitmap.toMiniVlmImage())
                    a to p.caption(a)
                }
                val stages = analysis.timings.entries.toList() + caption.timings.entries.toList()
                _state.update {
                    it.copy(status = "${analysis.detections.size} objects · ${"%.0f".format(stages.sumOf { s -> s.second })} ms",
                        busy = false, analysis = analysis, caption = caption.value.text, stages = stages)
                }
            } catch (e: MiniVlmException) {
                _state.update { it.copy(status = "Failed: ${e.message}", busy = false) }
            }
        }
    }

    fun showError(message: String) = _state.update { it.copy(status = message) }

    /** Answer a typed question about the current image (the TEE does not run again). */
    fun ask(question: String) {
        val p = pipeline ?: return
        val analysis = _state.value.analysis ?: return
        if (question.isBlank()) return
        _state.update { it.copy(busy = true) }
        viewModelScope.launch {
            try {
                val answer = withContext(worker) { p.answer(analysis, question) }
                _state.update { it.copy(busy = false, answers = listOf(QA(question, answer.value, answer.timings)) + it.answers) }
            } catch (e: MiniVlmException) {
                _state.update { it.copy(busy = false, answers = listOf(QA(question, "error: ${e.message}", Timings())) + it.answers) }
            }
        }
    }

    override fun onCleared() {
        // viewModelScope is already cancelled here: close on the worker thread directly, after any running call.
        val p = pipeline
        pipeline = null
        executor.execute { p?.close() }
        executor.shutdown()
    }
}

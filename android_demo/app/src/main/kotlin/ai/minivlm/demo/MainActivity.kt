package ai.minivlm.demo

import ai.minivlm.Accelerator
import ai.minivlm.Detection
import android.graphics.Bitmap
import android.net.Uri
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.rememberLauncherForActivityResult
import androidx.activity.compose.setContent
import androidx.activity.result.PickVisualMediaRequest
import androidx.activity.result.contract.ActivityResultContracts
import androidx.activity.viewModels
import androidx.compose.foundation.Canvas
import androidx.compose.foundation.Image
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Box
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.aspectRatio
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.LazyRow
import androidx.compose.foundation.text.KeyboardActions
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.material3.Button
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedButton
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.rememberSaveable
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.geometry.Offset
import androidx.compose.ui.geometry.Size
import androidx.compose.ui.graphics.Color
import androidx.compose.ui.graphics.asImageBitmap
import androidx.compose.ui.graphics.drawscope.Stroke
import androidx.compose.ui.graphics.nativeCanvas
import androidx.compose.ui.layout.ContentScale
import androidx.compose.ui.text.font.FontFamily
import androidx.compose.ui.text.input.ImeAction
import androidx.compose.ui.unit.dp
import androidx.core.content.FileProvider
import androidx.lifecycle.compose.collectAsStateWithLifecycle
import java.io.File

class MainActivity : ComponentActivity() {
    private val model: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen(model, ::cameraFile) }
            }
        }
    }

    /**
     * Where the camera app writes the full-resolution photo: a file in the app's cache shared through the FileProvider
     * declared in AndroidManifest.xml (res/xml/file_paths.xml). The app then decodes it downscaled, like a gallery photo.
     */
    private fun cameraFile(): Uri {
        val file = File(cacheDir, "camera/photo.jpg").apply { parentFile?.mkdirs() }
        return FileProvider.getUriForFile(this, "$packageName.files", file)
    }
}

@Composable
fun DemoScreen(model: DemoViewModel, cameraFile: () -> Uri) {
    val state by model.state.collectAsStateWithLifecycle()
    var pendingPhoto by rememberSaveable { mutableStateOf<Uri?>(null) }
    val takePhoto = rememberLauncherForActivityResult(ActivityResultContracts.TakePicture()) { saved ->
        val uri = pendingPhoto
        if (saved && uri != null) model.pickPhoto(PhotoSource.Content(uri))
    }
    val pickPhoto = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        uri?.let { model.pickPhoto(PhotoSource.Content(it)) }
    }
    var question by remember { mutableStateOf("") }
    var matchText by remember { mutableStateOf("") }

    LazyColumn(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        item {
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Button(onClick = {
                    try {
                        val uri = cameraFile()
                        pendingPhoto = uri
                        takePhoto.launch(uri)
                    } catch (e: Exception) { // no camera app, or the file could not be shared
                        model.showError("Camera: ${DemoViewModel.oneLine(e)}")
                    }
                }, enabled = !state.busy) { Text("Camera") }
                Button(
                    onClick = { pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
                    enabled = !state.busy,
                ) { Text("Gallery") }
            }
        }
        if (state.scenes.isNotEmpty()) {
            item {
                Text("Demo scenes", style = MaterialTheme.typography.titleSmall)
                LazyRow(horizontalArrangement = Arrangement.spacedBy(6.dp)) {
                    items(state.scenes.size) { i ->
                        val scene = state.scenes[i]
                        OutlinedButton(onClick = { model.pickScene(scene) }, enabled = !state.busy) { Text(scene.file.removeSuffix(".png")) }
                    }
                }
            }
        }
        item { RuntimePanel(state, onApply = model::load) }
        item {
            if (state.status.isNotEmpty()) Text(state.status, style = MaterialTheme.typography.bodyMedium)
            state.error?.let { Text(it, color = MaterialTheme.colorScheme.error, style = MaterialTheme.typography.bodyMedium, maxLines = 2) }
        }
        state.bitmap?.let { bitmap ->
            item { ImageWithBoxes(bitmap, state.detections.orEmpty()) }
        }
        state.caption?.let { caption ->
            item {
                Text("“$caption”", style = MaterialTheme.typography.titleMedium)
                state.scene?.let { Text("reference: “${it.caption}”", style = MaterialTheme.typography.bodySmall) }
            }
        }
        if (state.imageReady) {
            item {
                OutlinedTextField(
                    value = question,
                    onValueChange = { question = it },
                    label = { Text("Ask about the image") },
                    placeholder = { Text(state.scene?.questions?.firstOrNull()?.first ?: "how many shapes are there?") },
                    singleLine = true,
                    keyboardOptions = KeyboardOptions(imeAction = ImeAction.Send),
                    keyboardActions = KeyboardActions(onSend = { model.ask(question); question = "" }),
                    modifier = Modifier.fillMaxWidth(),
                )
                Button(onClick = { model.ask(question); question = "" }, enabled = !state.busy && question.isNotBlank()) { Text("Ask") }
                OutlinedTextField(
                    value = matchText,
                    onValueChange = { matchText = it },
                    label = { Text("Does this text match the image?") },
                    placeholder = { Text("a red circle") },
                    singleLine = true,
                    modifier = Modifier.fillMaxWidth(),
                )
                Button(onClick = { model.match(matchText); matchText = "" }, enabled = !state.busy && matchText.isNotBlank()) { Text("Match") }
            }
        }
        items(state.answers.size) { i ->
            val qa = state.answers[i]
            Column {
                Text("Q: ${qa.question}")
                Text("A: ${qa.answer}", style = MaterialTheme.typography.titleSmall)
                Text(qa.timings.toString(), style = MaterialTheme.typography.bodySmall)
            }
        }
        if (state.stages.isNotEmpty()) {
            item {
                HorizontalDivider()
                Text("Latency per stage", style = MaterialTheme.typography.titleSmall)
            }
            items(state.stages.size) { i ->
                val (stage, ms) = state.stages[i]
                Row(Modifier.fillMaxWidth(), horizontalArrangement = Arrangement.SpaceBetween) {
                    Text(stage, fontFamily = FontFamily.Monospace)
                    Text("%.1f ms".format(ms), fontFamily = FontFamily.Monospace)
                }
            }
        }
    }
}

/**
 * The runtime the user asks for (accelerator, CPU threads; applied by reloading the build) and what the app got: the
 * plan's choice and note, what actually runs (a GPU/NPU that failed under AUTO shows as the CPU with the reason),
 * load time and first-run warm-up.
 */
@Composable
fun RuntimePanel(state: DemoState, onApply: (RuntimeChoice) -> Unit) {
    var accelerator by remember(state.choice) { mutableStateOf(state.choice.accelerator) }
    var threads by remember(state.choice) { mutableStateOf(state.choice.threads) }
    Column(verticalArrangement = Arrangement.spacedBy(4.dp)) {
        if (state.modelInfo.isNotEmpty()) Text(state.modelInfo, style = MaterialTheme.typography.bodySmall)
        Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
            for (a in Accelerator.entries) {
                if (a == accelerator) {
                    Button(onClick = {}, enabled = !state.busy) { Text(a.name) }
                } else {
                    OutlinedButton(onClick = { accelerator = a }, enabled = !state.busy) { Text(a.name) }
                }
            }
        }
        Row(horizontalArrangement = Arrangement.spacedBy(4.dp)) {
            OutlinedButton(onClick = { threads = (threads - 1).coerceAtLeast(0) }, enabled = !state.busy && threads > 0) { Text("−") }
            Text(if (threads == 0) "threads: auto" else "threads: $threads", Modifier.padding(top = 12.dp))
            OutlinedButton(onClick = { threads += 1 }, enabled = !state.busy && threads < Runtime.getRuntime().availableProcessors()) { Text("+") }
            Button(onClick = { onApply(RuntimeChoice(accelerator, threads)) }, enabled = !state.busy) { Text("Apply") }
        }
        if (state.plan.isNotEmpty()) Text(state.plan, style = MaterialTheme.typography.bodySmall)
        if (state.runningOn.isNotEmpty()) Text(state.runningOn, style = MaterialTheme.typography.bodySmall)
        val times = listOfNotNull(state.loadMs?.let { "load %.0f ms".format(it) }, state.warmupMs?.let { "first image %.0f ms (warm-up)".format(it) })
        if (times.isNotEmpty()) Text(times.joinToString(" · "), style = MaterialTheme.typography.bodySmall)
    }
}

private val BOX_COLORS = listOf(Color(0xFFE53935), Color(0xFF1E88E5), Color(0xFF43A047), Color(0xFFFDD835), Color(0xFF8E24AA), Color(0xFFFB8C00))

/** The photo scaled to the width of the screen, with each detection's box and "label score" drawn on it. */
@Composable
fun ImageWithBoxes(bitmap: Bitmap, detections: List<Detection>) {
    Box(Modifier.fillMaxWidth().aspectRatio(bitmap.width.toFloat() / bitmap.height)) {
        Image(bitmap.asImageBitmap(), contentDescription = null, contentScale = ContentScale.Fit, modifier = Modifier.fillMaxSize())
        if (detections.isNotEmpty()) {
            Canvas(Modifier.fillMaxSize()) {
                val k = size.width / bitmap.width // boxes are in the decoded bitmap's pixels
                val paint = android.graphics.Paint().apply { textSize = 14.dp.toPx(); isAntiAlias = true }
                detections.forEachIndexed { i, d ->
                    val color = BOX_COLORS[i % BOX_COLORS.size]
                    val topLeft = Offset(d.box[0] * k, d.box[1] * k)
                    drawRect(color, topLeft, Size((d.box[2] - d.box[0]) * k, (d.box[3] - d.box[1]) * k), style = Stroke(2.dp.toPx()))
                    paint.color = android.graphics.Color.argb(255, (color.red * 255).toInt(), (color.green * 255).toInt(), (color.blue * 255).toInt())
                    drawContext.canvas.nativeCanvas.drawText("${d.label} ${"%.2f".format(d.score)}", topLeft.x + 4f,
                        (topLeft.y - 4f).coerceAtLeast(paint.textSize), paint)
                }
            }
        }
    }
}

package ai.minivlm.demo

import ai.minivlm.Analysis
import android.graphics.Bitmap
import android.graphics.ImageDecoder
import android.net.Uri
import android.os.Build
import android.os.Bundle
import android.provider.MediaStore
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
import androidx.compose.foundation.text.KeyboardActions
import androidx.compose.foundation.text.KeyboardOptions
import androidx.compose.material3.Button
import androidx.compose.material3.HorizontalDivider
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
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
import androidx.lifecycle.compose.collectAsStateWithLifecycle

class MainActivity : ComponentActivity() {
    private val model: DemoViewModel by viewModels()

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent {
            MaterialTheme {
                Surface(Modifier.fillMaxSize()) { DemoScreen(model, ::decode) }
            }
        }
    }

    /** A gallery image as an ARGB_8888 bitmap, upright (ImageDecoder applies the EXIF orientation). */
    private fun decode(uri: Uri): Bitmap =
        if (Build.VERSION.SDK_INT >= 28) {
            ImageDecoder.decodeBitmap(ImageDecoder.createSource(contentResolver, uri)) { decoder, _, _ ->
                decoder.allocator = ImageDecoder.ALLOCATOR_SOFTWARE
            }
        } else {
            @Suppress("DEPRECATION")
            MediaStore.Images.Media.getBitmap(contentResolver, uri)
        }
}

@Composable
fun DemoScreen(model: DemoViewModel, decode: (Uri) -> Bitmap) {
    val state by model.state.collectAsStateWithLifecycle()
    val takePhoto = rememberLauncherForActivityResult(ActivityResultContracts.TakePicturePreview()) { bitmap ->
        bitmap?.let(model::analyze)
    }
    val pickPhoto = rememberLauncherForActivityResult(ActivityResultContracts.PickVisualMedia()) { uri ->
        uri?.let { runCatching { decode(it) }.fold(model::analyze) { e -> model.showError("Cannot read the image: ${e.message}") } }
    }
    var question by remember { mutableStateOf("") }

    LazyColumn(Modifier.fillMaxSize().padding(12.dp), verticalArrangement = Arrangement.spacedBy(8.dp)) {
        item {
            Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
                Button(onClick = { takePhoto.launch(null) }, enabled = !state.busy) { Text("Camera") }
                Button(
                    onClick = { pickPhoto.launch(PickVisualMediaRequest(ActivityResultContracts.PickVisualMedia.ImageOnly)) },
                    enabled = !state.busy,
                ) { Text("Gallery") }
            }
            Text(state.status, style = MaterialTheme.typography.bodyMedium)
            if (state.modelInfo.isNotEmpty()) Text(state.modelInfo, style = MaterialTheme.typography.bodySmall)
        }
        state.bitmap?.let { bitmap ->
            item { ImageWithBoxes(bitmap, state.analysis) }
        }
        state.caption?.let { caption ->
            item { Text("“$caption”", style = MaterialTheme.typography.titleMedium) }
        }
        if (state.analysis != null) {
            item {
                OutlinedTextField(
                    value = question,
                    onValueChange = { question = it },
                    label = { Text("Ask about the image") },
                    placeholder = { Text("how many shapes are there?") },
                    singleLine = true,
                    keyboardOptions = KeyboardOptions(imeAction = ImeAction.Send),
                    keyboardActions = KeyboardActions(onSend = { model.ask(question); question = "" }),
                    modifier = Modifier.fillMaxWidth(),
                )
                Button(onClick = { model.ask(question); question = "" }, enabled = !state.busy && question.isNotBlank()) {
                    Text("Ask")
                }
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

private val BOX_COLORS = listOf(Color(0xFFE53935), Color(0xFF1E88E5), Color(0xFF43A047), Color(0xFFFDD835), Color(0xFF8E24AA), Color(0xFFFB8C00))

/** The photo scaled to the width of the screen, with each detection's box and "label score" drawn on it. */
@Composable
fun ImageWithBoxes(bitmap: Bitmap, analysis: Analysis?) {
    Box(Modifier.fillMaxWidth().aspectRatio(bitmap.width.toFloat() / bitmap.height)) {
        Image(bitmap.asImageBitmap(), contentDescription = null, contentScale = ContentScale.Fit, modifier = Modifier.fillMaxSize())
        if (analysis != null) {
            Canvas(Modifier.fillMaxSize()) {
                val k = size.width / bitmap.width // boxes are in original-image pixels
                val paint = android.graphics.Paint().apply { textSize = 14.dp.toPx(); isAntiAlias = true }
                analysis.detections.forEachIndexed { i, d ->
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

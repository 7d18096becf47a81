package ai.minivlm.android

import ai.minivlm.Accelerator
import ai.minivlm.GraphReplay
import ai.minivlm.RuntimeRequest
import android.util.Log
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertTrue
import org.junit.Test
import org.junit.runner.RunWith

/**
 * Replays a build's goldens on this device's runtime: every recorded graph call, every output within the build's
 * tolerances (GraphReplay, the common code the JVM test also runs). The build is a `minivlm-convert` folder with its
 * golden/, copied into src/androidTest/assets/golden-build/ (see android_demo/README.md).
 *
 *   ./gradlew :minivlm:connectedAndroidTest [-Pandroid.testInstrumentationRunnerArguments.accelerator=gpu]
 *
 * `accelerator` (auto, cpu, gpu, npu; default auto) and `threads` (default 0: the plan's) choose the runtime request.
 */
@RunWith(AndroidJUnit4::class)
class GoldenReplayTest {
    @Test
    fun goldensReplayOnTheDeviceRuntime() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val args = InstrumentationRegistry.getArguments()
        val request = RuntimeRequest(
            accelerator = Accelerator.valueOf(args.getString("accelerator", "auto").uppercase()),
            threads = args.getString("threads", "0").toInt(),
            availableCores = Runtime.getRuntime().availableProcessors(),
        )
        // The test APK's assets hold the build; the app under test's storage receives the copy.
        val dir = AndroidMiniVlm.install(instrumentation.context.assets, BUILD_ASSETS, instrumentation.targetContext.filesDir)
        AndroidMiniVlm.openBackend(dir, request).use { backend ->
            Log.i(TAG, "replaying ${dir.name} on ${backend.runningOn}")
            val verdicts = GraphReplay(dir, backend).run()
            verdicts.forEach { Log.i(TAG, it.toString()) }
            assertTrue("no graph calls in ${dir.path}/golden", verdicts.isNotEmpty())
            assertTrue("on ${backend.runningOn}:\n" + verdicts.joinToString("\n"), verdicts.all { it.passed })
        }
    }

    private companion object {
        const val BUILD_ASSETS = "golden-build"
        const val TAG = "MiniVlmGoldenReplay"
    }
}

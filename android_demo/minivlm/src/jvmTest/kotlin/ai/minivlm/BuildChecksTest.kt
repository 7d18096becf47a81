package ai.minivlm

import java.io.File
import java.nio.file.Files
import java.security.MessageDigest
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue

// BuildChecks through the JNI bridge on synthetic build folders that tests/apps/test_android_jvm.py writes (a
// MiniVLM manifest of tests/golden with real sha256s and a manifest_sha256 from converters/manifest.py):
//   BUILDS/tflite-nnapi        a TFLite build converted for NNAPI, exported with ai-edge-litert 2.3.0
//   BUILDS/executorch-xnnpack  an ExecuTorch XNNPACK build, exported with executorch 1.5.1
// Expected digests come from java.security.MessageDigest, plans and sizes from minivlm.h's rules by hand.

private fun sha256(file: File): String =
    MessageDigest.getInstance("SHA-256").digest(file.readBytes()).joinToString("") { "%02x".format(it) }

/** A copy of `build` in a new temporary folder, to damage. */
private fun copyOf(build: File): File {
    val dir = Files.createTempDirectory("minivlm-build").toFile()
    build.copyRecursively(dir, overwrite = true)
    return dir
}

fun buildChecksTests(checks: Checks, builds: File) {
    val tflite = File(builds, "tflite-nnapi")
    val executorch = File(builds, "executorch-xnnpack")
    fun refused(kind: ErrorKind, name: String, vararg mentions: String, body: () -> Unit) = checks.check("build checks: $name") {
        val e = assertFailsWith<MiniVlmException> { body() }
        assertEquals(kind, e.kind, "kind (message: ${e.message})")
        val message = e.message ?: ""
        assertTrue('\n' !in message, "one line: $message")
        for (m in mentions) assertTrue(m in message, "'$m' in: $message")
    }

    checks.check("build checks: verify a build") {
        BuildChecks.verify(tflite, "litert", "2.3.0")
        BuildChecks.verify(tflite, "litert", "2.5.1")
        BuildChecks.verify(tflite, "litert", null)
        BuildChecks.verify(executorch, "executorch", "1.5.1")
    }
    val model = File(tflite, "model.tflite")
    val expected = sha256(model)
    refused(ErrorKind.BAD_FILE, "a tampered file", "model.tflite", expected.take(12)) {
        val copy = copyOf(tflite)
        try {
            File(copy, "model.tflite").appendBytes(byteArrayOf(1))
            BuildChecks.verify(copy, "litert", null)
        } finally {
            copy.deleteRecursively()
        }
    }
    refused(ErrorKind.BAD_FILE, "a missing file", "vocabularies.json", "missing") {
        val copy = copyOf(tflite)
        try {
            File(copy, "vocabularies.json").delete()
            BuildChecks.verify(copy, "litert", null)
        } finally {
            copy.deleteRecursively()
        }
    }
    refused(ErrorKind.BAD_FILE, "a manifest edited after the build", "edited after the build") {
        val copy = copyOf(tflite)
        try {
            val manifest = File(copy, "manifest.json")
            manifest.writeText(manifest.readText().replace("\"nnapi\"", "\"gpu\""))
            BuildChecks.verify(copy, "litert", null)
        } finally {
            copy.deleteRecursively()
        }
    }
    refused(ErrorKind.INVALID_ARGUMENT, "the wrong runtime", "tflite", "executorch") { BuildChecks.verify(tflite, "executorch", null) }
    refused(ErrorKind.INVALID_ARGUMENT, "an older runtime", "2.2.0", "2.3.0") { BuildChecks.verify(tflite, "litert", "2.2.0") }
    refused(ErrorKind.INVALID_ARGUMENT, "the next major runtime", "3.0.0") { BuildChecks.verify(tflite, "litert", "3.0.0") }
    refused(ErrorKind.IO_ERROR, "no build folder", "no-such-build") { BuildChecks.verify(File(builds, "no-such-build"), "litert", null) }

    checks.check("build checks: plans on Android") {
        val nnapi = BuildChecks.plan(tflite, RuntimeRequest(availableCores = 8))
        assertEquals(RuntimePlan("litert", Accelerator.NPU, 4, nnapi.note), nnapi)
        assertTrue("NNAPI" in nnapi.note && "Android 15" in nnapi.note, nnapi.note)
        assertEquals(RuntimePlan("litert", Accelerator.CPU, 2, ""), BuildChecks.plan(tflite, RuntimeRequest(Accelerator.CPU, 2, 8)))
        assertEquals(RuntimePlan("litert", Accelerator.GPU, 2, ""), BuildChecks.plan(tflite, RuntimeRequest(Accelerator.GPU, 0, 2)))
        val clamped = BuildChecks.plan(executorch, RuntimeRequest(Accelerator.AUTO, 16, 6))
        assertEquals(RuntimePlan("executorch", Accelerator.CPU, 6, clamped.note), clamped)
        assertTrue("16 threads requested" in clamped.note, clamped.note)
        assertEquals(RuntimePlan("executorch", Accelerator.CPU, 1, ""), BuildChecks.plan(executorch, RuntimeRequest(availableCores = 1)))
    }
    refused(ErrorKind.INVALID_ARGUMENT, "the GPU for an ExecuTorch build", "xnnpack", "--target tflite --delegate gpu") {
        BuildChecks.plan(executorch, RuntimeRequest(Accelerator.GPU, availableCores = 8))
    }
    refused(ErrorKind.INVALID_ARGUMENT, "negative threads", "-2") { BuildChecks.plan(tflite, RuntimeRequest(threads = -2, availableCores = 8)) }

    checks.check("build checks: decode sizes") {
        // S = 256 (tests/golden's model), letterboxed: hand-computed as in sdk/native/tests/test_build_checks.cpp.
        assertEquals(DecodeSize(8, 256), BuildChecks.decodeSize(tflite, 4032, 3024))
        assertEquals(DecodeSize(2, 257), BuildChecks.decodeSize(tflite, 1024, 1003))
        assertEquals(DecodeSize(1, 100), BuildChecks.decodeSize(executorch, 100, 50))
    }
    refused(ErrorKind.BAD_INPUT, "a zero-size photo", "0x5") { BuildChecks.decodeSize(tflite, 0, 5) }
}

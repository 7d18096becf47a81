"""Source-level checks of the Android demo (no Android SDK here): the Gradle setup, the runners and the app apply
what the common code and the native core decide.

Each test reads the Gradle/Kotlin/XML files and pins one fix: the NDK's C++ runtime (c++_static beside ExecuTorch's
own libc++_shared.so), the Gradle wrapper (pinned distribution with its checksum, scripts that fail clearly without
the wrapper jar), LiteRT's CompiledModel with CPU/GPU/NPU and threads, ExecuTorch threads, the runtime plan and
build verification applied and shown, downscaled photo decoding, full-resolution camera capture, both families.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "android_demo"
LIB = ROOT / "minivlm"
RUNNERS = LIB / "src" / "main" / "kotlin" / "ai" / "minivlm" / "android"
APP = ROOT / "app" / "src" / "main"
DEMO = APP / "kotlin" / "ai" / "minivlm" / "demo"


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def code(path: Path) -> str:
    """Kotlin/Gradle source without // comments and KDoc, so that a comment cannot satisfy a check."""
    source = re.sub(r"/\*.*?\*/", "", text(path), flags=re.S)
    return "\n".join(re.sub(r"(^|\s)//.*$", "", line) for line in source.splitlines())


def catalog() -> dict:
    return tomllib.loads(text(ROOT / "gradle" / "libs.versions.toml"))


def test_native_build_links_the_cpp_runtime_statically():
    """The core exposes a C ABI only; c++_shared would clash with the libc++_shared.so that ExecuTorch's fbjni ships."""
    gradle = code(LIB / "build.gradle.kts")
    assert re.search(r'arguments\s*\+=\s*listOf\("-DANDROID_STL=c\+\+_static"\)', gradle), gradle
    assert "c++_shared" not in gradle
    cmake = text(LIB / "src" / "main" / "cpp" / "CMakeLists.txt")
    assert "c++_shared" not in cmake


def test_gradle_wrapper_pins_a_checked_distribution():
    props = dict(line.split("=", 1) for line in text(ROOT / "gradle" / "wrapper" / "gradle-wrapper.properties").splitlines()
                 if line and not line.startswith("#"))
    url = props["distributionUrl"]
    version = re.search(r"gradle-(\d+)\.(\d+)(?:\.(\d+))?-bin\.zip$", url)
    assert version and url.startswith("https\\://services.gradle.org/distributions/"), url
    assert re.fullmatch(r"[0-9a-f]{64}", props["distributionSha256Sum"]), props
    # AGP 8.7 needs Gradle 8.9 or newer (the AGP/Gradle compatibility table).
    agp = tuple(int(x) for x in catalog()["versions"]["agp"].split(".")[:2])
    if agp == (8, 7):
        assert (int(version[1]), int(version[2])) >= (8, 9), url


@pytest.mark.skipif(shutil.which("sh") is None, reason="no POSIX shell")
def test_gradlew_without_the_wrapper_jar_fails_with_instructions(tmp_path: Path):
    assert os.access(ROOT / "gradlew", os.X_OK), "gradlew must be executable"
    (tmp_path / "gradle" / "wrapper").mkdir(parents=True)
    shutil.copy(ROOT / "gradlew", tmp_path / "gradlew")
    shutil.copy(ROOT / "gradle" / "wrapper" / "gradle-wrapper.properties", tmp_path / "gradle" / "wrapper")
    proc = subprocess.run(["sh", str(tmp_path / "gradlew"), "tasks"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "gradle-wrapper.jar is missing" in proc.stderr and "gradle wrapper" in proc.stderr, proc.stderr
    bat = (ROOT / "gradlew.bat").read_bytes()
    assert b"gradle-wrapper.jar" in bat and b"exit /b 1" in bat and b"\r\n" in bat
    readme = text(ROOT / "README.md")
    assert "gradle wrapper --gradle-version" in readme


def test_linked_runtime_versions_reach_the_build_check():
    gradle = code(LIB / "build.gradle.kts")
    assert 'buildConfigField("String", "EXECUTORCH_VERSION", "\\"${libs.versions.executorch.get()}\\"")' in gradle
    assert 'buildConfigField("String", "LITERT_VERSION", "\\"${libs.versions.litert.get()}\\"")' in gradle
    opener = code(RUNNERS / "AndroidMiniVlm.kt")
    assert "BuildChecks.verify(dir, plan.backend, linkedRuntimeVersion(plan.backend))" in opener
    assert '"executorch" -> BuildConfig.EXECUTORCH_VERSION' in opener and '"litert" -> BuildConfig.LITERT_VERSION' in opener
    versions = catalog()["versions"]
    assert versions["litert"].startswith("2."), "LiteRT 2.x: the CompiledModel API"
    try:
        exporter = importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("executorch is not installed: cannot compare the catalog with the exporter")
    # The Android runtime must load what this converter exports: same major.minor (or newer).
    assert tuple(map(int, versions["executorch"].split(".")[:2])) >= tuple(map(int, exporter.split(".")[:2])), (versions, exporter)


def test_litert_runs_compiled_models_on_the_planned_accelerator():
    runner = code(RUNNERS / "LiteRtRunner.kt")
    assert "org.tensorflow.lite" not in runner, "the Interpreter API is LiteRT 1.x; 2.x runs CompiledModel"
    assert "CompiledModel.create(File(dir, file).path, options(accelerator, threads))" in runner
    for accelerator in ("CPU", "GPU", "NPU"):
        assert f"CompiledModel.Options(LiteRtAccelerator.{accelerator})" in runner
    assert "cpuOptions = CompiledModel.CpuOptions(numThreads = threads)" in runner
    assert "model.run(inputBuffers, outputBuffers, signature)" in runner
    libs = catalog()["libraries"]
    assert libs["litert-gpu"]["name"] == "litert-gpu", "from LiteRT 2.3 the GPU accelerator is its own artifact"
    assert "implementation(libs.litert.gpu)" in code(LIB / "build.gradle.kts")


def test_executorch_threads_and_the_plan_are_applied():
    et = code(RUNNERS / "ExecuTorchRunner.kt")
    assert "Module.load(file.path, Module.LOAD_MODE_MMAP, threads)" in et
    opener = code(RUNNERS / "AndroidMiniVlm.kt")
    assert "val plan = BuildChecks.plan(dir, request)" in opener
    assert "AppliedRuntime.attempts(request.accelerator.name.lowercase(), planned)" in opener
    assert "ExecuTorchRunner(File(d, spec.file), weights, spec, plan.threads)" in opener
    assert "LiteRtBackend.compile(dir, files, attempts, plan.threads)" in opener
    assert re.search(r"RunningOn\(\"litert\", compiled\.accelerator, plan\.threads, note\)", opener)


def test_the_app_requests_shows_and_reloads_the_runtime_choice():
    vm = code(DEMO / "DemoViewModel.kt")
    assert "RuntimeRequest(choice.accelerator, choice.threads, Runtime.getRuntime().availableProcessors())" in vm
    assert "AndroidMiniVlm.open(getApplication(), request)" in vm
    assert "AppliedRuntime.describe(p.backend, p.accelerator.name.lowercase(), p.threads, p.note)" in vm
    assert '"running on: ${opened.runningOn}"' in vm and "loadMs = opened.loadMs" in vm and "warmupMs" in vm
    ui = code(DEMO / "MainActivity.kt")
    assert "RuntimePanel(state, onApply = model::load)" in ui
    for shown in ("state.plan", "state.runningOn", "state.loadMs", "state.warmupMs", "Accelerator.entries"):
        assert shown in ui, shown


def test_non_sdk_exceptions_end_as_one_line():
    vm = code(DEMO / "DemoViewModel.kt")
    assert "catch (e: CancellationException)" in vm and "catch (e: Throwable)" in vm
    assert "catch (e: MiniVlmException)" not in vm, "every failure goes through launchCatching"
    assert vm.count("launchCatching(") >= 4  # load, analyze, ask/match (query), the helper itself


def test_photos_decode_downscaled_and_the_camera_captures_full_resolution():
    decoder = code(DEMO / "PhotoDecoder.kt")
    assert "BuildChecks.decodeSize(buildDir" in decoder
    assert "decoder.setTargetSize(w, h)" in decoder and "inSampleSize = d.sampleSize" in decoder
    assert "MediaStore" not in decoder
    ui = code(DEMO / "MainActivity.kt")
    assert "TakePicturePreview" not in ui and "TakePicturePreview" not in code(DEMO / "DemoViewModel.kt")
    assert "ActivityResultContracts.TakePicture()" in ui
    assert 'FileProvider.getUriForFile(this, "$packageName.files", file)' in ui and 'File(cacheDir, "camera/photo.jpg")' in ui
    manifest = text(APP / "AndroidManifest.xml")
    assert 'android:authorities="${applicationId}.files"' in manifest and "@xml/file_paths" in manifest
    assert '<cache-path name="camera" path="camera/" />' in text(APP / "res" / "xml" / "file_paths.xml")


def test_both_families_open_and_efficientvlm_shows_no_detections():
    opener = code(RUNNERS / "AndroidMiniVlm.kt")
    assert "val family = buildFamily(dir)" in opener
    assert 'if (family == "minivlm") MiniVlm(dir, backend)' in opener and 'if (family == "efficientvlm") EfficientVlm(dir, backend)' in opener
    vm = code(DEMO / "DemoViewModel.kt")
    assert "Described(caption.value.text, null," in vm  # EfficientVLM: caption without detections
    for call in ("efficientVlm!!.answer(", "efficientVlm!!.match(", "miniVlm!!.answer(", "miniVlm!!.match("):
        assert call in vm, call


def test_the_demo_scenes_the_app_lists_exist():
    vm = code(DEMO / "DemoViewModel.kt")
    assert 'app.assets.open("$SCENES/scenes.json")' in vm and 'const val SCENES = "scenes"' in vm
    index = APP / "assets" / "scenes" / "scenes.json"
    if not index.is_file():
        pytest.skip(f"{index} is written by scripts/make_demo_scenes.py")
    import json

    scenes = json.loads(text(index))["scenes"]
    assert scenes and all((index.parent / s["file"]).is_file() and s["caption"] for s in scenes)

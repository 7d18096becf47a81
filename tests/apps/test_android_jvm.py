"""The Android library on the desktop JVM: its JNI bridge and platform-independent Kotlin, on python_ref's goldens.

1. The JNI bridge (android_demo/minivlm/src/main/cpp/minivlm_jni.cpp) is compiled with the JDK's jni.h and
   linked with the native core (sdk/native/src) into libminivlm_jni.so.
2. android_demo/minivlm/src/common/kotlin (JDK-only Kotlin: pipeline, manifest and golden readers, JNI
   declarations) and the test main in src/jvmTest/kotlin are compiled in one kotlinc run. kotlinc comes from
   the npm package kotlin-compiler, installed on first use into ~/.cache/minivlm/kotlinc (skipped with a
   reason when npm is missing); the jar is cached by the hash of its sources.
3. The main runs under `java -Xcheck:jni`: every golden of tests/golden (tokenizer, anchors, preprocessing,
   proposals, region selection, region tokens, packing, greedy and beam caption decoding) goes Kotlin -> JNI ->
   core and must equal python_ref's outputs; then the MiniVlm pipeline runs over graph runners that replay the
   recorded graph outputs; then malformed input must raise MiniVlmException, never crash the JVM; then
   BuildChecks (verify, plan, decode size) on synthetic build folders written here (`write_builds`); then the
   same for EfficientVLM on tests/golden_efficientvlm (NativeEvlm host steps, the EfficientVlm pipeline over
   replayed graph calls, bad input).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _appbuild import CACHE, REPO, run

ANDROID = REPO / "android_demo" / "minivlm" / "src"
BRIDGE = ANDROID / "main" / "cpp" / "minivlm_jni.cpp"
KOTLIN_SOURCES = sorted((ANDROID / "common" / "kotlin").rglob("*.kt")) + sorted((ANDROID / "jvmTest" / "kotlin").rglob("*.kt"))
GOLDEN = REPO / "tests" / "golden"
EVLM_GOLDEN = REPO / "tests" / "golden_efficientvlm"  # GoldenReplayMain finds it beside GOLDEN
VOCAB = REPO / "python_ref" / "vocab.txt"
KOTLIN_VERSION = "2.4.20"
KOTLIN_HOME = CACHE / "kotlinc" / "node_modules" / "kotlin-compiler"
MAIN_CLASS = "ai.minivlm.GoldenReplayMainKt"


def java_home() -> Path:
    """JAVA_HOME, or the JDK that `javac` on PATH belongs to."""
    if os.environ.get("JAVA_HOME") and (Path(os.environ["JAVA_HOME"]) / "include" / "jni.h").is_file():
        return Path(os.environ["JAVA_HOME"])
    javac = shutil.which("javac")
    if javac is None:
        pytest.skip("no JDK: javac is not on PATH and JAVA_HOME is not set (apt-get install openjdk-17-jdk-headless)")
    home = Path(javac).resolve().parents[1]
    if not (home / "include" / "jni.h").is_file():
        pytest.skip(f"the JDK at {home} has no include/jni.h")
    return home


def kotlin_home() -> Path:
    """kotlinc from the npm package kotlin-compiler (the full compiler with kotlin-stdlib and kotlin-test)."""
    if not (KOTLIN_HOME / "bin" / "kotlinc").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip(f"kotlinc is not installed in {KOTLIN_HOME} and npm is not available to install kotlin-compiler")
        (CACHE / "kotlinc").mkdir(parents=True, exist_ok=True)
        run([npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE / "kotlinc"), f"kotlin-compiler@{KOTLIN_VERSION}"],
            timeout=900)
    (KOTLIN_HOME / "bin" / "kotlinc").chmod(0o755)  # npm may drop the exec bit of non-"bin" scripts
    return KOTLIN_HOME


@pytest.fixture(scope="module")
def jni_library(cxx: str, core_objects: list[Path], tmp_path_factory) -> Path:
    """libminivlm_jni.so: the bridge + the core, built against the JDK's jni.h."""
    home = java_home()
    out = tmp_path_factory.mktemp("jni")
    include = home / "include"
    platform = [p for p in include.iterdir() if p.is_dir()]  # include/linux (jni_md.h)
    start = time.monotonic()
    run([cxx, "-std=c++17", "-O1", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
         "-I", str(include), *[f"-I{p}" for p in platform], "-I", str(REPO / "sdk" / "native" / "include"),
         str(BRIDGE), *map(str, core_objects), "-o", str(out / "libminivlm_jni.so")])
    print(f"JNI library built in {time.monotonic() - start:.1f} s")
    return out


@pytest.fixture(scope="module")
def test_jar() -> Path:
    """The platform-independent Kotlin and the test main, compiled once (cached by source hash)."""
    home = java_home()
    kotlin = kotlin_home()
    key = hashlib.sha256(KOTLIN_VERSION.encode())
    for path in KOTLIN_SOURCES:
        key.update(str(path.relative_to(ANDROID)).encode() + path.read_bytes())
    jar = CACHE / "kotlin-jars" / f"minivlm-jvmtest-{key.hexdigest()[:16]}.jar"
    if jar.is_file():
        return jar
    jar.parent.mkdir(parents=True, exist_ok=True)
    partial = jar.with_suffix(f".{os.getpid()}.partial.jar")
    env = {**os.environ, "JAVA_HOME": str(home)}
    start = time.monotonic()
    run([str(kotlin / "bin" / "kotlinc"), "-jvm-target", "17", "-Werror", "-cp", str(kotlin / "lib" / "kotlin-test.jar"),
         *map(str, KOTLIN_SOURCES), "-d", str(partial)], env=env, timeout=1800)
    partial.rename(jar)
    print(f"kotlinc compiled {len(KOTLIN_SOURCES)} files in {time.monotonic() - start:.1f} s")
    return jar


def test_kotlin_sources_are_platform_independent():
    """src/common/kotlin compiles against the JDK alone: no android.*, ExecuTorch or LiteRT imports there."""
    common = sorted((ANDROID / "common" / "kotlin").rglob("*.kt"))
    assert len(common) >= 8, common
    for path in common:
        for line in path.read_text().splitlines():
            if line.startswith("import "):
                assert not re.match(r"import (android|androidx|org\.pytorch|org\.tensorflow|com\.google)\.", line), f"{path.name}: {line}"


def write_builds(folder: Path) -> Path:
    """Two build folders for BuildChecksTest.kt, made of tests/golden's MiniVLM manifest without converting anything:
    tflite-nnapi (ai-edge-litert 2.3.0) and executorch-xnnpack (executorch 1.5.1), each with its files' sha256s and
    its manifest_sha256 computed by converters/manifest.py, as minivlm-convert writes them."""
    from minivlm.converters.manifest import MANIFEST_DIGEST, file_hashes, manifest_digest
    from minivlm.python_ref.minivlm_family import GRAPH_NAMES

    golden = json.loads((GOLDEN / "manifest.json").read_text(encoding="utf-8"))
    for target, delegate, tool, version, graph_file in (("tflite", "nnapi", "ai-edge-litert", "2.3.0", "model.tflite"),
                                                        ("executorch", "xnnpack", "executorch", "1.5.1", "model.pte")):
        build = folder / f"{target}-{delegate}"
        (build / "golden").mkdir(parents=True)
        (build / graph_file).write_bytes(bytes(range(256)) * 40)  # graph bytes: verification only hashes them
        (build / "vocab.txt").write_bytes(VOCAB.read_bytes())
        (build / "vocabularies.json").write_bytes((GOLDEN / "vocabularies.json").read_bytes())
        (build / "golden" / "index.json").write_text("{}\n", encoding="utf-8")
        manifest = {**golden, "family": "minivlm", "target": target, "delegate": delegate, "precision": "fp32",
                    "compute_units": None, "graphs": {name: {"file": graph_file} for name in GRAPH_NAMES},
                    "tools": {tool: version, "torch": "2.13.0"}, "files": file_hashes(build)}
        manifest[MANIFEST_DIGEST] = manifest_digest(manifest)
        (build / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
    return folder


def test_golden_replay_on_the_jvm(jni_library: Path, test_jar: Path, tmp_path: Path):
    assert (GOLDEN / "index.json").is_file(), f"no goldens in {GOLDEN} (scripts/update_goldens.py writes them)"
    home = java_home()
    kotlin = kotlin_home()
    classpath = os.pathsep.join(map(str, [test_jar, kotlin / "lib" / "kotlin-stdlib.jar", kotlin / "lib" / "kotlin-test.jar"]))
    start = time.monotonic()
    proc = subprocess.run([str(home / "bin" / "java"), "-Xcheck:jni", f"-Djava.library.path={jni_library}", "-cp", classpath,
                           MAIN_CLASS, str(GOLDEN), str(VOCAB), str(write_builds(tmp_path / "builds"))],
                          capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - start
    output = proc.stdout + proc.stderr
    sys.stdout.write(output[-6000:])
    print(f"JVM golden replay ran in {elapsed:.1f} s")
    assert proc.returncode == 0, f"exit {proc.returncode} (a negative code or hs_err file is a crash)\n{output[-6000:]}"
    summary = re.search(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary, "the test main printed no summary"
    passed, failed = map(int, summary.groups())
    assert failed == 0 and not re.search(r"^FAIL ", proc.stdout, re.M)
    # -Xcheck:jni reports misuse of JNI (pending exceptions, wrong types) as warnings without failing the call.
    assert "WARNING in native method" not in output and "FATAL ERROR in native method" not in output, output[-4000:]
    # What must have run: every tokenizer case, every image's host steps, both decodes, the pipeline, malformed input.
    index = json.loads((GOLDEN / "index.json").read_text(encoding="utf-8"))
    lines = set(re.findall(r"^PASS (.+)$", proc.stdout, re.M))
    assert sum(line.startswith("tokenizer ") for line in lines) == len(index["tokenizer"])
    for name, case in index["cases"].items():
        for expected in (f"{name} host steps", f"{name} MiniVlm.analyze", f"{name} MiniVlm.answer",
                         *(f"{name} caption {kind} (Native.captionDecode)" for kind in case["caption_decoding"] if kind in ("greedy", "beam"))):
            assert expected in lines, f"missing check: {expected}"
    assert sum(line.startswith("malformed: ") for line in lines) >= 20
    for name in ("verify a build", "a tampered file", "a missing file", "a manifest edited after the build", "the wrong runtime",
                 "an older runtime", "plans on Android", "the GPU for an ExecuTorch build", "decode sizes"):
        assert f"build checks: {name}" in lines, f"missing check: build checks: {name}"
    # The EfficientVLM pipeline (EfficientVlmReplay.kt) on tests/golden_efficientvlm.
    evlm = json.loads((EVLM_GOLDEN / "golden" / "index.json").read_text(encoding="utf-8"))
    for n in range(len(evlm["preprocess_cases"])):
        assert f"efficientvlm preprocess case {n} (NativeEvlm.evlmResize)" in lines
    for name in evlm["cases"]:
        for step in ("host steps (NativeEvlm)", "EfficientVlm.encode", "EfficientVlm.caption", "EfficientVlm.answer",
                     "EfficientVlm.match", "EfficientVlm.textFeature"):
            assert f"efficientvlm {name} {step}" in lines, f"missing check: efficientvlm {name} {step}"
    assert sum(line.startswith("malformed: efficientvlm ") for line in lines) >= 10
    assert passed >= len(lines)

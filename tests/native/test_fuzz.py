"""libFuzzer targets of the native core (sdk/native/fuzz/): built with clang, ASan and UBSan (MINIVLM_FUZZ=ON),
each replays its committed seed corpus (regressions included) and then fuzzes briefly; any crash, sanitizer
report, leak or failed check inside a target fails the test. MINIVLM_FUZZ_SECONDS sets the time per target."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from native_ctypes import NATIVE, build_native

pytestmark = pytest.mark.native
TARGETS = ("tokenizer", "vocab", "json", "manifest", "preprocess", "efficientvlm")
DICTIONARY = {"json": "json.dict", "manifest": "json.dict", "efficientvlm": "json.dict"}
SECONDS = int(os.environ.get("MINIVLM_FUZZ_SECONDS", "20"))
CLANG = shutil.which("clang++")


def _libfuzzer_links(tmp: Path) -> bool:
    source = tmp / "probe.cpp"
    source.write_text('#include <cstddef>\n#include <cstdint>\n'
                      'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n')
    proc = subprocess.run([CLANG, "-fsanitize=fuzzer,address,undefined", str(source), "-o", str(tmp / "probe")],
                          capture_output=True, text=True)
    return proc.returncode == 0


@pytest.fixture(scope="module")
def fuzzers(tmp_path_factory) -> Path:
    if not (CLANG and shutil.which("cmake")):
        pytest.skip("fuzzing needs clang++ with libFuzzer and cmake (apt-get install -y clang cmake)")
    tmp = tmp_path_factory.mktemp("fuzz")
    if not _libfuzzer_links(tmp):
        pytest.skip(f"{CLANG} cannot link -fsanitize=fuzzer,address,undefined (libFuzzer missing)")
    return build_native(tmp / "build", f"-DCMAKE_CXX_COMPILER={CLANG}", "-DMINIVLM_FUZZ=ON",
                        "-DMINIVLM_BUILD_TESTS=OFF", "-DMINIVLM_BUILD_SHARED=OFF", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_target_finds_nothing(fuzzers, target, tmp_path):
    seeds = NATIVE / "fuzz" / "corpus" / target
    assert sum(1 for _ in seeds.iterdir()) > 0, f"no seed corpus in {seeds}"
    new_inputs = tmp_path / "corpus"  # first corpus folder: libFuzzer writes what it finds here, not into the repo
    new_inputs.mkdir()
    cmd = [str(fuzzers / f"fuzz_{target}"), str(new_inputs), str(seeds), f"-max_total_time={SECONDS}", "-timeout=10",
           "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={tmp_path}/"]
    if target in DICTIONARY:
        cmd.append(f"-dict={NATIVE / 'fuzz' / DICTIONARY[target]}")
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=SECONDS + 300)
    log = proc.stderr
    stats = dict(re.findall(r"stat::(\w+):\s+(\d+)", log))
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+)", log)
    print(f"fuzz_{target}: {stats.get('number_of_executed_units')} runs, {stats.get('average_exec_per_sec')}/s, "
          f"cov/ft {done[-1][1:] if done else '?'}")
    artifacts = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    assert proc.returncode == 0 and not artifacts, f"fuzz_{target} failed ({proc.returncode}), {artifacts}:\n{log[-6000:]}"
    assert "INITED" in log and int(stats.get("number_of_executed_units", 0)) > 0, log[-3000:]

"""minivlm.coreml_executor on whole Core ML fp16 builds of the tiny models (build tier): every function run on the
build's golden inputs, each output held to the golden reference output it records. An ideal fp16 executor keeps
about 3 decimal digits per op (a relative rounding of at most 2**-11); 40 dB PSNR leaves room for that error to
grow over the tens of ops of a graph."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from minivlm.coreml_executor import MILProgram

pytest.importorskip("coremltools")
MIN_PSNR_DB = 40.0


def _array(folder, entry: dict) -> np.ndarray:
    dtype = np.dtype(entry["dtype"]).newbyteorder("<") if entry["dtype"] != "bool" else np.dtype(bool)
    return np.frombuffer((folder / entry["file"]).read_bytes(), dtype).reshape(entry["shape"])


def _psnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    mse = float(np.mean((ref - got) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(float(np.abs(ref).max()) ** 2 / mse)


def _check_build(folder) -> set[str]:
    manifest = json.loads((folder / "manifest.json").read_text())
    golden = folder / manifest["golden_dir"]
    index = json.loads((golden / "index.json").read_text())
    program = MILProgram.load(folder / "model.mlpackage")
    ran = set()
    for case in index["cases"].values():
        for graph, calls in case["graphs"].items():
            entry = manifest["graphs"][graph]
            for call in calls:
                feeds = {s["runtime_name"]: _array(golden, call["inputs"][s["name"]]).astype(s["runtime_dtype"])
                         for s in entry["inputs"]}
                got, _ = program.run(entry["function"], feeds)
                for s in entry["outputs"]:
                    psnr = _psnr_db(_array(golden, call["outputs"][s["name"]]), got[s["runtime_name"]])
                    assert psnr >= MIN_PSNR_DB, f"{graph}.{s['name']}: {psnr:.1f} dB"
                ran.add(entry["function"])
    return ran


def test_tiny_minivlm_fp16_build_matches_its_goldens(tiny_coreml_build):
    ran = _check_build(tiny_coreml_build.path)
    assert ran >= {"tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match"}


def test_tiny_efficientvlm_fp16_build_matches_its_goldens(tiny_efficientvlm_build):
    ran = _check_build(tiny_efficientvlm_build("coreml").path)
    assert ran >= {"vision", "text_feature", "match", "vqa", "caption_step"}

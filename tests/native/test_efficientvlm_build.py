"""The native core's EfficientVLM host steps (mvlm_evlm_*) on a real build: efficientvlm-tiny converted for
ExecuTorch (the session's build). Its manifest must give the config the graphs were exported with, and on each
golden image the core must make exactly the inputs python_ref fed the recorded graph calls: the vision graph's
pixels (Pillow-exact resize on full-size photos), the caption prompt and the packed question and text."""

from __future__ import annotations

import ctypes
import json
from ctypes import POINTER, Structure, byref, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_uint8
from pathlib import Path

import numpy as np

FLOAT_TOL = 1e-5  # python_ref's float32 normalisation repeated op by op; the resize is integer and exact


class EvlmConfig(Structure):
    """mvlm_evlm_config (minivlm.h), field for field."""

    _fields_ = [("image_size", c_int32), ("pixel_mean", c_double * 3), ("pixel_std", c_double * 3),
                ("num_image_tokens", c_int32), ("vision_width", c_int32), ("embed_dim", c_int32),
                ("max_text_len", c_int32), ("vocab_size", c_int32), ("num_answers", c_int32),
                ("pad_id", c_int64), ("unk_id", c_int64), ("cls_id", c_int64), ("sep_id", c_int64), ("mask_id", c_int64)]


def _array(golden: Path, entry: dict) -> np.ndarray:
    return np.fromfile(golden / entry["file"], dtype=np.dtype(entry["dtype"]).newbyteorder("<")).reshape(entry["shape"])


def _check(lib, status: int) -> None:
    assert status == 0, lib.mvlm_last_error().decode()


def test_host_steps_make_the_recorded_graph_inputs(native_api, tiny_efficientvlm_build):
    folder = Path(tiny_efficientvlm_build("executorch").path)
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    lib = native_api.lib
    config = EvlmConfig()
    _check(lib, lib.mvlm_evlm_config_load(str(folder).encode(), byref(config)))
    graphs = manifest["graphs"]
    assert graphs["vision"]["outputs"][0]["shape"] == [1, config.num_image_tokens, config.vision_width]
    assert graphs["vision"]["outputs"][1]["shape"] == [1, config.embed_dim]
    assert graphs["caption_step"]["outputs"][0]["shape"] == [1, config.max_text_len, config.vocab_size]
    assert graphs["vqa"]["outputs"][0]["shape"] == [1, config.num_answers]
    assert [config.pad_id, config.cls_id, config.sep_id] == [manifest["tokenizer"]["specials"][k] for k in ("[PAD]", "[CLS]", "[SEP]")]

    tokenizer = ctypes.c_void_p()
    _check(lib, lib.mvlm_tokenizer_load(str(folder / manifest["tokenizer"]["vocab_file"]).encode(), byref(tokenizer)))
    golden = folder / "golden"
    index = json.loads((golden / "index.json").read_text(encoding="utf-8"))
    t, s = config.max_text_len, config.image_size
    try:
        for name, case in index["cases"].items():
            host, calls = case["host_steps"], case["graphs"]
            image = np.ascontiguousarray(_array(golden, host["preprocess"]["inputs"]["image"]))
            h, w, _ = image.shape
            pixels = np.zeros(3 * s * s, dtype=np.float32)
            _check(lib, lib.mvlm_evlm_preprocess(byref(config), image.ctypes.data_as(POINTER(c_uint8)), w, h, c_size_t(3 * w), 0,
                                                 pixels.ctypes.data_as(POINTER(c_float)), c_size_t(pixels.size)))
            fed = _array(golden, calls["vision"][0]["inputs"]["images"]).ravel()
            assert np.abs(pixels - fed).max() <= FLOAT_TOL, f"{name} ({h}x{w}): vision input differs"
            ids, mask = np.zeros(t, dtype=np.int64), np.zeros(t, dtype=np.float32)
            length = c_int32()
            _check(lib, lib.mvlm_evlm_caption_prompt(tokenizer, byref(config), ids.ctypes.data_as(POINTER(c_int64)),
                                                     mask.ctypes.data_as(POINTER(c_float)), byref(length)))
            first = calls["caption_step"][0]["inputs"]
            # The first step's mask covers the prompt, as the packed prompt does.
            assert ids.tolist() == _array(golden, first["input_ids"]).ravel().tolist(), name
            assert mask.tolist() == _array(golden, first["token_mask"]).ravel().tolist(), name
            for graph, step, key in (("vqa", "question_packing", "question"), ("match", "text_packing", "text")):
                text = host[step]["inputs"][key]["value"].encode()
                _check(lib, lib.mvlm_evlm_pack_text(tokenizer, byref(config), c_char_p(text), c_size_t(len(text)),
                                                    ids.ctypes.data_as(POINTER(c_int64)), mask.ctypes.data_as(POINTER(c_float))))
                assert ids.tolist() == _array(golden, calls[graph][0]["inputs"]["input_ids"]).ravel().tolist(), f"{name} {step}"
                assert mask.tolist() == _array(golden, calls[graph][0]["inputs"]["token_mask"]).ravel().tolist(), f"{name} {step}"
    finally:
        lib.mvlm_tokenizer_free(tokenizer)

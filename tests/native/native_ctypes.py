"""ctypes bindings of the native core's C API (sdk/native/include/minivlm/minivlm.h) for in-process tests, and the
CMake build helper the native tests share."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from ctypes import POINTER, Structure, byref, c_char_p, c_double, c_float, c_int32, c_int64, c_size_t, c_uint8, c_void_p
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "sdk" / "native"
GOLDEN_MANIFEST = REPO / "tests" / "golden" / "manifest.json"
MVLM_OK, MVLM_BAD_INPUT, MVLM_BAD_FILE, MVLM_BUFFER_TOO_SMALL = 0, 2, 3, 5
PIXEL_FORMATS = {"rgb": (0, 3, (0, 1, 2)), "rgba": (1, 4, (0, 1, 2)), "bgra": (2, 4, (2, 1, 0)), "bgr": (3, 3, (2, 1, 0))}
JSON_TYPES = ("null", "bool", "number", "string", "array", "object")


class Config(Structure):
    """mvlm_config (minivlm.h), field for field."""

    _fields_ = [
        ("image_size", c_int32), ("pixel_mean", c_double * 3), ("pixel_std", c_double * 3),
        ("min_level", c_int32), ("num_levels", c_int32), ("anchor_sizes", c_double * 8),
        ("num_ratios", c_int32), ("aspect_ratios", c_double * 8), ("rpn_box_coder_weights", c_double * 4),
        ("pre_nms_top_n", c_int32), ("rpn_nms_threshold", c_double), ("post_nms_top_n", c_int32),
        ("min_box_size", c_double), ("num_classes", c_int32), ("num_attributes", c_int32),
        ("representation_size", c_int32), ("roi_box_coder_weights", c_double * 4), ("score_threshold", c_double),
        ("roi_nms_threshold", c_double), ("max_regions", c_int32), ("region_order", c_int32),
        ("vocab_size", c_int32), ("hidden_size", c_int32), ("num_layers", c_int32), ("num_heads", c_int32),
        ("head_dim", c_int32), ("max_text_len", c_int32), ("max_text_tags_len", c_int32), ("max_tags_len", c_int32),
        ("region_dim", c_int32), ("max_caption_tokens", c_int32),
        ("pad_id", c_int64), ("unk_id", c_int64), ("cls_id", c_int64), ("sep_id", c_int64), ("mask_id", c_int64),
    ]


class Letterbox(Structure):
    _fields_ = [("height", c_int32), ("width", c_int32), ("scale", c_double), ("resized_height", c_int32),
                ("resized_width", c_int32)]


class Regions(Structure):
    _fields_ = [("count", c_int32), ("boxes", POINTER(c_float)), ("labels", POINTER(c_int64)),
                ("scores", POINTER(c_float)), ("proposal_indices", POINTER(c_int64))]


class FusionInputs(Structure):
    _fields_ = [("input_ids", POINTER(c_int64)), ("token_type_ids", POINTER(c_int64)), ("token_mask", POINTER(c_float)),
                ("regions", POINTER(c_float)), ("region_mask", POINTER(c_float))]


def _ptr(array: np.ndarray, ctype):
    assert array.flags.c_contiguous
    return array.ctypes.data_as(POINTER(ctype))


class NativeError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(f"status {status}: {message}")
        self.status, self.message = status, message


class NativeAPI:
    """Thin ctypes calls of libminivlm; each method returns numpy arrays or raises NativeError(status, message)."""

    def __init__(self, path: Path):
        self.lib = lib = ctypes.CDLL(str(path))
        lib.mvlm_last_error.restype = c_char_p
        lib.mvlm_tokenizer_free.restype = lib.mvlm_json_free.restype = lib.mvlm_manifest_free.restype = None
        self.tokenizer = self._handle(lib.mvlm_tokenizer_load, str(REPO / "python_ref" / "vocab.txt").encode())
        manifest = self._handle(lib.mvlm_manifest_load, str(GOLDEN_MANIFEST).encode())
        self.config = Config()
        self._call(lib.mvlm_manifest_config, c_void_p(manifest), byref(self.config))
        lib.mvlm_manifest_free(c_void_p(manifest))
        # A struct shorter than the C one would have been overrun: its last field must be the manifest's [MASK].
        assert (self.config.region_dim, self.config.mask_id) == (262, 103), "Config does not match mvlm_config"

    def _call(self, fn, *args) -> None:
        status = fn(*args)
        if status != MVLM_OK:
            raise NativeError(status, self.lib.mvlm_last_error().decode("utf-8", "replace"))

    def _handle(self, fn, *args) -> int:
        out = c_void_p()
        self._call(fn, *args, byref(out))
        return out.value

    # -- tokenizer -------------------------------------------------------------------------------------------
    def tokenize(self, text: bytes) -> list[int]:
        count = c_size_t()
        status = self.lib.mvlm_tokenize(c_void_p(self.tokenizer), text, c_size_t(len(text)), None, c_size_t(0), byref(count))
        if status not in (MVLM_OK, MVLM_BUFFER_TOO_SMALL):
            raise NativeError(status, self.lib.mvlm_last_error().decode())
        ids = np.zeros(count.value, dtype=np.int64)
        self._call(self.lib.mvlm_tokenize, c_void_p(self.tokenizer), text, c_size_t(len(text)), _ptr(ids, c_int64),
                   c_size_t(len(ids)), byref(count))
        return ids.tolist()

    def detokenize(self, ids: list[int]) -> str:
        arr = np.array(ids, dtype=np.int64)
        length = c_size_t()
        self.lib.mvlm_detokenize(c_void_p(self.tokenizer), _ptr(arr, c_int64), c_size_t(len(arr)), None, c_size_t(0),
                                 byref(length))
        buffer = ctypes.create_string_buffer(length.value + 1)
        self._call(self.lib.mvlm_detokenize, c_void_p(self.tokenizer), _ptr(arr, c_int64), c_size_t(len(arr)), buffer,
                   c_size_t(len(buffer)), byref(length))
        return buffer.raw[: length.value].decode("utf-8")

    # -- host steps ------------------------------------------------------------------------------------------
    def preprocess(self, config: Config, image: np.ndarray, pixel_format: str = "rgb", padding: int = 0):
        """`image` (H, W, 3) uint8 RGB, laid out in `pixel_format` with `padding` spare bytes per row."""
        code, channels, order = PIXEL_FORMATS[pixel_format]
        h, w, _ = image.shape
        rows = np.full((h, w * channels + padding), 77, dtype=np.uint8)
        pixels = rows[:, : w * channels].reshape(h, w, channels)
        pixels[..., :3] = image[..., list(order)]
        out = np.zeros((1, 3, config.image_size, config.image_size), dtype=np.float32)
        box = Letterbox()
        self._call(self.lib.mvlm_preprocess, byref(config), _ptr(rows, c_uint8), c_int32(w), c_int32(h),
                   c_size_t(rows.shape[1]), c_int32(code), _ptr(out, c_float), c_size_t(out.size), byref(box))
        return out, box

    def make_anchors(self, config: Config) -> tuple[np.ndarray, list[int]]:
        count, sizes = c_size_t(), np.zeros(config.num_levels, dtype=np.int64)
        self._call(self.lib.mvlm_anchor_count, byref(config), byref(count), _ptr(sizes, c_int64))
        anchors = np.zeros((count.value, 4), dtype=np.float32)
        self._call(self.lib.mvlm_make_anchors, byref(config), _ptr(anchors, c_float), c_size_t(count.value))
        return anchors, sizes.tolist()

    def decode_boxes(self, deltas: np.ndarray, references: np.ndarray, weights) -> np.ndarray:
        out = np.zeros_like(deltas)
        self._call(self.lib.mvlm_decode_boxes, _ptr(deltas, c_float), _ptr(references, c_float), c_size_t(len(deltas)),
                   (c_double * 4)(*weights), _ptr(out, c_float))
        return out

    def nms(self, boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
        keep, kept = np.zeros(len(boxes), dtype=np.int64), c_size_t()
        self._call(self.lib.mvlm_nms, _ptr(boxes, c_float), _ptr(scores, c_float), c_size_t(len(boxes)),
                   c_double(threshold), _ptr(keep, c_int64), byref(kept))
        return keep[: kept.value].tolist()

    def select_proposals(self, config: Config, objectness, deltas, anchors):
        proposals = np.zeros((config.post_nms_top_n, 4), dtype=np.float32)
        valid = np.zeros(config.post_nms_top_n, dtype=np.uint8)
        self._call(self.lib.mvlm_select_proposals, byref(config), _ptr(objectness, c_float), _ptr(deltas, c_float),
                   _ptr(anchors, c_float), c_size_t(len(anchors)), _ptr(proposals, c_float), _ptr(valid, c_uint8))
        return proposals, valid.astype(bool)

    def select_regions(self, config: Config, proposals, valid, class_logits, box_deltas):
        k = config.max_regions
        out = {"boxes": np.zeros((k, 4), np.float32), "labels": np.zeros(k, np.int64), "scores": np.zeros(k, np.float32),
               "proposal_indices": np.zeros(k, np.int64)}
        regions = Regions(0, _ptr(out["boxes"], c_float), _ptr(out["labels"], c_int64), _ptr(out["scores"], c_float),
                          _ptr(out["proposal_indices"], c_int64))
        valid8 = valid.astype(np.uint8)
        self._call(self.lib.mvlm_select_regions, byref(config), _ptr(proposals, c_float), _ptr(valid8, c_uint8),
                   c_size_t(len(proposals)), _ptr(class_logits, c_float), _ptr(box_deltas, c_float), byref(regions))
        return {name: v[: regions.count] for name, v in out.items()}

    def region_tokens(self, config: Config, regions: dict, features: np.ndarray, box: Letterbox):
        k, d = len(regions["labels"]), config.representation_size
        boxes = np.ascontiguousarray(regions["boxes"], dtype=np.float32)
        indices = np.ascontiguousarray(regions["proposal_indices"], dtype=np.int64)
        r = Regions(k, _ptr(boxes, c_float), None, None, _ptr(indices, c_int64))
        tokens, image_boxes = np.zeros((k, d + 6), np.float32), np.zeros((k, 4), np.float32)
        self._call(self.lib.mvlm_region_tokens, byref(config), byref(r), _ptr(features, c_float), c_size_t(len(features)),
                   byref(box), _ptr(tokens, c_float), _ptr(image_boxes, c_float))
        return tokens, image_boxes

    def pack_inputs(self, config: Config, text: bytes, tags: list[bytes], regions: np.ndarray, require_text: bool):
        n, r = config.max_text_tags_len, config.max_regions
        out = {"input_ids": np.zeros((1, n), np.int64), "token_type_ids": np.zeros((1, n), np.int64),
               "token_mask": np.zeros((1, n), np.float32), "regions": np.zeros((1, r, config.region_dim), np.float32),
               "region_mask": np.zeros((1, r), np.float32)}
        fusion = FusionInputs(*(_ptr(out[k], c_int64 if v.dtype == np.int64 else c_float) for k, v in out.items()))
        tag_array = (c_char_p * max(1, len(tags)))(*tags)
        self._call(self.lib.mvlm_pack_inputs, c_void_p(self.tokenizer), byref(config), text, c_size_t(len(text)),
                   tag_array, c_size_t(len(tags)), _ptr(regions, c_float), c_size_t(len(regions)),
                   c_int32(int(require_text)), byref(fusion))
        return out

    # -- JSON and manifest -----------------------------------------------------------------------------------
    def parse_json(self, text: bytes):
        """The document as Python values (dict, list, str, float, bool, None), read back through the C API."""
        handle = self._handle(self.lib.mvlm_json_parse, text, c_size_t(len(text)))
        try:
            return self._json_value(c_void_p(handle), "")
        finally:
            self.lib.mvlm_json_free(c_void_p(handle))

    def _json_text(self, fn, *args) -> str:
        length = c_size_t()
        fn(*args, None, c_size_t(0), byref(length))
        buffer = ctypes.create_string_buffer(length.value + 1)
        self._call(fn, *args, buffer, c_size_t(len(buffer)), byref(length))
        return buffer.raw[: length.value].decode("utf-8")

    def _json_value(self, handle, pointer: str):
        p = pointer.encode("utf-8")
        kind = c_int32()
        self._call(self.lib.mvlm_json_type, handle, p, byref(kind))
        kind = JSON_TYPES[kind.value]
        if kind == "null":
            return None
        if kind == "bool":
            value = c_int32()
            self._call(self.lib.mvlm_json_bool, handle, p, byref(value))
            return bool(value.value)
        if kind == "number":
            number = c_double()
            self._call(self.lib.mvlm_json_number, handle, p, byref(number))
            return number.value
        if kind == "string":
            return self._json_text(self.lib.mvlm_json_string, handle, p)
        size = c_size_t()
        self._call(self.lib.mvlm_json_size, handle, p, byref(size))
        if kind == "array":
            return [self._json_value(handle, f"{pointer}/{i}") for i in range(size.value)]
        out = {}
        for i in range(size.value):
            key = self._json_text(self.lib.mvlm_json_key, handle, p, c_size_t(i))
            out[key] = self._json_value(handle, pointer + "/" + key.replace("~", "~0").replace("/", "~1"))
        return out

    def manifest_file(self, text: bytes, which: str) -> str:
        """mvlm_manifest_file of a manifest parsed from memory (no folder: the name as the manifest gives it)."""
        handle = self._handle(self.lib.mvlm_manifest_parse, text, c_size_t(len(text)), None)
        try:
            return self._json_text(self.lib.mvlm_manifest_file, c_void_p(handle), which.encode("utf-8"))
        finally:
            self.lib.mvlm_manifest_free(c_void_p(handle))

    def parse_manifest(self, text: bytes) -> Config:
        handle = self._handle(self.lib.mvlm_manifest_parse, text, c_size_t(len(text)), None)
        try:
            config = Config()
            self._call(self.lib.mvlm_manifest_config, c_void_p(handle), byref(config))
            return config
        finally:
            self.lib.mvlm_manifest_free(c_void_p(handle))


def build_native(folder: Path, *options: str) -> Path:
    """Configures and builds sdk/native into `folder` (one CMake build); returns the folder."""
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    for cmd in (["cmake", "-S", str(NATIVE), "-B", str(folder), *generator, *options],
                ["cmake", "--build", str(folder), "--parallel", os.environ.get("MINIVLM_NATIVE_JOBS", "2")]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return folder

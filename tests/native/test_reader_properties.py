"""The native core's JSON and manifest readers against Python's json on generated, re-formatted and mutated
documents (hypothesis), through the C API of the shared library (ctypes, see conftest.py): the same values, the
same documents accepted, and every refusal one line naming the broken field."""

from __future__ import annotations

import json
import math

import pytest

hypothesis = pytest.importorskip("hypothesis")
from native_ctypes import GOLDEN_MANIFEST, MVLM_BAD_FILE, NativeError  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytestmark = pytest.mark.native
FIXTURE = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # native_api is session-scoped


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    # Keys without U+0000 (a JSON Pointer is a C string in the C API, so such a key cannot be addressed) and, as
    # every str here, without lone surrogates (no UTF-8 text holds one).
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=8), inner, max_size=5),
    max_leaves=25)


def _same(a, b) -> bool:
    """JSON equality with numbers as float64 (the native reader's type) and NaN equal to NaN."""
    if isinstance(a, int) and not isinstance(a, bool) and abs(a) >= 2**1024:  # past float64: the reader gives inf
        return b == math.copysign(math.inf, a)
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        return isinstance(b, float) and (float(a) == b or (math.isnan(a) and math.isnan(b)))
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@FIXTURE
@given(JSON_VALUES, st.sampled_from([None, 0, 1, "\t"]), st.booleans(), st.booleans())
def test_json_reader_reads_what_python_writes(native_api, value, indent, ensure_ascii, compact):
    text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii,
                      separators=(",", ":") if compact else None).encode("utf-8")
    assert _same(json.loads(text), native_api.parse_json(text)), text


def _lone_surrogate(value) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return isinstance(value, list) and any(_lone_surrogate(v) for v in value)


def _python_json(data: bytes):
    """(accepted, value) as Python's json reads UTF-8 text, or None outside what the native reader promises:
    Python keeps a lone surrogate escape ("\\ud800") as a str no UTF-8 can hold, which the native reader rejects,
    and refuses integers past its 4300-digit limit."""
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False, None
    except (ValueError, RecursionError):
        return None
    return None if _lone_surrogate(value) else (True, value)


SEEDS = [GOLDEN_MANIFEST.read_bytes()[:600], b'{"a": [1, 2.5e-3, -0, true, null], "b": {"c": "\\u00e9\\ud83d\\ude42"}}',
         b'[NaN, Infinity, -Infinity, 1e400, "x\\ny", {}]']
BYTES = st.sampled_from(list(b'{}[]":,.-+eE0123456789 \\untrfalsNIy\x00\x1f\x7f\xc3\xa9\xff')) | st.integers(0, 255)


@st.composite
def mutated_json(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "truncate"]))
        if op == "insert":
            data[i:i] = bytes(draw(st.lists(BYTES, min_size=1, max_size=3)))
        elif op == "delete":
            del data[i:i + draw(st.integers(1, 4))]
        elif op == "replace" and i < len(data):
            data[i] = draw(BYTES)
        elif op == "truncate":
            del data[i:]
    return bytes(data)


@FIXTURE
@given(mutated_json())
def test_json_reader_accepts_exactly_what_python_accepts(native_api, data):
    python = _python_json(data)
    if python is None:
        return
    accepted, value = python
    if accepted:
        assert _same(value, native_api.parse_json(data)), data
    else:
        with pytest.raises(NativeError) as e:
            native_api.parse_json(data)
        assert e.value.status == MVLM_BAD_FILE and e.value.message and "\n" not in e.value.message


MANIFEST = json.loads(GOLDEN_MANIFEST.read_bytes())
TEE, FUSION = "/model/config/tee", "/model/config/fusion"
# Every field the native manifest reader needs, and the config field it fills.
READ = {f"{TEE}/image_size": "image_size", f"{TEE}/pixel_mean": "pixel_mean", f"{TEE}/pixel_std": "pixel_std",
        f"{TEE}/bifpn/min_level": "min_level", f"{TEE}/bifpn/max_level": None, f"{TEE}/rpn/anchor_sizes": "anchor_sizes",
        f"{TEE}/rpn/aspect_ratios": "aspect_ratios", f"{TEE}/rpn/box_coder_weights": "rpn_box_coder_weights",
        f"{TEE}/rpn/pre_nms_top_n": "pre_nms_top_n", f"{TEE}/rpn/nms_threshold": "rpn_nms_threshold",
        f"{TEE}/rpn/post_nms_top_n": "post_nms_top_n", f"{TEE}/rpn/min_box_size": "min_box_size",
        f"{TEE}/roi_head/num_classes": "num_classes", f"{TEE}/roi_head/num_attributes": "num_attributes",
        f"{TEE}/roi_head/representation_size": "representation_size",
        f"{TEE}/roi_head/box_coder_weights": "roi_box_coder_weights", f"{TEE}/roi_head/score_threshold": "score_threshold",
        f"{TEE}/roi_head/nms_threshold": "roi_nms_threshold", f"{TEE}/roi_head/max_regions": "max_regions",
        f"{TEE}/roi_head/region_order": "region_order", f"{FUSION}/vocab_size": "vocab_size",
        f"{FUSION}/hidden_size": "hidden_size", f"{FUSION}/num_layers": "num_layers", f"{FUSION}/num_heads": "num_heads",
        f"{FUSION}/max_text_len": "max_text_len", f"{FUSION}/max_text_tags_len": "max_text_tags_len",
        f"{FUSION}/region_dim": "region_dim", f"{FUSION}/max_caption_tokens": "max_caption_tokens",
        f"{FUSION}/max_regions": None, f"{FUSION}/heads_per_layer": None, "/schema_version": None, "/tokenizer/specials/[PAD]": "pad_id",
        "/tokenizer/specials/[UNK]": "unk_id", "/tokenizer/specials/[CLS]": "cls_id", "/tokenizer/specials/[SEP]": "sep_id",
        "/tokenizer/specials/[MASK]": "mask_id"}
# Read fields that may be absent: an encoder that lists no per-layer heads keeps num_heads in every layer, as the
# golden manifest's empty list says, so deleting it changes nothing.
OPTIONAL = {f"{FUSION}/heads_per_layer"}


def _pointers(value, prefix=""):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _pointers(v, f"{prefix}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _pointers(v, f"{prefix}/{i}")


POINTERS = [p for p in _pointers(MANIFEST) if p]


def _edit(doc, pointer: str, replacement, delete: bool):
    *parents, last = pointer.split("/")[1:]
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    if delete:
        del doc[int(last) if isinstance(doc, list) else last]
    else:
        doc[int(last) if isinstance(doc, list) else last] = replacement


def _config_values(config) -> dict:
    out = {}
    for name, _ in type(config)._fields_:
        v = getattr(config, name)
        out[name] = list(v) if hasattr(v, "__len__") else v
    return out


WRONG_TYPES = st.sampled_from([None, True, "7", [], {}, 0.5, float("nan"), -1, 10**12])


@FIXTURE
@given(st.sampled_from(POINTERS), WRONG_TYPES, st.booleans())
@example(f"{FUSION}/heads_per_layer", None, True)
@example(f"{TEE}/rpn/aspect_ratios/0", None, True)
def test_manifest_reader_rejects_a_broken_field_by_name_and_ignores_the_rest(native_api, pointer, replacement, delete):
    doc = json.loads(json.dumps(MANIFEST))
    _edit(doc, pointer, replacement, delete)
    text = json.dumps(doc).encode("utf-8")
    read = [p for p in READ if p == pointer or p.startswith(pointer + "/") or pointer.startswith(p + "/")]
    try:
        config = native_api.parse_manifest(text)
    except NativeError as e:
        assert e.status == MVLM_BAD_FILE and "\n" not in e.message
        assert read, f"{pointer} is not read, yet the manifest was rejected: {e.message}"
        # It names the field by its pointer or key (a cross-field check may name the other field it compared), or
        # the config value it checked.
        names = [*READ, *(p.rsplit("/", 1)[1] for p in read), "inconsistent model: config."]
        assert any(name in e.message for name in names), e.message
        return
    if not read:
        assert _config_values(config) == _config_values(native_api.config)
    else:  # accepted: the value was still valid (e.g. -1 for the [PAD] id is not): the config says what the file says
        if delete and pointer in OPTIONAL:
            assert _config_values(config) == _config_values(native_api.config)
            return
        if delete:  # only one of 1..8 aspect ratios may go
            assert pointer.startswith(f"{TEE}/rpn/aspect_ratios/"), f"{pointer} was deleted, yet the manifest was accepted"
            assert config.num_ratios == native_api.config.num_ratios - 1
        field = READ.get(pointer) or READ.get(pointer.rsplit("/", 1)[0])
        if field and not delete and isinstance(replacement, (int, float)) and not isinstance(replacement, bool):
            value = _config_values(config)[field]
            assert (value[int(pointer.rsplit("/", 1)[1])] if isinstance(value, list) else value) == replacement


@FIXTURE
@given(st.sampled_from(POINTERS), st.sampled_from([None, 0, -1, 2, "x"]), mutated_json())
def test_manifest_reader_never_crashes_on_mutated_text(native_api, pointer, replacement, noise):
    doc = json.loads(json.dumps(MANIFEST))
    _edit(doc, pointer, replacement, delete=False)
    text = json.dumps(doc, indent=1).encode("utf-8")
    cut = len(noise) % max(1, len(text))
    for data in (text, text[:cut] + noise + text[cut:]):
        try:
            native_api.parse_manifest(data)
        except NativeError as e:
            assert e.status == MVLM_BAD_FILE and e.message and "\n" not in e.message


@pytest.mark.parametrize("family, refused", [
    ("minivlm", None),
    ("efficientvlm", "is a build of the efficientvlm model family; read its config with mvlm_evlm_config_load"),
    ("line\nbreak", "is a build of the another model family; this core runs MiniVLM and EfficientVLM builds"),
    (7, "/family is a number, expected a string"),
])
def test_manifest_reader_refuses_other_model_families(native_api, family, refused):
    """A manifest names its model family (absent: a MiniVLM build, as the golden one); the MiniVLM reader refuses
    the others, pointing an EfficientVLM build to mvlm_evlm_config_load."""
    text = json.dumps({**MANIFEST, "family": family}).encode("utf-8")
    if refused is None:
        assert _config_values(native_api.parse_manifest(text)) == _config_values(native_api.config)
        return
    with pytest.raises(NativeError) as e:
        native_api.parse_manifest(text)
    assert e.value.status == MVLM_BAD_FILE and refused in e.value.message and "\n" not in e.value.message


def test_manifest_reader_accepts_the_tflite_layout(native_api):
    """A TFLite build's graphs all name its one `model.tflite` and their signature in it (converters/tflite.py `pack`):
    the core reads the host steps' config as before and gives every graph that file."""
    graphs = {g: {"file": "model.tflite", "signature": g, "inputs": [], "outputs": []}
              for g in ("tee_stage1", "tee_stage2", "caption_prefix", "caption_step", "vqa", "match")}
    text = json.dumps({**MANIFEST, "target": "tflite", "graphs": graphs}).encode("utf-8")
    assert _config_values(native_api.parse_manifest(text)) == _config_values(native_api.config)
    assert {native_api.manifest_file(text, g) for g in graphs} == {"model.tflite"}

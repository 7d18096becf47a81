"""Our own weights files: bit-exact safetensors round trips, and strict refusals of every other file."""

import pytest
import torch
from safetensors.torch import save_file

from minivlm.checkpoints import save_weights
from minivlm.python_ref.config import replace, tiny
from minivlm.python_ref.errors import InputError, WeightsError
from minivlm.python_ref.fusion import Fusion
from minivlm.python_ref.weights import load_weights, read_safetensors

CFG = tiny().fusion


def test_save_load_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(1)
    a, b = Fusion(CFG), Fusion(CFG)
    path = tmp_path / "fusion.safetensors"
    save_weights(a, path, {"model": "minivlm-tiny", "step": "7"})
    assert load_weights(b, path) == {"format": "pt", "model": "minivlm-tiny", "step": "7"}
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [p.name for p in tmp_path.iterdir()] == ["fusion.safetensors"]  # no temp file left behind


def test_load_refuses_another_model(tmp_path):
    path = tmp_path / "fusion.safetensors"
    save_weights(Fusion(CFG), path)
    other = Fusion(replace(CFG, num_answers=12))
    before = {k: v.clone() for k, v in other.state_dict().items()}
    expected = r"vqa_head\.fc2\.bias is \(11,\) torch\.float32 in the file, the model needs \(12,\)"
    with pytest.raises(WeightsError, match=expected):
        load_weights(other, path)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    deeper = Fusion(replace(CFG, num_layers=3))
    with pytest.raises(WeightsError, match=r"missing keys \(encoder\.layers\.2\."):
        load_weights(deeper, path)


def test_load_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="no weights file"):
        load_weights(Fusion(CFG), tmp_path / "absent.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(WeightsError, match="folder.safetensors is a directory, not a weights file"):
        load_weights(Fusion(CFG), tmp_path / "folder.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 5)
    with pytest.raises(WeightsError, match="is not a safetensors file: it does not start with a safetensors header"):
        load_weights(Fusion(CFG), junk)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty.safetensors is not a safetensors file: it is empty \(0 bytes\)"):
        load_weights(Fusion(CFG), empty)
    half = tmp_path / "half.safetensors"
    save_file({"x": torch.zeros(1000)}, str(half))
    size = half.stat().st_size
    half.write_bytes(half.read_bytes()[:-100])
    expected = f"it is truncated or damaged: its header describes {size} bytes, the file has {size - 100}"
    with pytest.raises(WeightsError, match=expected):
        load_weights(Fusion(CFG), half)
    header_cut = tmp_path / "header_cut.safetensors"
    header_cut.write_bytes(half.read_bytes()[:20])
    with pytest.raises(WeightsError, match="it is truncated or not safetensors: its header claims"):
        load_weights(Fusion(CFG), header_cut)


@pytest.mark.parametrize("zipped, kind", [(True, "a zip archive"), (False, "a Python pickle")])
def test_pickle_renamed_safetensors_is_named_and_never_unpickled(tmp_path, monkeypatch, zipped, kind):
    """A torch.save file renamed .safetensors: say what it is (not "header too large"); never unpickle it."""
    path = tmp_path / "model.safetensors"
    torch.save(Fusion(CFG).state_dict(), path, _use_new_zipfile_serialization=zipped)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a pickle was loaded"))
    with pytest.raises(WeightsError, match=f"is not a safetensors file: it is {kind}.*pickled checkpoints are never loaded"):
        load_weights(Fusion(CFG), path)


def test_a_header_length_starting_with_the_pickle_byte_still_loads(tmp_path):
    """A safetensors file's first byte is its header length's low byte, so 0x80 (a pickle's first byte) happens
    (a training checkpoint hit it): padding the metadata to make that length loads like any other file."""
    source, path = Fusion(CFG), tmp_path / "w.safetensors"
    for pad in range(256):
        save_weights(source, path, {"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    target = Fusion(CFG)
    load_weights(target, path)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    """NaN weights used to load and answer nonsense: the first bad tensor (key order) and its count are named."""
    source = Fusion(CFG)
    with torch.no_grad():
        source.vqa_head.fc2.bias[:3] = float("nan")
        source.encoder.layers[1].attn.query.weight[0, 0] = float("inf")
    path = tmp_path / "nan.safetensors"
    save_weights(source, path)
    target = Fusion(CFG)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    n = target.encoder.layers[1].attn.query.weight.numel()
    expected = (rf"nan.safetensors holds non-finite weights: encoder\.layers\.1\.attn\.query\.weight has 1 NaN/inf "
                rf"values of {n}; 1 more tensors hold 3 more")
    with pytest.raises(WeightsError, match=expected):
        load_weights(target, path)
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())
    with pytest.raises(WeightsError, match="holds non-finite weights"):
        read_safetensors(path)


def test_bad_metadata_writes_nothing(tmp_path):
    path = tmp_path / "fusion.safetensors"
    save_weights(Fusion(CFG), path, {"keep": "me"})
    before = path.read_bytes()
    with pytest.raises(InputError, match="metadata must map str to str"):
        save_weights(Fusion(CFG), path, {"step": 7})
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


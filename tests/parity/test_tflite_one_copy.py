"""A TFLite build of the demo model is one `model.tflite` holding one copy of every weight: the graph files weigh at
most 1.15x the model's fp32 weight bytes (fp32) or 0.35x (int8), and the word embeddings, which every fusion
graph uses (`caption_step` twice: lookup and tied decoder), are stored once.

The int8 build is one of the default parity builds; the fp32 one runs with the other slow builds (parity_models.py).
"""

import numpy as np
import pytest

from minivlm.converters.tflite_merge import stored_buffers

WORD_EMBEDDINGS = "fusion.encoder.embeddings.word_embeddings.weight"


def _weight_bytes(model) -> int:
    """Bytes of the model's weights in fp32: every tensor of its state dict, a tensor shared by two modules once."""
    seen = {}
    for tensor in model.state_dict().values():
        seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))] = tensor.numel() * 4
    return sum(seen.values())



@pytest.mark.parametrize("precision, bound", [pytest.param("int8", 0.35, id="int8"),
                                              pytest.param("fp32", 1.15, id="fp32", marks=pytest.mark.slow)])
def test_tflite_build_holds_one_copy_of_every_weight(demo, demo_build, precision, bound):
    build = demo_build("tflite", precision)
    graphs = build.manifest["graphs"]
    assert {(g["file"], g["signature"]) for g in graphs.values()} == {("model.tflite", n) for n in graphs}
    assert sorted(p.name for p in build.path.iterdir() if p.suffix == ".tflite") == ["model.tflite"]
    data = (build.path / "model.tflite").read_bytes()
    weights = _weight_bytes(demo.pipeline.model)
    assert len(data) <= bound * weights, f"model.tflite is {len(data) / weights:.3f}x the weights' {weights} bytes"

    embeddings = demo.pipeline.model.state_dict()[WORD_EMBEDDINGS]
    vocab, width = embeddings.shape
    constants = stored_buffers(data)
    if precision == "fp32":  # the reference's exact bytes, once
        assert constants.count(embeddings.numpy().astype(np.float32).tobytes()) == 1
    else:  # int8 per-channel: one byte per entry, quantized alone in each of four graphs and still stored once
        assert sum(len(c) == vocab * width for c in constants) == 1

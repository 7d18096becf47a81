"""Physical pruning: the smaller model equals the masked one on real inputs (demo scenes and their texts), with
uneven heads per layer, an attention left with no heads and feed-forward layers left with no neurons; and the
units' parameter counts against the real parameter counts of the models."""

import dataclasses

import numpy as np
import pytest
import torch

from minivlm.python_ref.efficientvlm.config import efficientvlm_demo_tiny, vocab_path
from minivlm.python_ref.efficientvlm.graphs import export_graphs
from minivlm.python_ref.efficientvlm.model import EfficientVLM
from minivlm.python_ref.scenes import generate_scene
from minivlm.python_ref.tokenizer import Tokenizer
from minivlm.pruning.physical import prune, pruned_config
from minivlm.pruning.units import masked, prunable_units
from minivlm.training.vlm_data import encode_texts


def _wide_tiny() -> EfficientVLM:
    """The demo-tiny model with 4 heads per attention (more room for uneven head counts), random weights."""
    cfg = efficientvlm_demo_tiny()
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, heads=4),
                              text=dataclasses.replace(cfg.text, heads=4))
    torch.manual_seed(0)
    model = EfficientVLM(cfg).eval()
    with torch.no_grad():  # biases away from 0, so that a wrongly kept or dropped one shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _masks(model: EfficientVLM) -> dict[str, torch.Tensor]:
    """Uneven masks: kept values in (0.5, 1), about a third zero; the first cross layer's cross-attention keeps
    no head, the last vision block and the first text layer keep no neuron."""
    g = torch.Generator().manual_seed(1)
    masks = {}
    for u in prunable_units(model):
        values = 0.5 + 0.5 * torch.rand(u.count, generator=g)
        values[torch.rand(u.count, generator=g) < 0.33] = 0.0
        masks[u.name] = values
    last = model.cfg.vision.layers - 1
    for name in ("cross.layers.0.cross_attn", f"vision.blocks.{last}", "text.layers.0.ffn"):
        masks[name] = torch.zeros_like(masks[name])
    masks["text.layers.1.attn"][0] = 0.9  # and never every head of the layer zero by chance
    return masks


def _real_inputs(model: EfficientVLM) -> dict[str, tuple[torch.Tensor, ...]]:
    cfg = model.cfg
    tok = Tokenizer.from_vocab(vocab_path(cfg))
    scenes = [generate_scene(7, i) for i in range(3)]
    s = cfg.vision.image_size
    images = []
    for scene in scenes:
        pixels = torch.from_numpy(np.ascontiguousarray(scene.image)).permute(2, 0, 1).float()[None] / 255
        images.append(torch.nn.functional.interpolate(pixels, size=(s, s), mode="bilinear", align_corners=False))
    images = torch.cat(images)
    text = encode_texts(tok, [scene.caption for scene in scenes], cfg.text.max_text_len)
    tokens = model.encode_image(images)
    return {"vision": (images,), "text_feature": (text.ids, text.mask),
            "match": (tokens, text.ids, text.mask), "vqa": (tokens, text.ids, text.mask),
            "caption_step": (tokens, text.ids, text.mask)}


def test_pruned_equals_masked_on_real_inputs():
    model = _wide_tiny()
    masks = _masks(model)
    pruned = prune(model, masks)
    cfg = pruned.cfg
    assert cfg.text.layer_cross_heads(0) == 0 and cfg.vision.layer_mlp(cfg.vision.layers - 1) == 0
    assert cfg.text.layer_ffn(0) == 0
    assert len(set(cfg.vision.heads_per_layer + cfg.text.self_heads_per_layer)) > 1  # uneven
    inputs = _real_inputs(model)
    units = prunable_units(model)
    want_graphs, got_graphs = export_graphs(model), export_graphs(pruned)
    with torch.no_grad():
        for name, args in inputs.items():
            with masked(model, units, masks):
                want = want_graphs[name](*args)
            got = got_graphs[name](*args)
            for w, g in zip(want, got):
                assert g.shape == w.shape
                assert float((g - w).abs().max()) <= 1e-5, name


def test_unit_params_are_what_pruning_removes():
    model = _wide_tiny()
    masks = _masks(model)
    pruned = prune(model, masks)
    removed = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in pruned.parameters())
    by_units = sum(int((masks[u.name] == 0).sum()) * u.unit_params for u in prunable_units(model))
    assert removed == by_units
    # A head of the vision attention by hand: q, k, v rows with their biases, out columns.
    d, w = model.cfg.vision.width // 4, model.cfg.vision.width
    vision_head = next(u for u in prunable_units(model) if u.name == "vision.blocks.0.attn")
    assert vision_head.unit_params == 3 * d * (w + 1) + d * w


def test_pruned_config_keeps_unmasked_layers_as_they_are():
    model = _wide_tiny()
    masks = {u.name: torch.ones(u.count) for u in prunable_units(model)}
    cfg = pruned_config(model, masks)
    assert cfg.vision.heads_per_layer == (4,) * cfg.vision.layers
    with pytest.raises(Exception, match="no mask"):
        pruned_config(model, {})

import dataclasses

import pytest

from minivlm.errors import ConfigError
from minivlm.python_ref import config as C


def test_paper_preset_has_the_design_numbers():
    cfg = C.get_config("minivlm-paper")
    assert cfg.tee.image_size == 512
    assert cfg.tee.bifpn.channels == 64 and cfg.tee.bifpn.num_cells == 3
    assert cfg.tee.rpn.anchor_sizes == (32, 64, 128, 256, 512) and cfg.tee.rpn.post_nms_top_n == 300
    assert cfg.tee.roi_head.num_classes == 1592 and cfg.tee.roi_head.num_attributes == 524
    assert cfg.tee.region_dim == 1030 == cfg.fusion.region_dim
    f = cfg.fusion
    assert (f.num_layers, f.hidden_size, f.num_heads, f.intermediate_size, f.vocab_size) == (12, 384, 12, 1536, 30522)
    assert (f.max_text_len, f.max_text_tags_len, f.max_regions) == (40, 70, 50)


def test_configs_are_frozen():
    cfg = C.get_config("minivlm-tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.fusion.hidden_size = 7


def test_unknown_preset_names_the_value_and_the_choices():
    with pytest.raises(ConfigError, match=r"unknown model preset 'minivlm-huge'.*minivlm-paper"):
        C.get_config("minivlm-huge")


def test_contradicting_parts_are_rejected_with_both_numbers():
    paper = C.minivlm_paper()
    with pytest.raises(ConfigError, match=r"1030-d regions, fusion.region_dim is 999"):
        C.MiniVLMConfig(name="x", tee=paper.tee, fusion=dataclasses.replace(paper.fusion, region_dim=999))
    with pytest.raises(ConfigError, match=r"not divisible"):
        dataclasses.replace(paper.fusion, hidden_size=100)
    with pytest.raises(ConfigError, match=r"image_size 500"):
        dataclasses.replace(paper.tee, image_size=500)
    for size in (0, -128):  # multiples of 128 too, but no image has that side
        with pytest.raises(ConfigError, match=rf"image_size {size} is not a positive multiple of the coarsest stride 128"):
            dataclasses.replace(paper.tee, image_size=size)

"""TEE parts: EfficientNet trunk, BiFPN, RPN (anchors, head, box coder), box head, the two stage graphs."""

import math

import pytest
import torch
import torch.nn.functional as F

from minivlm.errors import ConfigError, InputError
from minivlm.python_ref.bifpn import BiFPN, bifpn_nodes, max_pool_same, upsample_2x
from minivlm.python_ref.config import (BiFPNConfig, EfficientNetConfig, RoIHeadConfig, RPNConfig, minivlm_paper,
                                       replace, tiny)
from minivlm.python_ref.efficientnet import Conv2dSame, EfficientNet
from minivlm.python_ref.roi_head import RoIBoxHead
from minivlm.python_ref.rpn import BBOX_XFORM_CLIP, BoxCoder, RPNHead, make_anchors
from minivlm.python_ref.preprocess import check_images
from minivlm.python_ref.tee import TEE, check_boxes

EXPORT_TOL = 1e-5  # the exported program runs the same aten kernels; only fusion order may differ


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def tiny_tee() -> TEE:
    torch.manual_seed(0)
    return TEE(tiny().tee).eval()


def _sorted_boxes(gen: torch.Generator, b: int, r: int, size: int) -> torch.Tensor:
    corners = torch.rand(b, r, 2, 2, generator=gen) * size
    return torch.cat([corners.min(dim=2).values, corners.max(dim=2).values], dim=-1)  # (B, R, 4)


# --- backbone -------------------------------------------------------------------------------------------


def test_b0_trunk_matches_the_paper_size_and_levels():
    net = EfficientNet(EfficientNetConfig())
    assert 3.4e6 <= _count(net) <= 3.8e6, _count(net)  # 5.3M B0 minus the 1.7M head conv + classifier
    assert net.feature_info == ((40, 8), (112, 16), (320, 32))


def test_trunk_outputs_follow_feature_info():
    cfg = tiny().tee.backbone
    net = EfficientNet(cfg).eval()
    with torch.no_grad():
        feats = net(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in feats] == [(2, c, 64 // s, 64 // s) for c, s in net.feature_info]


def test_unreachable_out_stride_is_a_config_error():
    with pytest.raises(ConfigError, match="64"):
        EfficientNet(replace(tiny().tee.backbone, out_strides=(8, 64)))


@pytest.mark.parametrize("size,kernel", [(16, 3), (16, 5), (15, 3), (15, 5)])
def test_conv_same_padding_is_tensorflow_same(size, kernel):
    conv = Conv2dSame(2, 2, kernel, 2, bias=False)
    x = torch.randn(1, 2, size, size)
    total = max((math.ceil(size / 2) - 1) * 2 + kernel - size, 0)  # TF: the extra pixel goes after
    want = F.conv2d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight, stride=2)
    assert torch.allclose(conv(x), want, atol=1e-6)
    assert conv(x).shape[-1] == math.ceil(size / 2)


# --- BiFPN ----------------------------------------------------------------------------------------------


def test_bifpn_topology_is_effdets_bifpn_config():
    # effdet `bifpn_config(min_level=3, max_level=7)`: (feat level, inputs_offsets), level 0 = P3.
    assert bifpn_nodes(5) == (
        (3, (3, 4)), (2, (2, 5)), (1, (1, 6)), (0, (0, 7)),
        (1, (1, 7, 8)), (2, (2, 6, 9)), (3, (3, 5, 10)), (4, (4, 11)),
    )


def test_paper_bifpn_size():
    net = BiFPN(BiFPNConfig(), ((40, 8), (112, 16), (320, 32)))
    assert 0.15e6 <= _count(net) <= 0.25e6, _count(net)


@pytest.mark.parametrize("size", [2, 4, 7, 8])
def test_max_pool_same_equals_minus_inf_padding(size):
    x = torch.randn(2, 3, size, size) - 5.0  # negative values: zero padding would be wrong here
    total = max((math.ceil(size / 2) - 1) * 2 + 3 - size, 0)
    padded = F.pad(x, (total // 2, total - total // 2) * 2, value=float("-inf"))
    assert torch.equal(max_pool_same(x), F.max_pool2d(padded, 3, 2))


def test_bifpn_levels_and_shapes():
    cfg = tiny().tee
    backbone = EfficientNet(cfg.backbone)
    neck = BiFPN(cfg.bifpn, backbone.feature_info).eval()
    with torch.no_grad():
        out = neck(backbone(torch.randn(1, 3, 128, 128)))
    assert [tuple(p.shape) for p in out] == [(1, 16, 128 >> lv, 128 >> lv) for lv in range(3, 8)]
    assert neck.feature_info == tuple((16, 2**lv) for lv in range(3, 8))


def test_bifpn_rejects_strides_that_are_not_its_levels():
    with pytest.raises(ConfigError, match="strides"):
        BiFPN(BiFPNConfig(), ((40, 4), (112, 16)))


# --- RPN ------------------------------------------------------------------------------------------------


def test_anchor_order_and_geometry():
    cfg = RPNConfig(anchor_sizes=(32.0, 64.0), aspect_ratios=(0.5, 1.0, 2.0))
    anchors, sizes = make_anchors(cfg, 32, min_level=3)
    assert sizes == (4 * 4 * 3, 2 * 2 * 3) and anchors.shape == (60, 4) and anchors.dtype == torch.float32
    # P3, row h=1, column w=2, ratio index 2 (h/w = 2): centre (20, 12), w = 32/sqrt2, h = 32*sqrt2.
    a = anchors[(1 * 4 + 2) * 3 + 2]
    half_w, half_h = 16 / math.sqrt(2), 16 * math.sqrt(2)
    assert torch.allclose(a, torch.tensor([20 - half_w, 12 - half_h, 20 + half_w, 12 + half_h]), atol=1e-5)
    # First anchor of P4: centre (8, 8), ratio 0.5 (wide), size 64.
    b = anchors[48]
    assert torch.allclose(b, torch.tensor([8 - 32 * math.sqrt(2), 8 - 32 / math.sqrt(2),
                                           8 + 32 * math.sqrt(2), 8 + 32 / math.sqrt(2)]), atol=1e-5)


def test_rpn_head_flattens_like_the_anchors():
    head = RPNHead(4, 3)
    feats = (torch.randn(2, 4, 3, 5), torch.randn(2, 4, 2, 2))
    objectness, deltas = head(feats)
    assert objectness.shape == (2, 3 * 5 * 3 + 2 * 2 * 3) and deltas.shape == (2, 57, 4)
    cls, box = head.cls_logits(feats[0]), head.bbox_pred(feats[0])
    h, w, a = 2, 4, 1
    idx = (h * 5 + w) * 3 + a
    assert torch.equal(objectness[1, idx], cls[1, a, h, w])
    assert torch.equal(deltas[1, idx], box[1, a * 4:a * 4 + 4, h, w])
    assert torch.equal(objectness[0, 45 + (1 * 2 + 0) * 3 + 2], head.cls_logits(feats[1])[0, 2, 1, 0])


def test_box_coder_by_hand():
    anchor = torch.tensor([0.0, 0.0, 10.0, 10.0])
    # centre (5, 5) moved by (0.1 * 10, 0.2 * 10), width doubled, height kept.
    want = torch.tensor([-4.0, 2.0, 16.0, 12.0])
    assert torch.allclose(BoxCoder((1, 1, 1, 1)).decode(torch.tensor([0.1, 0.2, math.log(2), 0.0]), anchor), want)
    coder = BoxCoder((10, 10, 5, 5))
    deltas = torch.tensor([1.0, 2.0, 5 * math.log(2), 0.0])
    assert torch.allclose(coder.decode(deltas, anchor), want, atol=1e-6)
    assert torch.allclose(coder.encode(want, anchor), deltas, atol=1e-6)
    huge = coder.decode(torch.tensor([0.0, 0.0, 100.0, 100.0]), anchor)  # dw clamped at log(1000/16)
    side = 10 * math.exp(BBOX_XFORM_CLIP)
    assert torch.allclose(huge, torch.tensor([5 - side / 2, 5 - side / 2, 5 + side / 2, 5 + side / 2]))


def test_box_coder_round_trip_broadcasts():
    gen = torch.Generator().manual_seed(0)
    refs = _sorted_boxes(gen, 1, 6, 100)[0] + torch.tensor([0, 0, 1.0, 1.0])
    boxes = _sorted_boxes(gen, 6, 3, 100) + torch.tensor([0, 0, 1.0, 1.0])  # (R, C, 4) class-specific
    coder = BoxCoder((10, 10, 5, 5))
    assert torch.allclose(coder.decode(coder.encode(boxes, refs[:, None]), refs[:, None]), boxes, atol=1e-3)


# --- box head -------------------------------------------------------------------------------------------


def test_paper_box_head_sizes():
    head = RoIBoxHead(RoIHeadConfig(), 64)
    assert head.fc6.in_features == 64 * 4 * 4 == 1024
    assert 2.0e6 <= _count(head.fc6) + _count(head.fc7) <= 2.2e6
    assert 8.0e6 <= _count(head.cls_score) + _count(head.bbox_pred) <= 8.4e6
    assert 1.2e6 <= _count(head.cls_embedding) + _count(head.fc_attr) + _count(head.attr_score) <= 1.4e6


def test_attribute_head_embeds_the_best_foreground_class():
    torch.manual_seed(0)
    head = RoIBoxHead(tiny().tee.roi_head, 16).eval()
    pooled = torch.randn(5, 16, 4, 4)
    feats, logits, deltas, attrs = head(pooled)
    logits_bg = logits.clone()
    best = logits_bg[:, 1:].argmax(dim=1) + 1
    embedded = head.cls_embedding(best)  # the gather the graph avoids
    want = head.attr_score(F.relu(head.fc_attr(torch.cat([feats, embedded], dim=1))))
    assert torch.allclose(attrs, want, atol=1e-6)
    assert deltas.shape == (5, 7 * 4) and feats.shape == (5, 32) and (best >= 1).all()


# --- TEE and its graphs -----------------------------------------------------------------------------------


def test_tee_state_dict_prefixes_and_anchor_buffer(tiny_tee):
    prefixes = {k.split(".")[0] for k in tiny_tee.state_dict()}
    assert prefixes == {"backbone", "bifpn", "rpn", "box_head"}
    assert tiny_tee.anchors.shape == (sum(tiny_tee.level_sizes), 4)
    assert tiny_tee.anchors.shape[0] == sum((128 >> lv) ** 2 * 3 for lv in range(3, 8))


def test_stage_graphs_shapes(tiny_tee):
    cfg = tiny_tee.cfg
    s1, s2 = tiny_tee.stage1(), tiny_tee.stage2()
    with torch.no_grad():
        out = s1(torch.randn(2, 3, 128, 128))
        assert s1.output_names == ("p3", "p4", "p5", "p6", "objectness", "deltas")
        assert [tuple(t.shape) for t in out[:4]] == [(2, 16, 128 >> lv, 128 >> lv) for lv in (3, 4, 5, 6)]
        n = tiny_tee.anchors.shape[0]
        assert out[4].shape == (2, n) and out[5].shape == (2, n, 4)
        boxes = _sorted_boxes(torch.Generator().manual_seed(0), 2, cfg.rpn.post_nms_top_n, 128)
        feats, logits, deltas, attrs = s2(*out[:4], boxes)
    r, roi = cfg.rpn.post_nms_top_n, cfg.roi_head
    assert feats.shape == (2, r, roi.representation_size)
    assert logits.shape == (2, r, roi.num_classes) and deltas.shape == (2, r, roi.num_classes * 4)
    assert attrs.shape == (2, r, roi.num_attributes)


def test_stage2_batch_equals_single_images(tiny_tee):
    gen = torch.Generator().manual_seed(3)
    levels = [torch.randn(2, 16, 128 >> lv, 128 >> lv, generator=gen) for lv in (3, 4, 5, 6)]
    boxes = _sorted_boxes(gen, 2, 9, 128)
    s2 = tiny_tee.stage2()
    with torch.no_grad():
        both = s2(*levels, boxes)
        second = s2(*(x[1:] for x in levels), boxes[1:])
    for a, b in zip(both, second):
        assert torch.allclose(a[1:], b, atol=1e-6)


def test_tee_features_are_stage1_levels(tiny_tee):
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        feats, out = tiny_tee.features(x), tiny_tee.stage1()(x)
    assert len(feats) == 5 and all(torch.equal(a, b) for a, b in zip(feats[:4], out[:4]))


def test_stage_graphs_export(tiny_tee):
    gen = torch.Generator().manual_seed(4)
    images = torch.randn(1, 3, 128, 128, generator=gen)
    s1, s2 = tiny_tee.stage1(), tiny_tee.stage2()
    ep1 = torch.export.export(s1, (images,), strict=False)
    with torch.no_grad():
        eager1 = s1(images)
        boxes = _sorted_boxes(gen, 1, tiny_tee.cfg.rpn.post_nms_top_n, 128)
        eager2 = s2(*eager1[:4], boxes)
    ep2 = torch.export.export(s2, (*eager1[:4], boxes), strict=False)
    got1, got2 = ep1.module()(images), ep2.module()(*eager1[:4], boxes)
    for a, b in zip((*got1, *got2), (*eager1, *eager2)):
        assert (a - b).abs().max() <= EXPORT_TOL
    forbidden = {"aten.index.Tensor", "aten.gather.default", "aten.grid_sampler_2d.default", "aten.nonzero.default"}
    used = {str(n.target) for ep in (ep1, ep2) for n in ep.graph.nodes if n.op == "call_function"}
    assert not used & forbidden, used & forbidden


@pytest.mark.slow
def test_paper_stage_graphs_export():
    tee = TEE(minivlm_paper().tee).eval()
    images = torch.randn(1, 3, 512, 512)
    ep1 = torch.export.export(tee.stage1(), (images,), strict=False)
    with torch.no_grad():
        out = ep1.module()(images)
    boxes = _sorted_boxes(torch.Generator().manual_seed(0), 1, 300, 512)
    torch.export.export(tee.stage2(), (*out[:4], boxes), strict=False)


def test_stage2_needs_four_pooled_levels():
    cfg = tiny().tee
    cfg = replace(cfg, roi_head=replace(cfg.roi_head, pooler_levels=(3, 4, 5)))
    with pytest.raises(ConfigError, match="4 pooled levels"):
        TEE(cfg).stage2()


# --- input checks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "images,message",
    [
        ([[0.0]], "is a list"),
        (torch.zeros(3, 128, 128), "rank 3"),
        (torch.zeros(1, 3, 128, 128, dtype=torch.float64), "torch.float64"),
        (torch.zeros(1, 3, 128, 128, dtype=torch.uint8), "torch.uint8"),
        (torch.zeros(1, 3, 96, 128), r"\(1, 3, 96, 128\), expected \(B, 3, 128, 128\)"),
        (torch.zeros(1, 4, 128, 128), r"\(1, 4, 128, 128\)"),
        (torch.zeros(0, 3, 128, 128), "B >= 1"),
        (torch.full((1, 3, 128, 128), float("nan")), "NaN"),
    ],
)
def test_check_images_names_the_problem(images, message):
    with pytest.raises(InputError, match=message):
        check_images(images, tiny().tee.image_size)


def test_check_images_accepts_a_good_batch():
    check_images(torch.zeros(2, 3, 128, 128), tiny().tee.image_size)


def test_check_boxes():
    check_boxes(torch.zeros(1, 32, 4), 1)
    with pytest.raises(InputError, match=r"\(1, 32, 5\)"):
        check_boxes(torch.zeros(1, 32, 5), 1)
    with pytest.raises(InputError, match="float16"):
        check_boxes(torch.zeros(1, 32, 4, dtype=torch.float16), 1)


@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (2, 3, 1, 1), (1, 64, 16, 16)])
def test_upsample_2x_is_nearest_interpolation_bit_for_bit(shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(shape[1]))
    assert torch.equal(upsample_2x(x), F.interpolate(x, scale_factor=2.0, mode="nearest"))


def test_exported_upsample_has_no_resize_node():
    """XNNPACK has no nearest resize: the exported graph holds only concatenations and reshapes."""

    class Up(torch.nn.Module):
        def forward(self, x):
            return upsample_2x(x)

    ops = {str(n.target) for n in torch.export.export(Up(), (torch.randn(1, 4, 3, 3),)).graph.nodes if n.op == "call_function"}
    assert not any("upsample" in op or "interpolate" in op for op in ops) and any("cat" in op for op in ops)

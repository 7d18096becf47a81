"""ExecuTorch int8: the PT2E flow of executorch's XNNPACK docs (`XNNPACKQuantizer`,
`torchao.quantization.pt2e.quantize_pt2e.prepare_pt2e/convert_pt2e`), per-channel symmetric weights, activations
per graph as `INT8_ACTIVATIONS` says, with the graph fixes XNNPACK's int8 kernels need. The backend is imported
inside functions only.
"""

from __future__ import annotations

import torch
from torch import nn

from .specs import GraphSpec

# Linear layers quantize dynamically per token (int8 weights per channel, activation ranges computed at run
# time: dynamic int8 MiniLM was measured at 0.038 max error). The RoI head too: calibrated static int8
# gave its attribute logits 29 dB PSNR and a worst-call cosine of 0.95 on the parity images, dynamic 44 dB and
# 0.993 (and converts in 28 s instead of 70). Static (calibrated on the int8 calibration photos and scenes)
# remains available per graph. tee_stage1 stays fp32 (FP32_PARTS): static int8 (per-channel min-max weights,
# histogram-observed activations calibrated on the build's 16 calibration images) runs fully delegated in XNNPACK
# (`_own_output_dequantize`), 35 dB PSNR at its worst output (p6; objectness 43 dB), but on the demo model's parity
# images no RPN proposal list stays the same (the objectness logits share one int8 scale across levels, so the
# top-k order changes), and on the photos (every scene agrees) that reaches the tags (2 of 4 photos: 92.9 %) and
# captions (3 of 4: 89.3 %), below the 95 % int8 agreement bars. It is not faster either: sigmoid has no int8 form
# in XNNPACKQuantizer's patterns nor in XNNPACK's partitioner (`SigmoidConfig`: fp32 only), and there are 48 (SiLU
# is x * sigmoid(x) in every MBConv and BiFPN node, and the squeeze-excite gates), so each runs in fp32 between a
# dequantize and a quantize (811 q/dq nodes around 87 convs)
# and the graph took 1.26x the fp32 graph's time (median of 5 interleaved rounds of 20 runs, 1 thread; 1.47x in
# another run). Keeping parts of it fp32 (the RPN head, the stem) would only add conversions, and XNNPACK rejects an
# fp32 conv that reads a dequantized output ("Weight and Input should both be quantized"); dynamic int8 convs (the
# TFLite build's dynamic-range scheme, 2.9x its fp32 tee_stage1 time there) lower but fail at execute in
# executorch 1.5.1 ("Propagating input shapes failed").
# Keyed by graph name, over every family's graphs (MiniVLM's six, then EfficientVLM's vision and text_feature:
# transformers like the fusion graphs; match, vqa and caption_step are names both families use; and the
# batched graphs, `Family.batched`).
INT8_ACTIVATIONS = {"tee_stage1": "fp32", "tee_stage2": "dynamic", "caption_prefix": "dynamic",
                    "caption_step": "dynamic", "vqa": "dynamic", "match": "dynamic",
                    "vision": "dynamic", "text_feature": "dynamic", "caption_step_beam": "dynamic"}

# What int8 leaves in fp32 on purpose, and why (recorded in the manifest). LayerNorm, softmax and attention
# matmuls are not in XNNPACKQuantizer's dynamic patterns (only conv/linear are) and run fp32 in every transformer
# graph. Embedding lookups read int8 tables (`_int8_lookups`).
FP32_PARTS = {
    "tee_stage1": "whole graph: static int8 runs in XNNPACK (35 dB PSNR) but costs the demo model 7 % of its tags "
                  "and 11 % of its captions on the parity images (95 % bars), and is slower than fp32 (SiLU and "
                  "sigmoid have no int8 pattern: each runs fp32 between dequantize and quantize)",
    "tee_stage2 RoIAlign": "its separable bilinear-sampling matmuls (dynamic int8 covers linear layers only)",
    "transformer graphs": "LayerNorm, softmax, attention matmuls (dynamic int8 covers linear layers only)",
}
# The graphs each of FP32_PARTS concerns, so that a manifest lists only the parts its build has.
_FP32_PART_GRAPHS = {"tee_stage1": {"tee_stage1"}, "tee_stage2 RoIAlign": {"tee_stage2"},
                     "transformer graphs": set(INT8_ACTIVATIONS) - {"tee_stage1", "tee_stage2"}}


def fp32_parts(graphs) -> dict[str, str]:
    """What int8 leaves in fp32 in a build of `graphs`, and why (the manifest's `quantization.fp32`)."""
    return {part: why for part, why in FP32_PARTS.items() if _FP32_PART_GRAPHS[part] & set(graphs)}


# Ops whose weights XNNPACK's int8 kernels take; every other op is annotated by the quantizer's own patterns
# (add, mul, cat, pooling) only when its inputs are activations, see `_is_activation_op`.
_WEIGHTED_OPS = ("conv1d", "conv2d", "linear", "embedding")


def _is_activation_op(node) -> bool:
    """False for an op that computes on, or reads, a 0-dim tensor: only the BiFPN's fusion-weight
    normalisation `relu(w) / (w.sum() + eps)` is left, which depends on weights alone and stays fp32."""
    values = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    return all(getattr(v, "ndim", 1) > 0 for v in values)


def _scalars_as_vectors(model) -> None:
    """View each 0-dim operand of a floating-point add/mul on a larger tensor as shape (1,) (same broadcast,
    same values): the BiFPN's `w[k] * feature`.

    Quantized, a 0-dim operand gets q/dq on a 0-dim tensor that XNNPACK's `ChannelsLastTaggedReshapePass`
    cannot index (it reads `val[0]`). Left fp32, the mul still reaches XNNPACK with its feature operand
    quantized (that feature is a conv output) and the scalar fp32, a mixed multiply that lowers but that
    XNNPACK refuses when the program loads ("Failed to create XNNMultiply node ... invalid_parameter").
    """
    graph = model.graph
    for node in list(graph.nodes):
        val = node.meta.get("val")
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor) \
                or val is None or not val.dtype.is_floating_point or val.ndim == 0:
            continue
        for arg in node.args:
            if isinstance(arg, torch.fx.Node) and getattr(arg.meta.get("val"), "ndim", None) == 0:
                with graph.inserting_before(node):
                    vector = graph.call_function(torch.ops.aten.view.default, (arg, [1]))
                vector.meta["val"] = arg.meta["val"].view(1)
                node.replace_input_with(arg, vector)
    model.recompile()


def _untie_weights(model) -> None:
    """Give every conv/linear/embedding its own `get_attr` node for a shared weight or bias.

    XNNPACK's conv/linear annotators skip an op whose weight node is already annotated, so of the RPN head's
    1x1 convs, shared by every pyramid level, only the first would be quantized; the others would then read
    the shared (quantized) weight with an fp32 input, which XNNPACK rejects ("Weight and Input should both be
    quantized"). Separate nodes for the same attribute let each op be annotated; the tensor is not copied. The
    word-embedding lookup and the MLM decoder tied to it get one node each, so each gets its own int8 weight
    (equal values, stored once by `executorch_weights.merge`).
    """
    graph = model.graph
    for node in list(graph.nodes):
        if node.op != "get_attr":
            continue
        users = [u for u in node.users if u.op == "call_function" and getattr(u.target, "_opname", None) in _WEIGHTED_OPS]
        for user in users[1:]:
            with graph.inserting_before(user):
                twin = graph.get_attr(node.target)
            twin.meta.update(node.meta)
            user.replace_input_with(node, twin)
    graph.lint()


def _lift_float_scalars(model) -> None:
    """Make the Python-number operand of a floating-point add/mul a 0-dim buffer, so the quantizer can
    observe it (XNNPACKQuantizer's own `transform_for_annotation` does this for every add/mul, integer ones
    too, so `arange(T) + first_position` became float position ids that `embedding` rejects)."""
    graph = model.graph
    for node in list(graph.nodes):
        val = node.meta.get("val")
        if node.op != "call_function" or node.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor) \
                or val is None or not val.dtype.is_floating_point:
            continue
        args = list(node.args)
        for i, arg in enumerate(args):
            if isinstance(arg, (int, float)) and not isinstance(arg, bool):
                name = f"_minivlm_scalar_{node.name}_{i}"
                model.register_buffer(name, torch.tensor(float(arg), dtype=val.dtype))
                with graph.inserting_before(node):
                    args[i] = graph.get_attr(name)
                args[i].meta["val"] = val.fake_mode.from_tensor(getattr(model, name), static_shapes=True)
        node.args = tuple(args)
    model.recompile()


def _quantizer(dynamic: bool):
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import XNNPACKQuantizer, get_symmetric_quantization_config

    class Quantizer(XNNPACKQuantizer):
        """XNNPACKQuantizer with the graph fixes of `_untie_weights`, `_lift_float_scalars`, `_scalars_as_vectors`."""

        def transform_for_annotation(self, model):
            _untie_weights(model)
            _lift_float_scalars(model)
            _scalars_as_vectors(model)
            return model

        def annotate(self, model):
            super().annotate(model)
            _annotate_lookups(model, config.weight)
            return model

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    return Quantizer().set_global(config).set_filter_function(_is_activation_op)


def _annotate_lookups(model, weight_spec) -> None:
    """Quantize every embedding lookup's table as XNNPACK's quantizer quantizes a linear layer's weight: int8
    per row (the table's axis 0, as a linear weight's output channels), symmetric, scale = max|row| / 127, by the
    same observer. The word embeddings' table is the tied MLM decoder's weight, so both become the same int8
    tensor and its scales, which the build's weights file then stores once."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    for node in model.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.embedding.default \
                and node.args[0].op == "get_attr" and "quantization_annotation" not in node.meta:
            node.meta["quantization_annotation"] = QuantizationAnnotation(input_qspec_map={node.args[0]: weight_spec},
                                                                          _annotated=True)


def _int8_lookups(model) -> None:
    """Turn each `dequantize_per_channel(int8 table) -> embedding` into ExecuTorch's `quantized_decomposed.
    embedding_byte` (its quantized kernels; XNNPACK has no lookup), which reads the int8 table and its row scales
    directly: the lookup then keeps no fp32 table. Zero points are all zero (symmetric) and passed as None."""
    from executorch.exir.passes import _quant_patterns_and_replacements  # noqa: F401  (defines embedding_byte)

    graph = model.graph
    dequantize = torch.ops.quantized_decomposed.dequantize_per_channel.default
    for node in list(graph.nodes):
        if node.op != "call_function" or node.target != torch.ops.aten.embedding.default:
            continue
        table = node.args[0]
        if not isinstance(table, torch.fx.Node) or table.target != dequantize:
            continue
        weight, scales, zero_points, axis, qmin, qmax, _ = table.args
        assert axis == 0 and not torch.any(_attribute(model, zero_points)), "embedding tables quantize per row, symmetric"
        with graph.inserting_before(node):
            lookup = graph.call_function(torch.ops.quantized_decomposed.embedding_byte.default,
                                         (weight, scales, None, qmin, qmax, node.args[1]))
        lookup.meta.update(node.meta)
        node.replace_all_uses_with(lookup)
        graph.erase_node(node)
        if not table.users:
            graph.erase_node(table)
        if not zero_points.users:  # else torch.export would still lift the unread zeros into the build
            graph.erase_node(zero_points)
            _delete_attribute(model, zero_points.target)
    model.recompile()


def quantized_module(spec: GraphSpec) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = INT8_ACTIVATIONS[spec.name] == "dynamic"
    captured = torch.export.export(spec.module, spec.example_inputs).module()
    prepared = prepare_pt2e(captured, _quantizer(dynamic))
    with torch.no_grad():
        for inputs in spec.calibration if not dynamic else spec.calibration[:1]:
            prepared(*inputs)
    converted = convert_pt2e(prepared)
    _int8_lookups(converted)
    _own_output_dequantize(converted)
    return converted


def _attribute(model, node) -> torch.Tensor:
    """The tensor a `get_attr` node reads."""
    value = model
    for name in node.target.split("."):
        value = getattr(value, name)
    return value


def _delete_attribute(model, target: str) -> None:
    owner, _, name = target.rpartition(".")
    delattr(model.get_submodule(owner) if owner else model, name)


def _own_output_dequantize(model) -> None:
    """Give each graph output that other ops also read its own dequantize node.

    XNNPACK's `ChannelsLastTaggedReshapePass` (executorch 1.5.1) converts a quantized output back to channels-first
    for the graph's output and, doing so, hands that converted copy to every other user of the dequantize as
    well; those were lowered for channels-last, and XNNPACK fails at execute ("Propagating input shapes failed
    ... xnn_status_invalid_parameter"). tee_stage1 returns p3..p6 and feeds them to the RPN head: the smallest
    case is `y = conv(x); return y, y.narrow(3, 3, 1)`. A separate dequantize per output keeps the two apart.
    """
    graph = model.graph
    output = graph.output_node()
    dequantize = torch.ops.quantized_decomposed.dequantize_per_tensor.default
    for node in list(output.args[0]):
        if isinstance(node, torch.fx.Node) and node.target == dequantize and len(node.users) > 1:
            with graph.inserting_after(node):
                twin = graph.call_function(node.target, node.args, node.kwargs)
            twin.meta.update(node.meta)
            output.replace_input_with(node, twin)
    model.recompile()



__all__ = ["FP32_PARTS", "INT8_ACTIVATIONS", "fp32_parts", "quantized_module"]

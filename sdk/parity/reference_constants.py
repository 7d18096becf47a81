"""The reference side of the weight audit (`weight_audit.py`): every tensor a build may legitimately store, by name.

- the parameters and buffers of the family's export graphs (`graphs(model)`), named as in the model (a tied
  weight is one tensor, one name);
- what `torch.export` and constant folding derive from them alone, per graph: every node of the exported
  program whose inputs are all constants, evaluated here in float32 (the BiFPN's normalised fusion weights,
  lifted scalars, masks, position ids); layout-only ops (view, permute, transpose, ...) keep their source's name;
  and the constant part of a re-associated sum, `(x + a) + b` -> `a + b` (`_reassociated_sum`);
- each convolution followed by an inference BatchNorm, folded as converters fold it (`torch.nn.utils.fusion
  .fuse_conv_bn_weights`): the weight and bias a build stores instead of the raw four BN vectors; the folded
  bias comes from the convolution's own bias too, when it has one (the BiFPN's pointwise convolutions).
Each entry knows the parameters it comes from (`sources`), so an audit can say which weights a build covers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

# Ops that only change a tensor's layout: their output is the same reference tensor.
_LAYOUT_OPS = {"view", "_unsafe_view", "reshape", "permute", "t", "transpose", "unsqueeze", "squeeze", "expand",
               "clone", "contiguous", "alias", "detach", "flatten", "view_copy", "permute_copy", "expand_copy",
               "lift_fresh_copy", "_assert_tensor_metadata"}

# Ops whose output depends only on their input's (static) shape.
_SHAPE_ONLY_OPS = {"zeros_like", "ones_like", "full_like", "new_zeros", "new_ones", "new_full"}


@dataclass
class RefTensor:
    """One reference tensor: `derived` False for a parameter or buffer, True for a value computed from them."""

    name: str
    values: np.ndarray
    derived: bool
    sources: set[str] = field(default_factory=set)
    graphs: set[str] = field(default_factory=set)


def reference_tensors(model: nn.Module, graphs: dict[str, nn.Module], batch: dict[str, int]) -> dict[str, RefTensor]:
    """Every reference tensor of `graphs` (name -> module) of `model`, keyed by name (see the module doc).
    `batch`: the batch size each graph was built with, for the example inputs of its export."""
    names = {}
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        names.setdefault(t.data_ptr(), name)
    table: dict[str, RefTensor] = {}
    derived_by_digest: dict[str, str] = {}
    for graph, module in graphs.items():
        module = module.eval()
        for _, t in [*module.named_parameters(), *module.named_buffers()]:
            name = names.get(t.data_ptr(), f"{graph}.{id(t)}")
            table.setdefault(name, RefTensor(name, _numpy(t), False, {name}))
        used, derived = _derived(module, batch.get(graph, 1), names)
        for name in used:
            if name in table:
                table[name].graphs.add(graph)
        for name, value, sources in derived:
            digest = hashlib.sha256(value.tobytes() + str(value.shape).encode()).hexdigest()
            key = derived_by_digest.setdefault(digest, f"{graph}: {name}")
            entry = table.setdefault(key, RefTensor(key, value, True, set()))
            entry.sources |= sources
            entry.graphs.add(graph)
    return table


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.float().numpy() if t.is_floating_point() else t.numpy()


def _derived(module: nn.Module, batch: int, names: dict[int, str]) -> tuple[set[str], list[tuple[str, np.ndarray, set[str]]]]:
    """The parameters and buffers the graph's export reads, and (name, value, parameter names) of every
    constant it derives from them alone."""
    with torch.no_grad():
        program = torch.export.export(module, module.example_inputs(batch))
    sig = program.graph_signature
    state = {**program.state_dict, **program.constants}
    lifted = {**sig.inputs_to_parameters, **sig.inputs_to_buffers, **sig.inputs_to_lifted_tensor_constants}
    env: dict[str, tuple[torch.Tensor, set[str], str]] = {}  # node -> (value, sources, name)
    out: list[tuple[str, np.ndarray, set[str]]] = []
    used: set[str] = set()
    for node in program.graph_module.graph.nodes:
        if node.op == "placeholder" and node.name in lifted:
            t = state[lifted[node.name]]
            name = names.get(t.data_ptr(), lifted[node.name])
            env[node.name] = (t, {name}, name)
            used.add(name)
            continue
        if node.op != "call_function":
            continue
        out += _fold_batch_norm(node, env)
        args = list(node.all_input_nodes)
        if getattr(node.target, "_opname", "") in _SHAPE_ONLY_OPS and args and args[0].name not in env:
            val = args[0].meta["val"]  # the output depends on the input's static shape only, not on its values
            stand_in = {args[0].name: (torch.zeros(val.shape, dtype=val.dtype), set(), "shape")}
            with torch.no_grad():
                value = node.target(*_resolve(node.args, stand_in), **_resolve(node.kwargs, stand_in))
            env[node.name] = (value, set(), f"{node.target._opname}()")
            out.append((f"{node.target._opname}()", _numpy(value), set()))
            continue
        if any(a.name not in env for a in args):
            out += _reassociated_sum(node, env)
            continue
        try:
            with torch.no_grad():
                value = node.target(*_resolve(node.args, env), **_resolve(node.kwargs, env))
        except Exception:  # an op that is not a pure function of its inputs here: not a constant
            continue
        sources = set().union(*(env[a.name][1] for a in args)) if args else set()
        op = getattr(node.target, "_opname", str(node.target))
        for i, v in enumerate(value if isinstance(value, (tuple, list)) else [value]):
            if not isinstance(v, torch.Tensor):
                continue
            key = node.name if i == 0 else f"{node.name}[{i}]"
            if op in _LAYOUT_OPS and len(args) == 1:
                env[key] = (v, sources, env[args[0].name][2])
                continue
            name = f"{op}({', '.join(env[a.name][2] for a in args)})"
            env[key] = (v, sources, name)
            out.append((name, _numpy(v), sources))
    return used, out


_ADDS = ("add.Tensor",)


def _reassociated_sum(node, env) -> list[tuple[str, np.ndarray, set[str]]]:
    """`(x + a) + b` with constants a and b and a computed x: the constant `a + b` a compiler folds when it
    re-associates the sum (Core AI's does, with an embedding sum: positions + token type 0)."""
    if str(getattr(node, "target", "")).removeprefix("aten.") not in _ADDS or len(node.args) != 2:
        return []
    inner, outer = node.args
    if not isinstance(outer, torch.fx.Node) or outer.name not in env:
        inner, outer = outer, inner
    if not (isinstance(inner, torch.fx.Node) and isinstance(outer, torch.fx.Node) and outer.name in env
            and str(inner.target).removeprefix("aten.") in _ADDS and len(inner.args) == 2):
        return []
    constant = [a for a in inner.args if isinstance(a, torch.fx.Node) and a.name in env]
    if len(constant) != 1 or any(k.get("alpha", 1) != 1 for k in (node.kwargs, inner.kwargs)):
        return []
    (a, sa, na), (b, sb, nb) = env[constant[0].name], env[outer.name]
    with torch.no_grad():
        value = a + b
    return [(f"add({na}, {nb})", _numpy(value), sa | sb)]


def _resolve(args, env):
    from torch.fx.node import map_arg

    return map_arg(args, lambda n: env[n.name][0])


def _fold_batch_norm(node, env) -> list[tuple[str, np.ndarray, set[str]]]:
    """The folded weight and bias of `conv -> batch norm (inference)` when every parameter is a constant."""
    op = getattr(node.target, "_opname", "")
    if op not in ("_native_batch_norm_legit_no_training", "batch_norm"):
        return []
    conv = node.args[0]
    if not isinstance(conv, torch.fx.Node) or getattr(conv.target, "_opname", "") not in ("conv2d", "convolution", "conv1d"):
        return []
    weight, bias = conv.args[1], conv.args[2] if len(conv.args) > 2 else None
    bn = node.args[1:5]
    eps = node.args[6] if op == "_native_batch_norm_legit_no_training" else node.args[7]
    if not isinstance(weight, torch.fx.Node) or weight.name not in env or any(
            not isinstance(a, torch.fx.Node) or a.name not in env for a in bn):
        return []
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    w, b = env[weight.name][0], env[bias.name][0] if isinstance(bias, torch.fx.Node) and bias.name in env else None
    gamma, beta, mean, var = (env[a.name][0] for a in bn)
    with torch.no_grad():
        fw, fb = fuse_conv_bn_weights(w, b, mean, var, eps, gamma, beta)
    # The folded weight is w * gamma / sqrt(var + eps); the folded bias (b - mean) * gamma / sqrt(var + eps) + beta
    # also carries the convolution's own bias (the BiFPN's pointwise convolutions have one), which no stored
    # constant holds on its own once folded.
    conv_bias = env[bias.name][1] if b is not None else set()
    gamma_var = env[bn[0].name][1] | env[bn[3].name][1]
    mean_beta = env[bn[1].name][1] | env[bn[2].name][1]
    name = env[weight.name][2]
    return [(f"batch-norm-folded {name}", _numpy(fw), env[weight.name][1] | gamma_var),
            (f"batch-norm-folded bias of {name}", _numpy(fb), conv_bias | gamma_var | mean_beta)]

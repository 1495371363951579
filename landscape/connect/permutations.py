"""Permutation symmetries of a network: which tensor axes move together when hidden units
are reordered, and how to apply a reordering.

A hidden unit of a layer is a row of its weight (and an entry of its bias and normalization
statistics) and a column of every weight that reads it; permuting all of them together
leaves the function unchanged. A :class:`PermutationSpec` lists, per permutable space (a
group), its size and its slots: ``(tensor name, axis, outer, inner)``, the axis of that size
``outer * size * inner`` seen as ``[outer, size, inner]`` and permuted in the middle (a
linear layer after a flatten of ``C x H x W`` maps reads ``[1, C, H*W]``; the attention's
fused ``qkv`` weight reads ``[3, heads, head_dim]``).

Specs come from three places (:func:`permutation_spec`):

- a model's own ``permutation_spec()`` method (the user's declaration);
- :func:`transformer_spec` for the zoo's transformer: attention heads and the MLP hidden
  units of each block, and the residual stream (LayerNorm is permutation-equivariant);
- otherwise :func:`derive_spec`, read off the ``torch.fx`` graph of the model on an example
  input: ``Linear`` and ``Conv2d`` (groups 1) start a space, BatchNorm and LayerNorm and
  element-wise functions (ReLU, pooling, dropout, ...) keep it, a flatten of image maps
  carries it with an ``inner`` stride, and an addition merges the spaces of its operands
  (the shared residual streams of the ResNets). Inputs, outputs and anything else (an
  unknown module or function, a reshape, a concatenation) fix the spaces that reach them,
  so a derived spec is never wrong, only possibly smaller than the true symmetry group.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.errors import LandscapeError


@dataclass(frozen=True)
class Slot:
    """Axis ``axis`` of tensor ``name`` seen as ``[outer, size, inner]``; the middle moves."""

    name: str
    axis: int
    outer: int = 1
    inner: int = 1


@dataclass
class PermGroup:
    """One permutable space: ``size`` units, the slots they move, and for activation matching
    the ``(name, inner)`` probes that carry these units: graph nodes' outputs (derived
    specs), or modules whose input holds them on its last axis as ``[..., size, inner]``
    (declared specs)."""

    size: int
    slots: list[Slot]
    probes: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class PermutationSpec:
    """Permutable spaces by name (in forward order); ``graph``: the traced module whose node
    outputs the probes name (derived specs only)."""

    groups: dict[str, PermGroup]
    graph: Any = None

    def identity(self) -> dict[str, Tensor]:
        return {g: torch.arange(p.size) for g, p in self.groups.items()}


def permute_tensor(t: Tensor, slot: Slot, size: int, perm: Tensor) -> Tensor:
    """``t`` with the units of ``slot`` reordered: new unit ``i`` is old unit ``perm[i]``."""
    axis = slot.axis % t.dim()
    if t.shape[axis] != slot.outer * size * slot.inner:
        raise LandscapeError(f"tensor {slot.name!r} axis {axis} has {t.shape[axis]} entries, "
                             f"not {slot.outer} x {size} x {slot.inner}")
    view = t.unflatten(axis, (slot.outer, size, slot.inner))
    return view.index_select(axis + 1, perm.to(t.device)).flatten(axis, axis + 2)


def permute_state(state: Mapping[str, Tensor], spec: PermutationSpec,
                  perms: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A new state dict (parameters and buffers) with every group's permutation applied."""
    out = dict(state)
    for g, group in spec.groups.items():
        for slot in group.slots:
            out[slot.name] = permute_tensor(out[slot.name], slot, group.size, perms[g])
    return out


def permute_model(model: nn.Module, spec: PermutationSpec,
                  perms: Mapping[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with its hidden units reordered by ``perms`` (same function)."""
    import copy

    new = copy.deepcopy(model)
    state = permute_state(new.state_dict(), spec, perms)
    new.load_state_dict(state)
    return new


def random_permutations(spec: PermutationSpec, seed: int = 0) -> dict[str, Tensor]:
    """One uniformly random permutation per group, drawn from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    return {g: torch.randperm(p.size, generator=gen) for g, p in spec.groups.items()}


# ------------------------------------------------------------------------ declared specs
def transformer_spec(model: nn.Module) -> PermutationSpec:
    """Spec of :class:`landscape.models.transformer.Transformer`: per block its MLP hidden
    units and its attention heads (whole heads move: the rows of q, k and v of a head and the
    matching columns of the output projection), and the residual stream of width ``d``; each
    with the modules whose input carries its units (activation matching)."""
    groups: dict[str, PermGroup] = {}
    d = model.tok.weight.shape[1]
    stream = [Slot("tok.weight", 1), Slot("pos.weight", 1), Slot("ln.weight", 0),
              Slot("ln.bias", 0), Slot("head.weight", 1)]
    probes: list[tuple[str, int]] = []   # the residual stream entering every LayerNorm
    for i, block in enumerate(model.blocks):
        p = f"blocks.{i}."
        heads = block.n_heads
        groups[f"{p}heads"] = PermGroup(heads, [
            Slot(f"{p}qkv.weight", 0, 3, d // heads), Slot(f"{p}qkv.bias", 0, 3, d // heads),
            Slot(f"{p}proj.weight", 1, 1, d // heads)], [(f"{p}proj", d // heads)])
        groups[f"{p}mlp"] = PermGroup(block.mlp[0].out_features, [
            Slot(f"{p}mlp.0.weight", 0), Slot(f"{p}mlp.0.bias", 0), Slot(f"{p}mlp.2.weight", 1)],
            [(f"{p}mlp.2", 1)])
        probes += [(f"{p}ln1", 1), (f"{p}ln2", 1)]
        stream += [Slot(f"{p}{n}", 0) for n in ("ln1.weight", "ln1.bias", "ln2.weight",
                                                 "ln2.bias", "proj.weight", "proj.bias",
                                                 "mlp.2.weight", "mlp.2.bias")]
        stream += [Slot(f"{p}qkv.weight", 1), Slot(f"{p}mlp.0.weight", 1)]
    groups["stream"] = PermGroup(d, stream, [*probes, ("ln", 1)])
    return PermutationSpec(groups)


# ------------------------------------------------------------------------ derived specs
_KEEP_MODULES = (nn.ReLU, nn.GELU, nn.Tanh, nn.Sigmoid, nn.SiLU, nn.ELU, nn.LeakyReLU,
                 nn.Dropout, nn.Identity, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_KEEP_FUNCTIONS = {F.relu, torch.relu, F.gelu, torch.tanh, torch.sigmoid, F.silu, F.elu,
                   F.leaky_relu, F.dropout, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d}
_KEEP_METHODS = {"relu", "tanh", "sigmoid"}
_MERGE = {operator.add, operator.iadd, operator.sub, operator.mul, torch.add, torch.mul}
_FIXED = 0


class _Spaces:
    """Union-find over feature spaces; space 0 is fixed (never permuted)."""

    def __init__(self) -> None:
        self.parent: list[int] = [0]
        self.size: list[int] = [0]

    def new(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a == b:
            return a
        if a == _FIXED or b == _FIXED or self.size[a] != self.size[b]:
            self.parent[a] = self.parent[b] = _FIXED
            return _FIXED
        self.parent[b] = a
        return a


def derive_spec(model: nn.Module, example: Tensor) -> PermutationSpec:
    """The permutation spec of ``model`` read from its ``torch.fx`` graph on ``example`` (a
    batch of inputs); see the module docstring for the rules. Raises a LandscapeError when
    the model cannot be traced (declare a ``permutation_spec()`` method instead)."""
    from torch.fx import symbolic_trace
    from torch.fx.passes.shape_prop import ShapeProp

    try:
        gm = symbolic_trace(model)
        ShapeProp(gm).propagate(example)
    except Exception as err:  # fx raises many types; the user gets one line
        raise LandscapeError(f"cannot derive the permutation structure of "
                             f"{type(model).__name__} ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else ''}); give the model "
                             "a permutation_spec() method") from None
    spaces = _Spaces()
    slots: dict[int, list[Slot]] = {}
    probes: dict[int, list[tuple[str, int]]] = {}
    info: dict[str, tuple[int, int]] = {}   # node -> (space, inner) of its feature axis
    out_space: dict[str, int] = {}          # module -> the space of its output units
    modules = dict(gm.named_modules())
    attrs = {n.target for n in gm.graph.nodes if n.op == "get_attr"}

    def ndim(node: Any) -> int:
        meta = node.meta.get("tensor_meta") if hasattr(node, "meta") else None
        return len(meta.shape) if meta is not None and hasattr(meta, "shape") else -1

    def shape(node: Any) -> tuple[int, ...]:
        return tuple(node.meta["tensor_meta"].shape)

    def fix_inputs(node: Any) -> None:
        for a in node.all_input_nodes:
            if a.name in info:
                spaces.union(info[a.name][0], _FIXED)

    def add_slots(space: int, prefix: str, names: tuple[str, ...], axis: int, inner: int,
                  ) -> None:
        for n in names:
            t = getattr(modules[prefix], n, None) if prefix in modules else None
            if isinstance(t, Tensor):
                slots.setdefault(space, []).append(Slot(f"{prefix}.{n}", axis, 1, inner))

    for node in gm.graph.nodes:
        args = [a for a in node.args if isinstance(a, torch.fx.Node)]
        src = info.get(args[0].name) if args else None
        if node.op in ("placeholder", "get_attr"):
            info[node.name] = (_FIXED, 1)
            continue
        if node.op == "output":
            fix_inputs(node)
            continue
        result: tuple[int, int] | None = None
        if node.op == "call_module":
            m = modules[node.target]
            dims = ndim(args[0]) if args else -1
            if (isinstance(m, nn.Linear) and dims == 2 or isinstance(m, nn.Conv2d)
                    and m.groups == 1 and dims == 4) and src is not None:
                space_in, inner = src
                if spaces.find(space_in) != _FIXED:
                    slots.setdefault(space_in, []).append(Slot(f"{node.target}.weight", 1, 1,
                                                               inner))
                if node.target not in out_space:
                    out_space[node.target] = spaces.new(m.weight.shape[0])
                    add_slots(out_space[node.target], node.target, ("weight", "bias"), 0, 1)
                result = (out_space[node.target], 1)
            elif (isinstance(m, nn.BatchNorm1d) and dims == 2
                  or isinstance(m, nn.BatchNorm2d) and dims == 4
                  or isinstance(m, nn.LayerNorm) and dims == 2
                  and tuple(m.normalized_shape) == shape(args[0])[1:]) and src is not None:
                add_slots(src[0], node.target, ("weight", "bias", "running_mean",
                                                "running_var"), 0, src[1])
                result = src
            elif isinstance(m, _KEEP_MODULES) and dims in (2, 4):
                result = src
            elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
                result = _flattened(src, shape(args[0]))
        elif node.op == "call_function" and node.target in _KEEP_FUNCTIONS and ndim(node) in (
                2, 4) and ndim(args[0]) == ndim(node):
            result = src
        elif node.op == "call_method" and node.target in _KEEP_METHODS:
            result = src
        elif (node.op == "call_function" and node.target is torch.flatten
              or node.op == "call_method" and node.target == "flatten") and (
                list(node.args[1:]) + [node.kwargs.get("start_dim", 1)])[0] == 1 and len(
                node.args) <= 2 and not set(node.kwargs) - {"start_dim"}:
            result = _flattened(src, shape(args[0]))
        elif (node.op == "call_function" and node.target in _MERGE
              or node.op == "call_method" and node.target in ("add", "add_", "mul")):
            tensors = [a for a in args if ndim(a) >= 0]
            if all(shape(a) == shape(node) for a in tensors) and tensors and not node.kwargs \
                    and all(a.name in info for a in tensors):
                inners = {info[a.name][1] for a in tensors}
                merged = info[tensors[0].name][0]
                for a in tensors[1:]:
                    merged = spaces.union(merged, info[a.name][0])
                if len(inners) > 1:
                    merged = spaces.union(merged, _FIXED)
                result = (merged, inners.pop())
        if result is None:
            fix_inputs(node)
            result = (_FIXED, 1)
        info[node.name] = result
        if ndim(node) in (2, 4):
            probes.setdefault(result[0], []).append((node.name, result[1]))
    return _collect(spaces, slots, probes, attrs, gm)


def _flattened(src: tuple[int, int] | None, in_shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The feature space after flattening ``[N, C, H, W]`` maps: the same units, ``H*W``
    consecutive entries each; a flatten of ``[N, F]`` changes nothing."""
    if src is None:
        return None
    if len(in_shape) == 2:
        return src
    if len(in_shape) == 4:
        return src[0], src[1] * in_shape[2] * in_shape[3]
    return None


def _collect(spaces: _Spaces, slots: dict[int, list[Slot]],
             probes: dict[int, list[tuple[str, int]]], attrs: set, gm: Any) -> PermutationSpec:
    """Groups from the union-find roots: the slots of each non-fixed space, deduplicated,
    named by the first tensor whose output units they are."""
    merged: dict[int, list[Slot]] = {}
    nodes: dict[int, list[tuple[str, int]]] = {}
    for s, ss in slots.items():
        merged.setdefault(spaces.find(s), []).extend(ss)
    for s, ps in probes.items():
        nodes.setdefault(spaces.find(s), []).extend(ps)
    groups: dict[str, PermGroup] = {}
    for root in sorted(merged):
        if root == _FIXED:
            continue
        unique = list(dict.fromkeys(merged[root]))
        if any(sl.name.rsplit(".", 1)[0] in attrs or sl.name in attrs for sl in unique):
            continue  # a tensor also read directly by the forward: left in place
        name = next((sl.name.rsplit(".", 1)[0] for sl in unique if sl.axis == 0), unique[0].name)
        groups[name] = PermGroup(spaces.size[root], unique, nodes.get(root, []))
    return PermutationSpec(groups, gm)


def permutation_spec(model: nn.Module, example: Tensor | None = None) -> PermutationSpec:
    """The model's declared ``permutation_spec()``, the zoo transformer's, or one derived from
    its graph on ``example`` (a batch of inputs; needed for derived specs).

    Example:
        >>> import torch
        >>> from landscape.models import build_model
        >>> spec = permutation_spec(build_model("mlp", (64,), 10), torch.zeros(2, 64))
        >>> [g.size for g in spec.groups.values()]
        [100, 100]
    """
    from landscape.models.transformer import Transformer

    declared = getattr(model, "permutation_spec", None)
    if callable(declared):
        spec = declared()
        if not isinstance(spec, PermutationSpec):
            raise LandscapeError(f"{type(model).__name__}.permutation_spec() must return a "
                                 f"PermutationSpec, got {type(spec).__name__}")
        return spec
    if isinstance(model, Transformer):
        return transformer_spec(model)
    if example is None:
        raise LandscapeError(f"deriving the permutation structure of {type(model).__name__} "
                             "needs an example input batch")
    was = model.training
    model.eval()
    try:
        return derive_spec(model, example)
    finally:
        model.train(was)

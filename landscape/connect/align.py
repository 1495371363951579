"""Permutation alignment of one network to another: weight matching and activation matching
(Ainsworth et al. 2023, "Git Re-Basin: Merging Models modulo Permutation Symmetries").

Both reorder the hidden units of model B (:mod:`landscape.connect.permutations`) so that
they line up with model A's; the permuted B computes the same function as B.

- ``weights``: maximize ``sum_tensors <W_A, P W_B>`` over the permutations by coordinate
  descent: visit the groups in a random order, solve each group's linear assignment with the
  others held fixed (``scipy.optimize.linear_sum_assignment``), until a full pass improves
  nothing (Ainsworth et al.'s Algorithm 1; their cap of 100 passes kept). Only parameters
  enter the objective, not BatchNorm running statistics (as in the authors' code).
- ``activations``: for each group, the Pearson correlation between A's and B's units over
  the training data, summed over the graph nodes that carry the group's units (pre- and
  post-activation, every layer of a residual stream; the paper correlates post-activation
  outputs), then one linear assignment per group. A derived spec (a traceable model) names
  its graph nodes; a declared one (the transformer's: each MLP's hidden units after GELU,
  each attention's heads as they enter the output projection, the residual stream before
  every LayerNorm) names modules whose input carries the units on its last axis.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from landscape.connect.permutations import (
    PermutationSpec,
    Slot,
    permutation_spec,
    permute_model,
    permute_tensor,
)
from landscape.errors import LandscapeError

METHODS = ("weights", "activations")
MAX_PASSES = 100


@dataclass
class Alignment:
    """The result of :func:`align`: B permuted onto A, the permutations (new unit ``i`` of B
    is its old unit ``perms[g][i]``), the spec, the method and the number of passes."""

    model: nn.Module
    perms: dict[str, Tensor]
    spec: PermutationSpec
    method: str
    passes: int


def _unit_rows(t: Tensor, slot: Slot, size: int) -> Tensor:
    """``t`` as ``[size, -1]``: one row per unit of ``slot`` (every other entry a column)."""
    axis = slot.axis % t.dim()
    view = t.unflatten(axis, (slot.outer, size, slot.inner)).movedim(axis + 1, 0)
    return view.reshape(size, -1)


def weight_matching(state_a: Mapping[str, Tensor], state_b: Mapping[str, Tensor],
                    spec: PermutationSpec, seed: int = 0,
                    params: Iterable[str] | None = None) -> tuple[dict[str, Tensor], int]:
    """Permutations of B's units maximizing the summed inner product of A's and B's weights.

    Returns ``(perms, passes)``. ``params``: the tensors that enter the objective (default
    every slotted tensor). Cost per pass: one ``n x n`` assignment per group plus a product
    of each group's tensors, ``O(sum of parameters x unit counts)``.
    """
    keep = set(params) if params is not None else None
    a = {k: v.detach().double() for k, v in state_a.items()}
    b = {k: v.detach().double() for k, v in state_b.items()}
    uses: dict[str, list[tuple[str, Slot]]] = {}
    for g, group in spec.groups.items():
        for slot in group.slots:
            if keep is None or slot.name in keep:
                uses.setdefault(slot.name, []).append((g, slot))
    perms = spec.identity()
    order_gen = np.random.default_rng(seed)
    names = list(spec.groups)
    passes = 0
    for passes in range(1, MAX_PASSES + 1):  # noqa: B007 - the count is returned
        improved = False
        for g in order_gen.permutation(names):
            size = spec.groups[g].size
            cost = torch.zeros(size, size, dtype=torch.float64)
            for slot in spec.groups[g].slots:
                if slot.name not in uses:
                    continue
                wb = b[slot.name]
                for other, s2 in uses[slot.name]:  # B's other axes in their current order
                    if other != g:
                        wb = permute_tensor(wb, s2, spec.groups[other].size, perms[other])
                cost += _unit_rows(a[slot.name], slot, size) @ _unit_rows(wb, slot, size).T
            rows, cols = linear_sum_assignment(cost.numpy(), maximize=True)
            new = torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)
            old_value = cost[torch.arange(size), perms[g]].sum()
            new_value = cost[torch.arange(size), new].sum()
            if new_value > old_value + 1e-12 * max(1.0, abs(float(old_value))):
                perms[g] = new
                improved = True
        if not improved:
            break
    return perms, passes


@torch.no_grad()
def activation_matching(model_a: nn.Module, model_b: nn.Module, spec: PermutationSpec,
                        batches: Iterable[Tensor]) -> dict[str, Tensor]:
    """Permutations of B's units maximizing the summed correlation of A's and B's activations
    over ``batches`` of training inputs (each unit's samples: the batch and, for image maps,
    every pixel). Cost: one forward pass of each model over the batches."""
    missing = [g for g, group in spec.groups.items() if not group.probes]
    if missing:
        raise LandscapeError(f"activation matching needs the activations of every group; "
                             f"{missing[0]!r} declares none (use weight matching)")
    probed = {node: (g, inner) for g, group in spec.groups.items()
              for node, inner in group.probes}
    record = _graph_recorder(spec, probed) if spec.graph is not None else \
        _input_recorder(probed)
    sums: dict[str, list[Tensor]] = {}

    def features(out: Tensor, size: int, inner: int) -> Tensor:
        """``[samples, size]``: units in columns."""
        if out.dim() == 4:
            return out.movedim(1, -1).reshape(-1, size)
        return out.reshape(out.shape[0], size, inner).movedim(1, -1).reshape(-1, size)

    for x in batches:
        out_a, out_b = record(model_a, x), record(model_b, x)
        for node, (g, inner) in probed.items():
            size = spec.groups[g].size
            fa = features(out_a[node].double(), size, inner)
            fb = features(out_b[node].double(), size, inner)
            parts = [fa.shape[0], fa.sum(0), fb.sum(0), (fa * fa).sum(0), (fb * fb).sum(0),
                     fa.T @ fb]
            sums[node] = parts if node not in sums else [s + p for s, p in zip(sums[node],
                                                                                  parts)]
    perms = spec.identity()
    for g, group in spec.groups.items():
        corr = torch.zeros(group.size, group.size, dtype=torch.float64)
        for node, _ in group.probes:
            n, sa, sb, saa, sbb, sab = sums[node]
            cov = sab / n - torch.outer(sa / n, sb / n)
            std_a = (saa / n - (sa / n) ** 2).clamp_min(0).sqrt()
            std_b = (sbb / n - (sb / n) ** 2).clamp_min(0).sqrt()
            corr += cov / (torch.outer(std_a, std_b) + 1e-12)
        rows, cols = linear_sum_assignment(corr.numpy(), maximize=True)
        perms[g] = torch.as_tensor(cols[np.argsort(rows)], dtype=torch.long)
    return perms


def _graph_recorder(spec: PermutationSpec, probed: Mapping[str, Any]) -> Any:
    """``record(model, x) -> {node: output}``: the probed nodes of the spec's traced graph."""
    from torch.fx import GraphModule, Interpreter

    class Recorder(Interpreter):
        def __init__(self, module: nn.Module) -> None:
            super().__init__(module)
            self.outputs: dict[str, Tensor] = {}

        def run_node(self, n):  # noqa: ANN001, ANN201 - fx's signature
            out = super().run_node(n)
            if n.name in probed:
                self.outputs[n.name] = out
            return out

    def record(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        rec = Recorder(GraphModule(model, spec.graph.graph).eval())
        rec.run(x)
        return rec.outputs
    return record


def _input_recorder(probed: Mapping[str, Any]) -> Any:
    """``record(model, x) -> {module: input as [samples, features]}``: the inputs of the
    probed modules of a declared spec (units on the last axis), by forward pre-hooks."""
    def record(model: nn.Module, x: Tensor) -> dict[str, Tensor]:
        modules = dict(model.named_modules())
        unknown = [name for name in probed if name not in modules]
        if unknown:
            raise LandscapeError(f"the permutation structure probes module {unknown[0]!r}, "
                                 f"which {type(model).__name__} does not have")
        outputs: dict[str, Tensor] = {}
        hooks = [modules[name].register_forward_pre_hook(
            lambda _m, inputs, name=name: outputs.__setitem__(
                name, inputs[0].reshape(-1, inputs[0].shape[-1]))) for name in probed]
        was = model.training
        try:
            model.eval()(x)
        finally:
            model.train(was)
            for h in hooks:
                h.remove()
        return outputs
    return record


def align(model_a: nn.Module, model_b: nn.Module, *, method: str = "weights",
          data: Tensor | Iterable[Tensor] | None = None, spec: PermutationSpec | None = None,
          seed: int = 0) -> Alignment:
    """B with its hidden units permuted to line up with A's (same function as B).

    ``data``: training inputs, a tensor or an iterable of input batches; needed by
    ``method="activations"`` and to derive the permutation structure of a model that does
    not declare one (the first batch is the example). ``spec``: a declared structure
    (:class:`landscape.connect.permutations.PermutationSpec`). ``seed``: the order in which
    weight matching visits the groups.

    Example:
        >>> import torch
        >>> from landscape.models import build_model
        >>> a, b = (build_model("mlp", (64,), 10, widths=[16]) for _ in range(2))
        >>> out = align(a, b, data=torch.randn(8, 64))
        >>> torch.allclose(out.model(torch.ones(1, 64)), b(torch.ones(1, 64)), atol=1e-6)
        True
    """
    if method not in METHODS:
        from landscape.errors import unknown_name

        raise unknown_name("alignment", method, METHODS)
    batches = [data] if isinstance(data, Tensor) else (list(data) if data is not None else [])
    if spec is None:
        spec = permutation_spec(model_a, batches[0][:2] if batches else None)
    if method == "weights":
        params = dict(model_a.named_parameters())
        perms, passes = weight_matching(model_a.state_dict(), model_b.state_dict(), spec,
                                        seed=seed, params=params)
    else:
        if not batches:
            raise LandscapeError("activation matching needs training inputs (data=)")
        perms, passes = activation_matching(model_a, model_b, spec, batches), 1
    return Alignment(permute_model(model_b, spec, perms).eval(), perms, spec, method, passes)

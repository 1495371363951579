"""Parameter space of a model: a point is ONE flat tensor of length P.

The flat order is ``model.parameters()`` order, the order of
``torch.nn.utils.parameters_to_vector``. ``unflatten`` returns views (no copies) that
``torch.func.functional_call`` takes, so all linear algebra works on flat tensors while
per-filter operations work through views.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from landscape.errors import LandscapeError

_NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
ROLES = ("weight", "bias", "norm")


@dataclass(frozen=True)
class ParamSpace:
    """Layout of a model's parameters in a flat vector.

    ``roles[i]`` is ``"norm"`` for the affine parameters of normalization layers, ``"weight"``
    for tensors of two or more dimensions, and ``"bias"`` for the other one-dimensional ones.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    roles: tuple[str, ...]

    @classmethod
    def from_model(cls, model: nn.Module) -> ParamSpace:
        norm_params = {
            id(p) for m in model.modules() if isinstance(m, _NORM_TYPES) for p in m.parameters()
        }
        names, shapes, roles = [], [], []
        for name, p in model.named_parameters():
            names.append(name)
            shapes.append(tuple(p.shape))
            if id(p) in norm_params:
                roles.append("norm")
            else:
                roles.append("weight" if p.dim() >= 2 else "bias")
        return cls(tuple(names), tuple(shapes), tuple(roles))

    @functools.cached_property
    def numels(self) -> tuple[int, ...]:
        return tuple(int(torch.Size(s).numel()) for s in self.shapes)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.numels:
            out.append(total)
            total += n
        return tuple(out)

    @functools.cached_property
    def numel(self) -> int:
        """P, the number of parameters."""
        return sum(self.numels)

    def flatten(self, params: nn.Module | Mapping[str, Tensor]) -> Tensor:
        """Flat copy of a model's (or a name -> tensor mapping's) parameters, shape [P]."""
        if isinstance(params, nn.Module):
            params = dict(params.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise LandscapeError(f"parameters missing: {', '.join(missing[:5])}")
        for name, shape in zip(self.names, self.shapes):
            if tuple(params[name].shape) != shape:
                raise LandscapeError(
                    f"tensor {name!r} has shape {tuple(params[name].shape)}, expected {shape}"
                )
        return torch.cat([params[n].detach().reshape(-1) for n in self.names])

    def check(self, theta: Tensor) -> None:
        """Raise a LandscapeError unless ``theta`` has last dimension P."""
        if theta.shape[-1] != self.numel:
            raise LandscapeError(
                f"vector of length {theta.shape[-1]} does not match the model's "
                f"{self.numel} parameters"
            )

    def unflatten(self, theta: Tensor) -> dict[str, Tensor]:
        """Name -> view of ``theta[..., P]`` with each parameter's shape (leading dims kept)."""
        self.check(theta)
        lead = tuple(theta.shape[:-1])
        # (split, not slices: its backward is one concatenation, not a zero-filled [P] per
        # tensor, which makes every Hessian-vector product's backward pass cheaper)
        return {name: part.view(*lead, *shape) for name, shape, part in
                zip(self.names, self.shapes, theta.split(self.numels, dim=-1))}

    def mask(self, *roles: str) -> Tensor:
        """Boolean [P] mask of the entries whose tensor has one of ``roles``."""
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise LandscapeError(f"unknown parameter role(s) {sorted(unknown)}; known: {ROLES}")
        return torch.cat([
            torch.full((n,), role in roles, dtype=torch.bool)
            for role, n in zip(self.roles, self.numels)
        ])

    def select(self, pattern: str) -> Tensor:
        """Boolean [P] mask of the tensors whose name contains ``pattern`` (e.g. ``"layer3"``)."""
        hits = [pattern in n for n in self.names]
        if not any(hits):
            raise LandscapeError(f"no parameter name contains {pattern!r}")
        return torch.cat([torch.full((n,), h, dtype=torch.bool) for h, n in zip(hits, self.numels)])

    def layout(self) -> dict[str, list]:
        """JSON-able description (names, shapes, roles) stored beside flat vectors in files."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes],
                "roles": list(self.roles)}

"""Directions in parameter space: random (filter-normalized), between solutions, PCA of a path.

Li, Xu, Taylor, Studer & Goldstein 2018, "Visualizing the Loss Landscape of Neural Nets":
a random Gaussian direction is rescaled filter by filter to the norms of the weights'
filters, so that plots of networks with different weight scales are comparable (and plots
of a ReLU network are unchanged by layer-wise rescalings that leave its function unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.errors import LandscapeError, unknown_name
from landscape.params import ParamSpace

NORMS = ("filter", "layer", "weight", "none")
IGNORES = ("biasbn", "none")


def normalize_direction(space: ParamSpace, direction: Tensor, theta: Tensor,
                        norm: str = "filter", ignore: str = "biasbn") -> Tensor:
    """Rescale ``direction[P]`` to the weights ``theta[P]`` (a new tensor).

    ``norm``: ``"filter"`` (each output filter of a conv, each row of a linear layer, gets the
    norm of the same filter of ``theta``), ``"layer"`` (each tensor gets its tensor's norm),
    ``"weight"`` (elementwise product with ``theta``) or ``"none"``.
    ``ignore="biasbn"`` zeroes the entries of biases and normalization parameters; with
    ``"none"`` they are kept and, as in Li et al.'s code, set equal to the parameters
    themselves (each scalar is its own filter), except for ``norm="none"``.
    """
    if norm not in NORMS:
        raise unknown_name("normalization", norm, NORMS)
    if ignore not in IGNORES:
        raise unknown_name("ignore option", ignore, IGNORES)
    space.check(direction)
    out = direction.clone()
    d_views, w_views = space.unflatten(out), space.unflatten(theta.to(out))
    for name, role in zip(space.names, space.roles):
        d, w = d_views[name], w_views[name]
        if role != "weight":
            if ignore == "biasbn":
                d.zero_()
            elif norm != "none":
                d.copy_(w)
        elif norm == "filter":
            d2, w2 = d.reshape(d.shape[0], -1), w.reshape(w.shape[0], -1)
            d2.mul_(w2.norm(dim=1, keepdim=True) / (d2.norm(dim=1, keepdim=True) + 1e-10))
        elif norm == "layer":
            d.mul_(w.norm() / (d.norm() + 1e-10))
        elif norm == "weight":
            d.mul_(w)
    return out


def random_direction(space: ParamSpace, theta: Tensor, seed: int, norm: str = "filter",
                     ignore: str = "biasbn") -> Tensor:
    """Seeded Gaussian direction [P], normalized by :func:`normalize_direction`.

    Drawn in float32 on the CPU from ``torch.Generator().manual_seed(seed)``, so the same seed
    gives the same direction on every device.
    """
    gen = torch.Generator().manual_seed(int(seed))
    raw = torch.randn(space.numel, generator=gen, dtype=torch.float32)
    return normalize_direction(space, raw.to(theta), theta, norm, ignore)


def orthogonalize(x: Tensor, y: Tensor) -> Tensor:
    """``y`` minus its projection on ``x`` (one Gram-Schmidt step, float64 inner products)."""
    coef = torch.dot(x.double(), y.double()) / torch.dot(x.double(), x.double())
    return (y.double() - coef * x.double()).to(y.dtype)


def cosine(x: Tensor, y: Tensor) -> float:
    """Cosine of the angle between two flat directions."""
    x, y = x.double(), y.double()
    return float(torch.dot(x, y) / (x.norm() * y.norm()))


@dataclass
class PCAPlane:
    """PCA plane of a training trajectory (Li et al. 2018, Sec. 7).

    ``directions[2, P]`` are the unit-norm first two principal components of the matrix of
    checkpoint differences to the final model; ``explained_variance_ratio[2]``; ``coords[T, 2]``
    the least-squares coordinates of each checkpoint on the plane through the final model,
    ``residuals[T]`` the norm of what the plane leaves out, ``relative_residuals[T]`` that
    divided by the checkpoint's distance to the final model.
    """

    directions: Tensor
    explained_variance_ratio: Tensor
    coords: Tensor
    residuals: Tensor
    relative_residuals: Tensor


def pca_directions(trajectory: Tensor, final: Tensor) -> PCAPlane:
    """PCA of ``trajectory[T, P] - final`` (centred, as scikit-learn's PCA in Li et al.'s code).

    Cost: one thin SVD of a T x P matrix in float64.
    """
    if trajectory.dim() != 2 or trajectory.shape[0] < 3:
        raise LandscapeError("a PCA plane needs at least 3 checkpoints besides the final model "
                             "(centring leaves T - 1 dimensions)")
    diffs = (trajectory - final).double()
    centred = diffs - diffs.mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    if not s[1] > 1e-10 * s[0]:
        raise LandscapeError("the trajectory's checkpoints lie on a line (or a point): it "
                             "spans fewer than 2 dimensions, so it has no PCA plane")
    directions = vh[:2]
    var = s**2
    ratio = var[:2] / var.sum()
    coords = torch.linalg.lstsq(directions.T, diffs.T).solution.T
    residuals = (diffs - coords @ directions).norm(dim=1)
    dist = diffs.norm(dim=1)
    rel = torch.where(dist > 0, residuals / dist.clamp_min(1e-300), torch.zeros_like(dist))
    return PCAPlane(directions.to(trajectory.dtype), ratio, coords, residuals, rel)

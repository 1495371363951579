"""Loss surfaces: directions, grids, and their resumable computation (Li et al. 2018)."""

from landscape.surface.api import interpolate, plane, random_surface, read_directions, trajectory
from landscape.surface.compute import Surface, compute_surface, load_surface
from landscape.surface.curvature import extent_for_rise, hessian_directions
from landscape.surface.directions import (
    PCAPlane,
    cosine,
    normalize_direction,
    orthogonalize,
    pca_directions,
    random_direction,
)
from landscape.surface.grid import parse_range

__all__ = [
    "PCAPlane", "Surface", "compute_surface", "cosine", "extent_for_rise",
    "hessian_directions", "interpolate", "load_surface",
    "normalize_direction", "orthogonalize", "parse_range", "pca_directions", "plane",
    "random_direction", "random_surface", "read_directions", "trajectory",
]

"""Export a 2D surface as VTK PolyData for ParaView renderings, as Li et al.'s ``h52vtp`` does.

Written by hand (no VTK dependency), ASCII, in either of VTK's two formats, chosen by the
suffix: ``.vtk`` the legacy format (``DATASET POLYDATA``), ``.vtp`` the XML PolyData format.
Each grid point becomes a point ``(x, y, z)`` with ``z`` the metric (optionally log10 and
clipped at ``zmax``) and the metric itself as point scalars; each grid cell a quadrilateral.
Cells touching a point that is not computed or not finite are left out (their points stay,
at ``z = 0``, referenced by no cell).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from landscape.errors import LandscapeError
from landscape.plot._inputs import as_surface, values

FORMATS = (".vtk", ".vtp")


def surface_mesh(surface: Any, metric: str = "train_loss", *, log: bool = False,
                 zmax: float | None = None, zscale: float = 1.0,
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points[N, 3], quads[M, 4], scalars[N])`` of a 2D surface; point index ``i * nx + j``
    for grid row ``i`` (y) and column ``j`` (x); quads counter-clockwise seen from +z."""
    s = as_surface(surface, ndim=2, what="a VTK export")
    v = values(s, metric)
    z = v.copy()
    if zmax is not None:
        z = np.minimum(z, zmax)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(z > 0, np.log10(z), np.nan)
    ok = np.isfinite(z)
    if not ok.any():
        raise LandscapeError(f"{s.path}: {metric!r} has no finite computed value to export")
    xx, yy = np.meshgrid(s.x, s.y)
    points = np.stack([xx.ravel(), yy.ravel(), np.where(ok, z * zscale, 0.0).ravel()], 1)
    ny, nx = v.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    quads = np.stack([idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]], -1).reshape(-1, 4)
    keep = ok.ravel()[quads].all(1)
    return points, quads[keep], v.ravel()


def _numbers(a: np.ndarray, fmt: str, per_line: int) -> str:
    flat = [fmt % x for x in np.asarray(a).ravel()]
    return "\n".join(" ".join(flat[i : i + per_line]) for i in range(0, len(flat), per_line))


def export_vtk(surface: Any, path: str | Path, *, metric: str = "train_loss",
               log: bool = False, zmax: float | None = None, zscale: float = 1.0) -> Path:
    """Write the surface's ``metric`` as ASCII VTK PolyData to ``path`` (.vtk or .vtp).

    ``log``: z = log10 of the metric (scalars stay the metric itself); ``zmax``: clip z
    (before the log) so a landscape's far walls do not dwarf the basin; ``zscale``:
    stretch z. Returns the path. Cost: O(grid size).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise LandscapeError(f"{path}: a VTK export is written as .vtk (legacy) or .vtp "
                             f"(XML), not {path.suffix or 'no suffix'!r}")
    points, quads, scalars = surface_mesh(surface, metric, log=log, zmax=zmax, zscale=zscale)
    scalars = scalars.astype(np.float64)
    from landscape.store import writing

    with writing(path, resumable=False):
        path.parent.mkdir(parents=True, exist_ok=True)
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in metric)
    if suffix == ".vtk":
        text = "\n".join([
            "# vtk DataFile Version 3.0",
            f"landscape {metric}{' (z = log10)' if log else ''}",
            "ASCII",
            "DATASET POLYDATA",
            f"POINTS {len(points)} double",
            _numbers(points, "%.9g", 3),
            f"POLYGONS {len(quads)} {5 * len(quads)}",
            "\n".join("4 " + " ".join(str(int(i)) for i in q) for q in quads),
            f"POINT_DATA {len(points)}",
            f"SCALARS {name} double 1",
            "LOOKUP_TABLE default",
            _numbers(scalars, "%.9g", 6),
            "",
        ])
    else:
        offsets = 4 * np.arange(1, len(quads) + 1)
        text = "\n".join([
            '<?xml version="1.0"?>',
            '<VTKFile type="PolyData" version="0.1" byte_order="LittleEndian">',
            "  <PolyData>",
            f'    <Piece NumberOfPoints="{len(points)}" NumberOfVerts="0" NumberOfLines="0" '
            f'NumberOfStrips="0" NumberOfPolys="{len(quads)}">',
            f'      <PointData Scalars="{name}">',
            f'        <DataArray type="Float64" Name="{name}" NumberOfComponents="1" '
            'format="ascii">',
            _numbers(scalars, "%.9g", 6),
            "        </DataArray>",
            "      </PointData>",
            "      <Points>",
            '        <DataArray type="Float64" NumberOfComponents="3" format="ascii">',
            _numbers(points, "%.9g", 3),
            "        </DataArray>",
            "      </Points>",
            "      <Polys>",
            '        <DataArray type="Int64" Name="connectivity" format="ascii">',
            _numbers(quads, "%d", 4),
            "        </DataArray>",
            '        <DataArray type="Int64" Name="offsets" format="ascii">',
            _numbers(offsets, "%d", 8),
            "        </DataArray>",
            "      </Polys>",
            "    </Piece>",
            "  </PolyData>",
            "</VTKFile>",
            "",
        ])
    from landscape.store import atomic_write

    atomic_write(path, text.replace("nan", "NaN").encode())
    return path


__all__ = ["export_vtk", "surface_mesh"]

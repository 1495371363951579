"""The `landscape` command line: each command parses its options and calls the Python API.

Data (``--json``) goes to stdout; progress bars and logs to stderr. User errors
(:class:`landscape.errors.LandscapeError`) become one-line ``click.ClickException``s (exit 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

import click

from landscape.errors import LandscapeError


class _Group(click.Group):
    """A click group that turns LandscapeError into a one-line error with exit code 1."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except LandscapeError as err:
            raise click.ClickException(str(err)) from None


@click.group(cls=_Group)
@click.version_option(package_name="landscape")
def main() -> None:
    """Loss-landscape analysis: train, measure and plot the geometry of minima."""
    from landscape.distributed import init_from_env

    init_from_env()  # under torchrun: one process group, ranks share the points or probes


def command_line() -> str:
    """The command line that invoked this process (stored in result files)."""
    return " ".join(["landscape", *sys.argv[1:]])



def engine_options(fn: Callable) -> Callable:
    """The evaluation-engine options shared by every command that measures a run."""
    options = [
        click.option("--bn", type=click.Choice(["eval", "recompute"]), default="eval",
                     show_default=True, help="BatchNorm statistics: running (eval) or recomputed."),
        click.option("--precision", type=click.Choice(["float64", "float32", "tf32", "bf16"]),
                     default="float32", show_default=True),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ..."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Samples per data chunk (default: whole split up to 4096 on CPU)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def engine_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop the engine options from a command's keyword arguments."""
    return {k: opts.pop(k) for k in ("bn", "precision", "device", "batch_size")}


def echo_json(obj: Any) -> None:
    """One JSON object on stdout."""
    click.echo(json.dumps(obj, indent=2, default=float))


def _surface_summary(surface: Any) -> dict[str, Any]:
    import numpy as np

    summary: dict[str, Any] = {
        "file": str(surface.path), "kind": surface.attrs.get("kind"),
        "shape": list(surface.done.shape), "done": int(surface.done.sum()),
        "total": int(surface.done.size), "nonfinite": surface.n_nonfinite,
        "cosine_xy": surface.attrs.get("cosine_xy")}
    for name, values in surface.values.items():
        finite = values[surface.done & np.isfinite(values)]
        summary[name] = {"center": surface.attrs.get(f"center_{name}"),
                         "min": float(finite.min()) if finite.size else None,
                         "max": float(finite.max()) if finite.size else None}
    return summary


def _report_surface(surface: Any, as_json: bool) -> None:
    summary = _surface_summary(surface)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['file']}: {summary['kind']} {'x'.join(map(str, summary['shape']))}, "
               f"{summary['done']}/{summary['total']} points done")
    for name, v in summary.items():
        if isinstance(v, dict) and "center" in v:
            click.echo(f"  {name:<12} centre {v['center']:.6g}  min {v['min']:.6g}  "
                       f"max {v['max']:.6g}")
    if summary["nonfinite"]:
        click.echo(f"  {summary['nonfinite']} non-finite values (far from the minimum)")


_grid_out = click.option("--out", type=click.Path(dir_okay=False), default=None,
                         help="HDF5 file (default: outputs/<run>_<kind>.h5).")
_overwrite = click.option("--overwrite", is_flag=True,
                          help="Replace an existing file computed with other settings.")
_json = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
_split = click.option("--split", default="train", show_default=True,
                      help="Comma-separated splits: train, test.")


@main.command("surface")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory (from `landscape train`).")
@click.option("--x", default="-1:1:51", show_default=True, help="Range MIN:MAX:NUM.")
@click.option("--y", default=None, help="Range MIN:MAX:NUM for a 2D surface (omit for 1D).")
@click.option("--norm", type=click.Choice(["filter", "layer", "weight", "none"]),
              default="filter", show_default=True)
@click.option("--ignore", type=click.Choice(["biasbn", "none"]), default="biasbn",
              show_default=True, help="Zero the direction on biases and norm parameters.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the x direction (y uses seed + 1).")
@click.option("--orthogonal", is_flag=True, help="Orthogonalize the y direction against x.")
@click.option("--dir-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reuse the directions stored in this surface file.")
@_split
@engine_options
@_grid_out
@_overwrite
@_json
def surface_cmd(run_dir: str, x: str, y: str | None, norm: str, ignore: str, seed: int,
                orthogonal: bool, dir_file: str | None, split: str, out: str | None,
                overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Filter-normalized 1D curve or 2D surface around a trained model (Li et al. 2018)."""
    from landscape.surface import random_surface

    result = random_surface(run_dir, x=x, y=y, norm=norm, ignore=ignore, seed=seed,
                            orthogonal=orthogonal, directions_from=dir_file, split=split,
                            out=out, overwrite=overwrite, command=command_line(),
                            **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("interpolate")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--to", "to_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="The second run directory.")
@click.option("--x", default="-0.5:1.5:101", show_default=True, help="Range of t.")
@_split
@engine_options
@_grid_out
@_overwrite
@_json
def interpolate_cmd(run_dir: str, to_dir: str, x: str, split: str, out: str | None,
                    overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Loss along the line from one solution (t=0) to another (t=1), buffers included."""
    from landscape.surface import interpolate

    result = interpolate(run_dir, to_dir, x=x, split=split, out=out, overwrite=overwrite,
                         command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("plane")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--through", nargs=2, type=click.Path(exists=True, file_okay=False),
              required=True, help="Two more run directories.")
@click.option("--x", default="-0.5:1.5:41", show_default=True)
@click.option("--y", default="-0.5:1.5:41", show_default=True)
@_split
@engine_options
@_grid_out
@_overwrite
@_json
def plane_cmd(run_dir: str, through: tuple[str, str], x: str, y: str, split: str,
              out: str | None, overwrite: bool, as_json: bool, **opts: Any) -> None:
    """The plane through three solutions: A at (0,0), B at (1,0), C at (0,1)."""
    from landscape.surface import plane

    result = plane(run_dir, *through, x=x, y=y, split=split, out=out, overwrite=overwrite,
                   command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("trajectory")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True)
@click.option("--x", default=None, help="Range MIN:MAX:NUM (default: the path's extent).")
@click.option("--y", default=None, help="Range MIN:MAX:NUM (default: the path's extent).")
@_split
@engine_options
@_grid_out
@_overwrite
@_json
def trajectory_cmd(run_dir: str, x: str | None, y: str | None, split: str, out: str | None,
                   overwrite: bool, as_json: bool, **opts: Any) -> None:
    """The training path on the PCA plane of its checkpoints, over the loss there."""
    from landscape.surface import trajectory

    result = trajectory(run_dir, x=x, y=y, split=split, out=out, overwrite=overwrite,
                        command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)
    if not as_json:
        evr = result.attrs.get("explained_variance_ratio")
        click.echo(f"  explained variance: {evr[0]:.1%} (x), {evr[1]:.1%} (y); "
                   f"largest relative residual off the plane "
                   f"{result.extras['path/relative_residuals'].max():.3g}")


@main.command("info")
@click.argument("file", type=click.Path(dir_okay=False))
@_json
def info_cmd(file: str, as_json: bool) -> None:
    """What a result file holds and how complete it is."""
    from landscape.store import describe

    info = describe(file)
    if as_json:
        echo_json(info)
        return
    click.echo(f"{file}: {info['kind']} (format {info['format_version']}, "
               f"created {info['created']})")
    if "done" in info:
        click.echo(f"  complete: {info['done']}/{info['total']} points")
    for name, shape in info["datasets"].items():
        click.echo(f"  {name:<32} {shape}")
    click.echo("  settings: " + json.dumps(info["settings"], default=str)[:2000])

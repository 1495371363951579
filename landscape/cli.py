"""The `landscape` command line: each command parses its options and calls the Python API.

Data (``--json``) goes to stdout; progress bars and logs to stderr. User errors
(:class:`landscape.errors.LandscapeError`) become one-line ``click.ClickException``s (exit 1).
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from landscape.errors import LandscapeError, LandscapeWarning
from landscape.version import __version__

DEFAULT_THREADS = 1  # CPU threads of the measuring commands: the table in benchmarks/README.md


@contextlib.contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """Click's usage errors (three lines, exit code 2) as one line with exit code 1, like every
    other user error; the line names the command and its ``-h``."""
    try:
        yield
    except click.UsageError as err:
        where = err.ctx.command_path if err.ctx is not None else "landscape"
        message = " ".join(err.format_message().split())
        raise click.ClickException(f"{where}: {message} (see '{where} -h')") from None


class _Command(click.Command):
    """Every command: ``-h``/``--help``, ``--threads`` (added where the command does not declare
    its own), one-line usage errors, and the process group under ``torchrun``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.own_threads = any(p.name == "threads" for p in self.params)
        if not self.own_threads:
            self.params.append(click.Option(
                ["--threads"], type=click.IntRange(min=1), default=DEFAULT_THREADS,
                show_default=True, help="CPU threads (more threads pay only for large models on "
                                        "an idle machine: benchmarks/README.md)."))

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        import os

        threads = None if self.own_threads else ctx.params.pop("threads")
        with _one_line_usage_errors():
            if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun
                from landscape.distributed import init_from_env

                init_from_env()  # one process group, ranks share the points or probes
            if threads is None:
                return super().invoke(ctx)
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                return super().invoke(ctx)
            finally:
                torch.set_num_threads(before)


class _Group(click.Group):
    """A click group that turns LandscapeError into a one-line error with exit code 1, and
    the library's warnings (a target loss not reached, an eigenvalue not converged) into one
    ``Warning: ...`` line each on stderr, every time they occur. Its commands are
    :class:`_Command`s; ``landscape`` alone prints the help."""

    command_class = _Command

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:
            with _one_line_usage_errors():
                return super().make_context(*args, **kwargs)
        except click.ClickException as err:
            if isinstance(err.__context__, click.exceptions.NoArgsIsHelpError):
                click.echo(self.get_help(err.__context__.ctx))
                raise click.exceptions.Exit(0) from None
            raise

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        with _one_line_usage_errors():
            return super().resolve_command(ctx, args)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["landscape.argv"] = list(args)  # for the line an interrupted command prints
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        import errno
        import warnings

        try:
            with warnings.catch_warnings():  # restores the filters and showwarning after
                warnings.simplefilter("always", LandscapeWarning)
                shown = warnings.showwarning

                def show(message: Any, category: Any, filename: str, lineno: int,
                         file: Any = None, line: Any = None) -> None:
                    if issubclass(category, LandscapeWarning):
                        click.echo(f"Warning: {message}", err=True)
                    else:
                        shown(message, category, filename, lineno, file, line)

                warnings.showwarning = show
                return super().invoke(ctx)
        except LandscapeError as err:
            raise click.ClickException(str(err)) from None
        except KeyboardInterrupt:
            raise click.ClickException(_interrupted(ctx.meta.get("landscape.argv", []))
                                       ) from None
        except OSError as err:  # a write the library did not wrap: still one line
            if err.errno not in (errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES,
                                 errno.EPERM, errno.EDQUOT):
                raise
            where = f"{err.filename}: " if err.filename else ""
            raise click.ClickException(f"cannot write: {where}{err.strerror}") from None


def _interrupted(argv: list[str]) -> str:
    """The line for a command stopped by Ctrl-C: what it kept (``--out``, which every
    command writes incrementally and atomically) and the command that continues it."""
    import shlex
    from pathlib import Path

    out = next((a.partition("=")[2] or (argv[i + 1] if i + 1 < len(argv) else "")
                for i, a in enumerate(argv) if a == "--out" or a.startswith("--out=")), None)
    again = [a for a in argv if a != "--overwrite"]  # rerunning must not start afresh
    if argv[:1] == ["train"] and "--resume" not in again:
        again.append("--resume")
    rerun = shlex.join(["landscape", *again])
    if out is not None and not Path(out).exists():
        return f"interrupted before anything was written to {out}; to start again: {rerun}"
    kept = f"in {out}" if out else "in its output"
    return f"interrupted; what was computed so far is kept {kept}; to continue: {rerun}"


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__)  # the distribution is torch-landscape
def main() -> None:
    """Loss-landscape analysis: train, measure and plot the geometry of minima."""


def command_line() -> str:
    """The command line that invoked this process (stored in result files)."""
    return " ".join(["landscape", *sys.argv[1:]])



def _parse_widths(text: str) -> list[int]:
    """``"100,100"`` -> ``[100, 100]``; ``""`` -> ``[]`` (a linear model)."""
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        widths = [0]
    if any(w <= 0 for w in widths):
        raise LandscapeError(f"--widths must be comma-separated positive integers, got {text!r}")
    return widths


def _parse_model_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``("depth=16", "widths=[64,64]")`` -> ``{"depth": 16, "widths": [64, 64]}``: values in
    the one syntax of recipes and ``--sweep`` (:func:`landscape.study.parse_value`)."""
    from landscape.study import parse_value

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LandscapeError(f"--model-option must be KEY=VALUE, got {pair!r}")
        options[key.strip()] = parse_value(value)
    return options


def _h5(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Refuse a result file whose name does not end in ``.h5``."""
    if value is not None and not value.endswith(".h5"):
        raise click.BadParameter(f"a result file ends in .h5, got {value!r}", ctx, param)
    return value


_model_option = click.option(
    "--model-option", "model_option", multiple=True, metavar="KEY=VALUE",
    help="A model option, e.g. widths=[64,64] or dropout=0.3 (values as in recipes); "
         "repeatable.")


# defaults as in landscape.training.trainer.train (repeated so `landscape --help` needs no torch)
@main.command("train")
@click.option("--model", default="mlp", show_default=True,
              help="Model name, or path/to/file.py:factory or package.module:factory.")
@click.option("--widths", default=None, help="MLP hidden widths, comma-separated [100,100].")
@_model_option
@click.option("--dataset", default="digits", show_default=True,
              help="digits, mnist, fashion-mnist, cifar10, cifar100, spirals, teacher, modadd.")
@click.option("--data-dir", default=None, help="Directory with the dataset's files.")
@click.option("--train-size", type=int, default=None, help="Use a subset of the train split.")
@click.option("--data", default=None, metavar="SPEC",
              help="Your own data instead of --dataset: file.py:factory or package.module:"
                   "factory returning (train, test) datasets or loaders.")
@click.option("--loss", default=None, metavar="SPEC",
              help="With --data: loss callable (output, target) [cross-entropy or MSE].")
@click.option("--forward-loss", default=None, metavar="SPEC",
              help="With --data: a hook (model, batch) returning the loss, instead of --loss.")
@click.option("--optimizer", default="momentum", show_default=True,
              help="sgd, momentum, nesterov, adagrad, rmsprop, adadelta, adam, adamw, lbfgs, "
                   "svrg, sag, sam, asam.")
@click.option("--lr", type=float, default=None,
              help="Learning rate (default per optimizer: 0.05 for momentum).")
@click.option("--momentum", type=float, default=None, help="Momentum (default per optimizer).")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (sgd, sam, asam).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True,
              help="L2 weight decay (decoupled for adamw).")
@click.option("--rho", type=float, default=None, help="SAM/ASAM radius [0.05 / 0.5].")
@click.option("--asam-scale", type=click.Choice(["all", "weights"]), default="all",
              show_default=True, help="ASAM: scale every tensor by |w|+eta, or only tensors "
                                      "named *weight* (the authors' code).")
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Samples per optimizer step.")
@click.option("--epochs", type=int, default=None, help="Epochs [20]; not with --steps.")
@click.option("--steps", type=int, default=None,
              help="Train exactly N optimizer steps instead of epochs.")
@click.option("--target-train-loss", type=float, default=None,
              help="Stop when the full train-split loss is <= L at two consecutive checks "
                   "(--epochs/--steps is the cap).")
@click.option("--target-check-every", type=int, default=None, metavar="K",
              help="Check the target loss every K optimizer steps [a quarter epoch].")
@click.option("--schedule", default="constant", show_default=True,
              help="constant, step, cosine (per iteration).")
@click.option("--warmup-epochs", type=int, default=0, show_default=True,
              help="Linear warm-up epochs before the schedule.")
@click.option("--step-size", type=int, default=None,
              help="Epochs between step decays [a third of the epochs].")
@click.option("--gamma", type=float, default=0.1, show_default=True,
              help="Step-decay factor.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initialization, the batches and the augmentation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:1.")
@click.option("--amp", is_flag=True, help="bf16 autocast (CUDA only).")
@click.option("--augment/--no-augment", default=None,
              help="Random crop + flip on the device [on for CIFAR].")
@click.option("--save-every", type=int, default=None,
              help="Checkpoint every N epochs (plus the first and the last) [1 up to 100 "
                   "epochs, then at most ~100 checkpoints].")
@click.option("--eval-every", type=click.IntRange(min=1), default=1, show_default=True,
              help="Evaluate train/test loss and accuracy every N epochs (plus the first "
                   "and the last); the other history rows hold none.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads [1 for tiny models, else torch's default].")
@click.option("--out", default=None, help="Run directory [outputs/runs/<name>].")
@click.option("--resume", is_flag=True, help="Continue from the run's last checkpoint.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--track", default=None,
              help="Measures recorded along the run in track.h5, e.g. "
                   "top_eigenvalue,trace,noise_scale.")
@click.option("--track-every", default="10", show_default=True,
              help="Measure every N steps (N, Nsteps) or epochs (Nepochs).")
@click.option("--track-subset", type=int, default=None,
              help="Training samples the measures use [all].")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
def train_cmd(widths: str | None, model_option: tuple[str, ...], as_json: bool,
              **kwargs: Any) -> None:
    """Train a model and keep a run directory (checkpoints, history, run.json)."""
    import time

    from landscape.sources import ACCURACY_UNIT
    from landscape.training import train

    options = _parse_model_options(model_option)
    if widths is not None:
        options["widths"] = _parse_widths(widths)
    t0 = time.perf_counter()
    run = train(model_options=options or None, **kwargs)
    last = run.history[-1]
    summary = {"run": str(run.path), "epochs": last["epoch"], "stopping": run.stopping,
               **{k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
               "accuracy_unit": ACCURACY_UNIT,
               "train_seconds": sum(r["seconds"] for r in run.history),
               "wall_seconds": time.perf_counter() - t0, "config": run.config}
    if as_json:
        echo_json(summary)
        return

    def acc(value: float | None) -> str:
        return "" if value is None else f" acc {value:.2%}"

    click.echo(f"{run.config['model']} on {run.config['dataset']}, {run.config['optimizer']} "
               f"lr {run.config['lr']:g}, {last['epoch']} epochs ({last['step']} steps, "
               + (f"stopped by {run.stopping['rule']}" if run.stopping["met"]
                  else "cap reached, target train loss NOT met") + "): train loss "
               f"{last['train_loss']:.4g}{acc(last['train_acc'])}, test loss "
               f"{last['test_loss']:.4g}{acc(last['test_acc'])} "
               f"({summary['wall_seconds']:.1f} s) -> {run.path}")


def trust_options(fn: Callable | None = None, *, model_option: bool = True) -> Callable:
    """``--trust-code`` (and ``--model SPEC``, repeatable): trust the user code recorded in the
    run directories or study files this command opens (see :mod:`landscape.trust`). Without
    them a recorded user factory is refused, never imported."""
    import functools

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, trust_code: bool, **kwargs: Any) -> Any:
            from landscape.trust import trusting

            named = (kwargs.pop("trusted_models", ()) if model_option
                     else (kwargs.get("model"), kwargs.get("data")))
            named = (*named, *kwargs.pop("trusted_data", ()), *kwargs.pop("trusted_losses", ()))
            with trusting([n for n in named if n], trust_all=trust_code):
                return fn(*args, **kwargs)

        run = click.option("--trust-code", is_flag=True,
                           help="Import the user code recorded in the run or study file.")(run)
        if model_option:
            run = click.option("--model", "trusted_models", multiple=True, metavar="SPEC",
                               help="The user model factory recorded in the run "
                                    "(file.py:factory), named again to trust it.")(run)
            run = click.option("--data", "trusted_data", multiple=True, metavar="SPEC",
                               help="The user data factory recorded in the run, named again "
                                    "to trust it.")(run)
            run = click.option("--loss", "trusted_losses", multiple=True, metavar="SPEC",
                               help="The user loss recorded in the run, named again to trust "
                                    "it.")(run)
        return run

    return decorate(fn) if fn is not None else decorate


_precision = click.option(
    "--precision", type=click.Choice(["float64", "float32", "tf32", "bf16"]), default="float32",
    show_default=True, help="Arithmetic of the evaluation (tf32: CUDA matmuls; bf16: losses "
                            "only, derivatives in float32).")
_one_split = click.option("--split", type=click.Choice(["train", "test"]), default="train",
                          show_default=True, help="The data split the measure is computed on.")


def engine_options(fn: Callable) -> Callable:
    """The evaluation-engine options shared by every command that measures a run."""
    options = [
        click.option("--bn", type=click.Choice(["eval", "recompute"]), default="eval",
                     show_default=True, help="BatchNorm statistics: running (eval) or recomputed."),
        _precision,
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ..."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Samples per data chunk (default: 128 for convolutional models on "
                          "the CPU, else the whole split up to 4096 on CPU)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def engine_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """Pop the engine options (and ``--strategy`` where a command has it) from a command's
    keyword arguments."""
    return {k: opts.pop(k) for k in ("bn", "precision", "device", "batch_size", "strategy")
            if k in opts}


_strategy = click.option("--strategy", type=click.Choice(["auto", "vmap", "loop"]),
                         default="auto", show_default=True,
                         help="Evaluation: one point at a time (loop), vmap over points, or "
                              "auto (loop on the CPU; vmap for models without convolutions "
                              "or BatchNorm on a GPU). Recorded in the file.")


def echo_json(obj: Any) -> None:
    """One strict JSON object on stdout (NaN and infinities as ``null``)."""
    from landscape.store import jsonable, strict_json

    text = json.dumps(jsonable(obj), default=float)  # numpy scalars and the like as floats
    click.echo(json.dumps(strict_json(json.loads(text)), indent=2, allow_nan=False))


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
    if surface is None:  # a rank other than 0 under torchrun: rank 0 reports
        return
    summary = _surface_summary(surface)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['file']}: {summary['kind']} {'x'.join(map(str, summary['shape']))}, "
               f"{summary['done']}/{summary['total']} points done")
    for name, v in summary.items():
        if isinstance(v, dict) and "center" in v:
            low, high, centre = (f"{v[k]:.6g}" if v[k] is not None else "n/a"
                                 for k in ("min", "max", "center"))
            click.echo(f"  {name:<12} centre {centre}  min {low}  max {high}")
    if summary["nonfinite"]:
        click.echo(f"  {summary['nonfinite']} non-finite values (far from the minimum)")


_grid_out = click.option("--out", type=click.Path(dir_okay=False), default=None, callback=_h5,
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
              default="filter", show_default=True,
              help="Scale each direction per filter, per layer, per weight, or not at all.")
@click.option("--ignore", type=click.Choice(["biasbn", "none"]), default="biasbn",
              show_default=True, help="Zero the direction on biases and norm parameters.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the x direction (y uses seed + 1).")
@click.option("--orthogonal", is_flag=True, help="Orthogonalize the y direction against x.")
@click.option("--dir-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Reuse the directions stored in this surface file.")
@click.option("--directions", default="random", show_default=True,
              help="Per axis: random or hessian (top eigenvectors, unit L2 norm), e.g. "
                   "hessian,random.")
@click.option("--hessian", "hessian_file", type=click.Path(exists=True, dir_okay=False),
              default=None, help="Read the eigenvectors from this `landscape hessian` file of "
                                 "the same run (default: compute them).")
@click.option("--rise", type=float, default=None,
              help="Choose each axis' extent [-T, T] so the loss rises by this much (nats) "
                   "above the centre; NUM of --x/--y is kept.")
@_split
@engine_options
@_strategy
@_grid_out
@_overwrite
@_json
@trust_options
def surface_cmd(run_dir: str, x: str, y: str | None, norm: str, ignore: str, seed: int,
                orthogonal: bool, dir_file: str | None, directions: str,
                hessian_file: str | None, rise: float | None, split: str, out: str | None,
                overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Filter-normalized 1D curve or 2D surface around a trained model (Li et al. 2018), or
    along the top Hessian eigenvectors."""
    from landscape.surface import random_surface

    result = random_surface(run_dir, x=x, y=y, norm=norm, ignore=ignore, seed=seed,
                            orthogonal=orthogonal, directions_from=dir_file, split=split,
                            out=out, overwrite=overwrite, command=command_line(),
                            directions=directions, hessian=hessian_file, rise=rise,
                            **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("interpolate")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory (from `landscape train`).")
@click.option("--to", "to_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="The second run directory.")
@click.option("--x", default="-0.5:1.5:101", show_default=True, help="Range of t.")
@_split
@engine_options
@_strategy
@_grid_out
@_overwrite
@_json
@trust_options
def interpolate_cmd(run_dir: str, to_dir: str, x: str, split: str, out: str | None,
                    overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Loss along the line from one solution (t=0) to another (t=1), buffers included."""
    from landscape.surface import interpolate

    result = interpolate(run_dir, to_dir, x=x, split=split, out=out, overwrite=overwrite,
                         command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("plane")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory (from `landscape train`).")
@click.option("--through", nargs=2, type=click.Path(exists=True, file_okay=False),
              required=True, help="Two more run directories.")
@click.option("--x", default="-0.5:1.5:41", show_default=True,
              help="Range MIN:MAX:NUM along B - A.")
@click.option("--y", default="-0.5:1.5:41", show_default=True,
              help="Range MIN:MAX:NUM along C - A.")
@_split
@engine_options
@_strategy
@_grid_out
@_overwrite
@_json
@trust_options
def plane_cmd(run_dir: str, through: tuple[str, str], x: str, y: str, split: str,
              out: str | None, overwrite: bool, as_json: bool, **opts: Any) -> None:
    """The plane through three solutions: A at (0,0), B at (1,0), C at (0,1)."""
    from landscape.surface import plane

    result = plane(run_dir, *through, x=x, y=y, split=split, out=out, overwrite=overwrite,
                   command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)


@main.command("trajectory")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory (from `landscape train`).")
@click.option("--x", default=None, help="Range MIN:MAX:NUM (default: the path's extent).")
@click.option("--y", default=None, help="Range MIN:MAX:NUM (default: the path's extent).")
@_split
@engine_options
@_strategy
@_grid_out
@_overwrite
@_json
@trust_options
def trajectory_cmd(run_dir: str, x: str | None, y: str | None, split: str, out: str | None,
                   overwrite: bool, as_json: bool, **opts: Any) -> None:
    """The training path on the PCA plane of its checkpoints, over the loss there."""
    from landscape.surface import trajectory

    result = trajectory(run_dir, x=x, y=y, split=split, out=out, overwrite=overwrite,
                        command=command_line(), **engine_kwargs(opts))
    _report_surface(result, as_json)
    if result is not None and not as_json:
        evr = result.attrs.get("explained_variance_ratio")
        click.echo(f"  explained variance: {evr[0]:.1%} (x), {evr[1]:.1%} (y); "
                   f"largest relative residual off the plane "
                   f"{result.extras['path/relative_residuals'].max():.3g}")


def _describe_run(folder: str) -> dict[str, Any]:
    """A run directory's record (run.json, the last history row, the checkpoints), read and
    checked as data: no model code is imported."""
    from pathlib import Path

    from landscape.runs import read_history, read_run_json

    path = Path(folder)
    record, history = read_run_json(path), read_history(path)
    return {"run": str(path), "status": record.get("status"), "config": record.get("config"),
            "num_parameters": record.get("num_parameters"),
            "stopping": record.get("stopping"), "last": history[-1] if history else None,
            "checkpoints": sorted(p.name for p in (path / "checkpoints").glob("*.pt"))}


def _cut(text: str, limit: int = 2000) -> str:
    """``text`` cut to at most ``limit`` characters at the end of an item (``, ``), never
    inside a word, with ``...`` when something was left out."""
    if len(text) <= limit:
        return text
    head = text[: limit - 4]
    return head[: head.rfind(", ") + 1 if ", " in head else len(head)] + " ..."


@main.command("info")
@click.argument("file", type=click.Path(exists=True))
@_json
def info_cmd(file: str, as_json: bool) -> None:
    """What a result file or run directory holds and how complete it is."""
    import os

    if os.path.isdir(file):
        run = _describe_run(file)
        if as_json:
            echo_json(run)
            return
        config, last = run["config"] or {}, run["last"] or {}
        click.echo(f"{file}: run ({run['status']}), {config.get('model')} on "
                   f"{config.get('dataset')}, {run['num_parameters']} parameters, "
                   f"{len(run['checkpoints'])} checkpoints")
        for key in ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc"):
            if isinstance(last.get(key), int | float):
                click.echo(f"  {key:<12} {last[key]:.6g}")
        click.echo("  config: " + _cut(json.dumps(config, default=str)))
        return
    from landscape.formats import describe

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


def _measure_options(fn: Callable) -> Callable:
    """Options shared by `landscape sharpness` and `landscape noise` (BatchNorm: eval mode)."""
    options = [
        click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False),
                     required=True, help="Run directory (from `landscape train`)."),
        _one_split,
        click.option("--subset", type=click.IntRange(min=1), default=None,
                     help="Use a fixed random subset of this many samples (drawn from --seed)."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the subset and of the measures' random draws."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ..."),
        _precision,
        click.option("--out", type=click.Path(dir_okay=False), default=None, callback=_h5,
                     help="Keep the results with their settings in this HDF5 file (.h5)."),
        _overwrite, _json]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _report_measures(results: dict[str, Any], as_json: bool) -> None:
    from landscape.analysis.measures import format_results

    if as_json:
        echo_json({name: res.to_dict() for name, res in results.items()})
    else:
        click.echo(format_results(results))


@main.command("sharpness")
@click.option("--measures", default="all", show_default=True,
              help="all, or comma-separated: epsilon_sharpness, adaptive_worst_l2, "
                   "adaptive_worst_linf, adaptive_average_l2, sam_sharpness, "
                   "pac_bayes_flatness, fisher_rao_norm.")
@click.option("--eps", type=float, default=None,
              help="Box size of Keskar et al.'s epsilon-sharpness (default: 1e-3, the "
                   "registry's, as in the study).")
@click.option("--rho", default=None,
              help="Radius of every rho-type measure, or name=value pairs "
                   "(default: adaptive_worst_l2=0.1, adaptive_worst_linf=0.002, "
                   "adaptive_average_l2=0.05, sam_sharpness=0.05).")
@click.option("--sharpness-batch-size", "batch_size", type=click.IntRange(min=1), default=None,
              help="Samples per batch m of the adaptive worst-case measures (Andriushchenko "
                   "et al.; default: 128, the registry's, as in the study).")
@_measure_options
@trust_options
def sharpness_cmd(run_dir: str, measures: str, eps: float | None, rho: str | None,
                  batch_size: int | None, split: str, subset: int | None, seed: int,
                  device: str, precision: str, out: str | None, overwrite: bool,
                  as_json: bool) -> None:
    """Sharpness and flatness measures of a run's final model, side by side."""
    from landscape.analysis.measures import MeasureSettings, measures_of_run, parse_rho

    given = {k: v for k, v in (("eps", eps), ("sharpness_batch_size", batch_size))
             if v is not None}   # else the registry's defaults
    settings = MeasureSettings(seed=seed, **given, **parse_rho(rho))
    results = measures_of_run(run_dir, measures, settings, kind="sharpness", split=split,
                              subset=subset, device=device, precision=precision, out=out,
                              overwrite=overwrite, command=command_line())
    _report_measures(results, as_json)


@main.command("noise")
@click.option("--noise-batch-size", "batch_size", type=click.IntRange(min=1), default=128,
              show_default=True,
              help="SGD batch size B (minibatch error, implicit regularizer, SNR).")
@click.option("--lr", type=float, default=0.1, show_default=True,
              help="SGD learning rate (implicit regularizer).")
@_measure_options
@trust_options
def noise_cmd(run_dir: str, batch_size: int, lr: float, split: str, subset: int | None,
              seed: int, device: str, precision: str, out: str | None, overwrite: bool,
              as_json: bool) -> None:
    """Gradient noise at a run's final model: covariance trace, noise scale, SGD's regularizer."""
    from landscape.analysis.measures import MeasureSettings, measures_of_run

    settings = MeasureSettings(noise_batch_size=batch_size, lr=lr, seed=seed)
    results = measures_of_run(run_dir, "all", settings, kind="noise", split=split,
                              subset=subset, device=device, precision=precision, out=out,
                              overwrite=overwrite, command=command_line())
    _report_measures(results, as_json)


@main.command("hessian")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="Run directory (from `landscape train`).")
@click.option("--top", type=click.IntRange(min=0), default=5, show_default=True,
              help="Number of largest eigenvalues.")
@click.option("--bottom", type=click.IntRange(min=0), default=1, show_default=True,
              help="Number of smallest (most negative) eigenvalues.")
@click.option("--trace", is_flag=True, help="Estimate the trace.")
@click.option("--trace-method", type=click.Choice(["hutchinson", "hutch++"]),
              default="hutch++", show_default=True,
              help="hutch++: a fixed HVP budget; hutchinson: probes until --trace-rtol.")
@click.option("--trace-rtol", type=float, default=1e-2, show_default=True,
              help="Hutchinson stops at this standard error relative to the estimate; "
                   "either method warns if its standard error is above it.")
@click.option("--max-probes", type=click.IntRange(min=1), default=None,
              help="Most trace HVPs (the fixed budget of hutch++) [hutch++: 150, "
                   "hutchinson: 1000].")
@click.option("--density", is_flag=True, help="Spectral density (stochastic Lanczos quadrature).")
@click.option("--density-probes", type=click.IntRange(min=1), default=10, show_default=True,
              help="Density: random start vectors (SLQ probes).")
@click.option("--density-steps", type=click.IntRange(min=1), default=80, show_default=True,
              help="Density: Lanczos steps per probe.")
@click.option("--sigma", type=float, default=0.01, show_default=True,
              help="Density broadening, relative to the spectrum width.")
@_one_split
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Use a fixed random subset of this many samples (drawn from --seed).")
@click.option("--operator", type=click.Choice(["hessian", "ggn"]), default="hessian",
              show_default=True, help="The Hessian or the generalized Gauss-Newton matrix.")
@click.option("--params", default=None,
              help="Restrict to the parameters whose name contains this (e.g. layer3).")
@click.option("--tol", type=float, default=1e-6, show_default=True,
              help="Lanczos: residual ||Hv - lambda v|| relative to |lambda|.")
@click.option("--max-iter", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Lanczos: most HVPs.")
@click.option("--block-size", "lanczos_block", type=click.IntRange(min=1), default=1,
              show_default=True, help="Block Lanczos: vectors per data pass.")
@click.option("--verify/--no-verify", default=None,
              help="Measure the residuals with float64 products [on below float64].")
@click.option("--no-eigenvectors", is_flag=True, help="Do not keep the eigenvectors.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the subset, the Lanczos start vectors and the probes.")
@engine_options
@click.option("--out", type=click.Path(dir_okay=False), required=True, callback=_h5,
              help="HDF5 file (.h5).")
@_overwrite
@_json
@trust_options
def hessian_cmd(run_dir: str, top: int, bottom: int, trace: bool, trace_method: str,
                trace_rtol: float, max_probes: int | None, density: bool, density_probes: int,
                density_steps: int, sigma: float, split: str, subset: int | None,
                operator: str, params: str | None, tol: float, max_iter: int,
                lanczos_block: int, verify: bool | None, no_eigenvectors: bool, seed: int, out: str,
                overwrite: bool, as_json: bool, **opts: Any) -> None:
    """Hessian eigenvalues (Lanczos), trace (Hutchinson / Hutch++) and spectral density."""
    from landscape.analysis.hessian import hessian_of_run

    if top == bottom == 0 and not (trace or density):
        raise LandscapeError("nothing to compute: --top and --bottom are 0 and neither "
                             "--trace nor --density is given")
    report = hessian_of_run(
        run_dir, split=split, subset=subset, out=out, overwrite=overwrite,
        command=command_line(), top=top, bottom=bottom, trace=trace, density=density,
        tol=tol, max_iter=max_iter, seed=seed, operator=operator, params=params,
        block_size=lanczos_block, verify=verify, trace_method=trace_method,
        trace_rtol=trace_rtol, max_probes=max_probes, density_probes=density_probes,
        density_steps=density_steps, sigma=sigma, eigenvectors=not no_eigenvectors,
        **engine_kwargs(opts))
    from landscape.distributed import rank_and_world

    if rank_and_world()[0] != 0:  # under torchrun rank 0 reports
        return
    summary = report.to_json()
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{out}: {operator} of {run_dir} ({split}), {summary['n_hvp']} HVPs")
    for name in ("top", "bottom"):
        for value, res, ok in zip(summary[f"eigenvalues_{name}"], summary[f"residuals_{name}"],
                                  summary[f"converged_{name}"]):
            click.echo(f"  {name:<6} {value: .8g}  residual {res:.2g}"
                       + ("" if ok else "  (not converged)"))
    if summary["trace"]:
        t = summary["trace"]
        err = "n/a" if t["stderr"] is None else f"{t['stderr']:.3g}"
        click.echo(f"  trace  {t['estimate']:.6g} +- {err} ({t['method']}, "
                   f"{t['n_probes']} probes)")
    if summary["density"]:
        d = summary["density"]
        click.echo(f"  density: {d['n_probes']} probes x {d['n_steps']} steps, nodes in "
                   f"[{d['min_node']:.4g}, {d['max_node']:.4g}]")


@main.command("toy")
@click.option("--function", "function", default="quadratic", show_default=True,
              help="quadratic, rosenbrock, beale, saddle, himmelblau, wide-narrow.")
@click.option("--kappa", type=float, default=None, help="Condition number (quadratic).")
@click.option("--eigenvalues", default=None, help="Comma-separated eigenvalues (n-D quadratic).")
@click.option("--dim", type=click.IntRange(min=1), default=None,
              help="Dimension (quadratic, rosenbrock).")
@click.option("--angle", type=float, default=0.0, help="Rotation in degrees (2D quadratic).")
@click.option("--optimizer", "optimizers", default="sgd,momentum,adam", show_default=True,
              help="Comma-separated optimizer names (as for `landscape train`).")
@click.option("--steps", type=click.IntRange(min=0), default=200, show_default=True,
              help="Optimizer steps per path.")
@click.option("--lr", default=None,
              help="Learning rate, or one per optimizer, comma-separated (default per function).")
@click.option("--momentum", type=float, default=None, help="For the optimizers that have one.")
@click.option("--rho", type=float, default=None, help="SAM/ASAM radius.")
@click.option("--noise", type=float, default=0.0, show_default=True,
              help="Std of the additive Gaussian gradient noise.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the gradient noise.")
@click.option("--start", default=None, help="Start point, comma-separated (default per function).")
@click.option("--tol", type=float, default=1e-6, show_default=True,
              help="Tolerance on f - f_min for the steps-to-tolerance count.")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/toy",
              show_default=True, help="Directory for paths.h5 and the figures.")
@click.option("--format", "formats", default="pdf,png", show_default=True,
              help="Figure formats: pdf, png, svg.")
@_overwrite
@_json
def toy_cmd(function: str, kappa: float | None, eigenvalues: str | None, dim: int | None,
            angle: float, optimizers: str, steps: int, lr: str | None, momentum: float | None,
            rho: float | None, noise: float, seed: int, start: str | None, tol: float, out: str,
            formats: str, overwrite: bool, as_json: bool) -> None:
    """Optimizer paths on an analytic test function: paths.h5, paths and losses figures."""
    from landscape.plot.style import check_formats
    from landscape.plot.toy import save_toy_figures
    from landscape.toy import parse_floats, run_toy

    fmts = check_formats([f.strip() for f in formats.split(",") if f.strip()])
    summary = run_toy(
        function, [o.strip() for o in optimizers.split(",") if o.strip()], out=out,
        kappa=kappa, eigenvalues=parse_floats(eigenvalues, "--eigenvalues"), dim=dim,
        angle=angle, steps=steps, lr=parse_floats(lr, "--lr"), momentum=momentum, rho=rho,
        noise=noise, seed=seed, start=parse_floats(start, "--start"), tol=tol,
        overwrite=overwrite, command=command_line())
    summary["files"] += [str(p) for p in save_toy_figures(summary["files"][0], out, fmts)]
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{function}: {', '.join(summary['files'])}")
    for label, s in summary["optimizers"].items():
        loss = "nan" if s["final_loss"] is None else f"{s['final_loss']:.6g}"
        reached = "never" if s["steps_to_tol"] is None else f"step {s['steps_to_tol']}"
        click.echo(f"  {label:<10} lr {s['lr']:.3g}  final loss {loss}  tol reached: {reached}")


@main.command("report")
@click.argument("path", type=click.Path(exists=True))
@click.option("--out", type=click.Path(dir_okay=False), default="report.html", show_default=True,
              help="The HTML page to write (self-contained: opens offline).")
def report_cmd(path: str, out: str) -> None:
    """Interactive HTML page of a surface, Hessian, track, toy or study file (or a run or
    study directory): 3D surfaces, contours with paths, curves, spectra, tables."""
    from landscape.report import write_report

    click.echo(str(write_report(path, out)))


@main.command("plot")
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option("--kind", type=click.Choice(["curve", "contour", "filled", "heatmap", "surface3d",
                                           "trajectory", "density", "ratio", "vtk", "compare",
                                           "track", "toy-paths", "toy-losses", "path",
                                           "curve-plane"]),
              default=None, help="Plot kind (default: from the file's kind).")
@click.option("--metric", default="train_loss", show_default=True,
              help="Dataset of a 2D surface to draw (train_loss, test_acc, ...).")
@click.option("--vmin", type=float, default=None, help="Lower end of the colour scale.")
@click.option("--vmax", type=float, default=None,
              help="Upper end of the colour scale (z clip for --kind vtk).")
@click.option("--levels", default=None, help="Number of contour levels, or the levels (a,b,c).")
@click.option("--log/--linear", "log", default=None,
              help="Log-spaced levels / log loss axis (default: log when the range is wide).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Figure file: .pdf, .png, .svg (or .vtk/.vtp for --kind vtk).")
@click.option("--animate", "animation", type=click.Path(dir_okay=False), default=None,
              help="Instead: animate a trajectory or 2D toy file's paths into this .gif/.mp4.")
@click.option("--frames", type=click.IntRange(min=2), default=60, show_default=True,
              help="Frames of the animation.")
@click.option("--duration", type=float, default=4.0, show_default=True,
              help="Seconds the animation lasts.")
def plot_cmd(files: tuple[str, ...], kind: str | None, metric: str, vmin: float | None,
             vmax: float | None, levels: str | None, log: bool | None, out: str | None,
             animation: str | None, frames: int, duration: float) -> None:
    """Draw a stored result (surface, interpolation, trajectory, Hessian, study, a run's
    track, a toy run's paths.h5) as a figure; several tracks (track.h5 files or run
    directories) are overlaid. --animate draws a path as it goes."""
    from landscape.plot.render import render

    if animation is not None:
        from landscape.plot.animation import animate

        if len(files) != 1:
            raise LandscapeError("--animate takes one trajectory or toy file")
        click.echo(str(animate(files[0], animation, frames=frames, duration=duration,
                               metric=metric)))
        return
    if out is None:
        raise LandscapeError("missing option --out (or --animate)")
    click.echo(str(render(files[0] if len(files) == 1 else files, out, kind=kind,
                          metric=metric, vmin=vmin, vmax=vmax, levels=levels, log=log)))


def _study_options(fn: Callable) -> Callable:
    """Options shared by `landscape compare` and `landscape demo` (None: file or default)."""
    options = [
        click.option("--seeds", default=None,
                     help="Training seeds of every recipe, e.g. 0,1,2 [0; demo 0,1,2]."),
        click.option("--match", default=None,
                     help="Stop every run at the same training loss (train-loss=0.02) or "
                          "step count (steps=4500) [none; demo train-loss=0.02]."),
        click.option("--sweep", multiple=True, metavar="OPTION=V1,V2,...",
                     help="Cross every recipe with these values of a train option (e.g. "
                          "lr=0.025,0.2 and batch_size=32,256). Repeatable."),
        click.option("--curve", default=None, help="1D range MIN:MAX:NUM [-1:1:41]."),
        click.option("--surface", default=None, help="2D range per axis [-1:1:21]."),
        click.option("--interpolation", default=None, help="Range of t [-0.5:1.5:41]."),
        click.option("--seed", type=int, default=None,
                     help="First direction seed and measure seed [0]."),
        click.option("--direction-seeds", type=click.IntRange(min=1), default=None,
                     help="Random directions per 1D curve [3]."),
        click.option("--checkpoints", type=click.IntRange(min=1), default=None,
                     help="Measure every model at this many consecutive checks ending at "
                          "its stop and report their mean [3]."),
        click.option("--workers", type=click.IntRange(min=1), default=None,
                     help="Train the runs in this many processes at once (CPU) [1; demo 2]."),
        click.option("--measures", default=None,
                     help="Comma-separated measures [top_eigenvalue,hessian_trace,"
                          "epsilon_sharpness,adaptive_worst_l2,adaptive_average_l2,"
                          "pac_bayes_flatness,noise_scale]."),
        click.option("--precision", type=click.Choice(["float64", "float32", "tf32", "bf16"]),
                     default=None, help="Evaluation precision [float32]."),
        click.option("--device", default=None, help="auto, cpu, cuda, ... [auto]."),
        click.option("--stability-steps", default=None, metavar="K1,K2,...",
                     help="Spawn children from every run at these optimizer steps and report "
                          "the barrier between them beside the measures (Frankle et al.'s "
                          "instability) [none: off]."),
        click.option("--stability-pairs", type=click.IntRange(min=1), default=None,
                     help="Pairs of children per run and spawn step [1]."),
        _overwrite, _json,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _report_study(study: Any, as_json: bool) -> None:
    from landscape.study import format_table

    if as_json:
        echo_json({"study": str(study.path), "figures": [str(p) for p in study.figures],
                   "seconds": study.seconds, "computed": study.computed,
                   "table": study.table})
        return
    click.echo(format_table(study.table))
    click.echo(f"\n{study.path.parent}: study.h5, table.md, table.json, "
               f"{', '.join(p.name for p in study.figures)} ({study.seconds:.0f} s)")


@main.command("compare")
@click.option("--recipe", "recipes", multiple=True, metavar="NAME=OPTIONS",
              help="A model to train: NAME=batch_size=32,lr=0.1,optimizer=sgd,epochs=20 "
                   "(keys: `landscape.train` arguments). Repeat for each model.")
@click.option("--recipes", "recipe_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file of [recipes.NAME] tables (and study settings).")
@click.option("--run", "runs", multiple=True, metavar="NAME=DIR",
              help="An already trained run directory. Repeatable.")
@click.option("--dataset", "data", default=None,
              help="Dataset of the recipes [digits], or your own: file.py:factory.")
@click.option("--data-dir", default=None, help="Folder of the dataset's files.")
@click.option("--model", default=None, help="Model of the recipes [mlp].")
@_model_option
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Train on a fixed subset of this many samples.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Study directory [outputs/compare].")
@_study_options
@trust_options(model_option=False)
def compare_cmd(recipes: tuple[str, ...], recipe_file: str | None, runs: tuple[str, ...],
                as_json: bool, **options: Any) -> None:
    """Train recipes (or take runs) and compare their minima: figure, tables, study.h5."""
    from landscape.plot.compare import save_comparison
    from landscape.study import study_from_options

    options["model_options"] = _parse_model_options(options.pop("model_option")) or None
    study = study_from_options(list(recipes), recipe_file, list(runs), **options)
    save_comparison(study)
    _report_study(study, as_json)


@main.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="outputs/demo",
              show_default=True, help="Study directory.")
@_study_options
def demo_cmd(out: str, as_json: bool, overwrite: bool, **options: Any) -> None:
    """SGD over learning rate x batch size on the embedded digits, every run stopped at the
    same training loss, three seeds: which minima are sharper, with 95% intervals."""
    from landscape.plot.compare import save_comparison
    from landscape.study import demo

    study = demo(out, overwrite=overwrite,
                 **{k: v for k, v in options.items() if v not in (None, ())})
    save_comparison(study)
    _report_study(study, as_json)


@main.command("curvature")
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True,
              help="The run whose model and data the surface was computed from.")
@click.option("--surface", "surface_file", type=click.Path(exists=True, dir_okay=False),
              required=True, help="A 2D surface file; the map is added to it.")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="Lanczos relative residual at each point.")
@_one_split
@click.option("--subset", type=click.IntRange(min=1), default=None,
              help="Use a fixed random subset of this many samples (drawn from --seed).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the subset and of the Lanczos start vectors.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@_precision
@_overwrite
@_json
@trust_options
def curvature_cmd(run_dir: str, surface_file: str, tol: float, split: str, subset: int | None,
                  seed: int, device: str, precision: str, overwrite: bool,
                  as_json: bool) -> None:
    """Largest and smallest Hessian eigenvalue at every point of a 2D surface (Li et al.
    2018, Fig. 7), stored in the surface file as hessian_max and hessian_min; resumable."""
    from landscape.analysis.hessian import curvature_map
    from landscape.objective import Objective
    from landscape.runs import load_run

    objective = Objective.from_run(load_run(run_dir), split=split, subset=subset, seed=seed,
                                   device=device, precision=precision)
    result = curvature_map(objective, surface_file, tol=tol, seed=seed, overwrite=overwrite)
    if result is None:  # a rank other than 0 under torchrun
        return
    summary = result.summary()
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['file']}: curvature map {summary['done']}/{summary['total']} points, "
               f"lambda_max in {summary['hessian_max']}, |lambda_min/lambda_max| in "
               f"{summary['abs_min_over_max']} ({summary['n_hvp']} HVPs)")



@main.command("connect")
@click.argument("run_a", type=click.Path(exists=True, file_okay=False))
@click.argument("run_b", type=click.Path(exists=True, file_okay=False))
@click.option("--align", type=click.Choice(["weights", "activations"]), default=None,
              help="Permute B's hidden units onto A's first (Ainsworth et al. 2023).")
@click.option("--curve", type=click.Choice(["bezier", "polychain"]), default=None,
              help="Train a curve from A to B (Garipov et al. 2018) instead of the line.")
@click.option("--curve-epochs", type=click.IntRange(min=1), default=20, show_default=True,
              help="Epochs of curve training.")
@click.option("--points", type=click.IntRange(min=2), default=25, show_default=True,
              help="Evenly spaced t in [0, 1], endpoints included.")
@click.option("--bn-stats", type=click.Choice(["reset", "interpolate"]), default="reset",
              show_default=True, help="BatchNorm statistics at each point: recomputed on the "
                                      "training data, or interpolated.")
@click.option("--split", default="train,test", show_default=True,
              help="Comma-separated splits: train, test.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Order of weight matching; curve initialization and t draws.")
@click.option("--plane", type=click.Path(dir_okay=False), default=None, callback=_h5,
              help="Also the plane through A, B and the curve's control point (HDF5).")
@click.option("--plane-points", type=click.IntRange(min=2), default=21, show_default=True,
              help="Points per side of the plane.")
@click.option("--figure", type=click.Path(dir_okay=False), default=None,
              help="Save the path (and plane) figure here (.pdf, .png, .svg).")
@_precision
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, ...")
@click.option("--out", type=click.Path(dir_okay=False), default="outputs/connect.h5",
              show_default=True, callback=_h5, help="HDF5 file of the path.")
@_overwrite
@_json
@trust_options
def connect_cmd(run_a: str, run_b: str, curve_epochs: int, split: str, plane: str | None,
                plane_points: int, figure: str | None, as_json: bool, **opts: Any) -> None:
    """Loss and error along the path between two runs and its barriers (Frankle et al.)."""
    from pathlib import Path

    from landscape.connect.barrier import connect_runs, curve_plane

    if plane and not opts["curve"]:
        raise LandscapeError("--plane needs --curve (a straight path spans no plane)")
    splits = tuple(s.strip() for s in split.split(","))
    path = connect_runs(run_a, run_b, split=splits, curve_options={"epochs": curve_epochs},
                   command=command_line(), **opts)
    summary = {"file": str(path.surface.path), "path": path.surface.attrs.get("path"),
               "align": opts["align"], "bn_stats": path.surface.attrs.get("bn_stats"),
               "barriers": path.barriers, "at_t": path.argmax}
    figures = []
    if plane:
        from landscape.runs import load_run

        run = load_run(run_a)
        surface = curve_plane(run.model, path.surface.path, data=run.data, out=plane,
                              points=plane_points,
                              overwrite=opts["overwrite"], precision=opts["precision"],
                              device=opts["device"])
        summary["plane"] = str(surface.path)
    if figure:
        from landscape.plot.connect import plot_curve_plane, plot_paths
        from landscape.plot.style import save_figure

        metric = f"{splits[-1]}_loss"
        figures.append(save_figure(plot_paths({summary["path"]: [path]}, metric=metric),
                                   figure))
        if plane:
            figures.append(save_figure(plot_curve_plane(plane), Path(figure).with_name(
                f"{Path(figure).stem}_plane{Path(figure).suffix}")))
        summary["figures"] = [str(f) for f in figures]
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['file']}: {summary['path']} path"
               + (f", aligned by {opts['align']}" if opts["align"] else "")
               + (f", BatchNorm {summary['bn_stats']}" if summary["bn_stats"] else ""))
    for name, value in path.barriers.items():
        click.echo(f"  barrier {name:<12} {value:.6g} at t = {path.argmax[name]:.3g}")
    for f in [summary.get("plane"), *summary.get("figures", [])]:
        if f:
            click.echo(f"  {f}")


@main.command("stability")
@click.option("--spawn", default="0,1,2,5", show_default=True,
              help="Comma-separated epochs (or steps) k at which children are spawned.")
@click.option("--spawn-unit", type=click.Choice(["epoch", "step"]), default="epoch",
              show_default=True, help="What k counts: epochs, or optimizer steps as Frankle "
              "et al. do.")
@click.option("--pairs", type=click.IntRange(min=2), default=3, show_default=True,
              help="Pairs of children per spawn point.")
@click.option("--model", default="mlp", show_default=True, help="Zoo model name.")
@click.option("--widths", default=None, help="MLP hidden widths, comma-separated [100,100].")
@click.option("--dataset", default="digits", show_default=True, help="Dataset name.")
@click.option("--data-dir", default=None, help="Directory with the dataset's files.")
@click.option("--optimizer", default="momentum", show_default=True, help="Optimizer.")
@click.option("--lr", type=float, default=None, help="Learning rate [per optimizer].")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Minibatch size.")
@click.option("--epochs", type=int, default=20, show_default=True,
              help="Epochs every child is trained to (the parent's included).")
@click.option("--seed", type=int, default=0, show_default=True, help="The parent's seed.")
@click.option("--points", type=click.IntRange(min=2), default=11, show_default=True,
              help="Points on each path between children.")
@click.option("--figure", type=click.Path(dir_okay=False), default=None,
              help="Save barrier against spawn point here (.pdf, .png, .svg).")
@click.option("--out", default="outputs/stability", show_default=True,
              help="Directory of the children's runs, paths and stability.json.")
@_json
def stability_cmd(spawn: str, spawn_unit: str, widths: str | None, figure: str | None,
                  as_json: bool, **opts: Any) -> None:
    """Instability analysis (Frankle et al. 2020): barrier between children spawned from one
    parent at epoch (or step) k that differ only in SGD noise, against k."""
    from landscape.connect.stability import instability

    try:
        at = [int(k) for k in spawn.split(",")]
    except ValueError:
        raise LandscapeError(f"--spawn takes comma-separated integers, got {spawn!r}") from None
    result = instability(opts.pop("out"), spawn_at=at, unit=spawn_unit,
                         model_options={"widths": _parse_widths(widths)} if widths is not None
                         else None,
                         **opts)
    summary = {"file": str(result.path), **result.to_dict()}
    if figure:
        from landscape.plot.connect import plot_stability
        from landscape.plot.style import save_figure

        summary["figure"] = str(save_figure(plot_stability(result), figure))
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{result.path}: test error barrier (%) by spawn {result.unit}, mean "
               f"[95% interval] over {result.settings['pairs']} pairs")
    for k, iv in zip(result.spawn_at, result.interval("test_error")):
        low, high = (f"{100 * v:.3g}" if v is not None else "n/a"
                     for v in (iv.ci_low, iv.ci_high))
        click.echo(f"  k = {k:<4} {100 * iv.mean:.3g} [{low}, {high}]")


@main.command("adopt")
@click.option("--model", required=True, metavar="NAME|SPEC",
              help="A zoo model (resnet56, vgg9, ...) or path/to/file.py:factory or "
                   "package.module:factory.")
@click.option("--weights", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Checkpoint (a state dict, {'state_dict': ...} or {'model': ...}).")
@click.option("--data", default=None, metavar="SPEC",
              help="Data factory returning (train, test) datasets or loaders.")
@click.option("--dataset", default=None, help="A built-in dataset instead of --data (as for "
                                              "train: digits, spirals, mnist, cifar10, ...).")
@click.option("--data-dir", default=None, type=click.Path(),
              help="Where a built-in dataset's files are (as for train).")
@click.option("--train-size", type=int, default=None,
              help="Training samples of a built-in dataset (default: all).")
@click.option("--loss", default=None, metavar="SPEC", help="Loss callable (output, target).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed recorded in the run (its data subsets and random draws).")
@click.option("--out", required=True, help="Run directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
def adopt_cmd(model: str, weights: str, data: str | None, dataset: str | None,
              data_dir: str | None, train_size: int | None, loss: str | None, seed: int,
              out: str, overwrite: bool) -> None:
    """Make a run directory for a model trained elsewhere (no training)."""
    from landscape.runs import adopt

    path = adopt(model, weights, data, out, loss=loss, seed=seed, overwrite=overwrite,
                 dataset=dataset, data_dir=data_dir, train_size=train_size)
    click.echo(f"adopted {weights} as run {path}", err=True)


if __name__ == "__main__":
    main()

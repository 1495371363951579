"""A training run on disk: the :class:`Run` record, :func:`load_run`, and atomic file writes.

A run directory holds::

    run.json                 configuration, dataset spec, model name/options, loss, versions
    model.pt                 final state_dict (parameters and buffers), CPU tensors
    history.json / .csv      one row per epoch (epoch 0 = initialization), with the
                             cumulative optimizer ``step`` count
    checkpoints/epoch_NNNN.pt  {"epoch", "model", "optimizer", "rng", "history", ...}
    checks/step_NNNNNNN.pt   {"step", "train_loss", "model"}: the weights at the last
                             checks of a target loss (``keep_checks``), the stop last

Every file is written to a temporary name and renamed into place (``os.replace``), so a
crash leaves either the old file or the new one, never a truncated one; only the history
files grow in place between checkpoints (:func:`write_history`). Checkpoints are
read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from landscape.errors import LandscapeError, LandscapeWarning
from landscape.store import atomic_write, strict_json, versions, writing

RUN_FORMAT = "landscape-run"
RUN_FORMAT_VERSION = 1
HISTORY_COLUMNS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc", "lr",
                   "seconds")
#: The history columns an evaluation fills: None in the rows of epochs that ``eval_every``
#: skips (null in history.json, empty in history.csv), as the test columns without a test split.
EVALUATED = ("train_loss", "train_acc", "test_loss", "test_acc")
CHECKPOINT_RE = re.compile(r"^epoch_(\d+)\.pt$")
CHECKS_DIR, CHECK_RE = "checks", re.compile(r"^step_(\d+)\.pt$")


def numbered_files(folder: Path, pattern: re.Pattern) -> list[tuple[int, Path]]:
    """(number, file) of the files in ``folder`` whose names ``pattern`` matches (its first
    group is the number), ascending; none without the folder."""
    return sorted((int(m.group(1)), f) for f in folder.iterdir()
                  if (m := pattern.match(f.name))) if folder.is_dir() else []


# ----------------------------------------------------------------------------- atomic writes
def atomic_write_json(path: Path, obj: Any, sync: bool = True) -> None:
    """Write ``obj`` as indented strict JSON (NaN and infinities as ``null``), atomically."""
    text = json.dumps(strict_json(obj), indent=2, allow_nan=False)
    atomic_write(path, (text + "\n").encode(), sync)


def atomic_torch_save(path: Path, obj: Any, sync: bool = True) -> None:
    """``torch.save`` ``obj`` to ``path``, atomically (``sync``: durably, see
    :func:`landscape.store.atomic_write`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue(), sync)


def fsync_files(files: Any) -> None:
    """Make the files now at the paths ``files`` durable (``fsync`` each; a path removed
    since it was written is skipped): the deferred half of writes made with ``sync=False``.
    The calls run side by side (threads), so that the filesystem's journal can commit them
    together instead of once a file."""
    def one(file: Path) -> None:
        with writing(file, resumable=False):
            try:
                fd = os.open(file, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    files = list(files)
    if len(files) <= 1:
        for file in files:
            one(file)
        return
    with ThreadPoolExecutor(min(len(files), 8)) as pool:
        for done in [pool.submit(one, f) for f in files]:
            done.result()


def write_history(path: Path, history: list[dict], sync: bool = True, new: int = 0) -> None:
    """Write ``history.json`` and ``history.csv`` in run directory ``path``: atomically, or
    with ``new`` > 0 by appending the last ``new`` rows to files that hold the others
    (O(new rows), same bytes as a rewrite; a kill inside the append damages the tail until a
    resume rewrites both files from the checkpoint, which holds the history). ``sync``:
    durably (see :func:`landscape.store.atomic_write`)."""
    json_file, csv_file = path / "history.json", path / "history.csv"
    if new and len(history) > new and _appendable(json_file, csv_file):
        rows = [json.dumps(strict_json(row), indent=2, allow_nan=False) for row in history[-new:]]
        text = "".join(",\n" + textwrap.indent(r, "  ") for r in rows) + "\n]\n"
        with writing(json_file, resumable=False), open(json_file, "r+b") as out:
            out.seek(-len(_JSON_TAIL), os.SEEK_END)
            _finish(out, text.encode(), sync)
        with writing(csv_file, resumable=False), open(csv_file, "ab") as out:
            _finish(out, _csv_rows(history[-new:], header=False), sync)
        return
    atomic_write_json(json_file, history, sync)
    atomic_write(csv_file, _csv_rows(history, header=True), sync)


_JSON_TAIL = b"\n]\n"   # how an indented non-empty JSON list written here ends


def _appendable(json_file: Path, csv_file: Path) -> bool:
    """Whether both history files exist and ``json_file`` ends as a written list does."""
    try:
        with open(json_file, "rb") as f:
            f.seek(-len(_JSON_TAIL), os.SEEK_END)
            return f.read() == _JSON_TAIL and csv_file.exists()
    except OSError:
        return False


def _finish(out: Any, data: bytes, sync: bool) -> None:
    """Write ``data`` at ``out``'s position, end the file there, and ``fsync`` if ``sync``."""
    out.write(data)
    out.truncate()
    out.flush()
    if sync:
        os.fsync(out.fileno())


def _csv_rows(history: list[dict], header: bool) -> bytes:
    """The CSV lines of ``history`` (columns :data:`HISTORY_COLUMNS`), the header if asked."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(HISTORY_COLUMNS), lineterminator="\n")
    if header:
        writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in HISTORY_COLUMNS})
    return buf.getvalue().encode()


def to_cpu(obj: Any) -> Any:
    """A nested dict/list/tuple structure with every tensor detached on the CPU, for state
    serialized at once: a CPU tensor is not copied (a view of the live one)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_cpu(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(to_cpu(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------- loading
def read_run_json(path: Path) -> dict:
    """Read and validate ``run.json`` of run directory ``path`` (one-line errors)."""
    path = Path(path)
    if not path.exists():
        raise LandscapeError(f"run directory {path} does not exist")
    if not path.is_dir():
        raise LandscapeError(f"{path} is not a run directory (it is a file)")
    file = path / "run.json"
    if not file.exists():
        raise LandscapeError(f"{path} is not a run directory (no run.json)")
    try:
        info = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise LandscapeError(f"{file} is damaged: {err}") from None
    check_run_json(file, info)
    return info


def write_run_json(path: Path, info: dict, sync: bool = True) -> None:
    """Write ``info`` as ``run.json`` of run directory ``path``, atomically (``sync``:
    durably), after the checks every reader makes (:func:`check_run_json`): a run writes only
    what it can read back."""
    check_run_json(Path(path) / "run.json", info)
    atomic_write_json(Path(path) / "run.json", info, sync)


def check_run_json(file: Path, info: Any) -> None:
    """The run.json format, version 1 (the one validator of its writer and its readers): a
    JSON object of format :data:`RUN_FORMAT`, a version this library reads, ``config``,
    ``model`` and ``dataset`` objects, an integer seed, and the records commands use."""
    if not isinstance(info, dict) or info.get("format") != RUN_FORMAT:
        raise LandscapeError(f"{file} is not a landscape run file (format {RUN_FORMAT!r})")
    version = info.get("format_version", RUN_FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise LandscapeError(f"{file} is damaged: format_version {version!r} is not a "
                             "positive integer")
    if version > RUN_FORMAT_VERSION:
        raise LandscapeError(f"{file}: run format version {version} is newer than this "
                             f"library's ({RUN_FORMAT_VERSION}); upgrade landscape")
    for key in ("config", "model", "dataset"):
        if not isinstance(info.get(key), dict):
            raise LandscapeError(f"{file} is damaged: {key!r} is missing or not an object")
    seed = info["config"].get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise LandscapeError(f"{file} is damaged: config has no integer 'seed' (got {seed!r})")
    _check_record(file, info)


def _check_record(file: Path, info: dict) -> None:
    """The parts of run.json that commands use, of the right JSON types (sizes are checked
    against their limits where they are used: :func:`landscape.models.build_model`)."""
    model = info["model"]
    checks = [
        ("model name", model.get("name"), isinstance(model.get("name"), str)),
        ("data_sizes", info.get("data_sizes"), info.get("data_sizes") is None or (
            isinstance(info["data_sizes"], dict) and all(
                isinstance(info["data_sizes"].get(k), int) for k in ("train", "test")))),
    ]
    if info["dataset"].get("user"):
        for kind in ("data", "loss", "forward_loss"):
            entry = info["dataset"].get(kind)
            checks.append((f"user {kind} record", entry, (entry is None and kind != "data") or (
                isinstance(entry, dict) and "name" in entry
                and isinstance(entry["name"], str | None))))
    for what, value, ok in checks:
        if not ok:
            raise LandscapeError(f"{file} is damaged: the {what} is {_short(value)}")


def _short(value: Any) -> str:
    """``repr(value)``, cut to 60 characters."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_history(path: Path) -> list[dict]:
    """The per-epoch history of run directory ``path`` ([] if none yet)."""
    file = Path(path) / "history.json"
    if not file.exists():
        return []
    try:
        rows = json.loads(file.read_text())
    except (OSError, ValueError) as err:
        raise LandscapeError(f"{file} is damaged: {err}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise LandscapeError(f"{file} is damaged: not a list of per-epoch records")
    return rows


def torch_load(file: Path) -> Any:
    """``torch.load(file, weights_only=True)`` onto the CPU, with one-line errors."""
    file = Path(file)
    if not file.exists():
        raise LandscapeError(f"checkpoint {file} does not exist")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a damaged file
        text = str(err).strip()
        if text.startswith("Weights only load failed"):
            # torch's advice (reload with weights_only=False) is not an option here, and unsafe
            found = [p for p in text.split("\n\n")[1:] if p.strip()
                     and "weights_only" not in p and not p.startswith("Check the documentation")]
            reason = " ".join(found[0].split()) if found else "objects other than tensors"
            raise LandscapeError(
                f"checkpoint {file} holds Python objects that are never unpickled here, since "
                f"that could run code ({reason}); save the state dict alone "
                "(torch.save(model.state_dict(), file))") from None
        msg = text.splitlines()[0] if text else type(err).__name__
        raise LandscapeError(f"checkpoint {file} cannot be read: {msg}") from None


def state_dict_of(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    """The model state_dict stored in ``obj`` (a checkpoint dict or a bare state_dict)."""
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and \
            ("epoch" in obj or "step" in obj):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LandscapeError(f"checkpoint {file} does not hold a model state_dict")
    return obj


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], file: Path | str) -> None:
    """Load ``state`` into ``model`` strictly; a mismatch names the tensor and both shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensor(s) {', '.join(repr(k) for k in missing[:3])}"
                         + (" ..." if len(missing) > 3 else ""))
        if unexpected:
            parts.append(f"unexpected tensor(s) {', '.join(repr(k) for k in unexpected[:3])}"
                         + (" ..." if len(unexpected) > 3 else ""))
        raise LandscapeError(f"checkpoint {file} does not fit the model: {'; '.join(parts)}")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise LandscapeError(
                f"checkpoint {file}: tensor {name!r} has shape {tuple(state[name].shape)}, "
                f"the model expects {tuple(tensor.shape)}")
        if state[name].dtype != tensor.dtype:
            raise LandscapeError(
                f"checkpoint {file}: tensor {name!r} holds {state[name].dtype}, the model "
                f"expects {tensor.dtype} (convert the checkpoint's tensors first, e.g. with "
                "tensor.float(), so that nothing is cast silently)")
    model.load_state_dict(state, strict=True)


def build_run_model(info: dict, source: str | Path, trust: bool = False) -> nn.Module:
    """A freshly initialised model as described by ``run.json`` (seeded like the run).

    ``source``: the run.json the spec came from; a user factory recorded there is imported
    only if trusted (:func:`landscape.trust.check_recorded`).
    """
    from landscape.models import model_from_spec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(info["config"]["seed"]))
        return model_from_spec(info["model"], source=str(source), trust=trust)


def load_run_data(info: dict, source: str | Path = "run.json", trust: bool = False):
    """The run's :class:`landscape.data.Dataset` (or :class:`landscape.userdata.UserData`),
    rebuilt from its stored spec and checked."""
    import inspect

    if info["dataset"].get("user"):
        from landscape.userdata import UserData

        spec = info["dataset"]
        return UserData(spec["data"]["name"], (spec.get("loss") or {}).get("name"),
                        source=str(source), recorded=spec, trust=trust)

    from landscape.data import load_dataset

    known = set(inspect.signature(load_dataset).parameters)
    unknown = sorted(set(info["dataset"]) - known)
    if unknown:
        raise LandscapeError(f"{source}: unknown dataset key {unknown[0]!r} "
                             f"(known: {', '.join(sorted(known))})")
    data = load_dataset(**info["dataset"])
    sizes = info.get("data_sizes")
    if sizes:
        got = {"train": len(data.y_train), "test": len(data.y_test)}
        if got != sizes:
            raise LandscapeError(
                f"the dataset rebuilt from run.json has {got['train']} train / {got['test']} "
                f"test samples, the run used {sizes['train']} / {sizes['test']} (data changed?)")
    return data


# ----------------------------------------------------------------------------- stopping
def at_cap(config: dict, row: dict) -> bool:
    """Whether history row ``row`` reached the run's cap: ``config["steps"]`` optimizer steps
    if set, else ``config["epochs"]`` epochs."""
    steps = config.get("steps")
    return row["step"] >= steps if steps is not None else row["epoch"] >= config["epochs"]


def stopping_record(config: dict, row: dict, met: bool | None = None) -> dict:
    """The ``stopping`` record of a run with training settings ``config`` (run.json's
    ``config``) whose last history row is ``row``; see :attr:`Run.stopping`. ``met``: whether
    a target-loss rule was met (the trainer's count of consecutive checks); None: judged from
    ``row`` alone (a run not finished, or from before the consecutive-check rule)."""
    target, steps = config.get("target_train_loss"), config.get("steps")
    rule = ("target_train_loss" if target is not None else
            "steps" if steps is not None else "epochs")
    if target is not None and met is None:   # (a row that eval_every skipped: not met)
        met = row["train_loss"] is not None and row["train_loss"] <= target
    return {"rule": rule,
            "target": {"target_train_loss": target, "steps": steps,
                       "epochs": config.get("epochs")}[rule],
            "met": bool(met) if target is not None else at_cap(config, row),
            **({"check_every": config.get("target_check_every"),
                "consecutive": config.get("target_consecutive", 1)} if target is not None else {}),
            "epochs": row["epoch"], "steps": row["step"], "train_loss": row["train_loss"],
            "cap": {"steps": steps} if steps is not None else {"epochs": config.get("epochs")}}


# ----------------------------------------------------------------------------- Run
@dataclass
class Run:
    """A training run on disk: configuration, final model (eval mode, CPU), data, history.

    ``config`` holds the training settings (the arguments of :func:`landscape.train`);
    ``info`` the whole ``run.json`` (dataset spec, model spec, loss, versions, device).
    """

    path: Path
    config: dict
    model: nn.Module
    data: Any
    history: list[dict]
    info: dict = field(default_factory=dict, repr=False)
    trust: bool = field(default=False, repr=False)

    @property
    def loss(self) -> str:
        """The training loss: ``"cross_entropy"`` or ``"mse"``."""
        return self.info.get("loss", getattr(self.data, "loss", "cross_entropy"))

    @property
    def stopping(self) -> dict:
        """How the run stopped: ``{"rule", "target", "met", "epochs", "steps", "train_loss",
        "cap"}``, and for the target-loss rule ``"check_every"`` (optimizer steps between
        checks of the loss) and ``"consecutive"`` (checks at or below the target required).

        ``rule``: ``"epochs"``, ``"steps"`` or ``"target_train_loss"``; ``target``: the
        number of epochs, of steps, or the target loss; ``met``: whether the rule was met
        (False: a target loss not reached within the cap); ``epochs`` and ``steps``: epochs
        (a partial last one included) and optimizer steps taken; ``train_loss``: the final
        full-train-split loss; ``cap``: ``{"epochs": E}`` or ``{"steps": N}``. A run written
        before stopping rules existed (or not finished) is described from its history.
        """
        if "stopping" in self.info:
            return dict(self.info["stopping"])
        last = dict(self.history[-1])   # an unfinished run, or one from before stopping rules
        last.setdefault("step", last["epoch"] * self.info.get("steps_per_epoch", 0))
        return stopping_record(self.config, last)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, file) of every saved checkpoint, ascending; epoch 0 is the initialization."""
        return numbered_files(Path(self.path) / "checkpoints", CHECKPOINT_RE)

    def checks(self) -> list[tuple[int, Path]]:
        """(optimizer step, file) of the weights kept at the last target-loss checks
        (``keep_checks`` of :func:`landscape.train`), ascending; the last is the stop."""
        return numbered_files(Path(self.path) / CHECKS_DIR, CHECK_RE)

    def new_model(self) -> nn.Module:
        """A freshly built model of this run's architecture (initial weights, eval mode, CPU)."""
        return build_run_model(self.info, Path(self.path) / "run.json", self.trust).eval()

    def load_checkpoint(self, epoch_or_path: int | str | Path) -> nn.Module:
        """A fresh model (eval mode, CPU) with the weights and buffers of one checkpoint.

        ``epoch_or_path``: an epoch number with a saved checkpoint, or a file path (a
        checkpoint or a bare state_dict such as ``model.pt``).
        """
        if isinstance(epoch_or_path, int) and not isinstance(epoch_or_path, bool):
            files = dict(self.checkpoints())
            if epoch_or_path not in files:
                have = ", ".join(str(e) for e in sorted(files)) or "none"
                raise LandscapeError(f"run {self.path} has no checkpoint for epoch "
                                     f"{epoch_or_path} (saved epochs: {have})")
            file = files[epoch_or_path]
        else:
            file = Path(epoch_or_path)
        model = self.new_model()
        load_weights(model, state_dict_of(torch_load(file), file), file)
        return model.eval()


def load_run(path: str | Path, *, data: bool = True, trust: bool = False) -> Run:
    """Load a run directory: rebuild the model from ``run.json`` with its final weights.

    ``data=False`` skips rebuilding the dataset (``Run.data`` is then None). If the run has
    no ``model.pt`` yet (interrupted), the weights of its last checkpoint are used, with a
    warning. A user model factory recorded in ``run.json`` is imported only with
    ``trust=True`` (or within :func:`landscape.trust.trusting`), never when it resolves
    outside the user's own code, and not when its file changed since the run recorded it.
    Cost: one model build, one file read, one dataset load.
    """
    path = Path(path)
    info = read_run_json(path)
    model = build_run_model(info, path / "run.json", trust)
    final = path / "model.pt"
    if final.exists():
        file = final
    else:
        files = numbered_files(path / "checkpoints", CHECKPOINT_RE)
        if not files:
            raise LandscapeError(f"run {path} has neither model.pt nor any checkpoint")
        epoch, file = files[-1]
        warnings.warn(f"run {path} is not finished; using its last checkpoint (epoch {epoch})",
                      LandscapeWarning, stacklevel=2)
    load_weights(model, state_dict_of(torch_load(file), file), file)
    model.eval()
    dataset = load_run_data(info, path / "run.json", trust) if data else None
    return Run(path=path, config=dict(info["config"]), model=model, data=dataset,
               history=read_history(path), info=info, trust=trust)


def as_run(run: Any) -> Run:
    """``run`` itself if it is a loaded run, else :func:`load_run` of that directory."""
    return run if hasattr(run, "model") else load_run(run)


def adopt(model: str, weights: str | Path, data: str | None, out: str | Path, *,
          loss: str | None = None, seed: int = 0, overwrite: bool = False,
          dataset: str | None = None, data_dir: str | Path | None = None,
          train_size: int | None = None) -> Path:
    """Make run directory ``out`` for a model trained elsewhere, without training.

    ``model``: a model of the zoo (``resnet56``) or a user factory spec; ``weights``: its
    checkpoint (loaded with ``weights_only=True``; layouts of :func:`checkpoint_state`, e.g.
    ``{"state_dict": ...}`` with DataParallel's ``module.`` prefix as the reference code of Li
    et al. saves it). The data: ``data`` (and ``loss``), user specs (see the module
    docstring), or a built-in ``dataset`` (``data_dir``, ``train_size`` as for training).
    Every command (``surface``, ``hessian``, ``sharpness``, ``noise``, ``compare``) then works
    on ``out``. Cost: one model build, one data pass.
    """
    from datetime import datetime, timezone

    from landscape.models import build_model, count_parameters, model_spec
    from landscape.userdata import UserData, checkpoint_state

    out = Path(out)
    if (out / "run.json").exists() and not overwrite:
        raise LandscapeError(f"{out} already holds a run (use --overwrite to replace it)")
    if (data is None) == (dataset is None):
        raise LandscapeError("give the data as a factory (--data SPEC) or a built-in dataset "
                             "(--dataset NAME), one of them")
    extra: dict[str, Any] = {}
    if dataset is not None:
        if loss is not None:
            raise LandscapeError("--loss goes with --data; a built-in dataset has its own loss")
        from landscape.data import load_dataset

        ds = load_dataset(dataset, data_dir=data_dir, train_size=train_size, seed=seed)
        shape, outputs, data_spec = ds.input_shape, ds.num_outputs, ds.spec
        extra.update(data_sizes={"train": len(ds.y_train), "test": len(ds.y_test)},
                     loss=ds.loss)
    else:
        user = UserData(data, loss)
        (shape, outputs), data_spec = user.shapes(), user.spec
        extra["loss"] = user.spec["loss"]["name"] if loss else None
    spec = model_spec(model, shape, outputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(model, shape, outputs)
    state = checkpoint_state(torch_load(Path(weights)), weights)
    load_weights(net, state, weights)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out / "model.pt", to_cpu(net.state_dict()))
    info = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "name": out.name,
            "config": {"seed": seed, "adopted_from": str(Path(weights).resolve())},
            "model": spec, "dataset": data_spec, **extra,
            "num_parameters": count_parameters(net), "versions": versions(),
            "status": "complete", "adopted": True,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_run_json(out, info)
    atomic_write_json(out / "history.json", [])
    return out

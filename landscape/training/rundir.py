"""The run directory's writing side: creating, clearing and resuming a run directory,
checkpoints written atomically with grouped fsyncs, and the kept target checks.

:mod:`landscape.runs` reads what is written here; :func:`landscape.training.train` drives it.
"""

from __future__ import annotations

import re
import time
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from landscape import store
from landscape.errors import LandscapeError, LandscapeWarning, SettingsMismatch
from landscape.hashing import settings_hash
from landscape.runs import (
    CHECK_RE,
    CHECKPOINT_RE,
    atomic_torch_save,
    fsync_files,
    numbered_files,
    read_run_json,
    to_cpu,
    torch_load,
)
from landscape.training.schedules import epochs_dependence

#: Configuration keys that may differ when a run is resumed (they do not change the numbers
#: on a given device; a run may be continued on another device, or keep other checks).
NOT_COMPARED = ("device", "keep_checks")


def config_hash(config: dict) -> str:
    """8 hex digits of the settings hash of ``config`` without :data:`NOT_COMPARED` (a run's
    identity: the last part of its default directory name)."""
    compared = {k: v for k, v in config.items() if k not in NOT_COMPARED}
    return settings_hash(compared, 8)


def default_name(config: dict) -> str:
    """The run directory name of ``config``: model, dataset, optimizer, learning rate, batch
    size, seed and :func:`config_hash`."""
    model, dataset = (re.sub(r"[^A-Za-z0-9_.-]+", "_", config[k].rsplit(":", 1)[-1])
                      for k in ("model", "dataset"))
    return (f"{model}-{dataset}-{config['optimizer']}-lr{config['lr']:g}"
            f"-bs{config['batch_size']}-seed{config['seed']}-{config_hash(config)}")


def _extends(path: Path, old: dict, new: dict, tracked: bool) -> bool:
    """Whether ``new`` is run ``old`` with only a larger epoch cap (a resumed run may be
    extended); a LandscapeError when it is but the learning rates or a track would change."""
    keep = (*NOT_COMPARED, "epochs")
    before, after = old.get("epochs"), new.get("epochs")
    if not (isinstance(before, int) and isinstance(after, int) and after > before) or \
            {k: v for k, v in old.items() if k not in keep} != \
            {k: v for k, v in new.items() if k not in keep}:
        return False
    why = epochs_dependence(new["schedule"], new["step_size"])
    if why is None and tracked:
        why = "its track.h5 records the epoch count"
    if why:
        raise LandscapeError(f"run {path} cannot be extended from {before} to {after} epochs: "
                             f"{why}; start a new run with --epochs {after}")
    return True


def prepare_dir(path: Path, config: dict, resume: bool, overwrite: bool,
                 tracked: bool = False) -> str:
    """Decide what to do with run directory ``path``: "new", "resume" or "overwrite".

    A resume may raise the epoch cap when the learning-rate schedule does not depend on it
    (:func:`_extends`). Reads only; nothing is changed here, so a refused command leaves the
    directory intact.
    """
    if not path.exists():
        return "new"
    if not path.is_dir():
        raise LandscapeError(f"output path {path} exists and is not a directory")
    if not (path / "run.json").exists():
        if any(path.iterdir()):
            raise LandscapeError(f"output directory {path} is not empty and holds no run "
                                 "(no run.json); choose another --out")
        return "new"
    try:
        old = read_run_json(path)["config"]
    except (LandscapeError, KeyError):
        if overwrite:
            return "overwrite"
        raise LandscapeError(f"{path}/run.json is damaged; pass --overwrite to replace the run "
                             "or choose another --out") from None
    if overwrite:
        return "overwrite"
    diff = store.differences(*({k: v for k, v in c.items() if k not in NOT_COMPARED}
                                  for c in (old, config)))
    if diff and resume and _extends(path, old, config, tracked):
        return "resume"
    if diff:
        raise SettingsMismatch(f"run directory {path} holds a different run ({'; '.join(diff)}); "
                             "pass --overwrite to replace it or choose another --out")
    if not resume:
        raise LandscapeError(f"run directory {path} already holds this run; pass --resume to "
                             "continue it or --overwrite to start again")
    return "resume"


def clear_run_files(path: Path) -> None:
    """Remove the files a run writes (and nothing else) from ``path``."""
    for name in ("model.pt", "history.json", "history.csv", "run.json", "track.h5"):
        (path / name).unlink(missing_ok=True)
    for file in checkpoint_files(path):
        file.unlink()


def recorded_save_every(out: str | Path | None, resume: bool) -> int | None:
    """The ``save_every`` of the run in ``out`` that ``resume`` continues, if it has one."""
    if not resume or out is None:
        return None
    try:
        every = read_run_json(Path(out))["config"]["save_every"]
    except (LandscapeError, KeyError, TypeError):
        return None
    return every if isinstance(every, int) and not isinstance(every, bool) and every > 0 \
        else None


def checkpoint_files(path: Path) -> list[Path]:
    """The training checkpoints of run directory ``path``, oldest first."""
    return [f for _, f in numbered_files(path / "checkpoints", CHECKPOINT_RE)]


def readable_checkpoint(path: Path) -> tuple[Path | None, Any]:
    """The newest checkpoint of run directory ``path`` that loads, and what it holds; newer
    ones that do not (torn by an OS crash before their fsync,
    :data:`landscape.training.trainer.SYNC_SECONDS`) are skipped with a warning. (None, None)
    without checkpoints; the newest one's error when none loads."""
    first_error = None
    for file in reversed(checkpoint_files(path)):
        try:
            state = torch_load(file)
        except LandscapeError as err:
            first_error = first_error or err
            continue
        if first_error is not None:
            warnings.warn(f"{first_error}; resuming from {file}", LandscapeWarning, stacklevel=3)
        return file, state
    if first_error is not None:
        raise first_error
    return None, None


class GroupSync:
    """Group commit of a run's files: each is written atomically at once (a killed process
    leaves the old or the new file) and made durable (fsync) with all written since the last
    sync, once ``every`` seconds (:data:`landscape.training.trainer.SYNC_SECONDS`) have
    passed, and at the end of the run."""

    def __init__(self, every: float) -> None:
        self.every, self.pending, self.last = every, set(), time.monotonic()

    def wrote(self, *files: Path) -> None:
        self.pending.update(files)

    def sync(self, force: bool = False) -> None:
        if self.pending and (force or time.monotonic() - self.last >= self.every):
            fsync_files(sorted(self.pending))
            self.pending.clear()
            self.last = time.monotonic()


def keep_check(folder: Path, step: int, loss: float, net: nn.Module, keep: int) -> None:
    """Write the weights at the check of ``step`` and keep the last ``keep`` checks up to it
    (files of later steps, left by an interrupted run that is now resumed, are redone)."""
    folder.mkdir(exist_ok=True)
    atomic_torch_save(folder / f"step_{step:07d}.pt",
                      {"step": step, "train_loss": float(loss), "model": to_cpu(net.state_dict())})
    files = numbered_files(folder, CHECK_RE)
    kept = [s for s, _ in files if s <= step][-keep:]
    for s, f in files:
        if s not in kept:
            f.unlink()


def save_checkpoint(file: Path, state: dict) -> None:
    """Write one training checkpoint atomically, its fsync deferred to the run's group sync
    (a separate function so tests can interrupt)."""
    atomic_torch_save(file, state, sync=False)

"""The user's own data and loss, named like user models, and models trained elsewhere.

``--data path/to/file.py:factory`` (or ``package.module:factory``): ``factory()`` returns
``(train, test)``, each any source of :mod:`landscape.sources` (tensors, a Dataset, a
DataLoader). ``--loss ...:fn`` names a loss callable (:class:`landscape.sources.Loss`). A run
directory records both as code specs with their files' SHA-256 (imported later only when
trusted, :mod:`landscape.trust`) and a digest of the data, so every later command rebuilds
the same data and loss and refuses with one line when the factory's data changed.

:func:`adopt` makes a run directory from a checkpoint saved by any code, without training.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from landscape.errors import LandscapeError
from landscape.models.user import load_attribute, load_user_model
from landscape.sources import Source, leaves
from landscape.trust import check_recorded, record

__all__ = ["UserData", "adopt", "checkpoint_state", "data_digest", "load_user_data"]

SPLITS = ("train", "test")


def data_digest(splits: dict[str, Any]) -> str:
    """SHA-256 of every tensor of every split, in order, as float64/int64 bytes (one pass)."""
    h = hashlib.sha256()
    for name in SPLITS:
        source = Source(splits[name], torch.device("cpu"), torch.float64, budget=0)
        h.update(f"{name}:{source.n}".encode())
        for batch in source.batches(4096):
            for t in leaves(batch):
                h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


class UserData:
    """The splits a user data factory returned, their loss, and the spec that rebuilds them.

    ``split(name)`` gives the ``"train"`` or ``"test"`` source; ``loss`` the loss callable or
    None (then the built-in loss for the targets' dtype); ``spec`` the record in run.json.
    """

    def __init__(self, data: str, loss: str | None = None, *, source: str | None = None,
                 recorded: dict | None = None, trust: bool = False) -> None:
        if recorded is not None:  # read from a file: the user code must be trusted
            check_recorded(recorded["data"]["name"], recorded["data"]["sha256"],
                           source=source or "run.json", kind="data", trust=trust)
            if recorded.get("loss"):
                check_recorded(recorded["loss"]["name"], recorded["loss"]["sha256"],
                               source=source or "run.json", kind="loss", trust=trust)
        factory = load_attribute(data, "data")
        try:
            made = factory()
        except Exception as exc:
            raise LandscapeError(f"data factory {data!r} failed: {type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())}") from exc
        if isinstance(made, dict):
            made = tuple(made.get(s) for s in SPLITS)
        if not isinstance(made, tuple | list) or len(made) != 2 or made[0] is None:
            raise LandscapeError(f"data factory {data!r} must return (train, test)")
        self.splits = dict(zip(SPLITS, made, strict=True))
        self.loss = load_attribute(loss, "loss") if loss else None
        self.name = data
        digest = data_digest(self.splits)
        if recorded is not None and recorded.get("digest") not in (None, digest):
            raise LandscapeError(
                f"{source}: the data of {data!r} changed since the run recorded them (digest "
                f"{recorded['digest'][:12]}..., now {digest[:12]}...)")
        self.spec = {"user": True, "data": record(data, "data"),
                     "loss": record(loss, "loss") if loss else None, "digest": digest}

    def split(self, name: str) -> Any:
        if name not in SPLITS or self.splits.get(name) is None:
            raise LandscapeError(f"the user data have no {name!r} split")
        return self.splits[name]


def load_user_data(data: str, loss: str | None = None) -> UserData:
    """The user data (and loss) named in this invocation."""
    return UserData(data, loss)


def checkpoint_state(obj: Any, file: Path | str) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint of any of the usual layouts: a bare state dict,
    ``{"state_dict": ...}``, ``{"model": ...}``, with or without the ``module.`` prefix of
    DataParallel/DDP."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise LandscapeError(f"checkpoint {file} holds no state dict (looked for a bare one, "
                             "'state_dict' and 'model')")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def adopt(model: str, weights: str | Path, data: str, out: str | Path, *,
          loss: str | None = None, seed: int = 0, overwrite: bool = False) -> Path:
    """Make run directory ``out`` for a model trained elsewhere, without training.

    ``model``: a user factory spec; ``weights``: its checkpoint (loaded with
    ``weights_only=True``; layouts of :func:`checkpoint_state`); ``data``/``loss``: user specs
    (see the module docstring). Every command (``surface``, ``hessian``, ``sharpness``,
    ``noise``, ``compare``) then works on ``out``. Cost: one model build, one data pass.
    """
    from landscape.models import count_parameters, model_spec
    from landscape.store import versions
    from landscape.train.run import (
        RUN_FORMAT,
        RUN_FORMAT_VERSION,
        atomic_torch_save,
        atomic_write_json,
        load_weights,
        to_cpu,
        torch_load,
    )

    out = Path(out)
    if (out / "run.json").exists() and not overwrite:
        raise LandscapeError(f"{out} already holds a run (use --overwrite to replace it)")
    user = UserData(data, loss)
    source = Source(user.split("train"), torch.device("cpu"), torch.float32, budget=0)
    x, y = next(source.batches(1))
    shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else (1,)
    outputs = (int(y.max()) + 1 if not y.is_floating_point() else int(y[0].numel())) or 1
    spec = model_spec(model, shape, outputs)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = load_user_model(model, shape, outputs)
    state = checkpoint_state(torch_load(Path(weights)), weights)
    load_weights(net, state, weights)
    out.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(out / "model.pt", to_cpu(net.state_dict()))
    info = {"format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "name": out.name,
            "config": {"seed": seed, "adopted_from": str(Path(weights).resolve())},
            "model": spec, "dataset": user.spec, "loss": user.spec["loss"]["name"]
            if loss else None, "num_parameters": count_parameters(net),
            "versions": versions(), "status": "complete", "adopted": True,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(out / "run.json", info)
    atomic_write_json(out / "history.json", [])
    return out

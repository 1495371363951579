"""The trainer: data resident on the device, any optimizer of :mod:`.optimizers`, a run directory.

``train(...)`` loads a dataset and builds a model by name, moves both to the device once, and
trains with minibatches drawn by a seeded permutation on the device (CIFAR augmentation, random
crop + flip, also on the device). Each epoch it evaluates loss and accuracy on the full train
and test splits (eval mode, no grad) and writes the history; every ``save_every`` epochs (and at
epoch 0, the initialization, and at the last epoch) it saves a checkpoint with everything a
resumed run needs to continue bit for bit: model, optimizer state, random-number states,
history. See :mod:`landscape.runs` for the directory layout.

Stopping rules: ``epochs`` (a number of epochs), ``steps`` (exactly that many optimizer steps;
the last epoch may be partial) and ``target_train_loss`` (the full-train-split loss checked
every ``target_check_every`` steps; the run stops at the first check that makes
:data:`TARGET_CONSECUTIVE` consecutive checks <= the target, so that the downward swing of an
oscillating loss, the edge of stability, does not stop it; ``epochs`` or ``steps`` is the cap).
run.json records which rule stopped the run and whether it was met (:attr:`Run.stopping`).

Optimizers are driven through the step protocol of :mod:`landscape.training.optimizers`:
``optimizer.step(closure)`` for all; SVRG gets a full-data gradient snapshot at every epoch
start; SAG steps over a fixed partition of the training set into ``ceil(n / batch_size)``
batches (visited in a fresh random order each epoch); L-BFGS takes one full-batch step per
epoch (no augmentation). Learning rates follow :mod:`.schedules`, set before every step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
import shutil
import time
import warnings
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import store
from landscape.errors import (
    LandscapeError,
    LandscapeWarning,
    check_int,
    check_positive,
)
from landscape.objective import resolve_device
from landscape.progress import progress as progress_bar
from landscape.runs import (
    CHECKS_DIR,
    EVALUATED,
    RUN_FORMAT,
    RUN_FORMAT_VERSION,
    Run,
    at_cap,
    atomic_torch_save,
    load_weights,
    read_history,
    read_run_json,
    state_dict_of,
    stopping_record,
    to_cpu,
    torch_load,
    write_history,
    write_run_json,
)
from landscape.sources import (
    ACCURACY_UNIT,
    Loss,
    Source,
    length,
    nbytes,
    take,
)
from landscape.training import rundir
from landscape.training.evaluation import accuracy_metric, evaluate_source, model_output
from landscape.training.schedules import make_schedule

#: Learning rate used when ``lr`` is None, per optimizer.
DEFAULT_LR: dict[str, float] = {
    "sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adagrad": 0.01, "rmsprop": 1e-3,
    "adadelta": 1.0, "adam": 1e-3, "adamw": 1e-3, "lbfgs": 1.0, "svrg": 0.1, "sag": 0.1,
    "sam": 0.1, "asam": 0.1,
}
#: Consecutive checks of the full-train-split loss that must be <= the target to stop a run.
TARGET_CONSECUTIVE = 2
#: Checks of the target loss per epoch when ``target_check_every`` is None.
TARGET_CHECKS_PER_EPOCH = 4
DEFAULT_RUNS_DIR = Path("outputs") / "runs"
#: Bytes of float32 layer outputs (linear and conv) one evaluation chunk may hold: the
#: digits MLP evaluates each split in one forward pass, a CIFAR ResNet in the default chunks.
EVAL_CHUNK_BYTES = 2**28
#: Seconds of training an OS crash or power loss may cost at most: the run's files written
#: since the last fsync are made durable together once this much time has passed (and at the
#: end, before run.json says complete), not one fsync per file; a resume skips a checkpoint
#: that such a crash left torn. A killed process loses nothing written (atomic renames).
SYNC_SECONDS = 10.0
#: A run with the default ``save_every`` keeps at most about this many checkpoints: one an
#: epoch up to this many epochs, then one every ``ceil(epochs / DEFAULT_CHECKPOINTS)``.
DEFAULT_CHECKPOINTS = 100
#: Bytes of training samples read from resident data in one gather: an epoch's minibatches
#: are then views of it (the same samples in the same order; less work a step).
GATHER_BYTES = 2**26
#: What the ``k`` of ``train(spawn=(k, child_seed))`` counts.
SPAWN_UNITS = ("epoch", "step")


# ----------------------------------------------------------------------------- helpers
def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return platform.processor() or platform.machine()


# ----------------------------------------------------------------------------- train
def train(*, model: str = "mlp", dataset: str = "digits", data_dir: str | Path | None = None,
          train_size: int | None = None, data: Any = None, loss: Any = None,
          forward_loss: Any = None, model_options: dict | None = None,
          optimizer: str = "momentum", lr: float | None = None, momentum: float | None = None,
          nesterov: bool = False, weight_decay: float = 0.0, rho: float | None = None,
          batch_size: int = 64, epochs: int | None = None, steps: int | None = None,
          target_train_loss: float | None = None, target_check_every: int | None = None,
          keep_checks: int = 0, asam_scale: str = "all",
          schedule: str = "constant",
          warmup_epochs: int = 0, step_size: int | None = None, gamma: float = 0.1,
          seed: int = 0, data_seed: int | None = None, device: str = "auto", amp: bool = False,
          augment: bool | None = None, save_every: int | None = None, eval_every: int = 1,
          out: str | Path | None = None,
          resume: bool = False, overwrite: bool = False, progress: bool = True,
          threads: int | None = None, track: str | list[str] | None = None,
          track_every: str | int = 10, track_subset: int | None = None,
          spawn: tuple[int, int] | None = None, spawn_unit: str = "epoch") -> Run:
    """Train ``model`` on ``dataset``, keep the run in directory ``out``, return its :class:`Run`.

    Defaults: the 100-100 ReLU MLP on the embedded digits, SGD with heavy-ball momentum 0.9,
    lr 0.05, batch 64, 20 epochs (a few seconds on a CPU core, ~97% test accuracy).

    - ``model`` / ``model_options``: a :func:`landscape.models.build_model` name and options;
      ``dataset`` / ``data_dir`` / ``train_size``: see :func:`landscape.data.load_dataset`
      (its subset and synthetic data are drawn from ``data_seed``, None: ``seed``; a study
      fixes it so that training seeds vary the initialization and batch order, not the data).
    - ``data``: the user's own data instead (``dataset`` may also name it): a spec
      ``"path/to/file.py:factory"`` / ``"package.module:factory"`` whose factory returns
      ``(train, test)`` datasets or loaders, or in Python that pair itself (or a
      :class:`landscape.userdata.UserData`); ``loss``: a spec or callable
      ``loss_fn(output, target)``, or ``forward_loss`` a hook ``hook(model, batch)``
      (:class:`landscape.sources.Loss`; default: cross-entropy for integer targets, MSE for
      floating ones). run.json records specs as ``landscape adopt`` does, so every later
      command rebuilds the same data and loss (Python objects cannot be rebuilt). Data that
      fit the memory budget of :class:`landscape.sources.Source` are made resident and
      minibatched on the device like the built-in datasets (the user loader's batching and
      order are then not used); larger data are iterated once per epoch with the user's own
      loader, so batches, order and determinism are then the loader's. History losses are
      the engine's (:class:`landscape.sources.Loss`, means over the whole split).
    - ``optimizer``, ``lr`` (None: :data:`DEFAULT_LR`), ``momentum`` (None: the optimizer's
      default), ``nesterov``, ``weight_decay``, ``rho`` (SAM/ASAM radius; None: default),
      ``asam_scale`` ("all": every tensor scaled by ``|w| + eta``; "weights": only those
      named "...weight...", as the authors' code): see
      :func:`landscape.training.optimizers.make_optimizer`.
    - Stopping: ``epochs`` (None: 20) or ``steps`` (exactly that many optimizer steps, the
      last epoch possibly partial; not both); ``target_train_loss``: the full-train-split
      loss (as the history's ``train_loss``) is checked every ``target_check_every``
      optimizer steps (steps 0, K, 2K, ...; None: ``ceil(steps per epoch / 4)``, four checks
      an epoch), and the run stops at the first check that is the second of two consecutive
      checks <= the target (:data:`TARGET_CONSECUTIVE`): a loss that oscillates, as at large
      learning rates (the edge of stability, Cohen et al. 2021), is not stopped on a single
      downward swing. A stop inside an epoch adds a history row for that partial epoch. The
      checks are eval-mode forward passes and draw no random numbers: the trajectory is the
      same for every K. ``keep_checks``: the model weights at the last ``keep_checks``
      checks are kept in ``checks/step_NNNNNNN.pt`` (the last one is the stop), the
      consecutive checkpoints around a stop that a study measures. ``epochs``/``steps`` is
      the cap; a run that hits it first warns, and
      ``run.stopping["met"]`` is False. Schedules span the cap (``steps`` iterations, or
      ``epochs`` epochs). The final ``model.pt`` and the last checkpoint are the model
      where the run stopped.
    - ``schedule`` ("constant", "step", "cosine"), ``warmup_epochs``, ``step_size`` (epochs),
      ``gamma``: see :mod:`landscape.training.schedules` (evaluated per iteration).
    - ``seed``: model initialization, minibatch order, augmentation. Same seed and device ->
      bit-identical history on the CPU.
    - ``device``: "auto", "cpu", "cuda" (or "cuda:1"); ``amp``: bf16 autocast (CUDA only).
    - ``threads``: CPU threads while training (restored afterwards). None: 1 when a step is
      tiny (under 1e8 multiply-adds, e.g. the digits MLP: intra-op threads only add
      synchronization, worst when the cores are shared), else torch's setting.
    - ``augment``: random crop (padding 4, black) + horizontal flip on the device; default on
      for CIFAR datasets.
    - ``out``: run directory (default ``outputs/runs/<name>``, name from the settings);
      ``resume``: continue from its last checkpoint; ``overwrite``: replace a run there.
    - ``save_every``: checkpoint every N epochs (and epochs 0 and last). Default None: every
      epoch up to :data:`DEFAULT_CHECKPOINTS` (100) epochs, then every
      ``ceil(epochs / 100)``, at most ~100 checkpoints for the trajectory PCA
      (:func:`landscape.trajectory`) and per-checkpoint analyses (a resumed run keeps its
      own). A checkpoint holds the model, the optimizer state and the whole history (digits
      MLP: 0.16 MB, ~2 ms, as a user's ``torch.save`` of the same state; ~7% of a default
      run's CPU time). A resume continues from the last one kept.
    - ``eval_every``: the history rows' train/test loss and accuracy every N epochs (and at
      epoch 0, the last epoch and every epoch that ends on a target-loss check); the rows of
      the other epochs hold None there (:data:`landscape.runs.EVALUATED`; null in
      history.json, empty in history.csv). Default 1. The training is the same for every N.
    - ``track``: measures recorded along the run in ``track.h5`` (e.g.
      ``"top_eigenvalue,trace,noise_scale"``) every ``track_every`` steps (``"2epochs"``:
      epochs) on ``track_subset`` training samples; see :mod:`landscape.analysis.track`.
      Tracking never changes the training (same history and weights bit for bit).
    - ``spawn``: ``(k, child_seed)``: after epoch ``k`` (``spawn_unit="epoch"``) or
      optimizer step ``k`` (``"step"``, as Frankle et al. count) the minibatch order (and
      augmentation) is drawn from ``child_seed`` instead of continuing ``seed``'s stream: runs
      with the same ``seed`` and ``k`` share the first ``k`` epochs or steps bit for bit (on
      the CPU) and then differ only in SGD noise, Frankle et al.'s (2020) children spawned at
      ``k``. A step inside an epoch keeps the samples the parent has already drawn in that
      epoch and orders the rest of the epoch by the child's seed (each epoch stays one pass
      over the data; streamed user data keep their loader's order: only augmentation
      changes); step ``k * steps_per_epoch`` is epoch ``k``, bit for bit.

    Cost per epoch: one forward+backward per minibatch (two for SAM/ASAM/SVRG, plus a full
    gradient for SVRG), one forward pass over both splits (every ``eval_every`` epochs, in
    chunks of up to :data:`EVAL_CHUNK_BYTES` of layer outputs), one history row appended to
    history.json/.csv, one checkpoint write (every ``save_every`` epochs). run.json's
    ``seconds`` splits this call's wall time into ``train`` (optimizer steps), ``evaluate``
    (history rows and target-loss checks) and ``save`` (checkpoints and history files).
    """
    from landscape.data import NORMALIZATION, augment_crop_flip, load_dataset
    from landscape.models import count_parameters, model_from_spec, model_spec
    from landscape.training.optimizers import OPTIMIZERS, kernel_options, make_optimizer
    from landscape.trust import is_code_spec
    from landscape.userdata import UserData

    # --- validate everything before touching the disk
    if optimizer not in OPTIMIZERS:
        from landscape.errors import unknown_name
        raise unknown_name("optimizer", optimizer, OPTIMIZERS)
    lr = float(DEFAULT_LR[optimizer] if lr is None else lr)
    check_positive("learning rate", lr)
    batch_size = check_int("batch size", batch_size)
    if steps is not None:
        if epochs is not None:
            raise LandscapeError("give epochs or steps, not both (steps replaces the epoch "
                                 "budget)")
        steps = check_int("steps", steps)
    else:
        epochs = check_int("epochs", 20 if epochs is None else epochs)
    if target_train_loss is not None:
        if isinstance(target_train_loss, bool) or not isinstance(
                target_train_loss, int | float | np.integer | np.floating) \
                or not math.isfinite(target_train_loss) or target_train_loss <= 0:
            raise LandscapeError("target train loss must be a finite positive number, got "
                                 f"{target_train_loss!r}")
        target_train_loss = float(target_train_loss)
    if target_check_every is not None:
        if target_train_loss is None:
            raise LandscapeError("target_check_every goes with a target train loss")
        target_check_every = check_int("target_check_every", target_check_every)
    save_every = None if save_every is None else check_int("save_every", save_every)
    eval_every = check_int("eval_every", eval_every)
    keep_checks = check_int("keep_checks", keep_checks, minimum=0)
    if keep_checks and target_train_loss is None:
        raise LandscapeError("keep_checks goes with a target train loss")
    if threads is not None:
        threads = check_int("threads", threads)
    if check_int("seed", seed, minimum=0) >= 2**32:
        raise LandscapeError(f"seed must be in 0 .. 2**32 - 1, got {seed}")
    if not math.isfinite(lr):
        raise LandscapeError(f"learning rate must be finite, got {lr}")
    if resume and overwrite:
        raise LandscapeError("--resume and --overwrite exclude each other; pass one of them")
    from landscape.analysis.track import track_settings
    tracking = track_settings(track, track_every, track_subset)
    dev = resolve_device(device)
    if amp and dev.type != "cuda":
        raise LandscapeError(f"amp (bf16 autocast) needs a CUDA device, the device is {dev}")

    if data_seed is not None:
        check_int("data_seed", data_seed, minimum=0)
    if spawn is not None:
        if not isinstance(spawn, tuple | list) or len(spawn) != 2:
            raise LandscapeError(f"spawn must be (epoch, child seed), got {spawn!r}")
        spawn = (check_int(f"spawn {spawn_unit}", spawn[0], minimum=0),
                 check_int("spawn seed", spawn[1], minimum=0))
    if spawn_unit not in SPAWN_UNITS:
        from landscape.errors import unknown_name
        raise unknown_name("spawn unit", spawn_unit, SPAWN_UNITS)
    if data is None and is_code_spec(dataset):
        data = dataset
    if data is None:
        if loss is not None or forward_loss is not None:
            raise LandscapeError("loss= and forward_loss= go with data= (the user's own data); "
                                 f"the built-in dataset {dataset!r} has its own loss")
        ds = load_dataset(dataset, data_dir=data_dir, train_size=train_size,
                          seed=int(seed if data_seed is None else data_seed))
        input_shape, num_outputs, data_name = ds.input_shape, ds.num_outputs, ds.name
        config_data: dict[str, Any] = {"data_dir": ds.spec.get("data_dir"),
                                       "train_size": ds.spec.get("train_size")}
        budget: int | None = 2**62  # built-in datasets are always resident
        fn = Loss(ds.loss)
    else:
        if dataset not in ("digits", data) or data_dir is not None or train_size is not None:
            raise LandscapeError("data= (the user's own data) replaces dataset=, data_dir= "
                                 "and train_size=")
        ds = data if isinstance(data, UserData) else UserData(data, loss,
                                                              forward_loss=forward_loss)
        input_shape, num_outputs = ds.shapes()
        data_name = ds.spec["data"]["name"] or "python"
        config_data = {"data_dir": None, "train_size": None, "data_digest": ds.spec["digest"],
                       **{k: v["name"] or v["object"] for k in ("loss", "forward_loss")
                          if (v := ds.spec.get(k))}}
        budget = None  # the default fraction of free memory
        fn = None
    whole = getattr(ds, "forward_loss", None) is not None
    train_src = Source(ds.split("train"), dev, torch.float32, budget, whole=whole)
    try:
        test_src: Source | None = Source(ds.split("test"), dev, torch.float32, budget,
                                         whole=whole)
    except LandscapeError:  # user data without a test split
        test_src = None
    # the first two samples, read once here: reading a loader again later would draw from
    # the random state that a resumed run restores
    first = next(train_src.batches(2))
    first = (take(first[0], slice(0, 2)), first[1][:2])
    if fn is None:
        fn = Loss(ds.loss, ds.forward_loss, target_float=train_src.target_float,
                  target_dim=first[1].dim())
    acc = accuracy_metric(fn, first[1])
    mspec = model_spec(model, input_shape, num_outputs, **(model_options or {}))
    if augment is None:
        augment = data_name.startswith("cifar")
    augment = bool(augment)
    if augment and len(input_shape) != 3:
        raise LandscapeError(f"augmentation needs images, dataset {data_name!r} has inputs of "
                             f"shape {input_shape}")

    n_train = train_src.n
    probe = make_optimizer(optimizer, [("weight", nn.Parameter(torch.zeros(1)))], lr=lr,
                           momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                           rho=rho, asam_scale=asam_scale,
                           **({"n_batches": 1} if optimizer == "sag" else {}))
    requires = getattr(probe, "requires", frozenset({"closure"}))
    full_batch = "full_batch" in requires
    if "batch_index" in requires and not train_src.resident:
        raise LandscapeError(f"{optimizer} steps over a fixed partition of the training set: "
                             "it needs data that fit the memory budget")
    spe = (1 if full_batch else train_src.n_batches if not train_src.resident
           and train_src.n_batches is not None else math.ceil(n_train / batch_size))
    cap = epochs if steps is None else math.ceil(steps / spe)    # epochs at most
    if save_every is None:  # a resumed run keeps its own
        save_every = rundir.recorded_save_every(out, resume) or max(
            1, math.ceil(cap / DEFAULT_CHECKPOINTS))
    if target_train_loss is not None and target_check_every is None:
        target_check_every = math.ceil(spe / TARGET_CHECKS_PER_EPOCH)
    sched = make_schedule(schedule, lr, epochs=cap, steps_per_epoch=spe,
                          warmup_epochs=warmup_epochs, step_size=step_size, gamma=gamma)
    if steps is not None:
        sched = dataclasses.replace(sched, total_steps=steps)
    # SAG: a fixed partition of the training set, drawn once from the seed
    fixed = (torch.tensor_split(torch.randperm(
        n_train, generator=torch.Generator().manual_seed(int(seed) + 1)), spe)
        if "batch_index" in requires else None)

    config = store.jsonable({
        "model": mspec["name"], "model_options": mspec["options"], "dataset": data_name,
        **config_data,
        "optimizer": optimizer, "lr": lr, "momentum": momentum, "nesterov": bool(nesterov),
        "weight_decay": float(weight_decay), "rho": rho, "batch_size": batch_size,
        "epochs": epochs, "schedule": schedule, "warmup_epochs": int(warmup_epochs),
        "step_size": step_size, "gamma": float(gamma), "seed": int(seed), "amp": bool(amp),
        "augment": augment, "save_every": save_every, "device": str(device),
        # set only when used, so runs from before these options keep their name and hash
        **({"steps": steps} if steps is not None else {}),
        **({"target_train_loss": target_train_loss, "target_check_every": target_check_every,
            "target_consecutive": TARGET_CONSECUTIVE} if target_train_loss is not None else {}),
        **({"keep_checks": keep_checks} if keep_checks else {}),
        **({"eval_every": eval_every} if eval_every != 1 else {}),
        **({"asam_scale": asam_scale} if asam_scale != "all" else {}),
        **({"spawn": list(spawn)} if spawn is not None else {}),
        **({"spawn_unit": spawn_unit} if spawn is not None and spawn_unit != "epoch" else {}),
        **({"data_seed": int(data_seed)} if data_seed is not None else {}),
    })
    path = Path(out) if out is not None else DEFAULT_RUNS_DIR / rundir.default_name(config)

    target = None if target_train_loss is None else _TargetRule(
        target_train_loss, target_check_every, TARGET_CONSECUTIVE)

    def finished(row: dict) -> bool:
        """Whether the run stops after the epoch of history row ``row`` (the rule has seen it)."""
        return (target is not None and target.met) or at_cap(config, row)

    action = rundir.prepare_dir(path, config, resume, overwrite, tracked=tracking is not None)
    checkpoint_file, checkpoint = rundir.readable_checkpoint(path) if action == "resume" \
        else (None, None)
    if checkpoint_file is not None:
        if not isinstance(checkpoint, dict) or "epoch" not in checkpoint:
            raise LandscapeError(f"checkpoint {checkpoint_file} is not a training checkpoint")

    if checkpoint is not None:
        try:
            for row in checkpoint["history"]:  # rows written before the step count was kept
                row.setdefault("step", int(row["epoch"]) * spe)
            if target is not None:
                target.restore(checkpoint["target"])
            done = finished(checkpoint["history"][-1])
        except (KeyError, TypeError, IndexError) as err:
            raise LandscapeError(f"checkpoint {checkpoint_file} cannot be resumed: "
                                 f"damaged history ({err!r})") from None
        old = read_run_json(path)
        if done and (path / "model.pt").exists() and old.get("status") == "complete":
            # nothing to do: read it back, write nothing
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                net = model_from_spec(mspec)
            load_weights(net, state_dict_of(torch_load(path / "model.pt"), path / "model.pt"),
                         path / "model.pt")
            _warn_unmet(path, old.get("stopping"))
            warnings.warn(f"run {path} is already complete (epoch "
                          f"{checkpoint['history'][-1]['epoch']}): nothing was trained or "
                          "written", LandscapeWarning, stacklevel=2)
            return Run(path=path, config=config, model=net.eval(), data=ds,
                       history=read_history(path), info=old, trust=True)

    cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
        if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(int(seed))
        net = model_from_spec(mspec).to(dev)
        opt_kwargs = {} if fixed is None else \
            {"n_batches": spe, "batch_sizes": [len(idx) for idx in fixed]}
        opt = make_optimizer(optimizer, list(net.named_parameters()), lr=lr,
                             momentum=momentum, nesterov=nesterov, weight_decay=weight_decay,
                             rho=rho, asam_scale=asam_scale, **opt_kwargs,
                             **kernel_options(optimizer, net))
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seed))
        history: list[dict] = []
        start = 0
        if checkpoint is not None:
            try:
                load_weights(net, state_dict_of(checkpoint, checkpoint_file), checkpoint_file)
                opt.load_state_dict(checkpoint["optimizer"])
                rng = checkpoint["rng"]
                gen.set_state(rng["generator"])
                torch.set_rng_state(rng["torch"])
                if dev.type == "cuda" and rng.get("cuda") is not None:
                    torch.cuda.set_rng_state(rng["cuda"], dev)
                history = list(checkpoint["history"])
                start = int(checkpoint["epoch"])
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise LandscapeError(f"checkpoint {checkpoint_file} cannot be resumed: "
                                     f"{str(err).splitlines()[0] if str(err) else err!r}"
                                     ) from None

        macs, outputs = _check_fits(net, first, fn, mspec["name"], data_name, num_outputs)
        if dev.type == "cpu" and threads is None:
            threads = 1 if macs * batch_size < 1e8 else torch.get_num_threads()
        threads = threads or torch.get_num_threads()
        # --- from here on the directory is written; a start that fails before the first
        # checkpoint removes what it wrote (a fresh directory) or leaves it resumable
        fresh = action == "new" and not path.exists()
        try:
            if action == "overwrite":
                rundir.clear_run_files(path)
            with store.writing(path, resumable=False):
                (path / "checkpoints").mkdir(parents=True, exist_ok=True)
            info = {
                "format": RUN_FORMAT, "format_version": RUN_FORMAT_VERSION, "name": path.name,
                "config": config, "model": mspec, "dataset": ds.spec,
                "data_sizes": {"train": n_train, "test": 0 if test_src is None else test_src.n},
                "loss": config.get("loss", fn.name),
                "task": "regression" if acc is None else "classification",
                "num_parameters": count_parameters(net),
                "steps_per_epoch": spe, "optimizer_requires": sorted(requires),
                "device": str(dev), "device_name": _device_name(dev), "versions": store.versions(),
                "threads": threads if dev.type == "cpu" else None,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "status": "running",
                "history_units": {"train_acc": ACCURACY_UNIT, "test_acc": ACCURACY_UNIT},
            }
            if action == "resume":
                old = read_run_json(path)
                info["created"] = old.get("created", info["created"])
                info["resumed"] = [*old.get("resumed", []),
                                   {"epoch": start, "device": str(dev),
                                    "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}]
            if history and finished(history[-1]) and (path / "model.pt").exists():
                info["status"] = "complete"
            durable = rundir.GroupSync(SYNC_SECONDS)
            if action != "resume":  # a new directory is a run (resumable) from its first file
                write_run_json(path, info, sync=False)
                durable.wrote(path / "run.json")

            trainer = _Trainer(net, opt, requires, train_src, test_src, dev, loss=fn, acc=acc,
                               batch_size=batch_size, steps=spe, sched=sched, gen=gen, amp=amp,
                               augment=augment, fixed=fixed,
                               spawn=None if spawn is None else
                               (spawn[0] * (spe if spawn_unit == "epoch" else 1), spawn[1]),
                               fill=[-m / s for m, s in zip(*NORMALIZATION[data_name], strict=True)]
                               if augment and data_name in NORMALIZATION else 0.0,
                               augment_fn=augment_crop_flip, outputs=outputs)
            tracker = None
            if tracking is not None:
                from landscape.analysis.track import TRACK_FILE, Tracker
                if not train_src.resident or getattr(ds, "forward_loss", None) is not None:
                    raise LandscapeError("--track needs training data held in memory and a loss "
                                         "of (output, target); not a streamed source or a hook")
                x_all, y_all = train_src.rows(torch.arange(train_src.n, device=dev), train_src.n)
                tracker = Tracker(path / TRACK_FILE, tracking, x=x_all, y=y_all,
                                  loss=ds.loss, optimizer=optimizer, momentum=momentum,
                                  batch_size=batch_size, steps_per_epoch=spe, fresh=not history,
                                  run={k: v for k, v in config.items()
                                       if k not in rundir.NOT_COMPARED})
                if history:
                    tracker.restore(checkpoint.get("track"), history[-1]["step"])
                trainer.on_step = lambda step: tracker.after_step(net, opt, step, sched(step))
            if action == "resume":  # after its track file was checked: a resume refused
                write_run_json(path, info, sync=False)  # leaves run.json as it was
                durable.wrote(path / "run.json")

            config_hash = rundir.config_hash(config)

            def save_checkpoint(epoch: int) -> None:
                state = {"epoch": epoch, "model": to_cpu(net.state_dict()),
                         "optimizer": to_cpu(opt.state_dict()),
                         "rng": {"generator": gen.get_state(), "torch": torch.get_rng_state(),
                                 "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda"
                                 else None},
                         "history": history, "config_hash": config_hash,
                         **({"target": target.state()} if target else {}),
                         **({"track": tracker.checkpoint_state()} if tracker else {})}
                file = path / "checkpoints" / f"epoch_{epoch:04d}.pt"
                rundir.save_checkpoint(file, state)
                durable.wrote(file)

            spent = dict.fromkeys(("train", "evaluate", "save"), 0.0)  # this call's seconds

            def check_target(step: int) -> bool:
                with _timed(spent, "evaluate"):
                    return target.due(step) and check(
                        step, evaluate_source(net, train_src, fn, None, trainer.eval_batch)[0])

            bar = progress_bar(total=cap, desc=f"train {path.name}", unit="epoch",
                               disable=None if progress else True)
            with bar, _cuda_flags(dev), num_threads(threads if dev.type == "cpu" else None):
                def check(step: int, loss: float) -> bool:
                    """The target rule's check at ``step``; keeps the weights if asked."""
                    if keep_checks and target.due(step):
                        rundir.keep_check(path / CHECKS_DIR, step, loss, net, keep_checks)
                    return target.observe(step, loss)

                if target is not None:
                    trainer.stop_check = check_target
                if not history:
                    with _timed(spent, "evaluate"):
                        history.append(trainer.history_row(0, step=0, lr=None, seconds=0.0))
                    if target is not None:
                        check(0, history[0]["train_loss"])
                    if tracker is not None:
                        trainer.on_step(0)
                    with _timed(spent, "save"):
                        write_history(path, history, sync=False)  # rewritten on a resume
                        save_checkpoint(0)
                else:
                    write_history(path, history, sync=False)
                durable.wrote(path / "history.json", path / "history.csv")
                if start:
                    bar.update(start)
                while not finished(history[-1]):
                    epoch, done_steps = history[-1]["epoch"] + 1, history[-1]["step"]
                    budget = spe if steps is None else min(spe, steps - done_steps)
                    checks = spent["evaluate"]
                    seconds, last_lr, taken = trainer.train_epoch(epoch, bar, budget)
                    spent["train"] += seconds - (spent["evaluate"] - checks)
                    step = done_steps + taken
                    # evaluated: every eval_every epochs, the last, and a target check's step
                    evaluate = epoch % eval_every == 0 or finished(
                        {"epoch": epoch, "step": step}) or (target is not None and
                                                            target.due(step))
                    with _timed(spent, "evaluate"):
                        row = trainer.history_row(epoch, step=step, lr=last_lr,
                                                  seconds=seconds, evaluate=evaluate)
                    history.append(row)
                    if target is not None and evaluate:
                        check(row["step"], row["train_loss"])
                    with _timed(spent, "save"):
                        write_history(path, history, sync=False, new=1)
                        if epoch % save_every == 0 or finished(row):
                            save_checkpoint(epoch)
                        durable.sync()
                    if evaluate:
                        bar.set_postfix_str(_postfix(row), refresh=False)
                    bar.update(1)
        except BaseException:
            if fresh and not rundir.checkpoint_files(path):
                shutil.rmtree(path, ignore_errors=True)
            raise

        if tracker is not None:
            tracker.close()
        final = to_cpu(net.state_dict())
        with _timed(spent, "save"):   # every file durable before run.json says complete
            atomic_torch_save(path / "model.pt", final, sync=False)
            durable.wrote(path / "model.pt")
            durable.sync(force=True)
        info["stopping"] = stopping_record(config, history[-1],
                                           None if target is None else target.met)
        info["status"] = "complete"
        info["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info["seconds"] = {k: round(v, 4) for k, v in spent.items()}
        write_run_json(path, info)

    _warn_unmet(path, info["stopping"])
    # the caller named this run's code in this call: reading its checkpoints back may run it
    return Run(path=path, config=config, model=net.cpu().eval(), data=ds, history=history,
               info=info, trust=True)


def _check_fits(net: nn.Module, probe: tuple[Any, Tensor], loss: Loss, name: str,
                data_name: str, num_outputs: int) -> tuple[int, int]:
    """A one-line LandscapeError naming the shapes when the model's output on the training
    samples ``probe`` does not fit the task (the built-in losses: ``[n, classes]`` logits, or
    one value per target) or the loss fails on it, checked before the run directory is
    written. An eval-mode forward pass: no state or RNG changes. Returns what the pass saw
    of one sample in the linear and conv layers: (multiply-adds, output elements)."""
    x, y = probe
    shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
    macs = outputs = 0

    def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
        nonlocal macs, outputs
        spatial = output[0, 0].numel() if isinstance(module, nn.modules.conv._ConvNd) else 1
        macs += module.weight.numel() * spatial
        outputs += output[0].numel()

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, nn.Linear | nn.modules.conv._ConvNd)]
    was_training = net.training
    try:
        with torch.no_grad():
            out = model_output(net.eval(), loss, x)
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward is reported
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LandscapeError(f"model {name!r} cannot take the inputs of dataset {data_name!r} "
                             f"(shape {shape}): {detail}") from None
    finally:
        net.train(was_training)
        for h in handles:
            h.remove()
    if not loss.hook and loss.fn is None:
        classify = loss.is_classification
        want = (f"({length(x)}, {num_outputs} or more) logits" if classify
                else f"{tuple(y.shape)} values")
        fits = isinstance(out, torch.Tensor) and (
            out.ndim == 2 and out.shape[0] == length(x) and out.shape[1] >= num_outputs
            if classify else out.numel() == y.numel())
        if not fits:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise LandscapeError(f"model {name!r} gives outputs of shape {got} for inputs of "
                                 f"shape {shape} of dataset {data_name!r}, which needs {want}")
    try:
        with torch.no_grad():
            loss.total(out, y)
    except Exception as err:  # noqa: BLE001 - any failure of the user's loss is reported
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LandscapeError(f"the loss {loss.name} fails on the outputs of model {name!r} "
                             f"for dataset {data_name!r}: {detail}") from None
    return macs, outputs


def _warn_unmet(path: Path, stopping: dict | None) -> None:
    """Warn (one line) when a run hit its cap before reaching its target training loss."""
    if stopping and not stopping["met"]:
        cap = ", ".join(f"{v} {k}" for k, v in stopping["cap"].items())
        warnings.warn(f"run {path} stopped at its cap ({cap}) with train loss "
                      f"{stopping['train_loss']:.4g}, above the target "
                      f"{stopping['target']:g}: the target was NOT met", LandscapeWarning,
                      stacklevel=3)


@contextmanager
def _timed(spent: dict[str, float], key: str):
    """Add the wall seconds of the block to ``spent[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        spent[key] += time.perf_counter() - start


def _postfix(row: dict) -> str:
    """The progress bar's text after an epoch (no test figures without a test split)."""
    acc = "" if row.get("test_acc") is None else f" acc {row['test_acc']:.1%}"
    test = "" if row.get("test_loss") is None else f" test loss {row['test_loss']:.4g}"
    return f"train loss {row['train_loss']:.4g}{test}{acc}"


@contextmanager
def num_threads(threads: int | None):
    """Use ``threads`` intra-op CPU threads inside the block (None: unchanged)."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


@contextmanager
def _cuda_flags(dev: torch.device):
    """cuDNN autotuning on while training on CUDA (speed; CPU results are unaffected),
    unless the user asked cuDNN to be deterministic; restored afterwards."""
    cudnn = torch.backends.cudnn
    before = cudnn.benchmark
    if dev.type == "cuda" and not cudnn.deterministic:
        cudnn.benchmark = True
    try:
        yield
    finally:
        cudnn.benchmark = before


class _TargetRule:
    """The target-loss stopping rule: full-train-split losses observed at optimizer steps
    0, ``every``, 2 ``every``, ...; met at the first check that ends ``consecutive``
    consecutive checks <= ``target``. Other steps, and a step seen before, are ignored."""

    def __init__(self, target: float, every: int, consecutive: int) -> None:
        self.target, self.every, self.consecutive = target, every, consecutive
        self.streak, self.last = 0, -1      # checks <= target in a row; last step checked

    @property
    def met(self) -> bool:
        return self.streak >= self.consecutive

    def due(self, step: int) -> bool:
        """Whether ``step`` is a check not yet made."""
        return step % self.every == 0 and step > self.last

    def observe(self, step: int, loss: float) -> bool:
        """Record the check of ``step`` with full-train-split loss ``loss``; whether met."""
        if self.due(step):
            self.streak = self.streak + 1 if loss <= self.target else 0
            self.last = step
        return self.met

    def state(self) -> dict:
        return {"streak": self.streak, "last": self.last}

    def restore(self, state: dict) -> None:
        """Continue from the :meth:`state` saved with a checkpoint."""
        self.streak, self.last = int(state["streak"]), int(state["last"])


class _Trainer:
    """One epoch of training for any optimizer of the step protocol: resident data minibatched
    on the device, streamed data in the source's (the user loader's) batches. ``outputs``: the
    linear and conv layers' output elements per sample (sizes the evaluation chunks)."""

    def __init__(self, net: nn.Module, opt: torch.optim.Optimizer, requires: frozenset,
                 train_src: Source, test_src: Source | None, dev: torch.device, *, loss: Loss,
                 acc: Loss | None, batch_size: int, steps: int, sched: Any,
                 gen: torch.Generator, amp: bool, augment: bool, fixed: list[Tensor] | None,
                 fill: Any, augment_fn: Any, spawn: tuple[int, int] | None = None,
                 outputs: int = 0) -> None:
        self.net, self.opt, self.requires = net, opt, requires
        #: the optimizer evaluates its closure exactly once per step (no SAM, SVRG, SAG, L-BFGS)
        self.once = requires == frozenset({"closure"})
        self.dev, self.loss, self.batch_size, self.steps = dev, loss, batch_size, steps
        self.sched, self.gen, self.amp, self.augment = sched, gen, amp, augment
        # the padding value as a device tensor, so augmenting a batch copies nothing from the host
        self.fill = torch.as_tensor(fill, dtype=torch.float32, device=dev).reshape(-1)
        self.augment_fn = augment_fn
        self.acc = acc
        self.train_src, self.test_src = train_src, test_src
        self.n = train_src.n
        self.weight_total = train_src.elements if loss.mean_over == "elements" else self.n
        # the largest chunk whose layer outputs fit EVAL_CHUNK_BYTES, never below the default
        self.eval_batch = max(4096 if dev.type == "cuda" else 1024, min(
            max(self.n, 0 if test_src is None else test_src.n),
            EVAL_CHUNK_BYTES // (4 * max(outputs, 1))))
        self.grad_batch = 2048 if dev.type == "cuda" else 1024
        self.fixed = None if fixed is None else [idx.to(dev) for idx in fixed]
        if train_src.resident:  # steps whose samples are read in one gather (_batches)
            sample = nbytes(train_src.rows(torch.zeros(1, dtype=torch.long), 1))
            self.gather_steps = max(1, GATHER_BYTES // max(sample * batch_size, 1))
        #: (optimizer step, child seed): the SGD noise after that step is the child's
        self.spawn = spawn
        #: called with the number of steps taken after every optimizer step (tracking)
        self.on_step: Any = None
        #: called likewise before the last step of an epoch's budget; True stops the epoch
        self.stop_check: Any = None

    def autocast(self):
        if self.amp:
            return torch.autocast(device_type=self.dev.type, dtype=torch.bfloat16)
        return nullcontext()

    def history_row(self, epoch: int, *, step: int, lr: float | None, seconds: float,
                    evaluate: bool = True) -> dict:
        """The history row of ``epoch``; ``step``: optimizer steps taken so far in all.
        ``evaluate``: False leaves the four numbers None (an epoch that ``eval_every`` skips).
        Leaves the model in eval mode (the next epoch starts with ``train()``)."""
        row = {"epoch": epoch, "step": step, **dict.fromkeys(EVALUATED), "lr": lr,
               "seconds": seconds}
        if evaluate:
            self.net.eval()
            for split, src in (("train", self.train_src), ("test", self.test_src)):
                if src is not None:
                    row[f"{split}_loss"], row[f"{split}_acc"] = evaluate_source(
                        self.net, src, self.loss, self.acc, self.eval_batch)
        return row

    @contextlib.contextmanager
    def _bn_frozen(self, frozen: bool = True):
        """Restore the buffers (BatchNorm running statistics) after the block when ``frozen``:
        extra evaluations of a step (SAM's ascent point, SVRG's snapshot, line searches) must
        not move the statistics, as in Foret et al.'s code."""
        saved = {k: v.clone() for k, v in self.net.named_buffers()} if frozen else None
        try:
            yield
        finally:
            if saved is not None:
                with torch.no_grad():
                    for k, v in self.net.named_buffers():
                        v.copy_(saved[k])

    def full_closure(self, update_bn: bool = True) -> Tensor:
        """Zero the gradients, leave the full-training-set mean-loss gradient in ``p.grad``."""
        self.opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=self.dev)
        with self._bn_frozen(not update_bn):
            for xb, yb in self.train_src.batches(self.grad_batch):
                with self.autocast():
                    out = model_output(self.net, self.loss, xb)
                loss = self.loss.total(out, yb) / self.weight_total
                loss.backward()
                total += loss.detach()
        return total

    def step_closure(self, fn):
        """``fn(update_bn)`` as a closure whose calls after the first leave the buffers alone."""
        calls = [0]

        def closure() -> Tensor:
            calls[0] += 1
            return fn(calls[0] == 1)
        return closure

    def minibatch_step(self, xb: Tensor, yb: Tensor, index: int | None) -> tuple[Tensor, Any]:
        """One optimizer step on the minibatch; (loss, output) of its first evaluation (to be
        detached before use). An optimizer that evaluates its closure once (torch's
        first-order ones) is stepped without one: the same operations, less bookkeeping."""
        if self.once:
            loss, out = self.forward_backward(xb, yb)
            self.opt.step()
            return loss, out
        record: list = []
        closure = self.minibatch_closure(xb, yb, record)
        if index is None:
            self.opt.step(closure)
        else:
            self.opt.step(closure, index=index)
        return record[0]

    def forward_backward(self, xb: Tensor, yb: Tensor) -> tuple[Tensor, Any]:
        """Zeroed gradients, then the minibatch's mean loss and its backward pass: (loss,
        output)."""
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            out = model_output(self.net, self.loss, xb)
        loss = self.loss.mean(out, yb)
        loss.backward()
        return loss, out

    def minibatch_closure(self, xb: Tensor, yb: Tensor, record: list):
        def fn(update_bn: bool) -> Tensor:
            with self._bn_frozen(not update_bn):  # restored after backward (autograd versions)
                loss, out = self.forward_backward(xb, yb)
            if not record:
                record.append((loss.detach(), out.detach()))
            return loss
        return self.step_closure(fn)

    def _spawned(self, order: Tensor, b: int, per_step: int) -> Tensor:
        """``order`` with its entries from step ``b`` on (``per_step`` a step) redrawn by
        the child's seed, after reseeding the generator with it."""
        self.gen.manual_seed(2**32 + self.spawn[1])
        rest = order[b * per_step:]
        return torch.cat([order[:b * per_step],
                          rest[torch.randperm(len(rest), generator=self.gen, device=self.dev)]])

    def _batches(self, t: int):
        """``(partition index or None, inputs, targets)`` of each step of the epoch that
        starts after ``t`` optimizer steps; the child's order from its spawn step on."""
        at = None if self.spawn is None or not t <= self.spawn[0] < t + self.steps \
            else self.spawn[0] - t     # the spawn step within this epoch
        if at == 0:
            self.gen.manual_seed(2**32 + self.spawn[1])  # the child's own SGD noise from here
        if not self.train_src.resident:
            for b, (xb, yb) in enumerate(self.train_src.batches(self.batch_size)):
                if at and b == at:
                    self.gen.manual_seed(2**32 + self.spawn[1])
                yield None, xb, yb
        elif self.fixed is not None:
            order = torch.randperm(len(self.fixed), generator=self.gen, device=self.dev)
            indices = order.tolist()
            for b in range(len(indices)):
                if at and b == at:
                    indices = self._spawned(order, b, 1).tolist()
                yield indices[b], *self.train_src.rows(self.fixed[indices[b]], self.batch_size)
        else:
            perm = torch.randperm(self.n, generator=self.gen, device=self.dev)
            if not at:  # the samples of GATHER_BYTES worth of steps read at once, a view a step
                bs, k = self.batch_size, self.gather_steps
                for s in range(0, self.steps, k):
                    xs, ys = self.train_src.rows(perm[s * bs:(s + k) * bs], k * bs)
                    for j in range(0, min(k, self.steps - s) * bs, bs):
                        yield None, take(xs, slice(j, j + bs)), \
                            None if ys is None else ys[j:j + bs]
                return
            for b in range(self.steps):
                if at and b == at:
                    perm = self._spawned(perm, b, self.batch_size)
                yield None, *self.train_src.rows(perm[b * self.batch_size:(b + 1) *
                                                      self.batch_size], self.batch_size)

    def train_epoch(self, epoch: int, bar: Any, budget: int) -> tuple[float, float, int]:
        """Train epoch ``epoch`` (1-based), its first ``budget`` steps at most; returns
        (training seconds, last learning rate, optimizer steps taken)."""
        net, opt = self.net, self.opt
        net.train()
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        t0 = time.perf_counter()
        t = (epoch - 1) * self.steps
        lr = self.sched(t)
        if "snapshot" in self.requires:
            opt.update_snapshot(lambda: self.full_closure(update_bn=False))
        if "full_batch" in self.requires:
            self._set_lr(lr)
            opt.step(self.step_closure(self.full_closure))
            taken = 1
            if self.on_step is not None:
                self.on_step(t + 1)
        else:
            sum_loss = torch.zeros((), device=self.dev)
            sum_correct = torch.zeros((), dtype=torch.float64, device=self.dev)
            seen = 0
            shown = time.perf_counter()
            taken = 0
            set_lr = None   # the rate in the param groups (set again only when it changes)
            for b, (index, xb, yb) in enumerate(self._batches(t)):
                if b == budget:
                    break
                taken += 1
                lr = self.sched(t + b)
                if lr != set_lr:
                    self._set_lr(lr)
                    set_lr = lr
                if self.augment:
                    xb = self.augment_fn(xb, self.gen, 4, fill=self.fill)
                batch_loss, out = self.minibatch_step(xb, yb, index)
                if self.on_step is not None:
                    self.on_step(t + b + 1)
                if not bar.disable:  # the running means are only shown (no kernels otherwise)
                    weight = self.loss.weight(yb)
                    sum_loss += batch_loss.detach() * weight
                    if self.acc is not None:
                        sum_correct += self.acc.total(out.detach(), yb)
                    seen += weight
                now = time.perf_counter()
                if not bar.disable and now - shown > 0.5:
                    shown = now
                    acc = "" if self.acc is None else f" acc {sum_correct.item() / seen:.1%}"
                    bar.set_postfix_str(f"epoch {epoch} batch {b + 1}/{self.steps} "
                                        f"loss {sum_loss.item() / seen:.4g}{acc}")
                if self.stop_check is not None and b + 1 < budget and \
                        self.stop_check(t + b + 1):
                    break   # the epoch's last step is checked on its history row
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        return time.perf_counter() - t0, lr, taken

    def _set_lr(self, lr: float) -> None:
        for group in self.opt.param_groups:
            group["lr"] = lr

"""The user's own data and loss, named like user models, and models trained elsewhere.

``--data path/to/file.py:factory`` (or ``package.module:factory``): ``factory()`` returns
``(train, test)``, each any source of :mod:`landscape.sources` (tensors, a Dataset, a
DataLoader). ``--loss ...:fn`` names a loss callable (:class:`landscape.sources.Loss`). A run
directory records both as code specs with their files' SHA-256 (imported later only when
trusted, :mod:`landscape.trust`) and a digest of the data, so every later command rebuilds
the same data and loss and refuses with one line when the factory's data changed. Each
split is read once (:func:`scan_data`: one pass counts, checks, digests and keeps it), and
the engine's sources take that read over; a scan is cached by the factory file's SHA-256, so
loading the same run again reads only the splits used, each checked as it is read.

:func:`adopt` makes a run directory from a checkpoint saved by any code, without training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from landscape.errors import LandscapeError
from landscape.hashing import data_digest, sample_digests, sha256_hex, split_part
from landscape.models.user import load_attribute
from landscape.sources import Source, cast, leaves, length
from landscape.trust import Code, check_recorded, record, resolve

__all__ = ["DataScan", "UserData", "checkpoint_state", "load_user_data", "read_split",
           "scan_data"]

SPLITS = ("train", "test")


#: The most classes integer targets may declare (largest label + 1): far above any task
#: (ImageNet-21k has 21,841; token vocabularies ~256k), far below what would exhaust memory
#: in the model's last layer.
MAX_CLASSES = 10**7


@dataclass(frozen=True)
class DataScan:
    """What one pass over the user data finds: ``digest`` (:func:`scan_data`), the
    per-sample ``input_shape`` (``(1,)`` for tuple or dict inputs), ``num_outputs`` (classes,
    largest train label + 1, for integer targets; target elements per sample for floating
    ones), the samples per split (``sizes``), each split's share of the digest (``parts``:
    the SHA-256 of what that split adds to it), and ``reads``: each split as the pass read
    it, a host :class:`landscape.sources.Source` that counted it and kept it when it fit
    (empty in a cached scan)."""

    digest: str
    input_shape: tuple[int, ...]
    num_outputs: int
    sizes: dict[str, int]
    parts: dict[str, str] = field(default_factory=dict)
    reads: dict[str, Source] = field(default_factory=dict, repr=False, compare=False)


#: Scans of data made by factory files, by (spec, the file's SHA-256, whole, labels): a
#: second load of the same run reads each split once, when it is used, and checks it then.
_SCANS: dict[tuple[str, str, bool, bool], DataScan] = {}


def _bad_label(y: torch.Tensor, classes: int | None) -> tuple[int, int] | None:
    """(sample index in ``y``, label) of the first label below 0 or, given ``classes``, at or
    above it; None if all are in range."""
    flat = y.reshape(len(y), -1)
    bad = flat < 0 if classes is None else (flat < 0) | (flat >= classes)
    hits = bad.nonzero()
    if not len(hits):
        return None
    row, col = hits[0].tolist()
    return row, int(flat[row, col])


class _Rows:
    """The observer of one split's read (:class:`landscape.sources.Source` ``observe``): each
    sample's SHA-256 as float64/int64 bytes, the first input shape, the floating target size,
    the largest integer label, and labels outside [0, ``classes``) refused when ``labels``."""

    def __init__(self, name: str, labels: bool, classes: int | None) -> None:
        self.name, self.labels, self.classes = name, labels, classes
        self.rows: list[bytes] = []
        self.shape: tuple[int, ...] | None = None
        self.outputs: int | None = None
        self.top = -1

    def __call__(self, inputs: Any, targets: torch.Tensor | None) -> None:
        batch = cast((inputs, targets), torch.device("cpu"), torch.float64)
        n = length(batch[0])
        self.rows += sample_digests([t.numpy() for t in leaves(batch)])
        x, y = batch
        if self.shape is None:
            self.shape = tuple(x.shape[1:]) if isinstance(x, torch.Tensor) else (1,)
        if not isinstance(y, torch.Tensor) or not y.numel():
            return
        if y.is_floating_point():
            self.outputs = int(y[0].numel()) or 1
            return
        if self.labels and (bad := _bad_label(y, self.classes)) is not None:
            raise LandscapeError(
                f"the user data's {self.name} split has label {bad[1]} at sample "
                f"{len(self.rows) - n + bad[0]}, outside [0, {self.classes or 'classes'}); "
                "class labels for the built-in cross-entropy are 0, 1, ..., classes-1")
        self.top = max(self.top, int(y.max()))

    def part(self) -> bytes:
        """This split's share of the digest (:func:`landscape.hashing.split_part`)."""
        return split_part(self.name, self.rows)


def read_split(name: str, data: Any, whole: bool = False, labels: bool = False,
               classes: int | None = None) -> tuple[Source, _Rows]:
    """One read of split ``name``: the host Source that counted it and kept it when it fit
    the CPU's default budget (:func:`landscape.sources.default_budget`), and the
    observer that digested and checked it (:class:`_Rows`). Tensors are not read from a
    loader: they are digested in slices. An empty split is a one-line LandscapeError."""
    rows = _Rows(name, labels, classes)
    source = Source(data, torch.device("cpu"), None, None, whole=whole, observe=rows)
    if source.n_batches is None:  # tensors: nothing was iterated
        for inputs, targets in source.batches(4096):
            rows(inputs, targets)
    if not rows.rows:
        raise LandscapeError(f"the user data's {name} split is empty")
    return source, rows


def scan_data(splits: dict[str, Any], whole: bool = False, labels: bool = True) -> DataScan:
    """One pass over every split (:func:`read_split`, which also counts and keeps it): the
    SHA-256 of the samples as float64/int64 bytes, independent of their order (the sorted
    digests of the samples, so that a shuffling loader digests the same every pass), the
    shapes a model factory is told and the split sizes. ``whole``: batches are passed whole
    to a ``forward_loss`` hook (no target pair). ``labels``: integer targets are class
    labels of the built-in cross-entropy, so every one must lie in [0, classes), classes from
    the whole train split. An empty split, a label out of range (naming the split and the
    sample's index) or more than :data:`MAX_CLASSES` classes is a one-line LandscapeError.
    Cost: one pass over the data, one small hash per sample."""
    shape: tuple[int, ...] | None = None
    classes: int | None = None
    outputs = 1
    parts: dict[str, bytes] = {}
    reads: dict[str, Source] = {}
    for name in SPLITS:
        if splits.get(name) is None:
            continue
        reads[name], rows = read_split(name, splits[name], whole, labels, classes)
        shape = shape or rows.shape
        outputs = rows.outputs or outputs
        if name == "train" and rows.top >= 0:
            if rows.top + 1 > MAX_CLASSES:
                raise LandscapeError(f"the user data's train split has label {rows.top}: "
                                     f"{rows.top + 1:,} classes, more than {MAX_CLASSES:,}")
            classes = outputs = rows.top + 1
        parts[name] = rows.part()
    return DataScan(data_digest(parts.values()), shape or (1,), outputs,
                    {k: v.n for k, v in reads.items()},
                    {k: sha256_hex(v) for k, v in parts.items()}, reads)


def _describe(obj: Any, kind: str) -> dict[str, str | None] | None:
    """The run.json record of a user spec (:func:`landscape.trust.record`); a Python object
    is recorded by its type name, with no ``name``, so that no file can rebuild it."""
    if obj is None:
        return None
    if isinstance(obj, str):
        return record(obj, kind)
    fn = getattr(obj, "fn", obj)
    what = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return {"name": None, "sha256": None, "object": f"{type(obj).__module__}.{what}"}


class UserData:
    """The splits a user data factory returned, their loss, and the spec that rebuilds them.

    ``data``: a spec (``"file.py:factory"``, ``"package.module:factory"``) or, in Python, what
    a factory returns: ``(train, test)`` or ``{"train": ..., "test": ...}``. ``loss``: a spec or
    a callable ``loss_fn(output, target)``; ``forward_loss``: a spec or a callable hook
    ``hook(model, batch)`` instead (:class:`landscape.sources.Loss`); neither: the built-in
    loss for the targets' dtype. ``split(name)`` gives the ``"train"`` or ``"test"`` source;
    ``spec`` is the record in run.json. Data and losses given as Python objects are recorded
    by type only: a later command cannot rebuild them from the file.
    """

    def __init__(self, data: Any, loss: Any = None, *, forward_loss: Any = None,
                 source: str | None = None, recorded: dict | None = None,
                 trust: bool = False) -> None:
        where = source or "run.json"
        codes: dict[str, Code] = {}  # the judged files that are loaded, for a recorded run
        if recorded is not None:  # read from a file: the user code must be trusted
            for kind in ("data", "loss", "forward_loss"):
                entry = recorded.get(kind)
                if entry is not None and (not isinstance(entry, dict) or not (
                        entry.get("name") is None or isinstance(entry.get("name"), str))):
                    raise LandscapeError(f"{where}: the {kind} record is {entry!r}, not "
                                         "{'name': ..., 'sha256': ...}")
                if entry and entry.get("name") is None:
                    raise LandscapeError(
                        f"{where}: the run's {kind} was given in Python ({entry.get('object')}),"
                        " which no file can rebuild: load_run(path, data=False) and give the "
                        "data and loss to Objective yourself")
                if entry:
                    codes[kind] = check_recorded(entry["name"], entry.get("sha256"),
                                                 source=where, trust=trust,
                                                 kind="data" if kind == "data" else "loss")
        if forward_loss is not None and loss is not None:
            raise LandscapeError("give a loss or a forward_loss hook, not both")
        made, key = data, None
        if isinstance(data, str):
            code = codes.get("data") or resolve(data, "data")
            key = (code.spec, code.sha256, forward_loss is not None,
                   loss is None and forward_loss is None)
            factory = load_attribute(data, "data", code=code)
            try:
                made = factory()
            except Exception as exc:
                raise LandscapeError(f"data factory {data!r} failed: {type(exc).__name__}: "
                                     f"{' '.join(str(exc).split())}") from exc
        if isinstance(made, dict):
            made = tuple(made.get(s) for s in SPLITS)
        if not isinstance(made, tuple | list) or len(made) != 2 or made[0] is None:
            raise LandscapeError(f"data {data if isinstance(data, str) else 'given'!r} must be "
                                 "(train, test) (a factory returns them)")
        self.splits = dict(zip(SPLITS, made, strict=True))
        self.loss = (load_attribute(loss, "loss", code=codes.get("loss"))
                     if isinstance(loss, str) else loss)
        self.forward_loss = (load_attribute(forward_loss, "forward_loss",
                                            code=codes.get("forward_loss"))
                             if isinstance(forward_loss, str) else forward_loss)
        self.name = data if isinstance(data, str) else "python"
        self._changed = (f"{where}: the data of {data!r} changed since the run recorded them "
                         f"(digest {str((recorded or {}).get('digest'))[:12]}...")
        cached = _SCANS.get(key) if recorded is not None else None
        if cached is not None and cached.digest == recorded.get("digest"):
            self.scan = replace(cached, reads={})  # each split read and checked when used
        else:
            self.scan = scan_data(self.splits, whole=self.forward_loss is not None,
                                  labels=self.loss is None and self.forward_loss is None)
            if key is not None and key[1] is not None:
                _SCANS[key] = replace(self.scan, reads={})
        digest = self.scan.digest
        if recorded is not None and recorded.get("digest") not in (None, digest):
            raise LandscapeError(f"{self._changed}, now {digest[:12]}...)")
        self.spec = {"user": True, "data": _describe(data, "data"),
                     "loss": _describe(loss, "loss"), "digest": digest,
                     **({"forward_loss": _describe(forward_loss, "forward_loss")}
                        if forward_loss is not None else {})}

    def split(self, name: str) -> Source:
        """Split ``name`` as the scan read it (a host :class:`landscape.sources.Source`, which
        an engine's Source takes over without a second read). A split of a cached scan is
        read here, once, and refused with one line if it is not the data the scan saw."""
        if name not in SPLITS or self.splits.get(name) is None:
            raise LandscapeError(f"the user data have no {name!r} split")
        if name not in self.scan.reads:
            source, rows = read_split(name, self.splits[name], self.forward_loss is not None)
            if sha256_hex(rows.part()) != self.scan.parts.get(name):
                raise LandscapeError(f"{self._changed}; its {name} split differs)")
            self.scan.reads[name] = source
        return self.scan.reads[name]

    def shapes(self) -> tuple[tuple[int, ...], int]:
        """(per-sample input shape, number of outputs) that a user model factory is told, from
        the scan of the whole data (:class:`DataScan`)."""
        return self.scan.input_shape, self.scan.num_outputs


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

"""Data sources and losses of the engine: any tensors, any batches, any loss.

A **source** is what :class:`landscape.objective.Objective` evaluates on:

- a pair ``(inputs, targets)`` of tensors, where ``inputs`` is a tensor, a tuple of tensors
  (passed as ``model(*inputs)``) or a dict of tensors (``model(**inputs)``), all with the
  samples on dim 0, and ``targets`` a tensor of any shape ``[n, ...]`` (or None with a
  ``forward_loss`` hook);
- any re-iterable of such batches, e.g. a ``torch.utils.data.DataLoader``; a map-style
  ``torch.utils.data.Dataset`` is wrapped in a DataLoader of 256 samples per batch.

Integer tensors (token ids, labels) keep their dtype; floating ones follow the engine's
precision. Data whose bytes fit the memory budget (default: :data:`DATA_BUDGET_FRACTION` of
the free memory of the device, host RAM on the CPU; ``data_budget=`` overrides it) are made
resident on the device once; larger data are **streamed**: each pass reads the tensors (or
iterates the loader) again, from pinned host memory with the next batch copied on a side
CUDA stream while the current one computes. Means do not depend on either choice or on the
batching: the engine sums each batch and divides by the total of the whole source (samples,
or target elements for a token-level loss, see :class:`Loss`).

A **loss** is ``"cross_entropy"``, ``"mse"``, any callable ``loss_fn(output, target)``
returning the batch mean, or a ``forward_loss(model, batch)`` hook for models that compute
their own loss. Per-sample measures (per-sample gradients, their norms, gradient noise) need
the per-sample form: the built-in losses, a callable that takes ``reduction`` (``torch.nn``
losses and ``torch.nn.functional`` losses: called with ``reduction="none"``), or one
wrapped in :func:`per_sample`, returning ``[B]`` or ``[B, ...]`` unreduced losses.
"""

from __future__ import annotations

import copy
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape import distributed
from landscape.errors import LandscapeError, unknown_name

__all__ = ["DATA_BUDGET_FRACTION", "Loss", "Source", "call_model", "cast", "default_budget",
           "per_sample"]

#: Default memory budget for resident data: this fraction of the device's free memory (of
#: the available host RAM on the CPU).
DATA_BUDGET_FRACTION = 0.5
MEAN_OVER = ("samples", "elements")


# ------------------------------------------------------------------------------ batch trees
def tree_map(fn: Callable[[Tensor], Any], obj: Any) -> Any:
    """``fn`` applied to every tensor of a tensor, tuple, list or dict (nested)."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple | list):
        return type(obj)(tree_map(fn, o) for o in obj)
    if isinstance(obj, dict):
        return {k: tree_map(fn, v) for k, v in obj.items()}
    return obj


def leaves(obj: Any) -> list[Tensor]:
    """The tensors of ``obj``, in order."""
    found: list[Tensor] = []
    tree_map(found.append, obj)
    return found


def cast(obj: Any, device: torch.device | str, dtype: torch.dtype,
         non_blocking: bool = False) -> Any:
    """``obj`` on ``device``; floating tensors in ``dtype``, all others keep their dtype."""
    return tree_map(lambda t: t.to(device=device, dtype=dtype if t.is_floating_point()
                                   else t.dtype, non_blocking=non_blocking), obj)


def length(obj: Any) -> int:
    """The number of samples (dim 0 of the first tensor)."""
    found = leaves(obj)
    if not found or found[0].dim() == 0:
        raise LandscapeError("a batch must hold tensors with the samples on dim 0")
    return int(found[0].shape[0])


def take(obj: Any, idx: Tensor | slice) -> Any:
    """The samples ``idx`` of every tensor."""
    return tree_map(lambda t: t[idx], obj)


def concat(parts: list[Any]) -> Any:
    """Batches joined along dim 0, structure kept."""
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(parts)
    if isinstance(first, tuple | list):
        return type(first)(concat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    return first


def nbytes(obj: Any) -> int:
    return sum(t.numel() * t.element_size() for t in leaves(obj))


def call_model(model: Callable, inputs: Any) -> Any:
    """``model(**inputs)`` for a dict, ``model(*inputs)`` for a tuple or list, else
    ``model(inputs)``."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple | list):
        return model(*inputs)
    return model(inputs)


def default_budget(device: torch.device) -> int:
    """:data:`DATA_BUDGET_FRACTION` of the free memory of ``device`` (host RAM on the CPU)."""
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(DATA_BUDGET_FRACTION * free)


def _pair(batch: Any) -> tuple[Any, Tensor | None]:
    """A batch as ``(inputs, targets)``."""
    if isinstance(batch, tuple | list) and len(batch) == 2:
        return batch[0], batch[1]
    raise LandscapeError("a batch must be a pair (inputs, targets) (anything, with a "
                         f"forward_loss hook), got {type(batch).__name__}"
                         + (f" of {len(batch)}" if isinstance(batch, tuple | list) else ""))


def _is_tensors(data: Any) -> bool:
    return (isinstance(data, tuple | list) and len(data) == 2
            and bool(leaves(data[0])) and all(isinstance(t, Tensor) for t in leaves(data))
            and (data[1] is None or isinstance(data[1], Tensor)))


# ------------------------------------------------------------------------------ sources
def _one_shot() -> LandscapeError:
    return LandscapeError("data larger than the memory budget are read once per pass: give a "
                          "re-iterable source (a DataLoader, a list), not an iterator")


class Source:
    """One data split, resident on ``device`` or streamed (see the module docstring).

    ``n``: samples; ``elements``: target elements (``n`` without targets); ``resident``:
    whether the data stay on the device. Building it reads an iterable once (to count it and
    to keep it when it fits ``budget`` bytes). ``shard=(rank, world)`` keeps only this rank's
    share (contiguous samples of tensors; every ``world``-th batch of an iterable); ``n`` and
    ``elements`` are then this rank's. ``n_batches``: the batches of one pass of an iterable
    (this rank's), None for tensors. ``dtype=None`` keeps every tensor's own dtype.

    ``observe(inputs, targets)`` is called on every host batch of that one read of an
    iterable, before any cast (:func:`landscape.userdata.scan_data` digests and checks the
    data in it). ``data`` may be a host Source that already read an iterable (the scan's):
    its counts are taken over and the data it kept are used when they fit ``budget`` (on the
    CPU with the default budget, memory they already hold counts as free), else its iterable
    is streamed: no second read. Under a shard, the iterable is read again.
    """

    def __init__(self, data: Any, device: torch.device, dtype: torch.dtype | None,
                 budget: int | None = None, shard: tuple[int, int] = (0, 1),
                 whole: bool = False,
                 observe: Callable[[Any, Tensor | None], None] | None = None) -> None:
        self.device, self.dtype, self.whole = device, dtype, whole
        rank, world = shard
        self._host: tuple[Any, Any] | None = None     # streamed tensors
        self._iterable: Iterable | None = None        # streamed batches
        self._data: tuple[Any, Any] | None = None     # resident (inputs, targets)
        self._shard = shard
        self.n_batches: int | None = None
        if isinstance(data, Source):
            if world == 1 and data.n_batches is not None and data.whole == whole:
                self._adopt(data, budget)
                return
            data = data.given
        self.given = data                             # the data as given
        budget = default_budget(device) if budget is None else int(budget)
        if isinstance(data, torch.utils.data.Dataset) and not isinstance(
                data, torch.utils.data.IterableDataset) and not _is_tensors(data):
            data = self.given = torch.utils.data.DataLoader(data, batch_size=256)
        if whole and _is_tensors(data) and data[1] is not None:
            data = (data, None)
        if _is_tensors(data):
            inputs, targets = data
            if whole:  # the hook gets the whole batch; targets only carry the sample count
                targets = torch.zeros(length(inputs), 0)
            n = length(inputs)
            lo, hi = n * rank // world, n * (rank + 1) // world
            host = (take(inputs, slice(lo, hi)), None if targets is None else targets[lo:hi])
            if nbytes(host) <= budget:
                self._data = cast(host, device, dtype)
            else:
                self._host = host
            self.n = hi - lo
            self.elements = self.n if targets is None else targets[lo:hi].numel()
            self.target_float = targets is not None and targets.is_floating_point()
            return
        if not isinstance(data, Iterable):
            raise LandscapeError(f"data must be (inputs, targets) tensors, a Dataset or an "
                                 f"iterable of batches, got {type(data).__name__}")
        self._iterable = data
        kept: list[tuple[Any, Any]] | None = []
        self.n = self.elements = self.n_batches = 0
        self.target_float = False
        size = 0
        for batch in self._mine(iter(data)):
            inputs, targets = self._pair(batch)
            if observe is not None:
                observe(inputs, targets)
            self.n_batches += 1
            b = length(inputs)
            self.n += b
            self.elements += b if targets is None else targets.numel()
            self.target_float = targets is not None and targets.is_floating_point()
            size += nbytes((inputs, targets))
            if kept is not None and size <= budget:
                kept.append(cast((inputs, targets), device, dtype))
            else:
                kept = None
        if kept is not None:
            self._iterable = None
            if kept:
                inputs = concat([k[0] for k in kept])
                targets = None if kept[0][1] is None else concat([k[1] for k in kept])
                self._data = (inputs, targets)
        elif isinstance(data, Iterator):
            raise _one_shot()

    def _adopt(self, read: Source, budget: int | None) -> None:
        """Take over the counts of ``read``, a host Source that read an iterable once, and
        its kept data when they fit ``budget``; else stream its iterable."""
        for name in ("n", "elements", "target_float", "n_batches", "given"):
            setattr(self, name, getattr(read, name))
        self._iterable = read._iterable if read._data is None else read.given
        if read._data is None:
            return
        size = nbytes(read._data)
        if budget is None:
            budget = default_budget(self.device) + (size if self.device.type == "cpu" else 0)
        if size <= budget:
            self._iterable, self._data = None, cast(read._data, self.device, self.dtype)
        elif isinstance(read.given, Iterator):
            raise _one_shot()

    def _pair(self, batch: Any) -> tuple[Any, Tensor | None]:
        if self.whole:
            return batch, torch.zeros(length(batch), 0)
        return _pair(batch)

    def head(self, k: int, batch_size: int) -> Source:
        """A resident source of the first ``k`` samples."""
        rows = self.rows(torch.arange(min(k, self.n)), batch_size)
        return Source(rows, self.device, self.dtype, budget=2**62)

    @property
    def resident(self) -> bool:
        return self._data is not None or (self._host is None and self._iterable is None)

    def _mine(self, batches: Iterator) -> Iterator:
        rank, world = self._shard
        for i, batch in enumerate(batches):
            if i % world == rank:
                yield batch

    def _host_batches(self, batch_size: int) -> Iterator[tuple[Any, Any]]:
        if self._host is not None:
            inputs, targets = self._host
            for s in range(0, self.n, batch_size):
                yield (take(inputs, slice(s, s + batch_size)),
                       None if targets is None else targets[s:s + batch_size])
        else:
            for batch in self._mine(iter(self._iterable)):
                yield self._pair(batch)

    def _streamed(self, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """Host batches on the device; on CUDA pinned and copied one batch ahead on a side
        stream."""
        batches = self._host_batches(batch_size)
        if self.device.type != "cuda":
            for batch in batches:
                yield cast(batch, self.device, self.dtype)
            return
        side = torch.cuda.Stream(self.device)

        def load(batch: Any) -> Any:
            pinned = tree_map(lambda t: t if t.is_pinned() else t.pin_memory(), batch)
            with torch.cuda.stream(side):
                return cast(pinned, self.device, self.dtype, non_blocking=True)

        nxt = next((load(b) for b in batches), None)
        while nxt is not None:
            current = nxt
            torch.cuda.current_stream(self.device).wait_stream(side)
            for t in leaves(current):
                t.record_stream(torch.cuda.current_stream(self.device))
            nxt = next((load(b) for b in batches), None)
            yield current

    def batches(self, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """``(inputs, targets)`` on the device: slices of ``batch_size`` samples of resident or
        streamed tensors, or the iterable's own batches."""
        if self._data is None:
            yield from self._streamed(batch_size)
            return
        inputs, targets = self._data
        for s in range(0, self.n, batch_size):
            yield self._recast((take(inputs, slice(s, s + batch_size)),
                                None if targets is None else targets[s:s + batch_size]))

    def one_chunk(self, batch_size: int) -> bool:
        """Whether :meth:`batches` of ``batch_size`` is one resident slice (the whole data)."""
        return self._data is not None and self.n <= batch_size

    def as_dtype(self, dtype: torch.dtype) -> Source:
        """The same data with floating tensors in ``dtype`` (resident data cast per batch)."""
        twin = copy.copy(self)
        twin.dtype, twin._recast = dtype, lambda batch: cast(batch, self.device, dtype)
        return twin

    def _recast(self, batch: Any) -> Any:  # resident batches are kept in self.dtype
        return batch

    def local(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(positions in ``idx``, local indices) of the samples of the global indices
        ``idx`` (rank-major order) that this rank's shard holds."""
        rank, world = self._shard
        sizes = [self.n] if world == 1 else distributed.all_gather(self.n)
        lo = sum(sizes[:rank])
        pos = ((idx >= lo) & (idx < lo + self.n)).nonzero().flatten()
        return pos, idx[pos] - lo

    def empty(self) -> tuple[Any, Any]:
        """A batch of no samples shaped like the first one (a rank holding none of a subset)."""
        inputs, targets = next(self.batches(1))
        return take(inputs, slice(0, 0)), None if targets is None else targets[:0]

    def rows(self, idx: Tensor, batch_size: int) -> tuple[Any, Any]:
        """The samples ``idx`` (this rank's order), in that order, on the device. Streamed
        data are read once (a shuffling loader has no fixed order: give a fixed one). Indices
        already on the device cost no copy for resident data."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        if self._data is not None:
            dev = idx.to(self.device)
            inputs, targets = self._data
            inputs = inputs.index_select(0, dev) if isinstance(inputs, Tensor) \
                else take(inputs, dev)      # (index_select: the same rows, less dispatch)
            return self._recast((inputs, None if targets is None
                                 else targets.index_select(0, dev)))
        idx = idx.cpu()
        parts, where, start = [], [], 0
        for inputs, targets in self._host_batches(batch_size):
            b = length(inputs)
            hit = ((idx >= start) & (idx < start + b)).nonzero().flatten()
            if hit.numel():
                local = idx[hit] - start
                parts.append(cast((take(inputs, local), None if targets is None
                                   else targets[local]), self.device, self.dtype))
                where.append(hit)
            start += b
        if not parts:
            raise LandscapeError("no sample selected")
        order = torch.argsort(torch.cat(where)).to(self.device)
        inputs = take(concat([p[0] for p in parts]), order)
        targets = None if parts[0][1] is None else concat([p[1] for p in parts])[order]
        return inputs, targets


# ------------------------------------------------------------------------------ losses
class per_sample:  # noqa: N801 - used as a function: loss=per_sample(fn)
    """Marks ``fn(output, target)`` as returning unreduced losses ``[B]`` or ``[B, ...]``."""

    def __init__(self, fn: Callable[[Any, Tensor], Tensor]) -> None:
        self.fn = fn
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)

    def __call__(self, output: Any, target: Tensor) -> Tensor:
        return self.fn(output, target)


def _unreduced(fn: Callable) -> Callable | None:
    """The ``reduction="none"`` form of a torch-style loss, or None."""
    if isinstance(fn, per_sample):
        return fn
    if isinstance(fn, nn.Module) and hasattr(fn, "reduction"):
        twin = copy.copy(fn)
        twin.reduction = "none"
        return twin
    try:
        takes = "reduction" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    return (lambda out, y: fn(out, y, reduction="none")) if takes else None


def _name(fn: Any) -> str:
    fn = getattr(fn, "fn", fn)
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{getattr(fn, '__module__', '') or type(fn).__module__}.{name}"


class Loss:
    """What the engine needs of a loss: sums over a batch, per-sample losses when available.

    ``loss``: ``"cross_entropy"`` (classes on the last dim of the output), ``"mse"``, or a
    callable ``loss_fn(output, target)``; ``forward_loss``: a hook ``hook(model, batch)``
    instead (the model is called as usual inside it). Either returns the batch mean, or
    unreduced losses when it is per-sample (see the module docstring). ``mean_over``:
    ``"samples"`` (each sample weighs the same; the default) or ``"elements"`` (each target
    element weighs the same: a token-level loss; the default for the built-in cross-entropy
    with targets of more than one dimension; a hook always means over samples). A batch-mean
    callable must return its mean in those units; the mean over the whole source is then
    exact whatever the batching.
    """

    def __init__(self, loss: str | Callable | None = None, forward_loss: Callable | None = None,
                 *, target_float: bool = False, target_dim: int = 1,
                 mean_over: str | None = None) -> None:
        if forward_loss is not None and loss is not None:
            raise LandscapeError("give a loss or a forward_loss hook, not both")
        self.hook = forward_loss is not None
        fn = forward_loss if self.hook else loss
        if fn is None:
            fn = "mse" if target_float else "cross_entropy"
        if isinstance(fn, str):
            if fn not in ("cross_entropy", "mse"):
                raise unknown_name("loss", fn, ("cross_entropy", "mse"))
            self.name, self.fn, self.unreduced = fn, None, None
        elif callable(fn):
            self.name, self.fn, self.unreduced = _name(fn), fn, _unreduced(fn)
        else:
            raise LandscapeError(f"a loss must be a name or a callable, got {type(fn).__name__}")
        self.has_per_sample = self.fn is None or self.unreduced is not None
        default = "elements" if self.name == "cross_entropy" and target_dim > 1 else "samples"
        self.mean_over = "samples" if self.hook else (mean_over or default)
        if self.mean_over not in MEAN_OVER:
            raise unknown_name("mean_over", self.mean_over, MEAN_OVER)
        self.is_classification = self.name == "cross_entropy"

    def __call__(self, model: Any, batch: Any) -> Tensor:
        """The hook's value (unreduced when it has the per-sample form)."""
        return (self.unreduced or self.fn)(model, batch)

    def weight(self, targets: Tensor) -> int:
        """The batch's share of the mean: samples, or target elements."""
        return targets.numel() if self.mean_over == "elements" else int(targets.shape[0])

    def _raw(self, out: Any, y: Tensor) -> Tensor:
        """Unreduced losses ``[B, ...]``."""
        if self.hook:
            return out
        if self.fn is not None:
            return self.unreduced(out, y)
        out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
        if self.name == "cross_entropy":  # torch's fused log-softmax: its double backward
            # is ~15x more accurate in float32 than log-sum-exp minus the label's logit
            return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1),
                                   reduction="none").reshape(y.shape)
        return F.mse_loss(out.reshape(y.shape), y, reduction="none")

    def samples(self, out: Any, y: Tensor) -> Tensor:
        """Each sample's loss ``[B]`` in the units of :meth:`total`: its mean over its target
        elements (``"samples"``) or their sum (``"elements"``). ``out``: the model's output
        (the hook's value for a hook)."""
        if not self.has_per_sample:
            raise LandscapeError(
                f"this measure needs per-sample losses, and the loss {self.name} returns a "
                "batch mean: give a loss that takes reduction= (torch losses) or wrap it in "
                "landscape.sources.per_sample(fn)")
        raw = self._raw(out, y)
        if raw.dim() == 1:  # one target element per sample
            return raw
        raw = raw.reshape(y.shape[0], -1)
        return raw.sum(1) if self.mean_over == "elements" else raw.mean(1)

    def _fused(self, out: Any, y: Tensor, reduction: str) -> Tensor | None:
        """The built-in cross-entropy as one fused kernel (``reduction`` "sum" or "mean"
        over the target elements), or None where it does not apply."""
        if self.name != "cross_entropy" or not (y.dim() == 1 or self.mean_over == "elements"):
            return None
        out = out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
        if out.dim() != 2 or y.dim() != 1:  # (no views in a training step's graph otherwise)
            out, y = out.reshape(-1, out.shape[-1]), y.reshape(-1)
        return F.cross_entropy(out, y, reduction=reduction)

    def total(self, out: Any, y: Tensor) -> Tensor:
        """The batch's loss summed in units of :meth:`weight` (its mean times the weight)."""
        fused = self._fused(out, y, "sum")
        if fused is not None:
            return fused
        if self.has_per_sample:
            return self.samples(out, y).sum()
        return (out if self.hook else self.fn(out, y)) * self.weight(y)

    def mean(self, out: Any, y: Tensor) -> Tensor:
        """The batch's mean loss, :meth:`total` over :meth:`weight` (for the built-in
        cross-entropy one fused kernel, without the division: a training step's loss)."""
        fused = self._fused(out, y, "mean")
        return fused if fused is not None else self.total(out, y) / self.weight(y)


#: The one unit of every stored accuracy (surface datasets, run histories, study tables, JSON):
#: a fraction in [0, 1]; text and figures show it in percent. Stored beside each as ``unit``.
ACCURACY_UNIT = "fraction"


def accuracy(out: Tensor, y: Tensor) -> Tensor:
    """1.0 where the largest output (last dim) is the target class, else 0.0: ``[B, ...]``."""
    return (out.argmax(-1) == y).to(torch.float64)


def metric(fn: Callable, mean_over: str) -> Loss:
    """A metric ``fn(output, target)`` (batch mean, or unreduced when :func:`per_sample`)
    averaged like the loss."""
    return Loss(fn, mean_over=mean_over)

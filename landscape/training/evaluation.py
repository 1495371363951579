"""Evaluation of a model on data: mean loss and accuracy over a source (the trainer's history
rows and target checks), and the model's output as a loss sees it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from landscape.sources import Loss, Source, accuracy, call_model, metric, per_sample


def evaluate(model: nn.Module, x: Tensor, y: Tensor, loss: str,
             batch_size: int = 1024) -> tuple[float, float | None]:
    """Mean loss and accuracy (None for regression) of ``model`` on tensors ``(x, y)`` with the
    built-in loss ``loss``: :func:`evaluate_source` on them."""
    source = Source((x, y), x.device, x.dtype if x.is_floating_point() else torch.float32,
                    budget=2**62)
    fn = Loss(loss, target_float=y.is_floating_point(), target_dim=y.dim())
    return evaluate_source(model, source, fn, accuracy_metric(fn, y), batch_size)


@torch.no_grad()
def evaluate_source(model: nn.Module, source: Source, loss: Loss, acc: Loss | None,
                    batch_size: int = 1024) -> tuple[float, float | None]:
    """Mean loss and accuracy (None when ``acc`` is None) of ``model`` over ``source``.

    Eval mode, no grad, float32 forward in batches of ``batch_size`` (an iterable's own
    batches), sums of :meth:`landscape.sources.Loss.total` accumulated in float64 and divided
    by the whole source's weight: the engine's loss and means. The model's training flag is
    restored. Cost: one forward pass over the data.
    """
    was_training = model.training
    switch = any(m.training for m in model.modules())  # (a model in eval mode stays so)
    if switch:
        model.eval()
    sums = []   # per chunk: [loss sum, correct] in float64, one host read at the end
    try:
        for xb, yb in source.batches(batch_size):
            out = model_output(model, loss, xb)
            sums.append(torch.stack([loss.total(out, yb).double()] + (
                [] if acc is None else [acc.total(out, yb).double()])))
    finally:
        if switch:
            model.train(was_training)
    weight = source.elements if loss.mean_over == "elements" else source.n
    totals = (sums[0] if len(sums) == 1 else torch.stack(sums).sum(0)).tolist()
    mean = totals[0] / weight
    if acc is None:
        return mean, None
    correct = totals[1] / weight
    return mean, (math.nan if math.isnan(mean) else correct)  # NaN logits: no accuracy


def accuracy_metric(loss: Loss, targets: Tensor | None) -> Loss | None:
    """Accuracy averaged like ``loss`` when ``targets`` (some of them) are class labels
    (integers, a loss of the model's output), as the engine's default metric; else None."""
    if loss.hook or targets is None or targets.is_floating_point():
        return None
    return metric(per_sample(accuracy), loss.mean_over)


def model_output(net: nn.Module, loss: Loss, inputs: Any) -> Any:
    """The model's output on ``inputs`` (float32 if floating), or a ``forward_loss`` hook's
    value on the whole batch."""
    out = loss(net, inputs) if loss.hook else call_model(net, inputs)
    return out.float() if isinstance(out, Tensor) and out.is_floating_point() else out

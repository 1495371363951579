"""The comparison figure of a study (:mod:`landscape.study`): what a reviewer needs to judge
whether one recipe reaches sharper minima than another, with every number shown as an
interval over training seeds.

Layout (double column, 7 in wide):

- (a) the fairness controls in words: the matching rule and how many runs met it (in red
  when some did not), training and direction seeds, the interval level, what is held fixed
  and what varies, and what each panel plots;
- (b) the 1D filter-normalized curves (Li et al. 2018) as the rise of the training loss
  above each model's own centre value (its trained weights), averaged over training seeds x
  direction seeds, with the interval over training seeds as a band and the +-``rise_at``
  window where the table's "1D rise" is read;
- one panel per sharpness measure (registry kinds ``curvature`` and ``sharpness``, plus the
  1D rise; the gradient-noise statistics are left to the table): absolute values with their
  intervals and each seed's value. In a learning-rate / batch-size sweep the x axis is
  ``lr / B`` on a log scale (colour: learning rate, marker: batch size), and the top
  Hessian eigenvalue panel draws ``2 / lr``, where full-batch gradient descent's top
  eigenvalue settles (Cohen et al. 2021, "Gradient descent on neural networks typically
  occurs at the edge of stability"); otherwise the recipes are categories. Each panel says
  how many pairs of recipes differ (Holm-corrected tests, :mod:`landscape.findings`) or
  "n.s.";
- the 2D filter-normalized surfaces (at most :data:`MAX_SURFACES`; for more, those with
  the extreme ``lr / B``): contours of the mean over training seeds of the rise above the
  centre on one labelled log scale, and one level drawn thinly for every seed.

The interpolations between recipes stay in ``study.h5`` (:func:`landscape.plot.plot_curve`
draws them); the figure leaves them out.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colors, transforms
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.offsetbox import AnchoredOffsetbox, TextArea, VPacker
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from landscape.analysis.measures import REGISTRY
from landscape.errors import LandscapeError
from landscape.plot._inputs import metric_label, values
from landscape.plot.contours import add_colorbar
from landscape.plot.style import DOUBLE_COLUMN, OKABE_ITO, SEQUENTIAL_CMAP, house_style, save_figure
from landscape.stats import LEVEL, confidence_interval

#: Most 2D panels drawn; a larger study shows the recipes with the extreme lr / B.
MAX_SURFACES = 4
#: Registry kinds compared as sharpness (the noise statistics are not).
SHARPNESS_KINDS = ("curvature", "sharpness", "curve")
#: Points of a sweep that share lr / B are spread by this factor in x (log axis).
DODGE = 1.08
#: Without ``levels`` or ``vmin``, log levels of the rise start at this fraction of the top.
RISE_RANGE = 1e-3
WARN = "#D55E00"   # Okabe-Ito vermillion: a control that failed
_MARKERS = ("o", "s", "^", "D", "v", "P")
_DASHES = ("-", "--", ":", "-.")
_TEXT_PT = 6.3
#: Share of the figure's width taken by the controls panel.
TEXT_SHARE = 0.45


@dataclass(frozen=True)
class Look:
    """How a recipe is drawn in every panel: colour, marker, line style, legend label, and
    whether all its runs met the matching rule (open markers where not)."""

    color: str
    marker: str
    ls: str
    label: str
    met: bool


def _as_study(study: Any) -> Any:
    from landscape.study import Study, load_study

    if isinstance(study, str | Path):
        return load_study(study)
    if not isinstance(study, Study):
        raise LandscapeError(f"a comparison figure needs a study file or Study, got "
                             f"{type(study).__name__}")
    return study


def is_sweep(study: Any) -> bool:
    """Whether the study is a sweep whose recipes all know lr / B (the x axis of the
    measure panels)."""
    return bool(study.design.get("sweep")) and all(
        r.get("lr_over_b") is not None for r in study.table)


def sharpness_measures(study: Any) -> list[str]:
    """The study's measures that the figure compares: registry kinds curvature and
    sharpness, then the 1D rise (the noise statistics are not sharpness measures)."""
    names = [m for m in study.settings.get("measures", ()) if m in REGISTRY
             and REGISTRY[m].kind in SHARPNESS_KINDS]
    if study.table and "curve_rise" in study.table[0]:
        names.append("curve_rise")
    return names


def looks(study: Any) -> dict[str, Look]:
    """Colour by learning rate and marker/line style by batch size in a sweep; one colour
    per recipe otherwise."""
    rows = {r["model"]: r for r in study.table}
    met = {n: all(rows[n].get("met") or [True]) for n in study.names}
    palette = OKABE_ITO[:-2]   # without yellow (too light on white) and black
    if not is_sweep(study):
        return {n: Look(palette[i % len(palette)], "o", "-", n, met[n])
                for i, n in enumerate(study.names)}
    lrs = sorted({rows[n]["lr"] for n in study.names})
    sizes = sorted({rows[n]["batch_size"] for n in study.names})
    others = [k for k in study.design.get("sweep", {}) if k not in ("lr", "batch_size")]
    recipes = study.design.get("recipes", {})
    out = {}
    for n in study.names:
        i, j = lrs.index(rows[n]["lr"]), sizes.index(rows[n]["batch_size"])
        label = ", ".join([f"lr {rows[n]['lr']:g}", f"B {rows[n]['batch_size']}",
                           *(f"{k} {_number(recipes.get(n, {}).get(k))}" for k in others)])
        out[n] = Look(palette[i % len(palette)], _MARKERS[j % len(_MARKERS)],
                      _DASHES[j % len(_DASHES)], label, met[n])
    return out


def rise_per_seed(study: Any, name: str, metric: str = "train_loss",
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(x, rise[seeds, x])``: per training seed of recipe ``name``, the mean over direction
    seeds of ``metric`` along each 1D curve minus that model's centre value (the loss of
    its trained weights), in the metric's units."""
    xs, per_seed = None, []
    for model in study.models[name]:
        rises = []
        for c in model.curves:
            center = c.attrs.get(f"center_{metric}")
            if center is None:
                raise LandscapeError(f"{c.path}: no centre value of {metric!r} to subtract")
            if xs is None:
                xs = np.asarray(c.x, dtype=float)
            elif c.x.shape != xs.shape or not np.allclose(c.x, xs):
                raise LandscapeError(f"{c.path}: its 1D grid differs from the study's others")
            rises.append(values(c, metric) - float(center))
        if rises:
            per_seed.append(np.mean(rises, axis=0))
    if xs is None:
        raise LandscapeError(f"{study.path}: recipe {name!r} has no 1D curve")
    return xs, np.asarray(per_seed)


def pointwise_interval(per_seed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and the :data:`~landscape.stats.LEVEL` Student-t interval over the first axis,
    at every point (the interval is NaN with fewer than two seeds)."""
    stats = [confidence_interval(col) for col in np.asarray(per_seed, dtype=float).T]
    def get(key: str) -> np.ndarray:
        return np.array([np.nan if getattr(s, key) is None else getattr(s, key)
                         for s in stats])
    return get("mean"), get("ci_low"), get("ci_high")


# ------------------------------------------------------------------------ (a) the controls
def _fixed_and_varied(study: Any) -> tuple[dict[str, Any], list[str]]:
    recipes = study.design.get("recipes", {})
    opts = [recipes.get(n, {}) for n in study.names if n in recipes]
    keys = sorted({k for o in opts for k in o})
    fixed = {k: opts[0][k] for k in keys if opts and all(k in o and o[k] == opts[0][k]
                                                         for o in opts)}
    return fixed, [k for k in keys if k not in fixed]


def _range(vals: Sequence[float], spec: str) -> str:
    lo, hi = min(vals), max(vals)
    return format(lo, spec) if format(lo, spec) == format(hi, spec) else \
        f"{format(lo, spec)}\u2013{format(hi, spec)}"


def _number(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def control_items(study: Any) -> list[tuple[str, str, bool]]:
    """The fairness controls as ``(key, text, warning)`` items, in the order a reviewer
    checks them; ``warning`` marks a control that failed or is missing."""
    from landscape.study import parse_match

    rows = study.table
    s, design = study.settings, study.design
    match = parse_match(design.get("match"))
    n_runs = sum(len(r.get("met", [])) for r in rows)
    losses = [v for r in rows for v in r["train_loss"]["values"] if v is not None]
    steps = [v for r in rows for v in r["steps"]["values"] if v is not None]
    reached = (f"; train loss reached {_range(losses, '.3g')} after "
               f"{_range(steps, ',.0f')} steps") if losses and steps else ""
    missed = [f"{r['model']} seed {seed}" for r in rows
              for seed, ok in zip(r.get("seeds", []), r.get("met", [])) if not ok]
    items: list[tuple[str, str, bool]] = []
    if "target_train_loss" in match:
        recipes = design.get("recipes", {})
        caps = [int(recipes[n].get("epochs") or s.get("max_epochs", 0)) for n in study.names
                if n in recipes]
        cap = f" (cap: {_range(caps, ',d')} epochs)" if caps else ""
        items.append(("Matching", "every run stopped once its full train-split loss was "
                      f"\u2264 {match['target_train_loss']:g} at two checks in a row{cap}; "
                      f"{n_runs - len(missed)}/{n_runs} runs met it{reached}.", False))
    elif "steps" in match:
        items.append(("Matching", f"every run trained for {match['steps']:,} optimizer "
                      f"steps{reached}.", False))
    else:
        items.append(("Matching", "NONE: each recipe trained for its own epochs"
                      f"{reached}; sharpness tracks the training loss.", True))
    if missed:
        items.append(("NOT MET", f"{len(missed)}/{n_runs} runs stopped at the epoch cap "
                      f"above the target ({', '.join(missed)}); open markers.", True))
    if design.get("runs"):
        items.append(("Outside", f"{', '.join(design['runs'])} trained outside the study: "
                      "options and seeds not controlled.", True))
    seeds = design.get("seeds") or sorted({k for r in rows for k in r.get("seeds", [])})
    d, s0 = int(s.get("direction_seeds", 1)), int(s.get("seed", 0))
    direction_seeds = f"seeds {_range([s0, s0 + d - 1], 'd')}" if d > 1 else f"seed {s0}"
    items.append(("Seeds", f"{len(seeds)} training seeds per recipe "
                  f"({', '.join(map(str, seeds))}); {d} random filter-normalized "
                  f"direction{'s' if d > 1 else ''} per model ({direction_seeds}), the same for "
                  "every model; 2D "
                  f"plane from direction seed {s0}.", len(seeds) < 2))
    items.append(("Intervals", f"{100 * LEVEL:g}% over training seeds (bands, bars); a "
                  "pair differs where its Holm-corrected Welch p < 0.05, else n.s.", False))
    fixed, varied = _fixed_and_varied(study)
    capped = "target_train_loss" in match
    given = ", ".join(f"{k}={_number(v)}" + (" (cap)" if capped and k == "epochs" else "")
                      for k, v in fixed.items() if k != "run")
    here = " of the recipes trained here" if design.get("runs") else ""
    items.append(("Fixed", f"data, model, loss and every training option{here} but the "
                  f"varied ones{f' ({given})' if given else ''}.", False))
    sweep = design.get("sweep") or {}
    if sweep:
        text = " \u00d7 ".join(f"{k} \u2208 {{{', '.join(map(_number, vals))}}}"
                               for k, vals in sweep.items())
    else:
        recipes = study.design.get("recipes", {})
        text = "; ".join(f"{k} (" + ", ".join(f"{n}: {_number(recipes[n].get(k, '-'))}"
                                              for n in study.names if n in recipes) + ")"
                         for k in varied) or "nothing (the recipes are identical)"
    items.append(("Varied", text + ".", False))
    return items


def summary_items(study: Any) -> list[tuple[str, str, bool]]:
    """Panel (a): the controls in a few short lines (every failed control in full, in red);
    the whole protocol is the caption (:func:`comparison_caption`)."""
    from landscape.study import parse_match

    rows, s = study.table, study.settings
    match = parse_match(study.design.get("match"))
    n_runs = sum(len(r.get("met", [])) for r in rows)
    met = sum(sum(map(bool, r.get("met", []))) for r in rows)
    full = control_items(study)
    items = [(k, t, w) for k, t, w in full if w and k != "Seeds"]
    if "target_train_loss" in match:
        items.insert(0, ("Matching", f"train loss ≤ {match['target_train_loss']:g} at two "
                         f"checks in a row; {met}/{n_runs} runs met it", met < n_runs))
    elif "steps" in match:
        items.insert(0, ("Matching", f"{match['steps']:,} optimizer steps each", False))
    seeds = study.design.get("seeds") or sorted({k for r in rows for k in r.get("seeds", [])})
    items.append(("Seeds", f"{len(seeds)} training × {int(s.get('direction_seeds', 1))} "
                  "direction seeds", len(seeds) < 2))
    k = int(s.get("checkpoints", 1))
    if k > 1:
        items.append(("Measures", "mean of " + _checkpoints(study, k), False))
    items.append(("Tests", f"{100 * LEVEL:g}% intervals over seeds; Holm-corrected", False))
    items.append(("Protocol", "in the caption (comparison.caption.md)", False))
    return items


def _checkpoints(study: Any, k: int) -> str:
    """Where a run's measures were taken: ``k`` target checks, else the stop and epochs."""
    from landscape.study import parse_match

    if "target_train_loss" in parse_match(study.design.get("match")):
        return f"{k} consecutive checks ending at each stop"
    return f"each stop and the {k - 1} saved epoch{'s' if k > 2 else ''} before it"


def comparison_caption(study: Any) -> str:
    """The figure's caption (Markdown): every control of :func:`control_items` and what
    each panel draws; :func:`save_comparison` writes it next to the figure."""
    measures = sharpness_measures(study)
    sweep = is_sweep(study)
    sf = _surfaces(study, "train_loss", True, None, None, None, None) \
        if surface_recipes(study) else None
    lines = ["**Comparison of minima.** (a) The controls in short; in full:", ""]
    lines += [f"- **{key}**: {text}" for key, text, _ in control_items(study)]
    k = int(study.settings.get("checkpoints", 1))
    if k > 1:
        lines.append("- **Measures**: every measure of a run is the mean of its values at "
                     f"{_checkpoints(study, k)} (the within-run spread is in table.json).")
    lines += [f"- **Plotted**: {_plotted(study, measures, sf, sweep, True)}", ""]
    return "\n".join(lines)


def _controls_panel(ax: Axes, items: Sequence[tuple[str, str, bool]], width_in: float) -> None:
    """``items`` as wrapped text in the axes ``ax`` (its frame hidden)."""
    ax.set_axis_off()
    chars = max(30, int(width_in * 72 / (_TEXT_PT * 0.56)))
    boxes = []
    for key, text, warn in items:
        wrapped = textwrap.fill(f"{key}: {text}", chars, break_on_hyphens=False)
        # the key in bold through mathtext (its spaces escaped); the rest stays plain text
        wrapped = wrapped.replace(key, "$\\bf{" + key.replace(" ", "\\ ") + "}$", 1)
        boxes.append(TextArea(wrapped, textprops={
            "fontsize": _TEXT_PT, "linespacing": 1.15,
            "color": WARN if warn else "black", "fontweight": "bold" if warn else "normal"}))
    box = AnchoredOffsetbox("upper left", child=VPacker(children=boxes, align="left", pad=0,
                                                          sep=3.0),
                            pad=0.0, borderpad=0.0, frameon=False,
                            bbox_to_anchor=(0, 1), bbox_transform=ax.transAxes)
    ax.add_artist(box)


# --------------------------------------------------------------------------- (b) 1D curves
def _curve_panel(ax: Axes, study: Any, look: Mapping[str, Look], metric: str) -> list[Any]:
    """Mean rise above the centre with its band per recipe; returns the legend handles."""
    rise_at = float(study.settings.get("rise_at", 0.5))
    banded = False
    for name in study.names:
        x, per_seed = rise_per_seed(study, name, metric)
        mean, lo, hi = pointwise_interval(per_seed)
        lk = look[name]
        if np.isfinite(lo).any():
            ax.fill_between(x, lo, hi, color=lk.color, alpha=0.18, lw=0, gid=f"band:{name}")
            banded = True
        ax.plot(x, mean, color=lk.color, ls=lk.ls, lw=1.1, gid=f"mean:{name}")
    for side in (-rise_at, rise_at):
        ax.axvline(side, color="0.35", ls=(0, (1, 1.5)), lw=0.8, zorder=1, gid="rise-window")
    ax.axhline(0, color="0.6", lw=0.5, zorder=0)
    some = study.models[study.names[0]][0].curves[0]
    unit = metric_label(metric, some.attrs.get("loss"))
    ax.set_ylabel(unit.replace(" (", " \u2212 centre value\n(", 1))
    ax.set_xlabel("$\\alpha$ (filter-normalized direction)")
    ax.set_xlim(float(some.x.min()), float(some.x.max()))
    handles: list[Any] = [
        Line2D([], [], color=look[n].color, ls=look[n].ls, marker=look[n].marker, ms=3.5,
               mfc=look[n].color if look[n].met else "white", lw=1.1,
               label=look[n].label + ("" if look[n].met else " (target NOT met)"))
        for n in study.names]
    if banded:
        handles.append(Patch(color="0.5", alpha=0.3, lw=0,
                             label=f"{100 * LEVEL:g}% interval over\ntraining seeds"))
    handles.append(Line2D([], [], color="0.35", ls=(0, (1, 1.5)), lw=0.8,
                          label=f"$\\alpha = \\pm${rise_at:g}: where the\n1D rise is read"))
    return handles


# ------------------------------------------------------------------------- measure panels
def _significance(study: Any, measure: str) -> str:
    """The panel's verdicts: the trend against lr/B (slope [95% interval], Holm p) where the
    study fitted one, then how many pairs differ."""
    rows = study.table
    pairs = [(a, b) for i, a in enumerate(rows) for b in rows[i + 1:]]
    differ = sum(a.get("differences", {}).get(measure, {}).get(b["model"]) in (">", "<")
                 for a, b in pairs)
    if len(pairs) == 1:
        note = "differ" if differ else "n.s."
    else:
        note = f"{differ}/{len(pairs)} pairs differ" if differ else "all pairs n.s."
    entry = (study.findings or {}).get("measures", {}).get(measure) or {}
    t = entry.get("trend")
    if t and t.get("status") == "tested":   # short lines: the note sits inside the panel
        note = (f"slope {t['slope']:.2g}, Holm p {t['p_holm']:.1g}\n"
                f"[{t['ci_low']:.2g}, {t['ci_high']:.2g}]\n{note}")
    return note


def _x_positions(study: Any, sweep: bool) -> dict[str, float]:
    rows = {r["model"]: r for r in study.table}
    if not sweep:
        return {n: float(i) for i, n in enumerate(study.names)}
    out: dict[str, float] = {}
    groups: dict[float, list[str]] = {}
    for n in study.names:
        key = float(np.round(np.log10(rows[n]["lr_over_b"]), 6))
        groups.setdefault(key, []).append(n)
    for group in groups.values():
        for k, n in enumerate(sorted(group, key=lambda m: rows[m]["batch_size"])):
            out[n] = rows[n]["lr_over_b"] * DODGE ** (k - (len(group) - 1) / 2)
    return out


def _measure_panel(ax: Axes, study: Any, measure: str, look: Mapping[str, Look],
                   sweep: bool) -> bool:
    """Mean and interval of ``measure`` per recipe, each seed's value as a dot; returns
    whether points were spread in x (shared lr / B)."""
    rows = {r["model"]: r for r in study.table}
    xs = _x_positions(study, sweep)
    ys: list[float] = []
    missing = []
    for name in study.names:
        stat, lk = rows[name].get(measure) or {}, look[name]
        if stat.get("mean") is None:
            missing.append(lk.label)
            continue
        mean = float(stat["mean"])
        lo = mean if stat.get("ci_low") is None else float(stat["ci_low"])
        hi = mean if stat.get("ci_high") is None else float(stat["ci_high"])
        ax.errorbar([xs[name]], [mean], yerr=[[mean - lo], [hi - mean]], fmt=lk.marker,
                    color=lk.color, mfc=lk.color if lk.met else "white", ms=3.8, lw=0.9,
                    capsize=2.0, capthick=0.9, zorder=4, gid=f"interval:{name}")
        seeds = [float(v) for v in stat.get("values", []) if v is not None]
        ax.plot([xs[name]] * len(seeds), seeds, ls="none", marker="o", ms=2.4, mew=0.5,
                mfc="white", mec="black", zorder=5, gid=f"seeds:{name}")  # above the bar
        ys += [mean, lo, hi, *seeds]
    if sweep:   # join the recipes of one learning rate
        by_lr: dict[float, list[str]] = {}
        for n in study.names:
            if rows[n].get(measure, {}).get("mean") is not None:
                by_lr.setdefault(rows[n]["lr"], []).append(n)
        for group in by_lr.values():
            group.sort(key=lambda n: xs[n])
            ax.plot([xs[n] for n in group], [rows[n][measure]["mean"] for n in group],
                    color=look[group[0]].color, lw=0.6, alpha=0.6, zorder=2)
        if measure == "top_eigenvalue":
            _edge_of_stability(ax, study, look)
            ys += [2.0 / rows[n]["lr"] for n in study.names]
        ax.set_xscale("log")
        ax.set_xlabel("lr / B (per sample)")
        lo_x, hi_x = min(xs.values()), max(xs.values())
        ax.set_xlim(lo_x / 1.6, hi_x * 1.6)
    else:
        ax.set_xticks(range(len(study.names)), [look[n].label for n in study.names],
                      rotation=25 if len(study.names) > 2 else 0,
                      ha="right" if len(study.names) > 2 else "center")
        ax.set_xlim(-0.6, len(study.names) - 0.4)
        ax.set_xlabel("recipe")
    finite = np.array([y for y in ys if np.isfinite(y)])
    positive = finite[finite > 0]
    log = bool(finite.size and positive.size == finite.size
               and positive.max() / positive.min() > 10)
    if log:
        _log_axis(ax.yaxis, positive.min(), positive.max())
    else:
        ax.yaxis.set_major_locator(MaxNLocator(4))
    if finite.size:   # the data below, a free strip on top for the note
        ax.set_ylim(*_headroom(float(finite.min()), float(finite.max()), log))
    entry = REGISTRY[measure]
    ax.set_title(entry.label, loc="left", fontsize=7)
    ax.set_ylabel(measure_units(study, measure))
    note = _significance(study, measure)
    if missing:
        note += f"\nn/a: {', '.join(missing)}"
    ax.text(0.97, 0.97, note, transform=ax.transAxes, ha="right", va="top", fontsize=5.2,
            color="0.3", gid="significance", linespacing=1.05)
    shared = sweep and len({round(float(np.log10(r["lr_over_b"])), 6)
                            for r in study.table}) < len(study.table)
    return shared


def measure_units(study: Any, measure: str) -> str:
    """The registry's units of ``measure`` in the figure's one vocabulary: "loss" is "nats"
    where the study's loss is the cross-entropy (as on the 1D and 2D panels)."""
    units = REGISTRY[measure].units
    if _loss_unit(study) != "nats":
        return units
    return "% of (1 + loss)" if units == "% of 1 + loss" else units.replace("loss", "nats")


def _loss_unit(study: Any) -> str:
    """"nats" for a cross-entropy study, else "loss"."""
    model = study.models[study.names[0]][0]
    attrs = (model.curves[0].attrs if model.curves else
             model.surface.attrs if model.surface is not None else {})
    return "nats" if attrs.get("loss", "cross_entropy") == "cross_entropy" else "loss"


def _headroom(lo: float, hi: float, log: bool) -> tuple[float, float]:
    """Axis limits that leave 8% of the span below the data and 55% above it (the note)."""
    f = np.log10 if log else (lambda v: v)
    a, b = f(lo), f(hi)
    span = b - a if b > a else max(abs(b), 1.0) if not log else 1.0
    lo, hi = a - 0.08 * span, b + 0.55 * span
    return (10 ** lo, 10 ** hi) if log else (lo, hi)


def _log_axis(axis: Any, lo: float, hi: float) -> None:
    """A log scale with plain-number ticks: 1-2-5, 1-3 or one per decade by the span."""
    axis.axes.set_yscale("log")
    decades = np.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 2.5 else (1.0,)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: _level_text(v)))
    axis.set_minor_formatter(NullFormatter())


def _edge_of_stability(ax: Axes, study: Any, look: Mapping[str, Look]) -> None:
    """``2 / lr`` for each learning rate (Cohen et al. 2021), labelled below it at the right
    (the panel's note sits above the data)."""
    rows = {r["model"]: r for r in study.table}
    seen: dict[float, str] = {}
    for n in study.names:
        seen.setdefault(rows[n]["lr"], look[n].color)
    trans = transforms.blended_transform_factory(ax.transAxes, ax.transData)
    for lr, color in seen.items():
        ax.axhline(2.0 / lr, color=color, ls=(0, (4, 2)), lw=0.8, zorder=1, gid="2/lr")
        below = transforms.offset_copy(trans, fig=ax.figure, y=-1.5, units="points")
        ax.text(0.97, 2.0 / lr, f"2/lr = {2.0 / lr:g}", transform=below, ha="right",
                va="top", fontsize=5.5, color=color, gid="2/lr-label")


# ------------------------------------------------------------------------------ 2D panels
def surface_recipes(study: Any) -> list[str]:
    """The recipes whose 2D surface is drawn: all up to :data:`MAX_SURFACES`, else those with
    the smallest and largest lr / B (the first ones outside a sweep)."""
    names = [n for n in study.names if study.models[n] and study.models[n][0].surface]
    if len(names) <= MAX_SURFACES:
        return names
    if not is_sweep(study):
        return names[:MAX_SURFACES]
    rows = {r["model"]: r for r in study.table}
    order = sorted(names, key=lambda n: rows[n]["lr_over_b"])
    half = MAX_SURFACES // 2
    keep = set(order[:half] + order[-half:])
    return [n for n in names if n in keep]


def surface_grids(study: Any, name: str, metric: str = "train_loss",
                  increase: bool = True) -> tuple[Any, np.ndarray]:
    """``(first seed's surface, z[seeds, y, x])``: each training seed's 2D ``metric``, minus
    its centre value when ``increase``."""
    grids = []
    first = study.models[name][0].surface
    for model in study.models[name]:
        s = model.surface
        if s is None:
            raise LandscapeError(f"{study.path}: '{name}' seed {model.seed} has no 2D surface, "
                                 "its first seed has one")
        if s.x.shape != first.x.shape or s.y.shape != first.y.shape:
            raise LandscapeError(f"{s.path}: its 2D grid differs from the study's others")
        z = values(s, metric)
        if increase:
            center = s.attrs.get(f"center_{metric}")
            if center is None:
                raise LandscapeError(f"{s.path}: no centre value of {metric!r} to subtract")
            z = z - float(center)
        grids.append(z)
    return first, np.asarray(grids)


def nice_levels(lo: float, hi: float, most: int = 9) -> np.ndarray:
    """Round log-spaced levels in ``[lo, hi]`` (1-2-5, else 1-3, else decades per decade),
    at most ``most`` of them (every other one dropped until they fit)."""
    lv = np.array([])
    for mantissas in ((1, 2, 5), (1, 3), (1,)):
        decades = range(int(np.floor(np.log10(lo))), int(np.ceil(np.log10(hi))) + 1)
        lv = np.array([m * 10.0 ** k for k in decades for m in mantissas])
        lv = lv[(lv >= lo * (1 - 1e-9)) & (lv <= hi * (1 + 1e-9))]
        if len(lv) <= most:
            return lv
    while len(lv) > most:
        lv = lv[::2]
    return lv


def _level_text(v: float) -> str:
    return f"{v:g}"


def _surface_levels(means: Sequence[np.ndarray], levels: Any, vmin: float | None,
                    vmax: float | None, log: bool | None, increase: bool,
                    ) -> tuple[np.ndarray, colors.Normalize]:
    vals = np.concatenate([m[np.isfinite(m)].ravel() for m in means])
    if not vals.size:
        raise LandscapeError("no finite value on the 2D surfaces")
    if levels is not None and not isinstance(levels, int | np.integer):
        lv = np.sort(np.asarray(levels, dtype=float))
        if lv.size < 2:
            raise LandscapeError(f"give at least 2 contour levels, got {lv.size}")
        lo, hi = float(lv[0]), float(lv[-1])
        log = bool(lo > 0 and (log if log is not None else hi / lo > 30))
    else:
        hi = float(vmax) if vmax is not None else float(vals.max())
        positive = vals[vals > 0]
        if vmin is not None:
            lo = float(vmin)
        elif increase:
            lo = max(hi * RISE_RANGE, float(positive.min()) if positive.size else hi * 1e-3)
        else:
            lo = float(vals.min())
        if log is None:
            log = increase or (lo > 0 and hi / lo > 30)
        if not hi > lo:
            raise LandscapeError(f"vmax ({hi:g}) must be larger than vmin ({lo:g})")
        if log and lo <= 0:
            raise LandscapeError(f"a log colour scale needs vmin > 0, got {lo:g}")
        most = 9 if levels is None else int(levels)
        if log:
            lv = nice_levels(lo, hi, most)
            if len(lv) < 2:
                lv = np.geomspace(lo, hi, max(2, most))
        else:
            lv = MaxNLocator(most).tick_values(lo, hi)
            lv = lv[(lv >= lo) & (lv <= hi)]
    norm = colors.LogNorm(lo, hi) if log else colors.Normalize(lo, hi)
    return lv, norm


def _reference_level(study: Any, names: Sequence[str], lv: np.ndarray, increase: bool,
                     metric: str) -> float:
    """The level drawn for every seed: the shared level nearest the median 1D rise (plus
    the centre loss when drawing the loss itself)."""
    rows = {r["model"]: r for r in study.table}
    targets = []
    for n in names:
        rise = (rows[n].get("curve_rise") or {}).get("mean")
        base = 0.0 if increase else float((rows[n].get(metric) or {}).get("mean") or 0.0)
        if rise is not None and rise + base > 0:
            targets.append(rise + base)
    target = float(np.median(targets)) if targets else float(np.median(lv))
    positive = lv[lv > 0]
    if positive.size == 0:
        return float(lv[np.argmin(np.abs(lv - target))])
    return float(positive[np.argmin(np.abs(np.log(positive) - np.log(max(target, 1e-300))))])


@dataclass
class _Surfaces:
    """What the 2D panels draw: per recipe the first seed's surface (for its grid) and every
    seed's grid, their mean, the shared levels and norm, and the level drawn per seed."""

    names: list[str]
    first: dict[str, Any]
    grids: dict[str, np.ndarray]
    means: dict[str, np.ndarray]
    levels: np.ndarray
    norm: colors.Normalize
    reference: float
    below: bool


def _surfaces(study: Any, metric: str, increase: bool, levels: Any, vmin: float | None,
              vmax: float | None, log: bool | None) -> _Surfaces:
    names = surface_recipes(study)
    first, grids = {}, {}
    for n in names:
        first[n], grids[n] = surface_grids(study, n, metric, increase)
    means = {n: np.nanmean(g, axis=0) for n, g in grids.items()}
    lv, norm = _surface_levels(list(means.values()), levels, vmin, vmax, log, increase)
    ref = _reference_level(study, names, lv, increase, metric)
    below = increase and any(float(np.nanmin(z)) < 0 for z in means.values())
    return _Surfaces(names, first, grids, means, lv, norm, ref, below)


def _surface_panels(sub: SubFigure, sf: _Surfaces, look: Mapping[str, Look], metric: str,
                    increase: bool, first_letter: int) -> list[Axes]:
    axes = list(np.atleast_1d(sub.subplots(1, len(sf.names), sharex=True, sharey=True)))
    cs = None
    for i, (ax, name) in enumerate(zip(axes, sf.names)):
        surface, z = sf.first[name], sf.means[name]
        shown = (np.where(z > 0, z, sf.norm.vmin * 1e-3)
                 if isinstance(sf.norm, colors.LogNorm) else z)
        cs = ax.contour(surface.x, surface.y, shown, levels=sf.levels, norm=sf.norm,
                        cmap=SEQUENTIAL_CMAP, linewidths=0.9)
        cs.set_gid(f"mean-contour:{name}")
        at = int(np.argmin(np.abs(sf.levels - sf.reference)))   # every other level from the
        labelled = [v for i, v in enumerate(sf.levels) if (i - at) % 2 == 0]   # seeds' one
        for k, g in enumerate(sf.grids[name]):
            seed_cs = ax.contour(surface.x, surface.y, g, levels=[sf.reference],
                                 colors="black", linewidths=0.45, alpha=0.75, zorder=2)
            seed_cs.set_gid(f"seed-contour:{name}:{k}")
        for label in ax.clabel(cs, [v for v in labelled if v in cs.levels], fmt=_level_text,
                               fontsize=5.2, inline_spacing=1):   # over the seeds' lines
            label.set_bbox({"facecolor": "white", "edgecolor": "none", "pad": 0.4})
            label.set_zorder(6)
        if increase and float(np.nanmin(z)) < 0:
            ax.contourf(surface.x, surface.y, z, levels=[float(np.nanmin(z)) - 1.0, 0.0],
                        colors="none", hatches=["/////"])
        ax.plot(0, 0, marker="+", ms=6, color="black", mew=0.9, zorder=5)
        ax.set_aspect("equal")
        ax.set_xlim(float(surface.x.min()), float(surface.x.max()))
        ax.set_ylim(float(surface.y.min()), float(surface.y.max()))
        ax.xaxis.set_major_locator(MaxNLocator(4))
        ax.yaxis.set_major_locator(MaxNLocator(4))
        ax.set_xlabel("$\\alpha$ (direction 1)")
        ax.set_ylabel("$\\beta$ (direction 2)" if i == 0 else "")
        ax.set_title(f"({chr(ord('a') + first_letter + i)})", loc="left", fontweight="bold")
        ax.set_title(look[name].label, loc="right", color=look[name].color, fontsize=7)
    n_seeds = max(len(g) for g in sf.grids.values())
    label = metric_label(metric, sf.first[sf.names[0]].attrs.get("loss"))
    label = (label.replace(" (", " \u2212 centre\n(", 1) if increase else
             label.replace(" (", "\n(", 1))
    label = label[:-1] + f", mean of {n_seeds} seeds)"
    cbar = add_colorbar(sub, axes, cs, label)
    cbar.ax.axhline(sf.reference, color="black", lw=1.0, gid="seed-level")
    cbar.set_ticks(sf.levels)
    cbar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _level_text(v)))
    cbar.ax.minorticks_off()
    return axes


# ------------------------------------------------------------------------------ the figure
def plot_comparison(study: Any, *, metric: str = "train_loss",
                    levels: int | Sequence[float] | None = None, vmin: float | None = None,
                    vmax: float | None = None, log: bool | None = None,
                    increase: bool = True) -> Figure:
    """The comparison figure of a study (a ``study.h5`` path, its folder, or a loaded
    :class:`~landscape.study.Study`); see the module docstring for its panels.

    ``metric``: the loss of the 1D and 2D panels (the study's 2D surfaces hold the training
    split only). ``increase`` (default) draws the rise above each model's centre value;
    ``increase=False`` draws the loss itself, as Li et al. (2018) do (minima at different
    loss levels then differ by their level, not only their shape). ``levels`` (a number or
    the levels), ``vmin``, ``vmax`` and ``log`` set the 2D panels' shared scale (default:
    round log-spaced levels from 1e-3 of the largest rise). Returns the figure (7 in wide);
    drawing costs nothing beyond reading the study.
    """
    study = _as_study(study)
    if not study.names:
        raise LandscapeError(f"{study.path}: the study holds no recipe")
    if not metric.endswith("_loss"):
        raise LandscapeError(f"the comparison figure draws a loss (train_loss, ...), got "
                             f"{metric!r}")
    sweep = is_sweep(study)
    look = looks(study)
    measures = sharpness_measures(study)
    sf = _surfaces(study, metric, increase, levels, vmin, vmax, log) \
        if surface_recipes(study) else None
    n_cols = 4
    n_rows = max(1, -(-len(measures) // n_cols))
    heights = [2.6, 1.5 * n_rows, 2.0 if sf else 0.01]
    first_surface = 2 + len(measures)
    with house_style():
        fig = Figure(figsize=(DOUBLE_COLUMN, sum(heights)), layout="constrained")
        top, mid, bottom = fig.subfigures(3, 1, height_ratios=heights)
        left, right = top.subfigures(1, 2, width_ratios=[TEXT_SHARE, 1 - TEXT_SHARE])
        ax_text, ax_curve = left.subplots(), right.subplots()
        _controls_panel(ax_text, summary_items(study), DOUBLE_COLUMN * TEXT_SHARE - 0.2)
        ax_text.set_title("(a) Fairness controls", loc="left", fontweight="bold")
        handles = _curve_panel(ax_curve, study, look, metric)
        ax_curve.set_title("(b)", loc="left", fontweight="bold")
        ax_curve.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        fontsize=6, borderaxespad=0.0, handlelength=2.2)
        if measures:
            grid = np.atleast_2d(mid.subplots(n_rows, n_cols)).ravel()
            shared = False
            for i, (ax, m) in enumerate(zip(grid, measures)):
                shared |= _measure_panel(ax, study, m, look, sweep)
                ax.set_title(f"({chr(ord('a') + 2 + i)}) {REGISTRY[m].label}",
                             loc="left", fontsize=7)
            for ax in grid[len(measures):]:
                ax.set_axis_off()
            if shared and len(grid) > len(measures):
                grid[-1].text(0.0, 0.5, f"Recipes sharing lr / B are\nspread by \u00d7{DODGE:g} "
                              "in x.", transform=grid[-1].transAxes, fontsize=6,
                              color="0.3", va="center")
        if sf is not None:
            _surface_panels(bottom, sf, look, metric, increase, first_surface)
    return fig


def _letters(first: int, n: int) -> str:
    a = chr(ord("a") + first)
    return f"({a})" if n == 1 else f"({a}-{chr(ord('a') + first + n - 1)})"


def _plotted(study: Any, measures: Sequence[str], sf: _Surfaces | None, sweep: bool,
             increase: bool) -> str:
    """The "Plotted" item of the controls: what each panel draws, in the figure's words."""
    rise_at = float(study.settings.get("rise_at", 0.5))
    text = ("(b) rise of the training loss above each model's own centre value (its trained "
            "weights), mean over seeds \u00d7 directions; band: interval over seeds of each "
            f"seed's direction mean; the table's 1D rise is read at \u03b1 = \u00b1{rise_at:g}.")
    if measures:
        text += (f" {_letters(2, len(measures))} absolute values: mean, interval, seeds (dots)"
                 + (" against lr / B; slope: of log value on log lr / B; dashed: 2/lr, "
                    "full-batch GD's top eigenvalue at the edge of stability (Cohen et al. "
                    "2021)" if sweep else "") + ".")
    if sf is not None:
        unit = "nats" if _loss_unit(study) == "nats" else "MSE"
        text += (f" {_letters(2 + len(measures), len(sf.names))} 2D "
                 + ("rise above the centre" if increase else "loss")
                 + f", mean over seeds; thin black: each seed's {sf.reference:g}-{unit} level"
                 + ("; hatched: below the centre value" if sf.below else "") + ".")
    return text


def save_comparison(study: Any, out: str | Path | None = None) -> list[Path]:
    """Draw :func:`plot_comparison` and save it as ``comparison.pdf`` and ``comparison.png``
    (200 dpi), with its caption ``comparison.caption.md`` (:func:`comparison_caption`), in
    ``out`` (default: the study's folder); returns the paths, also kept in
    ``study.figures`` when ``study`` is a loaded :class:`~landscape.study.Study`."""
    from landscape.store import atomic_write

    study = _as_study(study)
    folder = Path(study.path).parent if out is None else Path(out)
    fig = plot_comparison(study)
    caption = folder / "comparison.caption.md"
    atomic_write(caption, comparison_caption(study).encode())
    study.figures = [save_figure(fig, folder / "comparison.pdf"),
                     save_figure(fig, folder / "comparison.png", dpi=200), caption]
    return study.figures


__all__ = ["Look", "comparison_caption", "control_items", "is_sweep", "looks", "measure_units",
           "nice_levels", "plot_comparison", "pointwise_interval", "rise_per_seed",
           "save_comparison", "sharpness_measures", "summary_items", "surface_grids",
           "surface_recipes"]

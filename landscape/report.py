"""One self-contained interactive HTML page for a stored result (``landscape report``).

A surface, interpolation, plane or trajectory file; a Hessian file; a run's ``track.h5`` (or
the run directory); a toy run's ``paths.h5``; or a study (``study.h5`` or its directory).
The page shows 3D surfaces that rotate and zoom, contours with the trajectory or optimizer
paths on them (values on hover), 1D curves with their bands, spectra, and a study's table and
generated findings (``findings.json``/``findings.md`` beside ``study.h5``, when present).
plotly's JavaScript is embedded (``include_plotlyjs=True``), so the page opens offline and
fetches nothing. Every plotted array is the stored one, unchanged (float64).

plotly is an optional dependency (the ``report`` extra), imported only here, when called.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from landscape import formats, store
from landscape.errors import LandscapeError

SURFACE_KINDS = ("surface", "interpolation", "plane", "trajectory")
#: plotly's own options for every figure: no logo, resized with the window
CONFIG = {"displaylogo": False, "responsive": True}


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:
        raise LandscapeError("the report needs plotly: pip install 'torch-landscape[report]'"
                             ) from None
    return go


class _Page:
    """Sections of HTML and plotly figures, in order; each figure gets the ``id`` it is
    written with, so that tests and readers can find it."""

    def __init__(self, title: str) -> None:
        self.title, self.parts, self.n_figures = title, [], 0

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str) -> None:
        self.parts.append(f"<p>{html.escape(text)}</p>")

    def pre(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
                       for r in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Any, div_id: str) -> None:
        import plotly.io as pio

        fig.update_layout(template="plotly_white", margin={"l": 60, "r": 20, "t": 50, "b": 50})
        self.parts.append(pio.to_html(fig, full_html=False, include_plotlyjs=self.n_figures == 0,
                                      config=CONFIG, div_id=div_id, default_height="480px"))
        self.n_figures += 1

    def html(self) -> str:
        style = ("body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
                 "padding:3px 8px;text-align:left;font-size:90%}pre{background:#f6f6f6;"
                 "padding:1em;white-space:pre-wrap}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>"
                f"{html.escape(self.title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.6g}"
    if isinstance(v, list | tuple | dict):
        return json.dumps(store.jsonable(v), default=str)
    return "" if v is None else str(v)


def _metadata(page: _Page, attrs: Mapping[str, Any]) -> None:
    keys = ("kind", "created", "command", "run", "model", "dataset", "loss", "precision", "bn",
            "device", "directions", "rise", "rise_metric", "landscape_version", "torch_version")
    rows = [[k, attrs[k]] for k in keys if attrs.get(k) is not None]
    if rows:
        page.table(["attribute", "value"], rows)


def _label(metric: str) -> str:
    split, _, name = metric.rpartition("_")
    unit = {"loss": "", "acc": " (fraction)"}.get(name, "")
    return f"{split} {name}{unit}".strip()


# ------------------------------------------------------------------------------ surfaces
def _surface(page: _Page, s: Any, prefix: str = "surface", title: str | None = None) -> None:
    go = _plotly()
    kind = s.attrs.get("kind", "surface")
    title = title or f"{kind} {Path(s.path).name}"
    metrics = [m for m in s.values if m not in ("x", "y")]
    if s.y is None:
        for group in ("loss", "acc"):
            names = [m for m in metrics if m.endswith(f"_{group}")]
            if not names:
                continue
            fig = go.Figure([go.Scatter(x=s.x, y=_masked(s, m), mode="lines+markers",
                                        name=_label(m)) for m in names])
            fig.update_layout(title=f"{title}: {group}", xaxis_title=_axis(s, 0),
                              yaxis_title=group)
            page.figure(fig, f"{prefix}-curve-{group}")
        return
    for m in [m for m in metrics if m.endswith("_loss")]:
        z = _masked(s, m)
        fig = go.Figure(go.Surface(x=s.x, y=s.y, z=z, colorscale="Viridis",
                                   colorbar={"title": _label(m)}))
        if "path/coords" in s.extras and f"path/{m}" in s.extras:  # checkpoints, own loss
            coords = s.extras["path/coords"]
            fig.add_trace(go.Scatter3d(x=coords[:, 0], y=coords[:, 1], z=s.extras[f"path/{m}"],
                                       mode="lines+markers", name="training path (own loss)",
                                       line={"color": "red"}, marker={"size": 3}))
        fig.update_layout(title=f"{title}: {_label(m)} (drag to rotate, scroll to zoom)",
                          scene={"xaxis_title": _axis(s, 0), "yaxis_title": _axis(s, 1),
                                 "zaxis_title": _label(m)})
        page.figure(fig, f"{prefix}-3d-{m}")
        traces = [go.Contour(x=s.x, y=s.y, z=z, colorscale="Viridis", name=_label(m),
                             contours={"showlabels": True}, colorbar={"title": _label(m)})]
        if "path/coords" in s.extras:
            coords = s.extras["path/coords"]
            epochs = s.extras.get("path/epochs", np.arange(len(coords)))
            own = s.extras.get(f"path/{m}")
            traces.append(go.Scatter(
                x=coords[:, 0], y=coords[:, 1], mode="lines+markers", name="training path",
                customdata=np.stack([epochs, own if own is not None else epochs * np.nan], -1),
                hovertemplate="epoch %{customdata[0]}<br>own loss %{customdata[1]:.5g}"
                              "<extra></extra>", line={"color": "red"}))
            traces.append(go.Scatter(x=[0.0], y=[0.0], mode="markers", name="final model",
                                     marker={"symbol": "star", "size": 14, "color": "red"}))
        fig = go.Figure(traces)
        fig.update_layout(title=f"{title}: {_label(m)} contours", xaxis_title=_axis(s, 0),
                          yaxis_title=_axis(s, 1), legend={
                              "orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.0,
                              "yanchor": "bottom"})
        page.figure(fig, f"{prefix}-contour-{m}")


def _masked(s: Any, metric: str) -> np.ndarray:
    out = np.array(s.values[metric], dtype=np.float64)
    out[~s.done] = np.nan
    return out


def _axis(s: Any, i: int) -> str:
    """What a coordinate means: the direction's kind and its unit, where recorded."""
    kind = s.attrs.get("kind", "surface")
    if kind == "interpolation":
        return "t (0: first model, 1: second)"
    if kind == "trajectory":
        evr = s.attrs.get("explained_variance_ratio") or [None, None]
        return f"PC {i + 1}" + (f" ({float(evr[i]):.1%} of variance)" if evr[i] else "")
    dirs = s.attrs.get("directions")
    name = dirs[i] if isinstance(dirs, list) and i < len(dirs) else "direction"
    return f"{'alpha' if i == 0 else 'beta'} ({name} direction {i + 1})"


# ------------------------------------------------------------------------------ hessian
def _hessian(page: _Page, path: Path) -> None:
    from landscape.analysis.hessian import load_hessian

    go = _plotly()
    report = load_hessian(path)
    if report.eigen is not None:
        e = report.eigen
        rows = [[("top" if i < e.n_largest else "bottom"), float(v), float(e.residuals[i]),
                 bool(e.converged[i])] for i, v in enumerate(e.eigenvalues.tolist())]
        page.heading("Extreme eigenvalues", 3)
        page.table(["end", "eigenvalue", "relative residual", "converged"], rows)
        fig = go.Figure(go.Scatter(x=np.arange(1, e.n_largest + 1), y=e.largest.numpy(),
                                   mode="markers", name="top eigenvalues",
                                   error_y={"array": (e.residuals[: e.n_largest]
                                                      * e.largest.abs()).numpy()}))
        fig.update_layout(title="top Hessian eigenvalues (error bar: ||Hv - lambda v||)",
                          xaxis_title="rank", yaxis_title="eigenvalue")
        page.figure(fig, "hessian-eigenvalues")
    if report.trace is not None:
        t = report.trace
        page.text(f"trace {t.estimate:.6g} (standard error {_cell(t.stderr)}, {t.method}, "
                  f"{t.n_probes} probes, {t.n_hvp} HVPs)")
    if report.density is not None:
        d = report.density
        fig = go.Figure(go.Scatter(x=d.grid.numpy(), y=d.density.numpy(), mode="lines",
                                   name="density"))
        fig.update_layout(title=f"spectral density (SLQ, sigma {d.sigma:g})",
                          xaxis_title="eigenvalue", yaxis_title="density", yaxis_type="log")
        page.figure(fig, "hessian-density")


# ------------------------------------------------------------------------------ track
def _track(page: _Page, path: Path) -> None:
    from landscape.analysis.track import load_track

    go = _plotly()
    t = load_track(path)
    for name, values in t.measures.items():
        err = t.errors[name]
        traces = [go.Scatter(x=t.step, y=values, mode="lines+markers", name=name,
                             error_y={"array": np.nan_to_num(err)})]
        if name == "top_eigenvalue":
            traces.append(go.Scatter(x=t.step, y=t.threshold, mode="lines", name="2 / lr "
                                     "threshold", line={"dash": "dash"}))
        fig = go.Figure(traces)
        fig.update_layout(title=f"{name} during training", xaxis_title="step",
                          yaxis_title=name)
        page.figure(fig, f"track-{name}")
    fig = go.Figure(go.Scatter(x=t.step, y=t.train_loss, mode="lines+markers",
                               name="train loss"))
    fig.update_layout(title="train loss (tracking subset)", xaxis_title="step",
                      yaxis_title="loss")
    page.figure(fig, "track-train_loss")


# ------------------------------------------------------------------------------ toy
def _toy(page: _Page, path: Path) -> None:
    from landscape.toy import load_paths

    go = _plotly()
    function, paths = load_paths(path)
    if function.dim == 2 and function.box is not None:
        (x0, x1), (y0, y1) = function.box
        gx, gy = np.linspace(x0, x1, 121), np.linspace(y0, y1, 121)
        import torch

        grid = torch.as_tensor(np.stack(np.meshgrid(gx, gy), -1))
        z = function.fn(grid).numpy()
        traces = [go.Contour(x=gx, y=gy, z=np.log10(z - function.f_min + 1e-12),
                             colorscale="Greys", name="log10(f - f_min)",
                             colorbar={"title": "log10(f - f*)"})]
        traces += [go.Scatter(x=p.path[:, 0], y=p.path[:, 1], mode="lines+markers",
                              marker={"size": 3}, name=label)
                   for label, p in paths.items() if p.path.ndim == 2]
        fig = go.Figure(traces)
        fig.update_layout(title=f"optimizer paths on {function.name}", xaxis_title="w1",
                          yaxis_title="w2")
        page.figure(fig, "toy-paths")
    fig = go.Figure([go.Scatter(y=p.losses - function.f_min, mode="lines", name=label)
                     for label, p in paths.items() if p.losses.ndim == 1])
    fig.update_layout(title="f - f_min per step", xaxis_title="step", yaxis_type="log")
    page.figure(fig, "toy-losses")


# ------------------------------------------------------------------------------ study
def _study(page: _Page, path: Path) -> None:
    from landscape.study import load_study

    go = _plotly()
    study = load_study(path)
    quantities = [q for q in study.table[0] if isinstance(study.table[0][q], dict)
                  and "mean" in study.table[0][q]] if study.table else []
    page.heading("Table (mean [95% interval] over training seeds)", 3)
    page.table(["recipe", "seeds", *quantities],
               [[r["model"], r.get("seeds"), *[_interval(r.get(q)) for q in quantities]]
                for r in study.table])
    _findings(page, Path(study.path).parent)
    fig = go.Figure()
    for i, name in enumerate(study.names):
        curves = [c for m in study.models[name] for c in m.curves]
        x = curves[0].x
        ys = np.stack([_masked(c, "train_loss") for c in curves])
        lo, hi, mean = ys.min(0), ys.max(0), ys.mean(0)
        color = f"hsl({(i * 137) % 360},60%,45%)"
        fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]),
                                 y=np.concatenate([hi, lo[::-1]]), fill="toself",
                                 fillcolor=color.replace("hsl", "hsla").replace(")", ",0.2)"),
                                 line={"width": 0}, name=f"{name} range", hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"{name} mean",
                                 line={"color": color}))
    fig.update_layout(title="1D curves: mean and range over training and direction seeds",
                      xaxis_title="alpha (filter-normalized)", yaxis_title="train loss")
    page.figure(fig, "study-curves")
    for name in study.names:
        s = study.models[name][0].surface
        if s is not None:
            _surface(page, s, prefix=f"study-{name}", title=f"{name} (seed "
                     f"{study.models[name][0].seed})")
    for (a, b), c in study.interpolations.items():
        _surface(page, c, prefix=f"study-interp-{a}-{b}", title=f"interpolation {a} -> {b}")


def _interval(stat: Any) -> str:
    if not isinstance(stat, Mapping) or stat.get("mean") is None:
        return "n/a"
    text = f"{float(stat['mean']):.4g}"
    if stat.get("ci_low") is not None and stat.get("ci_high") is not None:
        text += f" [{float(stat['ci_low']):.4g}, {float(stat['ci_high']):.4g}]"
    return text


def _findings(page: _Page, folder: Path) -> None:
    """The study's generated findings, when its directory holds them (never required)."""
    md, js = folder / "findings.md", folder / "findings.json"
    if not (md.exists() or js.exists()):
        return
    page.heading("Findings (generated from the numbers)", 3)
    if md.exists():
        page.pre(md.read_text())
    if js.exists():
        try:
            data = json.loads(js.read_text())
        except json.JSONDecodeError as err:
            raise LandscapeError(f"{js}: not valid JSON ({err})") from None
        rows = [[k, v] for k, v in _flatten(data)]
        page.table(["finding", "value"], rows)


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return [kv for k, v in obj.items() for kv in _flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, list) and any(isinstance(v, Mapping | list) for v in obj):
        return [kv for i, v in enumerate(obj) for kv in _flatten(v, f"{prefix}{i}.")]
    return [(prefix.rstrip("."), obj)]


# ------------------------------------------------------------------------------ entry
def write_report(path: str | Path, out: str | Path = "report.html") -> Path:
    """Write the interactive page for the result at ``path`` to ``out``; returns ``out``.

    ``path``: a surface/interpolation/plane/trajectory, Hessian, track, toy or study file; a
    run directory (its ``track.h5``) or a study directory (its ``study.h5``). Cost: reading
    the file; the page holds plotly's JavaScript (about 4.7 MB) once.

    >>> import tempfile, pathlib, numpy as np, torch
    >>> from landscape.objective import Objective
    >>> from landscape.surface import compute_surface
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> obj = Objective(torch.nn.Linear(2, 2), (torch.randn(8, 2), torch.randint(0, 2, (8,))))
    >>> _ = compute_surface(obj, d / "c.h5", "-1:1:5", directions=[torch.ones(6)],
    ...                     show_progress=False)
    >>> write_report(d / "c.h5", d / "c.html").stat().st_size > 1_000_000
    True
    """
    _plotly()
    path, out = Path(path), Path(out)
    if path.is_dir():
        path = path / ("study.h5" if (path / "study.h5").exists() else "track.h5")
    if not path.exists():
        raise LandscapeError(f"{path}: no such file")
    with formats.open_result(path) as f:
        attrs = store.read_attrs(f)
    kind = attrs.get("kind")
    page = _Page(f"landscape report: {path.name}")
    page.heading(f"landscape report: {path}", 1)
    _metadata(page, attrs)
    if kind in SURFACE_KINDS:
        from landscape.surface import load_surface

        _surface(page, load_surface(path))
    elif kind == "hessian":
        _hessian(page, path)
    elif kind == "track":
        _track(page, path)
    elif kind == "toy":
        _toy(page, path)
    elif kind == "study":
        _study(page, path)
    else:
        raise LandscapeError(f"{path}: no report for a {kind!r} result")
    out.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write(out, page.html().encode())
    return out


__all__ = ["write_report"]

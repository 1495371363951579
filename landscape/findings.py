"""A study's verdicts: the tests of :mod:`landscape.stats` applied to its table, and the
sentences of ``findings.md`` generated from their numbers (never written by hand).

The primary question of each measure is a trend (Jastrzebski et al. 2017, "Three factors
influencing minima in SGD"; Smith & Le 2018): least squares of log(measure) on log(lr/B)
over every run (each training seed a point; plain values where a measure is not positive),
Holm's correction across the measures. Where the design varies lr and B separately,
log(measure) ~ log(lr) + log(B) tests whether the two coefficients are equal and opposite
("only the ratio matters"), Holm across the measures. Pairs of recipes are secondary: Welch
tests (on logs for positive quantities), accuracies by Fisher's exact test on counts of test
examples, Holm within each quantity's family of pairs. Where a recipe's within-run spread of
a measure (max / min over the checkpoints around its stop whose mean is the run's value, the
study's ``checkpoints``) is as large as a ratio claimed for it, the pair is flagged
(``spread_warning``) and the sentence says so.

``findings.json``::

    {"level", "alpha", "n_runs", "x": "lr/B",
     "measures": {NAME: {"label", "scale", "trend": {slope, ci_low, ci_high, p, p_holm, n,
                                                     stderr, df, detectable, status},
                         "ratio_test": {coef_lr, coef_batch, sum, ci_low, ci_high, p,
                                        p_holm, n, status} | null,
                         "pairs": [{a, b, ratio, difference, ci_low, ci_high, p, p_holm,
                                    verdict, test, status, df, spread_warning}]}},
     "outcomes": {NAME: {"label", "scale", "pairs": [...]}}}
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from landscape.stats import (
    ALPHA,
    LEVEL,
    NOT_SIGNIFICANT,
    detectable,
    fisher_counts,
    holm,
    ratio_test,
    trend,
    verdict,
    welch,
)

#: Quantities compared on counts of examples (``values`` are fractions, ``examples`` counts).
COUNTED = ("train_acc", "test_acc")


def _per_seed(row: Mapping[str, Any], q: str) -> list[float | None]:
    return list(row[q].get("values", []))


def _pair(a: Mapping[str, Any], b: Mapping[str, Any], q: str, log: bool) -> dict[str, Any]:
    sa, sb = a[q], b[q]
    if q in COUNTED and sa.get("examples") and sb.get("examples") and \
            None not in (*sa["values"], *sb["values"], *sa["examples"], *sb["examples"]):
        def counts(s: Mapping[str, Any]) -> tuple[int, int]:
            return (sum(round(v * n) for v, n in zip(s["values"], s["examples"], strict=True)),
                    sum(s["examples"]))
        return fisher_counts(*counts(sa), *counts(sb))
    return welch(_per_seed(a, q), _per_seed(b, q), log=log)


def _pairs(rows: Sequence[Mapping[str, Any]], q: str, log: bool) -> list[dict[str, Any]]:
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            out.append({"a": a["model"], "b": b["model"], **_pair(a, b, q, log)})
    by_name = {r["model"]: r for r in rows}
    for pair, p_holm in zip(out, holm([p["p"] for p in out]), strict=True):
        pair["p_holm"] = p_holm
        pair["verdict"] = verdict(pair, p_holm)
        spreads = [v for n in (pair["a"], pair["b"])
                   for v in by_name[n][q].get("spread", []) if v is not None]
        ratio = pair.get("ratio")
        pair["spread_warning"] = bool(pair["verdict"] in (">", "<") and spreads and ratio
                                      and max(spreads) >= max(ratio, 1 / ratio))
    return out


def _design(rows: Sequence[Mapping[str, Any]], q: str, log: bool
            ) -> tuple[list[float], list[float], list[float], list[float | None]]:
    """Per run: log(lr/B), log lr, log B and the (log) value of ``q``."""
    x, log_lr, log_b, y = [], [], [], []
    for r in rows:
        for v in _per_seed(r, q):
            x.append(math.log(r["lr_over_b"]))
            log_lr.append(math.log(r["lr"]))
            log_b.append(math.log(r["batch_size"]))
            y.append(None if v is None else (math.log(v) if log else v))
    return x, log_lr, log_b, y


def analyse(rows: Sequence[dict[str, Any]], measures: Sequence[str],
            labels: Mapping[str, str]) -> dict[str, Any]:
    """The findings of a study table (``rows`` as in ``table.json``): trend, ratio test and
    pairs of every quantity in ``measures``, pairs of every other quantity of ``labels``
    present in the rows. Sets ``row["differences"][q][other]`` to each pair's verdict (from
    the row's side: ``">"`` means this recipe is larger)."""
    quantities = [q for q in labels if rows and isinstance(rows[0].get(q), dict)]
    sweep = all(isinstance(r.get("lr_over_b"), int | float) for r in rows) and \
        len({r.get("lr_over_b") for r in rows}) > 1
    out: dict[str, Any] = {"level": LEVEL, "alpha": ALPHA, "x": "lr/B" if sweep else None,
                           "n_runs": sum(len(_per_seed(r, quantities[0])) for r in rows)
                           if quantities else 0, "measures": {}, "outcomes": {}}
    for q in quantities:
        log = rows[0][q].get("scale") == "log"   # the table's own scale of q
        entry: dict[str, Any] = {"label": labels[q], "scale": "log" if log else "linear",
                                 "pairs": _pairs(rows, q, log)}
        if q in measures:
            entry["trend"], entry["ratio_test"] = None, None
            if sweep:
                x, log_lr, log_b, y = _design(rows, q, log)
                entry["trend"] = trend(x, y)
                entry["ratio_test"] = ratio_test(log_lr, log_b, y)
            out["measures"][q] = entry
        else:
            out["outcomes"][q] = entry
    for key in ("trend", "ratio_test"):   # Holm across the measures
        tests = [e[key] for e in out["measures"].values() if e.get(key)]
        for t, p_holm in zip(tests, holm([t["p"] for t in tests]), strict=True):
            t["p_holm"] = p_holm
            if key == "trend":   # the power of Holm's first step, alpha / M
                t["detectable"] = None if t["status"] != "tested" else \
                    detectable(t["stderr"], t["df"], ALPHA / len(tests))
    for a in rows:
        a["differences"] = {}
    flip = {">": "<", "<": ">"}
    for q, entry in {**out["measures"], **out["outcomes"]}.items():
        by_name = {r["model"]: r for r in rows}
        for pair in entry["pairs"]:
            by_name[pair["a"]]["differences"].setdefault(q, {})[pair["b"]] = pair["verdict"]
            by_name[pair["b"]]["differences"].setdefault(q, {})[pair["a"]] = \
                flip.get(pair["verdict"], pair["verdict"])
    return out


# ------------------------------------------------------------------------------ the text
def _g(v: float | None, spec: str = ".3g") -> str:
    return "n/a" if v is None else format(v, spec)


def _p(t: Mapping[str, Any]) -> str:
    return f"p = {_g(t['p'], '.2g')}, Holm p = {_g(t.get('p_holm'), '.2g')}"


def _trend_sentence(label: str, t: Mapping[str, Any] | None, log: bool) -> str:
    if t is None or t["status"] != "tested":
        why = "not testable (no variation)" if t and t["status"] == "not testable" else \
            "no interval (too few runs)"
        return f"- {label}: {why}."
    what = "log " if log else ""
    ci = f"slope {_g(t['slope'])} [{_g(t['ci_low'])}, {_g(t['ci_high'])}]"
    per10 = f"; x{10 ** t['slope']:.3g} per 10x lr/B" if log else ""
    power = f"; 80% power for |slope| >= {_g(t.get('detectable'))}"
    if t["p_holm"] is not None and t["p_holm"] < ALPHA:
        way = "falls" if t["slope"] < 0 else "rises"
        return f"- {label} {way} as lr/B grows: {ci} of {what}value per log lr/B{per10} " \
               f"({_p(t)}{power})."
    return f"- {label}: no significant trend ({ci}{per10}; {_p(t)}{power})."


def _ratio_sentence(label: str, t: Mapping[str, Any]) -> str:
    coefs = f"coefficient of log lr {_g(t['coef_lr'])}, of log B {_g(t['coef_batch'])}"
    if t["status"] != "tested":
        return f"- {label}: {coefs}; the sum is not testable."
    sum_ci = f"sum {_g(t['sum'])} [{_g(t['ci_low'])}, {_g(t['ci_high'])}]"
    if t["p_holm"] is not None and t["p_holm"] < ALPHA:
        return f"- {label}: {coefs}; {sum_ci}, {_p(t)}: lr and B act beyond their ratio."
    return f"- {label}: {coefs}; {sum_ci}, {_p(t)}: no significant departure from lr/B alone."


def _effect(pair: Mapping[str, Any]) -> str:
    if pair.get("ratio") is not None and pair["test"] != "welch":
        return f"ratio {_g(pair['ratio'])} [{_g(pair['ci_low'])}, {_g(pair['ci_high'])}]"
    return f"difference {_g(pair['difference'])} [{_g(pair['ci_low'])}, {_g(pair['ci_high'])}]"


def _pairs_sentence(label: str, pairs: Sequence[Mapping[str, Any]]) -> str:
    differ = [p for p in pairs if p["verdict"] in (">", "<")]
    parts = [f"{p['a']} {p['verdict']} {p['b']} ({_effect(p)}, Holm p = "
             f"{_g(p['p_holm'], '.2g')}"
             + ("; a run's own spread around its stop is as large" if p["spread_warning"]
                else "") + ")" for p in differ]
    for status in ("not testable", "no interval"):
        some = [f"{p['a']} vs {p['b']}" for p in pairs if p["verdict"] == status]
        if some:
            parts.append(f"{status}: {', '.join(some)}")
    rest = sum(p["verdict"] == NOT_SIGNIFICANT for p in pairs)
    if rest:
        parts.append(f"no significant difference in {'the other ' if differ else ''}"
                     f"{rest} of {len(pairs)} pairs")
    return f"- {label}: " + "; ".join(parts) + "."


def render(findings: Mapping[str, Any]) -> str:
    """``findings.md``: plain sentences generated from ``findings`` (:func:`analyse`)."""
    measures, outcomes = findings["measures"], findings["outcomes"]
    level = f"{100 * findings['level']:g}%"
    lines: list[str] = []
    if findings.get("x"):
        lines += [f"Trend against lr/B (least squares over the {findings['n_runs']} runs, "
                  f"every training seed a point; {level} intervals; Holm's correction across "
                  f"the {len(measures)} measures):", ""]
        lines += [_trend_sentence(e["label"], e["trend"], e["scale"] == "log")
                  for e in measures.values()]
        tested = {q: e for q, e in measures.items() if e.get("ratio_test")}
        if tested:
            lines += ["", "Does only lr/B matter? (log measure ~ log lr + log B; t-test that the "
                      "two coefficients sum to zero, Holm across the measures):", ""]
            lines += [_ratio_sentence(e["label"], e["ratio_test"]) for e in tested.values()]
        lines.append("")
    n_pairs = len(next(iter({**measures, **outcomes}.values()))["pairs"]) if \
        (measures or outcomes) else 0
    lines += [f"Pairs of recipes (Welch tests, on the logs of positive quantities with the "
              f"ratio of geometric means as the effect; accuracies by Fisher's exact test on "
              f"correct counts of examples pooled over seeds; Holm within each quantity's "
              f"{n_pairs} pairs; {level} intervals):", ""]
    lines += [_pairs_sentence(e["label"], e["pairs"]) for e in {**measures, **outcomes}.values()]
    return "\n".join(lines)


__all__ = ["COUNTED", "analyse", "render"]

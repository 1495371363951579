"""The comparison study (``landscape compare``): matched training, seeds and intervals,
sweeps, resume, and every reported number against an independent computation.

References: accuracies from a plain forward pass of each loaded run; the top eigenvalue from
the dense float64 Hessian (``torch.func.hessian``); the noise scale from per-sample
gradients taken one sample at a time with autograd; the 1D rise from the model evaluated at
the stored direction; intervals from the t table.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats
from torch import nn

from landscape.cli import main
from landscape.errors import LandscapeError
from landscape.runs import load_run
from landscape.study import (
    Recipe,
    expand_sweep,
    load_study,
    parse_match,
    parse_recipe,
    parse_seeds,
    parse_sweep,
    read_recipes,
    run_study,
)

BASE = [Recipe("sgd", {"optimizer": "sgd", "epochs": 60})]
SWEEP = {"lr": [0.05, 0.2], "batch_size": [25]}
TINY = {"train_size": 100, "model_options": {"widths": [8]}, "curve": "-1:1:5",
        "surface": "-1:1:3", "interpolation": "-0.5:1.5:5", "trace_probes": 10,
        "hessian_tol": 1e-3, "pac_bayes_samples": 4, "direction_seeds": 2,
        "match": "train-loss=0.6", "show_progress": False, "quiet": True}
NAMES = ["sgd-lr0.05-bs25", "sgd-lr0.2-bs25"]
T_975_1 = 12.7062  # Student's t, 0.975 quantile, 1 degree of freedom (t table)


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory):
    return run_study(BASE, sweep=SWEEP, seeds=[0, 1], out=tmp_path_factory.mktemp("s") / "s",
                     **TINY)


def _copy(study, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(study.path.parent, out)
    return out


def _run(study, name: str, seed: int):
    return load_run(study.path.parent / "runs" / name / f"seed{seed}")


def test_every_run_meets_the_matching_rule_and_the_table_says_so(study) -> None:
    assert study.names == NAMES
    for row in study.table:
        assert row["seeds"] == [0, 1] and row["match"] == "train-loss=0.6"
        assert row["met"] == [True, True]
        for seed, value in zip(row["seeds"], row["train_loss"]["values"]):
            run = _run(study, row["model"], seed)
            losses = [h["train_loss"] for h in run.history]
            # train's rule: checks every quarter epoch (1 of 4 steps), two in a row <= 0.6
            assert losses[-1] <= 0.6 and run.stopping["met"]
            assert (run.stopping["check_every"], run.stopping["consecutive"]) == (1, 2)
            assert value == pytest.approx(losses[-1], rel=1e-5)  # engine vs trainer
            assert row["steps"]["values"][seed] == run.history[-1]["step"]
    md = (study.path.parent / "table.md").read_text()
    assert "train-loss=0.6 (2/2 met)" in md and "Differences" in md


def test_table_json_rows_carry_seeds_match_and_intervals(study) -> None:
    rows = json.loads((study.path.parent / "table.json").read_text())
    assert [r["model"] for r in rows] == NAMES
    for row in rows:
        assert {"seeds", "match", "train_loss", "steps", "lr_over_b"} <= set(row)
        for q in ("train_loss", "steps", "test_acc", "top_eigenvalue", "hessian_trace",
                  "epsilon_sharpness", "adaptive_worst_l2", "adaptive_average_l2",
                  "pac_bayes_flatness", "noise_scale", "curve_rise"):
            stat = row[q]
            values = [v for v in stat["values"] if v is not None]
            if q == "test_acc":   # pooled counts of the 360 test images, exact binomial
                k = round(sum(values) * 360)
                assert stat["examples"] == [360, 360] and stat["scale"] == "binomial"
                assert (stat["ci_low"], stat["ci_high"]) == pytest.approx(
                    (stats.beta.ppf(0.025, k, 721 - k), stats.beta.ppf(0.975, k + 1, 720 - k)))
                continue
            if len(values) < 2:
                continue
            log = stat["scale"] == "log"
            assert log == (q != "curve_rise" or min(values) > 0)   # positive: log scale
            z = np.log(values) if log else np.asarray(values)
            mean, s = np.mean(z), np.std(z, ddof=1)
            half = T_975_1 * s / math.sqrt(2)
            back = np.exp if log else float
            assert stat["mean"] == pytest.approx(back(mean))
            assert (stat["ci_low"], stat["ci_high"]) == pytest.approx(
                (back(mean - half), back(mean + half)), rel=1e-4, abs=1e-12)
    assert rows[0]["lr_over_b"] == pytest.approx(0.05 / 25)


def test_accuracies_are_each_models_own_forward_pass(study) -> None:
    for row in study.table:
        for i, seed in enumerate(row["seeds"]):
            run = _run(study, row["model"], seed)
            accs = {}
            with torch.no_grad():
                for split in ("train", "test"):
                    x, y = run.data.split(split)
                    accs[split] = float((run.model(x).argmax(1) == y).double().mean())
            assert row["train_acc"]["values"][i] == pytest.approx(accs["train"], abs=1e-9)
            assert row["test_acc"]["values"][i] == pytest.approx(accs["test"], abs=1e-9)
            assert row["train_acc"]["unit"] == row["generalization_gap"]["unit"] == "fraction"
            assert row["generalization_gap"]["values"][i] == pytest.approx(
                accs["train"] - accs["test"])


def _flat_loss(run):
    """The mean train cross-entropy as a function of the flat float64 parameters."""
    model = run.model.double()
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    x, y = run.data.split("train")
    x = x.double()

    def loss(theta: torch.Tensor) -> torch.Tensor:
        params, start = {}, 0
        for n, shape in zip(names, shapes):
            params[n] = theta[start:start + shape.numel()].view(shape)
            start += shape.numel()
        out = torch.func.functional_call(model, params, (x,))
        return nn.functional.cross_entropy(out, y)

    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return loss, theta0, model, x, y


def test_top_eigenvalue_and_trace_agree_with_the_dense_float64_hessian(study) -> None:
    row = study.table[0]
    for i, seed in enumerate(row["seeds"]):
        loss, theta0, *_ = _flat_loss(_run(study, row["model"], seed))
        H = torch.func.hessian(loss)(theta0)
        top = float(torch.linalg.eigvalsh(H)[-1])
        at_stop = row["top_eigenvalue"]["at_checkpoints"][i][-1]
        assert at_stop == pytest.approx(top, rel=2e-3)
        model = study.models[row["model"]][i]
        trace, stderr = model.measures["hessian_trace"]["value"], \
            model.measures["hessian_trace"]["stderr"]
        assert abs(trace - float(torch.trace(H))) <= 4 * stderr + 1e-6


def test_noise_scale_agrees_with_per_sample_gradients_one_at_a_time(study) -> None:
    row = study.table[1]
    loss, theta0, model, x, y = _flat_loss(_run(study, row["model"], 0))
    grads = []
    for i in range(len(y)):
        model.zero_grad()
        nn.functional.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in model.parameters()]))
    g = torch.stack(grads)
    mean = g.mean(0)
    b_simple = float(((g - mean) ** 2).sum(1).mean() / (mean @ mean))
    assert row["noise_scale"]["at_checkpoints"][0][-1] == pytest.approx(b_simple, rel=1e-3)


def test_curve_rise_is_the_loss_at_the_stored_direction(study) -> None:
    name = NAMES[0]
    result = load_study(study.path).models[name][0]
    run = _run(study, name, 0)
    loss, theta0, *_ = _flat_loss(run)
    rises = []
    for curve in result.curves:
        with h5py.File(curve.attrs["source"], "r") as f:
            d = torch.as_tensor(f["directions/x"][()], dtype=torch.float64)
        at = study.settings["rise_at"]
        with torch.no_grad():
            rises.append(float((loss(theta0 + at * d) + loss(theta0 - at * d)) / 2
                               - loss(theta0)))
    assert len(rises) == 2
    assert result.row["at_checkpoints"]["curve_rise"][-1] == pytest.approx(
        np.mean(rises), rel=1e-4, abs=1e-7)


def test_adding_a_seed_trains_and_measures_only_that_seed(study, tmp_path) -> None:
    out = _copy(study, tmp_path)
    again = run_study(BASE, sweep=SWEEP, seeds=[0, 1, 2], out=out, **TINY)
    assert again.computed["train"] == [f"{n}/seed2" for n in NAMES]
    assert all("/seed2/" in p for p in again.computed["curve"] + again.computed["measures"])
    assert again.computed["interpolation"] == []
    assert [r["seeds"] for r in again.table] == [[0, 1, 2]] * 2
    assert again.table[0]["top_eigenvalue"]["values"][:2] == \
        study.table[0]["top_eigenvalue"]["values"]
    # a rerun computes nothing at all
    same = run_study(BASE, sweep=SWEEP, seeds=[0, 1, 2], out=out, **TINY)
    assert not any(same.computed.values())


def test_changed_recipe_retrains_alone_and_a_changed_setting_recomputes_only_its_part(
        study, tmp_path) -> None:
    out = _copy(study, tmp_path)
    again = run_study(BASE, sweep={"lr": [0.05, 0.3], "batch_size": [25]}, seeds=[0, 1],
                      out=out, **TINY)
    assert again.computed["train"] == ["sgd-lr0.3-bs25/seed0", "sgd-lr0.3-bs25/seed1"]
    assert not any("lr0.05" in p for p in again.computed["measures"])
    again = run_study(BASE, sweep={"lr": [0.05, 0.3], "batch_size": [25]}, seeds=[0, 1],
                      out=out, **{**TINY, "eps": 2e-3})
    recomputed = again.computed["measures"]   # at the stop and the two checks before it
    assert len(recomputed) == 3 * 4 and all(p.endswith("/epsilon_sharpness") for p in recomputed)
    assert {"/".join(p.split("/")[:2]) for p in recomputed} == {
        f"{n}/seed{k}" for n in ("sgd-lr0.05-bs25", "sgd-lr0.3-bs25") for k in (0, 1)}
    assert again.computed["train"] == again.computed["curve"] == []


def test_two_worker_processes_train_and_measure_the_same_numbers(study, tmp_path) -> None:
    """``workers=2``: runs trained and measures taken in two processes are those of the
    one-process fixture bit for bit (its last two checks are these two)."""
    measures = ("top_eigenvalue", "noise_scale")
    again = run_study(BASE, sweep=SWEEP, seeds=[0], out=tmp_path / "parallel", workers=2,
                      checkpoints=2, measures=measures, direction_seeds=1,
                      **{k: v for k, v in TINY.items() if k != "direction_seeds"})
    assert again.computed["train"] == [f"{n}/seed0" for n in NAMES]
    for name in NAMES:
        ours, theirs = (torch.load(o / "runs" / name / "seed0" / "model.pt")
                        for o in (tmp_path / "parallel", study.path.parent))
        assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
        for m in measures:
            assert again.models[name][0].row["at_checkpoints"][m] == \
                study.models[name][0].row["at_checkpoints"][m][-2:]


def test_study_file_reads_back(study) -> None:
    loaded = load_study(study.path.parent)
    assert loaded.names == NAMES and loaded.design["seeds"] == [0, 1]
    assert json.dumps(loaded.table, default=str) == json.dumps(study.table, default=str)
    assert [len(loaded.models[n]) for n in NAMES] == [2, 2]
    assert all(len(m.curves) == 2 and m.surface is not None for m in loaded.models[NAMES[0]])
    ((a, b), line), = loaded.interpolations.items()
    assert (a, b) == tuple(NAMES) and line.done.all()
    ends = [study.table[i]["train_loss"]["values"][0] for i in (0, 1)]
    np.testing.assert_allclose(line.values["train_loss"][[1, 3]], ends, rtol=1e-5)


def test_existing_runs_are_measured_without_training(study, tmp_path) -> None:
    runs = {"a": study.path.parent / "runs" / NAMES[0] / "seed0",
            "b": study.path.parent / "runs" / NAMES[1] / "seed0"}
    other = run_study(runs=runs, out=tmp_path / "runs_study",
                      **{k: v for k, v in TINY.items() if k != "match"})
    assert other.computed["train"] == []
    assert len([c for c in other.computed["curve"] if "/curve_d" in c]) == 4
    for mine, theirs in zip(other.table, study.table):
        assert mine["top_eigenvalue"]["values"] == pytest.approx(
            theirs["top_eigenvalue"]["values"][:1], rel=1e-6)


def test_step_matching_gives_every_run_the_same_number_of_steps(tmp_path) -> None:
    tiny = {**TINY, "match": "steps=7", "measures": ("top_eigenvalue",)}
    study = run_study([Recipe("a", {"optimizer": "sgd", "lr": 0.1, "batch_size": 10}),
                       Recipe("b", {"optimizer": "adam", "lr": 1e-3, "batch_size": 50})],
                      seeds=[0, 1], out=tmp_path / "s", **tiny)
    for row in study.table:
        assert row["steps"]["values"] == [7, 7] and row["match"] == "steps=7"
        for seed in (0, 1):
            run = _run(study, row["model"], seed)
            assert run.stopping["rule"] == "steps" and run.history[-1]["step"] == 7


# ------------------------------------------------------------------------------ the design
def test_sweep_crosses_every_recipe_with_the_grid() -> None:
    recipes = expand_sweep([Recipe("a", {"optimizer": "sgd", "lr": 1.0})],
                           parse_sweep(["lr=0.1,0.2", "batch_size=16"]))
    assert [(r.name, r.options) for r in recipes] == [
        ("a-lr0.1-bs16", {"optimizer": "sgd", "lr": 0.1, "batch_size": 16}),
        ("a-lr0.2-bs16", {"optimizer": "sgd", "lr": 0.2, "batch_size": 16})]


@pytest.mark.parametrize("call, message", [
    (lambda: parse_match("loss=0.1"), "train-loss=L"),
    (lambda: parse_match("train-loss=-1"), "train-loss=L"),
    (lambda: parse_match("steps=1.5"), "train-loss=L"),
    (lambda: parse_sweep(["lr"]), "OPTION=V1,V2"),
    (lambda: parse_sweep(["lrr=0.1"]), "unknown recipe option 'lrr'"),
    (lambda: parse_sweep(["seed=1,2"]), "set by the study"),
    (lambda: parse_seeds("0,0"), "distinct"),
    (lambda: parse_seeds("a"), "comma-separated integers"),
    (lambda: parse_recipe("a=steps=10"), "set by the study"),
    (lambda: run_study([Recipe("a", {"spawn": [1, 0]}), Recipe("b", {})], out="unused",
                       stability_steps="1"), "spawns the children itself"),
])
def test_bad_design_is_a_one_line_error(call, message) -> None:
    with pytest.raises(LandscapeError, match=message) as err:
        call()
    assert "\n" not in str(err.value)


def test_matching_rules_become_train_options() -> None:
    assert parse_match("train-loss=0.02") == {"target_train_loss": 0.02}
    assert parse_match("steps=4500") == {"steps": 4500}
    assert parse_match(None) == {} and parse_seeds(3) == [0, 1, 2]


def test_recipe_values_are_typed() -> None:
    r = parse_recipe("sb=batch_size=16,lr=0.1,nesterov=true,momentum=none,optimizer=sgd,"
                     "model_options={'widths': [8, 8]}")
    assert r.name == "sb"
    assert r.options == {"batch_size": 16, "lr": 0.1, "nesterov": True, "momentum": None,
                         "optimizer": "sgd", "model_options": {"widths": [8, 8]}}


def test_unknown_recipe_option_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(LandscapeError) as err:
        parse_recipe("sb=batch=16,lr=0.1")
    message = str(err.value)
    assert "unknown recipe option 'batch'" in message and "did you mean 'batch_size'" in message
    assert "known: " in message and "epochs" in message and "\n" not in message
    with pytest.raises(LandscapeError, match="'out' is set by the study"):
        parse_recipe("sb=out=somewhere")
    with pytest.raises(LandscapeError, match="NAME=OPTIONS"):
        parse_recipe("batch_size")
    with pytest.raises(LandscapeError, match="name 'a b'"):
        parse_recipe("a b=lr=0.1")


def test_toml_file_holds_recipes_design_and_settings(tmp_path) -> None:
    path = tmp_path / "r.toml"
    path.write_text('train_size = 50\ncurve = "-1:1:5"\nseeds = [0, 1]\n'
                    'match = "train-loss=0.1"\nsweep = {lr = [0.1, 0.2]}\n\n'
                    '[recipes.sb]\nbatch_size = 16\n')
    recipes, settings = read_recipes(path)
    assert [(r.name, r.options) for r in recipes] == [("sb", {"batch_size": 16})]
    assert settings == {"train_size": 50, "curve": "-1:1:5", "seeds": [0, 1],
                        "match": "train-loss=0.1", "sweep": {"lr": [0.1, 0.2]}}
    path.write_text('curv = "-1:1:5"\n[recipes.sb]\nlr = 0.1\n')
    with pytest.raises(LandscapeError, match="unknown study setting 'curv'"):
        read_recipes(path)


def test_cli_compare_sweep_resumes_and_prints_json(study) -> None:
    args = ["compare", "--recipe", "sgd=optimizer=sgd,epochs=60", "--sweep", "lr=0.05,0.2",
            "--sweep", "batch_size=25", "--seeds", "0,1", "--match", "train-loss=0.6",
            "--train-size", "100", "--model-option", "widths=[8]", "--curve", "-1:1:5",
            "--surface", "-1:1:3", "--interpolation", "-0.5:1.5:5", "--direction-seeds", "2",
            "--out", str(study.path.parent), "--json"]
    settings = study.path.parent / "settings.toml"
    settings.write_text("trace_probes = 10\nhessian_tol = 1e-3\npac_bayes_samples = 4\n")
    result = CliRunner().invoke(main, [*args, "--recipes", str(settings)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert not any(out["computed"].values())
    assert [r["model"] for r in out["table"]] == NAMES
    bad = CliRunner().invoke(main, [*args[:-1], "--match", "loss=1"])
    assert bad.exit_code == 1 and "train-loss=L" in bad.output


def test_cli_plot_draws_a_study_file_as_the_comparison(study, tmp_path) -> None:
    out = tmp_path / "cmp.png"
    result = CliRunner().invoke(main, ["plot", str(study.path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_every_measure_has_one_definition_in_the_api_the_cli_and_the_study(tmp_path) -> None:
    """The registry's defaults (m = 128 for adaptive worst-case sharpness, the epsilon
    solver and its starts, the PAC-Bayes samples, ...) reach every route unchanged: the
    same model gives the same value through ``compute_measures``, ``landscape sharpness`` /
    ``landscape noise`` and the study. The run trains with B = 128 and lr = 0.1, the noise
    commands' defaults (the study measures noise at each recipe's own B and lr)."""
    from _helpers import invoke

    from landscape.analysis.measures import MeasureSettings, compute_measures, names_of
    from landscape.objective import Objective
    from landscape.training import train

    run_dir = tmp_path / "r"
    train(train_size=160, model_options={"widths": [8]}, optimizer="sgd", lr=0.1,
          batch_size=128, epochs=3, out=run_dir, progress=False)
    names = names_of(("curvature", "sharpness", "noise"))
    api = compute_measures(Objective.from_run(load_run(run_dir), "train"), names,
                           settings=MeasureSettings(), show_progress=False)
    study = run_study(runs={"a": run_dir, "b": run_dir}, measures=names, curve="-1:1:3",
                      surface="-1:1:3", interpolation="0:1:3", direction_seeds=1,
                      out=tmp_path / "s", show_progress=False, quiet=True)
    cli = {}
    for command in ("sharpness", "noise"):
        result = invoke(command, "--run", run_dir, "--json")
        assert result.exit_code == 0, result.output
        cli.update(json.loads(result.output))
    assert set(cli) == set(names_of(("sharpness", "noise")))
    for name in names:
        routes = [api[name].value, study.models["a"][0].measures[name]["value"]]
        routes += [cli[name]["value"]] if name in cli else []
        assert routes == pytest.approx([routes[0]] * len(routes), rel=1e-12, nan_ok=True), name
    assert api["adaptive_worst_l2"].settings["batch_size"] == 128


def test_every_measure_is_the_mean_over_three_checks_ending_at_the_stop(study) -> None:
    """The checkpoints are the weights at the last three target checks (``check_every``
    steps apart, the stop last); at each, the top eigenvalue is the dense float64 Hessian's
    and the 1D rise the loss along the stored direction; a run's value is their mean and
    its spread their max / min, in table.json."""
    rows = json.loads((study.path.parent / "table.json").read_text())
    result = load_study(study.path).models[NAMES[1]][0]
    run = _run(study, NAMES[1], 0)
    k, stop = run.stopping["check_every"], run.stopping["steps"]
    assert result.row["checkpoint_steps"] == [stop - 2 * k, stop - k, stop]
    assert [s for s, _ in run.checks()] == result.row["checkpoint_steps"]
    at = study.settings["rise_at"]
    with h5py.File(study.path, "r") as f:
        for (step, file), top, rise in zip(run.checks()[:-1],
                                           result.row["at_checkpoints"]["top_eigenvalue"],
                                           result.row["at_checkpoints"]["curve_rise"]):
            here = load_run(run.path)
            here.model = run.load_checkpoint(file)
            loss, theta0, *_ = _flat_loss(here)
            assert top == pytest.approx(float(torch.linalg.eigvalsh(
                torch.func.hessian(loss)(theta0))[-1]), rel=2e-3)
            rises = []
            for d in range(2):
                source = f[f"models/{NAMES[1]}/seed0/checkpoints/step_{step}/rise_d{d}"]
                with h5py.File(source.attrs["source"], "r") as g:
                    v = torch.as_tensor(g["directions/x"][()], dtype=torch.float64)
                with torch.no_grad():
                    rises.append(float((loss(theta0 + at * v) + loss(theta0 - at * v)) / 2
                                       - loss(theta0)))
            assert rise == pytest.approx(np.mean(rises), rel=1e-4, abs=1e-7)
    for q in ("top_eigenvalue", "hessian_trace", "epsilon_sharpness", "noise_scale",
              "curve_rise"):
        series = result.row["at_checkpoints"][q]
        assert len(series) == 3 and result.row[q] == pytest.approx(np.mean(series), rel=1e-12)
        stat = rows[1][q]
        assert stat["values"][0] == result.row[q] and stat["at_checkpoints"][0] == series
        if min(series) > 0:
            assert stat["spread"][0] == pytest.approx(max(series) / min(series), rel=1e-12)


def test_instability_beside_the_measures_is_the_barrier_between_children_trained_by_hand(
        tmp_path) -> None:
    from landscape.data import load_dataset
    from landscape.training import train

    options = {**TINY, "measures": "", "direction_seeds": 1, "match": "steps=8",
               "stability_steps": [3], "stability_points": 5}
    study = run_study(BASE, sweep=SWEEP, seeds=[0], out=tmp_path / "s", **options)
    data = load_dataset("digits", train_size=100, seed=0)
    (x, y), (x_train, y_train) = data.split("test"), data.split("train")
    column = "instability_test_error_step3"
    ts = np.linspace(0, 1, 5)
    for row in study.table:
        children = [train(optimizer="sgd", lr=row["lr"], batch_size=25,
                          train_size=100, data_seed=0, model_options={"widths": [8]},
                          steps=8, seed=0, spawn=(3, c), spawn_unit="step",
                          out=tmp_path / f"{row['model']}_child{c}", progress=False).model
                    for c in (0, 1)]
        model = children[0]
        a, b = (nn.utils.parameters_to_vector(m.parameters()).detach() for m in children)
        errors, losses = [], []
        for t in ts:
            nn.utils.vector_to_parameters((1 - t) * a + t * b, model.parameters())
            with torch.no_grad():
                errors.append(float((model(x).argmax(1) != y).double().mean()))
                losses.append(float(nn.functional.cross_entropy(model(x_train), y_train)))
        for name, v in (("test_error", errors), ("train_loss", losses)):
            expected = max(np.asarray(v) - ((1 - ts) * v[0] + ts * v[-1]))
            assert row[f"instability_{name}_step3"]["values"] == [
                pytest.approx(expected, rel=1e-5, abs=1e-9)]
    assert "test-err. barrier (step 3)" in (tmp_path / "s" / "table.md").read_text()
    findings = json.loads((tmp_path / "s" / "findings.json").read_text())
    assert findings["measures"][column]["trend"] is not None   # tested with the measures
    again = run_study(BASE, sweep=SWEEP, seeds=[0], out=tmp_path / "s", **options)
    assert again.computed["stability"] == [] and again.table[0][column] == study.table[0][column]
    other = run_study(BASE, sweep=SWEEP, seeds=[0], out=tmp_path / "s",
                      **{**options, "stability_points": 3})   # stale paths: redone
    assert other.computed["stability"] == [f"{n}/seed0" for n in NAMES]
    assert other.table[0][column]["values"] != [None]
    bad = CliRunner().invoke(main, ["compare", "--recipe", "a=lr=0.1", "--recipe", "b=lr=0.2",
                                    "--stability-steps", "3,x", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 1 and "comma-separated step counts" in bad.output


@pytest.mark.parametrize("spread, flagged", [(3.0, True), (1.5, False)])
def test_a_difference_within_a_runs_own_spread_is_flagged(spread, flagged) -> None:
    from landscape.findings import analyse, render

    def row(name: str, values: list[float]) -> dict:
        return {"model": name, "top_eigenvalue": {"values": values, "scale": "log",
                                                  "spread": [spread, 1.0, 1.0]}}

    rows = [row("a", [2.0, 2.1, 1.9]), row("b", [4.0, 4.2, 3.8])]   # ratio 0.5, p < 0.05
    findings = analyse(rows, ["top_eigenvalue"], {"top_eigenvalue": "top eig."})
    (pair,) = findings["measures"]["top_eigenvalue"]["pairs"]
    assert pair["verdict"] == "<" and pair["spread_warning"] is flagged
    assert ("own spread" in render(findings)) is flagged


def test_each_phase_bar_of_a_study_ends_exactly_at_its_total(study, tmp_path: Path,
                                                             monkeypatch) -> None:
    """Training and measuring get one bar each (their rates differ by orders of magnitude, so
    one bar's ETA would mislead); each is filled exactly, here on a resume."""
    import landscape.study as study_module

    made, bars = study_module.progress, []

    def recording(**kwargs):
        bars.append((kwargs["desc"], made(**kwargs)))  # shown (captured): a hidden bar counts 0
        return bars[-1][1]

    monkeypatch.setattr(study_module, "progress", recording)
    monkeypatch.setenv("LANDSCAPE_QUIET", "0")
    run_study(BASE, sweep=SWEEP, seeds=[0, 1], out=_copy(study, tmp_path),
              **{**TINY, "show_progress": True})
    assert [d for d, _ in bars] == ["study: training", "study: measuring"]
    assert bars[0][1].total == 4 and bars[1][1].total > 4
    assert [(bar.n, bar.total) for _, bar in bars] == [(4, 4), (bars[1][1].total,) * 2]

"""Training: optimizers, schedules, reproducibility, resume, run directories, CLI errors."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import killed_at_epoch
from click.testing import CliRunner

from landscape.cli import main
from landscape.errors import LandscapeError, LandscapeWarning
from landscape.models import build_model
from landscape.runs import EVALUATED, atomic_torch_save, atomic_write_json, load_run, write_history
from landscape.training import make_schedule, train
from landscape.training.optimizers import OPTIMIZERS

TINY = {"train_size": 200, "batch_size": 32, "progress": False, "device": "cpu"}


def _numbers(history: list[dict]) -> list[dict]:
    """History without the wall-clock column."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def _snapshot(path: Path) -> dict[str, tuple[bytes, int]]:
    return {str(f.relative_to(path)): (f.read_bytes(), f.stat().st_mtime_ns)
            for f in sorted(path.rglob("*")) if f.is_file()}


# ----------------------------------------------------------------------------- schedules
def test_schedules_match_their_closed_forms():
    lr, spe = 0.2, 4
    const = make_schedule("constant", lr, epochs=5, steps_per_epoch=spe)
    assert all(const(t) == lr for t in range(20))

    step = make_schedule("step", lr, epochs=6, steps_per_epoch=spe, step_size=2, gamma=0.5)
    for t in range(24):
        assert step(t) == pytest.approx(lr * 0.5 ** (t // 8), rel=1e-15)

    epochs = 10
    total = epochs * spe
    cos = make_schedule("cosine", lr, epochs=epochs, steps_per_epoch=spe)
    for t in range(total):
        assert cos(t) == pytest.approx(lr * 0.5 * (1 + math.cos(math.pi * t / total)), rel=1e-12)
    assert cos(total // 2) == pytest.approx(lr / 2, rel=1e-12)

    warm = make_schedule("cosine", lr, epochs=epochs, steps_per_epoch=spe, warmup_epochs=2)
    w = 2 * spe
    for t in range(w):
        assert warm(t) == pytest.approx(lr * (t + 1) / w, rel=1e-12)
    for t in range(w, total):
        expected = lr * 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w)))
        assert warm(t) == pytest.approx(expected, rel=1e-12)

    warm_step = make_schedule("step", lr, epochs=6, steps_per_epoch=spe, warmup_epochs=1,
                              step_size=2, gamma=0.1)
    assert warm_step(0) == pytest.approx(lr / spe)
    assert warm_step(spe) == lr and warm_step(spe + 8) == pytest.approx(lr * 0.1)


def test_history_learning_rate_follows_the_schedule(tmp_path):
    run = train(**TINY, epochs=4, schedule="cosine", warmup_epochs=1, lr=0.1,
                out=tmp_path / "run", save_every=10)
    spe = math.ceil(200 / 32)
    total, w = 4 * spe, spe
    assert run.history[0]["lr"] is None
    for row in run.history[1:]:
        t = row["epoch"] * spe - 1  # the epoch's last iteration
        expected = 0.1 * (t + 1) / w if t < w else \
            0.1 * 0.5 * (1 + math.cos(math.pi * (t - w) / (total - w)))
        assert row["lr"] == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- optimizers
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_lowers_the_training_loss_of_the_default_model(tmp_path, name):
    settings = dict(TINY, batch_size=16)
    run = train(**settings, optimizer=name, epochs=3, out=tmp_path / name, save_every=10)
    first, last = run.history[0], run.history[-1]
    assert [r["epoch"] for r in run.history] == [0, 1, 2, 3]
    assert math.isfinite(last["train_loss"])
    assert last["train_loss"] < 0.8 * first["train_loss"], (name, first, last)


# ----------------------------------------------------------------------------- reproducibility
@pytest.mark.parametrize(("optimizer", "augment"), [("momentum", False), ("sag", True)])
def test_same_seed_gives_bit_identical_history_on_cpu(tmp_path, optimizer, augment):
    kw = dict(TINY, optimizer=optimizer, augment=augment, epochs=3, save_every=10)
    a = train(**kw, seed=3, out=tmp_path / "a")
    b = train(**kw, seed=3, out=tmp_path / "b")
    c = train(**kw, seed=4, out=tmp_path / "c")
    assert _numbers(a.history) == _numbers(b.history)
    assert _numbers(a.history) != _numbers(c.history)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                           strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize(("optimizer", "augment", "eval_every"),
                         [("adam", True, 1), ("sag", False, 1), ("svrg", False, 1),
                          ("momentum", False, 3)])
def test_resumed_run_equals_uninterrupted_run(tmp_path, monkeypatch, optimizer, augment,
                                              eval_every):
    """Killed at epoch 4's checkpoint, resumed from epoch 2's (with ``eval_every=3`` a row
    that holds no evaluation): the same history, files and weights as a run not killed."""
    kw = dict(TINY, optimizer=optimizer, augment=augment, epochs=4, save_every=2, seed=1,
              eval_every=eval_every)
    whole = train(**kw, out=tmp_path / "whole")
    (tmp_path / "ref").mkdir()   # the files grown row by row hold the bytes of one rewrite
    write_history(tmp_path / "ref", whole.history)
    for name in ("history.json", "history.csv"):
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes()

    # the process dies after epoch 4's history row
    killed_at_epoch(monkeypatch, 4, lambda: train(**kw, out=tmp_path / "cut"))
    cut = tmp_path / "cut"
    assert not (cut / "model.pt").exists()
    assert len(json.loads((cut / "history.json").read_text())) == 5  # rows 0..4 were written
    with pytest.raises(LandscapeError, match="--resume"):
        train(**kw, out=cut)

    resumed = train(**kw, out=cut, resume=True)
    assert _numbers(resumed.history) == _numbers(whole.history)
    assert _numbers(json.loads((cut / "history.json").read_text())) == _numbers(whole.history)
    final_a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    final_b = torch.load(cut / "model.pt", weights_only=True)
    assert final_a.keys() == final_b.keys()
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert [e for e, _ in load_run(cut).checkpoints()] == [0, 2, 4]
    assert [r["epoch"] for r in resumed.history if r["train_loss"] is not None] == \
        ([0, 1, 2, 3, 4] if eval_every == 1 else [0, 3, 4])

    before = _snapshot(cut)  # resuming a finished run reads it back and writes nothing
    again = train(**kw, out=cut, resume=True)
    assert _snapshot(cut) == before and again.history == resumed.history


def test_eval_every_evaluates_at_its_cadence_the_last_epoch_and_target_checks(tmp_path):
    """Rows of epochs 0, N, 2N, ..., the last and those ending on a target check hold the
    evaluation of an every-epoch run, the others None (null / empty on disk); the training,
    and so the weights, are the same."""
    kw = dict(TINY, epochs=5, save_every=10)
    every = train(**kw, out=tmp_path / "every")
    sparse = train(**kw, eval_every=2, out=tmp_path / "sparse")
    evaluated = [r["epoch"] for r in sparse.history if r["train_loss"] is not None]
    assert evaluated == [0, 2, 4, 5]
    for a, b in zip(every.history, sparse.history, strict=True):
        assert (a["epoch"], a["step"], a["lr"]) == (b["epoch"], b["step"], b["lr"])
        assert [b[k] for k in EVALUATED] == [a[k] if a["epoch"] in evaluated else None
                                             for k in EVALUATED]
    assert all(torch.equal(u, v) for u, v in zip(every.model.state_dict().values(),
                                                 sparse.model.state_dict().values()))
    assert sparse.config["eval_every"] == 2 and "eval_every" not in every.config
    on_disk = json.loads((tmp_path / "sparse" / "history.json").read_text())
    assert [r["test_acc"] is None for r in on_disk] == [False, True, False, True, False, False]
    lines = (tmp_path / "sparse" / "history.csv").read_text().splitlines()
    assert lines[2].split(",")[2:6] == ["", "", "", ""] != lines[3].split(",")[2:6]
    # a target check every 2 epochs (14 steps) evaluates epochs 2 and 4 as well as 3
    with pytest.warns(UserWarning, match="target was NOT met"):
        target = train(**dict(kw, epochs=4), eval_every=3, target_train_loss=1e-9,
                       target_check_every=2 * math.ceil(200 / 32), out=tmp_path / "target")
    assert [r["epoch"] for r in target.history if r["train_loss"] is not None] == [0, 2, 3, 4]
    assert target.stopping["met"] is False


def test_default_save_every_keeps_every_epoch_up_to_the_bound_then_thins(tmp_path,
                                                                          monkeypatch):
    """Default checkpoints: every epoch up to DEFAULT_CHECKPOINTS epochs (20 -> 1), then
    every ceil(epochs / bound); a resumed run extended past the bound keeps its own."""
    import landscape.training.trainer as trainer_module

    short = train(**TINY, epochs=2, out=tmp_path / "short")
    assert short.config["save_every"] == 1
    assert [e for e, _ in short.checkpoints()] == [0, 1, 2]
    monkeypatch.setattr(trainer_module, "DEFAULT_CHECKPOINTS", 2)
    thinned = train(**TINY, epochs=5, out=tmp_path / "thin")
    assert thinned.config["save_every"] == 3
    assert [e for e, _ in thinned.checkpoints()] == [0, 3, 5]
    extended = train(**TINY, epochs=5, out=tmp_path / "short", resume=True)
    assert extended.config["save_every"] == 1
    assert [e for e, _ in extended.checkpoints()] == [0, 1, 2, 3, 4, 5]


def test_resume_skips_a_checkpoint_torn_by_an_os_crash(tmp_path, monkeypatch):
    """The newest checkpoint renamed into place but never flushed (empty after an OS crash
    inside a group-sync window): the resume warns and continues from the one before, giving
    the uninterrupted run's history."""
    kw = dict(TINY, epochs=3)
    whole = train(**kw, out=tmp_path / "whole")
    killed_at_epoch(monkeypatch, 3, lambda: train(**kw, out=tmp_path / "cut"))
    (tmp_path / "cut" / "checkpoints" / "epoch_0002.pt").write_bytes(b"")
    with pytest.warns(LandscapeWarning, match=r"epoch_0002.pt.*resuming from .*epoch_0001.pt"):
        resumed = train(**kw, out=tmp_path / "cut", resume=True)
    assert _numbers(resumed.history) == _numbers(whole.history)


def test_every_file_is_fsynced_before_run_json_says_complete(tmp_path, monkeypatch):
    """Group commit: one fsync per file at the end of a short run (not one per write), all
    of them before the final run.json's."""
    synced = []
    real = os.fsync

    def recording(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        return real(fd)

    import landscape.training.trainer as trainer_module

    monkeypatch.setattr(trainer_module, "SYNC_SECONDS", 1e9)   # however slow the machine
    monkeypatch.setattr(os, "fsync", recording)
    train(**TINY, epochs=3, out=tmp_path / "run")
    *files, last = synced
    assert sorted(files) == ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt",
                             "history.csv", "history.json", "model.pt", "run.json"]
    assert last.startswith(".run.json.tmp")   # the complete run.json, written last


# ----------------------------------------------------------------------------- run directory
@pytest.mark.parametrize("dataset", ["digits", "teacher"])
def test_load_run_model_reproduces_the_last_history_row(tmp_path, dataset):
    trained = train(**TINY, dataset=dataset, epochs=2, out=tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.config == trained.config and run.history == trained.history
    assert not run.model.training
    x, y = run.data.split("test")
    assert torch.equal(x, trained.data.x_test) and torch.equal(y, trained.data.y_test)
    with torch.no_grad():
        out = run.model(x)
    last = run.history[-1]
    if dataset == "digits":
        loss = F.cross_entropy(out.double(), y).item()
        assert (out.argmax(1) == y).double().mean().item() == last["test_acc"]
    else:
        loss = ((out.double() - y.double()) ** 2).mean().item()
        assert last["test_acc"] is None
    assert loss == pytest.approx(last["test_loss"], rel=1e-5)

    # epoch 0 is the initialization: the seeded model, whose loss is the first history row
    assert [e for e, _ in run.checkpoints()] == [0, 1, 2]
    init = run.load_checkpoint(0)
    torch.manual_seed(trained.config["seed"])
    fresh = build_model(trained.config["model"], run.data.input_shape, run.data.num_outputs,
                        **trained.config["model_options"])
    for k, v in fresh.state_dict().items():
        assert torch.equal(init.state_dict()[k], v), k
    final = run.load_checkpoint(2)
    assert all(torch.equal(final.state_dict()[k], v) for k, v in run.model.state_dict().items())


def test_checkpoint_that_does_not_fit_the_model_names_tensor_and_shapes(tmp_path):
    train(**TINY, model_options={"widths": [50]}, epochs=1, out=tmp_path / "run")
    run = load_run(tmp_path / "run")
    wider = build_model("mlp", (1, 8, 8), 10, widths=[100])
    bad = tmp_path / "wider.pt"
    torch.save(wider.state_dict(), bad)
    msg = r"tensor 'layers\.1\.weight' has shape \(100, 64\), the model expects \(50, 64\)"
    with pytest.raises(LandscapeError, match=msg):
        run.load_checkpoint(bad)
    torch.save(wider.state_dict(), tmp_path / "run" / "model.pt")
    with pytest.raises(LandscapeError, match=msg):
        load_run(tmp_path / "run")
    with pytest.raises(LandscapeError, match="no run.json"):
        load_run(tmp_path)
    with pytest.raises(LandscapeError, match="does not exist"):
        load_run(tmp_path / "missing")


def test_failed_write_leaves_the_previous_file_intact(tmp_path):
    file = tmp_path / "x.pt"
    atomic_torch_save(file, {"a": torch.ones(3)})
    before = file.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - any pickling failure
        atomic_torch_save(file, {"a": lambda: 0})
    assert file.read_bytes() == before
    atomic_write_json(tmp_path / "h.json", [1])
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "h.json", [object()])
    assert json.loads((tmp_path / "h.json").read_text()) == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.json", "x.pt"]


def test_history_appended_row_by_row_has_the_bytes_of_a_rewrite(tmp_path):
    rows = [{"epoch": e, "step": 3 * e, "train_loss": [0.5, math.nan, math.inf, 1e-300][e],
             "train_acc": None if e == 0 else 0.25 * e, "lr": 0.1, "seconds": 1.5,
             **({"extra": {"a": [1, 2]}} if e == 2 else {})} for e in range(4)]
    grown, whole = tmp_path / "grown", tmp_path / "whole"
    grown.mkdir(), whole.mkdir()
    for n in range(1, len(rows) + 1):
        if n == 3:  # a torn append (a kill inside it) is not extended: the files are rewritten
            data = (grown / "history.json").read_bytes()
            (grown / "history.json").write_bytes(data[:-7])
        write_history(grown, rows[:n], sync=n == len(rows), new=1)
        write_history(whole, rows[:n])
        for name in ("history.json", "history.csv"):
            assert (grown / name).read_bytes() == (whole / name).read_bytes(), (n, name)
    assert len(json.loads((grown / "history.json").read_text())) == len(rows)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def existing_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = CliRunner().invoke(main, ["train", "--train-size", "100", "--epochs", "1",
                                       "--widths", "20", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["run"] == str(out) and summary["epochs"] == 1
    assert summary["test_acc"] == load_run(out).history[-1]["test_acc"]
    return out


@pytest.mark.parametrize(("args", "message"), [
    (["--model", "mpl"], "unknown model 'mpl'; did you mean 'mlp'"),
    (["--optimizer", "adma"], "unknown optimizer 'adma'; did you mean 'adam'"),
    (["--dataset", "digit"], "unknown dataset 'digit'; did you mean 'digits'"),
    (["--dataset", "mnist", "--data-dir", "/nonexistent/mnist"], "data directory not found"),
    (["--lr", "0"], "learning rate must be positive"),
    (["--lr", "-0.1"], "learning rate must be positive"),
    (["--batch-size", "0"], "batch size must be a positive integer"),
    (["--schedule", "cosin"], "unknown schedule 'cosin'; did you mean 'cosine'"),
    (["--widths", "20,x"], "--widths must be"),
    (["--train-size", "100", "--epochs", "1", "--widths", "30"], "holds a different run"),
    (["--train-size", "100", "--epochs", "1", "--widths", "20"], "pass --resume"),
    (["--steps", "0"], "steps must be a positive integer"),
    (["--epochs", "3", "--steps", "5"], "give epochs or steps, not both"),
    (["--target-train-loss", "nan"], "target train loss must be a finite positive number"),
    (["--target-train-loss", "inf"], "target train loss must be a finite positive number"),
    (["--target-train-loss", "0"], "target train loss must be a finite positive number"),
    (["--target-check-every", "2"], "target_check_every goes with a target train loss"),
    (["--target-train-loss", "0.1", "--target-check-every", "0"],
     "target_check_every must be a positive integer"),
    (["--asam-scale", "weights"], "asam_scale is an option of optimizer 'asam'"),
])
def test_bad_input_exits_1_with_one_line_and_leaves_the_run_intact(existing_run, args,
                                                                    message):
    before = _snapshot(existing_run)
    result = CliRunner().invoke(main, ["train", *args, "--out", str(existing_run)])
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert message in lines[0]
    assert result.stdout == ""
    assert _snapshot(existing_run) == before


def test_default_training_reaches_95_percent_test_accuracy(tmp_path):
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "default")])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    run = load_run(tmp_path / "default")
    acc = run.history[-1]["test_acc"]
    print(f"\ndefault `landscape train`: {run.config['model']} {run.config['model_options']} "
          f"on {run.config['dataset']}, {run.config['optimizer']} lr {run.config['lr']}, "
          f"{run.config['epochs']} epochs: test accuracy {acc:.2%} in {seconds:.1f} s")
    assert acc >= 0.95
    assert seconds < 120
    assert "test loss" in result.stdout and str(tmp_path / "default") in result.stdout


@pytest.mark.parametrize("optimizer", ["sam", "svrg"])
def test_extra_evaluations_of_a_step_leave_batchnorm_statistics_alone(optimizer: str,
                                                                       tmp_path) -> None:
    """SAM's ascent point and SVRG's snapshot passes do not update the running statistics:
    one epoch tracks exactly one batch per step, as plain SGD does."""
    tracked = {}
    for name in ("sgd", optimizer):
        run = train(model="resnet20", dataset="digits", train_size=128, batch_size=64, epochs=1,
                    optimizer=name, lr=0.01, out=tmp_path / name, progress=False)
        tracked[name] = [int(v) for k, v in run.model.state_dict().items()
                         if k.endswith("num_batches_tracked")]
    assert tracked[optimizer] == tracked["sgd"]


@pytest.mark.parametrize("args", [["--seed", "-1"], ["--seed", "99999999999999999999"],
                                  ["--lr", "inf"]])
def test_out_of_range_seed_or_infinite_lr_is_a_one_line_error(args: list[str], tmp_path) -> None:
    result = CliRunner().invoke(main, ["train", "--train-size", "50", "--epochs", "1",
                                       "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- stopping rules
def _steps_recorded(monkeypatch) -> list[list[torch.Tensor]]:
    """The parameters after every SGD step of the next training (``[i]``: after step i + 1)."""
    states: list[list[torch.Tensor]] = []
    real_step = torch.optim.SGD.step

    def recorded(self, *args, **kwargs):
        out = real_step(self, *args, **kwargs)
        states.append([p.detach().clone() for g in self.param_groups for p in g["params"]])
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", recorded)
    return states


def test_target_rule_stops_at_the_first_check_that_makes_two_in_a_row(tmp_path, monkeypatch):
    """Brute force: the float64 full-batch loss after every step of an unstopped run, read
    at steps 0, K, 2K, ...; the run stops at the first check <= L whose previous check is."""
    kw = dict(TINY, epochs=8, save_every=100, optimizer="sgd", lr=0.1)
    states = _steps_recorded(monkeypatch)
    free = train(**kw, out=tmp_path / "free")
    x, y = free.data.split("train")
    net = build_model("mlp", (64,), 10)

    def loss_at(step: int) -> float:
        params = (free.load_checkpoint(0).parameters() if step == 0 else states[step - 1])
        with torch.no_grad():
            for p, v in zip(net.parameters(), params, strict=True):
                p.copy_(v)
            return F.cross_entropy(net.double()(x.double()), y).item()

    k = 3                                              # 7 steps an epoch: checks mid-epoch
    checks = [(s, loss_at(s)) for s in range(0, len(states) + 1, k)]
    levels = sorted(v for _, v in checks)
    target = (levels[len(levels) // 2] + levels[len(levels) // 2 + 1]) / 2
    assert min(abs(v - target) for _, v in checks) > 1e-4 * target   # float32 cannot flip it
    stop = next(s for (_, a), (s, b) in zip(checks, checks[1:]) if a <= target and b <= target)
    assert stop % 7 and stop > k                       # inside an epoch, after training

    run = train(**kw, target_train_loss=target, target_check_every=k, keep_checks=3,
                out=tmp_path / "target")
    assert run.stopping == {"rule": "target_train_loss", "target": target, "met": True,
                            "check_every": k, "consecutive": 2, "epochs": stop // 7 + 1,
                            "steps": stop, "train_loss": run.history[-1]["train_loss"],
                            "cap": {"epochs": 8}}
    assert json.loads((run.path / "run.json").read_text())["stopping"] == run.stopping
    # the checks change nothing: whole epochs as the free run's, then the partial one
    assert _numbers(run.history[:-1]) == _numbers(free.history[:stop // 7 + 1])
    assert [r["step"] for r in run.history] == [*range(0, stop, 7), stop]
    assert run.history[-1]["train_loss"] == pytest.approx(loss_at(stop), rel=1e-5)
    saved = torch.load(run.path / "model.pt", weights_only=True)
    assert all(torch.equal(a, b) for a, b in zip(saved.values(), states[stop - 1], strict=True))
    # the weights at the last three checks are kept, the stop last
    assert [s for s, _ in run.checks()] == [stop - 2 * k, stop - k, stop]
    for s, file in run.checks():
        kept = torch.load(file, weights_only=True)
        assert kept["step"] == s and kept["train_loss"] == pytest.approx(loss_at(s), rel=1e-5)
        assert all(torch.equal(a, b) for a, b in zip(
            run.load_checkpoint(file).parameters(), states[s - 1], strict=True))


def test_target_rule_skips_an_isolated_dip_and_resumes_bit_identically(tmp_path, monkeypatch):
    """A known loss sequence (by optimizer step) through the engine's evaluation: the dip at
    check 6 is skipped, checks 12 and 15 stop the run at step 15, and the streak of check 12
    (saved with the epoch-2 checkpoint, step 14) survives a resume."""
    import landscape.training.trainer as trainer_module

    step = [0]
    real_step = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        step[0] += 1
        return real_step(self, *args, **kwargs)

    def level(s: int) -> float:
        return 0.3 if s == 6 or s >= 12 else 1.0 - s / 100

    def scripted(model, source, loss, acc, batch_size=1024):
        return level(step[0]), (None if acc is None else 0.5)

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    monkeypatch.setattr(trainer_module, "evaluate_source", scripted)
    kw = dict(TINY, epochs=8, optimizer="sgd", lr=0.1, target_train_loss=0.4,
              target_check_every=3, keep_checks=2)
    whole = train(**kw, out=tmp_path / "whole")
    assert whole.stopping["met"] and whole.stopping["steps"] == 15
    # the epoch-2 row (step 14, loss 0.3) is no check: it does not stop the run
    assert [(r["step"], r["train_loss"]) for r in whole.history] == \
        [(s, level(s)) for s in (0, 7, 14, 15)]

    step[0] = 0
    killed_at_epoch(monkeypatch, 3, lambda: train(**kw, out=tmp_path / "cut"))
    step[0] = 14                                       # resumed from the epoch-2 checkpoint
    resumed = train(**kw, out=tmp_path / "cut", resume=True)
    assert _numbers(resumed.history) == _numbers(whole.history)
    assert resumed.stopping == whole.stopping
    final_a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    final_b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    # the kept checks (12, 15) survive the resume; the last is the model at the stop
    for a, b in zip(whole.checks(), resumed.checks(), strict=True):
        assert a[0] == b[0] and all(torch.equal(u, v) for u, v in zip(
            torch.load(a[1])["model"].values(), torch.load(b[1])["model"].values()))
    assert [s for s, _ in whole.checks()] == [12, 15]
    assert all(torch.equal(final_a[k], v)
               for k, v in torch.load(whole.checks()[-1][1])["model"].items())
    # the model at the stop is the one after exactly 15 steps
    monkeypatch.undo()
    exact = train(**{k: v for k, v in kw.items() if k[:6] not in ("target", "epochs", "keep_c")},
                  steps=15, out=tmp_path / "steps")
    assert all(torch.equal(final_a[k], v) for k, v in exact.model.state_dict().items())


def test_target_met_from_the_initialization_stops_at_the_second_check(tmp_path):
    run = train(**TINY, epochs=3, target_train_loss=100.0, out=tmp_path / "r")
    spe = math.ceil(200 / 32)
    k = math.ceil(spe / 4)                             # the default: a quarter epoch
    assert [(r["epoch"], r["step"]) for r in run.history] == [(0, 0), (1, k)]
    assert run.stopping["met"] and run.stopping["steps"] == k
    assert run.stopping["check_every"] == k and run.stopping["consecutive"] == 2


def test_cli_eval_every_reaches_the_history(tmp_path):
    result = CliRunner().invoke(main, ["train", "--train-size", "100", "--widths", "20",
                                       "--epochs", "3", "--eval-every", "2",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    history = load_run(tmp_path / "run", data=False).history
    assert [r["epoch"] for r in history if r["train_loss"] is not None] == [0, 2, 3]


def test_cap_reached_before_the_target_is_reported(tmp_path):
    with pytest.warns(UserWarning, match="target was NOT met"):
        run = train(**TINY, epochs=2, target_train_loss=1e-6, out=tmp_path / "api")
    assert run.stopping["met"] is False and run.stopping["epochs"] == 2
    assert run.stopping["train_loss"] == run.history[-1]["train_loss"] > 1e-6
    assert json.loads((tmp_path / "api" / "run.json").read_text())["stopping"] == run.stopping

    result = CliRunner().invoke(main, ["train", "--train-size", "100", "--widths", "20",
                                       "--epochs", "1", "--target-train-loss", "1e-6", "--json",
                                       "--out", str(tmp_path / "cli")])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning:")]
    assert len(warnings) == 1 and "NOT met" in warnings[0]
    summary = json.loads(result.stdout)
    assert summary["stopping"]["met"] is False
    assert summary["stopping"]["rule"] == "target_train_loss"


def test_step_budget_takes_exactly_n_optimizer_steps(tmp_path, monkeypatch):
    calls = []
    real_step = torch.optim.SGD.step

    def counted(self, *args, **kwargs):
        calls.append(1)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted)
    run = train(**TINY, steps=15, schedule="cosine", lr=0.1, out=tmp_path / "steps")
    monkeypatch.setattr(torch.optim.SGD, "step", real_step)
    assert len(calls) == 15
    assert [(r["epoch"], r["step"]) for r in run.history] == [(0, 0), (1, 7), (2, 14), (3, 15)]
    # the cosine schedule spans the 15 steps: step 15 (t = 14) is its last iteration
    assert run.history[-1]["lr"] == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 14 / 15)))
    assert run.stopping == {"rule": "steps", "target": 15, "met": True, "epochs": 3,
                            "steps": 15, "train_loss": run.history[-1]["train_loss"],
                            "cap": {"steps": 15}}
    with pytest.warns(UserWarning, match="NOT met"):
        both = train(**TINY, steps=15, target_train_loss=1e-6, out=tmp_path / "both")
    assert both.stopping["rule"] == "target_train_loss" and not both.stopping["met"]
    assert both.stopping["steps"] == 15 and both.stopping["cap"] == {"steps": 15}


@pytest.mark.parametrize("rule", [{"target_train_loss": 0.5, "epochs": 30},
                                  {"steps": 33}])
def test_resumed_run_with_a_stopping_rule_equals_uninterrupted_run(tmp_path, monkeypatch,
                                                                   rule):
    kw = dict(TINY, save_every=2, seed=2, **rule)
    whole = train(**kw, out=tmp_path / "whole")
    assert whole.stopping["epochs"] > 4

    killed_at_epoch(monkeypatch, 4, lambda: train(**kw, out=tmp_path / "cut"))
    resumed = train(**kw, out=tmp_path / "cut", resume=True)   # from epoch 2
    assert _numbers(resumed.history) == _numbers(whole.history)
    assert resumed.stopping == whole.stopping
    final_a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    final_b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    before = _snapshot(tmp_path / "cut")
    again = train(**kw, out=tmp_path / "cut", resume=True)
    assert _snapshot(tmp_path / "cut") == before and again.stopping == whole.stopping


def test_sag_trainer_reaches_the_least_squares_minimizer_with_unequal_batches(tmp_path):
    """n = 23 in batches 5,5,5,4,4: the limit is the minimizer of the sample-mean loss."""
    run = train(model="mlp", model_options={"widths": []}, dataset="teacher", train_size=23,
                batch_size=5, optimizer="sag", lr=0.1, epochs=60, save_every=100,
                progress=False, device="cpu", out=tmp_path / "sag")
    x, y = run.data.x_train.double(), run.data.y_train.double().reshape(-1)
    a = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)   # weight, then bias
    w = torch.cat([p.detach().double().reshape(-1) for p in run.model.parameters()])
    grad = 2 * a.T @ (a @ w - y) / len(y)
    print(f"\nSAG trainer, linear least squares, n=23 in 5,5,5,4,4: |grad| {grad.norm():.2e}")
    assert grad.norm() < 1e-5   # float32 training; the 1/|B_k| weighting leaves 3e-2
    assert torch.linalg.lstsq(a, y).solution.sub(w).norm() < 1e-5


def test_asam_scale_weights_reaches_the_optimizer_and_the_run_name(tmp_path):
    kw = dict(TINY, train_size=64, optimizer="asam", epochs=1, save_every=10)
    a = train(**kw, out=tmp_path / "all")
    b = train(**kw, asam_scale="weights", out=tmp_path / "weights")
    assert "asam_scale" not in a.config and b.config["asam_scale"] == "weights"
    assert a.history[0] == b.history[0] and a.history[1] != b.history[1]


def test_finished_constant_rate_run_extended_to_3_epochs_equals_a_3_epoch_run(tmp_path):
    """``--resume --epochs 3`` on a finished 2-epoch run (constant schedule, momentum, a
    checkpoint every 2 epochs) continues it bit for bit like a run asked for 3 epochs; a
    schedule that depends on the epoch count is refused in one line, the run untouched."""
    kw = dict(TINY, optimizer="momentum", save_every=2, seed=2)
    whole = train(**kw, epochs=3, out=tmp_path / "whole")
    short = train(**kw, epochs=2, out=tmp_path / "ext")
    assert short.info["status"] == "complete" and len(short.history) == 3
    extended = train(**kw, epochs=3, out=tmp_path / "ext", resume=True)
    assert _numbers(extended.history) == _numbers(whole.history)
    for (k, va), vb in zip(whole.model.state_dict().items(),
                           extended.model.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    info = load_run(tmp_path / "ext", data=False).info
    assert info["config"]["epochs"] == 3 and info["status"] == "complete"
    assert [r["epoch"] for r in info["resumed"]] == [2]
    with pytest.raises(LandscapeError, match="--overwrite"):   # fewer epochs: another run
        train(**kw, epochs=2, out=tmp_path / "ext", resume=True)
    for schedule, why in (("cosine", "cosine schedule decays"), ("step", "a third of")):
        out = tmp_path / schedule
        train(**kw, epochs=2, schedule=schedule, out=out)
        before = _snapshot(out)
        result = CliRunner().invoke(main, [
            "train", "--train-size", "200", "--batch-size", "32", "--optimizer", "momentum",
            "--save-every", "2", "--seed", "2", "--schedule", schedule, "--epochs", "3",
            "--device", "cpu", "--out", str(out), "--resume"])
        assert result.exit_code == 1, result.output
        line = result.output.strip()
        assert "\n" not in line and why in line and "from 2 to 3 epochs" in line
        assert _snapshot(out) == before


def test_accuracy_is_one_unit_everywhere_and_says_so(tmp_path):
    """History, ``train --json`` and a surface through the trained weights all store the
    accuracy as a fraction and say so; the surface's value at the origin (the trained
    model, evaluated by the engine) equals the history's last accuracy."""
    import h5py

    run_dir, curve = tmp_path / "run", tmp_path / "c.h5"
    result = CliRunner().invoke(main, ["train", "--train-size", "120", "--epochs", "2",
                                       "--widths", "8", "--device", "cpu", "--out",
                                       str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["accuracy_unit"] == "fraction" and 0.0 <= summary["test_acc"] <= 1.0
    info = json.loads((run_dir / "run.json").read_text())
    assert info["history_units"] == {"train_acc": "fraction", "test_acc": "fraction"}
    history = json.loads((run_dir / "history.json").read_text())
    assert history[-1]["test_acc"] == summary["test_acc"]
    result = CliRunner().invoke(main, ["surface", "--run", str(run_dir), "--x", "-1:1:3",
                                       "--split", "train,test", "--out", str(curve)])
    assert result.exit_code == 0, result.output
    with h5py.File(curve, "r") as f:
        for split in ("train", "test"):
            assert f[f"{split}_acc"].attrs["unit"] == "fraction"
            assert f[f"{split}_acc"][1] == pytest.approx(history[-1][f"{split}_acc"],
                                                         abs=1e-12)
        assert "unit" not in f["train_loss"].attrs


def test_run_json_splits_the_call_into_train_evaluate_and_save_seconds(tmp_path):
    start = time.perf_counter()
    run = train(**TINY, epochs=3, out=tmp_path / "run")
    wall = time.perf_counter() - start
    spent = run.info["seconds"]
    assert set(spent) == {"train", "evaluate", "save"} and min(spent.values()) > 0
    assert sum(spent.values()) <= wall
    # without target checks, the training share is the epochs' own clock (the history)
    assert spent["train"] == pytest.approx(sum(r["seconds"] for r in run.history), abs=1e-3)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["seconds"] == spent

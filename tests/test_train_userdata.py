"""Training on the user's own data and loss (``landscape train --data F:factory --loss F:fn``):
tuple inputs, a custom regression loss, resident and streamed data, resume, the analyses on
the trained run, changed-data refusals, and a study of recipes on user data."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _helpers import invoke, killed_at_epoch, write_user_file

from landscape import sources
from landscape.objective import Objective
from landscape.runs import load_run
from landscape.study import Recipe, run_study
from landscape.surface import load_surface
from landscape.training import train

USER = '''
import torch
from pathlib import Path
from torch import nn
from torch.utils.data import DataLoader, Dataset


class Pair(nn.Module):
    """A model of two inputs: forward(a, b)."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.out = nn.Linear(3, 6), nn.Linear(2, 6), nn.Linear(6, 1)

    def forward(self, a, b):
        return self.out(torch.tanh(self.a(a) + self.b(b))).squeeze(-1)


def model():
    return Pair()


def tensors():
    shift = float(Path(__file__).with_name("shift.txt").read_text())
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(40, 3, generator=g), torch.randn(40, 2, generator=g)
    y = torch.sin(a[:, 0]) + b[:, 1] * a[:, 2] + shift
    return ((a[:32], b[:32]), y[:32]), ((a[32:], b[32:]), y[32:])


class Rows(Dataset):
    def __init__(self, split):
        (self.a, self.b), self.y = split

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return (self.a[i], self.b[i]), self.y[i]


def loaders():
    train, test = tensors()  # shuffled from torch's global RNG, which checkpoints keep
    return (DataLoader(Rows(train), batch_size=5, shuffle=True),
            DataLoader(Rows(test), batch_size=5))


def huber(out, target, reduction="mean"):
    return torch.nn.functional.huber_loss(out, target, delta=0.5, reduction=reduction)
'''


@pytest.fixture()
def user(tmp_path: Path) -> Path:
    return write_user_file(tmp_path, USER)


def _reference(run: Path, user: Path) -> tuple[float, float, torch.nn.Module, tuple]:
    """Huber loss of the final weights on the train split and the top eigenvalue of its dense
    Hessian, both in float64 and computed here, independently of the engine."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ref_user", user)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    net = mod.model().double()
    net.load_state_dict(torch.load(run / "model.pt", weights_only=True))
    (a, b), y = mod.tensors()[0]
    a, b, y = a.double(), b.double(), y.double()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for _, p in net.named_parameters()]
    theta = torch.cat([p.detach().flatten() for p in net.parameters()])

    def loss(flat: torch.Tensor) -> torch.Tensor:
        params, at = {}, 0
        for name, shape in zip(names, shapes, strict=True):
            params[name] = flat[at:at + shape.numel()].reshape(shape)
            at += shape.numel()
        out = torch.func.functional_call(net, params, (a, b))
        return F.huber_loss(out, y, delta=0.5)

    hessian = torch.func.hessian(loss)(theta)
    return float(loss(theta)), float(torch.linalg.eigvalsh(hessian)[-1]), net, (a, b, y)


def test_cli_trains_on_user_data_and_loss_and_surface_and_hessian_rebuild_them(
        user: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    names = ["--model", f"{user}:model", "--data", f"{user}:tensors", "--loss", f"{user}:huber"]
    res = invoke("train", *names, "--optimizer", "adam", "--lr", "0.02", "--epochs", 3,
                  "--batch-size", 8, "--out", run)
    assert res.exit_code == 0, res.output
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"]["data"]["name"] == f"{user}:tensors"
    assert info["dataset"]["loss"]["name"] == f"{user}:huber"
    assert info["data_sizes"] == {"train": 32, "test": 8}
    ref_loss, ref_top, _, _ = _reference(run, user)
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["train_loss"] == pytest.approx(ref_loss, rel=1e-5)
    assert history[-1]["train_acc"] is None  # float targets: no accuracy
    assert history[-1]["train_loss"] < history[0]["train_loss"]

    res = invoke("surface", "--run", run, "--x", "-1:1:3", "--precision", "float64",
                  "--out", tmp_path / "s.h5", *names)
    assert res.exit_code == 0, res.output
    assert float(load_surface(tmp_path / "s.h5").values["train_loss"][1]) == pytest.approx(
        ref_loss, rel=1e-9)
    res = invoke("hessian", "--run", run, "--top", 1, "--bottom", 0, "--precision", "float64",
                  "--tol", "1e-8", "--out", tmp_path / "h.h5", "--trust-code", "--json")
    assert res.exit_code == 0, res.output
    top = json.loads(res.output[res.output.index("{"):])["eigenvalues_top"][0]
    assert top == pytest.approx(ref_top, rel=1e-6)


@pytest.mark.parametrize("factory", ["tensors", "loaders"])
def test_history_train_loss_is_the_engines_loss_at_the_final_weights(
        user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> None:
    if factory == "loaders":  # no memory budget: the user's shuffling loader, per epoch
        monkeypatch.setattr(sources, "DATA_BUDGET_FRACTION", 0.0)
    run = train(model=f"{user}:model", data=f"{user}:{factory}", loss=f"{user}:huber",
                optimizer="sgd", lr=0.05, epochs=2, batch_size=8, out=tmp_path / "r",
                progress=False)
    assert run.info["steps_per_epoch"] == (7 if factory == "loaders" else 4)  # 32 / 5 or 8
    engine = Objective.from_run(load_run(run.path, trust=True), "train", device="cpu")
    assert engine.source.resident is (factory == "tensors")
    theta = engine.theta0
    assert run.history[-1]["train_loss"] == pytest.approx(engine.loss(theta), rel=1e-6)
    ref_loss, _, _, _ = _reference(run.path, user)
    assert run.history[-1]["train_loss"] == pytest.approx(ref_loss, rel=1e-5)


@pytest.mark.parametrize("factory", ["tensors", "loaders"])
def test_resumed_user_data_run_equals_uninterrupted_run(
        user: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> None:
    if factory == "loaders":
        monkeypatch.setattr(sources, "DATA_BUDGET_FRACTION", 0.0)
    kw = dict(model=f"{user}:model", data=f"{user}:{factory}", loss=f"{user}:huber",
              optimizer="adam", lr=0.01, epochs=4, save_every=2, batch_size=8, seed=2,
              progress=False)
    whole = train(**kw, out=tmp_path / "whole")
    # the process dies after epoch 4's row; it resumes from epoch 2's checkpoint
    killed_at_epoch(monkeypatch, 4, lambda: train(**kw, out=tmp_path / "cut"))
    resumed = train(**kw, out=tmp_path / "cut", resume=True)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in whole.history]
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_changed_data_file_is_refused_with_one_line(user: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    names = ["--model", f"{user}:model", "--data", f"{user}:tensors", "--loss", f"{user}:huber"]
    assert invoke("train", *names, "--epochs", 1, "--out", run).exit_code == 0
    (tmp_path / "shift.txt").write_text("0.5")  # the factory now makes other data
    for trust in (["--trust-code"], names):
        res = invoke("surface", "--run", run, "--x", "-1:1:3", "--out", tmp_path / "t.h5",
                      *trust)
        assert res.exit_code == 1 and "changed since the run recorded them" in res.output
        assert len(res.output.strip().splitlines()) == 1
    (user).write_text(USER + "\n# edited\n")
    res = invoke("hessian", "--run", run, "--top", 1, "--out", tmp_path / "h.h5",
                  "--trust-code")
    assert res.exit_code == 1 and "changed since" in res.output
    assert len(res.output.strip().splitlines()) == 1
    res = invoke("train", *names, "--epochs", 1, "--out", run, "--resume")
    assert res.exit_code == 1 and "data_digest" in res.output


def test_study_of_two_recipes_on_user_data(user: Path, tmp_path: Path) -> None:
    recipes = [Recipe(name, {"optimizer": name, "lr": lr, "epochs": 2, "batch_size": 8,
                             "loss": f"{user}:huber"}) for name, lr in (("sgd", 0.05),
                                                                        ("adam", 0.01))]
    study = run_study(recipes, data=f"{user}:tensors", model=f"{user}:model",
                      out=tmp_path / "study", curve="-1:1:3", surface="-1:1:3",
                      interpolation="0:1:3", trace_probes=10, hessian_tol=1e-3,
                      pac_bayes_samples=2, direction_seeds=1, show_progress=False, quiet=True)
    assert [r["model"] for r in study.table] == ["sgd", "adam"]
    assert all(math.isfinite(v) for r in study.table for v in r["top_eigenvalue"]["values"])
    for name in ("sgd", "adam"):
        run = load_run(tmp_path / "study" / "runs" / name / "seed0", trust=True)
        assert run.info["dataset"]["data"]["name"] == f"{user}:tensors"
        engine = Objective.from_run(run, "train", device="cpu")
        assert engine.loss_name.endswith("huber")
        assert run.history[-1]["train_loss"] == pytest.approx(engine.loss(engine.theta0),
                                                              rel=1e-6)


LABELS = '''
import torch

def _split(labels):
    labels = torch.tensor(labels)
    return torch.randn(len(labels), 2, generator=torch.Generator().manual_seed(0)), labels

def mnist_like():  # the first label is 7, the largest 9 (MNIST's test set starts with a 7)
    return _split([7, 2, 1, 0, 4, 1, 4, 9, 5, 9] * 2), _split([7, 2, 1, 0, 9])

def first_zero():  # a first label of 0 used to build a one-output model
    return _split([0, 1, 2, 3] * 3), None

def negative():
    return _split([1, 0, 2, 1, -1, 0]), None

def beyond_train():
    return _split([1, 0, 2, 1, 0, 2]), _split([0, 1, 2, 3, 3])

def empty_train():
    return _split([]), None

def empty_test():
    return _split([0, 1, 1, 0]), _split([])
'''


@pytest.mark.parametrize(("factory", "classes"), [("mnist_like", 10), ("first_zero", 4)])
def test_class_count_comes_from_the_whole_train_split(tmp_path: Path, factory: str,
                                                      classes: int) -> None:
    user = write_user_file(tmp_path, LABELS)
    run = train(model="mlp", model_options={"widths": [3]}, data=f"{user}:{factory}",
                epochs=1, batch_size=4, out=tmp_path / "run", progress=False)
    assert run.info["model"]["num_outputs"] == classes
    assert run.model(torch.zeros(1, 2)).shape == (1, classes)


@pytest.mark.parametrize(("factory", "words"), [
    ("negative", "the user data's train split has label -1 at sample 4, outside [0, classes)"),
    ("beyond_train", "the user data's test split has label 3 at sample 3, outside [0, 3)"),
    ("empty_train", "the user data's train split is empty"),
    ("empty_test", "the user data's test split is empty"),
])
@pytest.mark.parametrize("command", ["train", "adopt"])
def test_bad_labels_or_an_empty_split_are_one_line_and_leave_no_run_directory(
        tmp_path: Path, factory: str, words: str, command: str) -> None:
    user = write_user_file(tmp_path, LABELS)
    torch.save(torch.nn.Linear(2, 3).state_dict(), tmp_path / "w.pt")
    extra = (["--model", "mlp", "--epochs", "1"] if command == "train" else
             ["--model", f"{user}:none", "--weights", tmp_path / "w.pt"])
    result = invoke(command, "--data", f"{user}:{factory}", *extra, "--out", tmp_path / "run")
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_start_that_fails_before_the_first_checkpoint_leaves_no_run_directory(
        tmp_path: Path) -> None:
    """The loss passes the two-sample check, then fails on the first full evaluation."""
    user = write_user_file(tmp_path, LABELS + '''
def picky(out, target):
    if len(target) > 2:
        raise ValueError("more than two samples")
    return torch.nn.functional.cross_entropy(out, target)
''')
    with pytest.raises(ValueError, match="more than two samples"):
        train(model="mlp", data=f"{user}:mnist_like", loss=f"{user}:picky", epochs=1,
              out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

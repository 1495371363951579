"""Models trained elsewhere (``landscape adopt``) and user data/loss factories recorded in
run.json: every layout of checkpoint, the round trip, trust and changed-data refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _helpers import invoke, write_user_file
from torch import nn

from landscape.objective import Objective
from landscape.runs import load_run
from landscape.surface import load_surface

USER = '''
import torch
from pathlib import Path
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))

def data():
    shift = float(Path(__file__).with_name("shift.txt").read_text())
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g) + shift, torch.randint(3, (30,), generator=g)
    return (x[:22], y[:22]), DataLoader(TensorDataset(x[22:], y[22:]), batch_size=3)

def smooth(out, target):
    return torch.nn.functional.cross_entropy(out, target, label_smoothing=0.1)
'''


@pytest.fixture()
def user(tmp_path: Path) -> Path:
    return write_user_file(tmp_path, USER)


def _trained(user: Path) -> nn.Module:
    torch.manual_seed(5)  # weights that differ from the factory's
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3))


@pytest.mark.parametrize("layout", ["bare", "state_dict", "model", "module_prefix"])
def test_checkpoint_of_each_layout_is_adopted_and_analysed(user: Path, tmp_path: Path,
                                                           layout: str) -> None:
    net = _trained(user)
    state = net.state_dict()
    saved = {"bare": state, "state_dict": {"state_dict": state, "epoch": 3},
             "model": {"model": state, "optimizer": {}},
             "module_prefix": {f"module.{k}": v for k, v in state.items()}}[layout]
    torch.save(saved, tmp_path / "ckpt.pt")
    run = tmp_path / "run"
    spec = f"{user}:model"
    res = invoke("adopt", "--model", spec, "--weights", tmp_path / "ckpt.pt", "--data",
                  f"{user}:data", "--loss", f"{user}:smooth", "--out", run)
    assert res.exit_code == 0, res.output
    info = json.loads((run / "run.json").read_text())
    assert info["dataset"]["data"]["name"] == f"{user}:data"
    assert info["dataset"]["loss"]["name"] == f"{user}:smooth"
    res = invoke("surface", "--run", run, "--x", "-1:1:3", "--split", "train,test",
                  "--out", tmp_path / "s.h5", "--precision", "float64", "--trust-code")
    assert res.exit_code == 0, res.output
    surf = load_surface(tmp_path / "s.h5")
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(30, 4, generator=g), torch.randint(3, (30,), generator=g)
    net = net.double()
    with torch.no_grad():
        for split, sel in (("train", slice(0, 22)), ("test", slice(22, 30))):
            ref = float(F.cross_entropy(net(x[sel].double()), y[sel], label_smoothing=0.1))
            assert float(surf.values[f"{split}_loss"][1]) == pytest.approx(ref, rel=1e-9)
    res = invoke("hessian", "--run", run, "--top", 1, "--bottom", 0, "--out",
                  tmp_path / "h.h5", "--trust-code")
    assert res.exit_code == 0, res.output


def test_data_and_loss_round_trip_through_run_json_with_trust_and_digest(user: Path,
                                                                         tmp_path: Path) -> None:
    torch.save(_trained(user).state_dict(), tmp_path / "ckpt.pt")
    run = tmp_path / "run"
    names = ["--model", f"{user}:model", "--data", f"{user}:data", "--loss", f"{user}:smooth"]
    assert invoke("adopt", *names, "--weights", tmp_path / "ckpt.pt", "--out", run
                   ).exit_code == 0
    loaded = load_run(run, trust=True)
    obj = Objective.from_run(loaded, "train", precision="float64", device="cpu")
    assert obj.loss_name.endswith("smooth")
    with torch.no_grad():
        net = loaded.model.double()
        ref = float(F.cross_entropy(net(obj.x), obj.y, label_smoothing=0.1))
    assert obj.loss(obj.theta0) == pytest.approx(ref, rel=1e-12)
    out = tmp_path / "s.h5"
    res = invoke("surface", "--run", run, "--x", "-1:1:3", "--out", out)
    assert res.exit_code == 1 and "trust" in res.output
    assert invoke("surface", "--run", run, "--x", "-1:1:3", "--out", out, *names
                   ).exit_code == 0
    (tmp_path / "shift.txt").write_text("0.5")  # the factory now makes other data
    res = invoke("surface", "--run", run, "--x", "-1:1:3", "--out", tmp_path / "t.h5",
                  "--trust-code")
    assert res.exit_code == 1 and "changed since the run recorded them" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_mismatched_checkpoint_names_missing_and_unexpected_keys(user: Path,
                                                                 tmp_path: Path) -> None:
    state = _trained(user).state_dict()
    state["extra.weight"] = state.pop("2.weight")
    torch.save({"state_dict": state}, tmp_path / "bad.pt")
    res = invoke("adopt", "--model", f"{user}:model", "--weights", tmp_path / "bad.pt",
                  "--data", f"{user}:data", "--out", tmp_path / "run")
    assert res.exit_code == 1
    assert "'2.weight'" in res.output and "'extra.weight'" in res.output


def test_zoo_model_on_a_built_in_dataset_is_adopted_like_the_run_it_came_from(
        tmp_path: Path) -> None:
    """A checkpoint as the reference code of Li et al. saves it ({'state_dict': ...} with
    DataParallel's 'module.' prefix) of a zoo model on a built-in dataset: the adopted run's
    surface equals the original run's, point for point."""
    from landscape.training import train

    run = train(model="mlp", dataset="spirals", train_size=40, epochs=1, batch_size=20,
                out=tmp_path / "run", progress=False)
    torch.save({"state_dict": {f"module.{k}": v for k, v in run.model.state_dict().items()}},
               tmp_path / "ckpt.t7")
    result = invoke("adopt", "--model", "mlp", "--weights", tmp_path / "ckpt.t7",
                    "--dataset", "spirals", "--train-size", "40", "--out", tmp_path / "adopted")
    assert result.exit_code == 0, result.output
    surfaces = []
    for name in ("run", "adopted"):
        result = invoke("surface", "--run", tmp_path / name, "--x", "-1:1:3",
                        "--out", tmp_path / f"{name}.h5", "--json")
        assert result.exit_code == 0, result.output
        surfaces.append(load_surface(tmp_path / f"{name}.h5").values["train_loss"])
    assert np.array_equal(*surfaces)
    refused = invoke("adopt", "--model", "mlp", "--weights", tmp_path / "ckpt.t7",
                     "--out", tmp_path / "none")
    assert refused.exit_code == 1 and "one of them" in refused.output

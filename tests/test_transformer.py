"""The decoder-only transformer on the embedded modular-addition task: the whole suite
(train, surface, hessian, sharpness, noise) on integer tokens, checked against references."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import landscape
from landscape.cli import main
from landscape.data import MODADD_P, load_dataset
from landscape.models.transformer import Transformer
from landscape.objective import Objective


def test_modadd_holds_every_pair_once_with_its_sum_mod_p() -> None:
    data = load_dataset("modadd", seed=3)
    x = torch.cat([data.x_train, data.x_test])
    assert x.dtype == torch.int64 and len(x) == MODADD_P**2
    assert len(data.x_train) == MODADD_P**2 // 2
    assert len({tuple(r) for r in x[:, :2].tolist()}) == MODADD_P**2
    assert torch.equal(torch.cat([data.y_train, data.y_test]), (x[:, 0] + x[:, 1]) % MODADD_P)
    assert (x[:, 2] == MODADD_P).all()


def test_transformer_per_sample_norms_and_noise_equal_per_sample_gradients() -> None:
    torch.manual_seed(0)
    model = landscape.build_model("transformer", (3,), MODADD_P, d_model=8, n_heads=2)
    data = load_dataset("modadd")
    x, y = data.x_train[:24], data.y_train[:24]
    obj = Objective(model, (x, y), precision="float64", device="cpu", batch_size=10)
    with torch.no_grad():
        ref = float(F.cross_entropy(model.double()(x), y))
    assert obj.loss(obj.theta0) == pytest.approx(ref, rel=1e-12)
    _, sq = obj.per_sample_sq_norms(obj.theta0)
    g = obj.per_sample_grads(obj.theta0)
    torch.testing.assert_close(sq, g.double().square().sum(1), rtol=1e-9, atol=1e-14)


def test_train_surface_hessian_sharpness_noise_on_the_token_model(tmp_path) -> None:
    run = tmp_path / "run"
    r = CliRunner()
    res = r.invoke(main, ["train", "--model", "transformer", "--model-option", "d_model=8",
                          "--dataset", "modadd", "--train-size", "64", "--epochs", "2",
                          "--optimizer", "adamw", "--lr", "1e-3", "--out", str(run)])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["surface", "--run", str(run), "--x", "-1:1:3", "--out",
                          str(tmp_path / "s.h5")])
    assert res.exit_code == 0, res.output
    surface = landscape.load_surface(tmp_path / "s.h5")
    loaded = landscape.load_run(run)
    with torch.no_grad():
        x, y = loaded.data.x_train, loaded.data.y_train
        ref = float(F.cross_entropy(loaded.model(x), y))
    assert float(surface.values["train_loss"][1]) == pytest.approx(ref, rel=1e-5)
    for args in (["hessian", "--top", "1", "--bottom", "0", "--out", str(tmp_path / "h.h5")],
                 ["sharpness", "--measures", "sam_sharpness", "--json"],
                 ["noise", "--noise-batch-size", "16", "--json"]):
        res = r.invoke(main, [args[0], "--run", str(run), *args[1:]])
        assert res.exit_code == 0, (args, res.output)


class _TiedLM(Transformer):
    """The head's weight is also the token embedding (read by the parent, outside the head's
    forward), and the parent also applies the block's output projection by ``F.linear``."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        h = F.embedding(ids, self.head.weight) + self.pos(positions)
        h = self.blocks(h)
        h = h + 0.5 * F.linear(h, self.blocks[0].proj.weight)
        return self.head(self.ln(h[:, -1]))


def test_per_sample_norms_of_a_weight_tied_transformer_equal_brute_force_gradients() -> None:
    from landscape.per_sample import exclusive_layers

    torch.manual_seed(0)
    vocab = MODADD_P + 1
    model = _TiedLM(vocab, 3, vocab, d_model=8, n_heads=2).double()
    data = load_dataset("modadd")
    x, y = data.x_train[:12], data.y_train[:12]
    obj = Objective(model, (x, y), precision="float64", device="cpu", batch_size=5)
    layers, rest = exclusive_layers(obj)
    # the tied head and the projection read by the parent take the exact path
    assert {"head", "blocks.0.proj"}.isdisjoint(layers) and "blocks.0.qkv" in layers
    assert {"head.weight", "blocks.0.proj.weight"} <= set(rest)
    ref = torch.stack([
        sum(g.square().sum() for g in torch.autograd.grad(
            F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), list(model.parameters()),
            allow_unused=True) if g is not None)  # (the token embedding is unused)
        for i in range(len(y))])
    g, sq = obj.per_sample_sq_norms(obj.theta0)
    torch.testing.assert_close(sq, ref, rtol=1e-10, atol=0.0)
    torch.testing.assert_close(g, obj.grad(obj.theta0), rtol=1e-10, atol=1e-14)
    noise = landscape.gradient_noise(obj, batch_size=4)
    exact = landscape.gradient_noise(obj, batch_size=4, method="per_sample")
    assert noise.trace_cov == pytest.approx(exact.trace_cov, rel=1e-9)


def test_reduced_modadd_recipe_fits_its_train_split(tmp_path) -> None:
    """The README's grokking recipe, reduced (128 train pairs, full batch, d_model 32, lr 1e-2,
    50 steps): AdamW with weight decay 1.0 memorizes the train pairs (1.0 train accuracy
    observed over seeds 0-2, first >= 0.98 by step 35-40); test accuracy stays near chance
    (1/97), since grokking needs thousands of steps."""
    run = landscape.train(model="transformer", model_options={"d_model": 32, "n_heads": 4},
                          dataset="modadd", train_size=128, batch_size=128, optimizer="adamw",
                          lr=1e-2, weight_decay=1.0, warmup_epochs=10, epochs=50,
                          save_every=1000, out=tmp_path / "run", progress=False, threads=1)
    last = run.history[-1]
    assert last["train_acc"] >= 0.95
    assert last["test_acc"] < 0.1

"""Tests of the model zoo: shapes, published parameter counts, skip connections, init, users."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from landscape.errors import LandscapeError
from landscape.models import (
    MODELS,
    build_model,
    count_parameters,
    model_from_spec,
    model_spec,
)

DIGITS = (1, 8, 8)
CIFAR = (3, 32, 32)


def _seeded(name: str, shape: tuple[int, ...], classes: int = 10, seed: int = 0, **opts):
    torch.manual_seed(seed)
    return build_model(name, shape, classes, **opts)


# --- independent closed-form parameter counts ---------------------------------------------


def _conv(cin: int, cout: int, k: int, bias: bool = False) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def cifar_resnet_count(depth: int, shortcut: str | None, classes: int = 10, cin: int = 3) -> int:
    """He et al.'s CIFAR ResNet by hand; shortcut None means no skip connections."""
    n = (depth - 2) // 6
    total = _conv(cin, 16, 3) + _bn(16)
    planes_in = 16
    for planes in (16, 32, 64):
        for _ in range(n):
            total += _conv(planes_in, planes, 3) + _bn(planes) + _conv(planes, planes, 3)
            total += _bn(planes)
            if shortcut == "B" and planes_in != planes:
                total += _conv(planes_in, planes, 1) + _bn(planes)
            planes_in = planes
    return total + 64 * classes + classes


def wrn_count(depth: int, k: int, classes: int = 10) -> int:
    n = (depth - 4) // 6
    total, planes_in = _conv(3, 16, 3), 16
    for planes in (16 * k, 32 * k, 64 * k):
        for _ in range(n):
            total += _bn(planes_in) + _conv(planes_in, planes, 3) + _bn(planes)
            total += _conv(planes, planes, 3)
            if planes_in != planes:
                total += _conv(planes_in, planes, 1)
            planes_in = planes
    return total + _bn(planes_in) + planes_in * classes + classes


# --- every model, every shape ----------------------------------------------------------------


@pytest.mark.parametrize("shape", [DIGITS, CIFAR], ids=["digits", "cifar"])
@pytest.mark.parametrize("name", sorted(set(MODELS) - {"transformer"}))  # tokens: test_transformer
def test_every_registry_model_maps_a_batch_to_logits(name: str, shape: tuple[int, ...]) -> None:
    model = _seeded(name, shape, classes=7)
    assert isinstance(model, nn.Module) and model.training
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()


def test_mlp_takes_flat_inputs_and_image_models_refuse_them() -> None:
    model = _seeded("mlp", (2,), classes=2, widths=(16, 8))
    assert model(torch.randn(5, 2)).shape == (5, 2)
    assert count_parameters(model) == (2 * 16 + 16) + (16 * 8 + 8) + (8 * 2 + 2)
    with pytest.raises(LandscapeError, match="image inputs"):
        build_model("resnet20", (2,), 2)


def test_mlp_without_hidden_layers_is_a_linear_model() -> None:
    model = _seeded("mlp", DIGITS, widths=[])
    x = torch.randn(4, *DIGITS)
    (linear,) = [m for m in model.modules() if isinstance(m, nn.Linear)]
    torch.testing.assert_close(model(x), x.flatten(1) @ linear.weight.T + linear.bias)


def test_bias_free_mlp_is_invariant_to_rescaling_consecutive_layers() -> None:
    model = _seeded("mlp", DIGITS, widths=(20, 30), bias=False).double()
    assert all(not isinstance(m, nn.Linear) or m.bias is None for m in model.modules())
    x = torch.randn(6, *DIGITS, dtype=torch.float64)
    before = model(x)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        linears[0].weight.mul_(3.0)
        linears[1].weight.div_(3.0)
    torch.testing.assert_close(model(x), before)


def test_lenet_has_the_classic_400_features_on_mnist_and_cifar() -> None:
    for shape, flat in (((1, 28, 28), 400), (CIFAR, 400), (DIGITS, 64)):
        model = _seeded("lenet", shape)
        assert model.classifier[0].in_features == flat
        assert model(torch.randn(2, *shape)).shape == (2, 10)


# --- published parameter counts ------------------------------------------------------------


def test_resnet_parameter_counts_match_he_et_al_and_li_et_al() -> None:
    # Option A (He et al. 2016, Table 6: 0.27M, 0.85M, 1.7M) and option B (Li et al.'s code).
    published = {
        (20, "A"): 269_722,
        (56, "A"): 853_018,
        (110, "A"): 1_727_962,
        (20, "B"): 272_474,
        (56, "B"): 855_770,
        (110, "B"): 1_730_714,
    }
    for (depth, shortcut), count in published.items():
        assert cifar_resnet_count(depth, shortcut) == count
        model = build_model(f"resnet{depth}", CIFAR, 10, shortcut=shortcut)
        assert count_parameters(model) == count
    assert round(published[20, "A"] / 1e6, 2) == 0.27
    assert round(published[56, "A"] / 1e6, 2) == 0.85
    assert round(published[110, "A"] / 1e6, 1) == 1.7
    # The default is the loss-landscape reference's projection shortcut.
    assert count_parameters(build_model("resnet56", CIFAR, 10)) == 855_770
    for depth in (20, 56, 110):
        noshort = build_model(f"resnet{depth}-noshort", CIFAR, 10)
        assert count_parameters(noshort) == published[depth, "A"]


def test_vgg9_parameter_count_matches_the_reference_layout() -> None:
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256)]
    expected = sum(_conv(a, b, 3, bias=True) + _bn(b) for a, b in convs)
    expected += (256 * 4 * 4 * 256 + 256) + _bn(256) + (256 * 10 + 10)
    assert expected == 2_789_706
    assert count_parameters(build_model("vgg9", CIFAR, 10)) == expected


def test_wide_resnet_parameter_counts_match_zagoruyko_and_komodakis() -> None:
    # Paper: WRN-16-4 2.7M, WRN-40-1 0.6M, WRN-16-8 11.0M.
    for name, depth, k, millions in (
        ("wrn-16-4", 16, 4, 2.7),
        ("wrn-40-1", 40, 1, 0.6),
        ("wrn-16-8", 16, 8, 11.0),
    ):
        count = count_parameters(build_model(name, CIFAR, 10))
        assert count == wrn_count(depth, k)
        assert round(count / 1e6, 1) == millions
    assert count_parameters(build_model("wrn", CIFAR, 10)) == 2_748_890
    assert count_parameters(build_model("wrn", CIFAR, 10, depth=40, widen=1)) == 563_930


# --- skip connections ----------------------------------------------------------------------


def _zero_residual_branches(model: nn.Module) -> None:
    """Set every block's last BatchNorm to output 0, so each branch contributes nothing."""
    with torch.no_grad():
        for name, module in model.named_modules():
            if name.endswith(".bn2"):
                module.weight.zero_()
                module.bias.zero_()


def test_noshort_resnet_has_no_skip_connection() -> None:
    x = torch.randn(4, *CIFAR)
    noshort = _seeded("resnet20-noshort", CIFAR).eval()
    short = _seeded("resnet20", CIFAR, shortcut="A").eval()
    short.load_state_dict(noshort.state_dict())  # identical weights, same tensor names
    assert not torch.allclose(noshort(x), short(x))

    # With every residual branch silenced, a plain chain outputs the same for every input...
    _zero_residual_branches(noshort)
    out = noshort(x)
    torch.testing.assert_close(out, noshort.linear.bias.expand(4, -1))

    # ...while option-A shortcuts carry the stem's features through: subsampled twice,
    # zero-padded 16 -> 32 -> 64 channels (8 + 16 channels before them), average-pooled.
    _zero_residual_branches(short)
    with torch.no_grad():
        stem = torch.relu(short.bn1(short.conv1(x)))
        feats = torch.zeros(4, 64)
        feats[:, 24:40] = stem[:, :, ::4, ::4].mean(dim=(2, 3))
        expected = short.linear(feats)
        torch.testing.assert_close(short(x), expected)
    assert not torch.allclose(expected[0], expected[1])


def test_option_b_shortcut_is_a_batch_normalized_projection() -> None:
    model = _seeded("resnet20", CIFAR).eval()
    block = model.layer2[0]
    _zero_residual_branches(model)
    x = torch.randn(2, 16, 32, 32)
    conv, bn = block.shortcut
    assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
    with torch.no_grad():
        torch.testing.assert_close(block(x), torch.relu(bn(conv(x))))


# --- initialization and determinism --------------------------------------------------------


def test_cifar_models_use_the_reference_initialization() -> None:
    model = _seeded("resnet56", CIFAR)
    conv = model.layer3[1].conv2.weight  # 64 x 64 x 3 x 3 = 36,864 weights
    assert conv.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.03)
    assert abs(conv.mean().item()) < 3 * math.sqrt(2 / (64 * 9)) / math.sqrt(conv.numel())
    assert torch.all(model.layer2[0].bn1.weight == 1) and torch.all(model.layer2[0].bn1.bias == 0)
    assert model.linear.weight.std().item() == pytest.approx(1e-3, rel=0.2)
    assert torch.all(model.linear.bias == 0)
    vgg = _seeded("vgg9", CIFAR)
    assert vgg.fc[0].weight.std().item() == pytest.approx(1e-3, rel=0.02)
    assert torch.all(vgg.features[0].bias == 0)


@pytest.mark.parametrize("name", ["mlp", "lenet", "vgg9", "resnet20", "wrn"])
def test_models_are_deterministic_under_manual_seed(name: str) -> None:
    a, b, c = _seeded(name, DIGITS), _seeded(name, DIGITS), _seeded(name, DIGITS, seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("name", ["mlp", "lenet", "vgg9", "resnet20", "resnet20-noshort", "wrn"])
def test_models_evaluate_stacked_parameters_under_vmap(name: str) -> None:
    model = _seeded(name, DIGITS).double().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    shifted = {k: v + 0.05 * torch.randn_like(v) for k, v in params.items()}
    stacked = {k: torch.stack([params[k], shifted[k]]) for k in params}
    x = torch.randn(3, *DIGITS, dtype=torch.float64)
    out = vmap(lambda p: functional_call(model, (p, buffers), (x,)))(stacked)
    with torch.no_grad():
        torch.testing.assert_close(out[0], model(x))
        torch.testing.assert_close(out[1], functional_call(model, (shifted, buffers), (x,)))


# --- names, options, specs -----------------------------------------------------------------


def test_unknown_names_and_options_are_one_line_errors() -> None:
    with pytest.raises(LandscapeError, match="did you mean 'resnet56'") as err:
        build_model("resnt56", CIFAR, 10)
    assert "\n" not in str(err.value)
    with pytest.raises(LandscapeError, match="6n \\+ 2"):
        build_model("resnet21", CIFAR, 10)
    with pytest.raises(LandscapeError, match="no option 'shortcut'"):
        build_model("resnet20-noshort", CIFAR, 10, shortcut="A")
    with pytest.raises(LandscapeError, match="shortcut must be"):
        build_model("resnet20", CIFAR, 10, shortcut="C")
    with pytest.raises(LandscapeError, match="width"):
        build_model("mlp", DIGITS, 10, widths=(10, 0))
    with pytest.raises(LandscapeError, match="6n \\+ 4"):
        build_model("wrn", CIFAR, 10, depth=15)
    with pytest.raises(LandscapeError, match="dropout"):
        build_model("wrn-16-4", CIFAR, 10, dropout=1.5)
    with pytest.raises(LandscapeError, match="num_outputs"):
        build_model("mlp", DIGITS, 0)


def test_generic_depth_names_and_spelling_variants_build() -> None:
    assert count_parameters(build_model("resnet32", CIFAR, 10, shortcut="A")) == (
        cifar_resnet_count(32, "A")
    )
    assert count_parameters(build_model("ResNet56_noshort", CIFAR, 10)) == 853_018
    assert count_parameters(build_model("wrn-10-2", CIFAR, 10)) == wrn_count(10, 2)


def test_model_spec_round_trips_through_json() -> None:
    spec = model_spec("mlp", DIGITS, 10, widths=(32,))
    assert spec == {
        "name": "mlp",
        "input_shape": [1, 8, 8],
        "num_outputs": 10,
        "options": {"widths": [32], "bias": True},
    }
    assert model_spec("resnet56", CIFAR, 10)["options"] == {"shortcut": "B"}
    original = _seeded("mlp", DIGITS, widths=(32,))
    torch.manual_seed(0)
    rebuilt = model_from_spec(json.loads(json.dumps(spec)))
    assert all(torch.equal(a, b) for a, b in zip(original.parameters(), rebuilt.parameters()))
    with pytest.raises(LandscapeError, match="no option"):
        model_spec("lenet", DIGITS, 10, widths=(3,))
    with pytest.raises(LandscapeError, match="lacks 'num_outputs'"):
        model_from_spec({"name": "mlp", "input_shape": [2]})


# --- user models ---------------------------------------------------------------------------

USER_FILE = """
import torch.nn as nn

def factory(input_shape, num_outputs, hidden=5):
    n = 1
    for s in input_shape:
        n *= s
    layers = [nn.Flatten(), nn.Linear(n, hidden), nn.ReLU(), nn.Linear(hidden, num_outputs)]
    return nn.Sequential(*layers)

def no_args():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))

def kwargs_only(**kw):
    return nn.Linear(kw["input_shape"][0], kw["num_outputs"])

def not_a_module(input_shape, num_outputs):
    return "a string"

def broken(input_shape, num_outputs):
    raise ValueError("bad\\nthings")

VALUE = 3
"""


def test_user_factory_from_a_file_path(tmp_path, monkeypatch) -> None:
    path = tmp_path / "my_models.py"
    path.write_text(USER_FILE)
    model = build_model(f"{path}:factory", DIGITS, 4, hidden=7)
    assert model(torch.randn(2, *DIGITS)).shape == (2, 4)
    assert model[1].out_features == 7
    assert build_model(f"{path}:no_args", DIGITS, 10)(torch.randn(2, *DIGITS)).shape == (2, 3)
    assert build_model(f"{path}:kwargs_only", (6,), 2)(torch.randn(1, 6)).shape == (1, 2)
    # Relative path, made absolute in the spec so that the run can be rebuilt elsewhere.
    monkeypatch.chdir(tmp_path)
    assert isinstance(build_model("my_models.py:factory", DIGITS, 4), nn.Module)
    spec = model_spec("my_models.py:factory", DIGITS, 4, hidden=2)
    assert spec["name"] == f"{path.resolve()}:factory"
    assert model_from_spec(spec)[1].out_features == 2


def test_user_factory_from_a_module_path(tmp_path, monkeypatch) -> None:
    package = tmp_path / "userpkg_models"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("userpkg_models.nets:factory", CIFAR, 10)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing.py:factory", "model file not found"),
        ("{path}:nope", "has no attribute 'nope'"),
        ("{path}:VALUE", "not callable"),
        ("{path}:not_a_module", "returned str, not a torch.nn.Module"),
        ("{path}:broken", "failed: ValueError: bad things"),
        ("{path}:factory(", "user model must be"),
        ("{bad}:factory", "cannot load model file .*SyntaxError"),
        ("no_such_pkg_xyz.models:factory", "cannot import model module 'no_such_pkg_xyz.models'"),
    ],
)
def test_bad_user_models_raise_one_line_errors(tmp_path, target: str, message: str) -> None:
    path = tmp_path / "models_ok.py"
    path.write_text(USER_FILE)
    bad = tmp_path / "models_bad.py"
    bad.write_text("def factory(:\n    pass\n")
    name = target.format(path=path, bad=bad)
    if name.startswith("missing.py"):
        name = str(tmp_path / name)
    with pytest.raises(LandscapeError, match=message) as err:
        build_model(name, DIGITS, 10)
    assert "\n" not in str(err.value)


def test_user_factory_rejects_options_it_does_not_take(tmp_path) -> None:
    path = tmp_path / "m.py"
    path.write_text(USER_FILE)
    with pytest.raises(LandscapeError, match="takes no option 'hidden'"):
        build_model(f"{path}:no_args", DIGITS, 10, hidden=3)


def test_integer_options_accept_numpy_integers_and_refuse_floats_and_bools() -> None:
    """One integer rule for models, training and optimizers (``errors.check_int``)."""
    import numpy as np

    from landscape.training.optimizers import SAG

    model = build_model("mlp", (np.int64(4),), np.int32(3), widths=[np.int64(5)])
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [5, 3]
    for bad in (5.0, True, 0, -1):
        with pytest.raises(LandscapeError, match="each width must be a positive integer"):
            build_model("mlp", (4,), 3, widths=[bad])
    p = [nn.Parameter(torch.zeros(2))]
    assert SAG(p, lr=0.1, n_batches=np.int64(2), batch_sizes=[np.int64(3), 1]).n_batches == 2
    with pytest.raises(LandscapeError, match="SAG's batch size must be a positive integer"):
        SAG(p, lr=0.1, n_batches=2, batch_sizes=[3, 1.0])

"""ParamSpace: flat layout, views, roles and masks, against torch's own utilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector

from landscape.errors import LandscapeError
from landscape.params import ParamSpace


class _Net(nn.Module):
    """Conv + BatchNorm + LayerNorm + GroupNorm + Linear, with a bias-free conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.gn = nn.GroupNorm(2, 4)
        self.fc1 = nn.Linear(4 * 4 * 4, 6)
        self.ln = nn.LayerNorm(6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.gn(self.conv2(x)))
        x = torch.relu(self.ln(self.fc1(x.flatten(1))))
        return self.fc2(x)


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return _Net()


EXPECTED_ROLES = {
    "conv1.weight": "weight", "conv1.bias": "bias",
    "bn1.weight": "norm", "bn1.bias": "norm",
    "conv2.weight": "weight",
    "gn.weight": "norm", "gn.bias": "norm",
    "fc1.weight": "weight", "fc1.bias": "bias",
    "ln.weight": "norm", "ln.bias": "norm",
    "fc2.weight": "weight", "fc2.bias": "bias",
}


def test_flat_order_equals_parameters_to_vector(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    theta = space.flatten(net)
    ref = parameters_to_vector(net.parameters())
    assert space.numel == ref.numel() == sum(p.numel() for p in net.parameters())
    assert torch.equal(theta, ref)
    assert space.names == tuple(n for n, _ in net.named_parameters())
    assert space.shapes == tuple(tuple(p.shape) for p in net.parameters())


def test_offsets_are_cumulative_sizes(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    sizes = [p.numel() for p in net.parameters()]
    assert list(space.offsets) == [sum(sizes[:i]) for i in range(len(sizes))]


def test_flatten_of_state_dict_equals_flatten_of_model(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    assert torch.equal(space.flatten(net.state_dict()), space.flatten(net))


def test_unflatten_inverts_flatten(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    theta = torch.randn(space.numel)
    views = space.unflatten(theta)
    assert list(views) == list(space.names)
    for name, p in net.named_parameters():
        assert views[name].shape == p.shape
    assert torch.equal(space.flatten(views), theta)
    # writing into the model through vector_to_parameters gives the same tensors
    torch.nn.utils.vector_to_parameters(theta, net.parameters())
    for name, p in net.named_parameters():
        assert torch.equal(views[name], p.detach())


def test_unflatten_returns_views_that_write_through(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    theta = torch.zeros(space.numel)
    views = space.unflatten(theta)
    for i, name in enumerate(space.names):
        views[name].fill_(float(i + 1))
        assert views[name].data_ptr() >= theta.data_ptr()
    expected = torch.cat([torch.full((n,), float(i + 1)) for i, n in enumerate(space.numels)])
    assert torch.equal(theta, expected)


def test_unflatten_with_leading_batch_dim_returns_views(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    k = 3
    theta = torch.randn(k, space.numel)
    views = space.unflatten(theta)
    for name, p in net.named_parameters():
        assert views[name].shape == (k, *p.shape)
    for j in range(k):
        assert torch.equal(space.flatten({n: v[j] for n, v in views.items()}), theta[j])
    before = theta.clone()
    views["fc2.weight"][1].mul_(0.0).add_(7.0)
    off = space.offsets[space.names.index("fc2.weight")]
    n = space.numels[space.names.index("fc2.weight")]
    assert torch.all(theta[1, off : off + n] == 7.0)
    changed = theta != before
    changed[1, off : off + n] = False
    assert not changed.any()


def test_roles_weight_bias_norm(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    assert dict(zip(space.names, space.roles)) == EXPECTED_ROLES


def test_mask_marks_exactly_the_entries_of_each_role(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    ref = {
        role: torch.cat([torch.full((p.numel(),), EXPECTED_ROLES[n] == role)
                         for n, p in net.named_parameters()])
        for role in ("weight", "bias", "norm")
    }
    for role, m in ref.items():
        got = space.mask(role)
        assert got.dtype == torch.bool and got.shape == (space.numel,)
        assert torch.equal(got, m)
    assert torch.equal(space.mask("weight", "bias"), ref["weight"] | ref["bias"])
    total = ref["weight"].long() + ref["bias"].long() + ref["norm"].long()
    assert torch.all(total == 1)


def test_mask_selects_the_parameters_of_that_role(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    theta = space.flatten(net)
    ref = torch.cat([p.detach().reshape(-1) for n, p in net.named_parameters()
                     if EXPECTED_ROLES[n] == "norm"])
    assert torch.equal(theta[space.mask("norm")], ref)


def test_mask_unknown_role_raises(net: nn.Module) -> None:
    with pytest.raises(LandscapeError):
        ParamSpace.from_model(net).mask("filter")


def test_select_marks_tensors_whose_name_contains_pattern(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    theta = space.flatten(net)
    sel = space.select("fc")
    ref = torch.cat([p.detach().reshape(-1) for n, p in net.named_parameters() if "fc" in n])
    assert sel.shape == (space.numel,)
    assert torch.equal(theta[sel], ref)
    assert int(sel.sum()) == sum(p.numel() for n, p in net.named_parameters() if "fc" in n)


def test_select_without_match_raises(net: nn.Module) -> None:
    with pytest.raises(LandscapeError):
        ParamSpace.from_model(net).select("no_such_layer")


@pytest.mark.parametrize("lead", [(), (2,)])
@pytest.mark.parametrize("delta", [-1, 1])
def test_length_mismatch_raises_landscape_error(net: nn.Module, lead: tuple[int, ...],
                                                delta: int) -> None:
    space = ParamSpace.from_model(net)
    bad = torch.zeros(*lead, space.numel + delta)
    with pytest.raises(LandscapeError):
        space.unflatten(bad)
    with pytest.raises(LandscapeError):
        space.check(bad)


def test_flatten_of_mapping_with_wrong_shape_or_missing_name_raises(net: nn.Module) -> None:
    space = ParamSpace.from_model(net)
    params = {n: p.detach() for n, p in net.named_parameters()}
    with pytest.raises(LandscapeError):
        space.flatten({**params, "fc2.bias": torch.zeros(4)})
    del params["fc1.weight"]
    with pytest.raises(LandscapeError):
        space.flatten(params)


def test_unflatten_views_work_in_functional_call(net: nn.Module) -> None:
    net.eval()
    space = ParamSpace.from_model(net)
    x = torch.randn(5, 1, 4, 4)
    theta = space.flatten(net) + 0.01 * torch.randn(space.numel)
    state = {**space.unflatten(theta), **dict(net.named_buffers())}
    got = torch.func.functional_call(net, state, (x,))
    torch.nn.utils.vector_to_parameters(theta, net.parameters())
    assert torch.equal(got, net(x))


def test_layout_is_json_able_and_complete(net: nn.Module) -> None:
    import json

    space = ParamSpace.from_model(net)
    layout = json.loads(json.dumps(space.layout()))
    assert layout["names"] == list(space.names)
    assert [tuple(s) for s in layout["shapes"]] == list(space.shapes)
    assert layout["roles"] == list(space.roles)

"""Packed-Ensembles (baselines/packed.py): the packed network is M narrow networks side by side.

Checked against M separately built plain networks (``nn.Conv2d`` with ``groups=gamma``,
``nn.BatchNorm2d``, ``nn.Linear``, the backbone's own builder at the member width) given the
packed network's weights, sliced here by hand; gradients of one member's loss stay in that
member's slices; parameters and FLOPs (the harness's cost functions) equal the sum of the M
narrow networks'.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.backbones import Layers, build_backbone
from benchmark.catalogue.methods import get_method
from benchmark.evaluation.cost import count_parameters, flops_per_example
from benchmark.methods import Task

from baselines.packed import PackedBatchNorm2d, PackedConv2d, packed_width
from baselines.layers import GroupedLinear

K = 5


def _packed(backbone: str, opts: dict, members: int, alpha: float, gamma: int):
    task = Task(K, backbone, opts, image_size=16)
    method = get_method("packed").from_config({"members": members, "alpha": alpha, "gamma": gamma}, task)
    return method, method.build()


def _narrow(backbone: str, opts: dict, members: int, alpha: float, gamma: int) -> nn.Module:
    """One member as a plain network: width alpha*C/M, inner convolutions with ``gamma`` groups."""
    def w(c: int) -> int:
        total = alpha * c
        assert total == int(total) and int(total) % (members * gamma) == 0, "test widths must divide exactly"
        return int(total) // members

    layers = Layers(
        conv=lambda i, o, k, stride=1, padding=0, bias=False: nn.Conv2d(w(i), w(o), k, stride, padding, bias=bias, groups=gamma),
        first_conv=lambda i, o, k, stride=1, padding=0, bias=False: nn.Conv2d(i, w(o), k, stride, padding, bias=bias),
        norm=lambda c: nn.BatchNorm2d(w(c)),
        linear=lambda i, o: nn.Linear(w(i), o),
        in_channels=3, num_outputs=K)
    return build_backbone(backbone, layers, **opts)


def _leaves(net: nn.Module) -> list[nn.Module]:
    return [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear, GroupedLinear))]


def _member_slices(packed_leaf: nn.Module, m: int, members: int) -> dict[str, tuple[slice, ...] | int]:
    """Where member m's tensors sit inside a packed leaf (by hand: the member-major block layout)."""
    if isinstance(packed_leaf, GroupedLinear):
        return {"weight": m, "bias": m}
    n = packed_leaf.weight.shape[0] // members  # output channels (conv) or channels (BatchNorm) per member
    rows = slice(m * n, (m + 1) * n)
    names = ["weight", "bias", "running_mean", "running_var"] if isinstance(packed_leaf, nn.BatchNorm2d) else ["weight", "bias"]
    return {k: rows for k in names if getattr(packed_leaf, k, None) is not None}


def _load_member(packed_net: nn.Module, narrow: nn.Module, m: int, members: int) -> None:
    pl, nl = _leaves(packed_net), _leaves(narrow)
    assert len(pl) == len(nl)
    with torch.no_grad():
        for p, q in zip(pl, nl):
            for name, where in _member_slices(p, m, members).items():
                src = getattr(p, name)[where]
                assert getattr(q, name).shape == src.shape, (p, q, name)
                getattr(q, name).copy_(src)


def _randomise_norms(net: nn.Module) -> None:
    with torch.no_grad():
        for mod in net.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 2.0)


CASES = [("resnet8", {"width": 8}, 4, 2.0, 2), ("resnet8", {"width": 8}, 2, 2.0, 1), ("wrn10-1", {}, 2, 1.0, 2)]


@pytest.mark.parametrize("backbone, opts, members, alpha, gamma", CASES)
def test_packed_equals_separate_narrow_networks(backbone, opts, members, alpha, gamma) -> None:
    torch.manual_seed(0)
    _, model = _packed(backbone, opts, members, alpha, gamma)
    _randomise_norms(model)
    narrows = [_narrow(backbone, opts, members, alpha, gamma) for _ in range(members)]
    for m, net in enumerate(narrows):
        _load_member(model.net, net, m, members)
    x = torch.randn(6, 3, 16, 16)
    for train in (False, True):  # running statistics, then batch statistics (per channel, so per member)
        model.train(train)
        for net in narrows:
            net.train(train)
        with torch.no_grad():
            out = model(x)
            assert out.shape == (members, 6, K)
            for m, net in enumerate(narrows):
                torch.testing.assert_close(out[m], net(x), rtol=1e-4, atol=1e-5)
    # parameters and FLOPs (the harness's counters) are those of the M narrow networks together
    assert count_parameters(model) == sum(count_parameters(n) for n in narrows)
    assert flops_per_example(model, x) == sum(flops_per_example(n, x) for n in narrows)


def test_member_gradients_stay_in_their_member() -> None:
    torch.manual_seed(1)
    members = 4
    _, model = _packed("resnet8", {"width": 8}, members, 2.0, 2)
    model.train()
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, K, (8,))
    leaves = _leaves(model.net)
    for i in range(members):
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(x)[i], y).backward()
        for leaf in leaves:
            for j in range(members):
                for name, where in _member_slices(leaf, j, members).items():
                    if name.startswith("running"):
                        continue
                    g = getattr(leaf, name).grad[where]
                    if j == i:
                        assert g.abs().sum() > 0, (leaf, name, i)
                    else:
                        assert torch.equal(g, torch.zeros_like(g)), f"member {i}'s loss reached member {j}'s {name} in {leaf}"


def test_layers_and_widths() -> None:
    _, model = _packed("resnet8", {"width": 16}, 4, 2.0, 2)
    convs = [m for m in model.modules() if isinstance(m, PackedConv2d)]
    first = [c for c in convs if c.first]
    assert len(first) == 1 and first[0].in_channels == 3 and first[0].groups == 1 and first[0].out_channels == 32
    assert all(c.groups == 8 for c in convs if not c.first)
    assert {c.out_channels for c in convs} == {32, 64, 128}
    assert all(isinstance(m, PackedBatchNorm2d) for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    head = model.net.head
    assert isinstance(head, GroupedLinear) and tuple(head.weight.shape) == (4, K, 128 // 4)
    # widths are rounded up to a multiple of M * gamma
    assert packed_width(10, 2.0, 8) == 24 and packed_width(16, 2.0, 8) == 32 and packed_width(10, 1.5, 5) == 15


def test_conv_parameters_scale_as_alpha_squared_over_m_gamma() -> None:
    task = Task(K, "resnet8", {"width": 16})
    det = get_method("deterministic").from_config({}, task).build()
    packed = get_method("packed").from_config({"members": 4, "alpha": 2, "gamma": 2}, task).build()
    conv = lambda net, first: sum(m.weight.numel() for m in net.modules()  # noqa: E731
                                  if isinstance(m, nn.Conv2d) and (m.in_channels == 3) == first)
    assert conv(packed, False) * 2 == conv(det, False)  # alpha^2 / (M gamma) = 4 / 8
    assert conv(packed, True) == 2 * conv(det, True)  # the first layer: alpha times wider, not grouped


@pytest.mark.parametrize("bad, match", [({"alpha": 0}, "alpha=0"), ({"gamma": 0}, "gamma=0"), ({"members": 0}, "members=0"),
                                        ({"width": 2}, "unknown option")])
def test_bad_options_fail_clearly(bad, match) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        get_method("packed").from_config(bad, Task(K, "resnet8"))


def test_variant_labels() -> None:
    t = Task(K, "resnet8")
    assert get_method("packed").from_config({}, t).variant() == "M=4"
    assert get_method("packed").from_config({"alpha": 3, "gamma": 1}, t).variant() == "M=4,alpha=3,gamma=1"

"""BatchEnsemble: rank-1 layers equal explicit member layers, whole-network members, optimisation
groups, gradient scaling, no materialised weight copies, output shape. Tiny CPU models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.batchensemble import BatchEnsemble
from baselines.layers import BatchEnsembleConv2d, BatchEnsembleLinear, TiledEnsemble, batchensemble_layers
from benchmark.methods import ensemble_loss, Task
from benchmark.catalogue.methods import get_method

M, B, K = 3, 2, 5
TASK = Task(num_classes=K, backbone="resnet8", backbone_options={"width": 4}, image_size=8)


def method(**options) -> BatchEnsemble:
    return BatchEnsemble.from_config({"members": M, **options}, TASK)


def member_conv_weight(layer: BatchEnsembleConv2d, m: int) -> torch.Tensor:
    """W o (s_m r_m^T), broadcast over the kernel: [out, in, k, k]."""
    return layer.weight * (layer.s[m][:, None, None, None] * layer.r[m][None, :, None, None])


def member_linear_weight(layer: BatchEnsembleLinear, m: int) -> torch.Tensor:
    return layer.weight * (layer.s[m][:, None] * layer.r[m][None, :])


@pytest.mark.parametrize("bias", [False, True])
def test_conv_equals_explicit_member_convs(bias: bool) -> None:
    torch.manual_seed(0)
    layer = BatchEnsembleConv2d(3, 5, 3, stride=2, padding=1, bias=bias, members=M)
    x = torch.randn(M * B, 3, 7, 7)
    out = layer(x)
    for m in range(M):
        xm = x[m * B:(m + 1) * B]
        expected = F.conv2d(xm, member_conv_weight(layer, m), layer.bias[m] if bias else None, stride=2, padding=1)
        torch.testing.assert_close(out[m * B:(m + 1) * B], expected, atol=1e-5, rtol=1e-5)
    # the members really differ (r, s ~ N(1, 0.5))
    assert not torch.allclose(member_conv_weight(layer, 0), member_conv_weight(layer, 1))


def test_linear_equals_explicit_member_linears() -> None:
    torch.manual_seed(0)
    layer = BatchEnsembleLinear(6, 4, members=M)
    x = torch.randn(M * B, 6)
    out = layer(x)
    for m in range(M):
        expected = F.linear(x[m * B:(m + 1) * B], member_linear_weight(layer, m), layer.bias[m])
        torch.testing.assert_close(out[m * B:(m + 1) * B], expected, atol=1e-5, rtol=1e-5)


def test_fast_weight_init_and_row_check() -> None:
    torch.manual_seed(0)
    layer = BatchEnsembleLinear(400, 400, members=4, init_mean=1.0, init_std=0.5)
    for v in (layer.r, layer.s):
        assert abs(float(v.detach().mean()) - 1.0) < 0.05 and abs(float(v.detach().std()) - 0.5) < 0.05
    with pytest.raises(ValueError, match="multiple of 4"):
        layer(torch.randn(6, 400))


def test_network_member_equals_explicit_member_network() -> None:
    torch.manual_seed(0)
    model = method().build()
    with torch.no_grad():  # non-trivial shared BatchNorm statistics
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(B, 3, 8, 8)
    out = model(x)
    assert out.shape == (M, B, K)
    be_modules = dict(model.net.named_modules())
    for m in range(M):
        explicit = TASK.backbone_net().eval()
        state = {}
        for key in explicit.state_dict():
            prefix, name = key.rsplit(".", 1)
            layer = be_modules[prefix]
            if isinstance(layer, BatchEnsembleConv2d) and name == "weight":
                state[key] = member_conv_weight(layer, m)
            elif isinstance(layer, BatchEnsembleLinear) and name == "weight":
                state[key] = member_linear_weight(layer, m)
            elif isinstance(layer, (BatchEnsembleConv2d, BatchEnsembleLinear)) and name == "bias":
                state[key] = layer.bias[m]
            else:
                state[key] = getattr(layer, name)
        explicit.load_state_dict({k: v.detach() for k, v in state.items()})
        torch.testing.assert_close(out[m], explicit(x), atol=1e-4, rtol=1e-4)


def test_output_shape_targets_and_cost() -> None:
    meth = get_method("batchensemble").from_config({"members": M}, TASK)
    model = meth.build()
    x, y = torch.randn(B, 3, 8, 8), torch.tensor([1, 4])
    inputs, targets = meth.training_batch(x, y, torch.Generator())
    assert targets.shape == (M, B) and (targets == y).all()
    model.train()
    assert model(inputs).shape == (M, B, K)
    model.eval()
    assert model(x).shape == (M, B, K)
    assert meth.forward_passes() == M and meth.rows_per_example() == M and meth.variant() == f"M={M}"
    # every convolution and the head are BatchEnsemble layers; no plain conv/linear left
    assert not any(type(m) in (torch.nn.Conv2d, torch.nn.Linear) for m in model.modules())
    assert isinstance(model, TiledEnsemble)


def test_no_materialised_member_weights() -> None:
    model = method().build()
    det = TASK.backbone_net()
    extra = 0
    for layer in batchensemble_layers(model):
        for name, p in layer.named_parameters():
            assert p.numel() < M * layer.weight.numel() or name == "weight", (name, tuple(p.shape))
            if name != "weight":
                assert p.shape[0] == M and p.dim() == 2
        n_in, n_out = layer.r.shape[1], layer.s.shape[1]
        extra += M * (n_in + n_out) + ((M - 1) * n_out if layer.bias is not None else 0)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    assert count(model) == count(det) + extra


def test_param_groups_exclude_only_fast_weights_from_decay() -> None:
    meth = method()
    model = meth.build()
    groups = meth.param_groups(model, 3e-4)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = [names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]]
    undecayed = [names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]]
    assert sorted(decayed + undecayed) == sorted(names.values())  # each parameter exactly once
    assert undecayed and all(n.endswith((".r", ".s")) for n in undecayed)
    assert not any(n.endswith((".r", ".s")) for n in decayed)
    assert any(n.endswith("head.bias") for n in decayed) and any("bn" in n or "stem.1" in n for n in decayed)


def test_gradient_multiplier_scales_member_parameters_only() -> None:
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    grads = {}
    for scale in (1.0, 0.5):
        torch.manual_seed(0)
        meth = method(grad_scale=scale)
        model = meth.build().train()
        inputs, targets = meth.training_batch(x, y, torch.Generator())
        ensemble_loss(model(inputs), targets).backward()
        member = {id(p) for layer in batchensemble_layers(model) for p in layer.member_parameters()}
        grads[scale] = {n: (p.grad.clone(), id(p) in member) for n, p in model.named_parameters()}
    n_member = 0
    for name, (g1, is_member) in grads[1.0].items():
        g_half = grads[0.5][name][0]
        assert g1.abs().sum() > 0, name
        if is_member:
            n_member += 1
            assert name.endswith((".r", ".s", "head.bias")), name
            torch.testing.assert_close(g_half, 0.5 * g1)
        else:
            torch.testing.assert_close(g_half, g1)
    assert n_member > 3


def test_bad_options_fail_loudly() -> None:
    with pytest.raises(ValueError, match="valid options"):
        BatchEnsemble.from_config({"member": 4}, TASK)
    with pytest.raises(ValueError, match="grad_scale"):
        method(grad_scale=0.0)

"""Non-overlapping subnetwork ensembles: disjoint masks, gradient isolation, the grouped one-pass
network against dense extracted subnetworks, criteria, errors, and the stages through RunContext."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.layers import GroupedConv2d, grouped_kernels
from baselines.subnetwork import (CRITERIA, Subnetwork, channel_graph, extract_subnetwork, load_from_parent,
                                  partition_channels, snake_assignment)
from benchmark.core import config as C
from benchmark.data.base import Dataset, Split
from benchmark.data.device import DeviceData
from benchmark.methods import ensemble_loss, Task
from benchmark.catalogue.methods import get_method
from benchmark.runner import Environment, RunContext, run_id_of

M = 4
BACKBONES = {"resnet8": {"width": 8}, "wrn10-1": {}}  # post-activation (BN after add) and pre-activation residuals


def _method(backbone: str = "resnet8", **options) -> Subnetwork:
    task = Task(num_classes=5, backbone=backbone, backbone_options=BACKBONES.get(backbone, {}), image_size=8)
    return get_method("subnetwork").from_config({"members": M, **options}, task)


def _trained_like_parent(method: Subnetwork, seed: int = 0) -> nn.Module:
    """A parent backbone with non-trivial BatchNorm scales, offsets and running statistics."""
    torch.manual_seed(seed)
    parent = method.build_parent().net
    g = torch.Generator().manual_seed(seed)
    for mod in parent.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.weight.data = torch.randn(c, generator=g)
            mod.bias.data = 0.1 * torch.randn(c, generator=g)
            mod.running_mean = 0.1 * torch.randn(c, generator=g)
            mod.running_var = torch.rand(c, generator=g) + 0.5
    return parent


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_masks_are_disjoint_equal_and_cover_every_channel(backbone: str, criterion: str) -> None:
    method = _method(backbone)
    part = partition_channels(_trained_like_parent(method), M, criterion, seed=3)
    assert len(part.graph.groups) >= 4
    for g, group in enumerate(part.graph.groups):
        masks = [set(part.indices(g, m).tolist()) for m in range(M)]
        assert all(len(s) == group.channels // M > 0 for s in masks)
        assert set().union(*masks) == set(range(group.channels))
        assert sum(len(s) for s in masks) == group.channels  # hence pairwise disjoint
    counts = part.channel_counts()
    assert counts and all(v["per_member"] == [v["channels"] // M] * M for v in counts.values())


def test_residual_layers_share_one_group() -> None:
    graph = channel_graph(_method("resnet8").build_parent().net)
    stem_group = graph.convs["stem.0"][1]
    assert graph.convs["stages.0.0.conv2"][1] == stem_group  # identity shortcut: same channels
    assert graph.convs["stages.1.0.conv2"][1] == graph.convs["stages.1.0.shortcut.0"][1]
    assert graph.convs["stages.0.0.conv1"][1] != stem_group


def test_snake_dealing_balances_ranks() -> None:
    owner = snake_assignment(torch.tensor([8.0, 7, 6, 5, 4, 3, 2, 1]), 2)
    assert owner.tolist() == [0, 1, 1, 0, 0, 1, 1, 0]


def test_criteria_give_different_masks() -> None:
    method = _method()
    parent = _trained_like_parent(method)
    parts = {c: partition_channels(parent, M, c, seed=0) for c in CRITERIA}
    for a, b in (("random", "bn_scale"), ("random", "filter_norm"), ("bn_scale", "filter_norm")):
        assert any(not torch.equal(x, y) for x, y in zip(parts[a].assignment, parts[b].assignment)), (a, b)
    # bn_scale puts the channel with the largest |scale| of the stem's group in subnetwork 0
    g = parts["bn_scale"].graph.convs["stages.0.0.conv1"][1]
    bn = parent.get_submodule(parts["bn_scale"].graph.groups[g].norms[0])
    assert parts["bn_scale"].assignment[g][bn.weight.abs().argmax()] == 0


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_grouped_pass_equals_extracted_subnetworks(backbone: str) -> None:
    method = _method(backbone)
    parent = _trained_like_parent(method)
    part = partition_channels(parent, M, "bn_scale")
    grouped = method.build()
    load_from_parent(grouped, parent, part)
    subs = [extract_subnetwork(parent, part, m) for m in range(M)]
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    for training in (False, True):  # running statistics, then batch statistics
        grouped.train(training)
        with torch.no_grad():
            out = grouped(x)
            ref = torch.stack([sub.train(training)(x) for sub in subs])
        assert out.shape == (M, 5, 5)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out[0], out[1])
    # one subnetwork has 1/M^2 of the parent's convolution weights (1/M in the stem: the image is shared)
    for name, (gi, _) in part.graph.convs.items():
        ratio = parent.get_submodule(name).weight.numel() / subs[0].get_submodule(name).weight.numel()
        assert ratio == (M if gi < 0 else M * M), name


def _member_grads(grouped: nn.Module, x: torch.Tensor, y: torch.Tensor, member: int | None) -> dict[str, torch.Tensor]:
    grouped.zero_grad(set_to_none=False)
    logits = grouped(x)
    loss = ensemble_loss(logits, y.expand(M, -1)) if member is None else F.cross_entropy(logits[member], y)
    loss.backward()
    return {n: p.grad.detach().clone() for n, p in grouped.named_parameters()}


def _member_parts(name: str, tensor: torch.Tensor, scope: str) -> list[torch.Tensor]:
    """Each member's part of a parameter (or its gradient): scope ``all``, the M blocks of its leading
    axis (the grouped network); ``dropout_sites``, the whole tensor for its own member (``members.<m>.``), nothing for the others."""
    if scope == "all":
        return list(tensor.chunk(M, dim=0))
    owner = int(name.split(".")[1])
    return [tensor if m == owner else tensor.new_zeros(0) for m in range(M)]


@pytest.mark.parametrize("scope", ["all", "dropout_sites"])
def test_gradients_stay_inside_each_subnetwork(scope: str) -> None:
    """A member's loss reaches its own weights only (every one of them), and the shared loss gives each
    member the gradient of its own loss."""
    if scope == "all":
        model = _method().build().train()
    else:
        method, parent, part = _sites()
        model = method.from_parent(parent, part).train()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    full = _member_grads(model, x, y, None)
    for i in range(M):
        own = _member_grads(model, x, y, i)
        for name, grad in own.items():
            parts = _member_parts(name, grad, scope)
            assert parts[i].numel() == 0 or parts[i].abs().sum() > 0, name
            assert sum(p.numel() for p in parts) > 0
            for j in range(M):
                if j != i:
                    assert torch.count_nonzero(parts[j]) == 0, (name, i, j)
            torch.testing.assert_close(_member_parts(name, full[name], scope)[i], parts[i], rtol=1e-4, atol=1e-6)


def test_cpu_training_dense_path_equals_the_grouped_convolution() -> None:
    """The block-diagonal dense form used for narrow groups while training on the CPU gives the
    grouped convolution's output and weight gradient; evaluation and no-grad calls stay grouped."""
    torch.manual_seed(0)
    conv = GroupedConv2d(8, 12, 3, stride=2, padding=1, bias=True, groups=4)
    x = torch.randn(3, 8, 9, 9, requires_grad=True)
    conv.train()
    assert conv.uses_dense_path(x)
    dense = conv(x)
    gw_dense, gx_dense = torch.autograd.grad(dense.square().sum(), (conv.weight, x))
    ref = F.conv2d(x, conv.weight, conv.bias, stride=2, padding=1, groups=4)
    gw_ref, gx_ref = torch.autograd.grad(ref.square().sum(), (conv.weight, x))
    torch.testing.assert_close(dense, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gw_dense, gw_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx_dense, gx_ref, rtol=1e-4, atol=1e-5)
    w = conv.block_diagonal_weight().detach()
    assert w.shape == (12, 8, 3, 3)
    for g in range(4):  # group g's outputs read only group g's inputs
        for h in range(4):
            block = w[3 * g:3 * (g + 1), 2 * h:2 * (h + 1)]
            assert (torch.equal(block, conv.weight[3 * g:3 * (g + 1)].detach()) if g == h else torch.count_nonzero(block) == 0)
    with torch.no_grad():
        assert not conv.uses_dense_path(x)
    with grouped_kernels():  # counting a training step's FLOPs: the grouped kernel's
        assert not conv.uses_dense_path(x)
    assert conv.uses_dense_path(x)
    conv.eval()
    assert not conv.uses_dense_path(x)
    wide = GroupedConv2d(32, 32, 3, padding=1, groups=4).train()  # 8 channels per group: oneDNN's grouped kernel
    assert not wide.uses_dense_path(torch.randn(1, 32, 4, 4))


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(ValueError, match=r"'nope'.*valid choices: bn_scale, filter_norm, random"):
        _method(criterion="nope")
    with pytest.raises(ValueError, match=r"'nope'.*valid choices: bn_scale, filter_norm, random"):
        partition_channels(_method().build_parent().net, M, "nope")
    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 6}, image_size=8)
    method = get_method("subnetwork").from_config({"members": 4}, task)
    with pytest.raises(ValueError, match="6 channels, not divisible by members=4"):
        method.build()
    with pytest.raises(ValueError, match="not divisible by members=4"):
        partition_channels(method.build_parent().net, 4, "bn_scale")
    with pytest.raises(ValueError, match="parent_epochs_fraction"):
        _method(parent_epochs_fraction=-1.0)


@pytest.mark.parametrize("scope", ["all", "dropout_sites"])
def test_run_trains_parent_then_subnetworks(tmp_path: Path, scope: str) -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, size=48)
    images = rng.integers(0, 255, size=(48, 8, 8, 3), dtype=np.uint8)
    data = Dataset("tiny", tuple("abcde"), Split(images, labels), Split(images[:8], labels[:8]), (0.5,) * 3, (0.25,) * 3, "synthetic", "")
    config = {"run": {"method": "subnetwork", "dataset": "tiny", "backbone": "resnet8", "seed": 0},
              "method": {"members": 2, "parent_epochs_fraction": 0.5, "scope": scope}, "backbone": {"width": 4},
              "train": {"epochs": 2, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0.0, "augment": False}}
    resolved = C.resolve(config)
    env = Environment(results_dir=tmp_path / "runs", checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda s: None)
    ctx = RunContext(resolved, run_id_of(resolved), data, DeviceData(data.train, data.mean, data.std), env)
    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 4}, image_size=8, dataset="tiny")
    method = get_method("subnetwork").from_config(dict(resolved["method"]), task)
    model = method.run(ctx).eval()
    assert len(ctx.history["parent"]) == 1 and len(ctx.history["subnetworks"]) == 2
    assert model(torch.zeros(3, 3, 8, 8)).shape == (2, 3, 5)
    extra = method.extra_record()
    assert extra["criterion"] == "bn_scale" and extra["parent_epochs"] == 1 and extra["reinit"] is False
    if scope == "all":
        assert extra["channels"]["stem.0"] == {"channels": 4, "per_member": [2, 2], "group": 0}
        assert method.forward_passes() == 1 and method.variant() == "M=2 parent=0.5"
    else:  # the stem whole in both members, the branches split
        assert extra["channels"]["stem.0"]["per_member"] == [4, 4] and extra["channels"]["stages.0.0.conv1"]["per_member"] == [2, 2]
        assert method.forward_passes() == 2 and method.variant() == "M=2 parent=0.5 dropout_sites" and extra["scope"] == scope


# ---- scope "dropout_sites": masks only where MC dropout drops (inside the residual branches)


def _sites(backbone: str = "resnet8") -> tuple[Subnetwork, nn.Module, object]:
    """The method with scope dropout_sites, a parent with non-trivial weights and statistics (its dropout
    sites marked), and the partition of that parent."""
    method = _method(backbone, scope="dropout_sites")
    parent = method.marked_backbone()
    parent.load_state_dict(_trained_like_parent(method).state_dict())
    return method, parent, partition_channels(parent, M, "bn_scale", seed=1, scope="dropout_sites")


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_dropout_site_masks_split_the_branch_channels_and_share_the_rest(backbone: str) -> None:
    _, _, part = _sites(backbone)
    graph = part.graph
    inner = {g for g, group in enumerate(graph.groups) if all(w.endswith(".conv1") for w in group.writers)}
    assert set(graph.dropout_sites) == inner and len(inner) == 3  # one site per residual block: its inner channels
    assert inner.isdisjoint(graph.stream) and graph.stream  # the residual stream is never split
    assert part.shared == frozenset(range(len(graph.groups))) - inner
    for g, group in enumerate(graph.groups):
        masks = [set(part.indices(g, m).tolist()) for m in range(M)]
        if g in inner:  # disjoint, equal, covering
            assert all(len(s) == group.channels // M for s in masks) and set().union(*masks) == set(range(group.channels))
            assert sum(map(len, masks)) == group.channels
        else:  # whole in every member: stem, block outputs, shortcuts, head input
            assert all(s == set(range(group.channels)) for s in masks)


def test_dropout_site_members_start_from_the_parent_with_identical_shared_parts() -> None:
    method, parent, part = _sites()
    model = method.from_parent(parent, part)
    members = list(model.members)
    assert len(members) == M
    graph = part.graph
    for name, (gi, go) in graph.convs.items():
        for m, net in enumerate(members):
            rows, cols = part.indices(go, m), (torch.arange(3) if gi < 0 else part.indices(gi, m))
            torch.testing.assert_close(net.get_submodule(name).weight, parent.get_submodule(name).weight[rows][:, cols], rtol=0, atol=0)
    shared = [n for n, (gi, go) in graph.convs.items() if go in part.shared and (gi < 0 or gi in part.shared)]
    assert {"stem.0", "stages.1.0.shortcut.0"} <= set(shared)
    for key, value in parent.state_dict().items():  # stem, shortcuts, stream BatchNorms, head: the parent's, in every member
        layer = key.rpartition(".")[0]
        if layer in shared or layer in graph.linears or graph.norms.get(layer) in part.shared:
            for net in members:
                assert torch.equal(net.state_dict()[key], value), key
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model.eval()
    with torch.no_grad():
        out = model(x)
        assert out.shape == (M, 4, 5)
        torch.testing.assert_close(out[1], extract_subnetwork(parent, part, 1).eval()(x))
    assert not torch.allclose(out[0], out[1])  # disjoint branch channels: different members


def test_dropout_site_cost_is_counted_per_member() -> None:
    """M passes of full-width networks with 1/M-wide branches: M copies of the shared parts are counted."""
    method, parent, part = _sites()
    model = method.build()
    member = sum(p.numel() for p in model.members[0].parameters())
    assert sum(p.numel() for p in model.parameters()) == M * member
    assert sum(p.numel() for p in method.from_parent(parent, part).parameters()) == M * member
    assert parent.get_submodule("stages.0.0.conv1").weight.shape[0] == M * model.members[0].get_submodule("stages.0.0.conv1").weight.shape[0]
    assert method.forward_passes() == M and method.variant() == "M=4 dropout_sites"
    assert _method().forward_passes() == 1 and _method().variant() == "M=4"
    with pytest.raises(ValueError, match=r"'rows'.*valid choices: all, dropout_sites"):
        _method(scope="rows")
    with pytest.raises(ValueError, match="found no dropout site"):
        partition_channels(_method().build_parent().net, M, "bn_scale", scope="dropout_sites")  # sites not marked


def test_dropout_site_ensemble_meets_the_method_contract() -> None:
    from benchmark.catalogue.checks import ALL_CHECKS, run_checks

    results = run_checks("subnetwork", options={"members": M, "scope": "dropout_sites"}, checks=list(ALL_CHECKS))
    assert results and all(r.passed for r in results), [(r.name, r.message) for r in results if not r.passed]

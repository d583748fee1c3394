"""Deep ensembles: the stacked one-pass module, the combination, and member runs through the real
RunContext (distinct seeds, reuse of saved members) on a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines.deep_ensemble import DeepEnsemble, StackedEnsemble
from benchmark.core import config as C
from benchmark.data.base import Dataset, Split
from benchmark.data.device import DeviceData
from benchmark.methods import combine, SingleMember, Task
from benchmark.catalogue.methods import get_method
from benchmark.runner import Environment, RunContext, run_id_of

TASK = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 4}, image_size=8)


def _randomise_bn(net: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm scales and running statistics."""
    g = torch.Generator().manual_seed(seed)
    for mod in net.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data = torch.rand(mod.num_features, generator=g) + 0.5
            mod.running_mean = torch.randn(mod.num_features, generator=g)
            mod.running_var = torch.rand(mod.num_features, generator=g) + 0.5


def _members(m: int) -> list[nn.Module]:
    nets = []
    for i in range(m):
        torch.manual_seed(100 + i)
        net = SingleMember(TASK.backbone_net())
        _randomise_bn(net, i)
        nets.append(net.eval())
    return nets


def test_stacked_pass_equals_looped_and_each_member() -> None:
    members = _members(3)
    stacked = StackedEnsemble(members).eval()
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = stacked(x)
        looped = stacked.looped_forward(x)
        separate = torch.cat([net(x) for net in members])
    assert out.shape == (3, 6, 5)
    torch.testing.assert_close(out, looped, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out, separate, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out[0], out[1])  # the members really differ


def test_combination_is_mean_of_member_probabilities() -> None:
    members = _members(4)
    stacked = StackedEnsemble(members).eval()
    x = torch.randn(7, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        combined = combine(stacked(x)).exp()
        mean_prob = torch.stack([torch.softmax(net(x)[0], -1) for net in members]).mean(0)
    torch.testing.assert_close(combined, mean_prob, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(combined.sum(-1), torch.ones(7))


def test_stacked_state_dict_has_member_axis_and_train_mode_works() -> None:
    stacked = StackedEnsemble(_members(2))
    w = stacked.state_dict()["stacked.net.stem.0.weight"]
    assert w.shape == (2, 4, 3, 3, 3)
    assert sum(p.numel() for p in stacked.parameters()) == 2 * sum(p.numel() for p in _members(1)[0].parameters())
    stacked.train()
    out = stacked(torch.randn(4, 3, 8, 8))
    out.sum().backward()
    assert stacked.stacked.net.stem[0].weight.grad.abs().sum(dim=(1, 2, 3, 4)).min() > 0


def test_build_is_one_grouped_pass_and_members_differ() -> None:
    method = get_method("deep_ensemble").from_config({"members": 3}, TASK)
    net = method.build().eval()
    out = net(torch.randn(2, 3, 8, 8))
    assert out.shape == (3, 2, 5)
    w = net.net.stem[0].weight.view(3, -1)  # group m = member m
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert method.forward_passes() == 3


def test_bad_member_method_lists_choices() -> None:
    with pytest.raises(ValueError, match="valid choices:.*deterministic"):
        get_method("deep_ensemble").from_config({"member_method": "nope"}, TASK)
    with pytest.raises(ValueError, match="unknown option"):
        get_method("deep_ensemble").from_config({"bad": 1}, TASK)


# ---------------------------------------------------------------------------------------------
# Member runs through the real RunContext


def _tiny_dataset(n_train: int = 64, n_test: int = 16, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)

    def split(n: int) -> Split:
        labels = rng.integers(0, 5, size=n)
        images = rng.integers(0, 40, size=(n, 8, 8, 3), dtype=np.uint8)
        images[:, 2:6, 2:6, :] = (labels[:, None, None, None] * 50).astype(np.uint8)
        return Split(images, labels.astype(np.int64))

    return Dataset("tiny", tuple(f"c{k}" for k in range(5)), split(n_train), split(n_test), (0.3, 0.3, 0.3), (0.2, 0.2, 0.2), "synthetic", "")


def _context(tmp_path: Path, data: Dataset, seed: int = 0) -> RunContext:
    config = {"run": {"method": "deep_ensemble", "dataset": "tiny", "backbone": "resnet8", "seed": seed},
              "method": {"members": 2}, "backbone": {"width": 4},
              "train": {"epochs": 1, "batch_size": 16, "lr": 0.05, "warmup_epochs": 0.0, "augment": False}}
    resolved = C.resolve(config)
    env = Environment(results_dir=tmp_path / "runs", checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda s: None)
    return RunContext(resolved, run_id_of(resolved), data, DeviceData(data.train, data.mean, data.std), env)


def test_run_trains_distinct_members_then_reuses_them(tmp_path: Path) -> None:
    data = _tiny_dataset()
    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 4}, image_size=8, dataset="tiny")
    method: DeepEnsemble = get_method("deep_ensemble").from_config({"members": 2}, task)
    x = DeviceData(data.test, data.mean, data.std).normalise(torch.from_numpy(data.test.images))

    ctx = _context(tmp_path, data)
    model = method.run(ctx).eval()
    assert [m["seed"] for m in ctx.members] == [0, 1]
    assert [m["reused"] for m in ctx.members] == [False, False]
    assert len({m["run_id"] for m in ctx.members}) == 2 and ctx.train_seconds > 0
    # The members are the suite's deterministic runs of those seeds (same run id, so reusable).
    for m in ctx.members:
        det = C.resolve({"run": {"method": "deterministic", "dataset": "tiny", "backbone": "resnet8", "seed": m["seed"]},
                         "backbone": {"width": 4}, "train": dict(ctx.config["train"])})
        assert m["run_id"] == run_id_of(det)
        assert (tmp_path / "ckpt" / m["run_id"] / "final.pt").exists()
    record = method.extra_record()
    assert record["member_run_ids"] == [m["run_id"] for m in ctx.members] and record["member_seeds"] == [0, 1]
    with torch.no_grad():
        first = model(x)
    assert first.shape == (2, 16, 5)
    assert not torch.allclose(first[0], first[1])

    ctx2 = _context(tmp_path, data)
    model2 = method.run(ctx2).eval()
    assert [m["reused"] for m in ctx2.members] == [True, True]
    assert ctx2.train_seconds == 0 and ctx2.history == {}
    with torch.no_grad():
        torch.testing.assert_close(model2(x), first)
    assert method.extra_record()["member_reused"] == [True, True]

    # Seed 1 uses member seeds 2 and 3: new runs, none reused.
    ctx3 = _context(tmp_path, data, seed=1)
    method.run(ctx3)
    assert [(m["seed"], m["reused"]) for m in ctx3.members] == [(2, False), (3, False)]


def test_grouped_ensemble_equals_its_members() -> None:
    from benchmark.methods import SingleMember, Task
    from baselines.deep_ensemble import grouped_ensemble

    task = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 4})
    members = []
    for m in range(3):
        torch.manual_seed(m)
        net = SingleMember(task.backbone_net()).eval()
        for mod in net.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.normal_()
                mod.running_var.uniform_(0.5, 2.0)
        members.append(net)
    grouped = grouped_ensemble(task, members).eval()
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        expected = torch.cat([net(x) for net in members])
        torch.testing.assert_close(grouped(x), expected, rtol=1e-4, atol=1e-5)
        # member m is group m: changing member 1's weights changes only output 1
        members[1].net.head.weight.add_(1.0)
        again = grouped_ensemble(task, members).eval()(x)
    assert torch.equal(again[0], grouped(x)[0]) and not torch.allclose(again[1], grouped(x)[1])

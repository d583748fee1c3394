"""Ghost BatchNorm (``train.bn_group``, benchmark.training.ghost_norm): each group of rows is normalised
as plain BatchNorm would normalise it alone; the groups of tiled (BatchEnsemble) and repeated (MIMO) rows
are the rows of the same images; off by default, with the run ids of the suites unchanged."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.packed import PackedBatchNorm2d
from benchmark.catalogue.methods import build_method
from benchmark.core import config as C
from benchmark.core.config import TrainConfig
from benchmark.runner import run_id_of
from benchmark.training.ghost_norm import apply_ghost_norm, ghost_norms, grouped_training_batch, remove_ghost_norm
from benchmark.training.train import norm_groups

ROOT = Path(__file__).resolve().parents[1]


def _bn(channels: int = 5, seed: int = 0) -> nn.BatchNorm2d:
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels, momentum=0.3)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    return bn


def _grads(out: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)  # a loss that weighs every output differently
    return torch.autograd.grad((out * weight).sum(), tensors)


@pytest.mark.parametrize("channels_last", [False, True])
def test_ghost_batchnorm_equals_batchnorm_on_each_slice(channels_last: bool) -> None:
    """Groups of 6 rows of a 24-row batch: outputs, gradients (input, scale, offset) and running statistics
    are those of plain BatchNorm applied to each slice alone (statistics: the mean of the slices')."""
    g, n = 6, 4
    x = torch.randn(g * n, 5, 3, 4) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    ghost = _bn()
    ref = copy.deepcopy(ghost)
    assert apply_ghost_norm(ghost, g) == 1
    xg = x.clone().requires_grad_()
    out = ghost(xg)
    assert out.is_contiguous(memory_format=torch.channels_last) == channels_last
    dx, dw, db = _grads(out, xg, ghost.weight, ghost.bias)

    xr = x.clone().requires_grad_()
    slices = xr.split(g)
    expected = torch.cat([F.batch_norm(s, None, None, ref.weight, ref.bias, training=True, eps=ref.eps) for s in slices])
    rx, rw, rb = _grads(expected, xr, ref.weight, ref.bias)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for a, b in ((dx, rx), (dw, rw), (db, rb)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    means = torch.stack([s.mean((0, 2, 3)) for s in x.split(g)]).mean(0)
    variances = torch.stack([s.var((0, 2, 3), unbiased=True) for s in x.split(g)]).mean(0)
    torch.testing.assert_close(ghost.running_mean, 0.7 * ref.running_mean + 0.3 * means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ghost.running_var, 0.7 * ref.running_var + 0.3 * variances, rtol=1e-5, atol=1e-6)
    assert int(ghost.num_batches_tracked) == 1
    # one group per batch, and evaluation: plain BatchNorm
    ref.load_state_dict(ghost.state_dict())
    ghost.eval(), ref.eval()
    torch.testing.assert_close(ghost(x), ref(x))
    plain = _bn()
    apply_ghost_norm(plain, g * n)
    torch.testing.assert_close(plain(x), F.batch_norm(x, None, None, plain.weight, plain.bias, training=True))


def test_member_major_blocks_group_the_same_images() -> None:
    """BatchEnsemble's layout: M=3 blocks (member m's rows of the whole batch), 4 images per group: group j
    is rows j*4..j*4+3 of every block, normalised together (12 rows), as one reference core's tiled batch."""
    m, k, n = 3, 4, 2
    x = torch.randn(m * n * k, 2, 3, 3)
    ghost = _bn(2)
    ref = copy.deepcopy(ghost)
    apply_ghost_norm(ghost, m * k, blocks=m)
    out = ghost(x)
    expected = torch.empty_like(x)
    rows = torch.arange(m * n * k).view(m, n, k)
    for j in range(n):
        idx = rows[:, j].reshape(-1)
        expected[idx] = F.batch_norm(x[idx], None, None, ref.weight, ref.bias, training=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not a whole number of groups of train.bn_group=12"):
        ghost(x[:18])


def test_conversion_keeps_modules_parameters_and_subclasses() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), PackedBatchNorm2d(8, members=2), nn.BatchNorm1d(8))
    keys = set(net.state_dict())
    bn, packed = net[1], net[2]
    assert apply_ghost_norm(net, 4) == 2  # the 2-D BatchNorms, a subclass included
    assert net[1] is bn and isinstance(bn, nn.BatchNorm2d) and isinstance(packed, PackedBatchNorm2d)
    assert packed.member_slice(1) == slice(4, 8) and set(net.state_dict()) == keys
    assert len(ghost_norms(net)) == 2 and remove_ghost_norm(net) == 2
    assert type(bn) is nn.BatchNorm2d and type(packed) is PackedBatchNorm2d and not ghost_norms(net)
    with pytest.raises(ValueError, match="multiple of blocks=3"):
        apply_ghost_norm(net, 4, blocks=3)


def _method(name: str, **options):
    cfg = C.resolve({"run": {"method": name, "backbone": "resnet8"}, "backbone": {"width": 4}, "method": options})
    return build_method(cfg, num_classes=10, image_size=8)


def test_mimo_groups_are_formed_from_their_own_images() -> None:
    """MIMO, 4 groups of 4 images (16 rows each at batch repetition 4): every member's rows of group j are
    repetitions of group j's images only, each image 4 times, as a reference core shuffles its own images."""
    method = _method("mimo", members=3, batch_repetition=4)
    x = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 3, 2, 2).contiguous()
    y = torch.arange(16)
    inputs, targets = grouped_training_batch(method, x, y, torch.Generator().manual_seed(0), 4)
    assert inputs.shape == (3, 64, 3, 2, 2) and targets.shape == (3, 64)
    for j in range(4):
        group = targets[:, j * 16:(j + 1) * 16]
        assert set(group.unique().tolist()) == set(range(4 * j, 4 * j + 4))
        assert all(torch.bincount(row - 4 * j, minlength=4).tolist() == [4] * 4 for row in group)
    assert torch.equal(inputs[:, :, 0, 0, 0].long(), targets)
    # BatchEnsemble: the groups' batches joined are the whole batch's (no sampling)
    be = _method("batchensemble", members=4)
    joined = grouped_training_batch(be, x, y, torch.Generator(), 4)
    whole = be.training_batch(x, y, torch.Generator())
    assert torch.equal(joined[0], whole[0]) and torch.equal(joined[1], whole[1])


def test_norm_groups_checks_the_group_against_the_method_and_batch() -> None:
    be, mimo, det = _method("batchensemble", members=4), _method("mimo", members=3, batch_repetition=4), _method("deterministic")
    assert norm_groups(be, TrainConfig(batch_size=128, bn_group=64)) == 16  # 16 images tiled 4 times
    assert norm_groups(mimo, TrainConfig(batch_size=128, bn_group=64)) == 16  # 16 images repeated 4 times
    assert norm_groups(det, TrainConfig(batch_size=128, bn_group=64), world_size=2) == 64
    assert norm_groups(det, TrainConfig(batch_size=64, bn_group=64)) is None  # one group: plain BatchNorm
    assert norm_groups(det, TrainConfig(batch_size=128)) is None
    with pytest.raises(ValueError, match="multiple of the 4 row"):
        norm_groups(be, TrainConfig(batch_size=128, bn_group=30))
    with pytest.raises(ValueError, match="train.batch_size=96 must be a multiple of 128"):
        norm_groups(det, TrainConfig(batch_size=96, bn_group=64), world_size=2)
    with pytest.raises(C.ConfigError, match="train.bn_group = -1"):
        C.resolve({"train": {"bn_group": -1}})


def test_off_by_default_and_suite_run_ids_unchanged() -> None:
    """bn_group = 0 leaves the run id as it was: every quick-suite run that has a committed record keeps
    its record's id; bn_group > 0 is part of the id."""
    _, runs = C.load_suite("quick")
    recorded = {json.loads(p.read_text())["run_id"].split("-K=")[0] for p in (ROOT / "results" / "reference" / "runs" / "quick").glob("*.json")}
    ids = {run["run"]["name"]: run_id_of(C.resolve(run)) for run in runs}
    without_record = {name: i for name, i in ids.items() if i not in recorded}
    assert not without_record and len(ids) == 10, without_record
    assert all(C.resolve(run)["train"]["bn_group"] == 0 for run in runs)
    one = C.resolve(runs[0])
    assert run_id_of(C.merge(one, {"train": {"bn_group": 64}})) != run_id_of(one)

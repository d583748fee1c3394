"""MIMO: independent subnetworks, batch construction, tiled evaluation, shapes and option errors.

Everything is tiny and on the CPU (a ResNet-8 of width 16 on 8x8 images).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.data.base import Split
from benchmark.data.device import DeviceData
from benchmark.methods import ensemble_loss, Task
from benchmark.catalogue.methods import get_method
from benchmark.core.config import TrainConfig
from benchmark.training.train import fit
from mimo.method import MIMO, MIMOOptions, mimo_indices, shuffled_positions

K = 4
TASK = Task(num_classes=K, backbone="resnet8", backbone_options={"width": 16}, image_size=8)
COLOURS = np.array([[230, 30, 30], [30, 230, 30], [30, 30, 230], [230, 230, 30]], dtype=np.float64)


def colour_split(n: int, seed: int) -> Split:
    """8x8 images whose class is their colour (K=4 colours), with pixel noise; balanced labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % K)
    noise = rng.normal(0, 25, size=(n, 8, 8, 3))
    images = np.clip(COLOURS[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return Split(images, labels.astype(np.int64))


def mimo(**options) -> MIMO:
    return get_method("mimo").from_config(options, TASK)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a shared, loaded 2-core machine, tiny convolutions run far faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# 1. The defining property: head m predicts input m's label and ignores the other inputs.


def test_heads_are_independent_subnetworks():
    torch.manual_seed(0)
    method = mimo(members=3, batch_repetition=2)
    model = method.build()
    train = DeviceData(colour_split(384, seed=1), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.1, weight_decay=0.0, warmup_epochs=0.5, augment=False, channels_last=True)
    fit(model, method, train, cfg, seed_parts=("test-mimo", 0), progress=False, log=lambda _: None)

    test = DeviceData(colour_split(600, seed=2), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    x, y = next(test.eval_batches(600))
    g = torch.Generator().manual_seed(3)
    orders = torch.stack([torch.randperm(600, generator=g) for _ in range(3)])  # independent labels per input
    model.eval()
    with torch.no_grad():
        logits = model(x[orders])  # [M, B, K]: input m gets images x[orders[m]]
    pred = logits.argmax(-1)
    acc = torch.tensor([[(pred[m] == y[orders[j]]).float().mean().item() for j in range(3)] for m in range(3)])
    # acc[m, j]: head m scored against input j's labels. Diagonal: accurate; off-diagonal: chance (0.25).
    assert acc.diagonal().min() > 0.9, acc
    off = acc[~torch.eye(3, dtype=torch.bool)]
    assert off.max() < 0.4, acc


# ---------------------------------------------------------------------------------------------
# 2. Batch construction


def indexed_batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel is their index, labels ``100 + index``: rows identify their image."""
    x = torch.arange(b, dtype=torch.float32).view(b, 1, 1, 1).expand(b, 3, 4, 4).contiguous(memory_format=torch.channels_last)
    return x, torch.arange(b) + 100


@pytest.mark.parametrize("rho,shuffled", [(0.0, 30), (0.5, 15), (0.6, 12), (1.0, 0)])
@pytest.mark.parametrize("members", [1, 3])
def test_batch_shares_exactly_the_last_rho_fraction(rho: float, shuffled: int, members: int):
    b, rep = 10, 3
    method = mimo(members=members, input_repetition=rho, batch_repetition=rep)
    x, y = indexed_batch(b)
    g = torch.Generator().manual_seed(0)
    differs = torch.zeros(b * rep, dtype=torch.bool)
    for _ in range(20):
        inputs, targets = method.training_batch(x, y, g)
        assert inputs.shape == (members, b * rep, 3, 4, 4) and targets.shape == (members, b * rep)
        assert inputs[0].is_contiguous(memory_format=torch.channels_last)
        idx = inputs[:, :, 0, 0, 0].long()
        # Every row's target is its image's label, and every pixel of the row is that image.
        assert torch.equal(targets, idx + 100)
        assert torch.equal(inputs, x[idx.reshape(-1)].view_as(inputs))
        # Each member sees every unique image exactly `rep` times.
        for m in range(members):
            assert torch.equal(torch.bincount(idx[m], minlength=b), torch.full((b,), rep))
        # The last rho fraction is identical across members; the first part is a permutation of one
        # shared multiset (the same images, in member-specific orders).
        assert torch.equal(idx[:, shuffled:], idx[:1, shuffled:].expand_as(idx[:, shuffled:]))
        for m in range(members):
            assert torch.equal(idx[m, :shuffled].sort().values, idx[0, :shuffled].sort().values)
        differs |= (idx != idx[:1]).any(0)
    # Over the draws, members disagree somewhere at every shuffled position (M > 1), and never after.
    assert not differs[shuffled:].any()
    if members > 1:
        assert differs[:shuffled].all()


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.6])
def test_member_permutations_are_independent(rho: float):
    """With distinct images (rep=1), two independent uniform permutations of k positions agree at
    a given position with probability 1/k; identical or coupled permutations would not."""
    b, draws = 20, 300
    k = shuffled_positions(b, rho)
    method = mimo(members=3, input_repetition=rho, batch_repetition=1)
    x, y = indexed_batch(b)
    g = torch.Generator().manual_seed(1)
    agree = torch.zeros(3, 3)
    last_image = torch.zeros(b)
    for _ in range(draws):
        idx = method.training_batch(x, y, g)[1] - 100
        for i in range(3):
            for j in range(3):
                agree[i, j] += (idx[i, :k] == idx[j, :k]).float().mean()
        last_image[idx[0, -1]] += 1
    rate = agree / draws
    off = rate[~torch.eye(3, dtype=torch.bool)]
    assert (off - 1 / k).abs().max() < 0.04, (rate, 1 / k)
    # Which image lands in a shared position is uniform too (the main order is shuffled).
    assert last_image.max() < 3 * draws / b, last_image


def test_batch_is_reproducible_from_the_generator():
    method = mimo(members=3, input_repetition=0.5, batch_repetition=2)
    x, y = indexed_batch(8)
    a = method.training_batch(x, y, torch.Generator().manual_seed(5))
    b = method.training_batch(x, y, torch.Generator().manual_seed(5))
    c = method.training_batch(x, y, torch.Generator().manual_seed(6))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


def test_shuffled_positions_rounding():
    assert [shuffled_positions(10, r) for r in (0.0, 0.1, 0.6, 0.7, 0.9, 1.0)] == [10, 9, 4, 3, 1, 0]
    assert mimo_indices(4, 2, 0.0, 2, torch.Generator().manual_seed(0)).shape == (2, 8)


# ---------------------------------------------------------------------------------------------
# 3. Evaluation feeds the same image to every input


def test_eval_tiles_the_image_to_all_inputs():
    torch.manual_seed(0)
    method = mimo(members=3)
    model = method.build()
    x = torch.randn(8, 3, 8, 8)
    # A training step first, so BatchNorm's running statistics are not the identity.
    inputs, targets = method.training_batch(x, torch.arange(8) % K, torch.Generator().manual_seed(0))
    ensemble_loss(model(inputs), targets).backward()
    model.eval()
    with torch.no_grad():
        tiled = model(x)
        stacked = model(x.unsqueeze(0).expand(3, -1, -1, -1, -1))
        other = model(torch.stack([x, x.flip(0), x]))
    torch.testing.assert_close(tiled, stacked)
    assert not torch.allclose(tiled, other)  # the member inputs do matter
    cl = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, tiled, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# 4. Shapes, the network's construction, options and errors


@pytest.mark.parametrize("members", [1, 2, 3])
def test_shapes_and_only_stem_and_head_change(members: int):
    method = mimo(members=members)
    model = method.build()
    assert model(torch.randn(5, 3, 8, 8)).shape == (members, 5, K)
    assert model(torch.randn(members, 5, 3, 8, 8)).shape == (members, 5, K)
    base = TASK.backbone_net().state_dict()
    mine = model.net.state_dict()
    assert mine.keys() == base.keys()
    changed = sorted(k for k in base if mine[k].shape != base[k].shape)
    expected = ["head.weight", "head.bias", "stem.0.weight"] if members > 1 else []
    assert changed == sorted(expected)
    assert mine["stem.0.weight"].shape[1] == 3 * members and mine["head.weight"].shape[0] == K * members
    assert method.rows_per_example() == 4 and method.forward_passes() == 1


def test_head_split_is_member_major():
    """Head units [m*K, (m+1)*K) are member m's logits (the reference's reshape to [N, M, K])."""
    model = mimo(members=3).build().eval()
    with torch.no_grad():
        model.net.head.weight.zero_()
        model.net.head.bias.copy_(torch.arange(3 * K, dtype=torch.float32))
        out = model(torch.randn(2, 3, 8, 8))
    assert torch.equal(out[:, 0], torch.arange(3 * K, dtype=torch.float32).view(3, K))


def test_variant_and_defaults():
    assert MIMOOptions() == MIMOOptions(members=3, input_repetition=0.0, batch_repetition=4)
    assert mimo().variant() == "M=3"
    assert mimo(members=2, input_repetition=0.6, batch_repetition=2).variant() == "M=2,rho=0.6,rep=2"
    assert mimo(members=4, batch_repetition=2).variant() == "M=4,rho=0,rep=2"


@pytest.mark.parametrize(
    "options,match",
    [
        ({"members": 0}, r"members=0.*integers >= 1"),
        ({"members": 2.5}, r"members=2\.5"),
        ({"input_repetition": -0.1}, r"input_repetition=-0\.1.*\[0, 1\]"),
        ({"input_repetition": 1.5}, r"input_repetition=1\.5.*\[0, 1\]"),
        ({"batch_repetition": 0}, r"batch_repetition=0.*integers >= 1"),
        ({"rho": 0.5}, r"unknown option.*'rho'.*input_repetition"),
    ],
)
def test_bad_options_fail_clearly(options, match):
    with pytest.raises(ValueError, match=match):
        mimo(**options)


def test_bad_input_shape_fails_clearly():
    model = mimo(members=3).build()
    with pytest.raises(ValueError, match=r"\[3, B, 3, H, W\].*\(2, 4, 3, 8, 8\)"):
        model(torch.randn(2, 4, 3, 8, 8))

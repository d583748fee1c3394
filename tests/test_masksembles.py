"""Masksembles (baselines/masksembles.py): the paper's mask generator, and the network's members.

The generator is checked against the reference's definitions, recomputed here: active channels
per mask ``int(C / (scale * (1 - (1 - 1/scale)^M)))``, the expected width
``int(m * s * (1 - (1 - 1/s)^M))`` equal to C, and a measured pairwise overlap that follows the
hypergeometric mean ``m^2 / int(m * s)`` of m ones drawn among ``int(m * s)`` positions (about
``m / scale``). The network's member m is checked against the same network with every mask layer
set to mask m.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from benchmark.catalogue.methods import get_method
from benchmark.methods import Task, combine

from baselines.masksembles import MaskLayer, generate_masks, mask_layers

K = 5
TASK = Task(K, "resnet8", {"width": 16}, image_size=16)


def _overlaps(masks: np.ndarray) -> list[int]:
    return [int(np.sum(masks[i] & masks[j])) for i, j in itertools.combinations(range(len(masks)), 2)]


def test_masks_are_reproducible_from_the_seed() -> None:
    a, b, c = generate_masks(64, 4, 2.0, 7), generate_masks(64, 4, 2.0, 7), generate_masks(64, 4, 2.0, 8)
    assert np.array_equal(a.masks, b.masks) and a.s == b.s
    assert not np.array_equal(a.masks, c.masks)
    # the method draws the masks' seed from the torch RNG the run seeds
    def built(seed: int) -> list[torch.Tensor]:
        torch.manual_seed(seed)
        return [m.masks.clone() for m in mask_layers(get_method("masksembles").from_config({}, TASK).build())]
    first, again, other = built(0), built(0), built(1)
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("channels, members, scale", [(64, 4, 2.0), (128, 4, 3.0), (32, 4, 2.0), (160, 3, 1.5), (640, 4, 6.0), (64, 2, 1.0)])
def test_each_mask_has_the_stated_active_channels(channels: int, members: int, scale: float) -> None:
    ms = generate_masks(channels, members, scale, 0)
    active = int(channels / (scale * (1 - (1 - 1 / scale) ** members)))  # the reference's inverse formula
    assert ms.active == active
    assert ms.masks.shape == (members, channels) and ms.masks.dtype == bool
    assert (ms.masks.sum(axis=1) == active).all()
    assert ms.masks.any(axis=0).all()  # no channel unused: unused positions were dropped
    # the generator's s gives exactly `channels` expected positions, and lies in the reference's range
    assert int(active * ms.s * (1 - (1 - 1 / ms.s) ** members)) == channels
    assert max(0.8 * scale, 1.0) <= ms.s <= 1.2 * scale


def test_pairwise_overlap_follows_the_scale() -> None:
    channels, members, seeds = 128, 4, 12
    mean_fraction = {}
    for scale in (1.0, 1.5, 2.0, 3.0, 4.0, 6.0):
        measured, predicted = [], []
        for seed in range(seeds):
            ms = generate_masks(channels, members, scale, seed)
            measured += _overlaps(ms.masks)
            total = int(ms.active * ms.s)  # m ones drawn uniformly among T positions: E|A & B| = m^2 / T
            predicted.append(ms.active ** 2 / total)
        assert np.mean(measured) == pytest.approx(np.mean(predicted), rel=0.05), scale
        mean_fraction[scale] = np.mean(measured) / ms.active
    # about 1/scale of each mask is shared with another: identical at 1, nearly disjoint at 6
    assert mean_fraction[1.0] == 1.0
    fractions = [mean_fraction[s] for s in sorted(mean_fraction)]
    assert all(a > b for a, b in zip(fractions, fractions[1:]))
    for scale in (1.5, 2.0, 3.0, 4.0):
        assert mean_fraction[scale] == pytest.approx(1 / scale, rel=0.15)
    assert mean_fraction[6.0] < 0.2


def test_scale_one_gives_identical_masks() -> None:
    ms = generate_masks(320, 4, 1.0, 3)
    assert ms.masks.all()


@pytest.mark.parametrize("scale", [0.5, 6.5])
def test_scale_out_of_range_fails(scale: float) -> None:
    with pytest.raises(ValueError, match=r"scale=.*valid values: numbers in \[1, 6\]"):
        get_method("masksembles").from_config({"scale": scale}, TASK)


def test_impossible_width_fails_clearly() -> None:
    with pytest.raises(ValueError, match="cannot generate 4 masks over 16 channels with scale=3"):
        generate_masks(16, 4, 3.0, 0)


def test_mask_layers_after_each_block() -> None:
    torch.manual_seed(0)
    model = get_method("masksembles").from_config({}, TASK).build()
    layers = mask_layers(model)
    assert [m.channels for m in layers] == [16, 32, 64]  # resnet8: one block per stage
    assert not any(isinstance(m, MaskLayer) for m in model.net.stem.modules())
    assert all(isinstance(stage[0][-1], MaskLayer) for stage in model.net.stages)
    # masks are buffers: saved with the weights and restored
    other = get_method("masksembles").from_config({}, TASK).build()
    other.load_state_dict(model.state_dict())
    assert all(torch.equal(a.masks, b.masks) for a, b in zip(layers, mask_layers(other)))


def _member_net(model: torch.nn.Module, m: int) -> torch.nn.Module:
    """The same network with every mask layer's M masks replaced by mask m."""
    net = copy.deepcopy(model)
    for layer in mask_layers(net):
        layer.masks.copy_(layer.masks[m].expand_as(layer.masks))
    return net


def test_members_and_test_time_combination() -> None:
    torch.manual_seed(0)
    method = get_method("masksembles").from_config({"members": 4, "scale": 2.0}, TASK)
    model = method.build()
    model.eval()
    x = torch.randn(6, 3, 16, 16)
    with torch.no_grad():
        [variant] = method.eval_variants(model)
        assert variant.members == 4 and variant.forward_passes == 4
        out = variant.network(x)
        assert out.shape == (4, 6, K)
        members = [_member_net(model, m)(x)[0] for m in range(4)]
        for m in range(4):
            torch.testing.assert_close(out[m], members[m], rtol=1e-5, atol=1e-6)
        assert not torch.allclose(members[0], members[1])  # different masks, different members
        # the contract's combination: the log of the mean member probability
        mean_prob = torch.stack([torch.softmax(z, -1) for z in members]).mean(0)
        torch.testing.assert_close(combine(out).exp(), mean_prob, rtol=1e-5, atol=1e-6)


def test_training_splits_the_batch_into_member_chunks() -> None:
    torch.manual_seed(0)
    method = get_method("masksembles").from_config({"members": 4}, TASK)
    model = method.build()
    x, y = torch.randn(10, 3, 16, 16), torch.arange(10)
    inputs, targets = method.training_batch(x, y, torch.Generator())
    assert inputs.shape == (4, 2, 3, 16, 16) and targets.tolist() == [[0, 1], [2, 3], [4, 5], [6, 7]]  # 10 mod 4 rows dropped
    assert torch.equal(inputs[2], x[4:6])
    model.eval()  # fixed statistics, so each chunk's output depends on that chunk alone
    with torch.no_grad():
        out = model(inputs)
        assert out.shape == (4, 2, K)
        for m in range(4):
            torch.testing.assert_close(out[m], _member_net(model, m)(inputs[m])[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 4 images"):
        method.training_batch(x[:3], y[:3], torch.Generator())


def test_record_lists_mask_layers() -> None:
    torch.manual_seed(0)
    method = get_method("masksembles").from_config({}, TASK)
    method.build()
    rec = method.extra_record()["mask_layers"]
    assert [r["channels"] for r in rec] == [16, 32, 64]
    assert all(0 < r["mean_pairwise_overlap"] < r["active"] for r in rec)
    assert method.variant() == "M=4,scale=2"


@pytest.mark.parametrize("backbone, channels", [("wrn16-4", [64] * 2 + [128] * 2 + [256] * 2), ("resnet18", [64] * 2 + [128] * 2 + [256] * 2 + [512] * 2)])
def test_paper_suite_backbones(backbone: str, channels: list[int]) -> None:
    torch.manual_seed(0)
    task = Task(K, backbone, {}, image_size=16)
    model = get_method("masksembles").from_config({"members": 4, "scale": 4.0}, task).build()
    assert [m.channels for m in mask_layers(model)] == channels
    assert model(torch.randn(2, 3, 16, 16)).shape == (4, 2, K)

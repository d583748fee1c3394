"""Packed-Ensembles (Laurent, Lafage, Tartaglione, Daniel, Martinez, Bursuc & Franchi,
"Packed-Ensembles for Efficient Uncertainty Estimation", ICLR 2023, arXiv 2210.09184).

M members packed into one network of grouped convolutions, run in one forward pass:

- every layer's width ``C`` becomes ``alpha * C`` (rounded up to a multiple of ``M * gamma``,
  see :func:`packed_width`), and its channels are split into M contiguous member blocks
  (member m owns channels ``[m * W/M, (m+1) * W/M)`` of every layer);
- every convolution but the first has ``groups = M * gamma``: member m's block is split into
  ``gamma`` sub-groups inside the member, and no weight connects two members (nor two
  sub-groups), so member m's channels only ever see member m's channels;
- the first convolution reads the plain image (``groups = 1``; the image is every member's
  input, and each of its output channels belongs to one member);
- BatchNorm is per channel, so with the member-block layout it is per member
  (:class:`PackedBatchNorm2d`: one ``nn.BatchNorm2d`` over the packed width, i.e. M member
  BatchNorms side by side; each member's statistics are its own channels' statistics);
- the head is a grouped linear layer (``groups = M``, no sub-groups) giving ``M x K`` logits,
  read as member logits ``[M, B, K]``.

Member m alone is the backbone at width ``alpha * C / M`` whose inner convolutions have
``gamma`` groups (``tests/test_packed.py`` checks the packed network against M such networks
built separately and given the same weights, and that member i's loss never reaches member j's
weights). The targets are the batch's labels repeated per member (the base class's
``training_batch``); the shared loss sums the members' cross-entropies.

Like the subnetwork ensemble and BatchEnsemble, the network is built by the backbone's own
builder through ``Layers`` factories: each factory receives the backbone's nominal widths and
scales them, so every backbone in :mod:`benchmark.backbones` (ResNet-8/20 with ``width``,
WRN-28-10, ResNet-18, ResNet-50) is packed without re-implementing it. A residual addition
adds two tensors of one nominal width, hence of one packed width and one member layout.

Cost (convolutions): ``alpha^2 / (M * gamma)`` of the backbone's parameters and FLOPs, for all
M members together (M=4, alpha=2, gamma=2: about half), plus the first layer (``alpha`` times
wider) and the head (M x K outputs).

The peer CIFAR-10 ResNet-18 recipe (the paper's; set by the suites, not by this file): M=4,
alpha=2, gamma=2, 75 epochs, batch 128, SGD lr 0.05, momentum 0.9, weight decay 5e-4, lr x0.1
at epochs 25 and 50, targets repeated per member.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.backbones import Layers
from benchmark.methods import Method, MethodOptions, Task, register_method

from .layers import DenseTrainingOnCpu, GroupedLinear

DEFAULT_ALPHA = 2.0
DEFAULT_GAMMA = 2


@dataclass
class PackedOptions(MethodOptions):
    """``members``: M; ``alpha``: width multiplier of every layer (the packed width, all members
    together); ``gamma``: sub-groups of each member's channels in every convolution but the first."""

    members: int = 4
    alpha: float = DEFAULT_ALPHA
    gamma: int = DEFAULT_GAMMA

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option and its valid values."""
        m, a, g = self.members, self.alpha, self.gamma
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"packed option members={m!r} is invalid; valid values: integers >= 1")
        if isinstance(a, bool) or not isinstance(a, numbers.Real) or not math.isfinite(float(a)) or float(a) <= 0:
            raise ValueError(f"packed option alpha={a!r} is invalid; valid values: numbers > 0")
        if isinstance(g, bool) or not isinstance(g, numbers.Integral) or g < 1:
            raise ValueError(f"packed option gamma={g!r} is invalid; valid values: integers >= 1")


def packed_width(channels: int, alpha: float, groups: int) -> int:
    """The packed width of a layer of nominal width ``channels``: ``alpha * channels`` rounded up
    to a multiple of ``groups`` (= M * gamma), so every member has the same number of channels
    and every sub-group the same number too. (The product is rounded to 6 decimals first, so
    e.g. alpha=1.5 on 10 channels gives 15, not 16 from float error.)"""
    return max(1, math.ceil(round(alpha * channels, 6) / groups)) * groups


class PackedConv2d(DenseTrainingOnCpu, nn.Conv2d):
    """A convolution of ``groups = M * gamma`` over member-major channel blocks (the first layer:
    ``groups = 1``, reading the plain image). ``members`` and ``gamma`` are kept for inspection.
    Narrow groups (under 8 input channels, e.g. gamma=2 at small widths) train on the CPU as one
    block-diagonal dense convolution with the same output and gradient (:class:`DenseTrainingOnCpu`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False,
                 *, members: int, gamma: int, first: bool = False) -> None:
        groups = 1 if first else members * gamma
        checked = [("output", out_ch)] if first else [("input", in_ch), ("output", out_ch)]
        for what, ch in checked:
            if ch % (members * gamma):
                raise ValueError(f"packed convolution {in_ch}->{out_ch}: {what} channels {ch} not divisible by "
                                 f"members*gamma={members * gamma}")
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias, groups=groups)
        self.members, self.gamma, self.first = members, gamma, first


class PackedBatchNorm2d(nn.BatchNorm2d):
    """M member BatchNorms side by side: one ``nn.BatchNorm2d`` over the packed width, whose
    channel block m (``[m * C/M, (m+1) * C/M)``) is member m's BatchNorm. BatchNorm's statistics
    and affine parameters are per channel, so no member's statistics involve another member's
    channels; :meth:`member_slice` names member m's channels."""

    def __init__(self, channels: int, *, members: int) -> None:
        if channels % members:
            raise ValueError(f"packed BatchNorm: {channels} channels not divisible by members={members}")
        super().__init__(channels)
        self.members = members

    def member_slice(self, m: int) -> slice:
        size = self.num_features // self.members
        return slice(m * size, (m + 1) * size)


def packed_layers(layers: Layers, members: int, alpha: float, gamma: int) -> Layers:
    """``layers`` whose factories build the packed network from the backbone's nominal widths."""
    g = members * gamma
    width = lambda c: packed_width(c, alpha, g)  # noqa: E731

    def conv(i: int, o: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
        return PackedConv2d(width(i), width(o), k, stride, padding, bias, members=members, gamma=gamma)

    def first_conv(i: int, o: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
        return PackedConv2d(i, width(o), k, stride, padding, bias, members=members, gamma=gamma, first=True)

    def norm(c: int) -> nn.Module:
        return PackedBatchNorm2d(width(c), members=members)

    def linear(i: int, o: int) -> nn.Module:
        return GroupedLinear(width(i), o * members, members)

    branch = layers.branch_dropout
    return layers.with_(conv=conv, first_conv=first_conv, norm=norm, linear=linear,
                        branch_dropout=(lambda c: branch(width(c))) if branch is not None else None)


class PackedNetwork(nn.Module):
    """The packed backbone: ``forward(x [B, C, H, W]) -> [M, B, K]`` in one pass (the head's
    ``M * K`` outputs are member-major: member m's logits are outputs ``[m*K, (m+1)*K)``)."""

    def __init__(self, net: nn.Module, members: int, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.members = members
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.view(out.shape[0], self.members, self.num_classes).transpose(0, 1)


@register_method("packed")
class Packed(Method):
    """Packed-Ensembles: M grouped members of width ``alpha * C / M`` in one network, one pass."""

    Options = PackedOptions

    def __init__(self, options: PackedOptions, task: Task) -> None:
        options.validate()
        super().__init__(options, task)

    @property
    def alpha(self) -> float:
        return float(self.options.alpha)

    @property
    def gamma(self) -> int:
        return int(self.options.gamma)

    def variant(self) -> str:
        """``"M=4"``; alpha and gamma are added when they differ from the paper's 2 and 2."""
        parts = [f"M={self.members}"]
        if self.alpha != DEFAULT_ALPHA or self.gamma != DEFAULT_GAMMA:
            parts += [f"alpha={self.alpha:g}", f"gamma={self.gamma}"]
        return ",".join(parts)

    def build(self) -> nn.Module:
        t = self.task
        net = t.backbone_net(packed_layers(t.layers(), self.members, self.alpha, self.gamma))
        return PackedNetwork(net, self.members, t.num_classes)

    def extra_record(self) -> dict[str, Any]:
        return {"packed": {"members": self.members, "alpha": self.alpha, "gamma": self.gamma}}

"""MIMO: multi-input multi-output networks (Havasi et al., "Training independent subnetworks
for robust prediction", ICLR 2021).

One backbone hosts M independent subnetworks. Its first convolution takes M images
concatenated along channels (``M * C`` input channels) and its head has ``M * K`` outputs,
read as M members' logits. During training each member sees its own, independently shuffled
images and must predict its own image's label, so member m learns to use input m and to ignore
the others: the members become independent predictors that share one network's weights and
one forward pass. At test time the same image is fed to all M inputs and the members'
probabilities are averaged (the harness's shared ``combine``): an ensemble for the cost of a
single forward pass (plus a slightly wider first convolution and head).

Recipe (as google/uncertainty-baselines runs it; the suite configs set these, not this file):

- CIFAR-10/100, WRN-28-10: M=3, input repetition rho=0.0, batch repetition 4 (the defaults
  here); 512 rows per step built from 128 unique images; SGD Nesterov 0.9, lr 0.1, 1 warm-up
  epoch, 250 epochs, lr x0.2 at epochs 100/200/225; L2 3e-4 on all weights.
- ImageNet, ResNet-50: M=2, rho=0.6, batch repetition 2 (``variant()`` "M=2,rho=0.6,rep=2");
  4096 rows from 2048 images; lr 0.8, 150 epochs, x0.1 at 50/100/133; L2 1e-4 on kernels and
  biases; warm-up 8 epochs in the vintage that trained the published row (5 at UB's HEAD).
  Every value with its source: ``benchmark/suites/reference/recipes.toml``.

Batch construction (:meth:`MIMO.training_batch`): tile the B unique indices
``batch_repetition`` times and shuffle them; each member then independently permutes the first
``floor((1 - rho) * N)`` positions of that order (N = B * batch_repetition) while the last
positions are shared, i.e. identical for all members. Input repetition (rho > 0) lets members
share some of their inputs, which relaxes independence and lets the subnetworks share more
features (it helps when the backbone is small for the data, as ResNet-50 on ImageNet is).

Departures from the reference: none in the method. Layout differs in convention: the member
axis is first (inputs ``[M, N, C, H, W]``, logits ``[M, N, K]``) where the reference uses
``[N, M, ...]``. The head's split of ``M * K`` units is member-major (unit ``m * K + k``), as
the reference's ``DenseMultihead``. The concatenated input is member-major too (channel
``m * C + c``), where the reference's ``Permute([2, 3, 4, 1])`` and ``Reshape`` make it
channel-major (channel ``c * M + m``, ``uncertainty_baselines/models/wide_resnet_mimo.py``): a
fixed permutation of the first convolution's input channels, which changes nothing when training
from scratch; loading a reference checkpoint would need that permutation. The
number of shuffled positions is rounded with a small tolerance so that e.g. rho=0.9 on 10 rows
shuffles 1 position (as the reference's float32 arithmetic does) and not 0 (as float64's
``10 * (1 - 0.9) = 0.999...`` truncated would).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
from torch import nn

from benchmark.methods import Method, MethodOptions, Task, register_method

# The CIFAR recipe's values: ``variant()`` names rho and the batch repetition only when they differ.
CIFAR_INPUT_REPETITION = 0.0
CIFAR_BATCH_REPETITION = 4


@dataclass
class MIMOOptions(MethodOptions):
    """``members``: M subnetworks; ``input_repetition``: rho in [0, 1], the fraction of each
    batch's rows that all members share; ``batch_repetition``: how many times each unique
    image appears in a training batch (rows per step = batch_size * batch_repetition)."""

    members: int = 3
    input_repetition: float = CIFAR_INPUT_REPETITION
    batch_repetition: int = CIFAR_BATCH_REPETITION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the bad option and its valid range."""
        m, rho, rep = self.members, self.input_repetition, self.batch_repetition
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"MIMO option members={m!r} is invalid; valid values: integers >= 1")
        if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0.0 <= float(rho) <= 1.0:
            raise ValueError(f"MIMO option input_repetition={rho!r} is invalid; valid values: numbers in [0, 1]")
        if isinstance(rep, bool) or not isinstance(rep, numbers.Integral) or rep < 1:
            raise ValueError(f"MIMO option batch_repetition={rep!r} is invalid; valid values: integers >= 1")


def shuffled_positions(rows: int, input_repetition: float) -> int:
    """How many of a batch's ``rows`` positions each member permutes: ``floor((1 - rho) * rows)``,
    computed with a tolerance for float error (the last ``rows - result`` are shared)."""
    return min(rows, math.floor(round((1.0 - input_repetition) * rows, 6)))


def mimo_indices(batch: int, members: int, input_repetition: float, batch_repetition: int, generator: torch.Generator) -> torch.Tensor:
    """Row indices into a batch of ``batch`` unique images, one row of indices per member.

    Returns int64 ``[members, batch * batch_repetition]`` on ``generator``'s device: a shuffled
    tiling of ``arange(batch)``, whose first ``shuffled_positions(...)`` entries each member
    permutes independently and whose remaining entries all members share.
    """
    device = generator.device
    rows = batch * batch_repetition
    main = torch.arange(batch, device=device).repeat(batch_repetition)
    main = main[torch.randperm(rows, device=device, generator=generator)]
    k = shuffled_positions(rows, input_repetition)
    # One independent permutation of the first k positions per member (argsort of uniform noise).
    perms = torch.rand((members, k), device=device, generator=generator).argsort(dim=1)
    return torch.cat([main[:k][perms], main[k:].expand(members, rows - k)], dim=1)


class MIMONetwork(nn.Module):
    """A backbone with ``M * C`` input channels and ``M * K`` outputs, read as M members.

    ``forward(x)``: ``x`` is ``[B, C, H, W]`` (the same image fed to every input: test time) or
    ``[M, B, C, H, W]`` (member m's images fed to input m: training) -> logits ``[M, B, K]``.
    """

    def __init__(self, net: nn.Module, members: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.net = net
        self.members = members
        self.in_channels = in_channels
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m, c = self.members, self.in_channels
        if x.dim() == 4 and x.shape[1] == c:
            joined = torch.cat([x] * m, dim=1)  # tiled; keeps channels_last
        elif x.dim() == 5 and x.shape[0] == m and x.shape[2] == c:
            joined = torch.cat(list(x.unbind(0)), dim=1)  # channel m*C + c is member m's channel c
        else:
            raise ValueError(f"MIMO expects images [B, {c}, H, W] or member images [{m}, B, {c}, H, W]; got {tuple(x.shape)}")
        out = self.net(joined)  # [B, M*K], member-major
        return out.view(out.shape[0], m, self.num_classes).transpose(0, 1)


@register_method("mimo")
class MIMO(Method):
    """MIMO: M subnetworks in one backbone, trained on independently shuffled inputs.

    Network: ``task.backbone_net`` with ``in_channels = M * C`` (only the first convolution
    changes) and ``num_outputs = M * K`` (one dense head). Training batch: see
    :func:`mimo_indices`. One forward pass per test example.
    """

    Options = MIMOOptions

    def __init__(self, options: MIMOOptions, task: Task) -> None:
        options.validate()
        super().__init__(options, task)

    @property
    def input_repetition(self) -> float:
        return float(self.options.input_repetition)

    @property
    def batch_repetition(self) -> int:
        return int(self.options.batch_repetition)

    def variant(self) -> str:
        """``"M=3"``; rho and the batch repetition are added when they differ from the CIFAR
        recipe (rho=0, rep=4), e.g. ``"M=2,rho=0.6,rep=2"``."""
        parts = [f"M={self.members}"]
        if self.input_repetition != CIFAR_INPUT_REPETITION or self.batch_repetition != CIFAR_BATCH_REPETITION:
            parts += [f"rho={self.input_repetition:g}", f"rep={self.batch_repetition}"]
        return ",".join(parts)

    def build(self) -> nn.Module:
        m, t = self.members, self.task
        net = t.backbone_net(t.layers(in_channels=m * t.in_channels, num_outputs=m * t.num_classes))
        return MIMONetwork(net, m, t.in_channels, t.num_classes)

    def training_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Member inputs ``[M, N, C, H, W]`` and targets ``[M, N]`` from images ``x [B, C, H, W]``
        and labels ``y [B]``, with ``N = B * batch_repetition`` (see :func:`mimo_indices`).

        One gather; each member's images keep ``x``'s memory format (channels_last stays so).
        """
        b = x.shape[0]
        idx = mimo_indices(b, self.members, self.input_repetition, self.batch_repetition, generator).to(x.device)
        flat = idx.reshape(-1)
        inputs = x[flat].view(self.members, -1, *x.shape[1:])  # splitting dim 0 keeps the strides
        return inputs, y[flat].view(self.members, -1)

    def rows_per_example(self) -> float:
        return float(self.batch_repetition)

"""Shared ensemble layers: BatchEnsemble's rank-1 fast-weight convolution and dense layer, and the
grouped layers that run M networks as one (the subnetwork ensemble's one-pass network, the deep
ensemble's grouped evaluation).

A BatchEnsemble layer holds one shared ("slow") weight ``W`` and, per member ``m``, two
fast-weight vectors ``r_m`` (input side) and ``s_m`` (output side). Member ``m``'s effective
weight is ``W o (s_m r_m^T)``, but it is never materialised: the layer computes
``((x o r_m) W) o s_m (+ b_m)`` on member ``m``'s rows.

Rows are laid out member-major: the layer sees ``[M*b, ...]`` rows and applies member ``m``'s
fast weights to rows ``m*b .. (m+1)*b - 1`` (chunk ``m``). :class:`TiledEnsemble` tiles the
batch once at the network input, so every layer downstream sees that layout.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.backbones import Layers


def _per_row(v: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
    """Member vectors ``[M, C]`` -> per-row vectors ``[M*b, C]`` (member-major chunks), in ``dtype``.

    ``rows`` (= M*b) must be a multiple of M; the error names both.
    """
    members = v.shape[0]
    if rows % members != 0:
        raise ValueError(f"a BatchEnsemble layer with {members} members got {rows} rows; the rows must be the batch "
                         f"tiled {members} times (a multiple of {members}); tile the input with TiledEnsemble")
    return v.to(dtype).repeat_interleave(rows // members, dim=0)


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: Any, v: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return v.view_as(v)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.scale, None


class _RankOneMixin:
    """Parameters and initialisation shared by the BatchEnsemble layers.

    ``grad_scale`` (1.0: none): the loss gradients of the per-member parameters (r, s, the per-member bias)
    are multiplied by it, through an identity in the forward whose backward scales (``_ScaleGrad``): the
    reference's fast-weight learning-rate multiplier. Part of the forward graph, it survives ``torch.compile``
    (a tensor hook on a parameter does not: compiled graphs drop it) and ``copy.deepcopy``.
    """

    members: int
    r: nn.Parameter
    s: nn.Parameter
    bias: nn.Parameter | None
    grad_scale: float = 1.0

    def _member(self, v: torch.Tensor, rows: int, dtype: torch.dtype) -> torch.Tensor:
        """Member parameter ``v`` ``[M, C]`` as per-row vectors ``[M*b, C]``, its gradient scaled by ``grad_scale``."""
        return _per_row(_ScaleGrad.apply(v, self.grad_scale) if self.grad_scale != 1.0 else v, rows, dtype)

    def _init_fast(self, mean: float, std: float) -> None:
        with torch.no_grad():
            self.r.normal_(mean, std)
            self.s.normal_(mean, std)

    def fast_weights(self) -> list[nn.Parameter]:
        """The rank-1 factors ``r`` ``[M, in]`` and ``s`` ``[M, out]`` (no weight decay on these)."""
        return [self.r, self.s]

    def member_parameters(self) -> list[nn.Parameter]:
        """Every per-member parameter: ``r``, ``s`` and the per-member bias ``[M, out]`` if any."""
        return self.fast_weights() + ([self.bias] if self.bias is not None else [])


class BatchEnsembleConv2d(_RankOneMixin, nn.Module):
    """2-D convolution with rank-1 fast weights: ``[M*b, in, H, W] -> [M*b, out, H', W']``.

    Parameters: ``weight`` ``[out, in, k, k]`` (shared, initialised like ``nn.Conv2d``), ``r``
    ``[M, in]``, ``s`` ``[M, out]`` (both ~ N(init_mean, init_std)), and, with ``bias=True``, a
    per-member ``bias`` ``[M, out]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = False, *, members: int, init_mean: float = 1.0, init_std: float = 0.5) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.members = members
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.r = nn.Parameter(torch.empty(members, in_channels))
        self.s = nn.Parameter(torch.empty(members, out_channels))
        self.bias = nn.Parameter(torch.empty(members, out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Conv2d's default
        if self.bias is not None:
            bound = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
            nn.init.uniform_(self.bias, -bound, bound)
        self._init_fast(init_mean, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[M*b, in, H, W]`` -> ``[M*b, out, H', W']``; chunk m uses member m's r, s (and bias)."""
        n = x.shape[0]
        out = F.conv2d(x * self._member(self.r, n, x.dtype)[:, :, None, None], self.weight, None, self.stride, self.padding)
        out = out * self._member(self.s, n, out.dtype)[:, :, None, None]
        if self.bias is not None:
            out = out + self._member(self.bias, n, out.dtype)[:, :, None, None]
        return out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, bias={self.bias is not None}, members={self.members}")


class BatchEnsembleLinear(_RankOneMixin, nn.Module):
    """Dense layer with rank-1 fast weights and a per-member bias: ``[M*b, in] -> [M*b, out]``.

    Parameters: ``weight`` ``[out, in]`` (shared, initialised like ``nn.Linear``), ``r`` ``[M, in]``,
    ``s`` ``[M, out]`` (~ N(init_mean, init_std)), ``bias`` ``[M, out]`` (each row initialised like
    ``nn.Linear``'s bias).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, members: int,
                 init_mean: float = 1.0, init_std: float = 0.5) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"members must be >= 1, got {members}")
        self.in_features, self.out_features, self.members = in_features, out_features, members
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.r = nn.Parameter(torch.empty(members, in_features))
        self.s = nn.Parameter(torch.empty(members, out_features))
        self.bias = nn.Parameter(torch.empty(members, out_features)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's default
        if self.bias is not None:
            bound = 1 / math.sqrt(in_features)
            nn.init.uniform_(self.bias, -bound, bound)
        self._init_fast(init_mean, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[M*b, in]`` -> ``[M*b, out]``; chunk m uses member m's r, s and bias."""
        n = x.shape[0]
        out = F.linear(x * self._member(self.r, n, x.dtype), self.weight)
        out = out * self._member(self.s, n, out.dtype)
        if self.bias is not None:
            out = out + self._member(self.bias, n, out.dtype)
        return out

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}, members={self.members}"


def batchensemble_layers(module: nn.Module) -> list[nn.Module]:
    """The BatchEnsemble layers inside ``module`` (in ``modules()`` order)."""
    return [m for m in module.modules() if isinstance(m, (BatchEnsembleConv2d, BatchEnsembleLinear))]


class TiledEnsemble(nn.Module):
    """Tiles the batch M times at the input of ``net`` and splits its output by member.

    ``forward(x [B, C, H, W]) -> [M, B, K]``: ``net`` sees ``[M*B, C, H, W]`` (chunk m = member m),
    at training and at test time alike; its ``[M*B, K]`` output is viewed as ``[M, B, K]``.
    """

    def __init__(self, net: nn.Module, members: int) -> None:
        super().__init__()
        self.net = net
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        tiled = x.repeat(self.members, *([1] * (x.dim() - 1)))
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            tiled = tiled.contiguous(memory_format=torch.channels_last)
        out = self.net(tiled)
        return out.view(self.members, b, *out.shape[1:])


# ---------------------------------------------------------------------------------------------
# Grouped layers: M independent networks on contiguous channel blocks of one network


def _require_divisible(channels: int, groups: int, where: str) -> None:
    if channels % groups:
        raise ValueError(f"subnetwork: {where} has {channels} channels, not divisible by members={groups}; "
                         f"choose members dividing every layer width (or a backbone width divisible by members)")


class DenseTrainingOnCpu:
    """Mixin for a grouped ``nn.Conv2d``: the CPU training path of narrow groups.

    oneDNN's fp32 backward of a grouped convolution with fewer than :attr:`DENSE_BELOW` input
    channels per group is erratic on x86 CPUs: on the 2-core AVX2 machine a 16-channel, 4-group
    3x3 layer's forward and backward took 0.2-0.9 s against 0.13 s for the equivalent dense
    convolution, and 8x slower still when the cores were shared (the subnetwork ensemble's first
    fine-tuning epoch of the quick suite took 1,435 s; a packed step with 4 channels per group
    measured ~10x the deterministic one). So while training on the CPU (module in training mode,
    autograd on), such a layer runs as ONE dense convolution whose weight is block-diagonal: block
    g is group g's weight, every other block is zero. The result is the grouped convolution's (the
    zero blocks add exact zeros; only the summation order can differ, ~1e-6), the gradient reaches
    only the grouped weight (the zero blocks are constants), and nothing connects two groups.
    Evaluation, FLOP counting and latency use the grouped convolution itself, so the cost a record
    reports is the method's. The dense form does G times the grouped FLOPs, which at these widths
    still runs faster than the grouped kernel.
    """

    DENSE_BELOW = 8  # input channels per group under which CPU training uses the block-diagonal dense form
    enabled = True  # False inside grouped_kernels(): counting a training step's nominal FLOPs

    def uses_dense_path(self, x: torch.Tensor) -> bool:
        """Whether this call runs as the block-diagonal dense convolution (see the class docstring)."""
        return (DenseTrainingOnCpu.enabled and self.groups > 1 and self.training and torch.is_grad_enabled() and x.device.type == "cpu"
                and self.in_channels // self.groups < self.DENSE_BELOW and self.padding_mode == "zeros")

    def block_diagonal_weight(self) -> torch.Tensor:
        """The ``[out, in, k, k]`` dense weight equal to this grouped convolution (zero off the diagonal blocks)."""
        g = self.groups
        out_ch, in_per_group, kh, kw = self.weight.shape
        blocks = self.weight.view(g, out_ch // g, 1, in_per_group, kh, kw)
        eye = torch.eye(g, dtype=self.weight.dtype, device=self.weight.device).view(g, 1, g, 1, 1, 1)
        return (blocks * eye).reshape(out_ch, g * in_per_group, kh, kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.uses_dense_path(x):
            return F.conv2d(x, self.block_diagonal_weight(), self.bias, self.stride, self.padding, self.dilation, 1)
        return super().forward(x)


@contextlib.contextmanager
def grouped_kernels() -> Iterator[None]:
    """Inside, every grouped convolution runs its grouped kernel also when training on the CPU (for
    counting a training step's FLOPs as the method's, not the dense form's G-fold)."""
    before, DenseTrainingOnCpu.enabled = DenseTrainingOnCpu.enabled, False
    try:
        yield
    finally:
        DenseTrainingOnCpu.enabled = before


class GroupedConv2d(DenseTrainingOnCpu, nn.Conv2d):
    """A convolution with ``groups=G`` (G independent convolutions on contiguous channel blocks);
    narrow groups train on the CPU as one block-diagonal dense convolution (:class:`DenseTrainingOnCpu`)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False, *, groups: int) -> None:
        _require_divisible(in_ch, groups, f"a convolution's input ({in_ch}->{out_ch})")
        _require_divisible(out_ch, groups, f"a convolution's output ({in_ch}->{out_ch})")
        super().__init__(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias, groups=groups)


class GroupedLinear(nn.Module):
    """G independent linear maps on contiguous feature blocks: ``[B, in] -> [B, out]``.

    Block g maps features ``[g*in/G, (g+1)*in/G)`` to outputs ``[g*out/G, (g+1)*out/G)``;
    weight ``[G, out/G, in/G]``, bias ``[G, out/G]``, initialised like ``nn.Linear(in/G, out/G)``.
    """

    def __init__(self, in_features: int, out_features: int, groups: int) -> None:
        super().__init__()
        _require_divisible(in_features, groups, "the head's input")
        _require_divisible(out_features, groups, "the head's output")
        self.groups = groups
        fan_in = in_features // groups
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(groups, out_features // groups, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_features // groups).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        out = torch.einsum("bgi,goi->bgo", x.reshape(x.shape[0], g, -1), self.weight) + self.bias
        return out.reshape(x.shape[0], -1)


def grouped_layers(layers: Layers, members: int) -> Layers:
    """``layers`` with every convolution grouped M ways, the stem reading M tiled images and a
    grouped head with M x K outputs."""
    conv = lambda i, o, k, stride=1, padding=0, bias=False: GroupedConv2d(i, o, k, stride, padding, bias, groups=members)  # noqa: E731
    return layers.with_(conv=conv, first_conv=conv, in_channels=layers.in_channels * members, num_outputs=layers.num_outputs * members,
                        linear=lambda i, o: GroupedLinear(i, o, members))


class GroupedSubnetworks(nn.Module):
    """M non-overlapping subnetworks as one grouped network: ``[B, C, H, W] -> [M, B, K]``.

    ``net``: the backbone built from :func:`grouped_layers` (input ``[B, M*C, H, W]``, output
    ``[B, M*K]``, subnetwork m on the m-th block of channels of every layer).
    """

    def __init__(self, net: nn.Module, members: int) -> None:
        super().__init__()
        self.net = net
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tiled = x.repeat(1, self.members, 1, 1)
        if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            tiled = tiled.contiguous(memory_format=torch.channels_last)  # repeat returns NCHW; keep the input's layout
        out = self.net(tiled)
        return out.reshape(x.shape[0], self.members, -1).transpose(0, 1)

"""MC dropout (Gal & Ghahramani, 2016): dropout that stays on at test time, K samples averaged.

Dropout with rate ``rate`` sits inside every residual branch (``Layers.branch_dropout``: between
the branch's convolutions; with ``sites = "reference"`` where uncertainty-baselines' models put
it: in a WRN block after its first convolution, before the second BatchNorm; in ResNet-50 after
the stem's and every bottleneck's BN-ReLU and on the projection shortcut, see
:class:`benchmark.backbones.Layers`) and is active in training and in evaluation mode alike. With
``filterwise`` it drops whole channels (Dropout2d: one Bernoulli per example and channel) instead
of single activations. Training uses one sample per image (logits ``[1, B, K]``); evaluation uses
K samples per image for every K in ``samples``, each a leaderboard row of its own
(``eval_variants``: label ``"K=k"``, k forward passes per example). The k samples are computed
in one pass on the batch repeated k times, in chunks of at most ``max_rows`` rows (whole copies
of the batch; default 4096).

Memory. The chunk, not the batch, sets the activation memory of an evaluation. At 224 px a
ResNet-50 row holds at most about 3M activations at once (a stage-1 bottleneck's input, last
convolution and BatchNorm outputs and their sum, 256 x 56 x 56 each; counted from the layer
shapes and from the tensors alive during a CPU forward pass, not measured on a GPU): about 6 MB
per row in bf16, so 4096 rows need about 25 GB before the weights, the convolutions' workspace
and the allocator's slack, which a 40 GB GPU may not hold. The ImageNet recipe therefore sets
``max_rows = 500``: one copy of its 500-image evaluation batch per pass (about 3 GB). A pass
holds ``eval.batch_size * max(1, max_rows // eval.batch_size)`` rows.

Randomness. In training mode the masks come from the global RNG, which the harness re-seeds at
every step (so resumed runs replay exactly). A compiled training step (``train.compile``) draws
them inside the compiled graph (:func:`graph_dropout_mask`: the same rate, from seeds that inductor
takes from the global RNG, so those runs replay too), fused into the multiplication: eager's mask,
drawn through ``random_`` on a reinterpreted buffer, is an operation torch.compile cannot trace,
and its nine graph breaks made the compiled step twice as slow as the eager one. In evaluation mode
they come from a generator owned by the network (:class:`DropoutRNG`, shared by all its dropout
layers), re-seeded from a fixed seed every time the network is put in evaluation mode
(``model.eval()``, as ``evaluate`` does at its start). An evaluation is therefore reproducible and
independent of the global RNG; the masks still depend on the evaluation batch size and the memory
layout (random numbers are laid out in memory order, so channels_last and contiguous inputs get
different masks). The seed is the option ``eval_seed`` (default 0), so re-evaluating saved weights
with the same config reproduces the record.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from benchmark.backbones import DROPOUT_SITES
from benchmark.core.config import choice_field
from benchmark.methods import EvalVariant, Method, MethodOptions, register_method


class DropoutRNG:
    """The evaluation-mode random stream of one network's dropout layers (one generator per device).

    ``reset()`` restarts the stream from ``seed``; generators are created lazily on first use.
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self.seed = int(seed)
        self._generators.clear()

    def generator(self, device: torch.device) -> torch.Generator:
        g = self._generators.get(device)
        if g is None:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[device] = g
        return g

    def __deepcopy__(self, memo: dict) -> "DropoutRNG":
        return DropoutRNG(self.seed)


LANE_LEVELS = 2**16


def _dropped_lanes(rate: float) -> int:
    """How many of the 2^16 lane values drop an element."""
    return round(rate * LANE_LEVELS)


def effective_rate(rate: float) -> float:
    """The drop probability :func:`dropout_mask` realises: ``rate`` rounded to a multiple of 2^-16 (0.1 -> 0.1000061)."""
    return _dropped_lanes(rate) / LANE_LEVELS


def _under_vmap(x: torch.Tensor) -> bool:
    is_batched = getattr(getattr(torch._C, "_functorch", None), "is_batchedtensor", None)
    return bool(is_batched(x)) if is_batched is not None else False


def _dense(x: torch.Tensor) -> bool:
    return x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))


def dropout_mask(shape: tuple[int, ...] | torch.Size, strides: tuple[int, ...] | None, rate: float, generator: torch.Generator | None,
                 dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, float]:
    """Dropout keep-mask and inverted-dropout scale: ``(mask, scale)``, mask 0 with probability
    :func:`effective_rate`, else 1; ``scale = 1 / (1 - effective_rate)``, applied as a scalar (a
    bf16 mask holding the scale would round 1/0.9 to 1.109 and bias every activation by 0.2%).

    Laid out with ``strides`` (a dense layout of ``shape``; ``None``: contiguous). Each element
    takes one 16-bit lane of a 64-bit random word (``random_`` over the full int64 range: every
    lane uniform), so the generator produces a quarter of the numbers ``bernoulli_`` draws (one per
    element): on the CPU, where the generator runs serially, that made the mask ~4x cheaper and it
    had cost more than the network's convolutions (``python -m benchmark perf``).
    """
    n = math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-(2**63), 2**63 - 1, generator=generator)
    lanes = words.view(torch.int16)[:n]
    lanes = lanes.as_strided(shape, strides) if strides is not None else lanes.view(shape)
    return _lane_mask(lanes, rate, dtype)


def _lane_mask(lanes: torch.Tensor, rate: float, dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """``(mask, scale)`` from uniform 16-bit lanes (values in [-32768, 32767], any integer dtype): the lanes below
    ``-32768 + dropped`` are dropped, so the drop probability is :func:`effective_rate`."""
    dropped = _dropped_lanes(rate)
    return (lanes >= dropped - 2**15).to(dtype), LANE_LEVELS / (LANE_LEVELS - dropped)


def graph_dropout_mask(shape: tuple[int, ...] | torch.Size, rate: float, dtype: torch.dtype,
                       device: torch.device) -> tuple[torch.Tensor, float]:
    """:func:`dropout_mask`'s ``(mask, scale)`` for a compiled training step: the same 16-bit lanes and
    threshold (so the same :func:`effective_rate`), drawn by ``torch.randint``, which torch.compile keeps
    in its graph and inductor generates inside the kernel that uses the mask. Other numbers than
    :func:`dropout_mask` draws from the same seed; contiguous."""
    return _lane_mask(torch.randint(-(2**15), 2**15, tuple(shape), dtype=torch.int32, device=device), rate, dtype)


class AlwaysDropout(nn.Module):
    """Inverted dropout that is active in training and evaluation mode: ``[N, C, ...] -> same``.

    Element-wise, or with ``filterwise`` one mask per (example, channel). Training draws from the
    global RNG; evaluation draws from ``rng`` (and entering evaluation mode resets it). Masks come
    from :func:`dropout_mask` (the rate rounded to a multiple of 2^-16), or, in a compiled training
    step, from :func:`graph_dropout_mask` (the same rate).
    """

    def __init__(self, rate: float, rng: DropoutRNG, filterwise: bool = False) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1), got {rate}")
        self.rate, self.filterwise, self.rng = float(rate), bool(filterwise), rng

    def train(self, mode: bool = True) -> "AlwaysDropout":
        if not mode:
            self.rng.reset()
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0:
            return x
        gen = None if self.training else self.rng.generator(x.device)
        shape = (*x.shape[:2], *([1] * (x.dim() - 2))) if self.filterwise else x.shape
        if _under_vmap(x):  # a member of a vmapped StackedEnsemble: layouts cannot be queried there
            keep = 1.0 - effective_rate(self.rate)
            mask, scale = x.new_empty(shape).bernoulli_(keep, generator=gen), 1.0 / keep
        elif self.training and torch.compiler.is_compiling():  # inside torch.compile's graph (train.compile)
            mask, scale = graph_dropout_mask(shape, self.rate, x.dtype, x.device)
        else:  # an element-wise mask in x's memory layout (channels_last stays channels_last)
            strides = x.stride() if not self.filterwise and _dense(x) else None
            mask, scale = dropout_mask(shape, strides, self.rate, gen, x.dtype, x.device)
        return (x * mask).mul_(scale)

    def extra_repr(self) -> str:
        return f"rate={self.rate}, filterwise={self.filterwise}"


class MCDropoutNet(nn.Module):
    """``samples`` dropout samples of a backbone: ``forward(x [B,C,H,W]) -> [samples, B, K]``.

    The batch is repeated ``samples`` times and run in chunks of at most ``max_rows`` rows (whole
    copies of the batch per chunk; one copy per chunk when B alone exceeds ``max_rows``).
    ``net`` is the backbone (state-dict keys ``net.*``, as the deterministic baseline's).
    """

    def __init__(self, net: nn.Module, rng: DropoutRNG, samples: int = 1, max_rows: int = 4096) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.net, self.rng, self.samples, self.max_rows = net, rng, int(samples), int(max_rows)

    def with_samples(self, samples: int) -> "MCDropoutNet":
        """A view with another sample count that shares this network's parameters and RNG."""
        return MCDropoutNet(self.net, self.rng, samples, self.max_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        per_chunk = max(1, self.max_rows // max(1, b))
        outs = []
        for start in range(0, self.samples, per_chunk):
            k = min(per_chunk, self.samples - start)
            rows = x if k == 1 else x.repeat(k, *([1] * (x.dim() - 1)))
            if k > 1 and x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
                rows = rows.contiguous(memory_format=torch.channels_last)
            out = self.net(rows)
            outs.append(out.view(k, b, *out.shape[1:]))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)


@dataclass
class MCDropoutOptions(MethodOptions):
    """``rate``: dropout rate; ``samples``: the test-time sample counts K (one leaderboard row each);
    ``filterwise``: drop whole channels; ``eval_seed``: seed of the evaluation-mode masks;
    ``sites``: where dropout sits, ``branch`` (one site per residual block, after the activation
    before its last convolution) or ``reference`` (uncertainty-baselines' sites, see
    :class:`benchmark.backbones.Layers`); ``max_rows``: the most rows of one evaluation pass (the
    batch repeated k times, whole copies per pass; it sets the evaluation's activation memory);
    ``members``: must stay 1 (one sample per image in training)."""

    members: int = 1
    rate: float = 0.1
    samples: list[int] = field(default_factory=lambda: [1, 30])
    filterwise: bool = False
    eval_seed: int = 0
    sites: str = choice_field("branch", DROPOUT_SITES)
    max_rows: int = 4096


@register_method("mc_dropout")
class MCDropout(Method):
    """Always-on residual-branch dropout; trained with one sample, evaluated with K samples."""

    Options = MCDropoutOptions

    def __init__(self, options: MCDropoutOptions, task: Any) -> None:
        super().__init__(options, task)
        if options.members != 1:
            raise ValueError(f"mc_dropout trains one member (members=1), got members={options.members}; "
                             f"set the test-time sample counts with samples=[...]")
        if not 0.0 <= options.rate < 1.0:
            raise ValueError(f"mc_dropout rate must be in [0, 1), got {options.rate}")
        if not options.samples or any(int(k) != k or k < 1 for k in options.samples):
            raise ValueError(f"mc_dropout samples must be a non-empty list of positive integers, got {options.samples!r}")
        if options.sites not in DROPOUT_SITES:
            raise ValueError(f"mc_dropout sites {options.sites!r} is not valid; valid choices: {', '.join(DROPOUT_SITES)}")
        if options.max_rows < 1:
            raise ValueError(f"mc_dropout max_rows must be >= 1, got {options.max_rows}")

    def build(self) -> nn.Module:
        """The backbone with :class:`AlwaysDropout` at its dropout ``sites``, one sample per forward."""
        rng = DropoutRNG(self.options.eval_seed)
        o = self.options
        layers = self.task.layers(branch_dropout=lambda channels: AlwaysDropout(o.rate, rng, o.filterwise), dropout_sites=o.sites)
        return MCDropoutNet(self.task.backbone_net(layers), rng, samples=1, max_rows=o.max_rows)

    def variant(self) -> str:
        return f"K={self.options.samples[0]}"

    def forward_passes(self) -> int:
        return int(self.options.samples[0])

    def test_members(self) -> int:
        return int(self.options.samples[0])

    def eval_variants(self, model: nn.Module) -> list[EvalVariant]:
        """One row per K in ``samples``: (``"K=k"``, the network returning ``[k, B, K]``, k passes, k members)."""
        return [EvalVariant(f"K={k}", model.with_samples(int(k)), int(k), int(k)) for k in self.options.samples]


"""Masksembles (Durasov, Bagautdinov, Baque & Fua, "Masksembles for Uncertainty Estimation",
CVPR 2021, arXiv 2012.08334).

M fixed binary channel masks per mask layer, generated once (seeded) and never changed: member
m is the network with mask m applied at every mask layer. ``scale`` controls how much the masks
overlap: scale 1 gives M identical masks (a single model), large scales nearly disjoint ones
(towards M separate subnetworks); MC dropout draws a fresh random mask on every pass instead.

**The mask generator** (:func:`generate_masks`) follows the authors' reference implementation
(github.com/nikitadurasov/masksembles, ``masksembles/common.py``; written here anew): each of
the M masks picks ``m`` active positions uniformly at random among ``T = int(m * s)``
positions; positions no mask picked are dropped; the draw is repeated until the number of
positions left equals the expected number of used positions, ``int(m * s * (1 - (1 - 1/s)^M))``
(the supplementary material's formula). To get masks over exactly ``C`` channels the number of
active channels is ``m = int(C / (scale * (1 - (1 - 1/scale)^M)))`` and the generator's ``s`` is
searched by bisection in ``[max(0.8 scale, 1), 1.2 scale]`` until that expected width equals
``C`` (the authors' ``generation_wrapper``; the lower bound 1 keeps ``T >= m``). Two masks then
share about ``m^2 / T`` active channels (the hypergeometric mean): a fraction about ``1/s`` of
each mask. As the reference, ``scale`` must lie in [1, 6]; masks are 0/1 multipliers with no
rescaling.

**Where the masks go**: a mask layer after each convolution block, i.e. after every residual
block of the backbone (the blocks of the network's ``stages``), so every block's input but the
first (the stem's output) and the pooled features the head reads are masked. (The stem is not
masked: on WRN-28-10 its 16 channels are too few for the generator at most scales.) Each mask layer has its
own M masks, drawn from a generator seeded by the run's seed (the torch RNG at build time) and
the layer's index; the masks are buffers, saved with the weights.

**Batches**: training splits the batch into M equal chunks and chunk m goes through mask m
(:meth:`Masksembles.training_batch` gives inputs ``[M, B/M, C, H, W]`` and targets ``[M, B/M]``;
a batch not divisible by M drops its last ``B mod M`` rows); at test time the batch is tiled M
times (``[B, C, H, W]`` in, member logits ``[M, B, K]`` out: M forward passes per example), and
the members' probabilities are averaged by the harness's ``combine``.
"""

from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from benchmark.methods import Method, MethodOptions, NormLayout, Task, register_method

MIN_SCALE, MAX_SCALE = 1.0, 6.0  # the reference generator's range
SEARCH_STEPS = 1000  # bisection steps (the reference's max_iter)
MAX_DRAWS = 2000  # redraws of one mask set until its width is the expected width


# ---------------------------------------------------------------------------------------------
# The mask generator


def expected_width(active: int, members: int, s: float) -> int:
    """Used positions of M masks of ``active`` ones among ``int(active * s)``: the expected size
    of their union, ``int(active * s * (1 - (1 - 1/s)^M))``, truncated as the reference does."""
    return int(active * s * (1.0 - (1.0 - 1.0 / s) ** members))


def active_channels(channels: int, members: int, scale: float) -> int:
    """Active channels per mask for masks over ``channels``: the inverse of :func:`expected_width`."""
    return int(channels / (scale * (1.0 - (1.0 - 1.0 / scale) ** members)))


def _draw(active: int, members: int, s: float, rng: np.random.Generator) -> np.ndarray:
    """One draw: M rows of ``active`` ones among ``int(active * s)`` positions; unused positions dropped."""
    total = int(active * s)
    masks = np.zeros((members, total), dtype=bool)
    for row in masks:
        row[rng.choice(total, size=active, replace=False)] = True
    return masks[:, masks.any(axis=0)]


class MaskSet(NamedTuple):
    """M binary masks over ``channels`` (``masks``: bool ``[M, channels]``), each with ``active``
    ones, drawn with the generator's scale ``s`` (``scale`` as requested)."""

    masks: np.ndarray
    active: int
    s: float
    scale: float

    @property
    def total_positions(self) -> int:
        """T = int(active * s), the positions each mask's ones were drawn among."""
        return int(self.active * self.s)


def _fail(channels: int, members: int, scale: float, why: str) -> ValueError:
    return ValueError(f"masksembles: cannot generate {members} masks over {channels} channels with scale={scale:g} ({why}); "
                      f"try another scale in [{MIN_SCALE:g}, {MAX_SCALE:g}] or a wider backbone")


def generate_masks(channels: int, members: int, scale: float, seed: int | list[int] | np.random.Generator) -> MaskSet:
    """The paper's masks: M binary masks over exactly ``channels`` channels whose overlap is set by
    ``scale`` (see the module docstring). Reproducible: the same ``seed`` gives the same masks."""
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not MIN_SCALE <= float(scale) <= MAX_SCALE:
        raise ValueError(f"masksembles scale={scale!r} is invalid; valid values: numbers in [{MIN_SCALE:g}, {MAX_SCALE:g}]")
    if members < 1 or channels < 1:
        raise ValueError(f"masksembles needs members >= 1 and channels >= 1, got members={members}, channels={channels}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    scale = float(scale)
    active = active_channels(channels, members, scale)
    if active < 1:
        raise _fail(channels, members, scale, "no active channel")
    lo, hi = max(0.8 * scale, 1.0), 1.2 * scale
    s = _bisect(active, members, channels, lo, hi, lowest=False)
    if s is None:
        raise _fail(channels, members, scale, "no generator scale gives exactly that width")
    # the reference redraws at s until the width is right; where that is (nearly) impossible (e.g.
    # scale 1: m = C ones among T = C + 1 positions, M >= 3 masks must all miss the same one), the
    # smallest s of that width is used instead (fewest positions T, e.g. T = C: identical masks)
    for candidate in dict.fromkeys([s, _bisect(active, members, channels, lo, hi, lowest=True)]):
        for _ in range(MAX_DRAWS):
            masks = _draw(active, members, candidate, rng)
            if masks.shape[1] == channels:
                return MaskSet(masks, active, candidate, scale)
    raise _fail(channels, members, scale, f"{MAX_DRAWS} draws never covered exactly {channels} positions")


def _bisect(active: int, members: int, channels: int, lo: float, hi: float, *, lowest: bool) -> float | None:
    """A generator scale in [lo, hi] whose expected width is ``channels`` (it grows with s): the
    reference's bisection (``lowest=False``: the first midpoint hitting it), or the smallest such."""
    found = None
    for _ in range(SEARCH_STEPS):
        mid = (lo + hi) / 2
        width = expected_width(active, members, mid)
        if width == channels:
            found = mid
            if not lowest:
                return mid
        if width >= channels if lowest else width > channels:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-12:
            break
    return found


def mean_pairwise_overlap(masks: np.ndarray | torch.Tensor) -> float:
    """The mean over pairs of masks of the number of channels both keep (M >= 2)."""
    m = np.asarray(masks, dtype=bool) if not isinstance(masks, torch.Tensor) else masks.bool().cpu().numpy()
    pairs = list(itertools.combinations(range(m.shape[0]), 2))
    if not pairs:
        raise ValueError("pairwise overlap needs at least 2 masks")
    return float(np.mean([np.sum(m[i] & m[j]) for i, j in pairs]))


# ---------------------------------------------------------------------------------------------
# Layers


class MaskLayer(nn.Module):
    """M fixed channel masks: rows ``[M*b, C, H, W]`` (member-major chunks: chunk m = member m)
    -> chunk m times mask m. ``masks``: a float buffer ``[M, C]`` of 0/1."""

    def __init__(self, mask_set: MaskSet) -> None:
        super().__init__()
        self.register_buffer("masks", torch.from_numpy(mask_set.masks.astype(np.float32)))
        self.members, self.channels = mask_set.masks.shape
        self.active, self.s, self.scale = mask_set.active, mask_set.s, mask_set.scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n % self.members:
            raise ValueError(f"a Masksembles mask layer with {self.members} masks got {n} rows; expected the batch "
                             f"in {self.members} member chunks (a multiple of {self.members})")
        if x.shape[1] != self.channels:
            raise ValueError(f"a Masksembles mask layer over {self.channels} channels got input {tuple(x.shape)}")
        per_row = self.masks.to(x.dtype).repeat_interleave(n // self.members, dim=0)
        return x * per_row.view(n, self.channels, *([1] * (x.dim() - 2)))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, members={self.members}, active={self.active}, scale={self.scale:g}, s={self.s:.4f}"


class MasksemblesNetwork(nn.Module):
    """A backbone with mask layers; ``forward``: images ``[B, C, H, W]`` (test: tiled M times,
    every member sees every image) or member chunks ``[M, b, C, H, W]`` (training: chunk m
    through mask m) -> member logits ``[M, B, K]`` (resp. ``[M, b, K]``)."""

    def __init__(self, net: nn.Module, members: int) -> None:
        super().__init__()
        self.net = net
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.members
        if x.dim() == 5 and x.shape[0] == m:
            rows = x.flatten(0, 1)  # chunk-major rows; a view, keeps channels_last
        elif x.dim() == 4:
            rows = x.repeat(m, 1, 1, 1)
            if not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
                rows = rows.contiguous(memory_format=torch.channels_last)
        else:
            raise ValueError(f"Masksembles expects images [B, C, H, W] or member chunks [{m}, b, C, H, W]; got {tuple(x.shape)}")
        out = self.net(rows)
        return out.view(m, -1, *out.shape[1:])


def mask_layers(model: nn.Module) -> list[MaskLayer]:
    """The mask layers of ``model`` in network order."""
    return [mod for mod in model.modules() if isinstance(mod, MaskLayer)]


def _block_outputs(net: nn.Module, task: Task) -> list[int]:
    """Output channels of every block of ``net.stages`` (one dry forward pass)."""
    if not isinstance(getattr(net, "stages", None), nn.Sequential):
        raise ValueError(f"masksembles places masks after every block of a backbone's `stages`; backbone "
                         f"{task.backbone!r} builds a {type(net).__name__} without `stages`")
    blocks = [b for stage in net.stages for b in (stage if isinstance(stage, nn.Sequential) else [stage])]
    seen: dict[int, int] = {}
    hooks = [mod.register_forward_hook(lambda _m, _i, out, k=k: seen.__setitem__(k, int(out.shape[1])))
             for k, mod in enumerate(blocks)]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, task.in_channels, task.image_size, task.image_size))
    finally:
        net.train(was_training)
        for h in hooks:
            h.remove()
    return [seen[k] for k in range(len(blocks))]


# ---------------------------------------------------------------------------------------------
# The method


@dataclass
class MasksemblesOptions(MethodOptions):
    """``members``: M masks per mask layer; ``scale``: their overlap (1: identical; 6: nearly disjoint)."""

    members: int = 4
    scale: float = 2.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        m, s = self.members, self.scale
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"masksembles option members={m!r} is invalid; valid values: integers >= 1")
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not MIN_SCALE <= float(s) <= MAX_SCALE:
            raise ValueError(f"masksembles option scale={s!r} is invalid; valid values: numbers in [{MIN_SCALE:g}, {MAX_SCALE:g}]")


@register_method("masksembles")
class Masksembles(Method):
    """M fixed, partly overlapping channel masks after every convolution block of one network."""

    Options = MasksemblesOptions

    def __init__(self, options: MasksemblesOptions, task: Task) -> None:
        options.validate()
        super().__init__(options, task)
        self._layers: list[dict[str, Any]] = []

    @property
    def scale(self) -> float:
        return float(self.options.scale)

    def variant(self) -> str:
        return f"M={self.members},scale={self.scale:g}"

    def build(self) -> nn.Module:
        """The backbone with a :class:`MaskLayer` after each residual block; the masks' seed is
        drawn from the torch RNG (seeded by the run), one generator per layer."""
        net = self.task.backbone_net()
        block_ch = iter(_block_outputs(net, self.task))
        seed = int(torch.randint(0, 2**62, (1,)).item())
        k = 0
        for stage in net.stages:
            blocks = stage if isinstance(stage, nn.Sequential) else None
            if blocks is None:
                raise ValueError(f"masksembles expects each stage of backbone {self.task.backbone!r} to be an nn.Sequential of blocks")
            for i in range(len(blocks)):
                blocks[i] = nn.Sequential(blocks[i], MaskLayer(generate_masks(next(block_ch), self.members, self.scale, [seed, k])))
                k += 1
        self._layers = [{"channels": m.channels, "active": m.active, "s": round(m.s, 6),
                         "mean_pairwise_overlap": mean_pairwise_overlap(m.masks) if m.members > 1 else float(m.active)}
                        for m in mask_layers(net)]
        return MasksemblesNetwork(net, self.members)

    def training_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Member chunks ``[M, B//M, C, H, W]`` (chunk m: rows ``m*B//M ..``) and their labels
        ``[M, B//M]``; the last ``B mod M`` rows are dropped."""
        m = self.members
        b = x.shape[0] // m
        if b == 0:
            raise ValueError(f"masksembles with members={m} needs training batches of at least {m} images, got {x.shape[0]}")
        return x[: m * b].view(m, b, *x.shape[1:]), y[: m * b].view(m, b)

    def norm_layout(self) -> NormLayout:
        """One row per image in M member-major blocks (the member chunks, stacked): a ghost BatchNorm
        group takes the same share of every chunk."""
        return NormLayout(1, blocks=self.members)

    def forward_passes(self) -> int:
        """M: the test batch is tiled M times."""
        return self.members

    def extra_record(self) -> dict[str, Any]:
        """Each mask layer's channels, active channels per mask, generator scale and mean overlap."""
        return {"mask_layers": self._layers} if self._layers else {}

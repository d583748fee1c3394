"""A short measured probe of a training stage's step time, for estimating what a run will cost.

:func:`probe_step_seconds` trains ``model`` for a few steps through :func:`benchmark.training.train.fit`
itself (the same optimiser, schedule, precision, memory layout, augmentation and the method's own
``training_batch``) on random uint8 images of the run's shape and random labels of its classes, and
times them: the first step (warm-up, compilation) is left out, the mean of the others is the step
time. What the step costs does not depend on the pixels, so random data measures it without
reading the dataset. Not timed: the epoch's end (the method's ``end_of_epoch`` hook, a checkpoint
write), which costs a small fraction of an epoch at these sizes.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.config import TrainConfig
from ..data.device import DeviceData
from ..methods.base import Method
from .train import fit

__all__ = ["StepProbe", "probe_step_seconds"]

PROBE_LR = 1e-4  # the step's cost does not depend on the rate; a small one keeps random labels from diverging


@dataclass(frozen=True)
class StepProbe:
    """``seconds_per_step``: the mean of ``steps`` timed steps at ``batch_size`` (the first, untimed
    step took ``first_step_seconds``); ``seconds``: the probe's own wall time."""

    seconds_per_step: float
    steps: int
    batch_size: int
    first_step_seconds: float
    seconds: float


@dataclass
class _RandomImages:
    images: np.ndarray  # uint8 [N, H, W, C]
    labels: np.ndarray  # int64 [N]


def _quiet(_message: str) -> None:
    return None


def probe_step_seconds(model: nn.Module, method: Method, cfg: TrainConfig, *, num_classes: int, image_size: int, in_channels: int = 3,
                       device: torch.device | str = "cpu", steps: int = 4, seed: int = 0) -> StepProbe:
    """Time ``steps`` training steps (after one untimed step) of ``method`` on ``model`` with the
    stage settings ``cfg`` (epochs, warm-up and rate replaced: they do not change a step's cost).
    ``model`` is trained in place for ``steps + 1`` steps on random data. ``steps`` >= 1."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    rng = np.random.default_rng(seed)
    n = (steps + 1) * int(cfg.batch_size)
    data = DeviceData(_RandomImages(rng.integers(0, 256, size=(n, image_size, image_size, in_channels), dtype=np.uint8),
                                    rng.integers(0, num_classes, size=n).astype(np.int64)),
                      mean=(0.5,) * in_channels, std=(0.25,) * in_channels, device=device)
    probe_cfg = dataclasses.replace(cfg, epochs=1, warmup_epochs=0.0, lr=PROBE_LR, milestones=[], log="none")
    timed = copy.copy(method)
    timed.end_of_epoch = lambda *args, **kwargs: None  # type: ignore[method-assign]  # a step's cost only (e.g. no snapshot taken)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        history = fit(model, timed, data, probe_cfg, seed_parts=("step-probe", seed), progress=False, log=_quiet, desc="step probe")
    epoch: dict[str, Any] = history[-1]
    first = float(epoch["first_step_seconds"])
    return StepProbe((float(epoch["seconds"]) - first) / steps, steps, int(cfg.batch_size), first, time.perf_counter() - t0)

"""``train.precision = "auto"``: bf16 autocast where it is measured faster, fp32 everywhere else.

Whether bf16 pays is not a capability flag's question: on a CPU without native bf16 (AVX2 only) oneDNN
emulates it and a step is about 10x slower than fp32; on one with AVX-512 BF16 or AMX it is faster,
by how much depending on the layer widths (the narrower, the less). :func:`choose_precision` therefore
times a few real training steps of the run's own stage (:func:`benchmark.training.probe.probe_step_seconds`:
its network, method, batch, layout and compilation, on random data of its shape) in fp32 and in bf16,
and chooses bf16 only when its step is at least ``MARGIN`` faster. The measurement is cached per machine
(CPU model or GPU name), torch version and stage shape in ``<cache dir>/precision-probes.json``, so a
second run of the same shape on the same machine does not measure again.

The choice is the run's for good: a run resumed from a checkpoint keeps the precision it started with
(:func:`stage_precision`, a small file beside the stage checkpoint), so its arithmetic never changes
halfway. Records state what was requested, what was used and why (``training.precision``).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.config import TrainConfig
from ..core.io import atomic_write_json
from ..methods.base import Method
from .probe import probe_step_seconds

__all__ = ["MARGIN", "PrecisionChoice", "choose_precision", "stage_precision"]

MARGIN = 0.95  # bf16 is chosen when its step takes at most this fraction of the fp32 step
CACHE_NAME = "precision-probes.json"
PROBE_STEPS = 3


@dataclass(frozen=True)
class PrecisionChoice:
    """What a stage trains in: ``used`` ("fp32" or "bf16") for ``requested``; ``seconds_per_step`` per
    precision as measured (empty when nothing was measured); ``cached``: the measurement came from the
    cache; ``machine``: the CPU model or GPU name it was measured on."""

    requested: str
    used: str
    reason: str
    seconds_per_step: dict[str, float]
    cached: bool = False
    machine: str = ""

    def as_record(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        return f"precision {self.requested}: {self.used} ({self.reason})"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from ..core.cpu import cpu_model

    return cpu_model() or "unknown CPU"


def _probe_key(method: Method, cfg: TrainConfig, image_size: int, in_channels: int, machine: str) -> str:
    options = getattr(method, "options", None)
    shape = {"machine": machine, "torch": torch.__version__, "method": method.name,
             "options": dataclasses.asdict(options) if dataclasses.is_dataclass(options) else repr(options),
             "backbone": method.task.backbone, "backbone_options": method.task.backbone_options, "classes": method.task.num_classes,
             "image": [image_size, in_channels], "batch": cfg.batch_size, "channels_last": cfg.channels_last, "compile": cfg.compile,
             "bn_group": cfg.bn_group}
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def choose_precision(model: nn.Module, method: Method, cfg: TrainConfig, *, image_size: int, in_channels: int = 3,
                     device: torch.device | str = "cpu", cache_dir: Path | str | None = None,
                     steps: int = PROBE_STEPS) -> PrecisionChoice:
    """The precision stage ``cfg`` trains in. ``cfg.precision`` "fp32" or "bf16": itself, unmeasured. "auto": the
    faster of the two as measured on copies of ``model`` (``model`` itself is not touched), bf16 only when at
    most ``MARGIN`` of the fp32 step; measurements are read from and written to ``cache_dir`` (None: no cache)."""
    if cfg.precision != "auto":
        return PrecisionChoice(cfg.precision, cfg.precision, "as configured", {})
    device = torch.device(device)
    machine = _machine(device)
    path = Path(cache_dir) / CACHE_NAME if cache_dir is not None else None
    key = _probe_key(method, cfg, image_size, in_channels, machine)
    cached = _read_cache(path).get(key) if path is not None else None
    if isinstance(cached, dict) and {"fp32", "bf16"} <= cached.keys():
        seconds, from_cache = {k: float(cached[k]) for k in ("fp32", "bf16")}, True
    else:
        seconds = {}
        for precision in ("fp32", "bf16"):  # each on its own copy: the probe trains the network it is given
            stage = dataclasses.replace(cfg, precision=precision)
            # a compiled step runs slowly for its first few steps on a cold compile cache: one untimed probe first
            for _ in range(2 if cfg.compile else 1):
                probe = probe_step_seconds(copy.deepcopy(model), method, stage, num_classes=method.task.num_classes, image_size=image_size,
                                           in_channels=in_channels, device=device, steps=steps)
            seconds[precision] = probe.seconds_per_step
        from_cache = False
        if path is not None:
            store = _read_cache(path)
            store[key] = {**seconds, "machine": machine, "torch": torch.__version__}
            os.makedirs(path.parent, exist_ok=True)
            atomic_write_json(path, store)
    ratio = seconds["bf16"] / seconds["fp32"]
    used = "bf16" if ratio <= MARGIN else "fp32"
    reason = (f"bf16 step {ratio:.2f}x the fp32 step ({seconds['bf16'] * 1000:.0f} vs {seconds['fp32'] * 1000:.0f} ms) on {machine}"
              f"{', measured earlier' if from_cache else ''}; bf16 is chosen at <= {MARGIN:.2f}x")
    return PrecisionChoice("auto", used, reason, seconds, from_cache, machine)


def stage_precision(checkpoint: Path) -> Path:
    """The file beside a stage checkpoint that keeps the stage's :class:`PrecisionChoice` (a resumed stage reuses it)."""
    return checkpoint.with_name(checkpoint.stem + ".precision.json")


def load_choice(path: Path) -> PrecisionChoice | None:
    """The choice kept at ``path`` (:func:`stage_precision`), or None when there is none readable."""
    data = _read_cache(path)
    try:
        return PrecisionChoice(**data) if data else None
    except TypeError:
        return None

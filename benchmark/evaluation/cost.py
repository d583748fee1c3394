"""Cost accounting: parameters, FLOPs per example, measured latency, peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.runtime import autocast


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters (trainable or not; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def flops_per_example(model: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one test-time forward per example (torch's FLOP counter; a multiply-add counts 2).

    ``example``: a normalised input batch ``[B, C, H, W]``; the count is divided by B.
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter:
        model(example)
    return int(counter.get_total_flops() // example.shape[0])


@torch.no_grad()
def latency_ms_per_example(model: nn.Module, example: torch.Tensor, batch_size: int, *, repeats: int = 5, warmup: int = 1,
                           precision: str = "fp32", channels_last: bool = False, min_seconds: float = 0.0) -> dict[str, float]:
    """Median (and spread) of measured test-time ms per example at ``batch_size``.

    ``example``: one normalised image ``[1, C, H, W]``, tiled to the batch.
    """
    model.eval()
    x = example.expand(batch_size, *example.shape[1:]).clone()
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times = []
    with autocast(precision, x.device):
        for i in range(warmup + repeats):
            sync()
            t0 = time.perf_counter()
            model(x)
            sync()
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1000 / batch_size)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "repeats": repeats, "batch_size": batch_size}


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory (CUDA: max allocated) or the process's peak resident set size (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def measure_cost(model: nn.Module, example: torch.Tensor, *, forward_passes: int, large_batch: int = 512, precision: str = "fp32",
                 channels_last: bool = False, repeats: int = 5) -> dict[str, Any]:
    """Parameters, FLOPs per example, forward passes and ms per example at batch 1 and a large batch."""
    return {
        "params": count_parameters(model),
        "flops_per_example": flops_per_example(model, example),
        "forward_passes": forward_passes,
        "ms_per_example_b1": latency_ms_per_example(model, example, 1, repeats=max(repeats, 10), precision=precision, channels_last=channels_last),
        "ms_per_example_large": latency_ms_per_example(model, example, large_batch, repeats=repeats, precision=precision, channels_last=channels_last),
    }

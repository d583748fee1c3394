"""Evaluation: a network's member logits on a split, and the metrics of a whole split (and, when
asked, its predictions, for the record's predictions sidecar: :mod:`.predictions`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.progress import progress_bar
from ..core.runtime import autocast
from .metrics import MetricAccumulator


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, precision: str = "fp32", channels_last: bool = False) -> torch.Tensor:
    """Member logits ``[M, B, K]`` (float32) of ``model`` in eval mode on normalised images ``x``."""
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    else:
        x = x.contiguous()
    with autocast(precision, x.device):
        return model(x).float()


@torch.inference_mode()
def evaluate_with_predictions(model: nn.Module, data: Any, batch_size: int = 1000, precision: str = "fp32", channels_last: bool = False,
                              progress: bool = True, desc: str = "eval", keep: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metrics, predictions) of ``model`` on a split in one pass: the metrics of :func:`evaluate` and,
    with ``keep`` ``"combined"`` or ``"members"``, the predictions the metrics were computed from
    (``MetricAccumulator.predictions``: ``log_probs`` [N, K], ``targets`` [N], ``members`` [M, N, K]);
    ``{}`` with ``keep=None``."""
    model.eval()
    acc = MetricAccumulator(keep=keep)
    for x, y in progress_bar(data.eval_batches(batch_size), desc=desc, unit="batch", enable=progress, total=math.ceil(len(data) / batch_size)):
        acc.update(predict_logits(model, x, precision, channels_last), y)
    return acc.compute(), (acc.predictions() if keep is not None else {})


@torch.no_grad()
def evaluate(model: nn.Module, data: Any, batch_size: int = 1000, precision: str = "fp32", channels_last: bool = False,
             progress: bool = True, desc: str = "eval") -> dict[str, Any]:
    """Metrics of ``model`` on a split (ensemble, per member, diversity): see ``metrics.MetricAccumulator``."""
    return evaluate_with_predictions(model, data, batch_size, precision, channels_last, progress, desc)[0]

"""Evaluation on corrupted test sets, per corruption and severity: the one loop for every
corrupted-set source (CIFAR-C files, regenerated CIFAR-C, ImageNet-C folders, ImageNet-C made on
the fly; :mod:`benchmark.data.corrupted`).

Which set: ``[eval] corruptions`` (``"regenerated"``, ``"official"`` or a folder path), resolved by
the dataset's spec to a corrupted-set source. ``corruption_subset = N`` evaluates a fixed seeded
sample of N test images, the same in every cell (:func:`benchmark.data.corrupted.base.subset_indices`).
Summaries average over the named ``corruption_set``; which metrics are summarised, and under which
names, is declared in :mod:`benchmark.evaluation.metric_specs`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from torch import nn

from ..core.progress import progress_bar
from ..corruptions import CORRUPTION_SETS, corruption_set
from ..data.base import Dataset
from ..data.corrupted.base import open_corrupted, subset_indices
from .evaluate import evaluate_with_predictions
from .predictions import prefixed
from .metric_specs import summary_names

if TYPE_CHECKING:  # pragma: no cover
    from ..core.runtime import Environment


def evaluate_corrupted(net: nn.Module, data: Dataset, ev: dict[str, Any], env: "Environment", *, batch_size: int, precision: str,
                       channels_last: bool, progress: bool = True, keep: str | None = None,
                       predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """Metrics per corruption and severity, and their means over the corruption set.

    Returns {"source", "folder", "corruption_set", "corruptions", "severities", "subset", "seed", "per":
    {corruption: {"<severity>": metrics}}, "summary": {cA, cNLL, cECE, cBrier, disagreement, kl},
    "images", "seconds", "images_per_second"}. With ``keep`` (``"combined"``/``"members"``) each
    cell's predictions are added to ``predictions`` as ``corrupted/<corruption>/<severity>/{targets,
    log_probs, members}``, with ``corrupted/indices`` (:mod:`.predictions`).
    """
    if ev["corruption_set"] not in CORRUPTION_SETS:
        raise ValueError(f"unknown corruption_set {ev['corruption_set']!r}; valid choices: {', '.join(sorted(CORRUPTION_SETS))}")
    corrupted = open_corrupted(data, ev, env, next(net.parameters()).device)
    names = corruption_set(ev["corruption_set"])
    severities = [int(s) for s in ev["corruption_severities"]]

    def cell(name: str, s: int) -> tuple[dict[str, Any], int]:
        split, n = corrupted.cell(name, s)
        metrics, kept = evaluate_with_predictions(net, split, batch_size=batch_size, precision=precision, channels_last=channels_last,
                                                  progress=False, keep=keep if predictions is not None else None)
        if predictions is not None and kept:
            predictions.update(prefixed(f"corrupted/{name}/{s}", kept))
            indices = subset_indices(len(data.test), int(ev["corruption_subset"]), int(ev["corruption_seed"]))
            if len(indices) == n:  # the source evaluates the eval.corruption_subset sample of the test set
                predictions["corrupted/indices"] = indices.astype(np.int64)
        return metrics, n

    per, seen, seconds = evaluate_cells(names, severities, cell, corrupted.desc, progress)
    return corrupted_result(per, ev, source=corrupted.source, folder=corrupted.folder, seed=corrupted.seed, images=seen, seconds=seconds)


def evaluate_cells(names: tuple[str, ...] | list[str], severities: list[int], cell: Callable[[str, int], tuple[dict[str, Any], int]],
                   desc: str, progress: bool) -> tuple[dict[str, dict[str, Any]], int, float]:
    """Run ``cell(corruption, severity) -> (metrics, images)`` over the grid, with a progress bar.

    Returns (per: {corruption: {"<severity>": metrics}}, images evaluated, seconds).
    """
    per: dict[str, dict[str, Any]] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = progress_bar(total=len(names) * len(severities), desc=desc, unit="set", enable=progress)
    for name in names:
        per[name] = {}
        for s in severities:
            per[name][str(s)], n = cell(name, s)
            seen += n
            bar.update(1)
    bar.close()
    return per, seen, time.perf_counter() - t0


def corrupted_result(per: dict[str, dict[str, Any]], ev: dict[str, Any], *, source: str, folder: Path | None, seed: int | None,
                     images: int, seconds: float) -> dict[str, Any]:
    """The record's ``metrics.corrupted`` entry (one structure for every corrupted test set)."""
    return {"source": source, "folder": None if folder is None else str(folder), "corruption_set": ev["corruption_set"],
            "corruptions": list(per), "severities": [int(s) for s in ev["corruption_severities"]], "subset": int(ev["corruption_subset"]),
            "seed": seed, "per": per, "summary": summarise(per), "images": images, "seconds": seconds,
            "images_per_second": images / seconds if seconds else None}


def summarise(per: dict[str, dict[str, dict[str, Any]]], corruptions: list[str] | None = None) -> dict[str, float]:
    """Means over corruptions x severities of every summarised metric (cA, cNLL, cECE, cBrier, ...),
    and the mean member diversity."""
    cells = [m for c, sev in per.items() if corruptions is None or c in corruptions for m in sev.values()]
    out = {short: float(np.mean([m[key] for m in cells])) for key, short in summary_names().items()}
    out["disagreement"] = float(np.mean([m["diversity"]["disagreement"] for m in cells]))
    out["kl"] = float(np.mean([m["diversity"]["kl"] for m in cells]))
    return out

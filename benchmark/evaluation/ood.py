"""Out-of-distribution detection: scores from the combined prediction, AUROC / AUPR / FPR at 95%
TPR of telling a run's test set from each OOD set (``eval.ood``; the sets are those of
:func:`benchmark.data.base.ood_names`).

OOD detection treats OUT-of-distribution examples as the positive class and a score as an
uncertainty: higher means "more likely OOD".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.base import DataError, Dataset, Split, ood_images
from .evaluate import predict_logits
from .metrics import _check_probs_2d, combine_log_probs

if TYPE_CHECKING:  # pragma: no cover
    from ..core.runtime import Environment


def ood_scores(log_probs: Tensor) -> dict[str, Tensor]:
    """Per-example OOD scores from ``log_probs`` [B, K]; higher = more likely OOD.

    ``max_prob``: negated maximum class probability, in [-1, -1/K]. ``entropy``: predictive entropy
    in nats, in [0, log K]. Both ``[B]``, in the input dtype.
    """
    _check_probs_2d(log_probs, "log_probs")
    probs = log_probs.exp()
    plogp = torch.where(probs > 0, probs * log_probs, torch.zeros((), dtype=probs.dtype, device=probs.device))
    return {"max_prob": -probs.max(dim=-1).values, "entropy": -plogp.sum(dim=-1)}


def _as_scores(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) out of {arr.size}")
    return arr


def ood_metrics(scores_in: np.ndarray, scores_out: np.ndarray) -> dict[str, float]:
    """Detection of OOD examples from per-example uncertainty scores (higher = more OOD).

    Follows uncertainty-baselines: OOD examples are the POSITIVE class. Returns
    ``auroc`` (ties count one half), ``aupr`` (average precision with OOD positive, as
    ``sklearn.metrics.average_precision_score``) and ``fpr_at_95_tpr`` (fraction of in-distribution
    examples flagged OOD at the highest threshold that still flags >= 95% of OOD examples,
    flagging ``score >= threshold``).
    """
    s_in = _as_scores(scores_in, "scores_in")
    s_out = _as_scores(scores_out, "scores_out")
    n_in, n_out = s_in.size, s_out.size
    scores = np.concatenate([s_out, s_in])
    labels = np.concatenate([np.ones(n_out), np.zeros(n_in)])

    # sweep distinct thresholds from high to low: cumulative positives/negatives flagged
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(labels)[last_of_group]
    fp = (last_of_group + 1) - tp
    tpr = tp / n_out
    fpr = fp / n_in

    # AUROC: trapezoid over the ROC curve from (0, 0) (ties -> one half), i.e. Mann-Whitney U
    tpr0, fpr0 = np.r_[0.0, tpr], np.r_[0.0, fpr]
    auroc = float(np.sum(np.diff(fpr0) * (tpr0[1:] + tpr0[:-1]) / 2.0))
    # AP: sum over thresholds of (recall step) * precision
    aupr = float(np.sum(np.diff(tpr0) * (tp / (tp + fp))))
    # first (highest) threshold with TPR >= 0.95; fpr is non-decreasing, so it is the minimum FPR
    hit = np.flatnonzero(tp * 100 >= 95 * n_out)  # exact integer comparison
    fpr95 = float(fpr[hit[0]])
    return {"auroc": auroc, "aupr": aupr, "fpr_at_95_tpr": fpr95}


def _scores(net: nn.Module, split: Any, batch_size: int, precision: str, channels_last: bool) -> dict[str, np.ndarray]:
    net.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for x, _ in split.eval_batches(batch_size):
        for key, value in ood_scores(combine_log_probs(predict_logits(net, x, precision, channels_last))).items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_ood(net: nn.Module, data: Dataset, names: list[str], env: "Environment", *, batch_size: int, precision: str,
                 channels_last: bool, progress: bool = True) -> dict[str, Any]:
    """AUROC, AUPR and FPR at 95% TPR of telling ``data``'s test set from each OOD set, scored by
    maximum probability and by predictive entropy. An absent OOD set is recorded as absent (and
    reported nowhere), never an error."""
    device = next(net.parameters()).device
    scores_in = _scores(net, data.test.on_device(data.mean, data.std, device), batch_size, precision, channels_last)
    out: dict[str, Any] = {}
    for name in names:
        try:
            images = ood_images(name, env.data_dir, env.cache_dir)
        except DataError as exc:
            out[name] = {"absent": str(exc)}
            continue
        split = Split(images, np.zeros(len(images), dtype=np.int64)).on_device(data.mean, data.std, device)
        scores_out = _scores(net, split, batch_size, precision, channels_last)
        out[name] = {score: ood_metrics(scores_in[score], scores_out[score]) for score in scores_in}
        out[name].update({"n_in": len(data.test), "n_out": len(images)})
    return out

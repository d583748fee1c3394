"""Out-of-distribution detection: scores from the combined prediction, AUROC / AUPR / FPR at 95%
TPR of telling a run's test set from each OOD set (``eval.ood``; the sets are those of
:func:`benchmark.data.base.ood_names`).

OOD detection treats OUT-of-distribution examples as the positive class and a score as an
uncertainty: higher means "more likely OOD".
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data.base import DataError, Dataset, Split, ood_images
from ..methods.base import combine_member_log_probs, member_log_probs
from .evaluate import predict_logits
from .metrics import _check_finite_eager, _check_probs_2d
from .predictions import prefixed

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


def _predict(net: nn.Module, split: Any, batch_size: int, precision: str, channels_last: bool, keep: str) -> dict[str, np.ndarray]:
    """The combined (and, with ``keep="members"``, member) log-probabilities of ``split``, float32 on the host."""
    net.eval()
    parts: dict[str, list[Tensor]] = {"log_probs": [], "members": [], "member_entropy": []}
    for x, _ in split.eval_batches(batch_size):
        logits = predict_logits(net, x, precision, channels_last)
        _check_finite_eager(logits, "logits")
        member_lp = member_log_probs(logits)
        parts["log_probs"].append(combine_member_log_probs(member_lp))
        plogp = torch.where(member_lp > -math.inf, member_lp.exp() * member_lp, torch.zeros((), dtype=member_lp.dtype, device=member_lp.device))
        parts["member_entropy"].append(-plogp.sum(dim=-1).mean(dim=0))
        if keep == "members":
            parts["members"].append(member_lp)
    out = {"log_probs": torch.cat(parts["log_probs"]).float().cpu().numpy(),
           "member_entropy": torch.cat(parts["member_entropy"]).float().cpu().numpy()}
    if parts["members"]:
        out["members"] = torch.cat(parts["members"], dim=1).float().cpu().numpy()
    return out


def scores_of(log_probs: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`ood_scores` of stored combined log-probabilities ``[N, K]`` (as rescoring computes them)."""
    return {k: v.float().numpy() for k, v in ood_scores(torch.from_numpy(np.ascontiguousarray(log_probs, dtype=np.float32))).items()}


def ood_entry(scores_in: dict[str, np.ndarray], scores_out: dict[str, np.ndarray], n_in: int, n_out: int) -> dict[str, Any]:
    """The record's ``metrics.ood.<name>`` entry: every score's detection metrics, and the set sizes."""
    out: dict[str, Any] = {score: ood_metrics(scores_in[score], scores_out[score]) for score in scores_in}
    out.update({"n_in": n_in, "n_out": n_out})
    return out


def evaluate_ood(net: nn.Module, data: Dataset, names: list[str], env: "Environment", *, batch_size: int, precision: str,
                 channels_last: bool, progress: bool = True, keep: str | None = None, predictions: dict[str, np.ndarray] | None = None,
                 in_predictions: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """AUROC, AUPR and FPR at 95% TPR of telling ``data``'s test set from each OOD set, scored by
    maximum probability and by predictive entropy. An absent OOD set is recorded as absent (and
    reported nowhere), never an error.

    ``in_predictions``: the whole test set's predictions already computed (the clean evaluation's,
    ``{"log_probs", "members"?}``), used instead of a second pass. With ``predictions`` and ``keep``
    (``"combined"``/``"members"``), the OOD sets' predictions are added as ``ood/<name>/...`` (and the
    test set's as ``ood_in/...`` when they were not given) (:mod:`.predictions`)."""
    device = next(net.parameters()).device
    store = predictions is not None and keep is not None
    if in_predictions is None:
        in_predictions = _predict(net, data.test.on_device(data.mean, data.std, device), batch_size, precision, channels_last,
                                  keep if store else "combined")
        if store:
            predictions.update(prefixed("ood_in", in_predictions))  # type: ignore[union-attr]
    scores_in = scores_of(in_predictions["log_probs"])
    out: dict[str, Any] = {}
    for name in names:
        try:
            images = ood_images(name, env.data_dir, env.cache_dir)
        except DataError as exc:
            out[name] = {"absent": str(exc)}
            continue
        split = Split(images, np.zeros(len(images), dtype=np.int64)).on_device(data.mean, data.std, device)
        pred = _predict(net, split, batch_size, precision, channels_last, keep if store else "combined")
        if store:
            predictions.update(prefixed(f"ood/{name}", pred))  # type: ignore[union-attr]
        out[name] = ood_entry(scores_in, scores_of(pred["log_probs"]), len(in_predictions["log_probs"]), len(images))
    return out

"""Uncertainty decomposition of an ensemble's prediction and OOD detection from it, over numpy
arrays (no torch: the torch-free leaderboard calls these on stored predictions).

Decomposition (Depeweg et al., "Decomposition of Uncertainty in Bayesian Deep Learning for
Efficient and Risk-sensitive Learning", ICML 2018; Malinin & Gales, "Predictive Uncertainty
Estimation via Prior Networks", NeurIPS 2018), in nats, for member log-probabilities ``[M, N, K]``
and the mean prediction ``p = mean_m p_m`` (members are combined by averaging probabilities):

* ``total = H[p] = -sum_k p_k log p_k`` (predictive entropy of the mean prediction);
* ``aleatoric = mean_m H[p_m]`` (expected member entropy);
* ``epistemic = total - aleatoric``: the mutual information between the prediction and the member
  choice, >= 0 by Jensen's inequality; rounding can leave values like -1e-16, which are clipped to
  0; exactly 0 for one member.

``0 log 0 = 0`` throughout. Per-example arrays and their means over examples are returned. When
only the combined prediction and the mean member entropy are stored (a sidecar's
``member_entropy``, members dropped), :func:`decomposition_from_entropy` and
:func:`ood_scores_from_entropy` give the same quantities.

OOD detection scores (higher = more likely OOD): ``max_prob`` = minus the maximum probability of
the mean prediction, ``entropy`` = ``total``, ``mutual_information`` = ``epistemic`` (only for
M >= 2: with one member it is identically 0 and detects nothing). :func:`ood_metrics` follows
:func:`benchmark.evaluation.ood.ood_metrics` (OOD examples are the positive class, as in
uncertainty-baselines) and adds AUPR-in. It is a numpy re-implementation of that function (which
lives in a torch-importing module), with ``aupr_out`` equal to its ``aupr``.
"""

from __future__ import annotations

import math

import numpy as np

from .calibration import check_log_probs, logsumexp

__all__ = [
    "entropy",
    "uncertainty_decomposition",
    "decomposition_from_entropy",
    "uncertainty_summary",
    "ood_scores",
    "ood_scores_from_entropy",
    "ood_metrics",
    "ood_detection",
]


def _as_members(member_log_probs, name: str) -> np.ndarray:
    arr = np.asarray(member_log_probs)
    if arr.ndim == 2:  # one model: one member
        arr = arr[None]
    return check_log_probs(arr, name, ndim=3)


def entropy(log_probs: np.ndarray) -> np.ndarray:
    """``-sum_k p_k log p_k`` over the last axis (nats), with ``0 log 0 = 0``."""
    lp = np.asarray(log_probs, dtype=np.float64)
    p = np.exp(lp)
    return -np.where(p > 0, p * lp, 0.0).sum(axis=-1)


def _decompose(mean_lp: np.ndarray, aleatoric: np.ndarray, members: int) -> dict[str, np.ndarray]:
    total = entropy(mean_lp)
    epistemic = np.zeros_like(total) if members == 1 else np.maximum(total - aleatoric, 0.0)
    return {"total": total, "aleatoric": aleatoric, "epistemic": epistemic}


def uncertainty_decomposition(member_log_probs) -> dict[str, np.ndarray]:
    """Per-example ``total``, ``aleatoric`` and ``epistemic`` ``[N]`` (nats; module docstring) of
    member log-probabilities ``[M, N, K]`` (a ``[N, K]`` array is one member)."""
    lp = _as_members(member_log_probs, "member_log_probs")
    m = lp.shape[0]
    return _decompose(logsumexp(lp, axis=0) - math.log(m), entropy(lp).mean(axis=0), m)


def decomposition_from_entropy(log_probs, member_entropy, members: int) -> dict[str, np.ndarray]:
    """:func:`uncertainty_decomposition` from the combined prediction ``log_probs`` ``[N, K]`` (log of
    the mean member probability), the mean member entropy ``member_entropy`` ``[N]`` (nats) and the
    number of ``members`` (the epistemic part is exactly 0 for one member)."""
    lp = check_log_probs(log_probs)
    ale = _as_scores(member_entropy, "member_entropy")
    if ale.shape != (lp.shape[0],):
        raise ValueError(f"member_entropy must have shape [{lp.shape[0]}], got {ale.shape}")
    if not isinstance(members, (int, np.integer)) or members < 1:
        raise ValueError(f"members must be a positive int, got {members!r}")
    return _decompose(lp, ale, int(members))


def uncertainty_summary(member_log_probs) -> dict[str, float]:
    """Means over examples of :func:`uncertainty_decomposition`: ``total``, ``aleatoric``, ``epistemic``."""
    return {k: float(v.mean()) for k, v in uncertainty_decomposition(member_log_probs).items()}


def _scores(mean_lp: np.ndarray, dec: dict[str, np.ndarray], members: int) -> dict[str, np.ndarray]:
    out = {"max_prob": -np.exp(mean_lp.max(axis=1)), "entropy": dec["total"]}
    if members >= 2:
        out["mutual_information"] = dec["epistemic"]
    return out


def ood_scores(member_log_probs) -> dict[str, np.ndarray]:
    """Per-example OOD scores ``[N]`` (higher = more OOD): ``max_prob`` (minus the maximum mean
    probability), ``entropy`` (total) and, for M >= 2, ``mutual_information`` (epistemic)."""
    lp = _as_members(member_log_probs, "member_log_probs")
    m = lp.shape[0]
    mean_lp = logsumexp(lp, axis=0) - math.log(m)
    return _scores(mean_lp, _decompose(mean_lp, entropy(lp).mean(axis=0), m), m)


def ood_scores_from_entropy(log_probs, member_entropy, members: int) -> dict[str, np.ndarray]:
    """:func:`ood_scores` from the combined prediction, the mean member entropy and the member count
    (as :func:`decomposition_from_entropy`)."""
    dec = decomposition_from_entropy(log_probs, member_entropy, members)
    return _scores(check_log_probs(log_probs), dec, int(members))


def _as_scores(x, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) out of {arr.size}")
    return arr


def _detection_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives flagging ``score >= t``, one point per distinct score
    from the highest down (tied scores are flagged together)."""
    scores = np.concatenate([pos, neg])
    labels = np.concatenate([np.ones(pos.size), np.zeros(neg.size)])
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp = np.cumsum(labels)[last]
    return tp, (last + 1) - tp


def _average_precision(tp: np.ndarray, fp: np.ndarray, n_pos: int) -> float:
    """``sum_t (recall_t - recall_{t-1}) * precision_t`` (as ``sklearn.metrics.average_precision_score``)."""
    return float(np.sum(np.diff(np.r_[0.0, tp]) / n_pos * (tp / (tp + fp))))


def ood_metrics(scores_in, scores_out) -> dict[str, float]:
    """Detection of OOD examples from per-example scores (higher = more OOD); OOD is the positive class.

    * ``auroc``: trapezoidal area under the ROC curve from (0, 0), one point per distinct score
      (ties count one half: the Mann-Whitney statistic).
    * ``aupr_out``: average precision with OOD positive and the score as is
      (``sklearn.metrics.average_precision_score``; ``aupr`` of :mod:`benchmark.evaluation.ood`).
    * ``aupr_in``: average precision with in-distribution positive and the score negated.
    * ``fpr_at_95_tpr``: fraction of in-distribution examples flagged (``score >= t``) at the
      highest threshold ``t`` that flags at least 95% of the OOD examples.
    """
    s_in = _as_scores(scores_in, "scores_in")
    s_out = _as_scores(scores_out, "scores_out")
    n_in, n_out = s_in.size, s_out.size
    tp, fp = _detection_curve(s_out, s_in)
    tpr0, fpr0 = np.r_[0.0, tp / n_out], np.r_[0.0, fp / n_in]
    auroc = float(np.sum(np.diff(fpr0) * (tpr0[1:] + tpr0[:-1]) / 2.0))
    hit = np.flatnonzero(tp * 100 >= 95 * n_out)  # exact integer comparison
    tp_in, fp_in = _detection_curve(-s_in, -s_out)
    return {
        "auroc": auroc,
        "aupr_in": _average_precision(tp_in, fp_in, n_in),
        "aupr_out": _average_precision(tp, fp, n_out),
        "fpr_at_95_tpr": float(fp[hit[0]] / n_in),
    }


def ood_detection(member_log_probs_in, member_log_probs_out) -> dict[str, dict[str, float]]:
    """:func:`ood_metrics` for each score of :func:`ood_scores`: in-distribution (test) member
    log-probabilities ``[M, N_in, K]`` against OOD ones ``[M, N_out, K]`` (same members, same K;
    ``[N, K]`` arrays are one member). Either side may instead be a dict of scores already computed
    (:func:`ood_scores` or :func:`ood_scores_from_entropy`); only the scores present on both sides
    are evaluated. Returns ``{score: {auroc, aupr_in, aupr_out, fpr_at_95_tpr}}``."""
    sides = []
    for x, name in ((member_log_probs_in, "member_log_probs_in"), (member_log_probs_out, "member_log_probs_out")):
        sides.append((dict(x), None) if isinstance(x, dict) else (None, _as_members(x, name)))
    (s_in, lp_in), (s_out, lp_out) = sides
    if lp_in is not None and lp_out is not None and (lp_in.shape[0] != lp_out.shape[0] or lp_in.shape[2] != lp_out.shape[2]):
        raise ValueError(
            f"in- and out-of-distribution predictions need the same members and classes, got shapes "
            f"{lp_in.shape} and {lp_out.shape}"
        )
    s_in = s_in if s_in is not None else ood_scores(lp_in)
    s_out = s_out if s_out is not None else ood_scores(lp_out)
    return {name: ood_metrics(s_in[name], s_out[name]) for name in s_in if name in s_out}

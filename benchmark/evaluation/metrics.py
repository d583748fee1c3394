"""Ensemble metrics: calibration and diversity of combined member predictions (OOD detection:
:mod:`benchmark.evaluation.ood`).

Conventions (as in google/uncertainty-baselines):

* Member logits have shape ``[M, B, K]`` (members, examples, classes).
* Members are combined by averaging PROBABILITIES, never logits:
  ``log p(y|x) = logsumexp_m log_softmax(logits_m) - log M``.
* Accuracy, NLL (nats per example), ECE and Brier are computed from the averaged probabilities.
* ECE is top-label with ``n_bins`` equal-width bins over [0, 1]; bin ``b`` holds confidences in
  ``(b/n_bins, (b+1)/n_bins]`` (a confidence of exactly 0 falls in bin 0). Confidence is the max
  class probability; ``ECE = sum_b |correct_b - confidence_sum_b| / n``.
* Brier is ``sum_k (p_k - onehot_k)^2`` per example, averaged over examples (range [0, 2]).

:class:`MetricAccumulator` streams over evaluation batches, keeping running sums on the logits'
device without any host synchronisation per batch; the full-tensor functions are for one-shot use
and tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..methods.base import combine_member_log_probs, member_log_probs
from .metric_specs import MetricSpec, computed_metrics

__all__ = [
    "combine_log_probs",
    "MetricAccumulator",
    "accuracy",
    "nll",
    "ece",
    "brier",
    "reliability_bins",
    "disagreement",
    "pairwise_kl",
]

DEFAULT_N_BINS = 15
KEEP_CHOICES = (None, "combined", "members")  # MetricAccumulator(keep=...): which predictions predictions() returns
_BASIC = ("accuracy", "nll", "ece", "brier")


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def _check_logits(logits: Tensor, name: str = "logits") -> None:
    """Shape/dtype checks that need no host sync: ``[M, B, K]`` floating, non-empty."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.ndim != 3:
        raise ValueError(f"{name} must have shape [M, B, K], got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {logits.dtype}")
    m, _, k = logits.shape
    if m < 1 or k < 1:
        raise ValueError(f"{name} needs at least one member and one class, got shape {tuple(logits.shape)}")


def _check_probs_2d(t: Tensor, name: str) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.ndim != 2:
        raise ValueError(f"{name} must have shape [B, K], got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be floating point, got dtype {t.dtype}")
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {tuple(t.shape)}")


def _check_targets_shape(targets: Tensor, batch: int, shape_desc: str) -> None:
    if not isinstance(targets, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(targets).__name__}")
    if targets.ndim != 1 or targets.shape[0] != batch:
        raise ValueError(
            f"targets must have shape [{batch}] to match {shape_desc}, got shape {tuple(targets.shape)}"
        )
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor, got dtype {targets.dtype}")


def _check_finite_eager(t: Tensor, name: str) -> None:
    bad = int((~torch.isfinite(t)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) out of {t.numel()}")


def _check_target_range_eager(targets: Tensor, n_classes: int) -> None:
    bad = int(((targets < 0) | (targets >= n_classes)).sum())
    if bad:
        raise ValueError(f"targets has {bad} value(s) outside [0, {n_classes - 1}]")


def _check_n_bins(n_bins: int) -> None:
    if not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")


# ----------------------------------------------------------------------------------------------
# building blocks (shared by the one-shot functions and the accumulator)
# ----------------------------------------------------------------------------------------------


def _acc_dtype(device: torch.device) -> torch.dtype:
    """Dtype of running sums: float64 where the device supports it."""
    return torch.float32 if device.type == "mps" else torch.float64


# The project's one combination (benchmark.methods.base): member log-probabilities, then the log of
# their mean probability.
_member_log_probs = member_log_probs
_combine = combine_member_log_probs


def _bin_edges(n_bins: int, device: torch.device | str = "cpu") -> Tensor:
    """``[n_bins + 1]`` edges ``i / n_bins`` (exactly rounded in float64; float32 on MPS)."""
    edges = torch.arange(n_bins + 1, dtype=torch.float64) / n_bins
    device = torch.device(device)
    return edges.to(device=device, dtype=_acc_dtype(device))


def _bin_index(conf: Tensor, inner_edges: Tensor) -> Tensor:
    """Bin of each confidence given the ``n_bins - 1`` inner edges: bin b holds (edge_b, edge_{b+1}];
    0 goes to bin 0. Same shape as ``conf``, int64."""
    # float32 -> float64 is exact, so confidences are compared with the exact float64 edges
    return torch.bucketize(conf.to(inner_edges.dtype), inner_edges, right=False)


def _calibration_sums(probs: Tensor, targets: Tensor, inner_edges: Tensor, acc: torch.dtype) -> dict[str, Tensor]:
    """Per-row sums for ``probs`` of shape ``[R, B, K]``; every output has leading dim R.

    ``inner_edges`` are ``_bin_edges(n_bins)[1:-1]`` on ``probs``' device (passed in so that a
    streaming caller builds them once).

    Returns ``correct`` [R] int64, ``brier_sum`` [R], ``bin_count`` [R, n_bins] int64,
    ``bin_conf`` [R, n_bins], ``bin_correct`` [R, n_bins] int64 (sums in dtype ``acc``).
    """
    r, n_bins = probs.shape[0], inner_edges.numel() + 1
    conf, pred = probs.max(dim=-1)  # [R, B]
    hit = pred == targets.unsqueeze(0)  # [R, B]
    tgt = targets.view(1, -1, 1).expand(r, -1, 1)
    diff = probs.scatter_add(-1, tgt, torch.full(tgt.shape, -1.0, dtype=probs.dtype, device=probs.device))
    brier_sum = (diff * diff).sum(dim=-1).to(acc).sum(dim=-1)
    idx = _bin_index(conf, inner_edges) + n_bins * torch.arange(r, device=probs.device).unsqueeze(1)
    flat = idx.reshape(-1)
    zeros_i = torch.zeros(r * n_bins, dtype=torch.int64, device=probs.device)
    bin_count = zeros_i.index_add(0, flat, torch.ones_like(flat))
    bin_correct = zeros_i.index_add(0, flat, hit.reshape(-1).to(torch.int64))
    bin_conf = torch.zeros(r * n_bins, dtype=acc, device=probs.device).index_add(
        0, flat, conf.reshape(-1).to(acc)
    )
    return {
        "correct": hit.sum(dim=-1),
        "brier_sum": brier_sum,
        "bin_count": bin_count.view(r, n_bins),
        "bin_conf": bin_conf.view(r, n_bins),
        "bin_correct": bin_correct.view(r, n_bins),
    }


def _nll_sum(log_probs: Tensor, targets: Tensor, acc: torch.dtype) -> Tensor:
    """``[R, B, K]`` log-probs -> ``[R]`` summed negative log-likelihood (nats)."""
    idx = targets.view(1, -1, 1).expand(log_probs.shape[0], -1, 1)
    return -log_probs.gather(-1, idx).squeeze(-1).to(acc).sum(dim=-1)


def _diversity_sums(member_lp: Tensor, acc: torch.dtype) -> tuple[Tensor, Tensor]:
    """``[M, B, K]`` member log-probs -> (``[M, M]`` disagreement counts, ``[M, M]`` summed KL(p_i||p_j))."""
    m = member_lp.shape[0]
    pred = member_lp.argmax(dim=-1)  # [M, B]
    disagree = (pred.unsqueeze(1) != pred.unsqueeze(0)).sum(dim=-1)  # [M, M]
    probs = member_lp.exp()
    rows = []
    for i in range(m):  # one [M, B, K] temporary at a time, not [M, M, B, K]
        rows.append((probs[i] * (member_lp[i] - member_lp)).sum(dim=-1).to(acc).sum(dim=-1))
    return disagree, torch.stack(rows)


def _finalize_basic(n: int, correct: Any, nll_sum: Any, brier_sum: Any, bin_correct: Any, bin_conf: Any) -> dict:
    """Scalars from host-side (python/numpy) sums for one model."""
    ece_val = float(np.abs(np.asarray(bin_correct, dtype=np.float64) - np.asarray(bin_conf, dtype=np.float64)).sum())
    return {
        "accuracy": float(correct) / n,
        "nll": float(nll_sum) / n,
        "ece": ece_val / n,
        "brier": float(brier_sum) / n,
    }


def _mean_offdiag(mat: np.ndarray) -> float:
    m = mat.shape[0]
    if m < 2:
        return 0.0
    return float((mat.sum() - np.trace(mat)) / (m * (m - 1)))


# ----------------------------------------------------------------------------------------------
# public: combination and one-shot metrics
# ----------------------------------------------------------------------------------------------


def combine_log_probs(logits: Tensor) -> Tensor:
    """Log of the mean member probability.

    ``logits`` ``[M, B, K]`` -> ``[B, K]`` ``logsumexp_m log_softmax(logits_m) - log M``, in the input
    dtype (float16/bfloat16 are upcast to float32). Raises ValueError on bad shapes or non-finite
    values (this check syncs with the host; the accumulator defers it instead).
    """
    _check_logits(logits)
    _check_finite_eager(logits, "logits")
    return _combine(_member_log_probs(logits))


def accuracy(log_probs: Tensor, targets: Tensor) -> float:
    """Fraction of examples whose argmax class equals the target. ``log_probs`` [B, K], ``targets`` [B]."""
    _check_probs_2d(log_probs, "log_probs")
    _check_targets_shape(targets, log_probs.shape[0], f"log_probs of shape {tuple(log_probs.shape)}")
    _check_target_range_eager(targets, log_probs.shape[1])
    return float((log_probs.argmax(dim=-1) == targets).to(torch.float64).mean())


def nll(log_probs: Tensor, targets: Tensor) -> float:
    """Mean negative log-likelihood in nats. ``log_probs`` [B, K] (log of normalised probs), ``targets`` [B]."""
    _check_probs_2d(log_probs, "log_probs")
    _check_targets_shape(targets, log_probs.shape[0], f"log_probs of shape {tuple(log_probs.shape)}")
    _check_target_range_eager(targets, log_probs.shape[1])
    _check_finite_eager(log_probs, "log_probs")
    return float(_nll_sum(log_probs.unsqueeze(0), targets, torch.float64)[0]) / log_probs.shape[0]


def reliability_bins(probs: Tensor, targets: Tensor, n_bins: int = DEFAULT_N_BINS) -> dict[str, list]:
    """Per-bin top-label calibration counts.

    ``probs`` [B, K], ``targets`` [B] -> ``{"bin_edges": n_bins+1 floats, "counts": n_bins ints,
    "confidence_sum": n_bins floats, "correct": n_bins ints}``; bin b holds confidences in
    (edge_b, edge_{b+1}].
    """
    _check_probs_2d(probs, "probs")
    _check_n_bins(n_bins)
    _check_targets_shape(targets, probs.shape[0], f"probs of shape {tuple(probs.shape)}")
    _check_target_range_eager(targets, probs.shape[1])
    _check_finite_eager(probs, "probs")
    s = _calibration_sums(probs.unsqueeze(0), targets, _bin_edges(n_bins, probs.device)[1:-1], _acc_dtype(probs.device))
    return {
        "bin_edges": _bin_edges(n_bins).tolist(),
        "counts": s["bin_count"][0].tolist(),
        "confidence_sum": s["bin_conf"][0].to(torch.float64).tolist(),
        "correct": s["bin_correct"][0].tolist(),
    }


def ece(probs: Tensor, targets: Tensor, n_bins: int = DEFAULT_N_BINS) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins. ``probs`` [B, K], ``targets`` [B]."""
    rel = reliability_bins(probs, targets, n_bins)
    n = probs.shape[0]
    return float(sum(abs(c - s) for c, s in zip(rel["correct"], rel["confidence_sum"]))) / n


def brier(probs: Tensor, targets: Tensor) -> float:
    """Mean over examples of ``sum_k (p_k - onehot_k)^2``. ``probs`` [B, K], ``targets`` [B]."""
    _check_probs_2d(probs, "probs")
    _check_targets_shape(targets, probs.shape[0], f"probs of shape {tuple(probs.shape)}")
    _check_target_range_eager(targets, probs.shape[1])
    _check_finite_eager(probs, "probs")
    s = _calibration_sums(probs.unsqueeze(0), targets, _bin_edges(1, probs.device)[1:-1], _acc_dtype(probs.device))
    return float(s["brier_sum"][0]) / probs.shape[0]


def disagreement(logits: Tensor) -> float:
    """Mean over member pairs i<j of the fraction of examples whose argmax differs; 0.0 when M=1.

    ``logits`` [M, B, K].
    """
    _check_logits(logits)
    _check_finite_eager(logits, "logits")
    m, b, _ = logits.shape
    pred = logits.argmax(dim=-1)
    counts = (pred.unsqueeze(1) != pred.unsqueeze(0)).sum(dim=-1).cpu().numpy().astype(np.float64)
    return _mean_offdiag(counts) / b if b else 0.0


def pairwise_kl(logits: Tensor) -> float:
    """Mean over ordered pairs i != j of the example-mean ``KL(p_i || p_j)`` in nats; 0.0 when M=1.

    ``logits`` [M, B, K].
    """
    _check_logits(logits)
    _check_finite_eager(logits, "logits")
    b = logits.shape[1]
    _, kl = _diversity_sums(_member_log_probs(logits), _acc_dtype(logits.device))
    return _mean_offdiag(kl.cpu().numpy().astype(np.float64)) / b if b else 0.0


# ----------------------------------------------------------------------------------------------
# public: streaming accumulator
# ----------------------------------------------------------------------------------------------


class MetricAccumulator:
    """Streaming ensemble metrics over evaluation batches.

    ``update(logits [M, B, K], targets [B])`` adds running sums on the logits' device without a host
    sync (non-finite logits and out-of-range targets are counted on the device and reported by
    :meth:`compute` as a ValueError). Shape mismatches raise immediately. :meth:`compute` returns
    plain Python numbers: the ensemble's ``accuracy``, ``nll`` (nats), ``ece``, ``brier``, ``n``,
    ``reliability``; ``members`` (one such dict of the four metrics per member), ``member_mean``,
    and ``diversity`` (``disagreement``, ``kl``); and each metric registered with a ``compute``
    function (:mod:`benchmark.evaluation.metric_specs`), for which the combined (and, when asked,
    member) log-probabilities of every batch are kept on the host.
    """

    def __init__(self, n_bins: int = DEFAULT_N_BINS, computed: list[MetricSpec] | None = None, keep: str | None = None) -> None:
        _check_n_bins(n_bins)
        if keep not in KEEP_CHOICES:
            raise ValueError(f"keep must be one of {list(KEEP_CHOICES)}, got {keep!r}")
        self.n_bins = n_bins
        self.computed = computed_metrics() if computed is None else list(computed)
        self.keep = keep
        self.reset()

    def reset(self) -> None:
        """Forget all batches."""
        self._m: int | None = None
        self._k: int | None = None
        self._n = 0
        self._sums: dict[str, Tensor] = {}
        self._inner_edges: Tensor | None = None
        self._kept: dict[str, list[Tensor]] = {"log_probs": [], "members": [], "targets": []}
        self._stored: dict[str, list[Tensor]] = {"log_probs": [], "members": [], "targets": [], "member_entropy": []}  # for predictions()

    @property
    def n(self) -> int:
        """Examples seen so far."""
        return self._n

    def _init_sums(self, m: int, device: torch.device) -> None:
        acc = _acc_dtype(device)
        r, nb = m + 1, self.n_bins
        self._inner_edges = _bin_edges(nb, device)[1:-1]
        i64 = dict(dtype=torch.int64, device=device)
        self._sums = {
            "correct": torch.zeros(r, **i64),
            "nll_sum": torch.zeros(r, dtype=acc, device=device),
            "brier_sum": torch.zeros(r, dtype=acc, device=device),
            "bin_count": torch.zeros(r, nb, **i64),
            "bin_conf": torch.zeros(r, nb, dtype=acc, device=device),
            "bin_correct": torch.zeros(r, nb, **i64),
            "disagree": torch.zeros(m, m, **i64),
            "kl_sum": torch.zeros(m, m, dtype=acc, device=device),
            "nonfinite": torch.zeros((), **i64),
            "bad_targets": torch.zeros((), **i64),
        }

    def update(self, logits: Tensor, targets: Tensor) -> None:
        """Add one batch: ``logits`` [M, B, K] member logits, ``targets`` [B] integer class ids."""
        _check_logits(logits)
        m, b, k = logits.shape
        _check_targets_shape(targets, b, f"logits of shape {tuple(logits.shape)}")
        if self._m is None:
            self._m, self._k = m, k
            self._init_sums(m, logits.device)
        elif (m, k) != (self._m, self._k):
            raise ValueError(
                f"logits shape {tuple(logits.shape)} does not match earlier batches with "
                f"M={self._m} members and K={self._k} classes"
            )
        if b == 0:
            return
        s = self._sums
        device = s["correct"].device
        logits = logits.to(device)
        targets = targets.to(device=device, dtype=torch.int64)

        # deferred guards: counted on the device, raised in compute()
        finite = torch.isfinite(logits)
        s["nonfinite"] += (~finite).sum()
        logits = torch.where(finite, logits, torch.zeros((), dtype=logits.dtype, device=device))
        in_range = (targets >= 0) & (targets < k)
        s["bad_targets"] += (~in_range).sum()
        targets = torch.where(in_range, targets, torch.zeros_like(targets))

        member_lp = _member_log_probs(logits)  # [M, B, K]
        self._add(_combine(member_lp), member_lp, targets)

    def update_log_probs(self, log_probs: Tensor, targets: Tensor, members: Tensor | None = None) -> None:
        """Add one batch of stored predictions (rescoring): the combined ``log_probs`` [B, K] and,
        when kept, the ``members``' log-probabilities [M, B, K], exactly as :meth:`update` derived
        them from logits (no renormalisation, so the same floats give the same sums). Without
        ``members`` only the combined prediction's metrics (and computed metrics that do not need
        members) are computed: ``members``, ``member_mean`` and ``diversity`` are left out."""
        _check_probs_2d(log_probs, "log_probs")
        b, k = log_probs.shape
        _check_targets_shape(targets, b, f"log_probs of shape {tuple(log_probs.shape)}")
        if members is not None:
            _check_logits(members, "members")
            if members.shape[1:] != log_probs.shape:
                raise ValueError(f"members of shape {tuple(members.shape)} do not match log_probs of shape {tuple(log_probs.shape)}")
        m = 0 if members is None else members.shape[0]
        if self._m is None:
            self._m, self._k = m, k
            self._init_sums(m, log_probs.device)
        elif (m, k) != (self._m, self._k):
            raise ValueError(f"a batch with M={m} members and K={k} classes does not match earlier batches (M={self._m}, K={self._k})")
        if b == 0:
            return
        s = self._sums
        device = s["correct"].device
        log_probs = log_probs.to(device)
        targets = targets.to(device=device, dtype=torch.int64)
        s["nonfinite"] += (~torch.isfinite(log_probs)).sum()
        in_range = (targets >= 0) & (targets < k)
        s["bad_targets"] += (~in_range).sum()
        targets = torch.where(in_range, targets, torch.zeros_like(targets))
        if members is None:
            members = log_probs.new_zeros((0, b, k))
        else:
            s["nonfinite"] += (~torch.isfinite(members)).sum()
        self._add(log_probs, members.to(device), targets)

    def _add(self, combined: Tensor, member_lp: Tensor, targets: Tensor) -> None:
        """The sums of one batch: ``combined`` [B, K] and ``member_lp`` [M, B, K] log-probabilities (M may be 0)."""
        s = self._sums
        acc = s["nll_sum"].dtype
        b, device = combined.shape[0], combined.device
        all_lp = torch.cat([combined.unsqueeze(0), member_lp])  # row 0 = ensemble
        cal = _calibration_sums(all_lp.exp(), targets, self._inner_edges, acc)
        for key, val in cal.items():
            s[key] += val
        s["nll_sum"] += _nll_sum(all_lp, targets, acc)
        if member_lp.shape[0]:
            disagree, kl = _diversity_sums(member_lp, acc)
            s["disagree"] += disagree
            s["kl_sum"] += kl
        if self.computed:  # predictions of the whole split, for the metrics computed from them
            self._kept["log_probs"].append(all_lp[0].detach().cpu())
            self._kept["targets"].append(targets.cpu())
            if any(spec.needs_members for spec in self.computed) and member_lp.shape[0]:
                self._kept["members"].append(member_lp.detach().cpu())
        if self.keep is not None:  # kept on the device; moved to the host once, by predictions()
            self._stored["log_probs"].append(combined.detach())  # not a view of all_lp: that would keep every member's rows alive
            self._stored["targets"].append(targets.detach())
            if self.keep == "members":
                self._stored["members"].append(member_lp.detach())
            if member_lp.shape[0]:  # the members' mean entropy: mutual information = H(combined) - this, also without members
                plogp = torch.where(member_lp > -math.inf, member_lp.exp() * member_lp, torch.zeros((), dtype=member_lp.dtype, device=device))
                self._stored["member_entropy"].append(-plogp.sum(dim=-1).mean(dim=0).detach())
        self._n += b

    def predictions(self) -> dict[str, np.ndarray]:
        """The kept predictions of every batch so far (``keep`` set): ``log_probs`` [N, K] float32,
        ``targets`` [N] int64, ``member_entropy`` [N] (the mean over members of each member's
        predictive entropy, nats) and, with ``keep="members"``, ``members`` [M, N, K] float32."""
        if self.keep is None:
            raise ValueError("MetricAccumulator(keep=None) keeps no predictions; pass keep='combined' or keep='members'")
        if not self._stored["log_probs"]:
            raise ValueError("MetricAccumulator.predictions() called with n=0 examples; call update() first")
        out = {"log_probs": torch.cat(self._stored["log_probs"]).float().cpu().numpy(),
               "targets": torch.cat(self._stored["targets"]).cpu().numpy().astype(np.int64)}
        if self.keep == "members":
            out["members"] = torch.cat(self._stored["members"], dim=1).float().cpu().numpy()
        if self._stored["member_entropy"]:
            out["member_entropy"] = torch.cat(self._stored["member_entropy"]).float().cpu().numpy()
        return out

    def compute(self) -> dict[str, Any]:
        """All metrics as plain Python floats/ints/lists (one host transfer)."""
        if self._n == 0:
            raise ValueError("MetricAccumulator.compute() called with n=0 examples; call update() first")
        h = {key: val.cpu().numpy() for key, val in self._sums.items()}
        if int(h["nonfinite"]):
            raise ValueError(f"logits had {int(h['nonfinite'])} non-finite value(s) across {self._n} examples")
        if int(h["bad_targets"]):
            raise ValueError(f"targets had {int(h['bad_targets'])} value(s) outside [0, {self._k - 1}]")
        n = self._n
        rows = [
            _finalize_basic(
                n, h["correct"][r], h["nll_sum"][r], h["brier_sum"][r], h["bin_correct"][r], h["bin_conf"][r]
            )
            for r in range(self._m + 1)
        ]
        ens, members = rows[0], rows[1:]
        if self.computed:
            log_probs, targets = torch.cat(self._kept["log_probs"]), torch.cat(self._kept["targets"])
            member_lp = torch.cat(self._kept["members"], dim=1) if self._kept["members"] else None
            for spec in self.computed:
                if spec.needs_members and member_lp is None:  # rescored from predictions kept without members
                    continue
                args = (log_probs, targets, member_lp) if spec.needs_members else (log_probs, targets)
                ens[spec.key] = float(spec.compute(*args))  # type: ignore[misc]
        out = {
            **ens,
            "n": n,
            "reliability": {
                "bin_edges": _bin_edges(self.n_bins).tolist(),
                "counts": [int(c) for c in h["bin_count"][0]],
                "confidence_sum": [float(c) for c in h["bin_conf"][0]],
                "correct": [int(c) for c in h["bin_correct"][0]],
            },
            "members": members,
            "member_mean": {key: float(np.mean([mem[key] for mem in members])) if members else math.nan for key in _BASIC},
            "diversity": {
                "disagreement": _mean_offdiag(h["disagree"].astype(np.float64)) / n,
                "kl": _mean_offdiag(h["kl_sum"].astype(np.float64)) / n,
            },
        }
        if not members:  # rescored from combined predictions alone: no member metrics
            for key in ("members", "member_mean", "diversity"):
                del out[key]
        return out

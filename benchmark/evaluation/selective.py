"""Selective prediction (classification with a reject option) over numpy arrays; no torch.

A selective classifier predicts ``argmax_k p_k`` and abstains when its confidence is below a
threshold ``tau``. Confidence defaults to the maximum class probability (ranked by the maximum
log-probability, which orders examples identically without rounding distinct values together);
risk is the 0/1 error.

Risk-coverage curve, ties as one group. Let ``tau_1 > ... > tau_G`` be the distinct confidence
values. Accepting every example with confidence ``>= tau_j`` accepts ``n_j`` examples of which
``e_j`` are errors; tied examples are thus accepted or rejected together (one point per group,
never a split group). At point ``j``: coverage ``c_j = n_j / N``, selective risk ``r_j = e_j / n_j``,
generalized risk ``g_j = e_j / N`` (errors accepted, over all examples); ``c_0 = g_0 = 0``.

* ``aurc = sum_j (c_j - c_{j-1}) r_j``: the risk of a group is the one incurred when the whole
  group is accepted (a right-endpoint step integral). Equivalently the mean over examples ``i`` of
  the selective risk at threshold ``tau = conf_i``; without ties it is the usual empirical AURC
  ``(1/N) sum_{i=1..N} (errors among the i most confident) / i`` (Geifman et al., "Bias-Reduced
  Uncertainty Estimation for Deep Neural Classifiers", ICLR 2019). Lower is better; range [0, 1].
* ``augrc = sum_j (c_j - c_{j-1}) (g_{j-1} + g_j) / 2``: trapezoidal area under the generalized
  risk-coverage curve from (0, 0) (Traub et al., "Overcoming Common Flaws in the Evaluation of
  Selective Classification Systems", NeurIPS 2024). Within a tied group the expected generalized
  risk under a random order is linear in coverage, so the trapezoid is exact for random
  tie-breaking; equivalently ``augrc = (1/N^2) sum_{errors f} (#{i: conf_i < conf_f} +
  #{i: conf_i = conf_f} / 2)``: the error rate times the probability that a random example is
  less confident than a random error (ties one half). Lower is better; range [0, 1/2].
* ``risk_at_coverage(c)``: ``r_j`` at the first point with ``c_j >= c`` (the most confident
  groups that together cover at least a fraction ``c``; default 0.8).
* ``coverage_at_risk(r)``: the largest ``c_j`` with ``r_j <= r`` (default 0.05); 0.0 when no
  threshold reaches that risk.
"""

from __future__ import annotations

import numpy as np

from .calibration import check_log_probs, check_targets

__all__ = ["risk_coverage_curve", "aurc", "augrc", "risk_at_coverage", "coverage_at_risk", "selective_metrics"]


def _inputs(confidence, correct) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct)
    if conf.ndim != 1 or conf.size == 0:
        raise ValueError(f"confidence must be a non-empty 1-D array, got shape {conf.shape}")
    if ok.shape != conf.shape:
        raise ValueError(f"correct must have the shape of confidence {conf.shape}, got {ok.shape}")
    if ok.dtype != bool:
        if not np.isin(ok, (0, 1)).all():
            raise ValueError("correct must be boolean (or 0/1)")
        ok = ok.astype(bool)
    bad = int((~np.isfinite(conf)).sum())
    if bad:
        raise ValueError(f"confidence has {bad} non-finite value(s) out of {conf.size}")
    return conf, ok


def risk_coverage_curve(confidence, correct) -> dict[str, np.ndarray]:
    """One point per distinct confidence, most confident first: ``threshold`` ``[G]``,
    ``coverage`` ``c_j``, ``risk`` ``r_j``, ``generalized_risk`` ``g_j``, ``accepted`` ``n_j`` and
    ``errors`` ``e_j`` (module docstring). ``correct`` is boolean ``[N]``."""
    conf, ok = _inputs(confidence, correct)
    order = np.argsort(-conf, kind="mergesort")
    conf_sorted, err = conf[order], ~ok[order]
    last = np.r_[np.flatnonzero(np.diff(conf_sorted)), conf.size - 1]  # last index of each group
    accepted = last + 1
    errors = np.cumsum(err)[last]
    n = conf.size
    return {
        "threshold": conf_sorted[last], "coverage": accepted / n, "risk": errors / accepted,
        "generalized_risk": errors / n, "accepted": accepted, "errors": errors,
    }


def aurc(confidence, correct) -> float:
    """Area under the risk-coverage curve, ties as one group (right-endpoint steps; module docstring)."""
    c = risk_coverage_curve(confidence, correct)
    return float(np.sum(np.diff(np.r_[0.0, c["coverage"]]) * c["risk"]))


def augrc(confidence, correct) -> float:
    """Area under the generalized risk-coverage curve (trapezoid from (0, 0); module docstring)."""
    c = risk_coverage_curve(confidence, correct)
    g = np.r_[0.0, c["generalized_risk"]]
    return float(np.sum(np.diff(np.r_[0.0, c["coverage"]]) * (g[1:] + g[:-1]) / 2.0))


def risk_at_coverage(confidence, correct, coverage: float = 0.8) -> float:
    """Selective risk of the most confident groups that together cover at least ``coverage``."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage!r}")
    c = risk_coverage_curve(confidence, correct)
    n = c["accepted"][-1]
    j = int(np.flatnonzero(c["accepted"] >= coverage * n - 1e-9 * n)[0])
    return float(c["risk"][j])


def coverage_at_risk(confidence, correct, risk: float = 0.05) -> float:
    """Largest coverage whose selective risk is at most ``risk`` (0.0 when none is)."""
    if not 0 <= risk <= 1:
        raise ValueError(f"risk must be in [0, 1], got {risk!r}")
    c = risk_coverage_curve(confidence, correct)
    ok = c["errors"] <= risk * c["accepted"] + 1e-12 * c["accepted"]
    return float(c["coverage"][ok].max()) if ok.any() else 0.0


def selective_metrics(log_probs, targets, confidence=None, *, coverage: float = 0.8, risk: float = 0.05) -> dict[str, float]:
    """``aurc``, ``augrc``, ``risk_at_80_coverage`` and ``coverage_at_5_risk`` (names follow the
    defaults ``coverage=0.8``, ``risk=0.05``; other values rename the keys, e.g. ``risk_at_90_coverage``)
    and ``risk`` (the full-coverage error) of the prediction ``log_probs`` ``[N, K]`` against
    ``targets`` ``[N]``. ``confidence`` ``[N]`` (optional) replaces the maximum probability as the
    ranking score (higher = more confident)."""
    lp = check_log_probs(log_probs)
    y = check_targets(targets, lp.shape[0], lp.shape[1])
    correct = lp.argmax(axis=1) == y
    conf = lp.max(axis=1) if confidence is None else confidence
    c_name, r_name = f"{100 * coverage:g}", f"{100 * risk:g}"
    return {
        "aurc": aurc(conf, correct),
        "augrc": augrc(conf, correct),
        f"risk_at_{c_name}_coverage": risk_at_coverage(conf, correct, coverage),
        f"coverage_at_{r_name}_risk": coverage_at_risk(conf, correct, risk),
        "risk": float(1.0 - correct.mean()),
    }

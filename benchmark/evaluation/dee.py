"""Deep-Ensemble Equivalent (DEE; Ashukha et al., "Pitfalls of in-domain uncertainty estimation and
ensembling in deep learning", ICLR 2020, section 4) over numpy arrays; no torch.

The DEE of a method is the number of independently trained members a deep ensemble needs to reach
the method's calibrated test NLL. Procedure:

1. :func:`dee_curve`: from a deep ensemble's member log-probabilities ``[M, N, K]`` on the test set
   (and on a validation split when there is one), for each size ``m = 1..M`` take member subsets of
   size ``m`` - all ``C(M, m)`` of them when ``C(M, m) <= max_subsets`` (default 20), otherwise
   ``max_subsets`` distinct subsets drawn uniformly at random (``numpy.random.default_rng(seed)``)
   - combine each subset by averaging probabilities, temperature-scale it
   (:func:`benchmark.evaluation.calibration.temperature_scale`: validation temperature, or test-time
   cross-validation with the given ``n_splits`` and ``seed``, hence the same halves for every
   subset) and average the calibrated NLLs over the subsets: ``nll[m]``.
2. :func:`deep_ensemble_equivalent`: for the method's calibrated NLL ``L`` (computed by the same
   procedure: :func:`dee` does that), with sizes ``m = 1..M``:
   ``L > nll[1]`` (worse than one member) -> ``"< 1"``; otherwise the first ``m`` with
   ``nll[m] <= L`` gives ``DEE = (m - 1) + (nll[m-1] - L) / (nll[m-1] - nll[m])`` (linear
   interpolation between integer sizes; ``DEE = 1`` when ``L = nll[1]``); no such ``m``
   (better than the full ensemble) -> ``"> M"``. A curve that is not monotone uses its first
   crossing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from .calibration import DEFAULT_N_BINS, check_log_probs, check_targets, logsumexp, temperature_scale

__all__ = ["DEECurve", "DEE", "dee_curve", "deep_ensemble_equivalent", "dee"]


@dataclass(frozen=True)
class DEECurve:
    """Mean calibrated NLL of deep-ensemble subsets by size: ``sizes`` ``(1, ..., M)``, ``nll`` (the
    mean over subsets), ``nll_std`` (their standard deviation), ``n_subsets`` (how many subsets
    each size averaged) and ``exhaustive`` (whether those were all ``C(M, m)`` subsets); the
    calibration ``procedure`` (``"validation"``/``"test-cv"``), ``n_splits``, ``seed``,
    ``max_subsets``."""

    sizes: tuple[int, ...]
    nll: tuple[float, ...]
    nll_std: tuple[float, ...]
    n_subsets: tuple[int, ...]
    exhaustive: tuple[bool, ...]
    procedure: str
    n_splits: int
    seed: int
    max_subsets: int

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class DEE:
    """A method's DEE: ``value`` (interpolated number of members, ``None`` outside ``[1, M]``),
    ``bound`` (``"< 1"``, ``"> M"`` with M the number, or ``None``), ``display`` (the value to 2
    decimals, or the bound), ``method_nll`` (its calibrated NLL) and the ``curve``."""

    value: float | None
    bound: str | None
    display: str
    method_nll: float
    curve: DEECurve

    def as_dict(self) -> dict:
        return {"value": self.value, "bound": self.bound, "display": self.display, "method_nll": self.method_nll,
                "curve": self.curve.as_dict()}


def _subsets(m_total: int, size: int, max_subsets: int, rng: np.random.Generator) -> tuple[list[tuple[int, ...]], bool]:
    if math.comb(m_total, size) <= max_subsets:
        return list(combinations(range(m_total), size)), True
    chosen: set[tuple[int, ...]] = set()
    out = []
    while len(out) < max_subsets:  # C(M, m) > max_subsets: distinct draws always exist
        s = tuple(sorted(rng.choice(m_total, size, replace=False).tolist()))
        if s not in chosen:
            chosen.add(s)
            out.append(s)
    return out, False


def _combine(lp: np.ndarray, subset: tuple[int, ...]) -> np.ndarray:
    return logsumexp(lp[list(subset)], axis=0) - math.log(len(subset))


def dee_curve(member_log_probs, targets, val_member_log_probs=None, val_targets=None, *, max_subsets: int = 20,
              n_splits: int = 5, seed: int = 0, n_bins: int = DEFAULT_N_BINS) -> DEECurve:
    """Calibrated-NLL curve of a deep ensemble (module docstring, step 1).

    ``member_log_probs`` ``[M, N, K]``, ``targets`` ``[N]``; ``val_member_log_probs``
    ``[M, N_val, K]`` (the same members, in the same order) and ``val_targets`` when there is a
    validation split. Costs ``sum_m min(C(M, m), max_subsets)`` temperature fits (times
    ``2 * n_splits`` in test-cv).
    """
    lp = check_log_probs(member_log_probs, "member_log_probs", ndim=3)
    y = check_targets(targets, lp.shape[1], lp.shape[2])
    if (val_member_log_probs is None) != (val_targets is None):
        raise ValueError("give both val_member_log_probs and val_targets, or neither")
    vlp = vy = None
    if val_member_log_probs is not None:
        vlp = check_log_probs(val_member_log_probs, "val_member_log_probs", ndim=3)
        if vlp.shape[0] != lp.shape[0] or vlp.shape[2] != lp.shape[2]:
            raise ValueError(f"val_member_log_probs {vlp.shape} must have the members and classes of member_log_probs {lp.shape}")
        vy = check_targets(val_targets, vlp.shape[1], vlp.shape[2], "val_targets")
    if not isinstance(max_subsets, int) or max_subsets < 1:
        raise ValueError(f"max_subsets must be a positive int, got {max_subsets!r}")
    rng = np.random.default_rng(seed)
    m_total = lp.shape[0]
    nll, std, counts, exhaustive, procedure = [], [], [], [], ""
    for size in range(1, m_total + 1):
        subsets, full = _subsets(m_total, size, max_subsets, rng)
        vals = []
        for s in subsets:
            res = temperature_scale(_combine(lp, s), y, None if vlp is None else _combine(vlp, s), vy,
                                    n_splits=n_splits, seed=seed, n_bins=n_bins)
            vals.append(res.nll)
            procedure = res.procedure
        nll.append(float(np.mean(vals)))
        std.append(float(np.std(vals)))
        counts.append(len(subsets))
        exhaustive.append(full)
    return DEECurve(tuple(range(1, m_total + 1)), tuple(nll), tuple(std), tuple(counts), tuple(exhaustive), procedure,
                    0 if procedure == "validation" else int(n_splits), int(seed), int(max_subsets))


def deep_ensemble_equivalent(method_nll: float, curve: DEECurve) -> DEE:
    """The DEE of a method whose calibrated NLL is ``method_nll`` (module docstring, step 2)."""
    if not (isinstance(method_nll, (int, float, np.floating)) and math.isfinite(method_nll)):
        raise ValueError(f"method_nll must be a finite number, got {method_nll!r}")
    c = curve.nll
    m_total = len(c)
    if method_nll > c[0]:
        return DEE(None, "< 1", "< 1", float(method_nll), curve)
    for i in range(m_total):
        if c[i] <= method_nll:
            value = 1.0 if i == 0 else i + (c[i - 1] - method_nll) / (c[i - 1] - c[i])
            return DEE(float(value), None, f"{value:.2f}", float(method_nll), curve)
    bound = f"> {m_total}"
    return DEE(None, bound, bound, float(method_nll), curve)


def dee(method_log_probs, targets, curve: DEECurve, val_log_probs=None, val_targets=None) -> DEE:
    """Calibrates the method's combined prediction ``method_log_probs`` ``[N, K]`` exactly as the
    curve's subsets were (same procedure; in test-cv the same ``n_splits`` and ``seed``, hence the
    same halves) and returns its :func:`deep_ensemble_equivalent`. The validation prediction is
    required when, and only when, the curve was calibrated on a validation split."""
    if (val_log_probs is not None) != (curve.procedure == "validation"):
        raise ValueError(
            f"the curve was calibrated by {curve.procedure!r}: "
            + ("give the method's validation prediction" if curve.procedure == "validation" else "give no validation prediction")
        )
    res = temperature_scale(method_log_probs, targets, val_log_probs, val_targets,
                            n_splits=max(curve.n_splits, 1), seed=curve.seed)
    return deep_ensemble_equivalent(res.nll, curve)

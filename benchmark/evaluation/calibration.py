"""Temperature scaling and the basic calibration metrics over numpy arrays (no torch: the torch-free
leaderboard calls these on stored predictions).

Inputs are log-probabilities: a model's combined prediction ``log_probs`` ``[N, K]`` (for an
ensemble, the log of the mean member probability) and integer ``targets`` ``[N]``. The conventions
are those of :mod:`benchmark.evaluation.metrics`:

* NLL in nats per example; Brier ``sum_k (p_k - onehot_k)^2`` averaged over examples (range [0, 2]);
* ECE top-label with ``n_bins`` (default 15) equal-width bins over [0, 1], bin ``b`` holding the
  confidences in ``(b/n_bins, (b+1)/n_bins]`` (a confidence of exactly 0 in bin 0), confidence the
  maximum class probability, ``ECE = sum_b |correct_b - confidence_sum_b| / N``.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017) as used by
Ashukha et al., "Pitfalls of in-domain uncertainty estimation and ensembling in deep learning",
ICLR 2020 (section 3.5): the combined log-probabilities are treated as logits ``z``, and the
calibrated prediction is ``softmax(z / T)`` with the single temperature ``T`` minimising the NLL
of :func:`fit_temperature`. ``T`` is fitted on a validation split when one is given; otherwise by
test-time cross-validation (:func:`temperature_scale`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "DEFAULT_N_BINS",
    "T_BOUNDS",
    "TemperatureScaling",
    "check_log_probs",
    "check_targets",
    "logsumexp",
    "log_softmax",
    "combine_members",
    "nll_per_example",
    "brier_per_example",
    "ece",
    "ece_bins",
    "calibration_metrics",
    "temperature_nll",
    "fit_temperature",
    "apply_temperature",
    "temperature_scale",
]

DEFAULT_N_BINS = 15
#: Search interval of the fitted temperature (inclusive); the search runs over log T.
T_BOUNDS = (1e-2, 1e2)
_NORM_TOL = 5e-3  # float16 sidecars: |logsumexp| up to ~5e-4; logits are off by far more


# ----------------------------------------------------------------------------------------------
# validation and basic pieces
# ----------------------------------------------------------------------------------------------


def logsumexp(x: np.ndarray, axis: int = -1, keepdims: bool = False) -> np.ndarray:
    """``log(sum(exp(x)))`` along ``axis``, shifted by the maximum (plain numpy: several times faster
    than ``scipy.special.logsumexp``, which the temperature search calls dozens of times per fit)."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=axis)


def check_log_probs(x, name: str = "log_probs", ndim: int = 2, normalised: bool = True) -> np.ndarray:
    """``x`` as a float64 array of shape ``[N, K]`` (``ndim=2``) or ``[M, N, K]`` (``ndim=3``).

    Raises ValueError naming ``name`` on a wrong shape, an empty axis, non-finite values or (when
    ``normalised``) rows whose probabilities do not sum to 1 within 5e-3 in log space (float16-stored
    log-probabilities are within about 5e-4).
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real array, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    shape = "[N, K]" if ndim == 2 else "[M, N, K]"
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise ValueError(f"{name} must be non-empty on every axis, got shape {arr.shape}")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite value(s) out of {arr.size}")
    if normalised:
        dev = np.abs(logsumexp(arr, axis=-1))
        if dev.max() > _NORM_TOL:
            raise ValueError(
                f"{name} must be log-probabilities (logsumexp over classes = 0); the worst row is off by "
                f"{dev.max():.3g} (pass log_softmax(logits))"
            )
    return arr


def check_targets(targets, n: int, k: int, name: str = "targets") -> np.ndarray:
    """``targets`` as an int64 array of shape ``[n]`` with values in ``[0, k)``; ValueError otherwise."""
    t = np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise ValueError(f"{name} must be an integer array, got dtype {t.dtype}")
    if t.ndim != 1 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}], got shape {t.shape}")
    bad = int(((t < 0) | (t >= k)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} value(s) outside [0, {k - 1}]")
    return t.astype(np.int64, copy=False)


def _check_n_bins(n_bins: int) -> None:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive int, got {n_bins!r}")


def log_softmax(z: np.ndarray, axis: int = -1) -> np.ndarray:
    """``z - logsumexp(z)`` along ``axis`` (float64)."""
    z = np.asarray(z, dtype=np.float64)
    return z - logsumexp(z, axis=axis, keepdims=True)


def combine_members(member_log_probs) -> np.ndarray:
    """``[M, N, K]`` member log-probabilities -> ``[N, K]`` log of the mean member probability
    (``logsumexp_m - log M``: members are combined by averaging probabilities, as in
    :mod:`benchmark.evaluation.metrics`)."""
    lp = check_log_probs(member_log_probs, "member_log_probs", ndim=3, normalised=False)
    return logsumexp(lp, axis=0) - math.log(lp.shape[0])


def nll_per_example(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[N]`` negative log-likelihood of the target in nats (no validation; see :func:`calibration_metrics`)."""
    return -np.take_along_axis(log_probs, targets[:, None], axis=1)[:, 0]


def brier_per_example(log_probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """``[N]`` ``sum_k (p_k - onehot_k)^2`` with ``p = exp(log_probs)``."""
    p = np.exp(log_probs)
    p_y = np.take_along_axis(p, targets[:, None], axis=1)[:, 0]
    return (p * p).sum(axis=1) - 2.0 * p_y + 1.0


def ece_bins(log_probs: np.ndarray, targets: np.ndarray, n_bins: int = DEFAULT_N_BINS):
    """Per-example top-label binning: ``(bin [N] int64, confidence [N] float64, correct [N] bool)``.

    Bin ``b`` holds confidences in ``(b/n_bins, (b+1)/n_bins]``, 0 in bin 0 (as ``torch.bucketize``
    with ``right=False`` in :mod:`benchmark.evaluation.metrics`); confidences are compared with the
    exactly rounded float64 edges ``i / n_bins``.
    """
    _check_n_bins(n_bins)
    conf = np.exp(log_probs.max(axis=1))
    pred = log_probs.argmax(axis=1)
    inner = (np.arange(n_bins + 1, dtype=np.float64) / n_bins)[1:-1]
    return np.searchsorted(inner, conf, side="left"), conf, pred == targets


def ece(log_probs, targets, n_bins: int = DEFAULT_N_BINS, weights: np.ndarray | None = None) -> float:
    """Top-label ECE (module conventions) of ``log_probs`` ``[N, K]``.

    ``weights`` ``[N]`` (optional, non-negative; e.g. bootstrap counts) weight each example:
    ``ECE = sum_b |sum_{i in b} w_i (correct_i - conf_i)| / sum_i w_i``.
    """
    lp = check_log_probs(log_probs)
    y = check_targets(targets, lp.shape[0], lp.shape[1])
    b, conf, hit = ece_bins(lp, y, n_bins)
    w = np.ones(lp.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (lp.shape[0],) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be non-negative of shape [{lp.shape[0]}] with a positive sum")
    gap = np.bincount(b, weights=w * (hit - conf), minlength=n_bins)
    return float(np.abs(gap).sum() / w.sum())


def calibration_metrics(log_probs, targets, n_bins: int = DEFAULT_N_BINS) -> dict[str, float]:
    """``accuracy``, ``nll`` (nats), ``ece`` and ``brier`` of ``log_probs`` ``[N, K]`` (module conventions)."""
    lp = check_log_probs(log_probs)
    y = check_targets(targets, lp.shape[0], lp.shape[1])
    return {
        "accuracy": float((lp.argmax(axis=1) == y).mean()),
        "nll": float(nll_per_example(lp, y).mean()),
        "ece": ece(lp, y, n_bins),
        "brier": float(brier_per_example(lp, y).mean()),
    }


# ----------------------------------------------------------------------------------------------
# temperature
# ----------------------------------------------------------------------------------------------


def temperature_nll(z: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    """Mean NLL of ``softmax(z / T)``: ``mean_i [logsumexp_k(z_ik / T) - z_{i,y_i} / T]``."""
    s = z / temperature
    return float((logsumexp(s, axis=1) - np.take_along_axis(s, targets[:, None], axis=1)[:, 0]).mean())


def apply_temperature(log_probs, temperature: float) -> np.ndarray:
    """``log_softmax(log_probs / T)``: the calibrated log-probabilities ``[N, K]``."""
    if not (isinstance(temperature, (int, float, np.floating)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return log_softmax(np.asarray(log_probs, dtype=np.float64) / float(temperature))


def fit_temperature(log_probs, targets, bounds: tuple[float, float] = T_BOUNDS, rtol: float = 1e-9) -> float:
    """The temperature ``T`` in ``bounds`` minimising the mean NLL of ``softmax(log_probs / T)``.

    With ``beta = 1/T`` and rows shifted to a maximum of 0, ``NLL(beta) = mean_i [log sum_k
    exp(beta z_ik) - beta z_iy]`` is convex in ``beta``: its derivative ``g(beta) = mean_i
    (E_p[z_i] - z_iy)`` is non-decreasing (second derivative ``mean_i Var_p[z_i] >= 0``). The
    minimum is the root of ``g`` in ``[1/high, 1/low]``, found by safeguarded Newton iteration: a
    bracket ``g(a) < 0 < g(b)`` is kept, a Newton step leaving it is replaced by the geometric
    midpoint, until the step is below ``rtol * beta`` (typically under 10 passes over the data).
    When ``g`` has one sign over the whole interval the minimum is on a bound and the bound is
    returned (e.g. a perfectly separated set, whose NLL keeps falling as ``T -> 0``, returns
    ``low``). Predictions that are constant across classes in every row do not depend on ``T``:
    1.0 is returned.
    """
    z = check_log_probs(log_probs, normalised=False)
    y = check_targets(targets, z.shape[0], z.shape[1])
    lo_t, hi_t = bounds
    if not (0 < lo_t < hi_t < math.inf):
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds!r}")
    if float((z.max(axis=1) - z.min(axis=1)).max()) == 0.0:
        return 1.0
    z = z - z.max(axis=1, keepdims=True)  # same softmax; every row's maximum is 0, so no overflow below
    mean_zy = float(np.take_along_axis(z, y[:, None], axis=1).mean())

    def grad_hess(beta: float) -> tuple[float, float]:
        e = np.exp(z * beta)
        inv = 1.0 / e.sum(axis=1)
        e *= z
        ez = e.sum(axis=1) * inv
        e *= z
        ez2 = e.sum(axis=1) * inv
        return float(ez.mean()) - mean_zy, float(np.maximum(ez2 - ez * ez, 0.0).mean())

    a, b = 1.0 / hi_t, 1.0 / lo_t
    if grad_hess(a)[0] >= 0:  # NLL increasing in beta throughout: largest T
        return float(hi_t)
    if grad_hess(b)[0] <= 0:  # decreasing throughout: smallest T
        return float(lo_t)
    beta = 1.0 if a < 1.0 < b else math.sqrt(a * b)
    for _ in range(200):
        g, h = grad_hess(beta)
        if g == 0.0:
            break
        if g < 0:
            a = beta
        else:
            b = beta
        step = beta - g / h if h > 0 else math.nan
        new = step if a < step < b else math.sqrt(a * b)
        done = abs(new - beta) <= rtol * beta or b - a <= rtol * beta
        beta = new
        if done:
            break
    return float(1.0 / beta)


@dataclass(frozen=True)
class TemperatureScaling:
    """Calibrated metrics of one prediction after temperature scaling (:func:`temperature_scale`).

    ``procedure``: ``"validation"`` (one ``T`` fitted on the validation split) or ``"test-cv"``
    (test-time cross-validation: ``2 * n_splits`` temperatures). ``temperature``: the validation
    ``T``, or the geometric mean of the cross-validated ones (for display; the metrics use each
    fold's own). ``nll``/``ece``/``brier``: the calibrated metrics (``accuracy`` is unchanged by a
    temperature). ``nll_per_example``/``brier_per_example`` ``[N]``: each example's calibrated loss
    (in test-cv, averaged over the splits), whose means are ``nll``/``brier`` (the paired bootstrap
    resamples these). ``at_bound``: how many fitted temperatures hit ``T_BOUNDS``.
    """

    procedure: str
    temperature: float
    temperatures: tuple[float, ...]
    n_splits: int
    seed: int | None
    accuracy: float
    nll: float
    ece: float
    brier: float
    n_bins: int
    at_bound: int
    nll_per_example: np.ndarray = field(repr=False)
    brier_per_example: np.ndarray = field(repr=False)

    def as_dict(self) -> dict:
        """JSON-ready summary (no per-example arrays)."""
        return {
            "procedure": self.procedure, "temperature": self.temperature, "temperatures": list(self.temperatures),
            "n_splits": self.n_splits, "seed": self.seed, "accuracy": self.accuracy, "nll": self.nll,
            "ece": self.ece, "brier": self.brier, "n_bins": self.n_bins, "at_bound": self.at_bound,
        }


def _at_bound(t: float, bounds: tuple[float, float]) -> bool:
    return abs(math.log(t) - math.log(bounds[0])) < 1e-4 or abs(math.log(t) - math.log(bounds[1])) < 1e-4


def temperature_scale(log_probs, targets, val_log_probs=None, val_targets=None, *, n_splits: int = 5, seed: int = 0,
                      n_bins: int = DEFAULT_N_BINS, bounds: tuple[float, float] = T_BOUNDS) -> TemperatureScaling:
    """Calibrated NLL, ECE and Brier of ``log_probs`` ``[N, K]`` after temperature scaling.

    * With ``val_log_probs``/``val_targets`` (the same model's prediction on a validation split):
      ``T = fit_temperature(val)``; the metrics are those of ``log_softmax(log_probs / T)`` on the
      test set. ``procedure = "validation"``.
    * Without: test-time cross-validation (Ashukha et al., ICLR 2020): ``n_splits`` random splits
      of the test set into two halves (``numpy.random.default_rng(seed).permutation``; the first
      ``floor(N/2)`` examples of the permutation form half A), ``T_A`` fitted on A scores B and
      ``T_B`` fitted on B scores A, so that every example gets an out-of-fold calibrated
      prediction; each split's NLL, Brier and ECE are computed over all N out-of-fold predictions
      and the ``n_splits`` values averaged (NLL and Brier: also per example). Needs N >= 2.
      ``procedure = "test-cv"``.

    The same ``seed`` gives the same splits for every model with the same N, so models are
    calibrated on identical halves.
    """
    lp = check_log_probs(log_probs)
    y = check_targets(targets, lp.shape[0], lp.shape[1])
    _check_n_bins(n_bins)
    n = lp.shape[0]
    if (val_log_probs is None) != (val_targets is None):
        raise ValueError("give both val_log_probs and val_targets, or neither")
    if val_log_probs is not None:
        vlp = check_log_probs(val_log_probs, "val_log_probs")
        if vlp.shape[1] != lp.shape[1]:
            raise ValueError(f"val_log_probs has {vlp.shape[1]} classes, log_probs {lp.shape[1]}")
        vy = check_targets(val_targets, vlp.shape[0], vlp.shape[1], "val_targets")
        t = fit_temperature(vlp, vy, bounds)
        cal = apply_temperature(lp, t)
        nll_i, brier_i = nll_per_example(cal, y), brier_per_example(cal, y)
        return TemperatureScaling(
            "validation", t, (t,), 0, None, float((lp.argmax(1) == y).mean()), float(nll_i.mean()), ece(cal, y, n_bins),
            float(brier_i.mean()), n_bins, int(_at_bound(t, bounds)), nll_i, brier_i,
        )
    if not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise ValueError(f"n_splits must be a positive int, got {n_splits!r}")
    if n < 2:
        raise ValueError(f"test-time cross-validation needs at least 2 examples, got {n}")
    rng = np.random.default_rng(seed)
    temps: list[float] = []
    nll_sum, brier_sum, eces = np.zeros(n), np.zeros(n), []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        halves = (perm[: n // 2], perm[n // 2:])
        cal = np.empty_like(lp)
        for fit_on, score_on in (halves, halves[::-1]):
            t = fit_temperature(lp[fit_on], y[fit_on], bounds)
            temps.append(t)
            cal[score_on] = apply_temperature(lp[score_on], t)
        nll_sum += nll_per_example(cal, y)
        brier_sum += brier_per_example(cal, y)
        eces.append(ece(cal, y, n_bins))
    nll_i, brier_i = nll_sum / n_splits, brier_sum / n_splits
    return TemperatureScaling(
        "test-cv", float(math.exp(np.mean(np.log(temps)))), tuple(temps), int(n_splits), int(seed),
        float((lp.argmax(1) == y).mean()), float(nll_i.mean()), float(np.mean(eces)), float(brier_i.mean()), n_bins,
        sum(_at_bound(t, bounds) for t in temps), nll_i, brier_i,
    )

"""Paired bootstrap of the difference between two models evaluated on the same test examples, over
numpy arrays; no torch.

For models A and B with combined log-probabilities ``[N, K]`` on the same test examples (same
order, same ``targets``), :func:`paired_bootstrap` estimates the difference ``B - A`` of

* ``accuracy``, ``nll`` (nats), ``brier`` - means of per-example values;
* ``calibrated_nll`` - mean of each example's calibrated NLL from
  :func:`benchmark.evaluation.calibration.temperature_scale` (temperature fitted on the validation
  prediction when given, else test-time cross-validation with ``n_splits`` and ``seed``);
* ``ece`` - top-label ECE (15 equal-width bins, conventions of :mod:`benchmark.evaluation.metrics`),
  recomputed on every resample from weighted bin sums;

with a percentile bootstrap interval (default 95%: the 2.5th and 97.5th percentiles of the
resampled differences, ``numpy.percentile``'s linear interpolation).

Resampling. Each resample draws N test examples with replacement (``numpy.random.default_rng(seed)``)
and uses the SAME drawn examples for A and B, so the interval reflects the test-set sampling of
the difference, with the per-example correlation of A and B accounted for. The resample's
statistic is computed from the drawn multiplicities ``w_i`` (``np.bincount`` of the draw):
``mean = sum_i w_i v_i / N`` for per-example values, ``ECE = sum_b |sum_{i in b} w_i
(correct_i - conf_i)| / N`` (each example keeps its bin), as matrix products of the ``[R, N]``
multiplicity matrix (built in chunks of resamples) with the per-example values; no Python loop
over resamples.

Several seeds (a list of per-seed pairs: the same two methods trained with seeds 0, 1, 2, seed s of
A paired with seed s of B): the point estimate is the mean over seeds of the per-seed difference
``d_s`` (each on its full test set). When every seed has the same targets (the same test set) the
drawn examples are shared by all seeds in a resample (the test examples are the common random
unit); otherwise each seed draws its own. How the seeds enter the interval (``over_seeds``):

* ``"t"`` (the default with 2 or more seeds): the interval covers training randomness and
  test-set sampling. The examples are resampled with the seeds held fixed (equal weights), which
  gives ``se_ex``, the standard error of the pooled difference over test sets; the seed-to-seed
  spread gives ``se_seed = std(d_s, ddof=1) / sqrt(S)``. The interval is
  ``mean ± t_q(df) * sqrt(se_ex^2 + se_seed^2)`` with Welch-Satterthwaite degrees of freedom
  ``df = (se_ex^2 + se_seed^2)^2 / (se_seed^4 / (S - 1))`` (the bootstrap part counts as known):
  ``df`` is ``S - 1`` when the seeds' disagreement dominates (t quantile 12.71 for 2 seeds, 4.30
  for 3) and grows towards the normal 1.96 when the seeds agree within test-set noise.
  Justification: with 2 or 3 seeds a bootstrap over seeds has only 3 or 10 distinct resamples and
  never reaches beyond the most extreme seed, so it cannot express how little 3 seeds say about
  training variance; the t quantile can, and is exact for normal seed-to-seed variation. The
  seed-specific part of the test-set noise is in both terms, so the interval errs on the wide
  side (measured by simulation below).
* ``"bootstrap"``: the hierarchical percentile bootstrap: each resample first draws S seeds with
  replacement (multiplicities ``c_s``), then examples, and its statistic is
  ``sum_s c_s d_s / S``. Kept for comparison; it under-covers with few seeds.
* ``"fixed"`` (the only choice with one seed): examples only, seeds held fixed: the interval
  covers test-set sampling for these trained models, not training randomness.

Coverage measured by simulation (``python -m benchmark.tools.seed_coverage``: A and B exchangeable,
so every true difference is 0; one shared test set of 400 examples, 3 classes; each trained
model's noise scale drawn per seed as ``0.5 * exp(sigma * Z)``; 300 resamples; 2,000 simulated
comparisons each; % of 95% intervals containing 0, lowest to highest over the five metrics):

====================================  ===========  ===========  ===========
3 seeds unless said                   ``"t"``      bootstrap    fixed
====================================  ===========  ===========  ===========
no training randomness (sigma 0)      98.2-99.0    99.2-99.6    93.5-96.6
some (sigma 0.3)                      94.7-96.2    86.6-96.3    50.4-82.1
dominant (sigma 1)                    95.1-98.3    74.3-84.0    13.2-39.8
2 seeds, sigma 0.3                    90.7-94.4    82.3-94.5    52.9-81.8
====================================  ===========  ===========  ===========

The t interval errs on the wide side without training randomness (the seed-specific test-set
noise is counted twice) and is slightly short with 2 seeds, whose spread is itself very uncertain
(Welch-Satterthwaite is liberal when the estimated variance is small by chance): 3 seeds are the
smallest number it serves well. (``tests/test_seed_intervals.py`` checks a smaller version.)

Calibrated NLL: temperatures are fitted once per model and seed (on the validation split, or by
test-time cross-validation on the full test set) and held FIXED across resamples; the resamples
reweight each example's calibrated loss. Justification: the point estimate then equals the
reported calibrated NLL exactly, and refitting would change the resampled differences only to
second order - at the fitted temperature the derivative of the NLL with respect to T is zero
(envelope theorem), so a temperature error of order ``N^-1/2`` changes the NLL by order ``1/N``,
below the ``N^-1/2`` width of the interval - at the cost of 2 x ``n_splits`` x R fits (measured:
two models, N = 2,000, K = 10, 300 resamples, temperatures fitted on the test set: standard error
of the difference 0.02421 fixed vs 0.02416 refitted per resample, largest per-resample change
2.7e-3). With a validation temperature, holding it fixed is exact: it does not depend on the test
examples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Sequence

import numpy as np

from .calibration import (
    DEFAULT_N_BINS,
    brier_per_example,
    check_log_probs,
    check_targets,
    ece_bins,
    nll_per_example,
    temperature_scale,
)

__all__ = ["METRICS", "HIGHER_IS_BETTER", "OVER_SEEDS", "Difference", "PairedBootstrap", "paired_bootstrap", "t_quantile"]

METRICS = ("accuracy", "nll", "calibrated_nll", "brier", "ece")
HIGHER_IS_BETTER = {"accuracy": True, "nll": False, "calibrated_nll": False, "brier": False, "ece": False}
_MEAN_METRICS = ("accuracy", "nll", "calibrated_nll", "brier")
_ZERO = 1e-12  # differences this small are rounding, not a difference (identical models give ~1e-17)
_CHUNK_CELLS = 4_000_000  # multiplicity-matrix entries built at once (resamples x examples)
OVER_SEEDS = ("t", "bootstrap", "fixed")  # how several seeds enter the interval (module docstring)


@dataclass(frozen=True)
class Difference:
    """``b - a`` for one metric: the point estimates ``a``, ``b`` and ``diff`` (means over seeds),
    the interval ``[low, high]``, ``se`` (its standard error: of the resampled differences, or
    with ``over_seeds="t"`` the combined ``sqrt(se_ex^2 + se_seed^2)``), ``excludes_zero`` (the interval lies entirely above 1e-12 or below -1e-12: smaller
    values are rounding), ``b_better`` (``True``/``False``
    when the interval excludes 0: whether B is better, from the interval's side of 0 and the
    metric's direction; ``None`` otherwise), ``higher_is_better``, ``per_seed`` (each seed's
    difference on its full test set), ``seed_std`` (their std, ddof=1; NaN with one seed) and
    ``df`` (degrees of freedom of the t quantile; ``inf`` for a percentile interval)."""

    metric: str
    a: float
    b: float
    diff: float
    low: float
    high: float
    se: float
    excludes_zero: bool
    b_better: bool | None
    higher_is_better: bool
    per_seed: tuple[float, ...] = ()
    seed_std: float = math.nan
    df: float = math.inf


@dataclass(frozen=True)
class PairedBootstrap:
    """Result of :func:`paired_bootstrap`: ``differences`` by metric, and the procedure:
    ``n_resamples``, ``level``, ``seed``, ``n_seeds``, ``hierarchical`` (seeds resampled too),
    ``shared_examples`` (one draw of examples for all seeds), ``n_examples`` (per seed),
    ``calibration`` (``"validation"`` or ``"test-cv"``), ``n_bins``; ``samples`` holds the
    ``[R]`` resampled differences by metric (with ``over_seeds="t"``: examples resampled, seeds
    fixed); ``over_seeds``: how the seeds enter the interval (:data:`OVER_SEEDS`)."""

    differences: dict[str, Difference]
    n_resamples: int
    level: float
    seed: int
    n_seeds: int
    hierarchical: bool
    shared_examples: bool
    n_examples: tuple[int, ...]
    calibration: str
    n_bins: int
    samples: dict[str, np.ndarray] = field(repr=False)
    over_seeds: str = "fixed"

    @property
    def covers_seeds(self) -> bool:
        """Whether the intervals include training (seed-to-seed) variability: 2+ seeds, not held fixed."""
        return self.over_seeds != "fixed"

    def as_dict(self) -> dict:
        """JSON-ready summary (no samples)."""
        return {
            "differences": {k: {**v.__dict__, "per_seed": list(v.per_seed)} for k, v in self.differences.items()},
            "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed, "n_seeds": self.n_seeds,
            "hierarchical": self.hierarchical, "shared_examples": self.shared_examples,
            "n_examples": list(self.n_examples), "calibration": self.calibration, "n_bins": self.n_bins,
            "over_seeds": self.over_seeds,
        }


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1.0) * (a + 2 * m)), -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1.0))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_quantile(level: float, df: float) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` (> 0, not necessarily whole)
    degrees of freedom: ``q`` with ``P(|T| <= q) = level`` (12.706 for 95% and 1 df, 4.303 for 2,
    1.960 for ``inf``). Pure Python (``P(|T| > q) = I_{df/(df+q^2)}(df/2, 1/2)``, solved by
    bisection), so numpy and scipy are not needed and the value is the same on every CPU up to
    the last digits of ``math``'s functions."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not df > 0:
        raise ValueError(f"df must be positive, got {df!r}")
    if df >= 1e4:  # lgamma's cancellation would cost digits: the expansion in 1/df (Abramowitz & Stegun 26.7.5)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        g = ((z ** 3 + z) / 4, (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96, (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
        return z if math.isinf(df) else z + sum(gi / df ** (i + 1) for i, gi in enumerate(g))
    lo, hi = 0.0, 1.0  # x = df / (df + q^2): the two-sided tail I_x(df/2, 1/2) rises with x
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _betainc(df / 2.0, 0.5, mid) < 1.0 - level:
            lo = mid
        else:
            hi = mid
    x = 0.5 * (lo + hi)
    return math.sqrt(df * (1.0 - x) / x)


def _per_example(lp: np.ndarray, y: np.ndarray, val, n_bins: int, n_splits: int, seed: int):
    """Per-example values ``[N, 4]`` (accuracy, nll, calibrated nll, brier), ECE bin ``[N]`` and
    signed gap ``correct - confidence`` ``[N]``, and the calibration procedure."""
    cal = temperature_scale(lp, y, *(val if val is not None else (None, None)), n_splits=n_splits, seed=seed, n_bins=n_bins)
    b, conf, hit = ece_bins(lp, y, n_bins)
    values = np.stack([hit.astype(np.float64), nll_per_example(lp, y), cal.nll_per_example, brier_per_example(lp, y)], axis=1)
    return values, b, hit - conf, cal.procedure


class _Seed:
    """One seed's pair reduced to what the resamples need: ``columns`` ``[N, 8 + 2 * n_bins]``: A's
    four per-example metrics, B's, then A's signed ECE gap ``correct - confidence`` in its bin's
    column and B's, so that ``W @ columns`` gives every resample's sums."""

    def __init__(self, a, b, y, val, n_bins: int, n_splits: int, seed: int, index: int):
        lp_a = check_log_probs(a, f"pairs[{index}][0] (model A)")
        lp_b = check_log_probs(b, f"pairs[{index}][1] (model B)")
        if lp_a.shape != lp_b.shape:
            raise ValueError(f"pairs[{index}]: models A and B must have the same shape, got {lp_a.shape} and {lp_b.shape}")
        self.y = check_targets(y, lp_a.shape[0], lp_a.shape[1], f"pairs[{index}][2] (targets)")
        self.n = lp_a.shape[0]
        va = vb = None
        if val is not None:
            if len(val) != 3:
                raise ValueError(f"val_pairs[{index}] must be (val_log_probs_a, val_log_probs_b, val_targets)")
            va, vb = (val[0], val[2]), (val[1], val[2])
        vals_a, bin_a, gap_a, self.procedure = _per_example(lp_a, self.y, va, n_bins, n_splits, seed)
        vals_b, bin_b, gap_b, _ = _per_example(lp_b, self.y, vb, n_bins, n_splits, seed)
        rows = np.arange(self.n)
        gaps = np.zeros((self.n, 2 * n_bins))
        gaps[rows, bin_a] = gap_a
        gaps[rows, n_bins + bin_b] = gap_b
        self.columns = np.concatenate([vals_a, vals_b, gaps], axis=1)  # one matrix product per chunk
        self.n_bins = n_bins

    def stats(self, w: np.ndarray) -> np.ndarray:
        """Metrics ``[R, 10]`` (A: accuracy, nll, calibrated nll, brier, ece; then B's) under
        example multiplicities ``w`` ``[R, N]`` (each row sums to N)."""
        sums = w @ self.columns / self.n
        gaps = np.abs(sums[:, 8:])
        ece_a, ece_b = gaps[:, : self.n_bins].sum(1, keepdims=True), gaps[:, self.n_bins:].sum(1, keepdims=True)
        return np.concatenate([sums[:, :4], ece_a, sums[:, 4:8], ece_b], axis=1)


def _multiplicities(rng: np.random.Generator, r: int, n: int) -> np.ndarray:
    """``[r, n]`` counts of each example in ``r`` draws of ``n`` examples with replacement."""
    idx = rng.integers(0, n, size=(r, n)) + (np.arange(r) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=r * n).reshape(r, n).astype(np.float64)


def paired_bootstrap(pairs: Sequence[tuple], *, val_pairs: Sequence[tuple] | None = None, n_resamples: int = 1000,
                     level: float = 0.95, seed: int = 0, n_bins: int = DEFAULT_N_BINS, n_splits: int = 5,
                     over_seeds: str | None = None) -> PairedBootstrap:
    """Paired bootstrap of ``B - A`` over the test examples, pooled over seeds (module docstring).

    ``pairs``: one ``(log_probs_a [N, K], log_probs_b [N, K], targets [N])`` per seed (a single
    tuple is one seed). ``val_pairs`` (optional, one per seed): ``(val_log_probs_a, val_log_probs_b,
    val_targets)`` for validation temperatures; without it temperatures come from test-time
    cross-validation (``n_splits`` random halvings seeded by ``seed``). ``over_seeds``: how the
    seeds enter the interval, one of :data:`OVER_SEEDS`; default (``None``): ``"t"`` with 2 or
    more seeds, ``"fixed"`` with one.
    """
    if isinstance(pairs, tuple) and len(pairs) == 3 and np.ndim(pairs[0]) == 2:
        pairs = [pairs]
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs is empty: give at least one (log_probs_a, log_probs_b, targets)")
    if val_pairs is not None:
        if isinstance(val_pairs, tuple) and len(val_pairs) == 3 and np.ndim(val_pairs[0]) == 2:
            val_pairs = [val_pairs]
        val_pairs = list(val_pairs)
        if len(val_pairs) != len(pairs):
            raise ValueError(f"val_pairs has {len(val_pairs)} entries, pairs {len(pairs)}: give one per seed")
    if not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive int, got {n_resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if over_seeds is not None and over_seeds not in OVER_SEEDS:
        raise ValueError(f"over_seeds must be one of {', '.join(OVER_SEEDS)} (or None: t with 2+ seeds), got {over_seeds!r}")
    for i, p in enumerate(pairs):
        if len(p) != 3:
            raise ValueError(f"pairs[{i}] must be (log_probs_a, log_probs_b, targets), got {len(p)} items")
    seeds = [_Seed(a, b, y, None if val_pairs is None else val_pairs[i], n_bins, n_splits, seed, i)
             for i, (a, b, y) in enumerate(pairs)]
    procedures = {s.procedure for s in seeds}
    n_seeds = len(seeds)
    shared = all(s.n == seeds[0].n and np.array_equal(s.y, seeds[0].y) for s in seeds)
    mode = over_seeds or ("t" if n_seeds >= 2 else "fixed")
    if mode != "fixed" and n_seeds < 2:
        raise ValueError(f"over_seeds={mode!r} needs at least 2 seeds, got 1: use 'fixed' (test examples only)")
    hierarchical = mode == "bootstrap"

    # point estimates: each seed's metrics on its full test set, averaged over seeds
    per_seed = np.stack([s.stats(np.ones((1, s.n)))[0] for s in seeds])  # [S, 10]
    point = per_seed.mean(axis=0)
    seed_diffs = per_seed[:, 5:] - per_seed[:, :5]  # [S, 5]

    rng = np.random.default_rng(seed)
    seed_weights = (rng.multinomial(n_seeds, np.full(n_seeds, 1.0 / n_seeds), size=n_resamples) / n_seeds
                    if hierarchical else np.full((n_resamples, n_seeds), 1.0 / n_seeds))
    diffs = np.zeros((n_resamples, len(METRICS)))
    chunk = max(1, _CHUNK_CELLS // max(s.n for s in seeds))
    for start in range(0, n_resamples, chunk):
        r = min(chunk, n_resamples - start)
        w_shared = _multiplicities(rng, r, seeds[0].n) if shared else None
        for j, s in enumerate(seeds):
            w = w_shared if shared else _multiplicities(rng, r, s.n)
            st = s.stats(w)
            diffs[start:start + r] += seed_weights[start:start + r, j, None] * (st[:, 5:] - st[:, :5])

    tail = (1.0 - level) / 2.0 * 100.0
    out = {}
    for k, metric in enumerate(METRICS):
        d = float(point[5 + k] - point[k])
        se = float(diffs[:, k].std(ddof=1)) if n_resamples > 1 else 0.0
        seed_std = float(seed_diffs[:, k].std(ddof=1)) if n_seeds > 1 else math.nan
        df = math.inf
        if mode == "t":
            se, df = _combined_se(se, seed_std, n_seeds)
            q = t_quantile(level, df)
            low, high = d - q * se, d + q * se
        else:
            low, high = (float(v) for v in np.percentile(diffs[:, k], [tail, 100.0 - tail]))
        excl = bool(low > _ZERO or high < -_ZERO)  # matrix products round A's and B's sums differently
        hib = HIGHER_IS_BETTER[metric]
        out[metric] = Difference(metric, float(point[k]), float(point[5 + k]), d, float(low), float(high), se, excl,
                                 (bool(low > _ZERO) == hib) if excl else None, hib,
                                 tuple(float(v) for v in seed_diffs[:, k]), seed_std, df)
    return PairedBootstrap(out, n_resamples, float(level), int(seed), n_seeds, hierarchical, shared,
                           tuple(s.n for s in seeds), "+".join(sorted(procedures)), n_bins,
                           {m: diffs[:, k].copy() for k, m in enumerate(METRICS)}, mode)


def _combined_se(se_ex: float, seed_std: float, n_seeds: int) -> tuple[float, float]:
    """``(sqrt(se_ex^2 + se_seed^2), df)`` with ``se_seed = seed_std / sqrt(S)`` and the
    Welch-Satterthwaite degrees of freedom of the sum (``se_ex`` known; ``inf`` when the seeds agree
    exactly)."""
    var_seed = seed_std ** 2 / n_seeds
    var = se_ex ** 2 + var_seed
    df = math.inf if var_seed == 0.0 else var ** 2 / (var_seed ** 2 / (n_seeds - 1))
    return math.sqrt(var), df

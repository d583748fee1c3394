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

Several seeds (a list of per-seed pairs, e.g. the same two methods trained with seeds 0, 1, 2):
the point estimate is the mean over seeds of the per-seed difference. When every seed has the same
targets (the same test set) the drawn examples are shared by all seeds in a resample (the test
examples are the common random unit); otherwise each seed draws its own. With fewer than 3 seeds
only examples are resampled (too few seeds to resample them: the interval then covers test-set
sampling for these fixed trained models). With 3 or more seeds the bootstrap is hierarchical:
each resample first draws S seeds with replacement (multiplicities ``c_s``), then examples as
above, and its statistic is ``sum_s c_s diff_s / S`` - so the interval also covers training-seed
variability.

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

from dataclasses import dataclass, field
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

__all__ = ["METRICS", "HIGHER_IS_BETTER", "Difference", "PairedBootstrap", "paired_bootstrap"]

METRICS = ("accuracy", "nll", "calibrated_nll", "brier", "ece")
HIGHER_IS_BETTER = {"accuracy": True, "nll": False, "calibrated_nll": False, "brier": False, "ece": False}
_MEAN_METRICS = ("accuracy", "nll", "calibrated_nll", "brier")
_ZERO = 1e-12  # differences this small are rounding, not a difference (identical models give ~1e-17)
_CHUNK_CELLS = 4_000_000  # multiplicity-matrix entries built at once (resamples x examples)


@dataclass(frozen=True)
class Difference:
    """``b - a`` for one metric: the point estimates ``a``, ``b`` and ``diff`` (means over seeds),
    the interval ``[low, high]``, ``se`` (standard deviation of the resampled differences),
    ``excludes_zero`` (the interval lies entirely above 1e-12 or below -1e-12: smaller
    values are rounding), ``b_better`` (``True``/``False``
    when the interval excludes 0: whether B is better, from the interval's side of 0 and the
    metric's direction; ``None`` otherwise) and ``higher_is_better``."""

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


@dataclass(frozen=True)
class PairedBootstrap:
    """Result of :func:`paired_bootstrap`: ``differences`` by metric, and the procedure:
    ``n_resamples``, ``level``, ``seed``, ``n_seeds``, ``hierarchical`` (seeds resampled too),
    ``shared_examples`` (one draw of examples for all seeds), ``n_examples`` (per seed),
    ``calibration`` (``"validation"`` or ``"test-cv"``), ``n_bins``; ``samples`` holds the
    ``[R]`` resampled differences by metric."""

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

    def as_dict(self) -> dict:
        """JSON-ready summary (no samples)."""
        return {
            "differences": {k: dict(v.__dict__) for k, v in self.differences.items()},
            "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed, "n_seeds": self.n_seeds,
            "hierarchical": self.hierarchical, "shared_examples": self.shared_examples,
            "n_examples": list(self.n_examples), "calibration": self.calibration, "n_bins": self.n_bins,
        }


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
                     resample_seeds: bool | None = None) -> PairedBootstrap:
    """Paired (hierarchical when >= 3 seeds) percentile bootstrap of ``B - A`` (module docstring).

    ``pairs``: one ``(log_probs_a [N, K], log_probs_b [N, K], targets [N])`` per seed (a single
    tuple is one seed). ``val_pairs`` (optional, one per seed): ``(val_log_probs_a, val_log_probs_b,
    val_targets)`` for validation temperatures; without it temperatures come from test-time
    cross-validation (``n_splits`` random halvings seeded by ``seed``). ``resample_seeds``:
    hierarchical bootstrap over seeds too; default (``None``) when there are >= 3 seeds.
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
    for i, p in enumerate(pairs):
        if len(p) != 3:
            raise ValueError(f"pairs[{i}] must be (log_probs_a, log_probs_b, targets), got {len(p)} items")
    seeds = [_Seed(a, b, y, None if val_pairs is None else val_pairs[i], n_bins, n_splits, seed, i)
             for i, (a, b, y) in enumerate(pairs)]
    procedures = {s.procedure for s in seeds}
    n_seeds = len(seeds)
    shared = all(s.n == seeds[0].n and np.array_equal(s.y, seeds[0].y) for s in seeds)
    hierarchical = n_seeds >= 3 if resample_seeds is None else bool(resample_seeds)
    if hierarchical and n_seeds < 2:
        raise ValueError("resample_seeds=True needs at least 2 seeds")

    # point estimates: each seed's metrics on its full test set, averaged over seeds
    point = np.mean([s.stats(np.ones((1, s.n)))[0] for s in seeds], axis=0)

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
        low, high = np.percentile(diffs[:, k], [tail, 100.0 - tail])
        d = float(point[5 + k] - point[k])
        excl = bool(low > _ZERO or high < -_ZERO)  # matrix products round A's and B's sums differently
        hib = HIGHER_IS_BETTER[metric]
        out[metric] = Difference(metric, float(point[k]), float(point[5 + k]), d, float(low), float(high),
                                 float(diffs[:, k].std(ddof=1)) if n_resamples > 1 else 0.0, excl,
                                 (bool(low > _ZERO) == hib) if excl else None, hib)
    return PairedBootstrap(out, n_resamples, float(level), int(seed), n_seeds, hierarchical, shared,
                           tuple(s.n for s in seeds), "+".join(sorted(procedures)), n_bins,
                           {m: diffs[:, k].copy() for k, m in enumerate(METRICS)})

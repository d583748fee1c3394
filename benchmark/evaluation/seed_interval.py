"""Intervals over training seeds, over numpy; no torch and no scipy.

A quantity measured once per training seed (e.g. the paired difference ``method_s - deterministic_s``
of one metric, seed ``s`` of both runs) has a mean over the ``n`` seeds and a Student-t interval
``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (``sd`` the sample standard deviation, ddof=1). It
covers the training randomness the seeds sample (initialisation, data order, augmentation) under
the usual assumption that the per-seed values are independent and roughly normal; with 3 seeds it
is wide (``t_{0.975, 2} = 4.30``) by construction, which is the honest width of 3 seeds. One seed
gives no interval.

The t quantile is :func:`benchmark.evaluation.paired.t_quantile`, the one the leaderboard's intervals use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from .paired import t_quantile as two_sided_t_quantile

__all__ = ["SeedInterval", "t_interval", "t_quantile"]


def t_quantile(p: float, df: float) -> float:
    """The one-sided ``p`` quantile of Student's t with ``df`` degrees of freedom (``t_quantile(0.975, 2) = 4.303``),
    from :func:`benchmark.evaluation.paired.t_quantile` (two-sided: ``P(|T| <= q) = level``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    q = two_sided_t_quantile(abs(2.0 * p - 1.0), df)
    return q if p > 0.5 else -q


@dataclass(frozen=True)
class SeedInterval:
    """The mean of per-seed values, its t interval (``low``, ``high``; NaN with fewer than 2 seeds),
    the sample std (ddof=1), the number of seeds and the level."""

    mean: float
    low: float
    high: float
    std: float
    n: int
    level: float = 0.95

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies entirely on one side of 0 (False without an interval)."""
        return bool(self.n > 1 and (self.low > 0 or self.high < 0))


def t_interval(values: Iterable[float], level: float = 0.95) -> SeedInterval:
    """Mean over seeds with a two-sided Student-t interval at ``level`` (NaN bounds for one value;
    ``ValueError`` for none or a non-finite value)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        raise ValueError("t_interval needs at least one value, got none")
    if not np.all(np.isfinite(v)):
        raise ValueError(f"t_interval needs finite values, got {v.tolist()}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    mean = float(v.mean())
    if v.size < 2:
        return SeedInterval(mean, math.nan, math.nan, math.nan, 1, level)
    std = float(v.std(ddof=1))
    half = two_sided_t_quantile(level, v.size - 1) * std / math.sqrt(v.size)
    return SeedInterval(mean, mean - half, mean + half, std, int(v.size), level)

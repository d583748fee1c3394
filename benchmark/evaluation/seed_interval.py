"""Intervals over training seeds, over numpy; no torch and no scipy.

A quantity measured once per training seed (e.g. the paired difference ``method_s - deterministic_s``
of one metric, seed ``s`` of both runs) has a mean over the ``n`` seeds and a Student-t interval
``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` (``sd`` the sample standard deviation, ddof=1). It
covers the training randomness the seeds sample (initialisation, data order, augmentation) under
the usual assumption that the per-seed values are independent and roughly normal; with 3 seeds it
is wide (``t_{0.975, 2} = 4.30``) by construction, which is the honest width of 3 seeds. One seed
gives no interval.

:func:`t_quantile` inverts the t distribution's CDF by bisection; the CDF is the closed form in the
regularised incomplete beta function, evaluated by its continued fraction (Lentz's method).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import numpy as np

__all__ = ["SeedInterval", "t_cdf", "t_interval", "t_quantile"]


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)`` for ``0 <= x <= 1``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """The CDF of Student's t distribution with ``df`` degrees of freedom at ``t``."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (e.g. ``t_quantile(0.975, 2) = 4.303``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


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
    half = t_quantile(0.5 + level / 2.0, v.size - 1) * std / math.sqrt(v.size)
    return SeedInterval(mean, mean - half, mean + half, std, int(v.size), level)

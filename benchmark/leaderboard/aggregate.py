"""Mean, sample std (ddof=1), a 95% interval and count over seeds per (suite, dataset, backbone,
method, variant, setting).

``setting`` tells apart runs of one method whose configs differ, so they are never averaged together.

The interval over seeds (:func:`seed_interval`) is Student's t: ``mean ± t_{n-1} * std / sqrt(n)``
over the n seeds with a value (none with one seed). Why t and not a bootstrap over seeds and test
examples: it applies to every column alike (corrupted, OOD and cost columns included, which have
no per-example predictions to resample); with 2 or 3 seeds a bootstrap over seeds has 3 or 10
distinct resamples and never reaches beyond the extreme seeds, so it under-covers (74-84% instead
of 95% in the simulation of :mod:`benchmark.evaluation.paired` where training randomness
dominates), while the t quantile (12.71 at 2
seeds, 4.30 at 3) states how little a few seeds say and is exact for normal seed-to-seed variation.
What it covers: training randomness (seeds) on this test set. Every row of a block is evaluated on
the same test examples, so their sampling moves all rows together; it enters the comparisons
between rows, which the paired differences (:mod:`.comparisons`) give with test-set sampling and
seeds both included. For bounded metrics (ECE, accuracy) the interval is not clipped.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..evaluation.paired import t_quantile
from .columns import COST_COLUMNS, MI_OOD_PREFIX, OOD_PREFIX, hidden_summaries, metric_columns
from .frame import GROUP_KEYS, RUN_FACTS

SEED_LEVEL = 0.95  # of the interval over seeds
SEED_INTERVAL_LEGEND = (f"[low, high] after a value: its {100 * SEED_LEVEL:.0f}% Student-t interval over the row's seeds "
                        "(mean ± t(n-1) · std / √n): training randomness on this test set, which every row shares; "
                        "the paired differences add test-set sampling.")


def seed_interval(values: np.ndarray, level: float = SEED_LEVEL) -> tuple[float, float]:
    """``(low, high)``: the ``level`` Student-t interval of the mean of ``values`` (one per seed):
    ``mean ± t_{n-1} * std(ddof=1) / sqrt(n)``; NaNs with fewer than 2 values (module docstring)."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    mean, half = float(values.mean()), t_quantile(level, n - 1) * float(values.std(ddof=1)) / math.sqrt(n)
    return mean - half, mean + half


def metric_keys(df: pd.DataFrame) -> list[str]:
    """Numeric columns that get mean/std/count: the metric and cost columns present, then OOD AUROC
    columns, then the summaries no column shows."""
    fixed = [c.key for c in (*metric_columns(), *COST_COLUMNS) if c.key in df.columns]
    ood = sorted(c for c in df.columns if c.startswith((OOD_PREFIX, MI_OOD_PREFIX)))
    return fixed + ood + [k for k in hidden_summaries() if k in df.columns]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Per (suite, dataset, backbone, method, variant, setting): ``<m>`` mean, ``<m>_std`` (ddof=1),
    ``<m>_low`` and ``<m>_high`` (:func:`seed_interval`), ``<m>_n`` (seeds with a value), ``seeds``
    (count), ``seed_list`` and what was run
    (:data:`.frame.RUN_FACTS`, :func:`joined` over the seeds)."""
    if df.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "seeds", "seed_list"])
    keys = metric_keys(df)
    rows = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        row.update(kind="measured", source="", seeds=len(g), seed_list=" ".join(str(s) for s in sorted(g["seed"])))
        for m in keys:
            vals = g[m].astype(float).dropna().to_numpy()
            row[m] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{m}_low"], row[f"{m}_high"] = seed_interval(vals)
            row[f"{m}_n"] = len(vals)
        row.update({col: joined(g[key]) if key in g else None for col, key in RUN_FACTS.items()})
        row["large_batch"] = single(g["large_batch"])
        row["reused_members"] = bool(g["reused_members"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def single(values: pd.Series) -> Any:
    """The one distinct value of ``values`` (absent values ignored), else ``None``."""
    u = sorted({v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}, key=str)
    return u[0] if len(u) == 1 else None


def joined(values: pd.Series) -> str | None:
    """The distinct values as text, sorted and joined by ``, `` (whole floats as integers: a
    column with gaps is float in pandas); ``None`` when every value is absent."""
    u = {str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
         for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}
    return ", ".join(sorted(u)) if u else None

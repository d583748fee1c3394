"""Mean, sample std (ddof=1) and count over seeds per (suite, dataset, backbone, method, variant, setting).

``setting`` tells apart runs of one method whose configs differ, so they are never averaged together.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from .columns import COST_COLUMNS, MI_OOD_PREFIX, OOD_PREFIX, hidden_summaries, metric_columns
from .frame import GROUP_KEYS, RUN_FACTS


def metric_keys(df: pd.DataFrame) -> list[str]:
    """Numeric columns that get mean/std/count: the metric and cost columns present, then OOD AUROC
    columns, then the summaries no column shows."""
    fixed = [c.key for c in (*metric_columns(), *COST_COLUMNS) if c.key in df.columns]
    ood = sorted(c for c in df.columns if c.startswith((OOD_PREFIX, MI_OOD_PREFIX)))
    return fixed + ood + [k for k in hidden_summaries() if k in df.columns]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Per (suite, dataset, backbone, method, variant, setting): ``<m>`` mean, ``<m>_std`` (ddof=1),
    ``<m>_n`` (seeds with a value), ``seeds`` (count), ``seed_list`` and what was run
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

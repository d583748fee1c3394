"""Leaderboard columns: what each one shows, which direction is better and how it is rendered.

The metric columns are read from the metric declarations
(:func:`benchmark.evaluation.metric_specs.metric_specs`), in registration order: one clean column
per metric, then one corrupted-summary column per metric that declares a ``summary_label``, then
mCE and relative mCE. A metric registered later becomes a column without an edit here. A summary
without a label (cBrier) is aggregated over seeds and kept in the frame, but not shown.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..evaluation.metric_specs import MetricSpec, metric_specs

OOD_PREFIX = "auroc_"  # frame key of an OOD set's AUROC (maximum-probability score): auroc_<set>
MI_OOD_PREFIX = "mi_auroc_"  # frame key of an OOD set's AUROC scored by mutual information (ensembles): mi_auroc_<set>


@dataclass(frozen=True)
class Column:
    """A table column: frame key, header label, which direction is better, how to render."""

    key: str
    label: str
    better: str | None  # "max", "min" or None (never marked)
    kind: str  # pct, f1, f3, f4, int, si, ms, duration
    spread: bool = True  # show ± std over seeds (False for structural counts such as parameters)


MCE_COLUMNS = (
    Column("mCE", "mCE", "min", "f1"),
    Column("rel_mCE", "rel. mCE", "min", "f1"),
)
COST_COLUMNS = (
    Column("members", "M", None, "int", spread=False),
    Column("params", "Params", "min", "si", spread=False),
    Column("flops", "FLOPs/ex", "min", "si", spread=False),
    Column("forward_passes", "Passes", "min", "int", spread=False),
    Column("ms_b1", "ms/ex b=1", "min", "ms"),
    Column("ms_large", "ms/ex large b", "min", "ms"),
    Column("train_seconds", "Train time", "min", "duration"),
)


# Computed at leaderboard time from the sidecars (:mod:`.comparisons`): the Deep-Ensemble Equivalent.
DEE_COLUMN = Column("dee", "DEE", None, "f2", spread=False)


def metric_columns(specs: Iterable[MetricSpec] | None = None) -> list[Column]:
    """Clean metric columns (the shown ones), shown corrupted-summary columns, then mCE and rel. mCE."""
    specs = list(metric_specs() if specs is None else specs)
    clean = [Column(m.key, m.label, m.better, m.kind) for m in specs if m.shown]
    summaries = [Column(m.summary, m.summary_label, m.better, m.kind) for m in specs if m.summary and m.summary_label]
    return [*clean, *summaries, *MCE_COLUMNS]


def hidden_summaries(specs: Iterable[MetricSpec] | None = None) -> list[str]:
    """Corrupted summaries aggregated over seeds but shown in no column (a summary without a label)."""
    return [m.summary for m in (metric_specs() if specs is None else specs) if m.summary and not m.summary_label]


def ood_column(key: str) -> Column:
    """The column of frame key ``auroc_<set>`` or ``mi_auroc_<set>``."""
    if key.startswith(MI_OOD_PREFIX):
        return Column(key, f"MI-AUROC {key[len(MI_OOD_PREFIX):]} (%)", "max", "pct")
    return Column(key, f"AUROC {key[len(OOD_PREFIX):]} (%)", "max", "pct")

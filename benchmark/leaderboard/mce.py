"""Corruption errors: mCE and relative mCE of each record, and the complete records frame.

``CE_c = sum_s E(f, s, c) / sum_s E(base, s, c)``, averaged over corruptions, x100; the relative
mCE subtracts each model's clean error first. The reference ("base") is the dataset's published
``mce_reference`` when its :class:`benchmark.data.base.DatasetSpec` declares one (ImageNet-C:
AlexNet; only the mean over the five severities is published, so mCE is computed only over all
five), otherwise the deterministic runs of the record's leaderboard block on the same corrupted
data (also for a dataset name that is not registered).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..data.base import DATASETS, PublishedErrors, load_datasets
from .frame import FRAME_ORDER, corrupted_cells, record_rows

BLOCK_KEYS = ("suite", "dataset", "backbone")
BASELINE_METHOD = "deterministic"  # mCE without a published reference is relative to this method's runs in the same block
REFERENCE_SEVERITIES = (1, 2, 3, 4, 5)  # the severities a published reference averages over

Errors = dict[tuple[str, int], float]


def mce_reference(dataset: str) -> PublishedErrors | None:
    """The published errors mCE on ``dataset`` is relative to (``None``: the block's deterministic runs)."""
    load_datasets()
    return DATASETS.get(dataset).mce_reference if dataset in DATASETS else None


def mce_basis(dataset: str) -> str:
    """What mCE on ``dataset`` is relative to, in words (the "mCE" header fact)."""
    ref = mce_reference(dataset)
    if ref is not None:
        return ref.label
    return f"this block's {BASELINE_METHOD} runs on the same corrupted data (mean over their seeds)"


def reference_errors(ref: PublishedErrors, severities: Iterable[int]) -> tuple[Errors, float]:
    """A reference's errors spread evenly over ``severities`` (only the per-corruption mean is
    published, so only sums over all five severities are exact), and its clean error."""
    return {(c, s): e for c, e in ref.errors.items() for s in severities}, ref.clean_error


def _errors(rec: dict[str, Any]) -> Errors:
    return {k: 1.0 - float(m["accuracy"]) for k, m in corrupted_cells(rec).items()}


def _ce(errors: Errors, clean_err: float, base: Errors, base_clean: float) -> tuple[float, float]:
    """(mCE, relative mCE) in percent over the corruptions both cover, at the severities both cover."""
    ces, rels = [], []
    for c in sorted({c for c, _ in errors} & {c for c, _ in base}):
        sev = sorted({s for cc, s in errors if cc == c} & {s for cc, s in base if cc == c})
        num, den = sum(errors[c, s] for s in sev), sum(base[c, s] for s in sev)
        rnum, rden = sum(errors[c, s] - clean_err for s in sev), sum(base[c, s] - base_clean for s in sev)
        ces.append(num / den if den > 0 else math.nan)
        rels.append(rnum / rden if rden > 0 else math.nan)
    if not ces:
        return math.nan, math.nan
    return 100 * float(np.mean(ces)), 100 * float(np.mean(rels))


def baseline_records(rec: dict[str, Any], records: list[dict[str, Any]], df: pd.DataFrame) -> list[dict[str, Any]]:
    """The deterministic runs of ``rec``'s block evaluated on the same corrupted data (largest config group)."""
    ident, c = rec["identity"], rec["metrics"].get("corrupted") or {}
    same = [(r, fp) for r, fp in zip(records, df["fingerprint"])
            if r["identity"]["method"] == BASELINE_METHOD and r["identity"]["variant"] == ""
            and all(r["identity"][k] == ident[k] for k in BLOCK_KEYS) and corrupted_cells(r)
            and all((r["metrics"]["corrupted"].get(k) == c.get(k)) for k in ("source", "corruption_set", "subset"))]
    if not same:
        return []
    counts: dict[str, int] = {}
    for _, fp in same:
        counts[fp] = counts.get(fp, 0) + 1
    best = sorted(counts, key=lambda fp: (-counts[fp], fp))[0]
    return [r for r, fp in same if fp == best]


def corruption_errors(rec: dict[str, Any], records: list[dict[str, Any]], df: pd.DataFrame) -> tuple[float, float]:
    """(mCE, relative mCE) of one record: vs its dataset's published reference, else vs the block's deterministic runs.

    ``records`` and ``df`` are the usable records and their rows, in the same order.
    """
    errors = _errors(rec)
    if not errors:
        return math.nan, math.nan
    clean_err = 1.0 - float(rec["metrics"]["clean"]["accuracy"])
    ref = mce_reference(rec["identity"]["dataset"])
    if ref is not None:
        if sorted({s for _, s in errors}) != list(REFERENCE_SEVERITIES):
            return math.nan, math.nan
        base, base_clean = reference_errors(ref, REFERENCE_SEVERITIES)
        return _ce(errors, clean_err, base, base_clean)
    base_recs = baseline_records(rec, records, df)
    if not base_recs:
        return math.nan, math.nan
    keys = set.intersection(*(set(_errors(r)) for r in base_recs))
    base = {k: float(np.mean([_errors(r)[k] for r in base_recs])) for k in keys}
    base_clean = float(np.mean([1.0 - r["metrics"]["clean"]["accuracy"] for r in base_recs]))
    return _ce(errors, clean_err, base, base_clean)


def records_frame(records: list[dict[str, Any]], problems: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per record (full precision, :func:`benchmark.leaderboard.frame.record_row`), with mCE
    and rel. mCE, sorted by block, method, variant, setting, seed and file.

    ``records`` as :func:`benchmark.records.load_records` returns them. A record whose content is
    unusable raises RecordError, or, when ``problems`` is given, is appended there as (file,
    reason) and left out.
    """
    df, kept = record_rows(records, problems)
    if not kept:
        return df
    mce = [corruption_errors(rec, kept, df) for rec in kept]
    df["mCE"] = [m[0] for m in mce]
    df["rel_mCE"] = [m[1] for m in mce]
    return df.sort_values(FRAME_ORDER, kind="stable").reset_index(drop=True)

"""Leaderboards: a pure function of the run records (tables, plots, one offline page per suite).

Pipeline, read top to bottom:

1. ``load_records`` (schema check, newest record per run id) -> ``records_frame``: one row per
   record, full-precision floats; a record whose content is unusable is reported and left out.
2. ``aggregate``: mean, sample std (ddof=1) and count over seeds per (suite, dataset, backbone,
   method, variant, setting); ``setting`` tells apart runs of one method whose configs differ.
3. ``build_boards``: per suite, one block per (dataset, backbone) with the measured rows ranked by
   NLL, the best value per column marked, "reported" rows from :mod:`benchmark.reported` where
   dataset and backbone match (never ranked), and header facts (data, budget, seeds, provenance).
4. Renderers (Markdown, CSV, HTML, LaTeX), plots (:mod:`benchmark.plots`) and the page
   (:mod:`benchmark.page`), all written atomically under ``<out>/<suite>/``.

Rounding happens only in rendering. The same records give byte-identical tables.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd

from ..core.config import SUITES_DIR
from ..core.io import atomic_write_text
from ..records import RecordError, load_records
from .reported import (ALEXNET_BASELINE_DATASETS, ALEXNET_CLEAN_ERROR, ALEXNET_IMAGENET_C_ERROR, ALEXNET_SOURCE, Reported, paper_recipe,
                       reported_for)

GROUP_KEYS = ("suite", "dataset", "backbone", "method", "variant", "setting")
BLOCK_KEYS = ("suite", "dataset", "backbone")
BASELINE_METHOD = "deterministic"  # CIFAR-C mCE is relative to this method's runs in the same block
RANK_BY = "nll"
# Config keys that do not shape a result (they never split a row).
NON_SHAPING = ("run.seed", "run.name", "run.suite", "data.download", "eval.latency_repeats", "eval.latency_batch", "eval.batch_size",
               "train.nan_check_every", "eval.ood")


@dataclass(frozen=True)
class Column:
    """A table column: frame key, header label, which direction is better, how to render."""

    key: str
    label: str
    better: str | None  # "max", "min" or None (never marked)
    kind: str  # pct, f1, f3, f4, int, si, ms, duration
    spread: bool = True  # show ± std over seeds (False for structural counts such as parameters)


BASE_COLUMNS = (
    Column("accuracy", "Acc (%)", "max", "pct"),
    Column("nll", "NLL", "min", "f3"),
    Column("ece", "ECE", "min", "f4"),
    Column("brier", "Brier", "min", "f4"),
    Column("cA", "cA (%)", "max", "pct"),
    Column("cNLL", "cNLL", "min", "f3"),
    Column("cECE", "cECE", "min", "f4"),
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
OOD_PREFIX = "auroc_"
DATA_SOURCES = {"official": "official test set", "jpeg-copy": "JPEG copy (re-encoded; not comparable with official numbers)"}


# ------------------------------------------------------------------------------------------------
# 1. one row per record
# ------------------------------------------------------------------------------------------------


def _number(value: Any, where: str, *, required: bool = True) -> float:
    """A finite real number, or NaN when absent and not required; raise RecordError otherwise."""
    if value is None and not required:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(f"{where} must be a finite number, found {value!r}")
    return float(value)


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_fingerprint(config: dict[str, Any]) -> str:
    """The shaping part of a resolved config as canonical JSON (seed, name and suite excluded)."""
    flat = {k: v for k, v in flatten(config).items() if k not in NON_SHAPING}
    return json.dumps(flat, sort_keys=True, default=str)


def corrupted_cells(rec: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(corruption, severity): metrics}`` of a record's corrupted evaluation ({} when absent)."""
    per = _dig(rec, "metrics", "corrupted", "per")
    if not isinstance(per, dict):
        return {}
    return {(c, int(s)): m for c, sev in sorted(per.items()) if isinstance(sev, dict) for s, m in sorted(sev.items(), key=lambda x: int(x[0]))}


def _corrupted_summary(rec: dict[str, Any], where: str) -> dict[str, float]:
    corrupted = rec["metrics"].get("corrupted")
    if corrupted is None:
        return {}
    if not isinstance(corrupted, dict):
        raise RecordError(f"{where}: metrics.corrupted must be an object")
    cells = corrupted_cells(rec)
    if not cells and not isinstance(corrupted.get("summary"), dict):
        raise RecordError(f"{where}: metrics.corrupted has neither per-corruption metrics nor a summary")
    for (c, s), m in cells.items():
        for k in ("accuracy", "nll", "ece"):
            _number(_dig(m, k), f"{where}: metrics.corrupted.per.{c}.{s}.{k}")
    summary = corrupted.get("summary") or {}
    out = {}
    for key, short in (("accuracy", "cA"), ("nll", "cNLL"), ("ece", "cECE"), ("brier", "cBrier")):
        if short in summary:
            out[short] = _number(summary[short], f"{where}: metrics.corrupted.summary.{short}")
        else:  # the mean over the evaluated corruptions x severities, as the summary defines it
            vals = [m.get(key) for m in cells.values()]
            out[short] = float(np.mean(vals)) if vals and all(isinstance(v, (int, float)) for v in vals) else math.nan
    return out


def record_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The table facts of one record at full precision; RecordError names what is unusable."""
    where = Path(rec.get("_path", rec.get("run_id", "<record>"))).name
    ident, metrics, cost = rec["identity"], rec["metrics"], rec["cost"] if isinstance(rec["cost"], dict) else {}
    for k in ("suite", "dataset", "backbone", "method", "variant"):
        if not isinstance(ident.get(k), str):
            raise RecordError(f"{where}: identity.{k} must be a string, found {ident.get(k)!r}")
    for k in ("members", "seed"):
        if isinstance(ident.get(k), bool) or not isinstance(ident.get(k), int):
            raise RecordError(f"{where}: identity.{k} must be an integer, found {ident.get(k)!r}")
    clean = metrics.get("clean")
    if not isinstance(clean, dict):
        raise RecordError(f"{where}: metrics.clean must be an object")
    row: dict[str, Any] = {k: ident[k] for k in ("suite", "dataset", "backbone", "method", "variant", "members", "seed")}
    for k in ("accuracy", "nll", "ece", "brier"):
        row[k] = _number(clean.get(k), f"{where}: metrics.clean.{k}")
    if not 0.0 <= row["accuracy"] <= 1.0:
        raise RecordError(f"{where}: metrics.clean.accuracy must be a fraction in [0, 1], found {row['accuracy']!r}")
    row.update(_corrupted_summary(rec, where))
    corrupted = metrics.get("corrupted") or {}
    row.update({"c_source": corrupted.get("source"), "c_set": corrupted.get("corruption_set"), "c_subset": corrupted.get("subset"),
                "c_severities": " ".join(map(str, corrupted.get("severities", []))) or None})
    ood = metrics.get("ood") if isinstance(metrics.get("ood"), dict) else {}
    for name, m in sorted(ood.items()):
        row[OOD_PREFIX + name] = _number(_dig(m, "auroc"), f"{where}: metrics.ood.{name}.auroc", required=False)
        row[f"ood_score_{name}"] = _dig(m, "score")
    row.update({
        "params": _number(cost.get("params"), f"{where}: cost.params", required=False),
        "flops": _number(cost.get("flops_per_example"), f"{where}: cost.flops_per_example", required=False),
        "forward_passes": _number(cost.get("forward_passes"), f"{where}: cost.forward_passes", required=False),
        "ms_b1": _number(_dig(cost, "ms_per_example_b1", "median"), f"{where}: cost.ms_per_example_b1.median", required=False),
        "ms_large": _number(_dig(cost, "ms_per_example_large", "median"), f"{where}: cost.ms_per_example_large.median", required=False),
        "large_batch": _dig(cost, "ms_per_example_large", "batch_size"),
        "train_seconds": _number(cost.get("train_seconds"), f"{where}: cost.train_seconds", required=False),
        "reused_members": any(bool(_dig(m, "reused")) for m in (_dig(rec, "training", "members") or []) if isinstance(m, dict)),
    })
    prov, data, budget = rec.get("provenance") or {}, rec.get("data") or {}, rec.get("budget") or {}
    train_cfg = _dig(rec, "config", "train") or {}
    row.update({
        "data_source": data.get("source"), "test_size": data.get("test_size"),
        "epochs": budget.get("epochs", train_cfg.get("epochs")), "batch_size": budget.get("batch_size", train_cfg.get("batch_size")),
        "precision": budget.get("precision", train_cfg.get("precision")),
        "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"), "device": prov.get("device"),
        "device_name": prov.get("device_name"), "torch": prov.get("torch"), "created": rec.get("created"), "run_id": rec.get("run_id"),
        "fingerprint": config_fingerprint(rec["config"] if isinstance(rec["config"], dict) else {}), "path": rec.get("_path"),
    })
    return row


def records_frame(records: list[dict[str, Any]], problems: list[tuple[str, str]] | None = None) -> pd.DataFrame:
    """One row per record (full precision), with mCE against the block's baseline.

    A record whose content is unusable raises RecordError, or, when ``problems`` is given, is
    appended there as (file, reason) and left out.
    """
    rows, kept = [], []
    for rec in records:
        try:
            rows.append(record_row(rec))
            kept.append(rec)
        except RecordError as exc:
            if problems is None:
                raise
            problems.append((str(rec.get("_path", rec.get("run_id"))), str(exc)))
    if not rows:
        return pd.DataFrame(columns=[*GROUP_KEYS, "members", "seed", "accuracy", "nll", "ece", "brier"])
    df = pd.DataFrame(rows)
    df["setting"] = settings(df)
    mce = [corruption_errors(rec, kept, df) for rec in kept]
    df["mCE"] = [m[0] for m in mce]
    df["rel_mCE"] = [m[1] for m in mce]
    return df.sort_values(["suite", "dataset", "backbone", "method", "variant", "setting", "seed", "path"], kind="stable").reset_index(drop=True)


def settings(df: pd.DataFrame) -> list[str]:
    """A short label for rows of one (block, method, variant) whose configs differ: the differing keys."""
    labels = [""] * len(df)
    for _, g in df.groupby(["suite", "dataset", "backbone", "method", "variant"], sort=True):
        prints = sorted(set(g["fingerprint"]))
        if len(prints) < 2:
            continue
        flats = {p: json.loads(p) for p in prints}
        keys = sorted({k for p in prints for k in flats[p]} - {k for k in flats[prints[0]] if all(flats[p].get(k, object()) == flats[prints[0]][k] for p in prints)})
        for i, p in zip(g.index, g["fingerprint"]):
            labels[df.index.get_loc(i)] = ", ".join(f"{k}={json.dumps(flats[p].get(k))}" for k in keys)
    return labels


def corruption_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """Long format, one row per (record, corruption, severity): identity, accuracy, nll, ece, brier, n.

    For slicing (one corruption, one method); records without corrupted metrics give no rows.
    """
    rows = []
    for rec in records:
        ident = rec["identity"]
        for (c, s), m in corrupted_cells(rec).items():
            rows.append({**{k: ident[k] for k in ("suite", "dataset", "backbone", "method", "variant", "seed")}, "corruption": c, "severity": s,
                         **{k: m.get(k) for k in ("accuracy", "nll", "ece", "brier", "n")}, "path": rec.get("_path")})
    cols = ["suite", "dataset", "backbone", "method", "variant", "seed", "corruption", "severity", "accuracy", "nll", "ece", "brier", "n", "path"]
    return pd.DataFrame(rows, columns=cols).sort_values(cols[:8], kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# mCE: CE_c = sum_s E(f,s,c) / sum_s E(base,s,c), mean over corruptions, x100
# ------------------------------------------------------------------------------------------------


def _errors(rec: dict[str, Any]) -> dict[tuple[str, int], float]:
    return {k: 1.0 - float(m["accuracy"]) for k, m in corrupted_cells(rec).items()}


def _ce(errors: dict[tuple[str, int], float], clean_err: float, base: dict[tuple[str, int], float], base_clean: float) -> tuple[float, float]:
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


def alexnet_baseline(severities: Iterable[int]) -> tuple[dict[tuple[str, int], float], float]:
    """AlexNet's ImageNet-C errors, spread evenly over the severities (only the per-corruption mean is
    published, so only sums over all five severities are exact)."""
    return {(c, s): e for c, e in ALEXNET_IMAGENET_C_ERROR.items() for s in severities}, ALEXNET_CLEAN_ERROR


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
    """(mCE, relative mCE) of one record: vs AlexNet on ImageNet-C, else vs the block's deterministic runs."""
    errors = _errors(rec)
    if not errors:
        return math.nan, math.nan
    clean_err = 1.0 - float(rec["metrics"]["clean"]["accuracy"])
    if rec["identity"]["dataset"] in ALEXNET_BASELINE_DATASETS:
        if sorted({s for _, s in errors}) != [1, 2, 3, 4, 5]:
            return math.nan, math.nan
        base, base_clean = alexnet_baseline(range(1, 6))
        return _ce(errors, clean_err, base, base_clean)
    base_recs = baseline_records(rec, records, df)
    if not base_recs:
        return math.nan, math.nan
    keys = set.intersection(*(set(_errors(r)) for r in base_recs))
    base = {k: float(np.mean([_errors(r)[k] for r in base_recs])) for k in keys}
    base_clean = float(np.mean([1.0 - r["metrics"]["clean"]["accuracy"] for r in base_recs]))
    return _ce(errors, clean_err, base, base_clean)


# ------------------------------------------------------------------------------------------------
# 2. mean, std and count over seeds
# ------------------------------------------------------------------------------------------------


def metric_keys(df: pd.DataFrame) -> list[str]:
    """Numeric columns that get mean/std/count: the fixed columns present, then OOD AUROC columns."""
    fixed = [c.key for c in (*BASE_COLUMNS, *COST_COLUMNS) if c.key in df.columns]
    ood = sorted(c for c in df.columns if c.startswith(OOD_PREFIX))
    return fixed + ood + [k for k in ("cBrier",) if k in df.columns]


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Per (suite, dataset, backbone, method, variant, setting): ``<m>`` mean, ``<m>_std`` (ddof=1),
    ``<m>_n`` (seeds with a value), ``seeds`` (count) and ``seed_list``."""
    if df.empty:
        return pd.DataFrame(columns=[*GROUP_KEYS, "seeds", "seed_list"])
    rows = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        row.update(kind="measured", source="", seeds=len(g), seed_list=" ".join(str(s) for s in sorted(g["seed"])))
        for m in metric_keys(df):
            vals = g[m].astype(float).dropna().to_numpy()
            row[m] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"{m}_n"] = len(vals)
        row["large_batch"] = _single(g["large_batch"])
        row["reused_members"] = bool(g["reused_members"].any())
        rows.append(row)
    return pd.DataFrame(rows)


def _single(values: pd.Series) -> Any:
    u = sorted({v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))}, key=str)
    return u[0] if len(u) == 1 else None


# ------------------------------------------------------------------------------------------------
# 3. boards: blocks with ranking, best marks, reported rows and header facts
# ------------------------------------------------------------------------------------------------


@dataclass
class Block:
    """One (dataset, backbone) table of a suite."""

    suite: str
    dataset: str
    backbone: str
    table: pd.DataFrame  # measured rows ranked, then reported rows; best_<key> booleans
    columns: list[Column]
    facts: list[tuple[str, str]]
    records: list[dict[str, Any]]  # the records behind the measured rows
    frame: pd.DataFrame  # their per-record rows

    @property
    def slug(self) -> str:
        return f"{self.dataset}__{self.backbone}"

    @property
    def title(self) -> str:
        return f"{self.dataset} / {self.backbone}"

    def groups(self) -> list[tuple[str, list[dict[str, Any]]]]:
        """(row label, its records) per measured row, in table order (for plots)."""
        out = []
        for _, row in self.table[self.table["kind"] == "measured"].iterrows():
            mask = np.ones(len(self.frame), dtype=bool)
            for k in ("method", "variant", "setting"):
                mask &= (self.frame[k] == row[k]).to_numpy()
            paths = set(self.frame.loc[mask, "path"])
            out.append((row_label(row), [r for r in self.records if r.get("_path") in paths]))
        return out


@dataclass
class SuiteBoard:
    suite: str
    blocks: list[Block]
    facts: list[tuple[str, str]]
    problems: list[tuple[str, str]] = field(default_factory=list)  # left out: (file, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # failed runs: (file, error)


def row_label(row: pd.Series | dict[str, Any]) -> str:
    parts = [str(row["method"])] + [str(row[k]) for k in ("variant", "setting") if row.get(k)]
    return " ".join(parts)


def mark_best(table: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """``best_<key>``: the best mean among measured rows (ties all marked; needs >= 2 rows with a value)."""
    measured = table["kind"] == "measured"
    for col in columns:
        flag = np.zeros(len(table), dtype=bool)
        vals = table.loc[measured, col.key].astype(float)
        if col.better and vals.notna().sum() >= 2:
            best = vals.max() if col.better == "max" else vals.min()
            flag = (measured & np.isclose(table[col.key].astype(float), best, rtol=1e-12, atol=0.0)).to_numpy()
        table[f"best_{col.key}"] = flag
    return table


def reported_rows(dataset: str, backbone: str, suite: str) -> list[dict[str, Any]]:
    return [reported_row(r, suite) for r in reported_for(dataset, backbone)]


def reported_row(r: Reported, suite: str) -> dict[str, Any]:
    row = {"suite": suite, "dataset": r.dataset, "backbone": r.backbone, "method": r.method, "variant": r.variant, "setting": "",
           "kind": "reported", "source": r.label, "seeds": 0, "seed_list": "", "members": float(r.members)}
    row.update({k: float(v) for k, v in r.metrics.items()})
    return row


def block_columns(table: pd.DataFrame) -> list[Column]:
    """The columns with at least one measured value (others would be empty)."""
    measured = table[table["kind"] == "measured"]
    cols = [c for c in BASE_COLUMNS if c.key in measured and measured[c.key].notna().any()]
    ood = sorted(k for k in measured.columns if k.startswith(OOD_PREFIX) and not k.endswith(("_std", "_n")) and measured[k].notna().any())
    cols += [Column(k, f"AUROC {k[len(OOD_PREFIX):]} (%)", "max", "pct") for k in ood]
    large = _single(measured["large_batch"]) if "large_batch" in measured else None
    for c in COST_COLUMNS:
        if c.key in measured and measured[c.key].notna().any():
            cols.append(Column(c.key, f"ms/ex b={int(large)}", c.better, c.kind) if c.key == "ms_large" and large else c)
    return cols


def build_block(suite: str, dataset: str, backbone: str, frame: pd.DataFrame, records: list[dict[str, Any]]) -> Block:
    agg = aggregate(frame)
    agg = agg.sort_values([RANK_BY, "method", "variant", "setting"], kind="stable", na_position="last").reset_index(drop=True)
    table = pd.concat([agg, pd.DataFrame(reported_rows(dataset, backbone, suite))], ignore_index=True) if reported_for(dataset, backbone) else agg
    columns = block_columns(table)
    table = mark_best(table.reset_index(drop=True), columns)
    paths = set(frame["path"])
    recs = [r for r in records if r.get("_path") in paths]
    return Block(suite, dataset, backbone, table, columns, block_facts(dataset, backbone, frame, recs), recs, frame)


def _join(values: Iterable[Any]) -> str:
    u = sorted({str(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))})
    return ", ".join(u) if u else "not recorded"


def data_fact(frame: pd.DataFrame) -> str:
    parts = []
    for src in sorted({str(s) for s in frame["data_source"]}):
        n = _join(frame.loc[frame["data_source"].astype(str) == src, "test_size"])
        parts.append(f"clean: {DATA_SOURCES.get(src, src)} ({n} test images)")
    return "; ".join(parts)


def corrupted_fact(frame: pd.DataFrame) -> str:
    if "c_source" not in frame or frame["c_source"].isna().all():
        return "none: no record of this block has corrupted metrics (corrupted columns and plots are left out)"
    parts = []
    sub = frame[frame["c_source"].notna()]
    for key, g in sub.groupby(["c_source", "c_set", "c_subset", "c_severities"], sort=True, dropna=False):
        src, cset, subset, sev = key
        what = "regenerated by benchmark.corruptions (not the released files)" if src == "regenerated" else f"{src} corrupted files"
        size = f"a fixed random sample of {int(subset)} test images, the same for every corruption x severity" if subset else "all test images"
        parts.append(f"{what}; set {cset}, severities {sev}; {size} ({len(g)} records)")
    missing = frame[frame["c_source"].isna()]
    if len(missing):
        parts.append("no corrupted metrics for: " + ", ".join(sorted({row_label(r) for _, r in missing.iterrows()})))
    return "; ".join(parts)


def comparability_fact(dataset: str, backbone: str, frame: pd.DataFrame) -> str:
    """A plain statement whether this block can be read beside published numbers, with the reasons."""
    recipe = paper_recipe(dataset, backbone)
    cpu = set(frame["device"].astype(str)) == {"cpu"}
    kind = "CPU-sized run" if cpu else "Reduced-budget run"
    if recipe is None:
        return f"{kind}: not comparable with published numbers (no published recipe for {dataset} with {backbone})."
    reasons = []
    epochs = [e for e in frame["epochs"] if isinstance(e, (int, float))]
    if not epochs or min(epochs) < recipe["min_epochs"]:
        reasons.append(f"epochs {_join(frame['epochs'])} (paper: {recipe['min_epochs']}+)")
    if set(frame["data_source"].astype(str)) != {"official"}:
        reasons.append(f"data {_join(frame['data_source'])} (paper: official)")
    subsets = [s for s in frame.get("c_subset", pd.Series(dtype=object)) if isinstance(s, (int, float)) and not math.isnan(s) and s > 0]
    if subsets:
        reasons.append(f"corrupted subset of {_join(int(s) for s in subsets)} images (paper: all)")
    if reasons:
        return f"{kind}: not comparable with published numbers: " + "; ".join(reasons) + f". Paper recipe: {recipe['text']}."
    return f"Paper-sized budget ({recipe['text']}); compare with the reported rows."


def block_facts(dataset: str, backbone: str, frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    commits = sorted({(str(r)[:12], bool(d)) for r, d in zip(frame["git_commit"], frame["git_dirty"])})
    facts = [
        ("Comparability", comparability_fact(dataset, backbone, frame)),
        ("Data", data_fact(frame)),
        ("Corrupted data", corrupted_fact(frame)),
        ("Budget", f"backbone {backbone}; epochs {_join(frame['epochs'])}; batch {_join(frame['batch_size'])}; "
                   f"precision {_join(frame['precision'])}"),
        ("Seeds", f"{_join(frame['seed'])} ({len(frame)} record{'s' if len(frame) != 1 else ''})"),
        ("Provenance", "git " + ", ".join(f"{c}{' (dirty)' if d else ''}" for c, d in commits) + f"; devices {_join(frame['device_name'])} "
                       f"({_join(frame['device'])}); torch {_join(frame['torch'])}; records created {_span(frame['created'])}"),
    ]
    if frame.get("mCE") is not None and frame["mCE"].notna().any():
        base = (f"AlexNet ({ALEXNET_SOURCE})" if dataset in ALEXNET_BASELINE_DATASETS
                else f"this block's {BASELINE_METHOD} runs on the same corrupted data (mean over their seeds)")
        facts.append(("mCE", f"corruption error relative to {base}, mean over corruptions, x100; rel. mCE subtracts each model's clean error"))
    ood_scores = sorted({str(v) for c in frame.columns if c.startswith("ood_score_") for v in frame[c].dropna()})
    if ood_scores:
        facts.append(("OOD", f"AUROC with OOD as positives, score: {', '.join(ood_scores)}"))
    if reported_for(dataset, backbone):
        facts.append(("Reported rows", "published figures (source in the row), not ranked; their cost columns are the paper's"))
    return facts


def _span(values: Iterable[Any]) -> str:
    v = sorted(str(x) for x in values if isinstance(x, str))
    if not v:
        return "not recorded"
    return v[0][:10] if v[0][:10] == v[-1][:10] else f"{v[0][:10]} to {v[-1][:10]}"


def suite_facts(suite: str) -> list[tuple[str, str]]:
    """Description and budget note of ``benchmark/suites/<suite>.toml`` when such a suite exists."""
    import tomllib

    for path in sorted(SUITES_DIR.glob("*.toml"), key=lambda p: (p.stem != suite, p.name)):
        try:
            meta = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if meta.get("name", path.stem) == suite:
            return [(k.replace("_", " ").capitalize(), str(meta[k])) for k in ("description", "budget_note") if meta.get(k)]
    return []


def build_boards(records: list[dict[str, Any]], problems: list[tuple[str, str]], failed: list[dict[str, Any]] | None = None,
                 suites: list[str] | None = None, results_dir: Path | None = None) -> list[SuiteBoard]:
    """One board per suite (every suite with records, or exactly ``suites``)."""
    problems = list(problems)
    frame = records_frame(records, problems)
    names = sorted(set(suites or []) | (set() if suites else set(frame["suite"]) | {r["identity"]["suite"] for r in failed or []}))
    known = set(names) | set(frame["suite"]) | {r["identity"]["suite"] for r in failed or []}
    boards = []
    for suite in names:
        sub = frame[frame["suite"] == suite] if len(frame) else frame
        blocks = [build_block(suite, d, b, g.reset_index(drop=True), records) for (d, b), g in sub.groupby(["dataset", "backbone"], sort=True)]
        mine = [(_rel(p, results_dir), _reason(p, why)) for p, why in problems if _problem_suite(p, results_dir) in (suite, None)
                or _problem_suite(p, results_dir) not in known]  # a file outside any known suite's folder is shown everywhere
        fails = [(_rel(r.get("_path", r["run_id"]), results_dir), _failure(r)) for r in failed or [] if r["identity"]["suite"] == suite]
        facts = [("Suite", suite), *suite_facts(suite),
                 ("Table", f"mean ± sample std (ddof=1) over seeds; rows ranked by clean {RANK_BY.upper()}; best measured value per column in bold")]
        boards.append(SuiteBoard(suite, blocks, facts, sorted(mine), sorted(fails)))
    return boards


def _rel(path: str, root: Path | None) -> str:
    try:
        return str(Path(path).relative_to(root)) if root else str(path)
    except ValueError:
        return str(path)


def _problem_suite(path: str, root: Path | None) -> str | None:
    rel = Path(_rel(path, root))
    return rel.parts[0] if root and len(rel.parts) > 1 else None


def _reason(path: str, why: str) -> str:
    """The reason without a leading file name (the file is listed beside it)."""
    for prefix in (f"{path}: ", f"{Path(path).name}: "):
        if why.startswith(prefix):
            return why[len(prefix):]
    return why


def _failure(rec: dict[str, Any]) -> str:
    err = rec.get("error") or {}
    return f"{err.get('type', 'error')}: {err.get('message', '')}".strip()


# ------------------------------------------------------------------------------------------------
# 4. rendering (the only place values are rounded)
# ------------------------------------------------------------------------------------------------


def _si(v: float) -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _duration(v: float, unit_of: float | None = None) -> str:
    """Seconds as s, min or h (chosen by ``unit_of``, default ``v``: a spread takes its mean's unit)."""
    ref = v if unit_of is None else unit_of
    if ref < 60:
        return f"{v:.3g} s"
    if ref < 3600:
        return f"{v / 60:.3g} min"
    return f"{v / 3600:.3g} h"


def _decimals(v: float, digits: int = 3) -> int:
    """Decimals that show ``v`` with ``digits`` significant digits (0 for large values)."""
    return max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else digits - 1


FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.2f}", "f1": lambda v: f"{v:.1f}", "f3": lambda v: f"{v:.3f}", "f4": lambda v: f"{v:.4f}",
    "int": lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}", "si": _si, "ms": lambda v: f"{v:.{_decimals(v)}f}", "duration": _duration,
}
# Spreads printed with the mean's decimals where the mean uses significant digits.
SPREAD_FORMATS: dict[str, Callable[[float, float], str]] = {
    "ms": lambda s, v: f"{s:.{_decimals(v)}f}", "duration": lambda s, v: _duration(s, unit_of=v),
}


def format_value(row: pd.Series, col: Column) -> str:
    """``mean ± std`` (std only with 2+ seeds), ``(n=k)`` when fewer seeds than the row has, ``—`` when absent."""
    v = row.get(col.key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    fmt = FORMATS[col.kind]
    text = fmt(float(v))
    std = row.get(f"{col.key}_std")
    if row["kind"] == "measured" and col.spread and std is not None and not math.isnan(std):
        spread = SPREAD_FORMATS.get(col.kind)
        text += f" ± {spread(float(std), float(v)) if spread else fmt(float(std))}"
    n = row.get(f"{col.key}_n")
    if row["kind"] == "measured" and n is not None and not math.isnan(n) and int(n) < int(row["seeds"]):
        text += f" (n={int(n)})"
    if col.key == "train_seconds" and row.get("reused_members") is True:
        text += " ‡"
    return text


@dataclass(frozen=True)
class Cell:
    text: str
    bold: bool = False


def table_cells(block: Block) -> tuple[list[str], list[list[Cell]], int]:
    """(header, rows of cells, number of measured rows) for one block."""
    header = ["#", "Method", "Variant", "Setting", "Source", "Seeds"] + [c.label for c in block.columns]
    drop_setting = not block.table["setting"].astype(bool).any()
    rows, rank = [], 0
    for _, row in block.table.iterrows():
        measured = row["kind"] == "measured"
        rank += measured
        cells = [Cell(str(rank) if measured else ""), Cell(str(row["method"])), Cell(str(row["variant"]) or "—"), Cell(str(row["setting"]) or "—"),
                 Cell("measured" if measured else str(row["source"])), Cell(str(int(row["seeds"])) if measured else "—")]
        cells += [Cell(format_value(row, c), bool(row.get(f"best_{c.key}", False))) for c in block.columns]
        rows.append(cells)
    if drop_setting:
        header.pop(3)
        rows = [r[:3] + r[4:] for r in rows]
    return header, rows, rank


LEGEND = ("Acc, cA, AUROC in %; NLL in nats; ECE top-label, 15 bins; Brier summed over classes; mCE x100 (lower is better); "
          "FLOPs per test example; ms/ex: measured median test time per example at batch 1 and a large batch; "
          "train time: wall time of the run's training (‡: some members reused from other runs, not counted). "
          "(n=k): only k of the row's seeds have this metric. —: not measured.")


def render_markdown(board: SuiteBoard) -> str:
    out = [f"# Leaderboard: {board.suite}", "", "Generated from the run records by `python -m benchmark leaderboard`; do not edit.", ""]
    out += [f"- **{k}**: {v}" for k, v in board.facts]
    if not board.blocks:
        out += ["", "No completed records for this suite."]
    for block in board.blocks:
        header, rows, _ = table_cells(block)
        out += ["", f"## {block.title}", ""] + [f"- **{k}**: {v}" for k, v in block.facts] + [""]
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        out.append("| " + " | ".join(esc(h) for h in header) + " |")
        out.append("|" + "|".join("---" if i < (len(header) - len(block.columns)) else "---:" for i in range(len(header))) + "|")
        out += ["| " + " | ".join(f"**{esc(c.text)}**" if c.bold else esc(c.text) for c in r) + " |" for r in rows]
    out += ["", f"_{LEGEND}_"]
    out += _problems_markdown(board)
    return "\n".join(out) + "\n"


def _problems_markdown(board: SuiteBoard) -> list[str]:
    out = []
    if board.problems:
        out += ["", "## Records left out (malformed)", ""] + [f"- `{p}`: {why}" for p, why in board.problems]
    if board.failed:
        out += ["", "## Failed runs (not in the tables)", ""] + [f"- `{p}`: {why}" for p, why in board.failed]
    return out


def render_csv(board: SuiteBoard) -> str:
    """Every row at full precision: mean, std, count and best flag per metric."""
    frames = []
    for block in board.blocks:
        t = block.table.copy()
        keep = list(GROUP_KEYS) + ["kind", "source", "seeds", "seed_list"]
        for c in block.columns:
            keep += [c.key] + [k for k in (f"{c.key}_std", f"{c.key}_n") if k in t] + [f"best_{c.key}"]
        for k in keep:
            if k not in t:
                t[k] = math.nan
        frames.append(t[keep])
    if not frames:
        return ",".join([*GROUP_KEYS, "kind", "source", "seeds", "seed_list"]) + "\n"
    out = pd.concat(frames, ignore_index=True)
    return out.to_csv(index=False, lineterminator="\n")


def render_html_tables(board: SuiteBoard) -> str:
    """The tables and their facts as an HTML fragment (used by leaderboard.html and the page)."""
    e = html.escape
    out = [_facts_html(board.facts)]
    if not board.blocks:
        out.append("<p>No completed records for this suite.</p>")
    for block in board.blocks:
        header, rows, measured = table_cells(block)
        out.append(f'<section class="block" id="table-{e(block.slug)}"><h2>{e(block.title)}</h2>{_facts_html(block.facts)}')
        out.append(f'<div class="scroll"><table class="leaderboard" data-block="{e(block.slug)}"><thead><tr>' + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for i, r in enumerate(rows):
            cls = "measured" if i < measured else "reported"
            out.append(f'<tr class="{cls}">' + "".join(f"<td><strong>{e(c.text)}</strong></td>" if c.bold else f"<td>{e(c.text)}</td>" for c in r) + "</tr>")
        out.append("</tbody></table></div></section>")
    out.append(f'<p class="legend">{e(LEGEND)}</p>')
    return "\n".join(out)


def _facts_html(facts: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts) + "</dl>"


def render_html(board: SuiteBoard) -> str:
    from .page import html_document, problems_html

    return html_document(f"Leaderboard: {board.suite}", render_html_tables(board) + problems_html(board))


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "--", "‡": r"$\ddagger$"}


def tex_escape(s: str) -> str:
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in s)


def render_latex(board: SuiteBoard) -> str:
    """One booktabs table per block; the facts go in the caption."""
    out = [f"% Leaderboard {board.suite}: generated from the run records by plures; do not edit.", "% Needs \\usepackage{booktabs}."]
    for k, v in board.facts:
        out.append(f"% {k}: {v}")
    for block in board.blocks:
        header, rows, measured = table_cells(block)
        caption = f"{block.title}. " + " ".join(f"{k}: {v.rstrip('.')}." for k, v in block.facts if k in ("Comparability", "Data", "Corrupted data", "Budget", "Seeds"))
        label = re.sub(r"[^A-Za-z0-9]+", "-", f"{board.suite}-{block.slug}")
        out += ["", r"\begin{table}[t]", r"\centering", r"\scriptsize", f"\\caption{{{tex_escape(caption)}}}",
                f"\\label{{tab:{label}}}",
                r"\begin{tabular}{" + "l" * (len(header) - len(block.columns)) + "r" * len(block.columns) + "}", r"\toprule",
                " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
        for i, r in enumerate(rows):
            if i == measured and i > 0:
                out.append(r"\midrule")
            out.append(" & ".join(f"\\textbf{{{tex_escape(c.text)}}}" if c.bold else tex_escape(c.text) for c in r) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------
# entry points
# ------------------------------------------------------------------------------------------------


def load_boards(results_dir: Path | str, suites: list[str] | None = None, *, warn: bool = True) -> list[SuiteBoard]:
    """Read the records under ``results_dir`` and build one board per suite (malformed records left out)."""
    results_dir = Path(results_dir)
    loaded = load_records(results_dir, include_failed=True)
    done = [r for r in loaded.records if r["status"] == "completed"]
    failed = [r for r in loaded.records if r["status"] != "completed"]
    boards = build_boards(done, loaded.problems, failed, suites, results_dir)
    if warn:
        for path, reason in sorted({p for b in boards for p in b.problems}):
            print(f"warning: left out {path}: {reason}")
    return boards


def write_tables(board: SuiteBoard, folder: Path) -> list[Path]:
    return [atomic_write_text(folder / "leaderboard.md", render_markdown(board)),
            atomic_write_text(folder / "leaderboard.csv", render_csv(board)),
            atomic_write_text(folder / "leaderboard.html", render_html(board)),
            atomic_write_text(folder / "leaderboard.tex", render_latex(board))]


def write_leaderboards(results_dir: Path, out_dir: Path, suites: list[str] | None = None, *, plots: bool = True) -> list[Path]:
    """Write ``<out>/<suite>/{leaderboard.md,csv,html,tex, index.html, plots/}``; returns the tables and pages."""
    from .page import write_page
    from .plots import write_block_plots

    written = []
    for board in load_boards(results_dir, suites):
        folder = Path(out_dir) / board.suite
        written += write_tables(board, folder)
        figures = write_block_plots(board, folder / "plots") if plots else []
        written.append(write_page(board, folder, figures))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.leaderboard RESULTS_DIR OUT_DIR [SUITE ...]``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(main.__doc__)
        return 2
    for path in write_leaderboards(Path(args[0]), Path(args[1]), args[2:] or None):
        print(f"leaderboard: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

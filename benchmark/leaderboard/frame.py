"""One row per run record at full precision: the facts the tables are made of.

:func:`record_row` reads one record that :func:`benchmark.records.validate` accepted (identity
fields and their types are checked there) and raises :class:`RecordError` naming what else is
unusable; :func:`record_rows` collects the usable ones and labels rows of one method whose configs
differ (:func:`settings`). mCE compares records with each other, so the complete frame
(:func:`benchmark.leaderboard.mce.records_frame`) is assembled in :mod:`.mce`.

The metrics read are the declared ones (:func:`benchmark.evaluation.metric_specs.metric_specs`):
every metric in ``metrics.clean`` (required for the built-ins, which every record carries), and
every declared corrupted summary, taken from ``metrics.corrupted.summary`` or else averaged over
the corrupted cells.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.config import EXECUTION_TRAIN, TRAIN_KEYS_ADDED
from ..evaluation.metric_specs import metric_specs
from ..evaluation.predictions import sidecar_problem
from ..records import RecordError
from .columns import MI_OOD_PREFIX, OOD_PREFIX
from .costs import latency_source, record_latency

GROUP_KEYS = ("suite", "dataset", "backbone", "method", "variant", "setting")
ROW_IDENTITY = ("suite", "dataset", "backbone", "method", "variant", "members", "seed")
FRAME_ORDER = ["suite", "dataset", "backbone", "method", "variant", "setting", "seed", "path"]
# Read from every corrupted cell (mCE reads accuracy, the severity plot all three).
CELL_METRICS = ("accuracy", "nll", "ece")
# What was run, per row of every export (the CSV's columns; the Markdown, HTML and LaTeX say it in
# the block's facts): export column -> frame key. Subsets: 0 = all images; ``*_split_images`` the
# full split the subset was drawn from; corrupted: the source, set, severities and image sample.
RUN_FACTS = {"data_source": "data_source", "train_subset": "train_subset", "train_images": "train_images",
             "train_split_images": "train_split_images", "subset_seed": "subset_seed", "test_subset": "test_subset",
             "test_images": "test_size", "test_split_images": "test_split_images", "test_subset_seed": "test_subset_seed",
             "epochs": "epochs", "batch_size": "batch_size", "precision": "precision", "corrupted_source": "c_source",
             "corrupted_set": "c_set", "corrupted_severities": "c_severities", "corrupted_subset": "c_subset"}
# Config keys that do not shape a result (they never split a row).
# The execution keys (core.config.EXECUTION_TRAIN: layout, compilation) are not part of a run's id either, so
# records made either way are one row's seeds.
NON_SHAPING = ("run.seed", "run.name", "run.suite", "data.download", "eval.latency_repeats", "eval.latency_batch", "eval.batch_size",
               "train.nan_check_every", "eval.ood", "train.log", "eval.predictions", "eval.predictions_dtype",
               *(f"train.{k}" for k in EXECUTION_TRAIN))


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


# Config keys added after records were first written, with the value that means "as before": a
# record that lacks the key and one that holds this value were configured alike.
# The train keys are the run id's (core.config.TRAIN_KEYS_ADDED).
ADDED_KEYS = {"data.train_subset": 0, "data.subset_seed": 0, "eval.test_subset": 0, "eval.test_subset_seed": 0,
              **{f"train.{k}": v for k, v in TRAIN_KEYS_ADDED.items()}}


def config_fingerprint(config: dict[str, Any]) -> str:
    """The shaping part of a resolved config as canonical JSON (seed, name and suite excluded; keys
    added later count only when set to something other than their old behaviour)."""
    flat = {k: v for k, v in flatten(config).items() if k not in NON_SHAPING and not (k in ADDED_KEYS and v == ADDED_KEYS[k])}
    return json.dumps(flat, sort_keys=True, default=str)


def corrupted_cells(rec: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """``{(corruption, severity): metrics}`` of a record's corrupted evaluation ({} when absent)."""
    per = _dig(rec, "metrics", "corrupted", "per")
    if not isinstance(per, dict):
        return {}
    return {(c, int(s)): m for c, sev in sorted(per.items()) if isinstance(sev, dict) for s, m in sorted(sev.items(), key=lambda x: int(x[0]))}


def corrupted_summary(rec: dict[str, Any], where: str) -> dict[str, float]:
    """Every declared corrupted summary of a record: the stored one, else the mean over its cells
    (NaN when a cell lacks the metric); {} without corrupted metrics."""
    corrupted = rec["metrics"].get("corrupted")
    if corrupted is None:
        return {}
    if not isinstance(corrupted, dict):
        raise RecordError(f"{where}: metrics.corrupted must be an object")
    cells = corrupted_cells(rec)
    if not cells and not isinstance(corrupted.get("summary"), dict):
        raise RecordError(f"{where}: metrics.corrupted has neither per-corruption metrics nor a summary")
    for (c, s), m in cells.items():
        for k in CELL_METRICS:
            _number(_dig(m, k), f"{where}: metrics.corrupted.per.{c}.{s}.{k}")
    summary = corrupted.get("summary") or {}
    out = {}
    for spec in metric_specs():
        if not spec.summary:
            continue
        short = spec.summary
        if short in summary:
            out[short] = _number(summary[short], f"{where}: metrics.corrupted.summary.{short}")
        else:  # the mean over the evaluated corruptions x severities, as the summary defines it
            vals = [m.get(spec.key) for m in cells.values()]
            out[short] = float(np.mean(vals)) if vals and all(isinstance(v, (int, float)) for v in vals) else math.nan
    return out


def record_row(rec: dict[str, Any]) -> dict[str, Any]:
    """The table facts of one validated record at full precision; RecordError names what is unusable."""
    where = Path(rec.get("_path", rec.get("run_id", "<record>"))).name
    ident, metrics, cost = rec["identity"], rec["metrics"], rec["cost"] if isinstance(rec["cost"], dict) else {}
    clean = metrics.get("clean")
    if not isinstance(clean, dict):
        raise RecordError(f"{where}: metrics.clean must be an object")
    row: dict[str, Any] = {k: ident[k] for k in ROW_IDENTITY}
    for spec in metric_specs():  # the built-ins are in every record; a metric added later may be absent from older ones
        row[spec.key] = _number(clean.get(spec.key), f"{where}: metrics.clean.{spec.key}", required=spec.builtin)
    if not 0.0 <= row["accuracy"] <= 1.0:
        raise RecordError(f"{where}: metrics.clean.accuracy must be a fraction in [0, 1], found {row['accuracy']!r}")
    row.update(corrupted_summary(rec, where))
    corrupted = metrics.get("corrupted") or {}
    row.update({"c_source": corrupted.get("source"), "c_set": corrupted.get("corruption_set"), "c_subset": corrupted.get("subset"),
                "c_severities": " ".join(map(str, corrupted.get("severities", []))) or None})
    ood = metrics.get("ood") if isinstance(metrics.get("ood"), dict) else {}
    for name, m in sorted(ood.items()):
        if isinstance(m, dict) and "auroc" not in m and isinstance(m.get("max_prob"), dict):  # one entry per score: the maximum probability's
            row[OOD_PREFIX + name] = _number(_dig(m, "max_prob", "auroc"), f"{where}: metrics.ood.{name}.max_prob.auroc", required=False)
            row[f"ood_score_{name}"] = "max_prob"
        else:
            row[OOD_PREFIX + name] = _number(_dig(m, "auroc"), f"{where}: metrics.ood.{name}.auroc", required=False)
            row[f"ood_score_{name}"] = _dig(m, "score")
        row[MI_OOD_PREFIX + name] = _number(_dig(m, "mutual_information", "auroc"), f"{where}: metrics.ood.{name}.mutual_information.auroc",
                                            required=False)
    lat = record_latency(rec)  # the interleaved cost pass's figures when it measured this record, else cost's
    row.update({
        "params": _number(cost.get("params"), f"{where}: cost.params", required=False),
        "flops": _number(cost.get("flops_per_example"), f"{where}: cost.flops_per_example", required=False),
        "forward_passes": _number(cost.get("forward_passes"), f"{where}: cost.forward_passes", required=False),
        "ms_b1": _number(_dig(lat, "ms_per_example_b1", "median"), f"{where}: cost.ms_per_example_b1.median", required=False),
        "ms_large": _number(_dig(lat, "ms_per_example_large", "median"), f"{where}: cost.ms_per_example_large.median", required=False),
        "large_batch": _dig(lat, "ms_per_example_large", "batch_size"), "latency_source": latency_source(rec),
        "train_seconds": _number(cost.get("train_seconds"), f"{where}: cost.train_seconds", required=False),
        "reused_members": any(bool(_dig(m, "reused")) for m in (_dig(rec, "training", "members") or []) if isinstance(m, dict)),
    })
    prov, data, budget = rec.get("provenance") or {}, rec.get("data") or {}, rec.get("budget") or {}
    train_cfg = _dig(rec, "config", "train") or {}
    row.update(subset_facts(data, budget))
    row.update({
        "data_source": data.get("source"), "test_size": data.get("test_size"), "num_classes": data.get("num_classes"),
        "epochs": budget.get("epochs", train_cfg.get("epochs")), "batch_size": budget.get("batch_size", train_cfg.get("batch_size")),
        "precision": budget.get("precision", train_cfg.get("precision")),
        "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"), "device": prov.get("device"),
        "device_name": prov.get("device_name"), "torch": prov.get("torch"), "created": rec.get("created"), "run_id": rec.get("run_id"),
        "fingerprint": config_fingerprint(rec["config"] if isinstance(rec["config"], dict) else {}), "path": rec.get("_path"),
    })
    return row


def subset_facts(data: dict[str, Any], budget: dict[str, Any]) -> dict[str, Any]:
    """The training and clean test subsets of a record: ``train_subset``/``test_subset`` (0: all
    images), ``train_images`` (used), ``*_split_images`` (the split drawn from) and the subset seeds
    (None without a subset); a record from before subsets existed used all images."""
    out: dict[str, Any] = {}
    subsets = data.get("subsets") if isinstance(data.get("subsets"), dict) else {}
    for split, seed_key in (("train", "subset_seed"), ("test", "test_subset_seed")):
        sub = subsets.get(split) if isinstance(subsets.get(split), dict) else {}
        used = budget.get(f"{split}_images", data.get(f"{split}_size"))
        out[f"{split}_subset"] = budget.get(f"{split}_subset", sub.get("size", 0))
        out[f"{split}_split_images"] = sub.get("of", used)
        out[seed_key] = sub.get("seed")
        if split == "train":
            out["train_images"] = used
    return out


def sidecar_problems(records: list[dict[str, Any]], *, required: bool = False) -> list[tuple[str, str]]:
    """(file, reason) for each record whose predictions sidecar is missing or does not match its
    sha256 (:func:`benchmark.evaluation.predictions.sidecar_problem`): such predictions are never
    used. A record without a ``predictions`` entry (written before predictions were stored) is
    listed ("no sidecar") only with ``required``, by a feature that needs the predictions."""
    out = []
    for rec in records:
        why = sidecar_problem(rec, required=required)
        if why:
            out.append((str(rec.get("_path", rec.get("run_id"))), why + " (the record's metrics are shown; its stored predictions are not used)"))
    return out


def empty_frame() -> pd.DataFrame:
    """The records frame of no records (identity and clean metric columns)."""
    return pd.DataFrame(columns=[*GROUP_KEYS, "members", "seed", *(m.key for m in metric_specs())])


def record_rows(records: list[dict[str, Any]], problems: list[tuple[str, str]] | None = None) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """(one row per usable record in input order, with ``setting``; those records), no mCE yet.

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
        return empty_frame(), []
    df = pd.DataFrame(rows)
    df["setting"] = settings(df)
    return df, kept


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
    """Long format, one row per (record, corruption, severity): identity, every declared metric, n.

    For slicing (one corruption, one method); records without corrupted metrics give no rows.
    """
    keys = [m.key for m in metric_specs()]
    rows = []
    for rec in records:
        ident = rec["identity"]
        for (c, s), m in corrupted_cells(rec).items():
            rows.append({**{k: ident[k] for k in ("suite", "dataset", "backbone", "method", "variant", "seed")}, "corruption": c, "severity": s,
                         **{k: m.get(k) for k in (*keys, "n")}, "path": rec.get("_path")})
    cols = ["suite", "dataset", "backbone", "method", "variant", "seed", "corruption", "severity", *keys, "n", "path"]
    return pd.DataFrame(rows, columns=cols).sort_values(cols[:8], kind="stable").reset_index(drop=True)

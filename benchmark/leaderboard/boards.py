"""Boards: per suite, one block per (dataset, backbone) with its measured rows ranked by clean NLL,
the best measured value per column marked, "reported" rows from :mod:`.reported` where dataset and
backbone match (never ranked), and the header facts (data, budget, seeds, provenance, mCE basis).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..core.config import SUITES_DIR
from ..records import load_records
from .aggregate import aggregate, single
from .columns import COST_COLUMNS, DEE_COLUMN, MI_OOD_PREFIX, OOD_PREFIX, Column, metric_columns, ood_column
from .comparisons import DEFAULT_RESAMPLES, PairedTable, attach_comparisons, clear_cache
from .costs import attach_cost_pass, default_cost_dir, latency_facts
from .frame import sidecar_problems
from .mce import mce_basis, records_frame
from .reported import REPORTED_CLASSES, Reported, paper_recipe, reported_for

RANK_BY = "nll"
DATA_SOURCES = {"official": "official test set",
                "official-val": "the release's labelled val split as the test set (its test split is unlabelled), as published results use it",
                "jpeg-copy": "JPEG copy (re-encoded; not comparable with official numbers)"}
OFFICIAL_SOURCES = {"official", "official-val"}  # the data published results are measured on


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
    paired: PairedTable | None = None  # each row's paired difference against the deterministic row (:mod:`.comparisons`)

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
    """One suite's leaderboard: its blocks, header facts, and what was left out."""

    suite: str
    blocks: list[Block]
    facts: list[tuple[str, str]]
    problems: list[tuple[str, str]] = field(default_factory=list)  # left out: (file, reason)
    failed: list[tuple[str, str]] = field(default_factory=list)  # failed runs: (file, error)


def row_label(row: pd.Series | dict[str, Any]) -> str:
    """``method [variant] [setting]``."""
    parts = [str(row["method"])] + [str(row[k]) for k in ("variant", "setting") if row.get(k)]
    return " ".join(parts)


def mark_best(table: pd.DataFrame, columns: list[Column]) -> pd.DataFrame:
    """``best_<key>``: the best mean among measured rows (ties all marked; needs >= 2 rows with a value)."""
    measured = table["kind"] == "measured"
    flags: dict[str, np.ndarray] = {}
    for col in columns:
        flag = np.zeros(len(table), dtype=bool)
        vals = table.loc[measured, col.key].astype(float)
        if col.better and vals.notna().sum() >= 2:
            best = vals.max() if col.better == "max" else vals.min()
            flag = (measured & np.isclose(table[col.key].astype(float), best, rtol=1e-12, atol=0.0)).to_numpy()
        flags[f"best_{col.key}"] = flag
    # one concat, not a column insert per flag (pandas warns of a fragmented frame for wide blocks)
    return pd.concat([table.drop(columns=[k for k in flags if k in table]), pd.DataFrame(flags, index=table.index)], axis=1)


def reported_rows(dataset: str, backbone: str, suite: str) -> list[dict[str, Any]]:
    return [reported_row(r, suite) for r in reported_for(dataset, backbone)]


def reported_left_out(dataset: str, frame: pd.DataFrame) -> str | None:
    """Why the published rows of ``dataset`` do not belong in this block (its records have another
    number of classes than the published figures, e.g. a 100-class subset), else None."""
    want = REPORTED_CLASSES.get(dataset)
    have = sorted({int(n) for n in frame.get("num_classes", pd.Series(dtype=object)) if isinstance(n, (int, float)) and not math.isnan(n)})
    if want is None or not have or have == [want]:
        return None
    return (f"left out: the published figures are on all {want} classes of {dataset}, these records on "
            f"{', '.join(str(n) for n in have)} classes")


def block_reported(dataset: str, backbone: str, frame: pd.DataFrame) -> bool:
    """Whether this block shows the published rows of its dataset and backbone."""
    return bool(reported_for(dataset, backbone)) and reported_left_out(dataset, frame) is None


def reported_row(r: Reported, suite: str) -> dict[str, Any]:
    row = {"suite": suite, "dataset": r.dataset, "backbone": r.backbone, "method": r.method, "variant": r.variant, "setting": "",
           "kind": "reported", "source": r.label, "seeds": 0, "seed_list": "", "members": float(r.members)}
    row.update({k: float(v) for k, v in r.metrics.items()})
    return row


def block_columns(table: pd.DataFrame) -> list[Column]:
    """The columns with at least one measured value (others would be empty)."""
    measured = table[table["kind"] == "measured"]
    cols = [c for c in metric_columns() if c.key in measured and measured[c.key].notna().any()]
    if "dee_display" in measured and measured["dee_display"].notna().any():
        cols.insert(next((i + 1 for i, c in enumerate(cols) if c.key == "cal_nll"), len(cols)), DEE_COLUMN)
    for prefix in (OOD_PREFIX, MI_OOD_PREFIX):
        ood = sorted(k for k in measured.columns if k.startswith(prefix) and f"{k}_n" in measured  # a value, not its _std, _low, _high
                     and measured[k].notna().any())
        cols += [ood_column(k) for k in ood]
    large = single(measured["large_batch"]) if "large_batch" in measured else None
    for c in COST_COLUMNS:
        if c.key in measured and measured[c.key].notna().any():
            cols.append(Column(c.key, f"ms/ex b={int(large)}", c.better, c.kind) if c.key == "ms_large" and large else c)
    return cols


def build_block(suite: str, dataset: str, backbone: str, frame: pd.DataFrame, records: list[dict[str, Any]],
                n_resamples: int = DEFAULT_RESAMPLES) -> Block:
    """The block of one (dataset, backbone) from its per-record rows; DEE and the paired differences
    against the deterministic row from the sidecars (``n_resamples`` bootstrap resamples)."""
    agg = aggregate(frame)
    agg = agg.sort_values([RANK_BY, "method", "variant", "setting"], kind="stable", na_position="last").reset_index(drop=True)
    table = pd.concat([agg, pd.DataFrame(reported_rows(dataset, backbone, suite))], ignore_index=True) if block_reported(dataset, backbone, frame) else agg
    paths = set(frame["path"])
    recs = [r for r in records if r.get("_path") in paths]
    table, paired, comparison_facts = attach_comparisons(table.reset_index(drop=True), frame, recs, row_label, n_resamples)
    columns = block_columns(table)
    table = mark_best(table, columns)
    return Block(suite, dataset, backbone, table, columns, block_facts(dataset, backbone, frame, recs) + comparison_facts, recs, frame, paired)


# ------------------------------------------------------------------------------------------------
# header facts
# ------------------------------------------------------------------------------------------------


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
    if not set(frame["data_source"].astype(str)) <= OFFICIAL_SOURCES:
        reasons.append(f"data {_join(frame['data_source'])} (paper: official)")
    subsets = [s for s in frame.get("c_subset", pd.Series(dtype=object)) if isinstance(s, (int, float)) and not math.isnan(s) and s > 0]
    if subsets:
        reasons.append(f"corrupted subset of {_join(int(s) for s in subsets)} images (paper: all)")
    if reasons:
        return f"{kind}: not comparable with published numbers: " + "; ".join(reasons) + f". Paper recipe: {recipe['text']}."
    return f"Paper-sized budget ({recipe['text']}); compare with the reported rows."


def block_facts(dataset: str, backbone: str, frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The header facts of one block: comparability, data, subsets, corrupted data, budget, seeds, provenance, mCE, OOD."""
    commits = sorted({(str(r)[:12], bool(d)) for r, d in zip(frame["git_commit"], frame["git_dirty"])})
    subsets = subset_fact(records)
    facts = [
        ("Comparability", comparability_fact(dataset, backbone, frame)),
        ("Data", data_fact(frame)),
        *([("Subsets", subsets)] if subsets else []),
        ("Corrupted data", corrupted_fact(frame)),
        ("Budget", f"backbone {backbone}; epochs {_join(frame['epochs'])}; batch {_join(frame['batch_size'])}; "
                   f"precision {_join(frame['precision'])}"),
        ("Seeds", f"{_join(frame['seed'])} ({len(frame)} record{'s' if len(frame) != 1 else ''})"),
        ("Provenance", "git " + ", ".join(f"{c}{' (dirty)' if d else ''}" for c, d in commits) + f"; devices {_join(frame['device_name'])} "
                       f"({_join(frame['device'])}); torch {_join(frame['torch'])}; records created {_span(frame['created'])}"),
    ]
    if frame.get("mCE") is not None and frame["mCE"].notna().any():
        facts.append(("mCE", f"corruption error relative to {mce_basis(dataset)}, mean over corruptions, x100; "
                             "rel. mCE subtracts each model's clean error"))
    ood_scores = sorted({str(v) for c in frame.columns if c.startswith("ood_score_") for v in frame[c].dropna()})
    if ood_scores:
        facts.append(("OOD", f"AUROC with OOD as positives, score: {', '.join(ood_scores)}"))
    facts += latency_facts(frame, records)  # where the ms/ex columns come from (interleaved cost pass or per run), and its check
    if reported_for(dataset, backbone):
        facts.append(("Reported rows", reported_left_out(dataset, frame)
                      or "published figures (source in the row), not ranked; their cost columns are the paper's"))
    return facts


def subset_fact(records: list[dict[str, Any]]) -> str | None:
    """Which records trained or were evaluated on a subset (``data.subsets`` of the record), e.g.
    ``train 2,000 of 50,000 images; test 1,000 of 10,000 (seeded, stratified): mimo (1 of 6 records)``;
    ``None`` when no record of the block used one."""
    groups: dict[str, list[str]] = {}
    for rec in records:
        subs = (rec.get("data") or {}).get("subsets")
        if not isinstance(subs, dict) or not subs:
            continue
        parts = []
        for split in ("train", "test"):
            s = subs.get(split)
            if isinstance(s, dict) and isinstance(s.get("size"), int) and isinstance(s.get("of"), int):
                parts.append(f"{split} {s['size']:,} of {s['of']:,}" + (" images" if not parts else ""))
        if parts:
            ident = rec.get("identity") or {}
            label = " ".join(str(x) for x in (ident.get("name") or ident.get("method"), ident.get("variant")) if x)
            groups.setdefault("; ".join(parts) + " (seeded, stratified)", []).append(label)
    if not groups:
        return None
    return "; ".join(f"{what}: {', '.join(sorted(set(labels)))} ({len(labels)} of {len(records)} record{'s' if len(records) != 1 else ''})"
                     for what, labels in sorted(groups.items()))


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


# ------------------------------------------------------------------------------------------------
# boards of a suite
# ------------------------------------------------------------------------------------------------


def build_boards(records: list[dict[str, Any]], problems: list[tuple[str, str]], failed: list[dict[str, Any]] | None = None,
                 suites: list[str] | None = None, results_dir: Path | None = None, n_resamples: int = DEFAULT_RESAMPLES) -> list[SuiteBoard]:
    """One board per suite (every suite with records, or exactly ``suites``); ``n_resamples``: of the
    paired bootstrap against each block's deterministic row."""
    clear_cache()  # sidecars and comparisons are cached for this build (and its plots) only
    problems = list(problems) + sidecar_problems(records)  # a missing or mismatching predictions sidecar is named, never used
    frame = records_frame(records, problems)
    names = sorted(set(suites or []) | (set() if suites else set(frame["suite"]) | {r["identity"]["suite"] for r in failed or []}))
    known = set(names) | set(frame["suite"]) | {r["identity"]["suite"] for r in failed or []}
    boards = []
    for suite in names:
        sub = frame[frame["suite"] == suite] if len(frame) else frame
        blocks = [build_block(suite, d, b, g.reset_index(drop=True), records, n_resamples)
                  for (d, b), g in sub.groupby(["dataset", "backbone"], sort=True)]
        mine = [(_rel(p, results_dir), _reason(p, why)) for p, why in problems if _problem_suite(p, results_dir) in (suite, None)
                or _problem_suite(p, results_dir) not in known]  # a file outside any known suite's folder is shown everywhere
        fails = [(_rel(r.get("_path", r["run_id"]), results_dir), _failure(r)) for r in failed or [] if r["identity"]["suite"] == suite]
        facts = [("Suite", suite), *suite_facts(suite),
                 ("Table", f"mean over seeds, with 2+ seeds [its 95% Student-t interval over seeds] (the sample std, ddof=1, in the CSV); "
                           f"rows ranked by clean {RANK_BY.upper()}; best measured value per column in bold")]
        boards.append(SuiteBoard(suite, blocks, facts, sorted(mine), sorted(fails)))
    return boards


def load_boards(results_dir: Path | str, suites: list[str] | None = None, *, warn: bool = True, cost_dir: Path | str | None = None,
                n_resamples: int = DEFAULT_RESAMPLES) -> list[SuiteBoard]:
    """Read the records under ``results_dir`` and build one board per suite (malformed records left out).

    Latency columns take the interleaved cost pass of ``cost_dir`` (default: ``results/cost`` beside
    ``results/runs``, :func:`.costs.default_cost_dir`) for the records it measured."""
    results_dir = Path(results_dir)
    loaded = load_records(results_dir, include_failed=True)
    done = [r for r in loaded.records if r["status"] == "completed"]
    failed = [r for r in loaded.records if r["status"] != "completed"]
    problems = list(loaded.problems)
    attach_cost_pass(done, default_cost_dir(results_dir) if cost_dir is None else cost_dir, problems)
    boards = build_boards(done, problems, failed, suites, results_dir, n_resamples)
    if warn:
        for path, reason in sorted({p for b in boards for p in b.problems}):
            print(f"warning: left out {path}: {reason}")
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

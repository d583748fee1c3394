"""Leaderboards: a pure function of the run records (placeholder table; extended by the leaderboard issue)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .io import atomic_write_text
from .records import load_records


def records_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for r in records:
        ident, clean, cost = r["identity"], r["metrics"]["clean"], r["cost"]
        rows.append({**{k: ident[k] for k in ("suite", "dataset", "backbone", "method", "variant", "members", "seed")},
                     "accuracy": clean["accuracy"], "nll": clean["nll"], "ece": clean["ece"], "brier": clean["brier"],
                     "params": cost.get("params"), "forward_passes": cost.get("forward_passes"), "train_seconds": cost.get("train_seconds")})
    return pd.DataFrame(rows)


def write_leaderboards(results_dir: Path, out_dir: Path, suites: list[str] | None = None) -> list[Path]:
    loaded = load_records(results_dir)
    for path, reason in loaded.problems:
        print(f"warning: left out {path}: {reason}")
    df = records_frame(loaded.records)
    written = []
    if df.empty:
        return written
    for suite, g in df.groupby("suite"):
        if suites and suite not in suites:
            continue
        keys = ["dataset", "backbone", "method", "variant"]
        agg = g.groupby(keys, dropna=False).agg(seeds=("seed", "count"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
                                                nll=("nll", "mean"), ece=("ece", "mean"), brier=("brier", "mean")).reset_index()
        written.append(atomic_write_text(Path(out_dir) / suite / "leaderboard.md", agg.to_markdown(index=False) + "\n"))
    return written

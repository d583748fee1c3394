"""The capacity study's epoch count from a measured learning curve:
``python -m benchmark.tools.learning_curve [--reference]``.

Reads the finished records of the curve suite (default ``capacity-epochs``: the deterministic
ResNet-8 at width 16 with the study's recipe at several epoch budgets; run it first with
``python -m benchmark bench capacity-epochs``) and prints, per budget, the clean accuracy and NLL
(mean over its seeds), the gain over the previous budget, whether it lies within ``--flat`` pp of
the curve's best, and the study's total hours at that budget. The study's hours: the estimate of
every run of the study suite (default ``capacity``) as ``bench --plan`` makes it, with nothing done
and no weights to reuse (a fresh machine), at the study file's own epoch count ``E0``; training
scales with the epochs (each epoch of a run costs the same), so at budget ``E`` it is
``training(E0) * E / E0 + evaluation``. Then the budget the study file's rule picks: the smallest
budget within ``--flat`` pp of the best whose study fits ``--budget-hours``; else the largest that
fits. Writes nothing; the choice goes into the study file by hand (its ``epochs``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.runtime import DEFAULT_RESULTS, REFERENCE_RUNS, Environment
from ..estimate import busy_warning
from ..runner import completed_records, run_id_of


def curve(suite: str, results_dir: Path) -> tuple[str, list[dict[str, Any]]]:
    """The curve suite's name and, per epoch budget: ``epochs``, ``seeds``, ``accuracy`` and ``nll`` (means),
    and the runs not finished (``missing``)."""
    from ..studies import load_record_files, suite_cells

    cells = suite_cells(suite, results_dir)
    by_epochs: dict[int, dict[str, Any]] = {}
    for label, res in cells.cells:
        row = by_epochs.setdefault(int(res["train"]["epochs"]), {"epochs": int(res["train"]["epochs"]), "acc": [], "nll": [], "seeds": [],
                                                                 "missing": []})
        paths = completed_records(cells.results_dir, res, run_id_of(res))
        if not paths:
            row["missing"].append(label)
            continue
        [rec] = load_record_files(paths[:1])
        row["acc"].append(100 * float(rec["metrics"]["clean"]["accuracy"]))
        row["nll"].append(float(rec["metrics"]["clean"]["nll"]))
        row["seeds"].append(int(rec["identity"]["seed"]))
    out = []
    for e in sorted(by_epochs):
        row = by_epochs[e]
        out.append({**row, "accuracy": statistics.fmean(row["acc"]) if row["acc"] else None,
                    "nll_mean": statistics.fmean(row["nll"]) if row["nll"] else None})
    return cells.name, out


def study_hours(study: str, results_dir: Path, data_dir: str | None, cache_dir: str | None, device: str) -> dict[str, Any]:
    """The study's total at its file's epoch count: ``epochs`` (E0), ``train`` and ``eval`` seconds (evaluation
    not estimated for a run: the median of the others), ``counts`` of stage-time sources and ``unknown_eval``."""
    from ..estimate import estimate_runs
    from ..studies import suite_cells

    cells = suite_cells(study, results_dir)
    epochs = {int(res["train"]["epochs"]) for _, res in cells.cells}
    if len(epochs) != 1:
        raise C.ConfigError(f"study {study}: its runs train for different epoch counts {sorted(epochs)}; the scaling needs one")
    with tempfile.TemporaryDirectory() as empty:  # a fresh machine: no checkpoint, no weights to reuse
        env = Environment(data_dir=data_dir, cache_dir=cache_dir, results_dir=results_dir, checkpoint_dir=Path(empty), device=device,
                          restart=True, progress=False, log=lambda m: None)
        estimates, counts = estimate_runs(cells.cells, env)
    evals = [e.eval_seconds for e in estimates]
    known = [v for v in evals if v is not None]
    fill = statistics.median(known) if known else 0.0
    return {"name": cells.name, "epochs": epochs.pop(), "train": sum(e.train_seconds for e in estimates), "eval": sum(v if v is not None else fill for v in evals),
            "unknown_eval": sum(v is None for v in evals), "eval_fill": fill, "counts": counts, "runs": len(estimates)}


def choose(rows: list[dict[str, Any]], hours: dict[int, float] | None, flat_pp: float, budget_h: float) -> tuple[int | None, str]:
    """The budget the rule picks, and why."""
    measured = [r for r in rows if r["accuracy"] is not None]
    if not measured:
        return None, "no budget of the curve is finished"
    best = max(r["accuracy"] for r in measured)
    flat = [r["epochs"] for r in measured if r["accuracy"] >= best - flat_pp]
    fits = [r["epochs"] for r in measured if hours is None or hours[r["epochs"]] <= budget_h]
    first_flat = min(flat)
    if hours is None:
        return first_flat, f"the smallest budget within {flat_pp:g} pp of the best measured ({best:.2f}%); the study's hours not estimated"
    if first_flat in fits:
        return first_flat, (f"the smallest budget within {flat_pp:g} pp of the best measured ({best:.2f}%), and the study fits "
                            f"{budget_h:g} h with it ({hours[first_flat]:.1f} h)")
    if fits:
        e = max(fits)
        acc = next(r["accuracy"] for r in measured if r["epochs"] == e)
        return e, (f"the largest budget whose study fits {budget_h:g} h ({hours[e]:.1f} h); the curve is not flat there: "
                   f"{best - acc:.2f} pp below the best measured ({best:.2f}%); the smallest flat budget, {first_flat}, needs "
                   f"{hours[first_flat]:.1f} h")
    return None, f"no measured budget fits {budget_h:g} h (the smallest needs {min(hours.values()):.1f} h): cut a method or a width"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.learning_curve", description=__doc__.split("\n\n")[0])
    p.add_argument("--curve", default="capacity-epochs", help="the learning-curve suite (default: capacity-epochs)")
    p.add_argument("--study", default="capacity", help="the study suite whose hours are estimated (default: capacity)")
    p.add_argument("--flat", type=float, default=1.0, help="a budget is on the flat part within this many pp of the best (default: 1)")
    p.add_argument("--budget-hours", type=float, default=8.0, help="the study's budget in hours of this machine (default: 8)")
    p.add_argument("--no-study", action="store_true", help="the curve only (no estimate of the study, which may probe step times)")
    p.add_argument("--reference", action="store_true", help=f"read the published records ({REFERENCE_RUNS})")
    p.add_argument("--results-dir", type=Path, default=None, help=f"records to read (default: {DEFAULT_RESULTS})")
    p.add_argument("--data-dir", default=None, help="data root, for the probes (default: $PLURES_DATA_DIR, else ./data)")
    p.add_argument("--cache-dir", default=None, help="decoded-data cache (default: $PLURES_CACHE_DIR, else ./data/cache)")
    p.add_argument("--device", default="auto", help="where the probes run (default: auto)")
    args = p.parse_args(argv)
    results = args.results_dir or (REFERENCE_RUNS if args.reference else DEFAULT_RESULTS)
    name, rows = curve(args.curve, results)
    study = None if args.no_study else study_hours(args.study, results, args.data_dir, args.cache_dir, args.device)
    hours = None
    if study is not None:
        hours = {r["epochs"]: (study["train"] * r["epochs"] / study["epochs"] + study["eval"]) / 3600 for r in rows}
    best = max((r["accuracy"] for r in rows if r["accuracy"] is not None), default=None)
    print(f"learning curve {name} (records in {Path(results) / name}):")
    print(f"| epochs | seeds | acc (%) | NLL | gain over previous (pp) | within {args.flat:g} pp of best | study hours |")
    print("|---:|---|---:|---:|---:|---|---:|")
    prev = None
    for r in rows:
        acc = r["accuracy"]
        cells = [str(r["epochs"]), " ".join(map(str, r["seeds"])) or "—", f"{acc:.2f}" if acc is not None else "not finished",
                 f"{r['nll_mean']:.4f}" if r["nll_mean"] is not None else "—",
                 f"{acc - prev:+.2f}" if acc is not None and prev is not None else "—",
                 ("yes" if acc >= best - args.flat else "no") if acc is not None else "—", f"{hours[r['epochs']]:.2f}" if hours else "—"]
        print("| " + " | ".join(cells) + " |")
        prev = acc if acc is not None else prev
    missing = [m for r in rows for m in r["missing"]]
    if missing:
        print(f"not finished: {', '.join(missing)} (python -m benchmark bench {args.curve}{' --reference' if args.reference else ''})")
    if study is not None:
        c = study["counts"]
        print(f"study {study['name']}: {study['runs']} runs; at its file's {study['epochs']} epochs: training {study['train'] / 3600:.2f} h + "
              f"evaluation {study['eval'] / 3600:.2f} h of this machine's time (stage times: {c.get('record', 0)} from records, "
              f"{c.get('probe', 0)} probed"
              + (f"; evaluation of {study['unknown_eval']} runs not measured: the median of the others, {study['eval_fill']:.0f} s, assumed"
                 if study["unknown_eval"] else "") + ")")
        warning = busy_warning(c)
        if warning:
            print(warning)
    epochs, why = choose(rows, hours, args.flat, args.budget_hours)
    print(f"suggested epochs: {epochs if epochs is not None else 'none'} ({why})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sweep commands: ``python -m benchmark sweep`` (:func:`main`: the plan, then the submission)
and ``python -m benchmark sweep-status`` (:func:`status_main`: each run's state; resubmission)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .artifacts import completed_runs, is_done, manifest_path, resume_point
from .monitor import STATES, status
from .plan import SweepTask, expand
from .slurm_job import CLUSTERS
from .spec import Sweep, load_sweep
from .submission import SubmissionError, launch


def _add_slurm_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("submission (override the file's [slurm] table)")
    g.add_argument("--cluster", choices=CLUSTERS, help="slurm (sbatch), local (subprocesses) or debug (in this process, one by one)")
    for name, typ, text in (("partition", str, "SLURM partition"), ("time-min", int, "time limit per task, minutes"),
                            ("gpus-per-node", int, "GPUs per node"), ("cpus-per-task", int, "CPUs per task"), ("mem-gb", float, "memory per node, GB"),
                            ("constraint", str, "node constraint"), ("account", str, "account"), ("qos", str, "quality of service"),
                            ("array-parallelism", int, "most array tasks running at once"), ("nodes", int, "nodes per task (multi-node DDP)"),
                            ("tasks-per-node", int, "processes per node (one per GPU for DDP)")):
        g.add_argument(f"--{name}", type=typ, help=text)


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("cluster", "partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "account", "qos", "array_parallelism",
            "nodes", "tasks_per_node")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def format_plan(sweep: Sweep, tasks: list[SweepTask], done: set[str]) -> str:
    """The plan as printed before a submission: one line per task (stage, kind, skip/submit, run id, name, seed, needs,
    and ``resume from epoch E`` for a task submitted with a checkpoint of its own to continue from)."""
    lines = [f"sweep {sweep.name} ({sweep.path}): {len(tasks)} task(s), {len(done)} done and skipped; cluster {sweep.slurm['cluster']}",
             f"  results {sweep.paths['results_dir']}  checkpoints {sweep.paths['checkpoint_dir']}  logs {sweep.paths['log_dir']}",
             f"  {'stage':<5}  {'kind':<6}  {'state':<7}  {'run id':<58}  {'name':<30}  seed  needs"]
    for t in tasks:
        state = "skip" if t.run_id in done else "submit"
        point = resume_point(sweep.paths["checkpoint_dir"], t.run_id) if state == "submit" else None
        lines.append(f"  {t.stage:<5}  {t.kind:<6}  {state:<7}  {t.run_id:<58}  {t.name:<30}  {t.seed:<4}  {len(t.needs)}"
                     + (f"  {point.describe()}" if point is not None else ""))
    params = {k: v for k, v in sweep.slurm.items() if k != "cluster"}
    lines.append(f"  slurm parameters: {json.dumps(params, sort_keys=True)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark sweep FILE ...``."""
    p = argparse.ArgumentParser(prog="python -m benchmark sweep", description="Expand a sweep file into runs and submit them as submitit job arrays.")
    p.add_argument("file", type=Path, help="a sweep file (.toml), e.g. benchmark/sweeps/tiny.toml")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, stable ids, what is skipped) and submit nothing")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="on SLURM, wait up to this long for every job")
    _add_slurm_options(p)
    args = p.parse_args(argv)
    try:
        sweep = load_sweep(args.file, _slurm_overrides(args))
        tasks = expand(sweep)
        completed = completed_runs(Path(sweep.paths["results_dir"]))
        done = {t.run_id for t in tasks if is_done(t, sweep, completed)}
        print(format_plan(sweep, tasks, done), flush=True)
        if args.dry_run:
            return 0
        result = launch(sweep, tasks, wait_s=args.wait, log=lambda m: print(m, flush=True))
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result.submitted)} task(s) submitted, {len(result.skipped)} skipped (done); manifest {manifest_path(sweep)}", flush=True)
    if sweep.slurm["cluster"] != "slurm":
        bad = [s for s in status(sweep, tasks) if s.state != "done"]
        for s in bad:
            print(f"{s.state.upper()} {s.task.run_id}: {s.note} (log {s.log})", file=sys.stderr)
        return 1 if bad else 0
    return 0


def status_main(argv: list[str] | None = None) -> int:
    """``python -m benchmark sweep-status FILE [--resubmit-failed]``."""
    p = argparse.ArgumentParser(prog="python -m benchmark sweep-status", description="Each run of a sweep: pending, running, done or failed, with its log.")
    p.add_argument("file", type=Path, help="the sweep file that was submitted")
    p.add_argument("--resubmit-failed", action="store_true", help="submit the failed runs again (they alone)")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="with --resubmit-failed on SLURM, wait up to this long")
    _add_slurm_options(p)
    args = p.parse_args(argv)
    sweep = load_sweep(args.file, _slurm_overrides(args))
    tasks = expand(sweep)
    rows = status(sweep, tasks)
    print(f"{'state':<8} {'run id':<58} {'name':<24} {'seed':<4} {'job':<12} log / note")
    for s in rows:
        print(f"{s.state:<8} {s.task.run_id:<58} {s.task.name:<24} {s.task.seed:<4} {s.job_id or '-':<12} {s.log or '-'}" + (f"  [{s.note}]" if s.note else ""))
    counts = {state: sum(s.state == state for s in rows) for state in STATES}
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    if args.resubmit_failed:
        failed = [s.task for s in rows if s.state == "failed"]
        if not failed:
            print("no failed runs to resubmit")
            return 0
        try:
            launch(sweep, failed, wait_s=args.wait, log=lambda m: print(m, flush=True))
        except SubmissionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 1 if counts["failed"] else 0

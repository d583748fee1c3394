"""The sweep commands: ``python -m benchmark sweep`` (:func:`main`: the plan, then the submission)
and ``python -m benchmark sweep-status`` (:func:`status_main`: each run's state and the leaderboard's,
with SLURM's pending reasons; resubmission). ``sweep-status`` exits 1 when something needs a hand:
a failed run, a job that can never start, an unreachable controller, or a leaderboard that no job
in flight will build."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from .artifacts import completed_runs, failed_runs, is_done, manifest_path, previous_failure, read_manifest, resume_point
from .monitor import STATES, in_flight, queue_view, report, status
from .plan import SweepTask, expand
from .preflight import check_data
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


def format_plan(sweep: Sweep, tasks: list[SweepTask], done: set[str], flying: dict[str, str] | None = None,
                failures: dict[str, str] | None = None) -> str:
    """The plan as printed before a submission: one line per task (stage, kind, state, run id, name, seed, needs, and
    ``resume from epoch E`` for a task whose run will find a checkpoint of its own when it starts). The state is
    ``skip`` (done), ``flying`` (queued or running: ``flying``, run id -> its job and state; not submitted again),
    ``resubmit`` (it failed before: ``failures``, run id -> ``type: message``, said after it) or ``submit``. The
    columns are as wide as their longest entry (grid points make long names)."""
    flying, failures = flying or {}, failures or {}
    id_width = max([len("run id"), *(len(t.run_id) for t in tasks)])
    name_width = max([len("name"), *(len(t.name) for t in tasks)])
    lines = [f"sweep {sweep.name} ({sweep.path}): {len(tasks)} task(s), {len(done)} done and skipped"
             + (f", {len(flying)} in flight (queued or running) and skipped" if flying else "") + f"; cluster {sweep.slurm['cluster']}",
             f"  results {sweep.paths['results_dir']}  checkpoints {sweep.paths['checkpoint_dir']}  logs {sweep.paths['log_dir']}",
             f"  {'stage':<5}  {'kind':<6}  {'state':<8}  {'run id':<{id_width}}  {'name':<{name_width}}  seed  needs"]
    for t in tasks:
        state = "skip" if t.run_id in done else "flying" if t.run_id in flying else "resubmit" if t.run_id in failures else "submit"
        point = resume_point(sweep.paths["checkpoint_dir"], t.run_id) if state in ("submit", "resubmit") else None
        lines.append(f"  {t.stage:<5}  {t.kind:<6}  {state:<8}  {t.run_id:<{id_width}}  {t.name:<{name_width}}  {t.seed:<4}  {len(t.needs):<5}"
                     + (f"  (failed before: {failures[t.run_id].strip().splitlines()[0]})" if state == "resubmit" else "")
                     + (f"  {point.describe()}" if point is not None else "") + (f"  {flying[t.run_id]}" if t.run_id in flying else ""))
    params = {k: v for k, v in sweep.slurm.items() if k != "cluster"}
    lines.append(f"  slurm parameters: {json.dumps(params, sort_keys=True)}")
    return "\n".join(line.rstrip() for line in lines)


def _flying(sweep: Sweep, tasks: list[SweepTask], done: set[str]) -> tuple[dict[str, str], str | None]:
    """For the plan: run id -> ``job J (state)`` of the runs in flight, and the controller's error (None: reached)."""
    if sweep.slurm["cluster"] != "slurm":
        return {}, None
    manifest = read_manifest(sweep)
    view = queue_view(manifest)
    flying = in_flight([t for t in tasks if t.run_id not in done], manifest, view)
    return {rid: f"job {job.job_id} ({view.describe(manifest['runs'][rid])})" for rid, job in flying.items()}, view.error


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
        flying, error = _flying(sweep, tasks, done)
        failed = failed_runs(Path(sweep.paths["results_dir"]))
        failures = {t.run_id: why for t in tasks if t.run_id not in done and (why := previous_failure(sweep, t, failed)) is not None}
        print(format_plan(sweep, tasks, done, flying, failures), flush=True)
        if error is not None:
            print(f"warning: the SLURM controller cannot be reached ({error}): runs in flight are not known", file=sys.stderr, flush=True)
        if args.dry_run:  # what the jobs would fail on at once fails here too (the launch checks it again)
            check_data(sweep, [t for t in tasks if t.run_id not in done], log=lambda m: print(m, flush=True))
            return 0
        # the launch asks the controller again, under the sweep's launch lock: that answer is the one acted on
        result = launch(sweep, tasks, wait_s=args.wait, log=lambda m: print(m, flush=True))
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result.submitted)} task(s) submitted, {len(result.skipped)} skipped (done), {len(result.in_flight)} in flight (not submitted "
          f"again); manifest {manifest_path(sweep)}", flush=True)
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
    rows, board = report(sweep, tasks)
    id_width = max([len("run id"), *(len(s.task.run_id) for s in rows)])
    name_width = max([len("name"), *(len(s.task.name) for s in rows)])
    print(f"{'state':<8} {'run id':<{id_width}} {'name':<{name_width}} {'seed':<4} {'job':<12} log / note")
    for s in rows:
        print(f"{s.state:<8} {s.task.run_id:<{id_width}} {s.task.name:<{name_width}} {s.task.seed:<4} {s.job_id or '-':<12} {s.log or '-'}")
        if s.note:  # whole, on lines of its own (wrapped between words, paths kept whole)
            print(textwrap.fill(f"[{s.note}]", width=120, initial_indent=" " * 9, subsequent_indent=" " * 10, break_long_words=False,
                                break_on_hyphens=False))
    print(f"leaderboard: {board.state}" + (f"  job {board.job_id}" if board.job_id else "") + (f"  log {board.log}" if board.log else "")
          + (f"  [{board.note}]" if board.note else ""))
    counts = {state: sum(s.state == state for s in rows) for state in STATES}
    print(", ".join(f"{n} {state}" for state, n in counts.items()) + f"; leaderboard {board.state}")
    never = [s for s in rows if s.never_starts]
    if never:
        print(f"warning: {len(never)} job(s) can never start as requested (jobs {', '.join(s.job_id for s in never)}): see the notes above; "
              f"cancel them (scancel), change the [slurm] request and relaunch", file=sys.stderr)
    if counts["unknown"] or board.state == "unknown":
        print("warning: the SLURM controller cannot be reached: the state of queued jobs is unknown (not 'running')", file=sys.stderr)
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
    attention = counts["failed"] or counts["unknown"] or never or board.state in ("missing", "stale", "failed", "unknown")
    return 1 if attention else 0

"""Each task of a sweep as pending, running, done, failed or unknown, and its leaderboard's state:
from the records, the manifest, the failure notes its tasks leave, submitit's result files and
the SLURM controller (:mod:`~benchmark.sweep.scheduler`: state, pending reason, never-startable
requests). A controller that cannot be reached makes the state of queued runs ``unknown``, never
``running``."""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .artifacts import (completed_runs, elsewhere_path, failed_record, failed_runs, failure_path, holder_alive, is_done, leaderboard_freshness,
                        read_manifest, run_lock_holder)
from .plan import SweepTask, expand
from .scheduler import ControllerUnreachable, NodeSize, QueuedJob, describe, never_starts, node_sizes, query_jobs
from .spec import Sweep

STATES = ("pending", "running", "done", "failed", "unknown")
LEADERBOARD_STATES = ("done", "pending", "running", "missing", "stale", "failed", "unknown", "none")


@dataclass
class QueueView:
    """What the controller says about the jobs a manifest names: ``jobs`` (manifest job id -> the
    job squeue lists under it, launched by this sweep: its comment carries the entry's token),
    ``reused`` (manifest job ids squeue lists for a job this sweep did not launch: the controller's
    state was reset and the id given again), node ``sizes`` per partition, and ``error`` (the
    controller could not be reached: then nothing is known)."""

    jobs: dict[str, QueuedJob] = field(default_factory=dict)
    reused: set[str] = field(default_factory=set)
    sizes: dict[str, NodeSize] | None = None
    error: str | None = None

    def job(self, entry: dict[str, Any] | None) -> QueuedJob | None:
        """The queued job of a manifest entry (a run's or the leaderboard's), or None."""
        return self.jobs.get(str(entry.get("job_id", ""))) if entry else None

    def describe(self, entry: dict[str, Any] | None) -> str:
        job = self.job(entry)
        return describe(job, self.sizes) if job is not None else ""


def _slurm_entries(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [m for m in manifest.get("runs", {}).values() if m.get("cluster") == "slurm"]
    board = manifest.get("leaderboard_job")
    if board and board.get("cluster", "slurm") == "slurm":
        entries.append(board)
    return [m for m in entries if m.get("job_id")]


def queue_view(manifest: dict[str, Any]) -> QueueView:
    """Ask squeue (once) about every SLURM job the manifest names; sinfo too when one is pending."""
    entries = _slurm_entries(manifest)
    if not entries:
        return QueueView()
    try:
        listed = query_jobs(str(m["job_id"]) for m in entries)
    except ControllerUnreachable as exc:
        return QueueView(error=str(exc))
    view = QueueView()
    for m in entries:
        job = listed.get(str(m["job_id"]))
        if job is None:
            continue
        if job.launched_by(m.get("token")):
            view.jobs[str(m["job_id"])] = job
        else:
            view.reused.add(str(m["job_id"]))
    if any(j.pending for j in view.jobs.values()):
        view.sizes = node_sizes()
    return view


def in_flight(tasks: list[SweepTask], manifest: dict[str, Any], view: QueueView) -> dict[str, QueuedJob]:
    """Run id -> its queued job, for the tasks whose manifest job the controller lists as pending or
    running (launched by this sweep): a launch submits none of them again."""
    out = {}
    for t in tasks:
        m = manifest.get("runs", {}).get(t.run_id)
        if m and m.get("cluster") == "slurm":
            job = view.job(m)
            if job is not None:
                out[t.run_id] = job
    return out


def _result_error(path: str | None) -> str | None:
    """The last line of the traceback submitit's result file holds when the task raised; None when
    it did not (or there is no result yet)."""
    if not path or not Path(path).exists():
        return None
    try:
        with open(path, "rb") as fh:
            outcome, value = pickle.load(fh)[:2]
    except Exception:  # noqa: BLE001 - an unreadable result tells nothing
        return None
    if outcome != "error":
        return None
    lines = [line for line in str(value).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "the task raised"


@dataclass
class RunStatus:
    """One task's state (one of :data:`STATES`), job id, log path and a short note; ``never_starts``:
    its job is pending and can never start as requested."""

    task: SweepTask
    state: str
    job_id: str
    log: str
    note: str
    never_starts: bool = False


@dataclass
class LeaderboardStatus:
    """The sweep's leaderboard (one of :data:`LEADERBOARD_STATES`): ``done`` (up to date with the
    records), ``pending``/``running`` (its job is queued), ``missing``/``stale`` (no job in flight
    will build it: a relaunch rebuilds it), ``failed`` (its job raised), ``unknown`` (controller
    unreachable) or ``none`` (no records yet)."""

    state: str
    job_id: str
    log: str
    note: str


def _run_status(t: SweepTask, sweep: Sweep, m: dict[str, Any], view: QueueView, done: bool, failed: dict[tuple[str, str], dict[str, Any]]) -> RunStatus:
    job, logpath = str(m.get("job_id", "")), m.get("stdout", "")
    slurm = m.get("cluster") == "slurm"
    note_file = failure_path(sweep.paths["log_dir"], t.run_id)
    if done:
        return RunStatus(t, "done", job, logpath, "")
    if slurm and view.error is not None:
        return RunStatus(t, "unknown", job, logpath, f"the SLURM controller cannot be reached ({view.error}); state of job {job} unknown")
    queued = view.job(m) if slurm else None
    if queued is not None:
        never = never_starts(queued, view.sizes) is not None
        return RunStatus(t, "pending" if queued.pending else "running", job, logpath, describe(queued, view.sizes), never)
    if note_file.exists():
        err = json.loads(note_file.read_text())
        return RunStatus(t, "failed", job, logpath, f"{err['type']}: {err['message']}")
    if elsewhere_path(sweep.paths["log_dir"], t.run_id).exists():
        return _elsewhere_status(t, sweep, job, logpath)
    record = failed_record(t, failed)
    if record is not None and (not m or record["created"] >= m.get("submitted", "")):
        err = record.get("error", {})
        return RunStatus(t, "failed", job, logpath, f"{err.get('type', '')}: {err.get('message', '')}")
    if not m:
        return RunStatus(t, "pending", job, logpath, "not submitted")
    error = _result_error(m.get("result"))
    if error is not None:
        return RunStatus(t, "failed", job, logpath, error)
    if slurm and job in view.reused:
        return RunStatus(t, "failed", job, logpath, f"job {job} is gone: the controller now gives its id to another job (its state was reset?); "
                                                    "relaunch to submit the run again")
    if slurm:
        return RunStatus(t, "failed", job, logpath, "left the queue without a record or result (killed, cancelled, out of memory?)")
    return RunStatus(t, "running", job, logpath, "submitted; no result yet")


def _elsewhere_status(t: SweepTask, sweep: Sweep, job: str, logpath: str) -> RunStatus:
    """A run whose task found its lock held by another process (say, another sweep's job over the same
    results and checkpoints) and trained nothing: running elsewhere while that process runs (or
    cannot be checked from this host), failed once it is gone without a record."""
    try:
        note = json.loads(elsewhere_path(sweep.paths["log_dir"], t.run_id).read_text())
    except (OSError, ValueError):
        note = {}
    holder = run_lock_holder(sweep.paths["checkpoint_dir"], t.run_id) or note.get("holder") or {}
    who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, since {holder.get('started', '?')}"
    alive = holder_alive(holder)
    if alive is False:
        return RunStatus(t, "failed", job, logpath, f"the process that held the run's lock ({who}) is gone without a record; job {job} of this "
                                                    "sweep trained nothing: relaunch to resume the run from its checkpoint")
    unsure = "" if alive else " (per its run lock; it cannot be checked from this host)"
    return RunStatus(t, "running", job, logpath, f"running elsewhere: {who} holds the run's lock{unsure}; job {job} of this sweep trained "
                                                 "nothing and the run counts as done here once its record exists")


def leaderboard_status(sweep: Sweep, tasks: list[SweepTask], manifest: dict[str, Any], view: QueueView) -> LeaderboardStatus:
    """The leaderboard's state (see :class:`LeaderboardStatus`) from the manifest's leaderboard job,
    the controller and the files' age against the records'."""
    board = manifest.get("leaderboard_job") or {}
    job, logpath = str(board.get("job_id", "")), board.get("stdout", "")
    slurm = bool(board) and board.get("cluster", "slurm") == "slurm"
    if slurm and view.error is not None:
        return LeaderboardStatus("unknown", job, logpath, f"the SLURM controller cannot be reached ({view.error})")
    queued = view.job(board) if slurm else None
    if queued is not None:
        return LeaderboardStatus("pending" if queued.pending else "running", job, logpath, describe(queued, view.sizes))
    fresh, why = leaderboard_freshness(sweep, sorted({t.suite for t in tasks}))
    if fresh == "current":
        return LeaderboardStatus("done", job, logpath, "")
    if fresh == "none":
        return LeaderboardStatus("none", job, logpath, "no records yet")
    error = _result_error(board.get("result")) if slurm else None
    if error is not None:
        return LeaderboardStatus("failed", job, logpath, f"job {job} raised: {error}; relaunch to rebuild it")
    if slurm and job in view.reused:
        lost = f"; job {job} is gone (the controller now gives its id to another job)"
    elif slurm and not (board.get("result") and Path(board["result"]).exists()):
        lost = f"; job {job} left the queue without building it (cancelled, or lost by the controller)"
    else:
        lost = "" if not job else f"; job {job} built it before newer records came"
    return LeaderboardStatus(fresh, job, logpath, f"{why}{lost}; relaunch the sweep to rebuild it")


def report(sweep: Sweep, tasks: list[SweepTask] | None = None) -> tuple[list[RunStatus], LeaderboardStatus]:
    """Every task's state and the leaderboard's, from one look at the controller."""
    tasks = expand(sweep) if tasks is None else tasks
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    failed = failed_runs(Path(sweep.paths["results_dir"]))
    manifest = read_manifest(sweep)
    view = queue_view(manifest)
    runs = manifest["runs"]
    rows = [_run_status(t, sweep, runs.get(t.run_id, {}), view, is_done(t, sweep, completed), failed) for t in tasks]
    return rows, leaderboard_status(sweep, tasks, manifest, view)


def status(sweep: Sweep, tasks: list[SweepTask] | None = None) -> list[RunStatus]:
    """The state of every task of the sweep (``tasks``: default, the sweep's own expansion)."""
    return report(sweep, tasks)[0]

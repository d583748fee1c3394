"""Submission: the tasks neither done nor in flight as one job array per stage (each task a
:class:`~benchmark.sweep.slurm_job.CheckpointableCall` of :func:`benchmark.sweep.jobs.run_task`),
then the leaderboard job; every accepted array enters the manifest. Launches of one sweep are
serialised by its launch lock (:func:`~benchmark.sweep.artifacts.launch_lock`)."""

from __future__ import annotations

import contextlib
import io
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..records import utc_now
from .artifacts import (LaunchLockedError, check_writable, completed_runs, is_done, launch_lock, leaderboard_freshness, read_manifest,
                        resume_point, task_notes, write_manifest)
from .jobs import rebuild_leaderboard, run_task
from .monitor import QueueView, in_flight, queue_view
from .plan import SweepTask
from .preflight import check_data
from .scheduler import TOKEN_PREFIX
from .slurm_job import CheckpointableCall, make_executor, wait_all
from .spec import Sweep


class SubmissionError(RuntimeError):
    """The scheduler refused a submission (its own message is included); nothing of it was recorded."""


def _executor(sweep: Sweep, folder: Path, *, dependency: str | None = None, leaderboard: bool = False, token: str | None = None) -> Any:
    s = sweep.slurm
    extra = dict(s.get("additional") or {})
    if dependency:
        extra["dependency"] = dependency
    if token and s["cluster"] == "slurm":  # the launch's mark: tells this sweep's jobs from others under a reused id
        extra["comment"] = " ".join(x for x in (str(extra.get("comment") or ""), f"{TOKEN_PREFIX}{token}") if x)
    common = {k: s.get(k) for k in ("partition", "account", "qos")}
    if leaderboard:
        return make_executor(s["cluster"], folder, **common, time_min=30, cpus_per_task=1,
                             mem_gb=min(float(s["mem_gb"]), 4.0) if s.get("mem_gb") else None,
                             name=f"{sweep.name}-leaderboard", slurm_additional_parameters=extra or None)
    return make_executor(s["cluster"], folder, **common, time_min=s.get("time_min"), gpus_per_node=s.get("gpus_per_node"),
                         cpus_per_task=s.get("cpus_per_task"), mem_gb=s.get("mem_gb"), constraint=s.get("constraint"),
                         array_parallelism=s.get("array_parallelism"), nodes=s.get("nodes", 1), tasks_per_node=s.get("tasks_per_node", 1),
                         name=sweep.name, max_num_timeout=s.get("max_num_timeout"), slurm_additional_parameters=extra or None)


def _submit_array(executor: Any, calls: list[tuple[Any, tuple, dict[str, Any]]]) -> list[Any]:
    """Submit ``calls`` (function, arguments, keyword arguments) as one array; SLURM's refusal
    becomes a SubmissionError with sbatch's message."""
    # submitit prints a failed sbatch's stderr and raises with the same text: keep it for the error alone
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), executor.batch():
            jobs = [executor.submit(fn, *args, **kwargs) for fn, args, kwargs in calls]
    except Exception as exc:  # noqa: BLE001 - submitit raises several kinds, all carrying sbatch's text
        extra = printed.getvalue().strip()
        if extra and extra not in str(exc):
            print(extra, file=sys.stderr)
        raise SubmissionError(f"submission of {len(calls)} task(s) refused: {exc}") from exc
    if printed.getvalue():
        sys.stderr.write(printed.getvalue())
    return jobs


def _array_id(job: Any) -> str:
    return str(job.job_id).split("_")[0]


@dataclass
class Launch:
    """What a launch submitted: the arrays (job lists, by stage) and the leaderboard job (None when
    none was submitted); ``skipped``: done; ``in_flight``: queued or running already, not submitted again."""

    arrays: list[list[Any]]
    leaderboard: Any
    skipped: list[SweepTask]
    submitted: list[SweepTask]
    in_flight: list[SweepTask] = field(default_factory=list)

    def jobs(self) -> list[Any]:
        return [j for a in self.arrays for j in a] + ([self.leaderboard] if self.leaderboard is not None else [])


def _base_ids(job_ids: list[str]) -> list[str]:
    return sorted({str(j).split("_")[0] for j in job_ids}, key=lambda j: (len(j), j))


def launch(sweep: Sweep, tasks: list[SweepTask], *, wait_s: float | None = None, log: Any = print) -> Launch:
    """Submit the tasks neither done nor in flight (one array per stage, then the leaderboard job).

    Under the sweep's launch lock (another launch holding it: :class:`LaunchLockedError`, a
    :class:`SubmissionError`, nothing submitted), the manifest is read and, on SLURM, the controller
    asked which of its jobs are still queued or running (launched by this sweep: the comment carries
    the launch's token). Those runs are in flight: logged and not submitted again; a controller that
    cannot be reached fails the launch (:class:`SubmissionError`) rather than guess.

    On SLURM the arrays are chained with ``afterany`` dependencies (on in-flight jobs of earlier
    stages too) and this returns once they are submitted (``wait_s``: then wait that long for every
    job, the lock released). A leaderboard job follows every array and in-flight job; with nothing
    to submit, one is still submitted when the leaderboard is missing or older than its newest record
    and no leaderboard job is in flight. On the local and debug clusters each array is waited for
    before the next starts, and the leaderboard is rebuilt here (the lock held throughout).
    Each array's tasks enter the manifest as soon as it is accepted, never before. The folders the
    jobs write are checked first (:func:`~benchmark.sweep.artifacts.check_writable`), and so is the
    data of the tasks not done (:func:`~benchmark.sweep.preflight.check_data`: found where the jobs
    look, subsets and batch within it). A submission
    carries no resume flag: each task decides from disk when it starts (done, resume, start); the
    checkpoint a run will resume from is only shown (the log and the manifest's ``"resume"``).
    """
    check_writable(sweep)  # a folder the jobs cannot write fails here, before anything is submitted
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    check_data(sweep, [t for t in tasks if not is_done(t, sweep, completed)], log)  # so does data a job would not find or fit
    try:
        with launch_lock(sweep):
            result = _launch_locked(sweep, tasks, wait_s, log)
    except LaunchLockedError as exc:
        raise SubmissionError(str(exc)) from None
    if sweep.slurm["cluster"] == "slurm" and wait_s is not None and result.jobs():
        wait_all(result.jobs(), timeout_s=wait_s, return_exceptions=True)
    return result


def _launch_locked(sweep: Sweep, tasks: list[SweepTask], wait_s: float | None, log: Any) -> Launch:
    cluster = sweep.slurm["cluster"]
    manifest = read_manifest(sweep)
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    skipped = [t for t in tasks if is_done(t, sweep, completed)]
    view = queue_view(manifest) if cluster == "slurm" else QueueView()
    if view.error is not None:
        raise SubmissionError(f"the SLURM controller cannot be reached ({view.error}); nothing was submitted: without it, runs already queued "
                              f"or running cannot be told from lost ones (sweep-status shows what is known)")
    flying = in_flight([t for t in tasks if t not in skipped], manifest, view)
    for t in tasks:
        if t.run_id in flying:
            log(f"in flight, not submitted again: {t.run_id} as job {flying[t.run_id].job_id} ({view.describe(manifest['runs'][t.run_id])})")
    todo = [t for t in tasks if t not in skipped and t.run_id not in flying]
    token = uuid.uuid4().hex[:12]
    # one folder per launch: after a controller reset job ids repeat, and submitit names its files by job id
    folder = Path(sweep.paths["log_dir"]) / "jobs" / f"{utc_now().replace('-', '').replace(':', '')[:15]}-{token[:6]}"
    suites = sorted({t.suite for t in tasks})
    call = CheckpointableCall(run_task, grace_s=float(sweep.slurm.get("grace_s", 60.0)))
    arrays: list[list[Any]] = []
    for stage in sorted({t.stage for t in todo}):
        group = [t for t in todo if t.stage == stage]
        earlier = [flying[t.run_id].job_id for t in tasks if t.run_id in flying and t.stage < stage]
        deps = [_array_id(a[0]) for a in arrays] + _base_ids(earlier)
        dependency = "afterany:" + ":".join(deps) if deps and cluster == "slurm" else None
        if arrays and cluster != "slurm":
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        # a resubmitted run's old notes (failed, trained elsewhere) go (restored if the scheduler refuses the array)
        notes = {p: p.read_bytes() for t in group for p in task_notes(sweep.paths["log_dir"], t.run_id)}
        for p in notes:
            p.unlink()
        try:
            # shown only: a run with a checkpoint of its own (killed, failed, stopped) finds it when it starts
            points = {t.run_id: resume_point(sweep.paths["checkpoint_dir"], t.run_id) for t in group}
            jobs = _submit_array(_executor(sweep, folder, dependency=dependency, token=token), [(call, (t.payload(sweep),), {}) for t in group])
        except SubmissionError:
            for p, raw in notes.items():
                p.write_bytes(raw)
            raise
        arrays.append(jobs)
        now = utc_now()
        manifest["submissions"].append({"time": now, "cluster": cluster, "stage": stage, "array_id": _array_id(jobs[0]), "tasks": len(jobs),
                                        "dependency": dependency, "token": token, "folder": str(folder)})
        for t, job in zip(group, jobs):
            old = manifest["runs"].get(t.run_id, {})
            manifest["runs"][t.run_id] = {"kind": t.kind, "suite": t.suite, "name": t.name, "seed": t.seed, "stage": stage, "cluster": cluster,
                                          "job_id": str(job.job_id), "token": token, "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                                          "result": str(job.paths.result_pickle), "submitted": now,
                                          "resume": points[t.run_id].describe() if points[t.run_id] is not None else None,
                                          "previous_jobs": old.get("previous_jobs", []) + ([old["job_id"]] if old.get("job_id") else [])}
        write_manifest(sweep, manifest)
        log(f"submitted stage {stage}: {len(jobs)} task(s) as array {_array_id(jobs[0])} on {cluster}" + (f" ({dependency})" if dependency else ""))
        for t in group:
            if points[t.run_id] is not None:
                log(f"  {t.run_id}: {points[t.run_id].describe()} ({points[t.run_id].path})")
    board = None
    if cluster == "slurm":
        board = _leaderboard_job(sweep, manifest, view, arrays, list(flying.values()), suites, folder, token, log)
    else:
        if arrays:
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        for path in rebuild_leaderboard(str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites):
            log(f"leaderboard: {path}")
    return Launch(arrays, board, skipped, todo, [t for t in tasks if t.run_id in flying])


def _leaderboard_job(sweep: Sweep, manifest: dict[str, Any], view: QueueView, arrays: list[list[Any]], flying: list[Any], suites: list[str],
                     folder: Path, token: str, log: Any) -> Any:
    """Submit the leaderboard job after this launch's arrays and the runs in flight, or, with none of
    those, when the leaderboard is missing or stale and no leaderboard job is in flight; None when none is needed."""
    old = manifest.get("leaderboard_job") or {}
    queued = view.job(old) if old.get("cluster", "slurm") == "slurm" else None
    fresh, why = leaderboard_freshness(sweep, suites)
    if not arrays:
        if queued is not None:
            log(f"leaderboard job {old['job_id']} in flight, not submitted again ({view.describe(old)})")
            return None
        if not flying and fresh in ("current", "none"):
            return None
    deps = [_array_id(a[0]) for a in arrays] + _base_ids([j.job_id for j in flying])
    dependency = "afterany:" + ":".join(deps) if deps else None
    (board,) = _submit_array(_executor(sweep, folder, dependency=dependency, leaderboard=True, token=token),
                             [(rebuild_leaderboard, (str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites), {})])
    manifest["leaderboard_job"] = {"cluster": "slurm", "job_id": str(board.job_id), "token": token, "stdout": str(board.paths.stdout),
                                   "stderr": str(board.paths.stderr), "result": str(board.paths.result_pickle), "dependency": dependency,
                                   "submitted": utc_now(), "suites": suites,
                                   "previous_jobs": old.get("previous_jobs", []) + ([old["job_id"]] if old.get("job_id") else [])}
    write_manifest(sweep, manifest)
    reason = f" ({dependency})" if dependency else f" (rebuilding: {why})"
    log(f"leaderboard job {board.job_id}{reason}")
    return board

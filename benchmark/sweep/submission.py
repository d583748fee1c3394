"""Submission: the tasks not done yet as one job array per stage (each task a
:class:`~benchmark.sweep.slurm_job.CheckpointableCall` of :func:`benchmark.sweep.jobs.run_task`),
then the leaderboard job; every accepted array enters the manifest."""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..records import utc_now
from .artifacts import check_writable, completed_runs, failure_path, is_done, read_manifest, resume_point, write_manifest
from .jobs import rebuild_leaderboard, run_task
from .plan import SweepTask
from .slurm_job import CheckpointableCall, make_executor, wait_all
from .spec import Sweep


class SubmissionError(RuntimeError):
    """The scheduler refused a submission (its own message is included); nothing of it was recorded."""


def _executor(sweep: Sweep, folder: Path, *, dependency: str | None = None, leaderboard: bool = False) -> Any:
    s = sweep.slurm
    extra = dict(s.get("additional") or {})
    if dependency:
        extra["dependency"] = dependency
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
    """What a launch submitted: the arrays (job lists, by stage) and the leaderboard job."""

    arrays: list[list[Any]]
    leaderboard: Any
    skipped: list[SweepTask]
    submitted: list[SweepTask]

    def jobs(self) -> list[Any]:
        return [j for a in self.arrays for j in a] + ([self.leaderboard] if self.leaderboard is not None else [])


def launch(sweep: Sweep, tasks: list[SweepTask], *, wait_s: float | None = None, log: Any = print) -> Launch:
    """Submit the tasks not done yet (one array per stage, then the leaderboard job).

    On SLURM the arrays are chained with ``afterany`` dependencies and this returns at once
    (``wait_s``: then wait that long for every job). On the local and debug clusters each
    array is waited for before the next starts, and the leaderboard is rebuilt here.
    Each array's tasks enter the manifest as soon as it is accepted, never before.
    The folders the jobs write are checked first (:func:`~benchmark.sweep.artifacts.check_writable`),
    and a task whose run has a stage checkpoint of its own is submitted with ``resume=True``.
    """
    check_writable(sweep)  # a folder the jobs cannot write fails here, before anything is submitted
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    skipped = [t for t in tasks if is_done(t, sweep, completed)]
    todo = [t for t in tasks if t not in skipped]
    cluster = sweep.slurm["cluster"]
    folder = Path(sweep.paths["log_dir"]) / "jobs"
    manifest = read_manifest(sweep)
    suites = sorted({t.suite for t in tasks})
    call = CheckpointableCall(run_task, grace_s=float(sweep.slurm.get("grace_s", 60.0)))
    arrays: list[list[Any]] = []
    for stage in sorted({t.stage for t in todo}):
        group = [t for t in todo if t.stage == stage]
        dependency = "afterany:" + ":".join(_array_id(a[0]) for a in arrays) if arrays and cluster == "slurm" else None
        if arrays and cluster != "slurm":
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        # a resubmitted run's old failure note goes (restored if the scheduler refuses the array)
        notes = {p: p.read_bytes() for t in group if (p := failure_path(sweep.paths["log_dir"], t.run_id)).exists()}
        for p in notes:
            p.unlink()
        try:
            # a run with a checkpoint of its own (killed, failed, stopped) continues from it
            points = {t.run_id: resume_point(sweep.paths["checkpoint_dir"], t.run_id) for t in group}
            jobs = _submit_array(_executor(sweep, folder, dependency=dependency),
                                 [(call, (t.payload(sweep),), {"resume": points[t.run_id] is not None}) for t in group])
        except SubmissionError:
            for p, raw in notes.items():
                p.write_bytes(raw)
            raise
        arrays.append(jobs)
        now = utc_now()
        manifest["submissions"].append({"time": now, "cluster": cluster, "stage": stage, "array_id": _array_id(jobs[0]), "tasks": len(jobs),
                                        "dependency": dependency})
        for t, job in zip(group, jobs):
            old = manifest["runs"].get(t.run_id, {})
            manifest["runs"][t.run_id] = {"kind": t.kind, "suite": t.suite, "name": t.name, "seed": t.seed, "stage": stage, "cluster": cluster,
                                          "job_id": str(job.job_id), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
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
        if arrays:
            dependency = "afterany:" + ":".join(_array_id(a[0]) for a in arrays)
            (board,) = _submit_array(_executor(sweep, folder, dependency=dependency, leaderboard=True),
                                     [(rebuild_leaderboard, (str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites), {})])
            manifest["leaderboard_job"] = {"job_id": str(board.job_id), "stdout": str(board.paths.stdout), "dependency": dependency}
            write_manifest(sweep, manifest)
            log(f"leaderboard job {board.job_id} ({dependency})")
        if wait_s is not None and arrays:
            wait_all([j for a in arrays for j in a] + [board], timeout_s=wait_s, return_exceptions=True)
    else:
        if arrays:
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        for path in rebuild_leaderboard(str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites):
            log(f"leaderboard: {path}")
    return Launch(arrays, board, skipped, todo)

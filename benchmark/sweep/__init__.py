"""Sweeps: many runs of the harness as submitit job arrays (SLURM, local processes or in-process).

``python -m benchmark sweep FILE [--dry-run] [--cluster slurm|local|debug] [--partition P] ...``
expands a sweep file into runs (stable ids: ``benchmark.runner.run_id_of``), skips those whose
completed record exists, checks what every job would fail on at once (its data not found from the
job's environment, a subset or batch larger than the data: :mod:`~benchmark.sweep.preflight`; the
dry run too), and submits the rest: ONE job array per stage, one run per array task,
each task a :class:`~benchmark.sweep.slurm_job.CheckpointableCall` of :func:`~benchmark.sweep.jobs.run_task` (requeued after
preemption or a time limit). A submission carries no resume flag: every task, on its first start
and after any requeue (submitit's, or the scheduler's own after a node failure), decides from disk
as every run does: done (its completed record: skipped), a checkpoint (resumed) or neither (started).

Stages: runs whose method reuses other runs' trained weights through ``RunContext.member_model``
(a deep ensemble's members, a subnetwork ensemble's parent) depend on them. Those member runs are
found by running the method's stage logic against a recording context on the meta device (no
data, no training: :func:`~benchmark.sweep.plan.member_requests`), scheduled as tasks of an earlier array (a member
that is not itself a run of the sweep only trains and saves its weights, writing no record), and
the dependent array starts ``afterany`` the earlier one (SLURM) or after it (local, debug). A
last one-task job rebuilds the leaderboards (``write_leaderboards``) after all of them.

A relaunch (or two launches at once) never submits a run twice: launches of one sweep hold its
launch lock (``<log_dir>/launch.lock``) while they read the manifest, ask the controller and
submit; runs whose manifest job the controller lists as pending or running (and whose comment
carries this sweep's launch token) are in flight and skipped; a relaunch whose runs are all done
rebuilds a leaderboard that is missing or older than the newest record.

Sweeps that share results and checkpoint folders (different log folders) train each run once: a
task whose run already has its completed record skips it; one whose run another process is
training (it holds the run's lock: another sweep's job, a ``bench``) trains nothing, leaves a note
(``<log_dir>/elsewhere/<run id>.json``) and is shown as running elsewhere until that record exists
(then done), or as failed once the lock's holder is gone without one (seen from its own host).

``python -m benchmark sweep-status FILE [--resubmit-failed]`` lists each run as pending, running,
done, failed or unknown (controller unreachable), with SLURM's pending reason and a flag on jobs
that can never start, and the leaderboard's state, from the records, the submission manifest
(``<log_dir>/manifest.json``: run id -> job id, token and log paths; the leaderboard job), failure
notes the tasks leave (``<log_dir>/failures/<run id>.json``), ``squeue`` and ``sinfo``.

The sweep file (TOML; unknown keys are errors that list the valid ones)::

    name = "tiny"                     # default: the file's stem; labels jobs and the log folder
    description = "..."
    suite = "quick"                   # or suites = ["quick", "paper"]: names or paths of suites
    methods = ["deterministic"]       # keep runs whose name or method is listed (default: all)
    datasets = ["cifar10"]            # keep runs on these datasets (default: all)
    backbones = ["resnet8"]           # keep runs on these backbones (default: all)
    seeds = [0, 1, 2]                 # replaces the suites' seeds
    device = "auto"                   # the harness's device (auto: cuda if there)
    sync_bn = true                    # multi-task jobs: full-batch BatchNorm statistics

    [set]                             # fixed overrides for every run ("table.key" = value)
    "train.epochs" = 1
    [grid]                            # one run per combination; names get "[train.lr=0.1]"
    "train.lr" = [0.1, 0.05]
    [paths]                           # relative to the launch directory
    results_dir = "results/runs"; checkpoint_dir = "results/checkpoints"
    leaderboard_dir = "results/leaderboards"; log_dir = "results/sweeps/<name>"
    data_dir = "..."; cache_dir = "..."  # default: the harness's ($PLURES_DATA_DIR, ./data)
    [slurm]
    cluster = "slurm"                 # slurm | local | debug
    partition, time_min, gpus_per_node, cpus_per_task, mem_gb, constraint, account, qos,
    array_parallelism, nodes, tasks_per_node, max_num_timeout, grace_s,
    additional = { ... }              # more sbatch parameters (submitit's slurm_additional_parameters)

Modules: :mod:`~benchmark.sweep.spec` (the file: :class:`Sweep`, :func:`load_sweep`),
:mod:`~benchmark.sweep.plan` (the tasks: :func:`expand`, :func:`member_requests`, payloads),
:mod:`~benchmark.sweep.artifacts` (records, final weights, manifest, launch lock, task notes, run-lock holders, leaderboard age),
:mod:`~benchmark.sweep.preflight` (what the jobs would fail on at once: data not found from their environment, subsets or batch
larger than the data),
:mod:`~benchmark.sweep.scheduler` (squeue / sinfo: states, reasons, never-startable requests),
:mod:`~benchmark.sweep.jobs` (what runs inside the jobs), :mod:`~benchmark.sweep.submission`
(:func:`launch`), :mod:`~benchmark.sweep.monitor` (:func:`status`), :mod:`~benchmark.sweep.cli`
(both commands) and :mod:`~benchmark.sweep.slurm_job` (submitit plumbing: executors,
preemption-safe calls, bounded waits).
"""

from __future__ import annotations

from .artifacts import (LAUNCH_LOCK, MANIFEST, FolderNotWritableError, LaunchLockedError, ResumePoint, check_writable, completed_runs, elsewhere_path,
                        failed_runs, failure_path, is_done, launch_lock, launch_lock_path, leaderboard_freshness, manifest_path, read_manifest, resume_point,
                        write_manifest)
from .cli import format_plan, main, status_main
from .jobs import rebuild_leaderboard, run_task, train_member
from .monitor import LEADERBOARD_STATES, STATES, LeaderboardStatus, QueueView, RunStatus, in_flight, leaderboard_status, queue_view, report, status
from .plan import PlanError, PlanningContext, SweepTask, expand, member_requests
from .scheduler import ControllerUnreachable, QueuedJob
from .spec import PATH_KEYS, SLURM_KEYS, SWEEP_KEYS, Sweep, load_sweep
from .submission import Launch, SubmissionError, launch

__all__ = ["LAUNCH_LOCK", "LEADERBOARD_STATES", "MANIFEST", "PATH_KEYS", "ControllerUnreachable", "FolderNotWritableError", "LaunchLockedError",
           "LeaderboardStatus", "QueueView", "QueuedJob", "ResumePoint", "check_writable", "resume_point", "SLURM_KEYS", "STATES", "SWEEP_KEYS",
           "Launch", "PlanError", "PlanningContext", "RunStatus", "SubmissionError", "Sweep", "SweepTask", "completed_runs", "expand", "failed_runs",
           "elsewhere_path", "failure_path", "format_plan", "in_flight", "is_done", "launch", "launch_lock", "launch_lock_path", "leaderboard_freshness",
           "leaderboard_status", "load_sweep", "main", "manifest_path", "member_requests", "queue_view", "read_manifest", "rebuild_leaderboard",
           "report", "run_task", "status", "status_main", "train_member", "write_manifest"]

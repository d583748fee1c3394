"""What a sweep leaves on disk: the harness's records and members' final weights (what is done),
the submission manifest (``<log_dir>/manifest.json``: run id -> job id and log paths; the
leaderboard job), the launch lock beside it (``<log_dir>/launch.lock``), the notes its tasks write
(``<log_dir>/failures/<run id>.json``: the task failed; ``<log_dir>/elsewhere/<run id>.json``: another
process held the run's lock, the task trained nothing), the run locks' holders and whether its
leaderboards are up to date."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.io import atomic_write_json
from ..records import load_records, utc_now
from ..runner import LOCK_NAME, record_matches, record_run_id
from ..training.checkpoints import ResumePoint, resume_point  # noqa: F401  (re-exported: the sweep's status and submission)
from .plan import SweepTask
from .spec import Sweep

MANIFEST = "manifest.json"
LAUNCH_LOCK = "launch.lock"


def completed_runs(results_dir: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(suite, training run id) -> the completed records under ``results_dir`` (read once for a whole plan)."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in load_records(results_dir).records:
        out.setdefault((r["identity"]["suite"], r.get("training_run_id", r["run_id"])), []).append(r)
    return out


def failed_runs(results_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, run id) -> the newest failed record, for runs whose newest record failed."""
    out = {}
    for r in load_records(results_dir, include_failed=True).records:
        if r["status"] == "failed":
            out[(r["identity"]["suite"], r["run_id"])] = r
    return out


def failed_record(task: SweepTask, failed: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any] | None:
    """The task's run's newest record when that one failed (``failed`` from :func:`failed_runs`); None
    for a member or a run without one. (A failed record carries the record id, not the training run id.)"""
    if task.kind != "run":
        return None
    return failed.get((task.suite, record_run_id(task.run_id, C.resolve(task.config))))


def previous_failure(sweep: Sweep, task: SweepTask, failed: dict[tuple[str, str], dict[str, Any]]) -> str | None:
    """``type: message`` of the task's last failure: its failure note, else its run's failed newest
    record (:func:`failed_record`); None when it has not failed."""
    note = failure_path(sweep.paths["log_dir"], task.run_id)
    try:
        err = json.loads(note.read_text()) if note.exists() else (failed_record(task, failed) or {}).get("error")
    except (OSError, ValueError):
        err = None
    return f"{err.get('type', '')}: {err.get('message', '')}" if err else None


def is_done(task: SweepTask, sweep: Sweep, completed: dict[tuple[str, str], list[dict[str, Any]]]) -> bool:
    """A run: a completed record of its identity exists, by the rule the run itself applies when it starts
    (:func:`benchmark.runner.record_matches`; ``completed`` from :func:`completed_runs`); a member: its final weights."""
    if task.kind == "member":
        return (Path(sweep.paths["checkpoint_dir"]) / task.run_id / "final.pt").exists()
    candidates = completed.get((task.suite, task.run_id), [])
    if not candidates:
        return False
    resolved = C.resolve(task.config)
    return any(record_matches(r, resolved, task.run_id) for r in candidates)


WRITTEN_FOLDERS = ("results_dir", "checkpoint_dir", "log_dir", "leaderboard_dir")


class FolderNotWritableError(C.ConfigError):
    """A folder the sweep's jobs write to cannot be created or written; nothing was submitted."""


def check_writable(sweep: Sweep) -> None:
    """Create the folders the jobs write (records, checkpoints, logs, leaderboards) and write and
    remove a probe file in each: a real write, so that it holds for any user (root included) and any
    file system (read-only mounts, ACLs). Raises :class:`FolderNotWritableError` naming the folder."""
    for key in WRITTEN_FOLDERS:
        folder = Path(sweep.paths[key])
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(folder) else ""
            raise FolderNotWritableError(f"{sweep.path}: the {key} folder {folder} is not writable: {reason}{where}; "
                                         f"nothing was submitted (choose another folder in [paths] or fix its permissions)") from None


def failure_path(log_dir: str | Path, run_id: str) -> Path:
    """Where a failed task leaves its note (error type, message, traceback)."""
    return Path(log_dir) / "failures" / f"{run_id}.json"


def elsewhere_path(log_dir: str | Path, run_id: str) -> Path:
    """Where a task whose run another process was training (it held the run lock) leaves its note
    (time, message, the lock's holder): that task trained nothing."""
    return Path(log_dir) / "elsewhere" / f"{run_id}.json"


def task_notes(log_dir: str | Path, run_id: str) -> list[Path]:
    """The notes a task of ``run_id`` left (failure, elsewhere) that exist: a resubmission removes them."""
    return [p for p in (failure_path(log_dir, run_id), elsewhere_path(log_dir, run_id)) if p.exists()]


def run_lock_holder(checkpoint_dir: str | Path, run_id: str) -> dict[str, Any]:
    """What the newest holder of the run's lock wrote into it (``pid``, ``host``, ``started``; the
    harness's ``run.lock``); ``{}`` when there is no lock file or it cannot be read."""
    try:
        return dict(json.loads((Path(checkpoint_dir) / run_id / LOCK_NAME).read_text() or "{}"))
    except (OSError, ValueError, TypeError):
        return {}


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """Whether the process a run lock names still runs: known only on its own host (None elsewhere,
    or when the lock names no process)."""
    pid, host = holder.get("pid"), holder.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def manifest_path(sweep: Sweep) -> Path:
    return Path(sweep.paths["log_dir"]) / MANIFEST


def read_manifest(sweep: Sweep) -> dict[str, Any]:
    """The sweep's manifest (an empty one when nothing was submitted yet)."""
    path = manifest_path(sweep)
    if not path.exists():
        return {"sweep": str(sweep.path), "name": sweep.name, "runs": {}, "submissions": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise C.ConfigError(f"{path} is not valid JSON ({exc}); move it away to start a fresh manifest") from None


def write_manifest(sweep: Sweep, manifest: dict[str, Any]) -> None:
    manifest["updated"] = utc_now()
    atomic_write_json(manifest_path(sweep), manifest)


class LaunchLockedError(C.ConfigError):
    """Another launch of the same sweep (same log folder) holds its launch lock."""


def launch_lock_path(sweep: Sweep) -> Path:
    return Path(sweep.paths["log_dir"]) / LAUNCH_LOCK


@contextlib.contextmanager
def launch_lock(sweep: Sweep) -> Iterator[Path]:
    """Hold the sweep's launch lock (an exclusive ``flock`` on ``<log_dir>/launch.lock``) while the
    block reads the manifest, asks the scheduler what is in flight, submits and writes the manifest,
    so that two launches never submit the same run or overwrite each other's manifest entries.
    Raises :class:`LaunchLockedError` naming the holder (pid, host, command, start) when another
    launch holds it. The lock goes with the process (also on ``kill -9``); the file stays."""
    path = launch_lock_path(sweep)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(path.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            who = (f"process {holder.get('pid', '?')} on host {holder.get('host', '?')} ({holder.get('command', '?')}), "
                   f"since {holder.get('started', '?')}")
            raise LaunchLockedError(f"another launch of sweep {sweep.name} is submitting ({who}; lock {path}); nothing was submitted: "
                                    f"wait for it to finish, then run this again (runs it submits are then in flight and skipped)") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": utc_now(),
                                 "command": " ".join(sys.argv)[:300]}).encode())
        os.fsync(fd)
        yield path
    finally:
        os.close(fd)


def leaderboard_file(sweep: Sweep, suite: str) -> Path:
    """The table a sweep's leaderboard job writes for ``suite`` (the other formats are written with it)."""
    return Path(sweep.paths["leaderboard_dir"]) / suite / "leaderboard.md"


def leaderboard_freshness(sweep: Sweep, suites: list[str]) -> tuple[str, str]:
    """Whether the leaderboards of ``suites`` reflect their records: ``("current", "")``,
    ``("missing", why)`` (a suite with records has none), ``("stale", why)`` (one is older than its
    suite's newest record) or ``("none", "")`` (no records yet: nothing to build)."""
    any_records = False
    for suite in suites:
        records = [p for p in (Path(sweep.paths["results_dir"]) / suite).glob("*.json")] if suite else []
        if not records:
            continue
        any_records = True
        newest = max(records, key=lambda p: p.stat().st_mtime)
        board = leaderboard_file(sweep, suite)
        if not board.exists():
            return "missing", f"{board} does not exist"
        if board.stat().st_mtime < newest.stat().st_mtime:
            return "stale", f"{board} is older than the record {newest.name}"
    return ("current", "") if any_records else ("none", "")

"""Each task of a sweep as pending, running, done or failed: from the records, the manifest, the
failure notes its tasks leave, submitit's result files and ``squeue``."""

from __future__ import annotations

import json
import pickle
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .artifacts import completed_runs, failed_runs, failure_path, is_done, read_manifest
from .plan import SweepTask, expand
from .spec import Sweep

STATES = ("pending", "running", "done", "failed")


def _squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Job id (``123_4``) -> squeue's compact state (PD, R, CG, ...); None when squeue is unusable."""
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return {}
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%i %t", "-j", ",".join(ids)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    return dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())


def _result_failed(path: str | None) -> bool:
    """Whether submitit's result file says the task raised."""
    if not path or not Path(path).exists():
        return False
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)[0] == "error"
    except Exception:  # noqa: BLE001 - an unreadable result tells nothing
        return False


@dataclass
class RunStatus:
    """One task's state (one of :data:`STATES`), job id, log path and a short note."""

    task: SweepTask
    state: str
    job_id: str
    log: str
    note: str


def status(sweep: Sweep, tasks: list[SweepTask] | None = None) -> list[RunStatus]:
    """The state of every task of the sweep (``tasks``: default, the sweep's own expansion)."""
    tasks = expand(sweep) if tasks is None else tasks
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    failed = failed_runs(Path(sweep.paths["results_dir"]))
    runs = read_manifest(sweep)["runs"]
    slurm_ids = [m["job_id"] for m in runs.values() if m.get("cluster") == "slurm"]
    queue = _squeue_states(slurm_ids) if slurm_ids else {}
    out = []
    for t in tasks:
        m = runs.get(t.run_id, {})
        job, logpath = m.get("job_id", ""), m.get("stdout", "")
        note_file = failure_path(sweep.paths["log_dir"], t.run_id)
        if is_done(t, sweep, completed):
            state, note = "done", ""
        elif queue is not None and job in queue:
            code = queue[job]
            state, note = ("pending", f"queued ({code})") if code in ("PD", "RQ", "RS", "RH", "RD") else ("running", code)
        elif note_file.exists():
            err = json.loads(note_file.read_text())
            state, note = "failed", f"{err['type']}: {err['message']}"[:200]
        elif (t.suite, t.run_id) in failed and (not m or failed[(t.suite, t.run_id)]["created"] >= m.get("submitted", "")):
            err = failed[(t.suite, t.run_id)].get("error", {})
            state, note = "failed", f"{err.get('type', '')}: {err.get('message', '')}"[:200]
        elif not m:
            state, note = "pending", "not submitted"
        elif _result_failed(m.get("result")):
            state, note = "failed", "the task raised (see its log)"
        elif m.get("cluster") == "slurm" and queue is not None:
            state, note = "failed", "left the queue without a record or result (killed, cancelled, out of memory?)"
        else:
            state, note = "running", "submitted; no result yet"
        out.append(RunStatus(t, state, job, logpath, note))
    return out

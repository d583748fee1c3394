"""What a sweep leaves on disk: the harness's records and members' final weights (what is done),
the submission manifest (``<log_dir>/manifest.json``: run id -> job id and log paths) and the
failure notes its tasks write (``<log_dir>/failures/<run id>.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.io import atomic_write_json
from ..records import load_records, utc_now
from .plan import SweepTask
from .spec import Sweep

MANIFEST = "manifest.json"


def completed_runs(results_dir: Path) -> set[tuple[str, str]]:
    """(suite, training run id) of every completed record under ``results_dir``."""
    return {(r["identity"]["suite"], r.get("training_run_id", r["run_id"])) for r in load_records(results_dir).records}


def failed_runs(results_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, run id) -> the newest failed record, for runs whose newest record failed."""
    out = {}
    for r in load_records(results_dir, include_failed=True).records:
        if r["status"] == "failed":
            out[(r["identity"]["suite"], r["run_id"])] = r
    return out


def is_done(task: SweepTask, sweep: Sweep, completed: set[tuple[str, str]]) -> bool:
    """A run: its completed record exists (``completed`` from :func:`completed_runs`); a member: its final weights."""
    if task.kind == "member":
        return (Path(sweep.paths["checkpoint_dir"]) / task.run_id / "final.pt").exists()
    return (task.suite, task.run_id) in completed


def failure_path(log_dir: str | Path, run_id: str) -> Path:
    """Where a failed task leaves its note (error type, message, traceback)."""
    return Path(log_dir) / "failures" / f"{run_id}.json"


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

"""What runs inside a sweep's jobs: :func:`run_task` (one array task) and :func:`rebuild_leaderboard`
(the last job). Module level, so that submitit pickles them by reference
(``benchmark.sweep.jobs.run_task``): a job imports this module, it does not carry the code."""

from __future__ import annotations

import os
import traceback
from pathlib import Path
from typing import Any

from ..core import config as C
from ..core.cpu import configure_threads
from ..core.io import atomic_write_json
from ..core.runtime import Environment, StopRequested, select_device, stop_on_signals
from ..data.base import load_dataset
from ..catalogue.plugins import ENV_VAR as PLUGINS_VARIABLE  # PLURES_PLUGINS
from ..records import utc_now
from ..runner import RunContext, RunLockedError, member_config, run_experiment, run_id_of
from ..training.distributed import DistContext
from .artifacts import elsewhere_path, failure_path, run_lock_holder
from .slurm_job import STOP_REQUESTED


def train_member(config: dict[str, Any], overrides: dict[str, Any], env: Environment) -> Path:
    """Train (or find) the member run that ``config``'s run reuses through ``member_model(overrides)``,
    exactly as that run would, and save its final weights; writes no record. Returns their path."""
    resolved = C.resolve(config)
    device = select_device(env.device)
    # the same data the reusing run would load (its seed picks the validation split)
    data = load_dataset(resolved["run"]["dataset"], env.data_dir, env.cache_dir, val_size=resolved["data"]["val_size"],
                        val_seed=resolved["run"]["seed"], download=resolved["data"]["download"], progress=env.progress)
    ctx = RunContext(resolved, run_id_of(resolved), data, data.train.on_device(data.mean, data.std, device), env)
    with stop_on_signals(env.stop):
        ctx.member_model(overrides)
    return Path(env.checkpoint_dir) / run_id_of(member_config(resolved, overrides)) / "final.pt"


def _use_launch_plugins(payload: dict[str, Any]) -> None:
    """Give this process the launching process's ``PLURES_PLUGINS`` (unset when it had none), so that
    methods resolve here as they did at the launch. Payloads from before it was carried change nothing."""
    if "plugins" not in payload:
        return
    if payload["plugins"] is None:
        os.environ.pop(PLUGINS_VARIABLE, None)
    else:
        os.environ[PLUGINS_VARIABLE] = payload["plugins"]


def _restart_note() -> str:
    """`` (requeued: restart N of job J)`` inside a SLURM job that was requeued, else ``""`` (for the task's log)."""
    count = os.environ.get("SLURM_RESTART_COUNT", "")
    if not count.isdigit() or int(count) == 0:
        return ""
    job = os.environ.get("SLURM_ARRAY_JOB_ID") and f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
    return f" (requeued: restart {count} of job {job or os.environ.get('SLURM_JOB_ID', '?')})"


def run_task(payload: dict[str, Any], **_submitted_before: Any) -> dict[str, Any]:
    """One array task: a harness run (``kind="run"``) or a member's training (``kind="member"``).

    (Keyword arguments are ignored: jobs pickled by an earlier version pass ``resume=...``, which the
    run now decides by itself.)

    The same call on the first start and after any requeue (submitit's, or the scheduler's own
    after a node failure or a preemption): the run decides from disk whether it is done, resumes
    from its checkpoint or starts (``benchmark.runner.run_state``; a member: its final weights).

    Sets the launch's ``PLURES_PLUGINS`` first, before any method is built. Inside a SLURM job of
    several tasks (or under torchrun), trains data-parallel (``benchmark.training.distributed``);
    stop requests come from ``slurm_job.STOP_REQUESTED``. A failure leaves a note in
    ``<log_dir>/failures/`` (the harness also writes a failed record) and raises. The run trains
    under its run lock (``benchmark.runner.run_lock`` on its checkpoint folder, taken by
    ``run_experiment``): when another process holds it (another sweep's job over the same results
    and checkpoints, a ``bench``), the task trains and writes nothing (no record, no failure note),
    leaves a note in ``<log_dir>/elsewhere/`` naming the holder and returns ``{"run_id", "elsewhere"}``:
    the sweep counts the run done once that process writes its record.
    """
    _use_launch_plugins(payload)
    configure_threads()  # SLURM_CPUS_PER_TASK: the task's share of the node, not every core (benchmark.core.cpu)
    dist = DistContext.from_environment(sync_bn=payload.get("sync_bn", True))
    e = payload["env"]
    env = Environment(data_dir=e["data_dir"], cache_dir=e["cache_dir"], results_dir=Path(e["results_dir"]), checkpoint_dir=Path(e["checkpoint_dir"]),
                      device=dist.device() if dist is not None else payload["device"], progress=False,
                      log=lambda m: print(m, flush=True), stop=STOP_REQUESTED, dist=dist)
    print(f"sweep task {payload['kind']} {payload['run_id']}{_restart_note()}", flush=True)
    try:
        if payload["kind"] == "member":
            out = {"run_id": payload["run_id"], "final": str(train_member(payload["config"], payload["overrides"], env))}
        else:
            out = {"run_id": payload["run_id"], "records": [str(p) for p in run_experiment(payload["config"], env)]}
    except StopRequested:
        raise
    except RunLockedError as exc:
        # another process trains this run into the same checkpoint folder (its run lock): this task
        # trained nothing and must not mark that run failed
        print(f"sweep task {payload['run_id']}: another process holds the run's lock; this task trains nothing ({exc})", flush=True)
        atomic_write_json(elsewhere_path(payload["log_dir"], payload["run_id"]),
                          {"run_id": payload["run_id"], "time": utc_now(), "message": str(exc),
                           "holder": run_lock_holder(e["checkpoint_dir"], payload["run_id"])})
        return {"run_id": payload["run_id"], "elsewhere": str(exc)}
    except Exception as exc:
        if env.is_main:
            atomic_write_json(failure_path(payload["log_dir"], payload["run_id"]),
                              {"run_id": payload["run_id"], "time": utc_now(), "type": type(exc).__name__, "message": str(exc),
                               "traceback": traceback.format_exc()})
        raise
    finally:
        if dist is not None:
            dist.close()
    return out


def rebuild_leaderboard(results_dir: str, out_dir: str, suites: list[str]) -> list[str]:
    """The sweep's last job: leaderboards of its suites from the records (a pure function of them)."""
    from ..leaderboard import write_leaderboards

    return [str(p) for p in write_leaderboards(Path(results_dir), Path(out_dir), suites=suites)]

"""A sweep task that the scheduler requeues by itself resumes from its checkpoint (a run is
idempotent in its identity: it decides from disk when it starts, the submission carries no resume
flag). On a real local SLURM cluster (marker ``slurm``): ``scontrol requeue`` with the cluster's
``KillWait=5`` (the grace period ends in SIGKILL before anything is pickled again), and a node
failure (slurmd and the job's processes killed, the node marked down, the job requeued by SLURM)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")

from benchmark import sweep as S
from benchmark.records import load_records
from benchmark.sweep.slurm_job import wait_all
from benchmark.tools import slurm_local
from tests.conftest import write_cifar_archive
from tests.test_sweep import _slurm_sweep, _until

EPOCHS = 6  # 1000 images in batches of 20: 0.5-2 s an epoch here, so the task is still training when it is requeued


def _launch_one(tmp_path: Path, cluster: Any) -> tuple[S.Sweep, Any]:
    """One deterministic run of EPOCHS epochs on 1000 tiny CIFAR images, submitted; returns the sweep and its job."""
    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=200, as_tar=False)
    extra = f'[grid]\n"train.epochs" = [{EPOCHS}]\n"train.batch_size" = [20]'
    path = _slurm_sweep(tmp_path, tmp_path / "data", 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]', cluster, extra=extra,
                        partition=cluster.partition)
    sweep = S.load_sweep(path)
    launched = S.launch(sweep, S.expand(sweep), log=lambda m: None)
    (job,) = launched.arrays[0]
    return sweep, job


def _log(job: Any) -> str:
    return job.paths.stdout.read_text() if job.paths.stdout.exists() else ""


def _raw_id(job: Any) -> str:
    """SLURM's own id of an array task (``%A``: what slurmstepd and SLURM_JOB_ID name)."""
    out = subprocess.run(["squeue", "-h", "-j", str(job.job_id), "-o", "%A"], capture_output=True, text=True, timeout=20).stdout.split()
    assert out, f"job {job.job_id} is not queued"
    return out[0]


def _job_processes(raw_id: str) -> list[int]:
    """The processes of SLURM job ``raw_id`` on this machine: its slurmstepd's and every process whose environment names it."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline.startswith(f"slurmstepd: [{raw_id}.") or f"SLURM_JOB_ID={raw_id}".encode() in environ:
            pids.append(int(entry.name))
    return pids


def _node_state(node: str) -> str:
    return subprocess.run(["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True, timeout=20).stdout.strip()


def _resume_if_down(node: str) -> None:
    """Resume the node if it is still down. ReturnToService=2 may bring it back on its own once slurmd
    registers, also between our look at its state and the resume, which scontrol then refuses
    ("Invalid node state specified"): that refusal is fine when the node is no longer down."""
    for _ in range(5):
        if not _node_state(node).startswith("down"):
            return
        done = subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True, text=True, timeout=20)
        if done.returncode == 0:
            return
        time.sleep(0.5)
    state = _node_state(node)
    assert not state.startswith("down"), f"node {node} stays {state!r}: scontrol said {done.stderr.strip()!r}"


def _assert_resumed_not_restarted(job: Any, sweep: S.Sweep) -> None:
    """The requeued task resumed from the checkpoint: epoch 1 was trained once, the run finished with one record."""
    log = _log(job)
    assert "(requeued: restart 1 of job " in log, log
    assert "resume from epoch" in log and "resuming" in log, log
    assert log.count(f"train epoch 1/{EPOCHS}:") == 1, log  # not trained again from epoch 1
    assert log.count(f"train epoch {EPOCHS}/{EPOCHS}:") == 1, log
    (rec,) = load_records(Path(sweep.paths["results_dir"])).records
    assert len(rec["training"]["history"]["train"]) == EPOCHS


@pytest.mark.slurm
@pytest.mark.timeout(240)
def test_slurm_requeue_with_short_kill_wait_resumes(slurm_cluster: Any, tmp_path: Path) -> None:
    """``scontrol requeue`` of a running task: SIGTERM, then SIGKILL after KillWait=5 s (before
    submitit would pickle the call again); the requeued task resumes from the checkpoint."""
    assert "KillWait=5" in Path(slurm_cluster.conf_path).read_text().splitlines()
    sweep, job = _launch_one(tmp_path, slurm_cluster)
    _until(lambda: f"train epoch 1/{EPOCHS}:" in _log(job), 120, "the first epoch", poll_s=0.2)
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True, timeout=20)
    wait_all([job], timeout_s=180)
    _assert_resumed_not_restarted(job, sweep)


@pytest.mark.slurm
@pytest.mark.timeout(300)
def test_slurm_node_failure_requeues_and_resumes(private_slurm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A node failure: slurmd and the job's processes are killed (SIGKILL: nothing is saved or
    pickled then), slurmd comes back, the node is marked down; SLURM requeues the job (JobRequeue=1),
    the node is resumed, and the task resumes from the last checkpoint instead of epoch 1."""
    cluster = private_slurm()  # its own cluster: the node goes down
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf_path))
    sweep, job = _launch_one(tmp_path, cluster)
    _until(lambda: f"train epoch 2/{EPOCHS}:" in _log(job), 120, "two epochs", poll_s=0.2)
    raw = _raw_id(job)
    victims = [cluster.pids["slurmd"], *_job_processes(raw)]
    assert len(victims) > 2, victims  # slurmd, the job's slurmstepd and its processes
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    _until(lambda: "slurmd" not in slurm_local.status(cluster.state_dir)["pids"], 10, "slurmd gone", poll_s=0.1)
    assert private_slurm(cluster.state_dir).restarted == ["slurmd"]  # slurmd comes back alone (the job's processes do not)
    node = cluster.node_name
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=node failure test"], check=True, timeout=20)
    _until(lambda: "(requeued: restart 1 of job " in _log(job) or _node_state(node).startswith("down"), 30, "the node down or the job requeued")
    _resume_if_down(node)
    wait_all([job], timeout_s=200)
    _assert_resumed_not_restarted(job, sweep)

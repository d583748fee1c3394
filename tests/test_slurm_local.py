"""Tests of benchmark.sweep.slurm_job, against a real local SLURM cluster (marker ``slurm``, started by
benchmark.tools.slurm_local) and without: tests that need SLURM's binaries skip, saying what to install."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")
import submitit

from benchmark.core.io import atomic_write_json
from benchmark.sweep.slurm_job import (CLUSTERS, STOP_REQUESTED, CheckpointableCall, StopFlag, StopRequested, executor_parameters, make_executor,
                                       raise_if_stop_requested, wait_all)
from benchmark.tools import slurm_local

# submitit's SLURM executor refuses to be made without srun on PATH (sbatch scripts need no cluster, but it checks)
needs_srun = pytest.mark.skipif(shutil.which("srun") is None,
                                reason="needs SLURM's srun on PATH (submitit's SLURM executor looks for it): apt-get install slurm-client (CI installs it)")


@pytest.fixture(autouse=True, scope="module")
def _pickle_test_functions_by_value() -> Any:
    """Job processes cannot import this test module by name: ship its functions by value."""
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


# --------------------------------------------------------------------------- job functions


def square(x: int) -> int:
    return x * x


def whoami() -> dict[str, str]:
    return {k: os.environ.get(k, "") for k in ("SLURM_JOB_ID", "SLURM_CPUS_PER_TASK", "SLURM_ARRAY_TASK_ID")}


def executor_name() -> str:
    return submitit.JobEnvironment().cluster


def fail(msg: str) -> None:
    raise ValueError(msg)


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def count_progress(path: str, n_steps: int, step_s: float) -> dict[str, Any]:
    """Toy training loop: one step per ``step_s``, progress saved every step and on stop requests;
    it resumes from its saved progress when there is some (``starts``: whether each start resumed)."""
    p = Path(path)
    resumed = p.exists()
    state = json.loads(p.read_text()) if resumed else {"step": 0, "starts": [], "stops": []}
    state["starts"].append(resumed)
    state["pid"] = os.getpid()
    atomic_write_json(p, state)
    while state["step"] < n_steps:
        time.sleep(step_s)
        state["step"] += 1
        atomic_write_json(p, state)
        if STOP_REQUESTED.is_set():
            state["stops"].append(STOP_REQUESTED.reason)
            atomic_write_json(p, state)
            raise StopRequested(STOP_REQUESTED.reason)
    return state


def ignore_stop(path: str, seconds: float) -> dict[str, Any]:
    """Never polls the flag: the grace alarm must checkpoint and requeue it anyway (a start that
    finds an earlier one's note returns at once)."""
    p = Path(path)
    runs = json.loads(p.read_text()) if p.exists() else []
    again = bool(runs)
    runs.append(again)
    atomic_write_json(p, runs)
    if again:
        return {"runs": runs}
    time.sleep(seconds)
    return {"runs": runs, "finished_without_requeue": True}


def _wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not seen within {timeout_s}s")


def _progress(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- no SLURM needed


def test_make_executor_rejects_unknown_cluster(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cluster='slrum'.*slurm, local, debug"):
        make_executor("slrum", tmp_path)
    assert CLUSTERS == ("slurm", "local", "debug")


@pytest.mark.parametrize("kwargs", [{"cpus_per_task": 0}, {"time_min": 1.5}, {"nodes": True}, {"mem_gb": -1}, {"partition": ""}])
def test_make_executor_rejects_bad_values(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    (name, value), = kwargs.items()
    with pytest.raises(ValueError, match=name):
        make_executor("local", tmp_path, **kwargs)


def test_executor_parameters_map_every_option() -> None:
    ctor, params = executor_parameters(
        "slurm", partition="gpu", time_min=30, cpus_per_task=3, mem_gb=4, constraint="a100", account="proj", qos="high",
        array_parallelism=5, gpus_per_node=1, name="sweep", max_num_timeout=7, slurm_additional_parameters={"dependency": "afterany:12"},
    )
    assert params == {"timeout_min": 30, "gpus_per_node": 1, "cpus_per_task": 3, "mem_gb": 4, "nodes": 1, "tasks_per_node": 1, "name": "sweep",
                      "slurm_partition": "gpu", "slurm_constraint": "a100", "slurm_account": "proj", "slurm_qos": "high",
                      "slurm_array_parallelism": 5, "slurm_additional_parameters": {"dependency": "afterany:12"}}
    assert ctor == {"slurm_max_num_timeout": 7, "local_max_num_timeout": 7}
    assert executor_parameters("local") == ({}, {"nodes": 1, "tasks_per_node": 1})  # unset options left out


@needs_srun
def test_make_executor_maps_slurm_parameters(tmp_path: Path) -> None:
    ex = make_executor(
        "slurm", tmp_path, partition="gpu", time_min=30, cpus_per_task=3, mem_gb=4, constraint="a100",
        account="proj", qos="high", array_parallelism=5, gpus_per_node=1, name="sweep",
    )
    text = ex._executor._make_submission_file_text("echo hi", "uid")
    for line in ("--partition=gpu", "--time=30", "--cpus-per-task=3", "--mem=4GB", "--constraint=a100",
                 "--account=proj", "--qos=high", "--gpus-per-node=1", "--job-name=sweep"):
        assert f"#SBATCH {line}" in text, (line, text)
    assert ex._executor.parameters["array_parallelism"] == 5


@pytest.mark.parametrize("cluster", [pytest.param("slurm", marks=needs_srun), "local"])
def test_make_executor_max_num_timeout(tmp_path: Path, cluster: str) -> None:
    assert make_executor(cluster, tmp_path, max_num_timeout=7)._executor.max_num_timeout == 7
    assert make_executor(cluster, tmp_path)._executor.max_num_timeout == 3


def test_stop_flag_pickles_by_reference() -> None:
    assert cloudpickle.loads(cloudpickle.dumps(STOP_REQUESTED)) is STOP_REQUESTED
    assert cloudpickle.loads(cloudpickle.dumps(count_progress)).__globals__["STOP_REQUESTED"] is STOP_REQUESTED
    other = StopFlag()
    other.set("manual")
    copy = cloudpickle.loads(cloudpickle.dumps(other))
    assert copy is not STOP_REQUESTED and not copy.is_set()


@needs_srun
def test_make_executor_omits_unset_parameters(tmp_path: Path) -> None:
    text = make_executor("slurm", tmp_path)._executor._make_submission_file_text("echo hi", "uid")
    for flag in ("--partition", "--account", "--qos", "--constraint", "--mem", "--gpus-per-node"):
        assert flag not in text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cluster", ["local", "debug"])
def test_local_and_debug_clusters_run_jobs(tmp_path: Path, cluster: str) -> None:
    ex = make_executor(cluster, tmp_path, time_min=5, cpus_per_task=1, partition="ignored", account="ignored")
    jobs = [ex.submit(square, 3), ex.submit(fail, "boom"), ex.submit(executor_name)]
    out = wait_all(jobs, timeout_s=45, return_exceptions=True)
    assert out[0] == 9
    assert "boom" in str(out[1])
    assert out[2] == cluster
    with pytest.raises(Exception, match="boom"):
        wait_all(jobs, timeout_s=45)


@pytest.mark.timeout(60)
def test_wait_all_times_out_naming_jobs(tmp_path: Path) -> None:
    ex = make_executor("local", tmp_path)
    job = ex.submit(sleep_then, 30, "late")
    try:
        with pytest.raises(TimeoutError, match=str(job.job_id)):
            wait_all([job], timeout_s=0.5)
    finally:
        job.cancel(check=False)


def test_stop_flag_and_direct_call(tmp_path: Path) -> None:
    flag = StopFlag()
    assert not flag.is_set() and not flag
    flag.set("terminate", 15)
    flag.set("requeue", 12)
    flag.set("terminate", 15)
    assert flag.is_set() and flag.reason == "requeue" and flag.signum == 12
    flag.clear()
    assert not flag.is_set() and flag.reason == ""

    call = CheckpointableCall(count_progress)
    out = call(str(tmp_path / "p.json"), 2, 0.0)
    assert out["step"] == 2 and out["starts"] == [False]
    delayed = call.checkpoint(str(tmp_path / "p.json"), 2, 0.0)  # the same call: no resume flag
    assert delayed.args == (str(tmp_path / "p.json"), 2, 0.0) and delayed.kwargs == {} and delayed.function is call
    assert call(str(tmp_path / "p.json"), 3, 0.0)["starts"] == [False, True]  # the function resumes from its own state
    # outside submitit there is nothing to requeue: StopRequested propagates
    STOP_REQUESTED.set("manual")
    try:
        with pytest.raises(StopRequested):
            raise_if_stop_requested()
    finally:
        STOP_REQUESTED.clear()
    with pytest.raises(TypeError, match="not callable"):
        CheckpointableCall(42)  # type: ignore[arg-type]


@pytest.mark.timeout(90)
def test_checkpointable_call_requeues_on_local_executor(tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    ex = make_executor("local", tmp_path / "logs", time_min=5)
    job = ex.submit(CheckpointableCall(count_progress), str(progress), 40, 0.05)
    _wait_for(lambda: _progress(progress).get("step", 0) >= 3, 45, "first steps")
    # LocalJob._interrupt() signals the controller, which does not forward SIGUSR2: signal the task
    os.kill(_progress(progress)["pid"], signal.SIGUSR2)
    state = wait_all([job], timeout_s=60)[0]
    assert state["step"] == 40
    assert state["starts"] == [False, True]
    assert state["stops"] == ["requeue"]


# --------------------------------------------------------------------------- real SLURM


@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_slurm_single_job(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    ex = make_executor("slurm", tmp_path, time_min=5, cpus_per_task=1, mem_gb=0.25, partition=slurm_cluster.partition)
    job = ex.submit(whoami)
    (info,) = wait_all([job], timeout_s=45)
    assert info["SLURM_JOB_ID"] == str(job.job_id)
    assert info["SLURM_CPUS_PER_TASK"] == "1"


@pytest.mark.slurm
@pytest.mark.timeout(90)
def test_slurm_map_array(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    ex = make_executor("slurm", tmp_path, time_min=5, cpus_per_task=1, mem_gb=0.25, array_parallelism=4)
    jobs = ex.map_array(square, [0, 1, 2, 3])
    assert len(jobs) == 4 and all("_" in str(j.job_id) for j in jobs)
    assert wait_all(jobs, timeout_s=75) == [0, 1, 4, 9]


@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_slurm_job_exception_surfaces(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    ex = make_executor("slurm", tmp_path, time_min=5, mem_gb=0.25)
    job = ex.submit(fail, "bad-value-17")
    with pytest.raises(submitit.core.utils.FailedJobError, match="bad-value-17"):
        wait_all([job], timeout_s=45)


@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_slurm_refuses_impossible_request(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    ex = make_executor("slurm", tmp_path, time_min=5, cpus_per_task=slurm_cluster.cpus + 1)
    with pytest.raises(Exception, match="Batch job submission failed: (More processors requested than permitted|Requested node configuration is not available)") as info:
        ex.submit(square, 2)
    assert "sbatch" in str(info.value)
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True, timeout=20).stdout.strip() == ""


@pytest.mark.slurm
@pytest.mark.timeout(60)
def test_slurm_lost_job_is_reported(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    ex = make_executor("slurm", tmp_path, time_min=5, mem_gb=0.25)
    job = ex.submit(sleep_then, 60, "never")
    _wait_for(lambda: job.paths.stdout.exists(), 30, "job start")
    subprocess.run(["scancel", str(job.job_id)], check=True, timeout=20)
    with pytest.raises(submitit.core.utils.UncompletedJobError, match=str(job.job_id)):
        wait_all([job], timeout_s=45, lost_grace_s=2)


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_slurm_checkpointable_call_preempted_requeued_resumed(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    progress = tmp_path / "progress.json"
    ex = make_executor("slurm", tmp_path / "logs", time_min=10, mem_gb=0.25)
    job = ex.submit(CheckpointableCall(count_progress), str(progress), 60, 0.05)
    _wait_for(lambda: _progress(progress).get("step", 0) >= 3, 60, "first steps")
    job._interrupt(timeout=False)  # SIGTERM then SIGUSR2, as a preemption
    state = wait_all([job], timeout_s=150)[0]
    assert state["step"] == 60
    assert state["starts"] == [False, True]
    # the loop may poll between the two signals; the wrapper then waits for SIGUSR2 and requeues
    assert state["stops"] in (["requeue"], ["terminate"])
    assert "Requeued job" in job.paths.stdout.read_text()


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_slurm_grace_alarm_requeues_function_that_ignores_flag(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    runs = tmp_path / "runs.json"
    ex = make_executor("slurm", tmp_path / "logs", time_min=10, mem_gb=0.25)
    job = ex.submit(CheckpointableCall(ignore_stop, grace_s=1.0), str(runs), 120)
    _wait_for(lambda: runs.exists(), 60, "job start")
    job._interrupt(timeout=True)  # SIGUSR2 only, as at a time limit
    out = wait_all([job], timeout_s=150)[0]
    assert out == {"runs": [False, True]}


@pytest.mark.slurm
@pytest.mark.timeout(180)
def test_slurm_sigterm_exits_for_scheduler_requeue(slurm_cluster: slurm_local.SlurmCluster, tmp_path: Path) -> None:
    """SLURM's own preemption: SIGTERM only, the job ends; the scheduler's requeue runs the same call, which resumes from its own state."""
    progress = tmp_path / "progress.json"
    ex = make_executor("slurm", tmp_path / "logs", time_min=10, mem_gb=0.25)
    job = ex.submit(CheckpointableCall(count_progress, term_wait_s=0.5), str(progress), 60, 0.05)
    _wait_for(lambda: _progress(progress).get("step", 0) >= 3, 60, "first steps")
    subprocess.run(["scancel", "--signal=TERM", str(job.job_id)], check=True, timeout=20)
    squeue = ["squeue", "-h", "-j", str(job.job_id), "-o", "%T"]
    _wait_for(lambda: subprocess.run(squeue, capture_output=True, text=True, timeout=20).stdout.strip() in ("", "COMPLETED", "FAILED"), 60, "job end")
    assert _progress(progress)["stops"] == ["terminate"]
    assert not job.paths.result_pickle.exists()
    subprocess.run(["scontrol", "requeue", str(job.job_id)], check=True, timeout=20)  # as PreemptMode=REQUEUE does
    state = wait_all([job], timeout_s=120)[0]
    assert state["step"] == 60
    assert state["starts"] == [False, True]


def _sbatch(cluster: slurm_local.SlurmCluster, *args: str) -> str:
    r = subprocess.run(["sbatch", "--parsable", *args], capture_output=True, text=True, timeout=30, env=cluster.client_env())
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _queued(cluster: slurm_local.SlurmCluster) -> dict[str, str]:
    r = subprocess.run(["squeue", "-h", "-o", "%i %t"], capture_output=True, text=True, timeout=30, env=cluster.client_env())
    assert r.returncode == 0, r.stderr
    return dict(line.split() for line in r.stdout.splitlines() if line.strip())


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_controller_state_kept_across_restarts_unless_fresh(private_slurm: Any, capsys: pytest.CaptureFixture) -> None:
    """A controller that dies (kill -9) is started again alone, from its saved state: its running and
    queued jobs carry on under their ids. stop + start keeps the job-id counter (no id given twice);
    start(fresh=True) forgets everything, ids start again at 1, and says so."""
    cluster = private_slurm()
    assert not cluster.recovered and "fresh controller state" in slurm_local.state_message(cluster)
    running = _sbatch(cluster, "--wrap", "sleep 120")
    held = _sbatch(cluster, "--hold", "--wrap", "sleep 1")
    state_file = cluster.state_dir / "ctld" / slurm_local.STATE_FILE
    submitted = time.time()
    deadline = time.monotonic() + 30  # slurmctld saves its job state a few seconds after a change
    while not (state_file.exists() and state_file.stat().st_mtime > submitted and _queued(cluster).get(running) == "R"):
        assert time.monotonic() < deadline, "the controller did not save its state"
        time.sleep(0.5)
    time.sleep(1.5)  # the save that follows the job's start
    slurmd = cluster.pids["slurmd"]
    os.kill(cluster.pids["slurmctld"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "slurmctld" in slurm_local.status(cluster.state_dir)["pids"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    revived = private_slurm(cluster.state_dir)
    assert revived.recovered and revived.pids["slurmd"] == slurmd  # the node was left alone
    assert "controller state recovered" in slurm_local.state_message(revived)
    assert _queued(revived) == {running: "R", held: "PD"}  # same ids, the running job still running
    later = _sbatch(revived, "--hold", "--wrap", "sleep 1")
    assert int(later) > int(held)
    slurm_local.stop(revived)
    again = private_slurm(revived.state_dir)
    assert again.recovered and int(_sbatch(again, "--hold", "--wrap", "sleep 1")) > int(later)  # ids continue after stop + start
    slurm_local.stop(again)
    fresh = private_slurm(again.state_dir, fresh=True)
    assert not fresh.recovered and "--fresh: earlier jobs forgotten" in slurm_local.state_message(fresh, fresh=True)
    assert _queued(fresh) == {} and _sbatch(fresh, "--hold", "--wrap", "sleep 1") == "1"


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_start_after_slurmd_died_restarts_it_alone_and_keeps_the_queue(private_slurm: Any) -> None:
    """slurmd killed (kill -9): ``start`` starts slurmd alone again; the controller, the queue and the
    running job carry on (nothing is cancelled), and the node runs jobs again. The same when all run:
    nothing is started."""
    cluster = private_slurm()
    running = _sbatch(cluster, "--wrap", "sleep 120")
    held = _sbatch(cluster, "--hold", "--wrap", "sleep 1")
    deadline = time.monotonic() + 30
    while _queued(cluster).get(running) != "R":
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.2)
    ctld, slurmd = cluster.pids["slurmctld"], cluster.pids["slurmd"]
    os.kill(slurmd, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while "slurmd" in slurm_local.status(cluster.state_dir)["pids"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    revived = private_slurm(cluster.state_dir)
    assert revived.restarted == ["slurmd"] and revived.pids["slurmctld"] == ctld and revived.pids["slurmd"] != slurmd
    assert slurm_local.state_message(revived).startswith("restarted slurmd alone (the other daemons were running): queued and running jobs kept")
    assert _queued(revived) == {running: "R", held: "PD"}  # same jobs, the running one still running
    r = subprocess.run(["srun", "-t", "1", "hostname"], capture_output=True, text=True, timeout=60, env=revived.client_env())
    assert r.returncode == 0, r.stderr  # the node runs jobs again
    again = private_slurm(cluster.state_dir)
    assert again.restarted == [] and again.pids == revived.pids and "nothing was started" in slurm_local.state_message(again)
    assert _queued(again) == {running: "R", held: "PD"}


def test_restart_reuses_free_ports_and_writes_the_partition_limit_policy(tmp_path: Path) -> None:
    """No SLURM needed: the ports of an earlier slurm.conf are reused only when both are free again;
    EnforcePartLimits is the one asked for; bad values are refused."""
    import socket

    conf = tmp_path / "slurm.conf"
    text = slurm_local._slurm_conf(tmp_path, node="n1", cpus=2, mem_mb=1000, ctld_port=0, slurmd_port=0, enforce_part_limits="NO")
    assert "EnforcePartLimits=NO" in text.splitlines() and "EnforcePartLimits=ALL" in slurm_local._slurm_conf(
        tmp_path, node="n1", cpus=2, mem_mb=1000, ctld_port=0, slurmd_port=0).splitlines()
    a, b = slurm_local._free_port(), slurm_local._free_port()
    while b == a:
        b = slurm_local._free_port()
    conf.write_text(slurm_local._slurm_conf(tmp_path, node="n1", cpus=2, mem_mb=1000, ctld_port=a, slurmd_port=b))
    assert slurm_local._previous_ports(conf) == (a, b)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", a))
        busy.listen()
        assert slurm_local._previous_ports(conf) is None  # taken meanwhile: new ports are picked
    assert slurm_local._previous_ports(tmp_path / "missing.conf") is None
    with pytest.raises(ValueError, match="enforce_part_limits='SOME': expected ALL, ANY or NO"):
        slurm_local.start(tmp_path / "state", enforce_part_limits="SOME")

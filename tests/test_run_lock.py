"""One process per run: the run lock (a real second process holds it), a finished run that is not
run again, and stop / resume messages that read the same."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.core.runtime import StopRequested
from benchmark.runner import LOCK_NAME, Environment, RunLockedError, run_experiment, run_id_of, run_lock

REPO = Path(__file__).resolve().parent.parent

HOLDER = """
import sys
from pathlib import Path
from benchmark.runner import run_lock
with run_lock(Path(sys.argv[1]), "held-by-test"):
    print("locked", flush=True)
    sys.stdin.read()  # hold until the test closes stdin
"""


def env_for(tmp_path: Path, data_dir: Path, logs: list[str] | None = None, **kw) -> Environment:
    log = logs.append if logs is not None else (lambda m: None)
    return Environment(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=log, **kw)


@pytest.fixture
def holder():
    """``holder(folder)``: a second Python process that holds the run lock of ``folder`` until the test ends."""
    procs: list[subprocess.Popen] = []

    def start(folder: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield start
    for proc in procs:
        if not proc.stdin.closed:
            proc.stdin.close()
        proc.wait(timeout=30)


def test_second_process_gets_a_clear_error_naming_the_holder(cifar10_dir, tiny_run_config, tmp_path: Path, holder, monkeypatch) -> None:
    import benchmark.runner as runner

    root, _ = cifar10_dir
    run_id = run_id_of(C.resolve(tiny_run_config))
    proc = holder(tmp_path / "ckpt" / run_id)
    trained = []
    monkeypatch.setattr(runner, "_train_and_record", lambda *a, **k: trained.append(a) or pytest.fail("trained"))
    with pytest.raises(RunLockedError) as info:
        run_experiment(tiny_run_config, env_for(tmp_path, root))
    message = str(info.value)
    assert f"run {run_id} is already running (process {proc.pid} on host {socket.gethostname()}" in message
    assert str(tmp_path / "ckpt" / run_id / LOCK_NAME) in message
    assert not trained and not (tmp_path / "runs").exists()  # nothing trained, no record (not even a failed one)


def test_locked_run_through_the_cli_exits_2(cifar10_dir, tiny_run_config, tmp_path: Path, holder, capsys) -> None:
    root, _ = cifar10_dir
    cfg = tmp_path / "run.toml"
    cfg.write_text('[run]\nmethod = "deterministic"\ndataset = "cifar10"\nbackbone = "resnet8"\n')
    run_id = run_id_of(C.resolve(C.load_toml(cfg)))
    proc = holder(tmp_path / "ckpt" / run_id)
    rc = cli.main(["run", str(cfg), "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                   "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"])
    assert rc == 2
    assert f"is already running (process {proc.pid} on host {socket.gethostname()}" in capsys.readouterr().err


def test_lock_is_released_when_the_holder_exits(tmp_path: Path, holder) -> None:
    proc = holder(tmp_path / "run")
    with pytest.raises(RunLockedError, match=f"process {proc.pid}"):
        with run_lock(tmp_path / "run", "x"):
            pass
    proc.stdin.close()
    proc.wait(timeout=30)
    with run_lock(tmp_path / "run", "x") as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_lock_held_in_process_refuses_a_second_holder(tmp_path: Path) -> None:
    """flock locks belong to the open file: a second open in the same process is refused too."""
    with run_lock(tmp_path, "a"):
        with pytest.raises(RunLockedError, match=f"process {os.getpid()}"):
            with run_lock(tmp_path, "a"):
                pass


def test_stop_resume_and_finished_messages(cifar10_dir, tiny_run_config, stop_after, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    run_id = run_id_of(C.resolve(tiny_run_config))
    logs: list[str] = []
    with pytest.raises(StopRequested, match=r"^stopped in epoch 1 after step 4 of 6: test$"):
        run_experiment(tiny_run_config, env_for(tmp_path, root, logs, stop=stop_after(3)))
    assert any(m.startswith("stopped in epoch 1 after step 4 of 6: test; running it again resumes from the checkpoints in") for m in logs), logs
    logs.clear()
    [path] = run_experiment(tiny_run_config, env_for(tmp_path, root, logs))
    ckpt = tmp_path / "ckpt" / run_id / "train.pt"
    assert logs[0] == f"run {run_id} on cpu: resume from epoch 1 after step 4 ({ckpt})", logs
    assert any(f"resuming {run_id} train in epoch 1 after step 4 of 6 (next: step 5) from" in m for m in logs), logs
    # the finished run: says so, names the record, evaluates nothing and writes nothing new
    logs.clear()
    again = run_experiment(tiny_run_config, env_for(tmp_path, root, logs))
    assert again == [path]
    assert logs == [f"run {run_id} on cpu: done: completed record {path}; skipped (--restart trains it again)"], logs
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 1
    # with restart the run is trained and evaluated again, into a new record
    [fresh] = run_experiment(tiny_run_config, env_for(tmp_path, root, restart=True))
    assert fresh != path and len(list((tmp_path / "runs").rglob("*.json"))) == 2
    # the lock file stays, unlocked, naming the last holder
    assert json.loads((tmp_path / "ckpt" / run_id / LOCK_NAME).read_text())["pid"] == os.getpid()


def test_member_run_held_elsewhere_is_waited_for(cifar10_dir, tiny_run_config, tmp_path: Path, holder) -> None:
    """Two ensembles sharing a member: the one that finds the member's lock held waits, then trains or reuses it."""
    root, _ = cifar10_dir
    cfg = {**tiny_run_config, "run": {**tiny_run_config["run"], "method": "deep_ensemble"}, "method": {"members": 2},
           "train": {**tiny_run_config["train"], "epochs": 1}}
    [first] = run_experiment(cfg, env_for(tmp_path / "a", root))
    member_ids = [m["run_id"] for m in json.loads(first.read_text())["training"]["members"]]
    proc = holder(tmp_path / "b" / "ckpt" / member_ids[0])
    logs: list[str] = []

    def log(message: str) -> None:
        logs.append(message)
        if "waiting for it to finish" in message:
            proc.stdin.close()  # the other process finishes; the lock is released

    env = env_for(tmp_path / "b", root)
    env.log = log
    [second] = run_experiment(cfg, env)
    assert any(f"run {member_ids[0]} is running in process {proc.pid} on host {socket.gethostname()}" in m for m in logs), logs
    a, b = (json.loads(p.read_text())["metrics"]["clean"] for p in (first, second))
    assert a["nll"] == b["nll"]

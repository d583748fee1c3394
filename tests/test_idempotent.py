"""A run is idempotent in its identity: whichever path starts it (``run``, ``bench``), it decides from
disk when it starts: a completed record means done, a checkpoint means resume, else start. Failed
lookups leave nothing behind; killed runs are described as they are."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark import cli
from test_iterating import TINY_SUITE

REPO = Path(__file__).resolve().parent.parent


def run_argv(root: Path, tmp_path: Path) -> list[str]:
    return ["run", "--set", "run.dataset=cifar10", "--set", "run.backbone=resnet8", "--set", "backbone.width=4", "--set", "train.epochs=2",
            "--set", "train.batch_size=32", "--set", "eval.corruptions=none", "--set", "eval.latency_repeats=1", "--set", "eval.latency_batch=8",
            "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress", "--device", "cpu"]


def test_failed_data_lookup_leaves_no_lock_and_no_folder(tmp_path: Path, capsys) -> None:
    rc = cli.main(["run", "--from-suite", "quick:mimo", "--data-dir", str(tmp_path / "nonexistent"), "--cache-dir", str(tmp_path / "cache"),
                   "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"])
    assert rc == 2 and "not found" in capsys.readouterr().err
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "runs").exists()


def test_run_resumes_skips_and_restarts_as_bench_does(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    root, _ = cifar10_dir
    make_env = cli.make_env

    def interrupting_env(args):  # a SIGTERM after the first epoch, as a signal would set it
        from benchmark.core.runtime import StopFlag

        env = make_env(args)
        flag, say = StopFlag(), env.log
        env.stop = flag
        env.log = lambda m: (say(m), flag.set("SIGTERM") if "train epoch 1/2" in m else None)
        return env

    monkeypatch.setattr(cli, "make_env", interrupting_env)
    assert cli.main(run_argv(root, tmp_path)) == 130
    err = capsys.readouterr()
    assert "running it again resumes from the checkpoints in" in err.out
    monkeypatch.setattr(cli, "make_env", make_env)
    # no --resume: the same command continues from the checkpoint and says which
    assert cli.main(run_argv(root, tmp_path)) == 0
    out = capsys.readouterr().out
    assert re.search(r"^run deterministic-\S+ on cpu: resume from epoch 2 \(\S+/train\.pt\)$", out, re.M), out
    assert "train epoch 1/2" not in out and "train epoch 2/2" in out
    [record] = (tmp_path / "runs").rglob("*.json")
    # again: done, nothing trained or written
    assert cli.main(run_argv(root, tmp_path)) == 0
    out = capsys.readouterr().out
    assert f"done: completed record {record}; skipped (--restart trains it again)" in out and "train epoch" not in out
    assert list((tmp_path / "runs").rglob("*.json")) == [record]
    # --restart: trained anew into a second record; the first stays
    assert cli.main(run_argv(root, tmp_path) + ["--restart"]) == 0
    out = capsys.readouterr().out
    assert "start anew (--restart)" in out and "train epoch 1/2" in out
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2 and record.exists()


def test_bench_killed_before_a_checkpoint_says_start_and_a_config_failure_leaves_no_state(cifar10_dir, tmp_path: Path) -> None:
    """SIGKILL during the second run's first epoch (no checkpoint yet): the next bench skips the first run
    and says the second starts (it has nothing to resume from). A bench that fails on a bad value trains
    nothing and leaves nothing a later bench could take for an interrupted one."""
    root, _ = cifar10_dir
    suite = tmp_path / "tinybench.toml"
    suite.write_text(TINY_SUITE)
    argv = [sys.executable, "-m", "benchmark", "bench", str(suite), "--only", "deterministic,mimo", "--data-dir", str(root),
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress", "--no-cost-pass"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run(argv + ["--set", "train.epochs=-1"], capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
    assert bad.returncode == 2 and "train.epochs = -1 is not valid" in bad.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()

    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO)
    lines, deadline = [], time.monotonic() + 120
    for line in proc.stdout:  # SIGKILL as soon as the second run has started (before its first checkpoint)
        lines.append(line)
        if re.match(r"run mimo-\S+ on cpu: start", line):
            proc.send_signal(signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "".join(lines)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(lines)
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout.splitlines()
    assert out[0].endswith(": 1 done (skipped), 0 to resume from a checkpoint, 1 to start"), again.stdout
    assert out[2] == "  mimo seed 0: start: no record and no checkpoint of this run"
    assert "resuming" not in again.stdout and len(list((tmp_path / "runs").rglob("*.json"))) == 2


def test_a_fresh_clone_bench_leaves_the_reference_records_untouched(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    """The published records (results/reference, written with --reference) are never a user's: a plain bench in the
    same checkout trains into results/runs and leaves every reference file byte-identical; with --reference the
    finished runs are skipped (the reference bench is a no-op)."""
    root, _ = cifar10_dir
    monkeypatch.chdir(tmp_path)  # the CLI's default folders are relative to the checkout
    (tmp_path / "tinybench.toml").write_text(TINY_SUITE)
    common = ["bench", "tinybench.toml", "--only", "deterministic", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"),
              "--no-progress", "--cost-repeats", "2"]
    assert cli.main(common + ["--reference"]) == 0
    reference = tmp_path / "results" / "reference"
    published = {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()}
    assert (reference / "runs" / "tinybench").is_dir() and (reference / "cost" / "tinybench.json") in published
    assert (reference / "leaderboards" / "tinybench" / "leaderboard.md") in published
    assert not (tmp_path / "results" / "runs").exists()
    # as on a fresh clone: the reference records are there, no weights
    import shutil

    shutil.rmtree(tmp_path / "results" / "checkpoints")
    capsys.readouterr()
    assert cli.main(common) == 0
    out = capsys.readouterr().out
    assert ": 0 done (skipped), 0 to resume from a checkpoint, 1 to start" in out
    assert len(list((tmp_path / "results" / "runs" / "tinybench").glob("*.json"))) == 1
    assert (tmp_path / "results" / "leaderboards" / "tinybench" / "leaderboard.md").is_file()
    assert {p: p.read_bytes() for p in reference.rglob("*") if p.is_file()} == published
    # the reference bench again: its run is done, so nothing is trained or written
    assert cli.main(common + ["--reference", "--no-cost-pass"]) == 0
    assert ": 1 done (skipped), 0 to resume from a checkpoint, 0 to start" in capsys.readouterr().out
    assert {p for p in reference.rglob("*") if p.is_file() and p.suffix == ".json" and "runs" in p.parts} == {
        p for p in published if p.suffix == ".json" and "runs" in p.parts}


def test_more_seeds_extend_the_suite_in_its_namespace_without_retraining_seed_0(cifar10_dir, tmp_path: Path, capsys) -> None:
    root, _ = cifar10_dir
    (tmp_path / "tinybench.toml").write_text(TINY_SUITE)
    argv = ["bench", str(tmp_path / "tinybench.toml"), "--only", "deterministic", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"),
            "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--leaderboard-dir", str(tmp_path / "boards"),
            "--no-progress", "--no-cost-pass"]
    assert cli.main(argv) == 0
    [seed0] = (tmp_path / "runs" / "tinybench").glob("*.json")
    capsys.readouterr()
    assert cli.main(argv + ["--seeds", "0,1"]) == 0
    out = capsys.readouterr().out
    assert f"bench tinybench: 2 runs in {tmp_path / 'runs' / 'tinybench'}: 1 done (skipped), 0 to resume from a checkpoint, 1 to start" in out
    assert len(list((tmp_path / "runs" / "tinybench").glob("*.json"))) == 2 and seed0.exists()
    assert "| 2 |" in (tmp_path / "boards" / "tinybench" / "leaderboard.md").read_text()  # one row over two seeds
    with pytest.raises(SystemExit):
        cli.main(argv + ["--seeds", "0,0"])
    assert "--seeds must be distinct integers >= 0" in capsys.readouterr().err

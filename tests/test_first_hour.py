"""A researcher's first hour as one scripted walk on the tests' tiny fakes: the quick start's commands, a smoke
bench in its own namespace, a plug-in method, bad input caught before anything trains, the leaderboard, and
``plures.load`` on the smoke run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import plures
from benchmark import cli
from tests.doc_text import doc_block

REPO = Path(__file__).resolve().parent.parent

# the smoke bench of the quick start (make smoke), pointed at the tests' tiny CIFAR-10 and a narrow network
SMOKE = ["--only", "deterministic,mimo", "--set", "train.epochs=1", "--set", "data.train_subset=100", "--set", "eval.test_subset=20",
         "--set", "eval.corruptions=none", "--set", "eval.ood=[]", "--set", "eval.latency_repeats=1", "--set", "run.dataset=cifar10",
         "--set", "backbone.width=4", "--set", "train.batch_size=32", "--set", "eval.latency_batch=8"]


def test_first_hour(cifar10_dir, tmp_path: Path, capsys) -> None:
    root, _ = cifar10_dir
    where = ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
             "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"]
    # 1. what is there
    assert cli.main(["list"]) == 0
    assert "mimo" in capsys.readouterr().out

    # 2. a typo and an unknown flag cost nothing: caught before anything is read or trained
    with pytest.raises(SystemExit):
        cli.main(["bench", "quick", "--epochs", "1"])
    assert "--set train.epochs=VALUE" in capsys.readouterr().err
    assert cli.main(["bench", "quick", *SMOKE, "--set", "method.member=3", *where, "--leaderboard-dir", str(tmp_path / "boards")]) == 2
    assert "unknown option(s) ['member']" in capsys.readouterr().err and not (tmp_path / "runs").exists()

    # 3. the smoke bench: its own namespace, never beside the suite's records
    assert cli.main(["bench", "quick", *SMOKE, *where, "--leaderboard-dir", str(tmp_path / "boards"), "--cost-repeats", "2"]) == 0
    out = capsys.readouterr().out
    namespace = re.search(r"go to the namespace (quick\+[0-9a-f]{8})", out).group(1)
    assert not (tmp_path / "runs" / "quick").exists() and len(list((tmp_path / "runs" / namespace).glob("*.json"))) == 2
    board = (tmp_path / "boards" / namespace / "leaderboard.md").read_text()
    assert "mimo" in board and "deterministic" in board

    # 4. the same command again trains nothing
    assert cli.main(["bench", "quick", *SMOKE, *where, "--leaderboard-dir", str(tmp_path / "boards"), "--no-cost-pass"]) == 0
    assert ": 2 done (skipped), 0 to resume from a checkpoint, 0 to start" in capsys.readouterr().out

    # 5. the leaderboard command rebuilds the same board from the records
    before = (tmp_path / "boards" / namespace / "leaderboard.md").read_bytes()
    assert cli.main(["leaderboard", "--results-dir", str(tmp_path / "runs"), "--leaderboard-dir", str(tmp_path / "boards"),
                     "--suite", namespace]) == 0
    assert (tmp_path / "boards" / namespace / "leaderboard.md").read_bytes() == before

    # 6. the trained MIMO model, back from its record, gives the record's clean metrics
    [rec] = [r for r in plures.records(tmp_path / "runs", suite=namespace) if r["identity"]["method"] == "mimo"]
    trained = plures.load(rec, checkpoint_dir=tmp_path / "ckpt", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert plures.evaluate(trained)["clean"] == rec["metrics"]["clean"]


def test_first_hour_plugin_with_its_own_loss(cifar10_dir, tmp_path: Path) -> None:
    """The documentation's label-smoothing plug-in, in the researcher's own folder: check-method passes, and it runs."""
    root, _ = cifar10_dir
    filename, code = doc_block("plugin-loss-example")
    (tmp_path / "research").mkdir()
    (tmp_path / "research" / filename).write_text(code)
    env = {**os.environ, "PLURES_PLUGINS": filename.removesuffix(".py"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(tmp_path / "research"), str(REPO)])}
    check = subprocess.run([sys.executable, "-m", "benchmark", "check-method", "label_smoothing"], capture_output=True, text=True,
                           env=env, cwd=REPO, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "loss" in check.stdout
    run = subprocess.run([sys.executable, "-m", "benchmark", "run", "--set", "run.method=label_smoothing", "--set", "run.dataset=cifar10",
                          "--set", "run.backbone=resnet8", "--set", "backbone.width=4", "--set", "train.epochs=1", "--set", "train.batch_size=32",
                          "--set", "eval.corruptions=none", "--set", "eval.latency_repeats=1", "--set", "eval.latency_batch=8",
                          "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
                          "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"], capture_output=True, text=True, env=env, cwd=REPO,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    [record] = (tmp_path / "runs" / "adhoc").glob("label_smoothing-*.json")
    assert '"status": "completed"' in record.read_text()

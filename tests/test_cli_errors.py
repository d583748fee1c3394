"""Errors before the first epoch: every run of a bench checked first (every problem listed), unknown
flags answered with the subcommand's usage and a suggestion, a closed pipe ending quietly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli

REPO = Path(__file__).resolve().parent.parent

BAD_SUITE = """
name = "bad"
seeds = [0]
[defaults.run]
dataset = "cifar10"
backbone = "resnet8"
[defaults.train]
epochs = 1
[[runs]]
name = "deterministic"
run = { method = "deterministic" }
[[runs]]
name = "typo"
run = { method = "mimmo" }
[[runs]]
name = "badopt"
run = { method = "mimo" }
method = { member = 3 }
[[runs]]
name = "badtype"
run = { method = "mimo" }
method = { members = "three" }
[[runs]]
name = "badbackbone"
run = { method = "deterministic" }
backbone = { width = "wide" }
"""


def test_a_bench_lists_every_bad_run_before_anything_trains(cifar10_dir, tmp_path: Path, capsys) -> None:
    root, _ = cifar10_dir
    suite = tmp_path / "bad.toml"
    suite.write_text(BAD_SUITE)
    argv = ["bench", str(suite), "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: 4 of 5 run(s) have problems; nothing was run:"
    assert err[1].startswith("  typo seed 0: unknown method 'mimmo'; valid choices: ") and "mimo" in err[1]
    assert err[2] == "  badopt seed 0: unknown option(s) ['member'] for method 'mimo'; valid options: batch_repetition, input_repetition, label, members"
    assert err[3] == "  badtype seed 0: method.members = 'three' is not valid: expected an integer >= 1"
    assert err[4] == "  badbackbone seed 0: backbone.width = 'wide' is not valid: expected an integer"
    assert not any((tmp_path / d).exists() for d in ("runs", "ckpt", "cache", "boards"))  # nothing read, trained or written
    # a --set that no run accepts is caught the same way
    assert cli.main(argv + ["--only", "deterministic", "--set", "method.member=3"]) == 2
    assert "unknown option(s) ['member'] for method 'deterministic'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # an option's own rule (the options dataclass's check) too, before any data is read
    assert cli.main(argv + ["--only", "badtype", "--set", "method.members=2", "--set", "method.input_repetition=1.5"]) == 2
    assert "badtype seed 0: method 'mimo': MIMO option input_repetition=1.5 is invalid" in capsys.readouterr().err
    assert not any((tmp_path / d).exists() for d in ("runs", "ckpt", "cache"))


@pytest.mark.parametrize("argv, hint", [
    (["bench", "quick", "--epochs", "1"], "unrecognized arguments: --epochs 1; settings are given with --set: --set train.epochs=VALUE"),
    (["bench", "quick", "--only-run", "mimo"], "unrecognized arguments: --only-run mimo; did you mean --only?"),
    (["leaderboard", "--sutie", "quick"], "unrecognized arguments: --sutie quick; did you mean --suite?"),
    (["run", "--lr=0.1"], "unrecognized argument: --lr=0.1; settings are given with --set: --set train.lr=VALUE"),
])
def test_an_unknown_flag_gets_the_subcommands_usage_and_a_suggestion(argv, hint, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: python -m benchmark {argv[0]} ") and f"python -m benchmark {argv[0]}: error: {hint}" in err


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.run(f"{sys.executable} -m benchmark list -v | head -1", shell=True, capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.startswith("method ") and proc.stderr == ""

"""``leaderboard`` argument errors through the command line: a missing or empty records folder and
a suite without records exit 2, naming the value and the valid choices; nothing is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.leaderboard.write import LeaderboardArgumentError, check_arguments, main as leaderboard_main

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"


def test_missing_results_dir(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nonexistent"
    assert cli.main(["leaderboard", "--results-dir", str(missing), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"error: --results-dir {missing} does not exist; records are looked for there" in err
    assert not (tmp_path / "out").exists()


def test_results_dir_that_is_a_file(tmp_path: Path, capsys) -> None:
    path = tmp_path / "records.json"
    path.write_text("{}")
    assert cli.main(["leaderboard", "--results-dir", str(path), "--out", str(tmp_path / "out")]) == 2
    assert f"--results-dir {path} is not a folder" in capsys.readouterr().err


def test_empty_results_dir(tmp_path: Path, capsys) -> None:
    (tmp_path / "runs").mkdir()
    assert cli.main(["leaderboard", "--results-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    assert f"no run records under {tmp_path / 'runs'}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unknown_suite_lists_the_suites_with_records(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    assert cli.main(["leaderboard", "--results-dir", str(FIXTURES), "--out", str(out), "--suite", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert f"error: no records of suite(s) ['nosuch'] under {FIXTURES}; valid choices (suites with records): fixture-c10, fixture-jpeg" in err
    assert not out.exists()  # no empty board


def test_known_suite_is_written(tmp_path: Path, capsys) -> None:
    records = tmp_path / "runs"
    shutil.copytree(FIXTURES / "fixture-jpeg", records / "fixture-jpeg")
    assert cli.main(["leaderboard", "--results-dir", str(records), "--out", str(tmp_path / "out"), "--suite", "fixture-jpeg"]) == 0
    assert (tmp_path / "out" / "fixture-jpeg" / "leaderboard.md").exists()
    assert check_arguments(records) == ["fixture-jpeg"]


def test_module_entry_point_checks_too(tmp_path: Path, capsys) -> None:
    assert leaderboard_main([str(FIXTURES), str(tmp_path / "out"), "nosuch"]) == 2
    assert "no records of suite(s) ['nosuch']" in capsys.readouterr().err
    with pytest.raises(LeaderboardArgumentError, match="does not exist"):
        check_arguments(tmp_path / "nope", ["x"])

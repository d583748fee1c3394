"""What a sweep's jobs would fail on at once fails the dry run and the launch instead, before anything
is submitted: a training subset larger than the data, data the jobs cannot find from their
environment. And how the plan and sweep-status show long names, long failure notes and runs that
failed before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("submitit", reason="the sweep submits through submitit (pip install submitit; the GPU machine has none)")

from benchmark import sweep as S
from benchmark.data.base import load_dataset
from tests.test_sweep import data_dir, write_sweep  # noqa: F401  (data_dir: the tiny CIFAR fixture, 200 training and 40 test images)

HEAD = 'suite = "quick"\nmethods = ["deterministic"]\nseeds = [0]'


def _nothing_submitted(tmp_path: Path) -> bool:
    return not (tmp_path / "logs" / "manifest.json").exists() and not (tmp_path / "logs" / "jobs").exists()


def test_a_training_subset_larger_than_the_data_fails_the_dry_run_and_the_launch(tmp_path: Path, data_dir: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    from benchmark.cli import main

    path = write_sweep(tmp_path, HEAD, extra='[grid]\n"data.train_subset" = [100, 500]', data=data_dir)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "2 task(s), 0 done" in captured.out  # the plan first
    assert "checking cifar10 under" in captured.out  # no decoded copy yet: read once here, into the cache the jobs use
    assert "run deterministic[data.train_subset=500] seed 0 (deterministic-cifar10-resnet8-s0-" in captured.err
    assert "data.train_subset = 500 is not valid: the training split of cifar10 has 200 images" in captured.err
    assert "nothing was submitted" in captured.err and "Traceback" not in captured.err
    assert main(["sweep", str(path), "--dry-run"]) == 2  # again, from the cache's label files (nothing decoded)
    captured = capsys.readouterr()
    assert "checking cifar10" not in captured.out and "data.train_subset = 500 is not valid" in captured.err
    assert main(["sweep", str(path), "--cluster", "debug"]) == 2
    assert "data.train_subset = 500 is not valid" in capsys.readouterr().err and _nothing_submitted(tmp_path)
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))


def test_subsets_and_batch_within_the_data_pass(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture) -> None:
    """The largest valid values pass; one more fails, for the test subset and the batch too."""
    from benchmark.cli import main

    path = write_sweep(tmp_path, HEAD, extra='[grid]\n"data.train_subset" = [199]\n"eval.test_subset" = [39]', data=data_dir)
    assert main(["sweep", str(path), "--dry-run"]) == 0
    for key, value, message in (("eval.test_subset", 40, "eval.test_subset = 40 is not valid: the test split of cifar10 has 40 images"),
                                ("train.batch_size", 201, "train.batch_size = 201 is not valid: it exceeds the 200 training images of cifar10")):
        path = write_sweep(tmp_path, HEAD, extra=f'[grid]\n"{key}" = [{value}]', data=data_dir)
        capsys.readouterr()
        assert main(["sweep", str(path), "--dry-run"]) == 2
        assert message in capsys.readouterr().err


def test_data_the_jobs_cannot_find_fails_before_submission(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """No [paths] data_dir and no PLURES_DATA_DIR: the jobs look under ./data of the launch folder, where
    the data is not. The dry run and the launch fail, saying where the jobs look and why there; a
    decoded copy of the data read from elsewhere does not count (the job's loader looks for its source)."""
    from benchmark.cli import main

    path = write_sweep(tmp_path, HEAD, data=data_dir)  # data.download = false: nothing is fetched from the network
    path.write_text(re.sub(r"(?m)^data_dir = .*\n", "", path.read_text()))
    launch_folder = tmp_path / "launch"
    launch_folder.mkdir()
    monkeypatch.chdir(launch_folder)
    monkeypatch.delenv("PLURES_DATA_DIR", raising=False)
    load_dataset("cifar10", data_dir, tmp_path / "cache", download=False, progress=False)  # the sweep's cache holds a copy from elsewhere
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"the jobs would not find the data of cifar10: they look under {launch_folder / 'data'} (from the default ./data): " in err
    assert "CIFAR archive not found" in err and "set [paths] data_dir in the sweep file, or export PLURES_DATA_DIR before launching" in err
    assert main(["sweep", str(path), "--cluster", "debug"]) == 2 and _nothing_submitted(tmp_path)
    capsys.readouterr()
    monkeypatch.setenv("PLURES_DATA_DIR", str(data_dir))  # the jobs inherit it
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert "checking cifar10" not in capsys.readouterr().out  # the copy in the cache was read from there: nothing is read again


def test_plan_columns_stay_aligned_and_a_failed_run_is_resubmitted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Long grid names widen the name column (every row keeps its columns); a run whose task failed
    before is listed as ``resubmit (failed before: ...)``; sweep-status shows a long failure note whole."""
    from benchmark.cli import main
    from benchmark.sweep.cli import format_plan, status_main

    path = write_sweep(tmp_path, HEAD, extra='[grid]\n"train.lr" = [0.05, 0.1]\n"train.weight_decay" = [0.0001, 0.0005]\n"train.momentum" = [0.9]')
    sweep = S.load_sweep(path)
    tasks = S.expand(sweep)
    assert max(len(t.name) for t in tasks) > 30  # longer than the column used to be
    message = ("the loss became NaN in epoch 3 after step 17 of 50; lower train.lr or check the data: " * 4).strip()
    failures = {tasks[1].run_id: f"NonFiniteLossError: {message}"}
    lines = format_plan(sweep, tasks, set(), {}, failures).splitlines()
    header, rows = lines[2], lines[3:3 + len(tasks)]
    for t, row in zip(tasks, rows):  # every column starts under its heading
        assert row.index(t.run_id) == header.index("run id") and row.index(t.name) == header.index("name"), (row, header)
        assert row[header.index("seed"):].split()[:2] == [str(t.seed), str(len(t.needs))], (row, header)
    assert rows[1].split()[2] == "resubmit" and f"(failed before: NonFiniteLossError: {message})" in rows[1]
    assert [row.split()[2] for row in rows] == ["submit", "resubmit", "submit", "submit"]
    # the plan of the command finds the failure note the task left
    note = S.failure_path(tmp_path / "logs", tasks[1].run_id)
    note.parent.mkdir(parents=True)
    note.write_text(json.dumps({"type": "NonFiniteLossError", "message": message}))
    assert main(["sweep", str(path), "--dry-run"]) == 2  # no data here: the plan is printed, then the data check fails
    assert re.search(rf"resubmit\s+{tasks[1].run_id}", capsys.readouterr().out)
    (tmp_path / "logs" / "manifest.json").write_text(json.dumps({"runs": {tasks[1].run_id: {"job_id": "debug_1", "stdout": "/x/1.out",
                                                                                            "cluster": "debug", "submitted": "2020"}},
                                                                 "submissions": []}))
    status_main([str(path)])
    out = capsys.readouterr().out
    assert "".join(out.split()).count("".join(f"[NonFiniteLossError: {message}]".split())) == 1  # whole, wrapped between words
    assert max(len(line) for line in out.splitlines() if "NonFiniteLossError" in line or "lower train.lr" in line) <= 120

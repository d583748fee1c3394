"""The real-loop A/B tool on the tests' tiny CIFAR-10: both sides run, in alternating order, and the table comes
from their records. (Its timings are figures of the tool; nothing here asserts on a duration.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmark.tools import loop_ab as L

REPO = Path(__file__).resolve().parent.parent


def test_loop_ab_runs_both_checkouts_in_turn_and_tabulates_their_records(cifar10_dir, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    argv = ["--a", str(REPO), "--b", str(REPO), "--label-a", "old", "--label-b", "new", "--rows", "deterministic", "--repeats", "2",
            "--train-subset", "64", "--set", "run.dataset=cifar10", "--set", "backbone.width=4", "--set", "train.batch_size=16",
            "--set", "eval.test_subset=20", "--set", "eval.latency_batch=8", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"),
            "--work", str(tmp_path / "work"), "--name", "ab", "--out", str(tmp_path / "out")]
    assert L.main(argv) == 0
    result = json.loads((tmp_path / "out" / "ab.json").read_text())
    assert [(r["side"], r["round"], r["status"]) for r in result["runs"]] == [("A", 0, 0), ("B", 0, 0), ("B", 1, 0), ("A", 1, 0)]
    [entry] = result["table"]
    assert (entry["row"], entry["stage"]) == ("deterministic", "train")
    for side in ("A", "B"):
        assert len(entry[side]["ms_per_step"]) == 2 and all(v > 0 for v in entry[side]["ms_per_step"])
        assert entry[side]["median_ms_per_step"] > 0 and len(entry[side]["first_step_s"]) == 2
    assert entry["a_over_b"] == pytest.approx(entry["A"]["median_ms_per_step"] / entry["B"]["median_ms_per_step"])
    assert result["a"]["commit"] and result["cpu_model"] and result["train_subset"] == 64
    table = (tmp_path / "out" / "ab.md").read_text()
    assert "old (A) against new (B)" in table and "| deterministic | train |" in table and result["command"] in table
    # each round's records stay in their own folder (--work): 4 runs, one record each
    assert len(list((tmp_path / "work").glob("*-*/runs/*/*.json"))) == 4


def test_the_steady_state_needs_two_steps_and_a_checkout():
    record = {"run_id": "r", "config": {"train": {"batch_size": 32}, "data": {"train_subset": 40}},
              "training": {"history": {"train": [{"seconds": 1.0, "first_step_seconds": 0.5, "rows": 32}]}}}
    with pytest.raises(ValueError, match=r"1 step\(s\) per epoch; the steady state needs at least 2 \(raise --train-subset above 2 x train.batch_size = 64\)"):
        L.steady_steps(record)
    record["config"]["data"]["train_subset"] = 96
    [epoch] = L.steady_steps(record)["train"]
    assert epoch["steps"] == 3 and epoch["ms_per_step"] == pytest.approx(250.0)
    assert [L.order(i) for i in range(3)] == [("A", "B"), ("B", "A"), ("A", "B")]
    with pytest.raises(SystemExit, match="is not a plures checkout"):
        L.main(["--a", str(REPO / "docs")])

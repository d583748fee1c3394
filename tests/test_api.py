"""The Python API (``import plures``): run, load, evaluate and leaderboard over the harness's own functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import plures
from benchmark.core import config as C


def folders(tmp_path: Path, root: Path) -> dict:
    return dict(results_dir=tmp_path / "runs", checkpoint_dir=tmp_path / "ckpt", data_dir=str(root), cache_dir=str(tmp_path / "cache"),
                device="cpu")


@pytest.mark.parametrize("method, options", [("mimo", {"members": 2}), ("mc_dropout", {"samples": [1, 3]})])
def test_load_reproduces_the_records_clean_metrics_exactly(cifar10_dir, tiny_run_config, tmp_path: Path, method, options) -> None:
    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"run": {"method": method}, "method": options, "eval": {"test_subset": 30}})
    where = folders(tmp_path, root)
    records = plures.run(cfg, **where)
    assert records and all(r["status"] == "completed" for r in records)
    for rec in records:  # every evaluated variant (MC dropout: K=1 and K=3) from the one training run's final weights
        trained = plures.load(Path(rec["_path"]), checkpoint_dir=where["checkpoint_dir"], data_dir=str(root), cache_dir=where["cache_dir"])
        assert trained.record["run_id"] == rec["run_id"] and trained.weights == tmp_path / "ckpt" / rec["training_run_id"] / "final.pt"
        assert type(trained.method).__name__ and not trained.network.training
        metrics = plures.evaluate(trained)
        assert metrics["clean"] == rec["metrics"]["clean"]  # every value, exactly
    # by run id as well, and a finished run is not trained again
    again = plures.run(cfg, **where)
    assert [r["_path"] for r in again] == [r["_path"] for r in records]
    by_id = plures.load(records[0]["training_run_id"], results_dir=where["results_dir"], checkpoint_dir=where["checkpoint_dir"],
                        data_dir=str(root), cache_dir=where["cache_dir"])
    assert by_id.record["training_run_id"] == records[0]["training_run_id"]


def test_load_names_what_is_missing(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    where = folders(tmp_path, root)
    [rec] = plures.run(tiny_run_config, **where)
    with pytest.raises(ValueError, match=r"expected its final weights at .*elsewhere.*final\.pt"):
        plures.load(rec, checkpoint_dir=tmp_path / "elsewhere", data_dir=str(root), cache_dir=where["cache_dir"])
    with pytest.raises(FileNotFoundError, match="no completed record of run 'nosuch'"):
        plures.load("nosuch", results_dir=where["results_dir"])


def test_leaderboard_from_the_api(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    where = folders(tmp_path, root)
    plures.run(C.merge(tiny_run_config, {"run": {"suite": "apisuite"}}), **where)
    written = plures.leaderboard("apisuite", results_dir=where["results_dir"], out=tmp_path / "boards")
    assert tmp_path / "boards" / "apisuite" / "leaderboard.md" in written
    assert "deterministic" in (tmp_path / "boards" / "apisuite" / "leaderboard.md").read_text()
    assert json.loads(json.dumps([str(p) for p in written]))

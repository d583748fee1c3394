"""Adding a dataset, a corrupted-set source or a metric is one module: each is registered here from
the test module alone (as a user's module would), and a run uses it with no harness edit."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from benchmark.core import config as C
from benchmark.core.runtime import Environment
from benchmark.data.base import DATASETS, DatasetSpec, Split, load_datasets
from benchmark.data.corrupted.base import CORRUPTED_SOURCES, CorruptedSource, load_sources, subset_indices
from benchmark.evaluation.metric_specs import METRICS, MetricSpec, register_metric
from benchmark.runner import run_experiment
from tests.conftest import learnable_images

TOY = "toy-arrays"


def _toy_load(root: Path, cache: Path, download: bool, progress: bool):
    """A dataset held as arrays (no files): 200 train and 64 test images of 10 classes."""
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 200), ("test", 64)):
        labels = rng.integers(0, 10, size=n)
        splits[name] = Split(learnable_images(labels, seed=n), labels.astype(np.int64))
    return splits, tuple(f"c{k}" for k in range(10)), "synthetic", root


@dataclass
class _CleanCells:
    """A corrupted-set source whose every cell is the clean test subset: its metrics must equal the clean ones."""

    data: Any
    ev: dict[str, Any]
    device: Any
    source: str = "official"
    folder: Path | None = None
    seed: int | None = None
    desc: str = "toy cells"

    def cell(self, corruption: str, severity: int) -> tuple[Any, int]:
        idx = subset_indices(len(self.data.test), int(self.ev["corruption_subset"]), int(self.ev["corruption_seed"]))
        return self.data.test.take(idx).on_device(self.data.mean, self.data.std, self.device), len(idx)


@pytest.fixture
def registered():
    """Register the toy dataset, source and metric; remove them afterwards (other tests see the built-ins only)."""
    load_datasets()
    load_sources()
    spec = DatasetSpec(TOY, _toy_load, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "synthetic", "arrays made by a test",
                       corrupted={"official": "toy-clean-cells", "regenerated": "cifar-c-regenerated"}, corruption_profile="cifar")
    DATASETS.register(TOY)(spec)
    CORRUPTED_SOURCES.register("toy-clean-cells")(CorruptedSource("toy-clean-cells", lambda data, ev, folder, env, dev: _CleanCells(data, ev, dev),
                                                                  "the clean test subset in every cell"))

    def top2(log_probs: torch.Tensor, targets: torch.Tensor) -> float:
        return float((log_probs.topk(2, dim=-1).indices == targets[:, None]).any(dim=-1).double().mean())

    register_metric(MetricSpec("top2", "Top-2 (%)", "max", "pct", "cTop2", "cTop2 (%)", compute=top2))
    yield
    del DATASETS._items[TOY], CORRUPTED_SOURCES._items["toy-clean-cells"], METRICS._items["top2"]


def _run(tmp_path: Path, tiny_run_config: dict, **eval_changes: Any) -> dict[str, Any]:
    cfg = C.merge(tiny_run_config, {"run": {"dataset": TOY}, "train": {"epochs": 1},
                                    "eval": {"corruption_severities": [1], "corruption_subset": 16, **eval_changes}})
    env = Environment(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                      checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)
    [path] = run_experiment(cfg, env)
    return json.loads(path.read_text())


def test_a_registered_dataset_runs_with_regenerated_corruptions(registered, tiny_run_config, tmp_path: Path) -> None:
    rec = _run(tmp_path, tiny_run_config, corruptions="regenerated")
    assert rec["status"] == "completed" and rec["data"]["dataset"] == TOY and rec["data"]["test_size"] == 64
    corrupted = rec["metrics"]["corrupted"]
    assert corrupted["source"] == "regenerated" and len(corrupted["per"]) == 15
    assert all(cell["1"]["n"] == 16 for cell in corrupted["per"].values())


def test_a_registered_source_is_evaluated_by_the_one_loop(registered, tiny_run_config, tmp_path: Path) -> None:
    rec = _run(tmp_path, tiny_run_config, corruptions="official", corruption_subset=0)
    clean, per = rec["metrics"]["clean"], rec["metrics"]["corrupted"]["per"]
    assert rec["metrics"]["corrupted"]["source"] == "official"
    for cells in per.values():  # every cell is the clean test set: the same metrics
        assert cells["1"]["accuracy"] == clean["accuracy"] and cells["1"]["nll"] == pytest.approx(clean["nll"], rel=1e-12)


def test_a_registered_metric_is_computed_summarised_and_recorded(registered, tiny_run_config, tmp_path: Path) -> None:
    rec = _run(tmp_path, tiny_run_config, corruptions="official", corruption_subset=0)
    clean = rec["metrics"]["clean"]
    assert clean["accuracy"] <= clean["top2"] <= 1.0
    summary = rec["metrics"]["corrupted"]["summary"]
    assert summary["cTop2"] == pytest.approx(np.mean([c["1"]["top2"] for c in rec["metrics"]["corrupted"]["per"].values()]))


def test_a_corruption_kind_the_dataset_lacks_fails_before_anything_runs(registered, tiny_run_config, tmp_path: Path) -> None:
    spec = DATASETS.get(TOY)
    DATASETS._items[TOY] = DatasetSpec(**{**spec.__dict__, "corrupted": {"regenerated": "cifar-c-regenerated"}})
    with pytest.raises(C.ConfigError, match=r"eval.corruptions = 'official' is not available for dataset 'toy-arrays'; valid choices: none, regenerated"):
        _run(tmp_path, tiny_run_config, corruptions="official")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()  # no record, nothing trained


def test_a_registered_plot_joins_every_block(tmp_path: Path) -> None:
    """A plot is one registration: its figure is written for every block and shown on the page."""
    from benchmark.leaderboard import write_leaderboards
    from benchmark.leaderboard.plots import PLOTS, PlotSpec, new_figure, register_plot

    def seeds_figure(groups):
        fig = new_figure(4, 2)
        ax = fig.add_subplot(1, 1, 1)
        ax.bar(range(len(groups)), [len(recs) for _, recs in groups])
        return fig

    register_plot(PlotSpec("seeds", "Records per row", "How many seeds each row has.", seeds_figure))
    try:
        root = Path(__file__).parent / "fixtures" / "records"
        write_leaderboards(root, tmp_path, suites=["fixture-jpeg"])
    finally:
        del PLOTS._items["seeds"]
    folder = tmp_path / "fixture-jpeg"
    assert (folder / "plots" / "cifar10-jpeg__resnet8__seeds.svg").exists()
    assert "Records per row" in (folder / "index.html").read_text()

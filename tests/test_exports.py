"""Exports that say what was run: the LaTeX caption and the CSV columns carry the data, subset,
budget and seeds facts that the Markdown and HTML carry, on the fixture records of ``fixture-jpeg``
with MIMO turned into a training-subset run (the deterministic records are of the older kind,
written before subsets existed); and a block without a deep ensemble says so where its DEE is n/a."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest

from benchmark import leaderboard as lb
from benchmark.leaderboard.frame import RUN_FACTS
from benchmark.leaderboard.render import CAPTION_FACTS

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
SUITE = "fixture-jpeg"
SUBSET = {"size": 2000, "of": 50000, "seed": 3, "stratified": True}


def subset_records(folder: Path) -> Path:
    """``fixture-jpeg`` under ``folder``, its MIMO records trained on a 2,000-image subset (seed 3)."""
    (folder / SUITE).mkdir(parents=True)
    for path in sorted((FIXTURES / SUITE).glob("*.json")):
        rec = json.loads(path.read_text())
        if rec["identity"]["method"] == "mimo":
            rec = copy.deepcopy(rec)
            rec["data"].update(train_size=2000, subsets={"train": dict(SUBSET)})
            rec["budget"].update(train_subset=2000, train_images=2000, test_subset=0, test_images=10000)
            rec["config"].setdefault("data", {}).update(train_subset=2000, subset_seed=3)
        (folder / SUITE / path.name).write_text(json.dumps(rec))
    return folder


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, lb.SuiteBoard]:
    tmp = tmp_path_factory.mktemp("exports")
    runs = subset_records(tmp / "runs")
    lb.write_leaderboards(runs, tmp / "boards", plots=False, n_resamples=20)
    [board] = lb.load_boards(runs, warn=False, n_resamples=20)
    return tmp / "boards" / SUITE, board


def test_latex_caption_names_the_subset(exported) -> None:
    folder, _ = exported
    tex = (folder / "leaderboard.tex").read_text()
    caption = next(line for line in tex.splitlines() if line.startswith(r"\caption{cifar10-jpeg / resnet8. Comparability"))
    assert "Subsets: train 2,000 of 50,000 images (seeded, stratified): mimo M=3 (2 of 4 records)." in caption
    assert sum("subset" in line.lower() for line in tex.splitlines()) > 0  # grep -ci subset leaderboard.tex


def test_latex_caption_carries_every_run_fact_of_the_markdown(exported) -> None:
    folder, board = exported
    tex, md = (folder / "leaderboard.tex").read_text(), (folder / "leaderboard.md").read_text()
    [block] = board.blocks
    facts = dict(block.facts)
    assert {"Data", "Subsets", "Budget", "Seeds"} <= set(facts) and set(CAPTION_FACTS) >= {"Data", "Subsets", "Budget", "Seeds"}
    for key in CAPTION_FACTS:
        if key in facts:
            assert f"- **{key}**: {facts[key]}" in md
            assert lb.tex_escape(f"{key}: {facts[key].rstrip('.')}.") in tex, key


def test_csv_columns_say_what_each_row_ran(exported) -> None:
    folder, _ = exported
    t = pd.read_csv(folder / "leaderboard.csv", keep_default_na=False, na_values=[""])
    assert list(t.columns[10:10 + len(RUN_FACTS)]) == list(RUN_FACTS)  # after the identity and seeds
    rows = {r["method"]: r for _, r in t.iterrows()}
    mimo, det = rows["mimo"], rows["deterministic"]
    assert (mimo["train_subset"], mimo["train_images"], mimo["train_split_images"], mimo["subset_seed"]) == (2000, 2000, 50000, 3)
    assert (mimo["test_subset"], mimo["test_images"], mimo["test_split_images"]) == (0, 10000, 10000)
    # a record from before subsets: all images, no subset seed
    assert (det["train_subset"], det["train_images"], det["train_split_images"], det["test_subset"]) == (0, 50000, 50000, 0)
    assert pd.isna(det["subset_seed"]) and pd.isna(det["test_subset_seed"])
    for r in (mimo, det):
        assert (r["data_source"], r["epochs"], r["batch_size"], r["precision"]) == ("jpeg-copy", 5, 128, "bf16")
        assert (r["seeds"], r["seed_list"]) == (2, "0 1")
        assert pd.isna(r["corrupted_source"]) and pd.isna(r["corrupted_subset"])  # this suite has no corrupted metrics


def test_csv_corrupted_facts_and_differing_values(tmp_path: Path) -> None:
    """Corrupted data per row; a fact that differs between a row's seeds lists both values."""
    runs = tmp_path / "runs"
    (runs / "fixture-c10").mkdir(parents=True)
    for path in sorted((FIXTURES / "fixture-c10").glob("deterministic-*.json")):
        rec = json.loads(path.read_text())
        if rec["identity"]["seed"] == 1:
            rec["budget"]["batch_size"] = 64  # not in the config fingerprint: the seeds stay one row
        (runs / "fixture-c10" / path.name).write_text(json.dumps(rec))
    [board] = lb.load_boards(runs, warn=False, n_resamples=20)
    t = pd.read_csv(pd.io.common.StringIO(lb.render_csv(board)), keep_default_na=False, na_values=[""])
    det = t[(t["method"] == "deterministic") & (t["kind"] == "measured")].iloc[0]
    assert (det["corrupted_source"], det["corrupted_set"], det["corrupted_subset"]) == ("regenerated", "benchmark15", 1000)
    assert det["batch_size"] == "128, 64"


def test_a_block_without_deep_ensemble_says_why_dee_is_na(exported) -> None:
    folder, board = exported
    [block] = board.blocks
    facts = dict(block.facts)
    assert facts["DEE"].startswith("n/a in every row: no deep_ensemble rows in this block")
    md = (folder / "leaderboard.md").read_text()
    assert "| DEE |" in md and "no deep_ensemble rows in this block" in md
    assert "needs stored predictions" not in md  # the old legend blamed a sidecar that is not missing
    tex = (folder / "leaderboard.tex").read_text()
    html = (folder / "leaderboard.html").read_text()
    assert "no deep_ensemble rows in this block" in html and "DEE" in tex


def test_a_block_with_deep_ensemble_keeps_its_dee_fact() -> None:
    [board] = lb.load_boards(FIXTURES, ["fixture-c10"], warn=False, n_resamples=20)
    facts = dict(board.blocks[0].facts)
    assert facts["DEE"].startswith("deep-ensemble equivalent: members of deep_ensemble")


def test_a_block_without_deterministic_row_says_it_has_no_paired_differences(tmp_path: Path) -> None:
    (tmp_path / SUITE).mkdir()
    for path in sorted((FIXTURES / SUITE).glob("mimo-*.json")):
        (tmp_path / SUITE / path.name).write_text(path.read_text())
    [board] = lb.load_boards(tmp_path, warn=False, n_resamples=20)
    assert dict(board.blocks[0].facts)["Paired differences"] == "none: no deterministic row in this block to compare with"

"""Leaderboard structure: its modules import one way (never the package itself), it stays torch-free,
a metric registered later becomes a column with no leaderboard edit, the mCE reference comes from
the dataset's declaration, and identity types are checked by the record schema."""

from __future__ import annotations

import ast
import copy
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from benchmark import leaderboard as lb
from benchmark.data.base import DATASETS, DatasetSpec, PublishedErrors
from benchmark.evaluation.metric_specs import METRICS, MetricSpec, register_metric
from benchmark.records import RecordError, load_records, validate

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "benchmark" / "leaderboard"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
# Each module may import only the ones before it; the package __init__ is imported by none.
ORDER = ("reported", "columns", "costs", "frame", "mce", "aggregate", "comparisons", "boards", "render", "reproduced", "plots", "study",
         "study_plot", "page", "write", "__main__")


def fixture_records(suite: str = "fixture-c10") -> list[dict]:
    return copy.deepcopy(load_records(FIXTURES / suite).records)


# ------------------------------------------------------------------------------------------------
# imports
# ------------------------------------------------------------------------------------------------


def package_imports(module: str) -> set[str]:
    """The leaderboard modules ``module`` imports anywhere (also inside functions); "__init__" for the package."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            absolute = node.level == 0 and (node.module or "").startswith("benchmark.leaderboard")
            if node.level == 1 or absolute:
                name = (node.module or "").removeprefix("benchmark.leaderboard").lstrip(".") if absolute else node.module
                if name:
                    out.add(name.split(".")[0])
                else:  # ``from . import x``: the package, unless x is a module of it
                    out |= {a.name if (PACKAGE / f"{a.name}.py").is_file() else "__init__" for a in node.names}
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name == "benchmark.leaderboard" or a.name.startswith("benchmark.leaderboard."):
                    out.add(a.name.removeprefix("benchmark.leaderboard").lstrip(".").split(".")[0] or "__init__")
    return out


def test_every_module_is_placed_in_the_order():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(ORDER)


@pytest.mark.parametrize("module", ORDER)
def test_modules_import_one_way_and_never_the_package(module):
    imported = package_imports(module)
    assert "__init__" not in imported, f"{module} imports the package __init__"
    later = imported - set(ORDER[:ORDER.index(module)])
    assert not later, f"{module} imports {sorted(later)}, which come after it"


def test_no_module_is_too_long():
    for path in PACKAGE.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 450, path.name


def test_leaderboard_is_torch_free():
    code = ("import sys\n"
            "import benchmark.leaderboard as lb\n"
            f"boards = lb.load_boards({str(FIXTURES)!r}, warn=False)\n"
            "assert sorted(b.suite for b in boards) == ['fixture-c10', 'fixture-jpeg'], boards\n"
            "assert all(lb.render_markdown(b) for b in boards)\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


# ------------------------------------------------------------------------------------------------
# a metric registered later
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def top2() -> Iterator[MetricSpec]:
    spec = register_metric(MetricSpec("top2", "Top-2 (%)", "max", "pct", "cTop2", "cTop2 (%)", compute=lambda logp, targets: 0.0,
                                      description="test metric: top-2 accuracy"))
    yield spec
    del METRICS._items[spec.key]


def with_top2(records: list[dict]) -> list[dict]:
    """Records carrying top2 in metrics.clean, every corrupted cell and the corrupted summary."""
    for i, rec in enumerate(records):
        rec["metrics"]["clean"]["top2"] = 0.9 + 0.01 * i
        cells = [m for sev in (rec["metrics"].get("corrupted") or {}).get("per", {}).values() for m in sev.values()]
        for j, m in enumerate(cells):
            m["top2"] = 0.5 + 0.001 * j
        if cells:
            rec["metrics"]["corrupted"]["summary"]["cTop2"] = float(np.mean([m["top2"] for m in cells]))
    return records


def test_a_registered_metric_becomes_columns(top2):
    records = with_top2(fixture_records())
    block = lb.build_boards(records, [], [], None, FIXTURES)[0].blocks[0]
    labels = [c.label for c in block.columns]
    assert labels.index("Brier") < labels.index("Top-2 (%)") < labels.index("cA (%)")  # clean columns, in registration order
    assert labels.index("cECE") < labels.index("cTop2 (%)") < labels.index("mCE")  # then the shown summaries
    assert "cBrier" not in labels and "cBrier" in block.table  # a summary without a label: aggregated, not shown
    det = [r for r in records if r["identity"]["method"] == "deterministic"]
    row = block.table[(block.table["kind"] == "measured") & (block.table["method"] == "deterministic")].iloc[0]
    assert row["top2"] == pytest.approx(np.mean([r["metrics"]["clean"]["top2"] for r in det]), rel=1e-12)
    assert row["cTop2"] == pytest.approx(np.mean([r["metrics"]["corrupted"]["summary"]["cTop2"] for r in det]), rel=1e-12)
    header, rows, _ = lb.table_cells(block)
    assert "Top-2 (%)" in header and "cTop2 (%)" in header
    md = lb.render_markdown(lb.build_boards(records, [], [], None, FIXTURES)[0])
    assert "| Top-2 (%) |" in md and "| cTop2 (%) |" in md
    assert "best_top2" in lb.render_csv(lb.build_boards(records, [], [], None, FIXTURES)[0]).splitlines()[0]


def test_a_registered_metric_summary_from_cells_and_older_records(top2):
    records = with_top2(fixture_records())
    rec = next(r for r in records if r["metrics"].get("corrupted"))
    del rec["metrics"]["corrupted"]["summary"]["cTop2"]
    cells = [m["top2"] for sev in rec["metrics"]["corrupted"]["per"].values() for m in sev.values()]
    older = next(r for r in records if r is not rec and "nll" in r["metrics"]["clean"])
    del older["metrics"]["clean"]["top2"]  # written before the metric existed: still used, the value absent
    problems: list = []
    frame = lb.records_frame(records, problems)
    assert frame.loc[frame["path"] == rec["_path"], "cTop2"].item() == pytest.approx(np.mean(cells), rel=1e-12)
    assert math.isnan(frame.loc[frame["path"] == older["_path"], "top2"].item())
    assert [Path(p).name for p, _ in problems] == ["missing-nll.json"]  # the fixture's record without NLL, nothing else


def test_the_builtin_columns_are_todays():
    assert [(c.key, c.label, c.better, c.kind) for c in lb.metric_columns()] == [
        ("accuracy", "Acc (%)", "max", "pct"), ("nll", "NLL", "min", "f3"), ("ece", "ECE", "min", "f4"), ("brier", "Brier", "min", "f4"),
        ("cal_nll", "cal. NLL", "min", "f3"), ("temperature", "T", None, "f3"), ("aurc", "AURC", "min", "f4"),
        ("cA", "cA (%)", "max", "pct"), ("cNLL", "cNLL", "min", "f3"), ("cECE", "cECE", "min", "f4"),
        ("mCE", "mCE", "min", "f1"), ("rel_mCE", "rel. mCE", "min", "f1")]


# ------------------------------------------------------------------------------------------------
# the mCE reference
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def referenced_dataset() -> Iterator[PublishedErrors]:
    cells = fixture_records()[0]["metrics"]["corrupted"]["per"]
    ref = PublishedErrors("Reference net (test figures)", {c: 0.4 + 0.01 * i for i, c in enumerate(sorted(cells))}, 0.2)
    DATASETS.register("fixture-ref")(DatasetSpec("fixture-ref", lambda *a: None, (0.5,) * 3, (0.5,) * 3, "official", "test", mce_reference=ref))
    yield ref
    del DATASETS._items["fixture-ref"]


def test_mce_relative_to_the_datasets_reference(referenced_dataset):
    ref = referenced_dataset
    rec = fixture_records()[0]
    rec["identity"]["dataset"] = "fixture-ref"
    for c, sev in rec["metrics"]["corrupted"]["per"].items():
        for m in sev.values():
            m["accuracy"] = 1 - 1.5 * ref.errors[c]
    frame = lb.records_frame([rec])
    assert frame.loc[0, "mCE"] == pytest.approx(150.0)
    board = lb.build_boards([rec], [], [], None)[0]
    assert dict(board.blocks[0].facts)["mCE"].startswith(f"corruption error relative to {ref.label}, mean over corruptions")
    for c in rec["metrics"]["corrupted"]["per"]:  # a reference averages all five severities: fewer give no mCE
        del rec["metrics"]["corrupted"]["per"][c]["5"]
    assert math.isnan(lb.records_frame([rec]).loc[0, "mCE"])


def test_imagenet_mce_fact_names_alexnet():
    assert lb.mce_basis("imagenet") == "AlexNet (Hendrycks & Dietterich (2019), ImageNet-C AlexNet errors)"
    assert lb.mce_reference("cifar10") is None


def test_unregistered_dataset_uses_the_blocks_deterministic_runs():
    records = fixture_records()
    for r in records:
        r["identity"]["dataset"] = "no-such-dataset"
    assert lb.mce_reference("no-such-dataset") is None
    block = lb.build_boards(records, [], [], None)[0].blocks[0]
    t = block.table
    assert t.loc[t["method"] == "deterministic", "mCE"].item() == pytest.approx(100, abs=1.0)
    assert "this block's deterministic runs on the same corrupted data" in dict(block.facts)["mCE"]


# ------------------------------------------------------------------------------------------------
# identity types belong to the record schema
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,message", [("seed", "0", "identity.seed must be an integer, found '0'"),
                                               ("members", True, "identity.members must be an integer, found True"),
                                               ("method", 3, "identity.method must be a string, found 3"),
                                               ("suite", None, "identity.suite must be a string, found None")])
def test_identity_types_checked_by_validate(tmp_path, key, value, message):
    rec = fixture_records("fixture-jpeg")[0]
    del rec["_path"]
    bad = copy.deepcopy(rec)
    bad["identity"][key] = value
    with pytest.raises(RecordError, match=f"^x.json: {message}$"):
        validate(copy.deepcopy(bad), where="x.json")
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "ok.json").write_text(json.dumps(rec))
    (tmp_path / "s" / "odd.json").write_text(json.dumps({**bad, "run_id": "odd"}))
    board = lb.load_boards(tmp_path, warn=False)[0]
    assert board.problems == [("s/odd.json", message)]  # named and left out
    assert board.blocks[0].table["seeds"].sum() == 1

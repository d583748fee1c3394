"""Leaderboards: grouping, mean/std/seed counts, reported rows, best marks, malformed records,
determinism, plots, the page and the notebook, on the fixture records in tests/fixtures/records."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark import leaderboard as lb
from benchmark.records import RecordError, load_records
from benchmark.data.datasets.imagenet import ALEXNET_IMAGENET_C_ERROR
from benchmark.leaderboard.reported import REPORTED

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
C10, JPEG = "fixture-c10", "fixture-jpeg"
MALFORMED = ("broken-record.json", "future-schema.json", "missing-nll.json")


def raw_records(suite: str) -> list[dict]:
    """The fixture records read without the package: newest per run id, completed, well-formed."""
    newest: dict[str, dict] = {}
    for path in sorted((FIXTURES / suite).glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if rec.get("schema_version") != 1 or rec["status"] != "completed" or "nll" not in rec["metrics"]["clean"]:
            continue
        if rec["run_id"] not in newest or rec["created"] > newest[rec["run_id"]]["created"]:
            newest[rec["run_id"]] = rec
    return list(newest.values())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], str]:
    out = tmp_path_factory.mktemp("boards")
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        paths = lb.write_leaderboards(FIXTURES, out)
    return out, paths, buf.getvalue()


@pytest.fixture(scope="module")
def boards() -> dict[str, lb.SuiteBoard]:
    return {b.suite: b for b in lb.load_boards(FIXTURES, warn=False)}


def measured(block: lb.Block, method: str, variant: str = "") -> dict:
    t = block.table
    rows = t[(t["kind"] == "measured") & (t["method"] == method) & (t["variant"] == variant)]
    assert len(rows) == 1, rows
    return rows.iloc[0].to_dict()


# ------------------------------------------------------------------------------------------------
# grouping, mean and std, seed counts
# ------------------------------------------------------------------------------------------------


def test_one_block_per_dataset_backbone(boards):
    assert sorted(boards) == [C10, JPEG]
    assert [(b.dataset, b.backbone) for b in boards[C10].blocks] == [("cifar10", "wrn28-10")]
    assert [(b.dataset, b.backbone) for b in boards[JPEG].blocks] == [("cifar10-jpeg", "resnet8")]
    rows = boards[C10].blocks[0].table
    measured_rows = rows[rows["kind"] == "measured"]
    assert sorted(zip(measured_rows["method"], measured_rows["variant"])) == sorted(
        [("deterministic", ""), ("mimo", "M=3"), ("batchensemble", "M=4"), ("mc_dropout", "K=1"), ("mc_dropout", "K=30"),
         ("deep_ensemble", "M=4"), ("subnetwork", "M=4")])


@pytest.mark.parametrize("method,variant,seeds", [("deterministic", "", 3), ("mimo", "M=3", 3), ("mc_dropout", "K=30", 2)])
def test_mean_std_and_seed_count(boards, method, variant, seeds):
    row = measured(boards[C10].blocks[0], method, variant)
    recs = [r for r in raw_records(C10) if r["identity"]["method"] == method and r["identity"]["variant"] == variant]
    assert row["seeds"] == seeds == len(recs)
    assert row["seed_list"] == " ".join(str(s) for s in sorted(r["identity"]["seed"] for r in recs))
    for key in ("accuracy", "nll", "ece", "brier"):
        vals = np.array([r["metrics"]["clean"][key] for r in recs])
        assert row[key] == pytest.approx(vals.mean(), rel=1e-12)
        assert row[f"{key}_std"] == pytest.approx(vals.std(ddof=1), rel=1e-12)
        assert row[f"{key}_n"] == seeds
    ca = np.array([r["metrics"]["corrupted"]["summary"]["cA"] for r in recs])
    assert row["cA"] == pytest.approx(ca.mean(), rel=1e-12)


def test_newest_record_per_run_wins(boards):
    """The fixture holds an older rerun of deterministic seed 0 with accuracy 0.01: it must not count."""
    row = measured(boards[C10].blocks[0], "deterministic")
    assert row["seeds"] == 3 and row["accuracy"] > 0.5


def test_single_seed_has_no_std_and_rendering_says_so():
    recs = [r for r in load_records(FIXTURES / JPEG).records if r["identity"]["seed"] == 0]
    board = lb.build_boards(recs, [], [], None, FIXTURES)[0]
    row = measured(board.blocks[0], "mimo", "M=3")
    assert row["seeds"] == 1 and math.isnan(row["nll_std"])
    assert "±" not in lb.format_value(board.blocks[0].table.iloc[0], lb.metric_columns()[1])


def test_differing_configs_are_not_averaged_together():
    recs = load_records(FIXTURES / JPEG).records
    changed = copy.deepcopy([r for r in recs if r["identity"]["method"] == "mimo"])
    for r in changed:
        r["config"]["train"]["epochs"] = 50
        r["_path"] += ".changed"
    frame = lb.records_frame(recs + changed)
    settings = sorted(set(frame.loc[frame["method"] == "mimo", "setting"]))
    assert settings == ["train.epochs=5", "train.epochs=50"]
    agg = lb.aggregate(frame)
    assert sorted(agg.loc[agg["method"] == "mimo", "seeds"]) == [2, 2]


# ------------------------------------------------------------------------------------------------
# reported rows, best marks
# ------------------------------------------------------------------------------------------------


def test_reported_rows_only_where_dataset_and_backbone_match(boards):
    c10 = boards[C10].blocks[0].table
    rep = c10[c10["kind"] == "reported"]
    assert len(rep) == len([r for r in REPORTED if (r.dataset, r.backbone) == ("cifar10", "wrn28-10")]) == 6
    assert all(s.startswith("reported (") for s in rep["source"])
    assert (boards[JPEG].blocks[0].table["kind"] == "measured").all()  # cifar10-jpeg is not cifar10
    for dataset, backbone, expected in (("imagenet", "resnet50", 5), ("cifar100", "wrn28-10", 6), ("cifar10", "resnet8", 0),
                                        ("cifar100", "resnet50", 0)):
        recs = copy.deepcopy(load_records(FIXTURES / JPEG).records)
        for r in recs:
            r["identity"].update(dataset=dataset, backbone=backbone)
            r["data"]["num_classes"] = {"imagenet": 1000, "cifar100": 100, "cifar10": 10}[dataset]
        t = lb.build_boards(recs, [], [], None)[0].blocks[0].table
        assert (t["kind"] == "reported").sum() == expected, (dataset, backbone)
        assert set(t.loc[t["kind"] == "reported", "dataset"]) <= {dataset}


def test_reported_rows_left_out_for_a_class_subset():
    """A 100-class ImageNet run (the smoke suite) is not set beside published 1000-class figures;
    the header says why."""
    recs = copy.deepcopy(load_records(FIXTURES / JPEG).records)
    for r in recs:
        r["identity"].update(dataset="imagenet", backbone="resnet50")
        r["data"]["num_classes"] = 100
    block = lb.build_boards(recs, [], [], None)[0].blocks[0]
    assert (block.table["kind"] == "measured").all()
    assert dict(block.facts)["Reported rows"] == ("left out: the published figures are on all 1000 classes of imagenet, "
                                                  "these records on 100 classes")


def test_reported_rows_are_never_ranked(boards, built):
    block = boards[C10].blocks[0]
    t = block.table
    best_cols = [c for c in t.columns if c.startswith("best_")]
    assert not t.loc[t["kind"] == "reported", best_cols].to_numpy().any()
    # Reported NLL (0.114) beats every measured row, yet the bold NLL is a measured one.
    assert t.loc[t["best_nll"], "kind"].tolist() == ["measured"]
    md = (built[0] / C10 / "leaderboard.md").read_text()
    reported_lines = [line for line in md.splitlines() if "| reported (" in line]
    assert len(reported_lines) == 6 and not any("**" in line for line in reported_lines)
    assert all(line.startswith("|  |") for line in reported_lines)  # no rank


def test_best_value_marked_per_column(boards):
    block = boards[C10].blocks[0]
    t = block.table
    m = t[t["kind"] == "measured"]
    for col in block.columns:
        flags = t[f"best_{col.key}"]
        if col.better is None:
            assert not flags.any()
            continue
        vals = m[col.key].dropna()
        best = vals.max() if col.better == "max" else vals.min()
        assert set(t.index[flags]) == set(vals.index[np.isclose(vals, best, rtol=1e-12, atol=0)]), col.key
    assert measured(block, "deep_ensemble", "M=4")["best_nll"]
    assert measured(block, "mc_dropout", "K=1")["best_ms_b1"]
    header, rows, n = lb.table_cells(block)
    nll = header.index("NLL")
    assert rows[0][nll].bold and rows[0][0].text == "1"  # ranked by NLL: the best NLL is row 1


def test_best_flags_in_every_format(built):
    out = built[0] / C10
    csv = (out / "leaderboard.csv").read_text().splitlines()
    header = csv[0].split(",")
    assert "best_nll" in header and "nll_std" in header and "seeds" in header
    assert {line.split(",")[header.index("best_nll")] for line in csv[1:]} == {"True", "False"}
    assert "<strong>" in (out / "leaderboard.html").read_text()
    assert "\\textbf{" in (out / "leaderboard.tex").read_text()


# ------------------------------------------------------------------------------------------------
# mCE
# ------------------------------------------------------------------------------------------------


def test_mce_relative_to_the_deterministic_baseline(boards):
    recs = raw_records(C10)
    det = [r for r in recs if r["identity"]["method"] == "deterministic"]
    mimo = [r for r in recs if r["identity"]["method"] == "mimo"]

    def err(r, c, s):
        return 1 - r["metrics"]["corrupted"]["per"][c][str(s)]["accuracy"]

    cs = det[0]["metrics"]["corrupted"]["corruptions"]
    expected = []
    for r in mimo:
        ce = [sum(err(r, c, s) for s in range(1, 6)) / sum(np.mean([err(d, c, s) for d in det]) for s in range(1, 6)) for c in cs]
        expected.append(100 * np.mean(ce))
    row = measured(boards[C10].blocks[0], "mimo", "M=3")
    assert row["mCE"] == pytest.approx(np.mean(expected), rel=1e-9)
    assert measured(boards[C10].blocks[0], "deterministic")["mCE"] == pytest.approx(100, abs=1.0)
    assert math.isnan(measured(boards[C10].blocks[0], "subnetwork", "M=4")["mCE"])  # no corrupted metrics


def test_imagenet_mce_uses_alexnet():
    rec = copy.deepcopy(raw_records(C10)[0])
    rec["identity"].update(dataset="imagenet", backbone="resnet50")
    rec["metrics"]["corrupted"]["per"] = {c: {str(s): {**rec["metrics"]["corrupted"]["per"]["fog"]["1"], "accuracy": 1 - e} for s in range(1, 6)}
                                          for c, e in ALEXNET_IMAGENET_C_ERROR.items()}
    rec["_path"] = "imagenet.json"
    frame = lb.records_frame([rec])
    assert frame.loc[0, "mCE"] == pytest.approx(100.0)


def test_val_split_test_sets_are_named_and_count_as_official():
    """ImageNet and Tiny-ImageNet test on the release's labelled val split: the header says so, and
    it is the data published results use (no "data" reason against comparability)."""
    rec = copy.deepcopy(raw_records(C10)[0])
    rec["identity"].update(dataset="imagenet", backbone="resnet50")
    rec["data"]["source"] = "official-val"
    rec["_path"] = "imagenet.json"
    frame = lb.records_frame([rec])
    facts = dict(lb.boards.block_facts("imagenet", "resnet50", frame, [rec]))
    assert "labelled val split as the test set (its test split is unlabelled)" in facts["Data"]
    assert "data official" not in facts["Comparability"] and "epochs" in facts["Comparability"]
    rec["data"]["source"] = "jpeg-copy"
    facts = dict(lb.boards.block_facts("imagenet", "resnet50", lb.records_frame([rec]), [rec]))
    assert "data jpeg-copy (paper: official)" in facts["Comparability"]


# ------------------------------------------------------------------------------------------------
# malformed records, schema versions
# ------------------------------------------------------------------------------------------------


def test_malformed_records_reported_and_left_out(built, boards):
    out, _, printed = built
    for name in MALFORMED:
        assert re.search(rf"warning: left out \S*{re.escape(name)}: ", printed), name
        assert any(p.endswith(name) for p, _ in boards[C10].problems)
    assert not boards[JPEG].problems  # attributed to the suite folder they sit in
    page = (out / C10 / "index.html").read_text()
    for name in MALFORMED:
        assert name in page
    assert "metrics.clean.nll must be a finite number" in page
    assert "schema_version 99 is newer" in page
    assert measured(boards[C10].blocks[0], "mimo", "M=3")["seeds"] == 3  # the seed-5 record without NLL is not averaged in
    assert "NonFiniteLossError" in page  # the failed run is listed, not tabled


def test_records_frame_raises_on_bad_content_without_a_problems_list():
    rec = copy.deepcopy(raw_records(JPEG)[0])
    rec["metrics"]["clean"]["accuracy"] = "0.9"
    with pytest.raises(RecordError, match="accuracy must be a finite number"):
        lb.records_frame([rec])
    problems: list = []
    assert lb.records_frame([rec], problems).empty and len(problems) == 1


def test_corrupted_summary_without_cells_still_counts():
    rec = copy.deepcopy(raw_records(C10)[0])
    del rec["metrics"]["corrupted"]["per"]
    frame = lb.records_frame([rec])
    assert frame.loc[0, "cA"] == rec["metrics"]["corrupted"]["summary"]["cA"] and math.isnan(frame.loc[0, "mCE"])
    rec["metrics"]["corrupted"] = {"source": "official"}
    with pytest.raises(RecordError, match="neither per-corruption metrics nor a summary"):
        lb.records_frame([rec])


@pytest.mark.parametrize("version,message", [(0, "not a known version"), (99, "newer than this plures"), ("1", "non-integer")])
def test_schema_versions_load_or_fail_clearly(tmp_path, version, message):
    rec = raw_records(JPEG)[0]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "ok.json").write_text(json.dumps(rec))
    (tmp_path / "s" / "odd.json").write_text(json.dumps({**rec, "schema_version": version, "run_id": "odd"}))
    board = lb.load_boards(tmp_path, warn=False)[0]
    assert board.blocks[0].table["seeds"].sum() == 1
    assert [p for p, _ in board.problems] == ["s/odd.json"] and message in board.problems[0][1]


# ------------------------------------------------------------------------------------------------
# determinism, header facts, layout
# ------------------------------------------------------------------------------------------------


def test_same_records_give_byte_identical_outputs(built, tmp_path):
    first = built[0]
    shutil.copytree(FIXTURES, tmp_path / "records")  # another location, other mtimes
    second = tmp_path / "boards"
    lb.write_leaderboards(tmp_path / "records", second)
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


def test_record_order_does_not_matter():
    loaded = load_records(FIXTURES)
    a = lb.build_boards(loaded.records, loaded.problems, [], None, FIXTURES)
    b = lb.build_boards(list(reversed(loaded.records)), loaded.problems, [], None, FIXTURES)
    assert [lb.render_markdown(x) for x in a] == [lb.render_markdown(x) for x in b]
    assert [lb.render_csv(x) for x in a] == [lb.render_csv(x) for x in b]


def test_header_states_data_budget_seeds_provenance(built):
    md = (built[0] / C10 / "leaderboard.md").read_text()
    assert "CPU-sized run: not comparable with published numbers" in md and "epochs 2 (paper: 200+)" in md
    assert "official test set" in md and "regenerated by benchmark.corruptions" in md and "a fixed random sample of 1000 test images" in md
    assert "**Seeds**: 0, 1, 2" in md and "git 0123456789ab" in md and "backbone wrn28-10; epochs 2; batch 128" in md
    assert "no corrupted metrics for: subnetwork M=4" in md
    jpeg = (built[0] / JPEG / "leaderboard.md").read_text()
    assert "JPEG copy" in jpeg and "not comparable with published numbers" in jpeg
    assert "cA (%)" not in jpeg  # no corrupted metrics: no corrupted columns
    tex = (built[0] / C10 / "leaderboard.tex").read_text()
    assert "\\label{tab:fixture-c10-cifar10-wrn28-10}" in tex and "$\\pm$" in tex


def test_output_layout(built):
    out, paths, _ = built
    for suite in (C10, JPEG):
        for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.html", "leaderboard.tex", "index.html"):
            assert out / suite / name in paths
            assert (out / suite / name).stat().st_size > 0


def test_suite_description_and_budget_note_from_the_suite_file():
    facts = dict(lb.suite_facts("quick"))
    assert "CPU-sized" in facts["Description"] and "epochs" in facts["Budget note"]
    assert lb.suite_facts("no-such-suite") == []


def test_requested_suite_without_records(tmp_path):
    paths = lb.write_leaderboards(FIXTURES / JPEG, tmp_path, suites=["nothing-yet"])
    assert {p.name for p in paths} == {"leaderboard.md", "leaderboard.csv", "leaderboard.html", "leaderboard.tex", "index.html"}
    assert "No completed records" in (tmp_path / "nothing-yet" / "leaderboard.md").read_text()


# ------------------------------------------------------------------------------------------------
# plots and page
# ------------------------------------------------------------------------------------------------

PLOT_NAMES = ("severity", "cost", "heatmap", "reliability", "diversity", "equal_cost")  # drawn for the fixture (paired_differences: no sidecars, skipped)


def test_plots_written(built):
    plots = built[0] / C10 / "plots"
    for name in PLOT_NAMES:
        for ext in ("png", "svg"):
            path = plots / f"cifar10__wrn28-10__{name}.{ext}"
            assert path.stat().st_size > 1000, path
    assert (plots / "cifar10__wrn28-10__severity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (plots / "cifar10__wrn28-10__cost.svg").read_text()
    assert "<dc:date>" not in svg  # no timestamp
    jpeg = sorted(p.name for p in (built[0] / JPEG / "plots").iterdir())
    assert not any("severity" in n or "heatmap" in n for n in jpeg)  # no corrupted data: skipped


def test_page_has_every_table_image_and_note(built, boards):
    out = built[0]
    for suite, board in boards.items():
        page = (out / suite / "index.html").read_text()
        assert page.count('<table class="leaderboard"') == len(board.blocks)
        srcs = re.findall(r'<img src="([^"]+)"', page)
        assert srcs and all((out / suite / s).is_file() for s in srcs)
        assert all((out / suite / s.replace(".png", ".svg")).is_file() for s in srcs)
        assert "http://" not in page.replace("http://www.w3.org", "") and "https://" not in page  # offline
        for fact in ("Comparability", "Data", "Budget", "Seeds", "Provenance"):
            assert f"<dt>{fact}</dt>" in page
    c10 = (out / C10 / "index.html").read_text()
    assert len(re.findall(r"<img ", c10)) == len(PLOT_NAMES)
    jpeg = (out / JPEG / "index.html").read_text()
    assert "not drawn (no record of this block has corrupted metrics)" in jpeg
    assert "None: every record read was used." in jpeg


def test_page_column_views_and_cost_note_only_in_html(built, boards):
    """Every metric header and cell of the HTML tables names its view group; the views and the cost
    note are in the HTML only (the Markdown, CSV and LaTeX tables show every column)."""
    from benchmark.leaderboard.render import COST_NOTE, column_group

    out = built[0]
    for suite, board in boards.items():
        for name in ("index.html", "leaderboard.html"):
            page = (out / suite / name).read_text()
            assert page.count('class="view-radio"') >= 3 and 'id="cols-overview" value="overview" checked' in page
            assert "How cost was measured" in page and "10-25%" in page and "<script" not in page
            for block in board.blocks:
                table = page.split(f'data-block="{block.slug}"', 1)[1].split("</table>", 1)[0]
                groups = re.findall(r'<th class="col g-(\w+)', table)
                assert groups == [column_group(c) for c in block.columns]
                assert len(re.findall(r'<td class="col g-', table)) == len(groups) * len(block.table)
        for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.tex"):
            text = (out / suite / name).read_text()
            assert "view-radio" not in text and "How cost was measured" not in text and "&nbsp;" not in text
    assert {column_group(c) for c in boards[C10].blocks[0].columns} == {"acc", "rob", "ood", "cost"}
    assert "latency_repeats" in COST_NOTE and "not interleaved" in COST_NOTE


def test_heatmap_colorbar_labels_inside_the_figure(boards):
    """The colorbar's tick labels and its label are drawn inside the figure (not clipped)."""
    from benchmark.leaderboard.plots import heatmap_figure, render

    fig = render(heatmap_figure, boards[C10].blocks[0].groups())
    canvas = fig.canvas
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    cax = fig.axes[-1]
    texts = [t for t in cax.get_yticklabels() if t.get_text()] + [cax.yaxis.label]
    assert len(texts) >= 3 and cax.yaxis.label.get_text() == "accuracy (%)"
    for t in texts:
        extent = t.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0 and extent.y1 <= box.y1, (t.get_text(), extent, box)
    for t in fig.axes[0].get_xticklabels() + fig.axes[0].get_yticklabels():  # corruption and row labels too
        extent = t.get_window_extent(renderer)
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1 and box.y0 <= extent.y0, (t.get_text(), extent, box)


def test_pareto_front():
    from benchmark.leaderboard.plots import pareto_front

    pts = [(1.0, 0.5), (2.0, 0.4), (3.0, 0.45), (4.0, 0.3)]
    assert pareto_front(pts, maximize=False) == [(1.0, 0.5), (2.0, 0.4), (4.0, 0.3)]
    assert pareto_front([(1, 60.0), (2, 70.0), (3, 65.0)], maximize=True) == [(1, 60.0), (2, 70.0)]


# ------------------------------------------------------------------------------------------------
# command line and notebook
# ------------------------------------------------------------------------------------------------


def test_cli_leaderboard_one_suite(tmp_path, capsys):
    from benchmark.cli import main

    assert main(["leaderboard", "--results-dir", str(FIXTURES), "--out", str(tmp_path), "--suite", JPEG]) == 0
    printed = capsys.readouterr().out
    assert f"leaderboard: {tmp_path / JPEG / 'index.html'}" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == [JPEG]


def test_notebook_runs_on_the_fixture_records(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel (pip install ipykernel)")
    monkeypatch.setenv("PLURES_RESULTS_DIR", str(FIXTURES))
    nb = nbformat.read(ROOT / "notebooks" / "leaderboard.ipynb", as_version=4)
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=180, resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= len(PLOT_NAMES)
    text = "".join(o.get("text", "") for o in outputs)
    assert "broken-record.json" in text
    assert os.environ["PLURES_RESULTS_DIR"] == str(FIXTURES)

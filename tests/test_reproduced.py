"""Your rows beside the reference records of the same suite (``benchmark.leaderboard.reproduced``):
the values of the section "Against the reference records", the within-spread verdict with several
reference seeds, the one-seed wording, the rows of only one side, each side's CPU, and boards built
without a reference (or whose suite the reference lacks) unchanged to the byte; end to end through
``python -m benchmark leaderboard --reference-dir``.

The reference is the fixture suite ``fixture-c10`` (deterministic and MIMO with 3 seeds, the other
methods with 2, corrupted metrics, three malformed files); your records are copies of some of its
records with metrics set here."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmark import cli
from benchmark import leaderboard as lb
from benchmark.leaderboard.render import render_markdown
from benchmark.records import load_records
from benchmark.leaderboard.reproduced import ONE_SEED, Reproduced, cpu_kind, render_reproduced_csv, reproduced_for, reproduced_markdown

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
SUITE = "fixture-c10"
RESAMPLES = 20  # the paired bootstrap is not what is tested here (the fixture records have no sidecars anyway)


def reference_records(seeds: tuple[int, ...] | None = None) -> list[tuple[str, dict]]:
    """(file name, record) of the fixture suite's usable records (newest per run id), of ``seeds`` only when given."""
    out = []
    for rec in load_records(FIXTURES / SUITE).records:
        path = Path(rec.pop("_path"))
        if "nll" in rec["metrics"]["clean"] and (seeds is None or rec["identity"]["seed"] in seeds):
            out.append((path.name, rec))
    return out


def write_records(folder: Path, records: list[tuple[str, dict]]) -> Path:
    (folder / SUITE).mkdir(parents=True, exist_ok=True)
    for name, rec in records:
        (folder / SUITE / name).write_text(json.dumps(rec))
    return folder


def of(records: list[tuple[str, dict]], method: str, variant: str = "") -> list[dict]:
    return [r for _, r in records if r["identity"]["method"] == method and r["identity"]["variant"] == variant]


@pytest.fixture
def user_records() -> list[tuple[str, dict]]:
    """Seed 0 of every fixture method but the subnetwork: deterministic's accuracy above the
    reference's max, MIMO's at the middle of the reference's min-max; a CPU in the provenance."""
    ref = reference_records()
    mine = [(n, json.loads(json.dumps(r))) for n, r in reference_records(seeds=(0,)) if r["identity"]["method"] != "subnetwork"]
    for _, r in mine:
        r["provenance"]["cpu_model"] = "AMD EPYC 9B14"
        r["provenance"]["cpu_isa"] = "AVX-512"
        acc = [x["metrics"]["clean"]["accuracy"] for x in of(ref, r["identity"]["method"], r["identity"]["variant"])]
        if r["identity"]["method"] == "deterministic":
            r["metrics"]["clean"]["accuracy"] = max(acc) + 0.01
        elif r["identity"]["method"] == "mimo":
            r["metrics"]["clean"]["accuracy"] = (min(acc) + max(acc)) / 2
    return mine


def section(rep: Reproduced, method: str, variant: str = ""):
    rows = [r for b in rep.blocks for r in b.rows if (r.method, r.variant) == (method, variant)]
    assert len(rows) == 1, rows
    return rows[0]


def build(user: Path, reference: Path | None) -> tuple[lb.SuiteBoard, Reproduced | None]:
    board = lb.load_boards(user, [SUITE], warn=False, n_resamples=RESAMPLES)[0]
    return board, reproduced_for(board, reference, user)


# ------------------------------------------------------------------------------------------------
# values
# ------------------------------------------------------------------------------------------------


def test_values_are_means_differences_and_the_reference_spread(tmp_path, user_records):
    user = write_records(tmp_path / "user", user_records)
    board, rep = build(user, FIXTURES)
    assert rep is not None and [(b.dataset, b.backbone) for b in rep.blocks] == [("cifar10", "wrn28-10")]
    block = rep.blocks[0]
    assert [c.key for c in block.columns] == ["accuracy", "nll", "ece", "cA", "cNLL"]  # no cal. NLL column on this board
    ref = reference_records()
    for method, variant in (("deterministic", ""), ("mimo", "M=3"), ("batchensemble", "M=4")):
        row = section(rep, method, variant)
        refs, mine = of(ref, method, variant), of(user_records, method, variant)
        assert row.seed_list == "0" and row.reference_seed_list == " ".join(str(s) for s in sorted(r["identity"]["seed"] for r in refs))
        for m in row.metrics:
            get = (lambda r: r["metrics"]["corrupted"]["summary"][m.key]) if m.key in ("cA", "cNLL") else (lambda r: r["metrics"]["clean"][m.key])
            vals = np.array([get(r) for r in refs])
            assert m.mine == pytest.approx(np.mean([get(r) for r in mine]), rel=1e-12) and m.n == 1
            assert m.reference == pytest.approx(vals.mean(), rel=1e-12) and m.reference_n == len(vals) >= 2
            assert m.reference_std == pytest.approx(vals.std(ddof=1), rel=1e-12)
            assert (m.reference_min, m.reference_max) == (vals.min(), vals.max())
            assert m.diff == pytest.approx(m.mine - vals.mean(), rel=1e-12)
    det = section(rep, "deterministic")
    acc = det.metrics[0]
    assert acc.within is False and acc.mine == pytest.approx(acc.reference_max + 0.01)
    assert section(rep, "mimo", "M=3").metrics[0].within is True
    assert det.config_differs == []


def test_within_spread_verdict_in_every_format(tmp_path, user_records):
    user = write_records(tmp_path / "user", user_records)
    lb.write_leaderboards(user, tmp_path / "out", plots=False, n_resamples=RESAMPLES, reference_dir=FIXTURES)
    folder = tmp_path / "out" / SUITE
    md = (folder / "leaderboard.md").read_text().split("## Against the reference records")[1]
    det_line = next(line for line in md.splitlines() if line.startswith("| deterministic |"))
    ref = of(reference_records(), "deterministic")
    acc = [r["metrics"]["clean"]["accuracy"] for r in ref]
    assert f"| {100 * (max(acc) + 0.01):.2f} | {100 * np.mean(acc):.2f} ± {100 * np.std(acc, ddof=1):.2f} [{100 * min(acc):.2f}–{100 * max(acc):.2f}] |" in det_line
    assert f"| +{100 * (max(acc) + 0.01 - np.mean(acc)):.2f} (outside) |" in det_line
    assert det_line.endswith("| outside: Acc (%); within: 4 of 5 metrics |")
    mimo_line = next(line for line in md.splitlines() if line.startswith("| mimo |"))
    assert "(outside)" not in mimo_line and mimo_line.endswith("| within in all 5 metrics |")
    csv = pd.read_csv(folder / "reproduced.csv", keep_default_na=False)
    det = csv[csv["method"] == "deterministic"].iloc[0]
    assert det["status"] == "both" and det["accuracy_within"] == "False" and det["nll_within"] == "True"
    assert float(det["accuracy"]) == max(acc) + 0.01 and int(det["accuracy_reference_n"]) == 3
    assert float(det["accuracy_reference_min"]) == min(acc) and float(det["accuracy_reference_max"]) == max(acc)
    assert float(det["accuracy_diff"]) == pytest.approx(max(acc) + 0.01 - np.mean(acc), rel=1e-12)
    assert csv[csv["method"] == "mimo"].iloc[0]["accuracy_within"] == "True"
    page = (folder / "index.html").read_text()
    assert '<section id="reproduced">' in page and 'href="reproduced.csv"' in page and "(outside)" in page
    assert '<section id="reproduced">' in (folder / "leaderboard.html").read_text()


def test_one_reference_seed_has_no_verdict(tmp_path, user_records):
    user = write_records(tmp_path / "user", user_records)
    reference = write_records(tmp_path / "reference", reference_records(seeds=(1,)))
    board, rep = build(user, reference)
    for block in rep.blocks:
        for row in block.rows:
            assert all(m.within is None and m.reference_n == 1 and math.isnan(m.reference_std) for m in row.metrics)
    md = "\n".join(render_markdown(board, [reproduced_markdown(rep)]).splitlines())
    rows = [line for line in md.split("## Against the reference records")[1].splitlines() if line.startswith("| ") and "Method" not in line]
    assert len(rows) == 6 and all(line.endswith(f"| {ONE_SEED} |") for line in rows)
    assert ONE_SEED == "1 reference seed: no seed spread to compare with"
    assert not any("(within)" in line or "(outside)" in line or " ± " in line for line in rows)
    csv = pd.read_csv(pd.io.common.StringIO(render_reproduced_csv(rep)), keep_default_na=False)
    assert set(csv.loc[csv["status"] == "both", "accuracy_within"]) == {""}


# ------------------------------------------------------------------------------------------------
# rows of one side, blocks of one side, CPU, config, reference problems
# ------------------------------------------------------------------------------------------------


def test_rows_of_only_one_side_are_listed(tmp_path, user_records):
    extra = [(n.replace("mimo", "mimo5"), json.loads(json.dumps(r))) for n, r in user_records if r["identity"]["method"] == "mimo"]
    for _, r in extra:
        r["identity"]["variant"] = "M=5"
        r["run_id"] += "-M5"
    other = [(n.replace("cifar10", "cifar100"), json.loads(json.dumps(r))) for n, r in reference_records(seeds=(0,))
             if r["identity"]["method"] == "deterministic"]
    for _, r in other:
        r["identity"]["dataset"] = "cifar100"
        r["run_id"] += "-c100"
    user = write_records(tmp_path / "user", user_records + extra)
    reference = write_records(tmp_path / "reference", reference_records() + other)
    board, rep = build(user, reference)
    c10 = next(b for b in rep.blocks if b.dataset == "cifar10")
    assert [r.label for r in c10.not_in_reference] == ["mimo M=5"]
    assert [r.label for r in c10.not_reproduced] == ["subnetwork M=4"]
    c100 = next(b for b in rep.blocks if b.dataset == "cifar100")
    assert c100.rows == [] and [r.label for r in c100.not_reproduced] == ["deterministic"]
    md = render_markdown(board, [reproduced_markdown(rep)])
    assert "- **Not in the reference**: mimo M=5" in md and "- **Not reproduced here**: subnetwork M=4" in md
    assert "### cifar100 / wrn28-10" in md and "- **Not reproduced here**: deterministic" in md
    csv = pd.read_csv(pd.io.common.StringIO(render_reproduced_csv(rep)), keep_default_na=False)
    assert sorted(csv["status"].unique()) == ["both", "not in the reference", "not reproduced here"]
    sub = csv[csv["method"] == "subnetwork"].iloc[0]
    assert sub["status"] == "not reproduced here" and sub["reference_seed_list"] == "0 1" and sub["seed_list"] == ""
    assert float(sub["nll_reference"]) == pytest.approx(np.mean([r["metrics"]["clean"]["nll"] for r in of(reference_records(), "subnetwork", "M=4")]))


def test_cpu_of_each_side_and_config_differences(tmp_path, user_records):
    for _, r in user_records:
        if r["identity"]["method"] == "mimo":
            r["config"]["train"]["epochs"] = 50
    user = write_records(tmp_path / "user", user_records)
    board, rep = build(user, FIXTURES)
    block = rep.blocks[0]
    assert block.cpu == "AMD EPYC 9B14 (AVX-512)" and block.reference_cpu == "not recorded"
    assert section(rep, "mimo", "M=3").config_differs == ["train.epochs"]
    md = render_markdown(board, [reproduced_markdown(rep)])
    assert "- **CPU**: yours: AMD EPYC 9B14 (AVX-512); reference: not recorded. fp32 training is not bit-identical" in md
    assert "- **Config**: differs from the reference's for: mimo M=3 (train.epochs)" in md


@pytest.mark.parametrize("provenance,expected", [
    ({"cpu_model": "Intel Xeon"}, "Intel Xeon"),
    ({"cpu_model": "Intel Xeon", "cpu_isa": "AVX-512"}, "Intel Xeon (AVX-512)"),
    ({"cpu": {"model": "AMD EPYC", "isa": ["AVX2", "FMA"]}}, "AMD EPYC (AVX2 FMA)"),
    ({"cpu": "AMD EPYC", "cpu_capability": "AVX2"}, "AMD EPYC (AVX2)"),
    ({"device": "cpu"}, None),
    ({"cpu": {}}, None),
])
def test_cpu_kind_from_provenance(provenance, expected):
    assert cpu_kind({"provenance": provenance}) == expected


def test_cpu_kind_of_a_record_read_back_names_the_live_machines_kind():
    """The flags come in the machine's order (amx last) and a record stores them with sorted keys:
    both must name one kind, or an AMX machine never finds its own records (the plan probes again,
    the cross-CPU repeat takes the study's record for another CPU's)."""
    import torch

    from benchmark.core.cpu import capability_of, cpu_facts
    from benchmark.estimate import machine_kind

    live = {"model": "Intel Xeon", "capability": capability_of({"avx2", "avx512f", "avx512_bf16", "amx_tile"})}
    stored = json.loads(json.dumps({"provenance": {"device": "cpu", "cpu": live}}, sort_keys=True))
    assert list(live["capability"])[-1] == "amx" and list(stored["provenance"]["cpu"]["capability"])[0] == "amx"
    assert cpu_kind({"provenance": {"cpu": live}}) == cpu_kind(stored) == "Intel Xeon (amx avx2 avx512 avx512_bf16)"
    this_machine = machine_kind(torch.device("cpu"))
    assert cpu_kind(json.loads(json.dumps({"provenance": {"device": "cpu", "cpu": cpu_facts()}}, sort_keys=True))) == this_machine


def test_reference_problems_are_named(tmp_path, user_records):
    user = write_records(tmp_path / "user", user_records)
    board, rep = build(user, FIXTURES)
    names = sorted(Path(p).name for p, _ in rep.problems)
    assert names == ["broken-record.json", "future-schema.json", "missing-nll.json"]
    assert "schema_version 99 is newer" in dict((Path(p).name, w) for p, w in rep.problems)["future-schema.json"]
    assert "Reference records left out:" in render_markdown(board, [reproduced_markdown(rep)])


# ------------------------------------------------------------------------------------------------
# nothing changes without a reference
# ------------------------------------------------------------------------------------------------


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_boards_without_reference_are_unchanged(tmp_path, user_records):
    user = write_records(tmp_path / "user", user_records)
    other = write_records(tmp_path / "other-suite", [])  # a reference folder without this suite's records
    (other / SUITE).rmdir()
    (other / "another-suite").mkdir()
    shutil.copy(FIXTURES / SUITE / user_records[0][0], other / "another-suite" / user_records[0][0])
    outs = {}
    for name, reference in (("none", None), ("missing", tmp_path / "nonexistent"), ("other", other), ("itself", user)):
        lb.write_leaderboards(user, tmp_path / name, plots=False, n_resamples=RESAMPLES, reference_dir=reference)
        outs[name] = tree(tmp_path / name)
    assert "reproduced.csv" not in " ".join(outs["none"])
    for name in ("missing", "other", "itself"):
        assert outs[name] == outs["none"], name
    # with the reference: the tables are the same, the section comes on top
    lb.write_leaderboards(user, tmp_path / "with", plots=False, n_resamples=RESAMPLES, reference_dir=FIXTURES)
    with_ref = tree(tmp_path / "with")
    for name in ("leaderboard.csv", "leaderboard.tex"):
        assert with_ref[f"{SUITE}/{name}"] == outs["none"][f"{SUITE}/{name}"]
    md, md_with = outs["none"][f"{SUITE}/leaderboard.md"].decode(), with_ref[f"{SUITE}/leaderboard.md"].decode()
    head, _, rest = md_with.partition("\n## Against the reference records\n")
    assert rest and head == md  # the user's folder has no problems, so the section is last
    # rebuilt without the reference: the older comparison's CSV goes
    lb.write_leaderboards(user, tmp_path / "with", plots=False, n_resamples=RESAMPLES)
    assert tree(tmp_path / "with") == outs["none"]


# ------------------------------------------------------------------------------------------------
# end to end
# ------------------------------------------------------------------------------------------------


def test_cli_leaderboard_with_a_reference_dir(tmp_path, user_records, capsys):
    user = write_records(tmp_path / "user", user_records)
    reference = write_records(tmp_path / "reference", reference_records())
    out = tmp_path / "boards"
    assert cli.main(["leaderboard", "--results-dir", str(user), "--leaderboard-dir", str(out), "--reference-dir", str(reference),
                     "--resamples", str(RESAMPLES)]) == 0
    assert f"leaderboard: {out / SUITE / 'reproduced.csv'}" in capsys.readouterr().out
    csv = pd.read_csv(out / SUITE / "reproduced.csv", keep_default_na=False)
    assert len(csv[csv["status"] == "both"]) == 6 and list(csv.loc[csv["status"] == "not reproduced here", "method"]) == ["subnetwork"]
    md = (out / SUITE / "leaderboard.md").read_text()
    assert f"published records of suite {SUITE} ({reference / SUITE})" in md
    assert '<section id="reproduced">' in (out / SUITE / "index.html").read_text()


def test_cli_reference_dir_that_does_not_exist(tmp_path, user_records, capsys):
    user = write_records(tmp_path / "user", user_records)
    missing = tmp_path / "nonexistent"
    assert cli.main(["leaderboard", "--results-dir", str(user), "--leaderboard-dir", str(tmp_path / "out"), "--reference-dir", str(missing)]) == 2
    assert f"error: --reference-dir {missing} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

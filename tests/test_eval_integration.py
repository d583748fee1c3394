"""Issue 12's evaluation wired into records and leaderboards, on a tiny real suite (deterministic,
deep ensemble M=2, MC dropout K=2; a validation split and a fake SVHN OOD set):

* every record gains the temperature-scaled metrics, selective prediction, the uncertainty
  decomposition and OOD detection by every score, equal to direct calls of the numpy modules on
  its sidecar; ``rescore`` reproduces them, and adds them to a record stripped of them;
* the leaderboard (md, csv, html, tex, page) shows cal. NLL, DEE, AURC, the MI-based OOD AUROC and
  the paired differences against the deterministic run, equal to direct calls of
  :mod:`benchmark.evaluation.dee` and :mod:`benchmark.evaluation.paired`;
* a missing sidecar: "n/a" in those columns and the problem listed.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark import cli
from benchmark.evaluation import calibration, selective, uncertainty
from benchmark.evaluation.predictions import load_predictions
from benchmark.records import load_records
from benchmark.rescore import rescore_record

SUITE = """
name = "tinyunc"
seeds = [0, 1, 2]

[defaults.run]
dataset = "cifar10"
backbone = "resnet8"

[defaults.backbone]
width = 4

[defaults.data]
val_size = 30

[defaults.train]
epochs = 1
batch_size = 50
lr = 0.05
warmup_epochs = 0.5

[defaults.eval]
batch_size = 100
latency_batch = 8
latency_repeats = 1
ood = ["svhn"]

[[runs]]
name = "deterministic"
run = { method = "deterministic" }

[[runs]]
name = "deep_ensemble"
run = { method = "deep_ensemble" }
method = { members = 3 }

[[runs]]
name = "mc_dropout"
run = { method = "mc_dropout" }
method = { samples = [2] }
"""


def fake_svhn(root: Path, n: int = 30) -> None:
    from scipy.io import savemat

    svhn = np.random.default_rng(1).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # torchvision's SVHN layout
    savemat(root / "test_32x32.mat", {"X": svhn, "y": np.ones((n, 1))})


@pytest.fixture(scope="module")
def benched(tmp_path_factory) -> dict:
    from tests.conftest import write_cifar_archive

    tmp = tmp_path_factory.mktemp("evalint")
    write_cifar_archive(tmp / "data", "cifar10", per_batch=40, as_tar=False)
    fake_svhn(tmp / "data")
    suite = tmp / "tinyunc.toml"
    suite.write_text(SUITE)
    env = ["--data-dir", str(tmp / "data"), "--cache-dir", str(tmp / "cache"), "--results-dir", str(tmp / "runs"),
           "--checkpoint-dir", str(tmp / "ckpt"), "--no-progress", "--no-cost-pass"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["bench", str(suite), "--leaderboard-dir", str(tmp / "boards"), *env]) == 0
    finally:
        torch.set_num_threads(threads)
    records = [r for r in load_records(tmp / "runs").records if r["status"] == "completed"]
    return {"tmp": tmp, "records": records, "boards": tmp / "boards" / "tinyunc"}


def _rec(records: list[dict], method: str, seed: int = 0) -> dict:
    [rec] = [r for r in records if r["identity"]["method"] == method and r["identity"]["seed"] == seed]
    return rec


def _by_seed(records: list[dict], method: str) -> list[dict]:
    return sorted((r for r in records if r["identity"]["method"] == method), key=lambda r: r["identity"]["seed"])


def test_records_gain_the_new_metrics(benched) -> None:
    for rec in benched["records"]:
        a = load_predictions(rec)
        lp, y = a["clean/log_probs"].astype(np.float64), a["clean/targets"]
        clean = rec["metrics"]["clean"]
        # temperature on the validation split (the run has one), applied to the test set
        t = calibration.fit_temperature(a["val/log_probs"], a["val/targets"])
        cal = calibration.log_softmax(lp / t)
        assert clean["calibration"]["procedure"] == "validation"
        assert clean["temperature"] == pytest.approx(t, rel=1e-9)
        assert clean["cal_nll"] == pytest.approx(-cal[np.arange(len(y)), y].mean(), rel=1e-9)
        assert clean["cal_ece"] == pytest.approx(calibration.ece(cal, y), rel=1e-9, abs=1e-12)
        p = np.exp(cal)
        assert clean["cal_brier"] == pytest.approx(((p - np.eye(10)[y]) ** 2).sum(1).mean(), rel=1e-9)
        # selective prediction: AURC as the mean selective risk over the most confident i examples (no ties here)
        conf = lp.max(1)
        err = (lp.argmax(1) != y)[np.argsort(-conf, kind="mergesort")]
        assert len(np.unique(conf)) == len(conf)
        assert clean["aurc"] == pytest.approx(np.mean(np.cumsum(err) / np.arange(1, len(y) + 1)), rel=1e-9)
        assert clean["augrc"] == pytest.approx(selective.augrc(conf, lp.argmax(1) == y), rel=1e-12)
        # decomposition from the members when kept (deterministic: one member, MI 0)
        members = a.get("clean/members", lp[None].astype(np.float32)).astype(np.float64)
        dec = uncertainty.uncertainty_summary(members)
        assert clean["entropy"] == pytest.approx(dec["total"], rel=1e-9)
        if "clean/members" in a:  # from the members, in float64
            assert clean["expected_member_entropy"] == pytest.approx(dec["aleatoric"], rel=1e-9)
            assert clean["mutual_information"] == pytest.approx(dec["epistemic"], rel=1e-9, abs=1e-15)
        else:  # one member: the stored (float32) member entropy, and no epistemic part
            assert rec["identity"]["members"] == 1
            assert clean["expected_member_entropy"] == pytest.approx(dec["aleatoric"], rel=1e-6)
            assert clean["mutual_information"] == 0.0
        if rec["identity"]["members"] >= 2:  # independently: H(mean p) - mean H(p_m)
            pm = np.exp(members)
            h = lambda q: -(q * np.log(q)).sum(-1)  # noqa: E731
            assert clean["mutual_information"] == pytest.approx(np.mean(h(pm.mean(0)) - h(pm).mean(0)), rel=1e-6)
        ood = rec["metrics"]["ood"]["svhn"]
        assert {"aupr_in", "aupr_out", "auroc"} <= set(ood["max_prob"])
        assert ood["max_prob"]["aupr_out"] == pytest.approx(ood["max_prob"]["aupr"], rel=1e-6)
        if rec["identity"]["members"] >= 2:
            direct = uncertainty.ood_detection(a["clean/members"], a["ood/svhn/members"])["mutual_information"]
            for k, v in direct.items():
                assert ood["mutual_information"][k] == pytest.approx(v, rel=1e-12), k
        else:
            assert "mutual_information" not in ood


def test_rescore_reproduces_and_adds_them(benched, tmp_path: Path) -> None:
    for rec in benched["records"]:
        result = rescore_record(rec)
        assert result["differences"] == [], result["differences"][:5]
        assert "group/predictive_uncertainty" in result["parts"]
    # an older record without them gains them with --write
    rec = _rec(benched["records"], "deep_ensemble")
    folder = tmp_path / "runs"
    folder.mkdir()
    src = Path(rec["_path"])
    shutil.copy(src.parent / rec["predictions"]["file"], folder)
    old = {k: v for k, v in rec.items() if k != "_path"}
    old["metrics"] = json.loads(json.dumps(rec["metrics"]))
    for k in ("cal_nll", "cal_ece", "cal_brier", "temperature", "calibration", "aurc", "augrc", "mutual_information"):
        del old["metrics"]["clean"][k]
    del old["metrics"]["ood"]["svhn"]["mutual_information"]
    (folder / src.name).write_text(json.dumps(old))
    assert cli.main(["rescore", str(folder / src.name), "--write"]) == 0
    new = json.loads((folder / src.name).read_text())
    for k in ("cal_nll", "temperature", "aurc", "mutual_information"):
        assert new["metrics"]["clean"][k] == pytest.approx(rec["metrics"]["clean"][k], rel=1e-9)
    assert new["metrics"]["ood"]["svhn"]["mutual_information"] == pytest.approx(rec["metrics"]["ood"]["svhn"]["mutual_information"])


# ------------------------------------------------------------------------------------------------
# the leaderboard
# ------------------------------------------------------------------------------------------------


def _csv_rows(folder: Path) -> dict[str, dict]:
    import pandas as pd

    df = pd.read_csv(folder / "leaderboard.csv", keep_default_na=False, na_values=[""])
    return {f"{r['method']} {r['variant']}".strip() if isinstance(r["variant"], str) else r["method"]: r for _, r in df.iterrows()}


def test_leaderboard_shows_the_new_columns_in_every_format(benched) -> None:
    folder = benched["boards"]
    md = (folder / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    for label in ("cal. NLL", "DEE", "T", "AURC", "AUROC svhn (%)", "MI-AUROC svhn (%)"):
        assert f"| {label} |" in header, label
    assert "paired bootstrap over 40 test examples, 1000 resamples, 3 seed(s)" in md
    assert "| Method | Seeds | Δ Acc (pp) | Δ NLL | Δ cal. NLL | Δ Brier | Δ ECE |" in md
    html = (folder / "leaderboard.html").read_text()
    assert 'class="paired"' in html and "MI-AUROC svhn (%)" in html and ">DEE<" in html
    tex = (folder / "leaderboard.tex").read_text()
    assert r"$\Delta$ cal. NLL" in tex and "-paired}" in tex
    page = (folder / "index.html").read_text()
    assert 'class="paired"' in page and 'id="plot-cifar10__resnet8__paired_differences"' in page
    assert (folder / "plots" / "cifar10__resnet8__paired_differences.png").is_file()
    rows = _csv_rows(folder)
    assert set(rows) == {"deterministic", "deep_ensemble M=3", "mc_dropout K=2"}
    for name, row in rows.items():
        assert isinstance(row["dee_display"], str) and row["dee_display"] != "n/a"
        if name != "deterministic":
            assert isinstance(row["d_nll_display"], str) and "[" in row["d_nll_display"]
    # quick3-style blocks: mean, std and 95% t interval over the seeds of each record's value
    de = _by_seed(benched["records"], "deep_ensemble")
    vals = [r["metrics"]["clean"]["cal_nll"] for r in de]
    assert rows["deep_ensemble M=3"]["cal_nll"] == pytest.approx(np.mean(vals), rel=1e-12)
    assert rows["deep_ensemble M=3"]["cal_nll_std"] == pytest.approx(np.std(vals, ddof=1), rel=1e-9)
    mi = [r["metrics"]["ood"]["svhn"]["mutual_information"]["auroc"] for r in de]
    assert rows["deep_ensemble M=3"]["mi_auroc_svhn"] == pytest.approx(np.mean(mi), rel=1e-12)


def test_leaderboard_values_equal_direct_calls(benched) -> None:
    from benchmark.evaluation import dee as dee_mod
    from benchmark.evaluation.paired import paired_bootstrap
    from benchmark.leaderboard.comparisons import published

    recs = benched["records"]
    rows = _csv_rows(benched["boards"])
    det, de, mc = (_by_seed(recs, m) for m in ("deterministic", "deep_ensemble", "mc_dropout"))
    load = {r["_path"]: load_predictions(r) for r in recs}
    # DEE: the deep ensemble's curve per seed (validation temperatures), averaged; the row's mean calibrated NLL
    curves = [dee_mod.dee_curve(load[r["_path"]]["clean/members"], load[r["_path"]]["clean/targets"], load[r["_path"]]["val/members"],
                                load[r["_path"]]["val/targets"]) for r in de]
    assert curves[0].procedure == "validation" and curves[0].sizes == (1, 2, 3)
    mean_curve = dee_mod.DEECurve(curves[0].sizes, tuple(np.mean([c.nll for c in curves], axis=0)), curves[0].nll_std, curves[0].n_subsets,
                                  curves[0].exhaustive, "validation", 0, 0, 20)
    for name, group in (("deterministic", det), ("deep_ensemble M=3", de), ("mc_dropout K=2", mc)):
        nll = np.mean([calibration.temperature_scale(load[r["_path"]]["clean/log_probs"], load[r["_path"]]["clean/targets"],
                                                     load[r["_path"]]["val/log_probs"], load[r["_path"]]["val/targets"]).nll for r in group])
        # the records' own calibrated NLL is the same number
        assert nll == pytest.approx(np.mean([r["metrics"]["clean"]["cal_nll"] for r in group]), rel=1e-9)
        expected = dee_mod.deep_ensemble_equivalent(float(nll), mean_curve)
        assert rows[name]["dee_display"] == expected.display, name
    # paired differences: pooled over the 3 seeds (t interval with the seed spread), validation temperatures, 1000 resamples
    for name, group in (("deep_ensemble M=3", de), ("mc_dropout K=2", mc)):
        pairs, vals = [], []
        for b, r in zip(det, group):
            a_b, a_r = load[b["_path"]], load[r["_path"]]
            pairs.append((a_b["clean/log_probs"], a_r["clean/log_probs"], a_b["clean/targets"]))
            vals.append((a_b["val/log_probs"], a_r["val/log_probs"], a_b["val/targets"]))
        res = paired_bootstrap(pairs, val_pairs=vals, n_resamples=1000, seed=0)
        assert res.over_seeds == "t" and res.covers_seeds and res.n_seeds == 3
        for m, d in res.differences.items():
            scale = 100.0 if m == "accuracy" else 1.0
            row = rows[name]
            # the CSV publishes them at 7 decimals (the same on every CPU: benchmark.leaderboard.comparisons)
            assert row[f"d_{m}"] == pytest.approx(published(scale * d.diff), abs=1e-12), (name, m)
            assert row[f"d_{m}_low"] == pytest.approx(published(scale * d.low), abs=1e-12), (name, m)
            assert row[f"d_{m}_high"] == pytest.approx(published(scale * d.high), abs=1e-12), (name, m)
            assert bool(row[f"d_{m}_excl"]) == d.excludes_zero
            assert row[f"d_{m}_display"].endswith("†") == d.excludes_zero  # † : exceeds the seed spread
    assert rows["deterministic"]["d_nll_display"] == "baseline"


def test_missing_sidecar_gives_na_and_a_problem(benched, tmp_path: Path) -> None:
    from benchmark.leaderboard import write_leaderboards

    runs = tmp_path / "runs"
    shutil.copytree(benched["tmp"] / "runs", runs)
    de = _rec(benched["records"], "deep_ensemble", seed=1)
    side = runs / "tinyunc" / de["predictions"]["file"]
    side.unlink()
    write_leaderboards(runs, tmp_path / "boards", plots=False, n_resamples=200)
    folder = tmp_path / "boards" / "tinyunc"
    rows = _csv_rows(folder)
    assert all(row["dee_display"] == "n/a" for row in rows.values())  # the deep ensemble's curve needs every seed's members
    assert rows["deep_ensemble M=3"]["d_nll_display"] == "n/a" and math.isnan(rows["deep_ensemble M=3"]["d_nll"])
    assert "[" in rows["mc_dropout K=2"]["d_nll_display"]  # other rows are unaffected
    md = (folder / "leaderboard.md").read_text()
    assert f"predictions sidecar {side.name} is missing" in md  # listed among the problems ...
    assert "DEE of deep_ensemble M=3, DEE of deterministic" in md or "DEE of deterministic" in md  # ... and the reason beside the block
    assert "paired bootstrap over 40 test examples, 200 resamples, 3 seed(s)" in md

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
seeds = [0]

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
    return {"tmp": tmp, "records": records}


def _rec(records: list[dict], method: str) -> dict:
    [rec] = [r for r in records if r["identity"]["method"] == method]
    return rec


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
        assert clean["expected_member_entropy"] == pytest.approx(dec["aleatoric"], rel=1e-9)
        assert clean["mutual_information"] == pytest.approx(dec["epistemic"], rel=1e-9, abs=1e-15)
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

"""Rescoring: a tiny real run's metrics recomputed from its predictions sidecar equal the recorded
ones (relative tolerance 1e-6, absolute 1e-12), every part (clean, val, corrupted cells and summary,
OOD); ``--write`` rewrites the record with a metric registered after the run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.evaluation.metric_specs import METRICS, MetricSpec, register_metric
from benchmark.evaluation.predictions import load_predictions
from benchmark.records import load_records
from benchmark.rescore import differences, rescore_record
from benchmark.runner import Environment, run_experiment

RTOL = 1e-6


def env_for(tmp_path: Path, data_dir: Path) -> Environment:
    return Environment(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)


def fake_svhn(root: Path, n: int = 24) -> None:
    from scipy.io import savemat

    svhn = np.random.default_rng(0).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # torchvision's SVHN layout
    savemat(root / "test_32x32.mat", {"X": svhn, "y": np.ones((n, 1))})


@pytest.fixture(scope="module")
def mc_records(tmp_path_factory) -> list[dict]:
    """One tiny MC-dropout run with a validation split, corrupted cells and an OOD set: two records
    (K=2: members kept; K=20: more than 16 members, combined predictions only)."""
    from tests.conftest import write_cifar_archive

    tmp = tmp_path_factory.mktemp("rescore")
    arrays = write_cifar_archive(tmp / "data", "cifar10", per_batch=40, as_tar=False)
    fake_svhn(tmp / "data")
    cfg = {"run": {"method": "mc_dropout", "dataset": "cifar10", "backbone": "resnet8", "seed": 0},
           "method": {"samples": [2, 20]}, "backbone": {"width": 4}, "data": {"val_size": 20},
           "train": {"epochs": 1, "batch_size": 32, "lr": 0.05},
           "eval": {"batch_size": 16, "latency_batch": 8, "latency_repeats": 1, "corruptions": "regenerated", "corruption_subset": 12,
                    "corruption_severities": [1, 5], "ood": ["svhn"]}}
    paths = run_experiment(cfg, env_for(tmp, tmp / "data"))
    assert len(paths) == 2 and len(arrays["test_labels"]) == 40
    return load_records(tmp / "runs").records


def _by_variant(records: list[dict], variant: str) -> dict:
    [rec] = [r for r in records if r["identity"]["variant"] == variant]
    return rec


def test_sidecar_holds_what_the_metrics_need(mc_records) -> None:
    rec = _by_variant(mc_records, "K=2")
    entry = rec["predictions"]
    assert entry["dtype"] == "float32" and entry["file"].endswith(".predictions.npz")
    assert (Path(rec["_path"]).parent / entry["file"]).is_file()
    a = load_predictions(rec)
    assert a["clean/log_probs"].shape == (40, 10) and a["clean/members"].shape == (2, 40, 10) and a["clean/targets"].shape == (40,)
    assert a["val/log_probs"].shape == (20, 10) and a["val/members"].shape == (2, 20, 10)
    assert a["corrupted/fog/5/log_probs"].shape == (12, 10) and a["corrupted/fog/5/members"].shape == (2, 12, 10)
    assert a["ood/svhn/log_probs"].shape == (24, 10) and a["ood/svhn/members"].shape == (2, 24, 10)
    assert "ood_in/log_probs" not in a  # the whole test set was the clean pass: OOD detection reused it
    from benchmark.data.corrupted.base import subset_indices

    assert list(a["corrupted/indices"]) == list(subset_indices(40, 12, 0))
    # the combined prediction is the log of the members' mean probability
    np.testing.assert_allclose(a["clean/log_probs"], np.log(np.exp(a["clean/members"]).mean(0)), rtol=1e-5, atol=1e-6)
    # the members' mean entropy, computed independently from the members
    mem = a["clean/members"].astype(np.float64)
    np.testing.assert_allclose(a["clean/member_entropy"], -(np.exp(mem) * mem).sum(-1).mean(0), rtol=1e-5, atol=1e-6)
    assert a["ood/svhn/member_entropy"].shape == (24,) and a["corrupted/fog/1/member_entropy"].shape == (12,)
    # independent of the metric code: accuracy and NLL straight from the arrays
    clean = rec["metrics"]["clean"]
    lp, y = a["clean/log_probs"].astype(np.float64), a["clean/targets"]
    assert clean["accuracy"] == pytest.approx(float((lp.argmax(1) == y).mean()), abs=1e-12)
    assert clean["nll"] == pytest.approx(float(-lp[np.arange(len(y)), y].mean()), rel=1e-6)
    cell = rec["metrics"]["corrupted"]["per"]["fog"]["5"]
    lpc, yc = a["corrupted/fog/5/log_probs"], a["corrupted/fog/5/targets"]
    assert cell["accuracy"] == pytest.approx(float((lpc.argmax(1) == yc).mean()), abs=1e-12)
    # K=20: more members than kept; combined predictions everywhere, and the record says why
    big = _by_variant(mc_records, "K=20")
    b = load_predictions(big)
    assert not any(k.endswith("/members") for k in b) and b["clean/log_probs"].shape == (40, 10)
    assert b["clean/member_entropy"].shape == (40,) and b["ood/svhn/member_entropy"].shape == (24,)  # mutual information without members
    assert "20 members > 16" in big["predictions"]["notes"]["members_dropped"]["clean"]


@pytest.mark.parametrize("variant", ["K=2", "K=20"])
def test_rescore_reproduces_every_recorded_metric(mc_records, variant: str) -> None:
    rec = _by_variant(mc_records, variant)
    result = rescore_record(rec, rtol=RTOL)
    cells = [f"corrupted/{c}/{s}" for c in rec["metrics"]["corrupted"]["per"] for s in ("1", "5")]
    assert set(result["parts"]) == {"clean", "val", *cells, "corrupted/summary", "ood/svhn", "group/predictive_uncertainty"} and len(cells) == 30
    assert result["differences"] == []
    assert not result["written"]


def test_differences_reports_changes_and_new_metrics() -> None:
    old = {"clean": {"nll": 1.0, "accuracy": 0.5, "members": [{"nll": 2.0}]}}
    assert differences(old, {"clean": {"nll": 1.0 + 5e-7, "accuracy": 0.5, "members": [{"nll": 2.0}]}}, RTOL) == []
    diffs = differences(old, {"clean": {"nll": 1.0 + 1e-5, "accuracy": 0.5, "members": [{"nll": 2.1}], "top2": 0.9}}, RTOL)
    assert [d[0] for d in diffs] == ["metrics.clean.members[0].nll", "metrics.clean.nll", "metrics.clean.top2"]
    assert diffs[-1][1] is None and math.isclose(diffs[-1][2], 0.9)


def test_rescore_write_applies_a_metric_registered_later(mc_records, tmp_path: Path, capsys) -> None:
    rec = _by_variant(mc_records, "K=2")
    src = Path(rec["_path"])
    runs = tmp_path / "copy" / src.parent.name
    runs.mkdir(parents=True)
    for f in (src, src.parent / rec["predictions"]["file"]):
        (runs / f.name).write_bytes(f.read_bytes())
    copy = runs / src.name

    def top2(log_probs, targets) -> float:
        top = log_probs.topk(2, dim=-1).indices
        return float((top == targets[:, None]).any(dim=-1).double().mean())

    register_metric(MetricSpec("top2x", "Top-2 (%)", "max", "pct", compute=top2))
    try:
        assert cli.main(["rescore", str(copy)]) == 1  # a difference: the new metric
        assert "metrics.clean.top2x: recorded None" in capsys.readouterr().out
        assert cli.main(["rescore", "--write", str(copy)]) == 0
    finally:
        del METRICS._items["top2x"]
    new = json.loads(copy.read_text())
    a = load_predictions(copy)
    lp, y = a["clean/log_probs"], a["clean/targets"]
    expected = float(np.mean([t in np.argsort(-row)[:2] for row, t in zip(lp, y)]))
    assert new["metrics"]["clean"]["top2x"] == pytest.approx(expected, abs=1e-12)
    assert new["metrics"]["corrupted"]["per"]["fog"]["1"]["top2x"] >= 0
    assert new["rescored"][-1]["changed"] and "clean" in new["rescored"][-1]["parts"] and new["rescored"][-1]["at"]
    old = json.loads(src.read_text())
    keep = ("metrics", "rescored")
    assert {k: v for k, v in new.items() if k not in keep} == {k: v for k, v in old.items() if k not in keep}  # everything else kept
    assert new["metrics"]["clean"]["nll"] == old["metrics"]["clean"]["nll"]
    # rescoring the rewritten record (the metric now gone from the registry) keeps the recorded value: no difference
    assert cli.main(["rescore", str(copy)]) == 0
    assert "1 record(s), 0 with differences, 0 problem(s), 0 without a sidecar" in capsys.readouterr().out
    # a record from before predictions were stored is skipped, not a failure
    old_rec = {**{k: v for k, v in old.items() if k != "predictions"}, "run_id": "old", "created": "2020-01-01T00:00:00.000000Z"}
    (runs / "old__20200101T000000000000Z.json").write_text(json.dumps(old_rec))
    assert cli.main(["rescore", str(runs)]) == 0
    assert "no sidecar" in capsys.readouterr().out


def test_rescore_names_a_tampered_or_missing_sidecar(mc_records, tmp_path: Path, capsys) -> None:
    rec = _by_variant(mc_records, "K=20")
    src = Path(rec["_path"])
    folder = tmp_path / "t" / src.parent.name
    folder.mkdir(parents=True)
    copy = folder / src.name
    copy.write_bytes(src.read_bytes())
    assert cli.main(["rescore", str(copy)]) == 1
    assert "is missing" in capsys.readouterr().out
    raw = bytearray((src.parent / rec["predictions"]["file"]).read_bytes())
    raw[-30] ^= 0xFF
    (folder / rec["predictions"]["file"]).write_bytes(bytes(raw))
    assert cli.main(["rescore", str(copy)]) == 1
    assert "does not match" in capsys.readouterr().out


def test_ood_with_a_clean_test_subset_stores_its_own_in_distribution_side(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    fake_svhn(root)
    cfg = C.merge(tiny_run_config, {"train": {"epochs": 0}, "eval": {"ood": ["svhn"], "test_subset": 20}})
    [path] = run_experiment(cfg, env_for(tmp_path, root))
    [rec] = load_records(tmp_path / "runs").records
    a = load_predictions(rec)
    assert a["clean/log_probs"].shape == (20, 10) and a["ood_in/log_probs"].shape == (40, 10) and a["clean/log_probs"].dtype == np.float32
    assert rec["metrics"]["ood"]["svhn"]["n_in"] == 40
    assert "clean/members" not in a and rec["predictions"]["notes"]["single_member"]  # one member: its log-probs are the combined ones
    result = rescore_record(rec, rtol=RTOL)
    assert result["differences"] == [] and "ood/svhn" in result["parts"]

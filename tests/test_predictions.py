"""Stored predictions: the sidecar writer and reader (sha256, dtypes, size policy), the config
options, the quick suite's sidecar size, and the leaderboard naming a missing or mismatching sidecar."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmark.core import config as C
from benchmark.evaluation.predictions import (CORRUPTED_MEMBER_BYTES, MAX_MEMBERS, KeepPolicy, PredictionsError, keep_for, load_predictions,
                                              sidecar_problem, split_predictions, write_predictions)
from benchmark.records import load_records, write_record


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def predictions(rng: np.random.Generator, n: int, k: int, m: int, accuracy: float = 0.8) -> dict[str, np.ndarray]:
    """Trained-looking predictions of an M-member model: members confident on a shared guess, right
    with probability ``accuracy``; the combined prediction is the log of their mean probability."""
    targets = rng.integers(0, k, n)
    guess = np.where(rng.random(n) < accuracy, targets, rng.integers(0, k, n))
    logits = rng.normal(0, 1.5, (m, n, k)) + 5.0 * np.eye(k)[guess][None]
    members = log_softmax(logits).astype(np.float32)
    combined = np.log(np.exp(members.astype(np.float64)).mean(0)).astype(np.float32)
    return {"targets": targets, "log_probs": combined, "members": members}


def record(tmp_path: Path, arrays: dict | None, run_id: str = "r1", **kw) -> Path:
    rec = {"run_id": run_id, "status": "completed", "config": {}, "provenance": {}, "cost": {},
           "identity": {"suite": "s", "method": "deterministic", "variant": "", "dataset": "cifar10", "backbone": "resnet8", "members": 1, "seed": 0},
           "metrics": {"clean": {"accuracy": 0.5, "nll": 1.0, "ece": 0.1, "brier": 0.6}}}
    return write_record(tmp_path / "runs", rec, arrays, **kw)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {f"clean/{k}": v for k, v in predictions(rng, 50, 10, 3).items()}
    path = record(tmp_path, arrays)
    rec = json.loads(path.read_text())
    entry = rec["predictions"]
    side = path.parent / entry["file"]
    assert side.is_file() and entry["bytes"] == side.stat().st_size and entry["dtype"] == "float32"
    assert entry["contents"] == ["clean/log_probs", "clean/members", "clean/targets"]
    import hashlib

    assert entry["sha256"] == hashlib.sha256(side.read_bytes()).hexdigest()
    loaded = load_predictions(path)
    for name, a in arrays.items():
        np.testing.assert_array_equal(loaded[name], a)  # float32: bit for bit
    assert loaded["clean/targets"].dtype == np.int64
    assert set(split_predictions(loaded, "clean")) == {"targets", "log_probs", "members"} and split_predictions(loaded, "val") == {}
    [rec] = load_records(tmp_path / "runs").records
    assert sidecar_problem(rec) is None and load_predictions(rec)["clean/log_probs"].shape == (50, 10)
    assert not list(path.parent.glob(".*.tmp"))  # written through a temporary file, renamed


def test_float16_sidecar_is_half_the_floats_and_loads_as_float32(tmp_path: Path) -> None:
    arrays = {f"clean/{k}": v for k, v in predictions(np.random.default_rng(1), 400, 10, 2).items()}
    p32 = json.loads(record(tmp_path / "a", arrays).read_text())["predictions"]
    path16 = record(tmp_path / "b", arrays, predictions_dtype="float16")
    p16 = json.loads(path16.read_text())["predictions"]
    assert p16["dtype"] == "float16" and p16["bytes"] < 0.7 * p32["bytes"]
    loaded = load_predictions(path16)
    assert loaded["clean/log_probs"].dtype == np.float32
    np.testing.assert_allclose(loaded["clean/log_probs"], arrays["clean/log_probs"], rtol=1e-3, atol=1e-3)
    with pytest.raises(PredictionsError, match="float64.*valid choices: float32, float16"):
        write_predictions(tmp_path, "x", arrays, dtype="float64")


def test_missing_or_mismatching_sidecar_raises_naming_it(tmp_path: Path) -> None:
    arrays = {f"clean/{k}": v for k, v in predictions(np.random.default_rng(2), 20, 10, 1).items()}
    path = record(tmp_path, arrays)
    side = path.parent / json.loads(path.read_text())["predictions"]["file"]
    raw = bytearray(side.read_bytes())
    raw[40] ^= 0x01
    side.write_bytes(bytes(raw))
    with pytest.raises(PredictionsError, match=f"{side.name} does not match its record: sha256"):
        load_predictions(path)
    side.unlink()
    with pytest.raises(PredictionsError, match=f"{side.name} is missing"):
        load_predictions(path)
    old = record(tmp_path / "old", None)
    with pytest.raises(PredictionsError, match="no sidecar"):
        load_predictions(old)


def test_member_size_policy() -> None:
    assert keep_for(4, 10_000, 10, "float32") == ("members", None)
    how, why = keep_for(MAX_MEMBERS + 1, 100, 10, "float32")
    assert how == "combined" and f"{MAX_MEMBERS + 1} members > {MAX_MEMBERS}" in why
    # quick suite corrupted cells (75 x 250 images, M <= 4): kept; paper suite (75 x 10,000): dropped
    assert keep_for(4, 75 * 250, 10, "float32", corrupted=True)[0] == "members"
    how, why = keep_for(4, 75 * 10_000, 10, "float32", corrupted=True)
    assert how == "combined" and "114.4 MiB > 32 MiB" in why
    assert 4 * 75 * 10_000 * 10 * 4 > CORRUPTED_MEMBER_BYTES
    # the full ImageNet-C (75 cells x 50,000 images x 1,000 classes): no corrupted predictions, noted
    policy = KeepPolicy({"predictions": True, "predictions_dtype": "float32"}, 1, 1000)
    assert policy.keep("corrupted", 75 * 50_000, corrupted=True) is None and "14.0 GiB > 1 GiB" in policy.notes()["members_dropped"]["corrupted"]
    assert policy.keep("clean", 50_000) == "combined" and "clean" not in policy.notes()["members_dropped"]  # one member: it is the combined
    assert policy.notes()["single_member"]
    four = KeepPolicy({"predictions": True, "predictions_dtype": "float32"}, 4, 1000)
    assert four.keep("clean", 50_000) == "combined" and "762.9 MiB > 256 MiB" in four.notes()["members_dropped"]["clean"]
    assert four.keep("val", 10_000) == "members"
    assert KeepPolicy({"predictions": False}, 4, 10).keep("clean", 10) is None


def test_config_options_are_validated() -> None:
    ev = C.resolve({})["eval"]
    assert ev["predictions"] is True and ev["predictions_dtype"] == "float32"
    with pytest.raises(C.ConfigError, match=r"eval.predictions_dtype = 'float64' is not valid.*valid choices: float32, float16"):
        C.resolve({"eval": {"predictions_dtype": "float64"}})
    with pytest.raises(C.ConfigError, match=r"eval.predictions = 'no' is not valid: expected a boolean"):
        C.resolve({"eval": {"predictions": "no"}})


def test_predictions_off_writes_no_sidecar(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    from benchmark.runner import Environment, run_experiment

    root, _ = cifar10_dir
    env = Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs", checkpoint_dir=tmp_path / "ckpt",
                      progress=False, log=lambda m: None)
    [path] = run_experiment(C.merge(tiny_run_config, {"train": {"epochs": 0}, "eval": {"predictions": False}}), env)
    assert "predictions" not in json.loads(path.read_text()) and not list(path.parent.glob("*.npz"))


def test_quick_suite_sidecar_size(tmp_path: Path) -> None:
    """A quick-suite record: 10,000 test images, K=10, M=4, 75 corrupted cells x 250 images, one OOD
    set of 10,000 images, members everywhere (float32): under 20 MB."""
    rng = np.random.default_rng(3)
    arrays = {f"clean/{k}": v for k, v in predictions(rng, 10_000, 10, 4).items()}
    arrays["corrupted/indices"] = np.sort(rng.permutation(10_000)[:250])
    for c in range(15):
        for s in range(1, 6):
            arrays.update({f"corrupted/c{c}/{s}/{k}": v for k, v in predictions(rng, 250, 10, 4, accuracy=0.5).items()})
    arrays.update({f"ood/tinyimagenet32/{k}": v for k, v in predictions(rng, 10_000, 10, 4, accuracy=0.3).items() if k != "targets"})
    entry = json.loads(record(tmp_path, arrays).read_text())["predictions"]
    raw = sum(a.nbytes for a in arrays.values())
    print(f"quick-suite sidecar: {entry['bytes'] / 1e6:.2f} MB compressed ({raw / 1e6:.2f} MB raw)")
    assert entry["bytes"] < 20e6


# ------------------------------------------------------------------------------------------------
# the leaderboard names a missing or mismatching sidecar; records without one pass unless required
# ------------------------------------------------------------------------------------------------


def test_leaderboard_names_missing_and_mismatching_sidecars(tmp_path: Path) -> None:
    from benchmark.leaderboard.boards import load_boards
    from benchmark.leaderboard.frame import sidecar_problems

    rng = np.random.default_rng(4)
    good = record(tmp_path, {f"clean/{k}": v for k, v in predictions(rng, 20, 10, 1).items()}, run_id="good")
    gone = record(tmp_path, {f"clean/{k}": v for k, v in predictions(rng, 20, 10, 1).items()}, run_id="gone")
    bad = record(tmp_path, {f"clean/{k}": v for k, v in predictions(rng, 20, 10, 1).items()}, run_id="bad")
    old = record(tmp_path, None, run_id="old")
    (gone.parent / json.loads(gone.read_text())["predictions"]["file"]).unlink()
    bad_side = bad.parent / json.loads(bad.read_text())["predictions"]["file"]
    raw = bytearray(bad_side.read_bytes())
    raw[50] ^= 0x01
    bad_side.write_bytes(bytes(raw))
    [board] = load_boards(tmp_path / "runs", warn=False)
    named = dict(board.problems)
    assert set(named) == {f"s/{gone.name}", f"s/{bad.name}"}  # the good one and the old one are not listed
    assert "is missing" in named[f"s/{gone.name}"] and "does not match the record's sha256" in named[f"s/{bad.name}"]
    assert len(board.blocks[0].frame) == 4  # the records themselves stay in the tables
    records = load_records(tmp_path / "runs").records
    required = dict(sidecar_problems(records, required=True))
    assert set(required) == {str(gone), str(bad), str(old)} and "no sidecar" in required[str(old)]
    assert str(good) not in required

"""End to end on a tiny CIFAR-10 in the official format: records, resume, bad input, CLI."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from benchmark import cli
from benchmark.core import config as C
from benchmark.records import SCHEMA_VERSION, RecordError, load_records, validate, write_record
from benchmark.runner import Environment, run_experiment
from benchmark.core.runtime import StopFlag, StopRequested


def env_for(tmp_path: Path, data_dir: Path, **kw) -> Environment:
    return Environment(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / kw.pop("runs", "runs"),
                       checkpoint_dir=tmp_path / kw.pop("ckpt", "ckpt"), progress=False, log=lambda m: None, **kw)


def test_record_schema(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    [path] = run_experiment(tiny_run_config, env_for(tmp_path, root))
    rec = json.loads(path.read_text())
    assert rec["schema_version"] == SCHEMA_VERSION and rec["status"] == "completed"
    ident = rec["identity"]
    assert ident["method"] == "deterministic" and ident["members"] == 1 and ident["seed"] == 0 and ident["dataset"] == "cifar10"
    assert rec["config"]["train"]["epochs"] == 2 and rec["config"]["train"]["nesterov"] is True  # resolved, defaults filled
    prov = rec["provenance"]
    assert {"git_commit", "git_dirty", "torch", "device"} <= set(prov)
    cost = rec["cost"]
    assert cost["params"] > 0 and cost["flops_per_example"] > 0 and cost["forward_passes"] == 1
    assert cost["ms_per_example_b1"]["median"] > 0 and cost["train_seconds"] > 0 and cost["peak_memory_mb"] > 0
    clean = rec["metrics"]["clean"]
    assert 0 <= clean["accuracy"] <= 1 and clean["n"] == 40 and len(clean["members"]) == 1
    assert rec["data"]["source"] == "official" and rec["data"]["train_size"] == 200
    assert len(rec["training"]["history"]["train"]) == 2
    validate(rec, "x")
    # a finished run is not run again: the same command returns its record and writes nothing
    assert run_experiment(tiny_run_config, env_for(tmp_path, root)) == [path]
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 1
    # never overwritten: a restarted run writes a second file, and readers take the newest
    [path2] = run_experiment(tiny_run_config, env_for(tmp_path, root, restart=True))
    assert path2 != path and path.exists()
    assert [r["_path"] for r in load_records(tmp_path / "runs").records] == [str(path2)]


TIMING_KEYS = {"started", "finished", "created", "time", "peak_memory_mb"}


def without_timings(record: dict) -> dict:
    """A record without what differs between two runs of the same training: timings, dates, provenance, its path."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING_KEYS and "seconds" not in k and not k.startswith("ms_per_example")}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip({k: v for k, v in record.items() if k not in {"provenance", "_path"}})


def test_resume_equals_uninterrupted(cifar10_dir, tiny_run_config, stop_after, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    [straight] = run_experiment(tiny_run_config, env_for(tmp_path, root, ckpt="a"))
    steps_per_epoch = 200 // 32
    for stop_at in (steps_per_epoch + 2, 3):  # mid-epoch 2, and mid-epoch 1
        ckpt = f"b{stop_at}"
        with pytest.raises(StopRequested):
            run_experiment(tiny_run_config, env_for(tmp_path, root, ckpt=ckpt, runs=ckpt, stop=stop_after(stop_at)))
        [resumed] = run_experiment(tiny_run_config, env_for(tmp_path, root, ckpt=ckpt, runs=ckpt))  # resumes by itself
        a, b = (json.loads(p.read_text())["metrics"]["clean"] for p in (straight, resumed))
        for key in ("accuracy", "nll", "ece", "brier"):
            assert a[key] == b[key], key
        # the record equals the uninterrupted one in every field but timings (history included)
        ra, rb = (without_timings(json.loads(p.read_text())) for p in (straight, resumed))
        assert ra == rb and len(ra["training"]["history"]["train"]) == 2
    sa = torch.load(tmp_path / "a" / json.loads(straight.read_text())["run_id"] / "final.pt")
    sb = torch.load(tmp_path / ckpt / json.loads(resumed.read_text())["run_id"] / "final.pt")
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_interrupted_run_keeps_its_checkpoint(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    flag = StopFlag()
    env = env_for(tmp_path, root, stop=flag)
    env.log = lambda m: flag.set("SIGTERM") if "epoch 1/2" in m else None  # stop after epoch 1 (as a signal would)
    with pytest.raises(StopRequested):
        run_experiment(tiny_run_config, env)
    [ckpt] = list((tmp_path / "ckpt").rglob("train.pt"))
    state = torch.load(ckpt, weights_only=False)
    assert state["epoch"] == 1 and not list((tmp_path / "runs").rglob("*.json"))  # no record for a stopped run
    [path] = run_experiment(tiny_run_config, env_for(tmp_path, root))  # resumes from the checkpoint by itself
    assert json.loads(path.read_text())["status"] == "completed"


def test_sigterm_sets_the_stop_flag() -> None:
    from benchmark.core.runtime import stop_on_signals

    flag = StopFlag()
    with stop_on_signals(flag):
        signal.raise_signal(signal.SIGTERM)
        assert flag.is_set() and "SIGTERM" in flag.reason
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or not isinstance(signal.getsignal(signal.SIGTERM), type(lambda: 0))


def test_nan_loss_stops_with_failed_record(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    # a NaN learning rate is a config error now (before any data is read); a huge one makes the loss non-finite
    cfg = C.merge(tiny_run_config, {"train": {"lr": 1e30, "warmup_epochs": 0, "nan_check_every": 1}})
    from benchmark.training.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match="training loss is (nan|inf)") as info:
        run_experiment(cfg, env_for(tmp_path, root))
    assert "precision" not in str(info.value)  # the run is fp32 already: no fp32 hint
    [path] = list((tmp_path / "runs").rglob("*.json"))
    rec = json.loads(path.read_text())
    assert rec["status"] == "failed" and rec["error"]["type"] == "NonFiniteLossError"
    assert load_records(tmp_path / "runs").records == []  # failed runs are not averaged in


@pytest.mark.parametrize(
    "override,pattern",
    [
        ("run.method=mystery", r"unknown method 'mystery'; valid choices: .*deterministic"),
        ("run.backbone=resnet9", r"unknown backbone 'resnet9'; valid choices: .*resnet20"),
        ("run.dataset=mnist", r"unknown dataset 'mnist'; valid choices: cifar10, cifar10-jpeg, cifar100"),
        ("train.epoch=3", r"unknown key\(s\) \['epoch'\] in \[train\]; valid keys: .*epochs"),
        ("train.schedule=exp", r"train\.schedule = 'exp' is not valid: expected a string; valid choices: cosine, step, linear"),
        ("backbone.depth=3", r"unknown option\(s\) \['depth'\] for backbone 'resnet8'; valid options: width"),
        ("method.temperature=2", r"unknown option\(s\) \['temperature'\] for method 'deterministic'; valid options: .*members"),
    ],
)
def test_bad_input_names_the_value_and_the_choices(cifar10_dir, tmp_path: Path, capsys, override: str, pattern: str) -> None:
    root, _ = cifar10_dir
    argv = ["run", "--set", "run.dataset=cifar10", "--set", "run.backbone=resnet8", "--set", "backbone.width=4", "--set", "train.epochs=0",
            "--set", override, "--data-dir", str(root), "--cache-dir", str(tmp_path / "c"), "--results-dir", str(tmp_path / "r"),
            "--checkpoint-dir", str(tmp_path / "k"), "--no-progress"]
    assert cli.main(argv) == 2
    import re

    assert re.search(pattern, capsys.readouterr().err)


def test_bad_override_syntax() -> None:
    with pytest.raises(C.ConfigError, match="must look like table.key=value"):
        C.parse_override("epochs")
    assert C.parse_override("train.lr=0.1") == {"train": {"lr": 0.1}}
    assert C.parse_override("train.milestones=[1, 2]") == {"train": {"milestones": [1, 2]}}
    assert C.parse_override("run.backbone=wrn16-2") == {"run": {"backbone": "wrn16-2"}}


def test_unknown_suite_lists_choices() -> None:
    with pytest.raises(C.ConfigError, match=r"unknown suite 'fast'; valid choices: .*quick"):
        C.load_suite("fast")


def test_records_validation_errors(tmp_path: Path) -> None:
    good = {"run_id": "x", "status": "completed", "config": {}, "provenance": {}, "cost": {}, "metrics": {"clean": {}},
            "identity": {"suite": "s", "method": "m", "variant": "", "dataset": "d", "backbone": "b", "members": 1, "seed": 0}}
    path = write_record(tmp_path, dict(good, created="2026-01-01T00:00:00.000000Z"))
    with pytest.raises(FileExistsError):
        write_record(tmp_path, dict(good, created="2026-01-01T00:00:00.000000Z"))
    with pytest.raises(RecordError, match="newer"):
        validate(dict(good, schema_version=SCHEMA_VERSION + 1), "f.json")
    with pytest.raises(RecordError, match=r"missing field\(s\) \['cost'\]"):
        validate({k: v for k, v in dict(good, schema_version=1).items() if k != "cost"}, "f.json")
    (tmp_path / "s" / "broken.json").write_text("{not json")
    loaded = load_records(tmp_path)
    assert [r["_path"] for r in loaded.records] == [str(path)]
    assert loaded.problems and "broken.json" in loaded.problems[0][0]


@pytest.mark.parametrize("command", [[], ["run"], ["bench"], ["leaderboard"], ["list"]])
def test_help(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_corrupted_evaluation_on_regenerated_sets(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"train": {"epochs": 1}, "eval": {"corruptions": "regenerated", "corruption_subset": 16,
                                                                    "corruption_severities": [1, 5]}})
    [path] = run_experiment(cfg, env_for(tmp_path, root))
    cor = json.loads(path.read_text())["metrics"]["corrupted"]
    assert cor["source"] == "regenerated" and cor["corruption_set"] == "benchmark15" and len(cor["per"]) == 15
    assert set(cor["per"]["fog"]) == {"1", "5"} and cor["per"]["fog"]["5"]["n"] == 16 and cor["subset"] == 16
    # the subset is a seeded random sample in test order (not the first 16: a class-ordered test set would give one class)
    from benchmark.data.corrupted.base import subset_indices

    idx = subset_indices(40, 16, 0)
    assert len(idx) == 16 and list(idx) == sorted(idx) and list(idx) != list(range(16))
    mean_acc = sum(m["accuracy"] for sev in cor["per"].values() for m in sev.values()) / 30
    assert cor["summary"]["cA"] == pytest.approx(mean_acc)
    # the regenerated sets are cached: a second run reuses the folder
    folder = Path(cor["folder"])
    mtime = (folder / "fog.npy").stat().st_mtime_ns
    run_experiment(cfg, env_for(tmp_path, root))
    assert (folder / "fog.npy").stat().st_mtime_ns == mtime


def test_official_corrupted_folder_must_match_the_test_set(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    import numpy as np

    root, arrays = cifar10_dir
    folder = root / "CIFAR-10-C"
    folder.mkdir()
    np.save(folder / "labels.npy", np.tile((arrays["test_labels"] + 1) % 10, 5).astype(np.uint8))  # wrong labels
    for name in ("gaussian_noise",):
        np.save(folder / f"{name}.npy", np.tile(arrays["test_images"], (5, 1, 1, 1)))
    cfg = C.merge(tiny_run_config, {"train": {"epochs": 0}, "eval": {"corruptions": "official"}})
    with pytest.raises(ValueError, match="do not match the clean test labels"):
        run_experiment(cfg, env_for(tmp_path, root))
    np.save(folder / "labels.npy", np.tile(arrays["test_labels"], 5).astype(np.uint8))
    from benchmark.data.corrupted.base import CorruptedDataError

    with pytest.raises(CorruptedDataError, match="shot_noise"):  # the second corruption of the set is missing
        run_experiment(cfg, env_for(tmp_path, root))


def test_ood_detection_against_present_sets_only(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    import numpy as np
    from scipy.io import savemat

    root, _ = cifar10_dir
    svhn = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 24), dtype=np.uint8)  # torchvision's SVHN layout: X [32,32,3,N]
    savemat(root / "test_32x32.mat", {"X": svhn, "y": np.ones((24, 1))})
    cfg = C.merge(tiny_run_config, {"train": {"epochs": 1}, "eval": {"ood": ["svhn", "cifar100"]}})
    [path] = run_experiment(cfg, env_for(tmp_path, root))
    ood = json.loads(path.read_text())["metrics"]["ood"]
    assert "absent" in ood["cifar100"] and "cifar-100-python" in ood["cifar100"]["absent"]
    for score in ("max_prob", "entropy"):
        m = ood["svhn"][score]
        assert 0 <= m["auroc"] <= 1 and 0 <= m["aupr"] <= 1 and 0 <= m["fpr_at_95_tpr"] <= 1
    assert ood["svhn"]["n_out"] == 24 and ood["svhn"]["n_in"] == 40
    cfg["eval"]["ood"] = ["mnist"]
    with pytest.raises(C.ConfigError, match=r"unknown OOD dataset\(s\) \[.mnist.\] in eval.ood; valid choices: svhn, tinyimagenet32, cifar10"):
        run_experiment(cfg, env_for(tmp_path, root))


@pytest.mark.slow
def test_compiled_training_matches_eager(cifar10_dir, tiny_run_config, tmp_path: Path, monkeypatch) -> None:
    """train.compile = true trains the same model as eager mode (up to kernel reassociation) and
    reports the compilation in the first step's time."""
    monkeypatch.delenv("PLURES_COMPILE", raising=False)  # the tests' default trains eagerly (conftest)
    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"train": {"epochs": 1, "precision": "fp32"}})
    [eager] = run_experiment(cfg, env_for(tmp_path, root, ckpt="e"))
    [compiled] = run_experiment(C.merge(cfg, {"train": {"compile": True}}), env_for(tmp_path, root, ckpt="c"))
    a, b = (json.loads(p.read_text()) for p in (eager, compiled))
    assert b["config"]["train"]["compile"] is True
    assert abs(a["metrics"]["clean"]["nll"] - b["metrics"]["clean"]["nll"]) < 1e-3
    first = b["training"]["history"]["train"][0]["first_step_seconds"]
    assert first > a["training"]["history"]["train"][0]["first_step_seconds"]
    assert b["training"]["history"]["train"][0]["compile"] == "compiled"


def test_channels_last_evaluation_of_an_ensemble_assembled_after_training(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    """The deep ensemble's network is built after its members are trained; with channels_last it is
    converted for evaluation, including a vmap StackedEnsemble whose stacked weights are 5-D."""
    root, _ = cifar10_dir
    # Width 8, not the fixture's 4: oneDNN's AVX2 kernel for the backward of a channels-last fp32 1x1
    # convolution with 4 input channels hangs or crashes on CPUs without AVX-512 (torch 2.14.1).
    cfg = C.merge(tiny_run_config, {"run": {"method": "deep_ensemble"}, "method": {"members": 2, "member_method": "mc_dropout"},
                                    "backbone": {"width": 8}, "train": {"epochs": 1, "channels_last": True}})
    [path] = run_experiment(cfg, env_for(tmp_path, root))
    record = json.loads(path.read_text())
    assert record["status"] == "completed" and record["identity"]["members"] == 2
    assert 0.0 <= record["metrics"]["clean"]["accuracy"] <= 1.0

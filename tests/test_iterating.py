"""The researcher's loop: training and test subsets, the smoke recipe, runs from a suite entry,
describing methods / datasets / backbones, the per-member training loss."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.data.base import stratified_subset
from benchmark.leaderboard.boards import load_boards
from benchmark.runner import Environment, run_experiment, run_id_of


def env_for(tmp_path: Path, data_dir: Path, logs: list[str] | None = None, **kw) -> Environment:
    return Environment(data_dir=str(data_dir), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=(logs.append if logs is not None else lambda m: None), **kw)


def smoke_argv(method: str, root: Path, tmp_path: Path) -> list[str]:
    """The documentation's smoke recipe (docs/how-to/run.md) (``run --from-suite quick:<method>`` with subsets, one epoch, fp32, no
    corrupted sets), on the tiny CIFAR-10 of the fixtures instead of the JPEG copy."""
    return ["run", "--from-suite", f"quick:{method}", "--set", "train.precision=fp32", "--set", "train.epochs=1",
            "--set", "data.train_subset=64", "--set", "eval.test_subset=20", "--set", "eval.corruptions=none",
            "--set", "eval.latency_repeats=1", "--set", "eval.latency_batch=8", "--set", "run.dataset=cifar10", "--set", "train.batch_size=32",
            "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress"]


# ---------------------------------------------------------------------------------------------
# subsets


def test_stratified_subset_equal_shares_seeded_and_sorted() -> None:
    labels = np.random.default_rng(3).integers(0, 10, 5000)
    idx = stratified_subset(labels, 1003, seed=7)
    counts = np.bincount(labels[idx], minlength=10)
    assert len(idx) == len(set(idx.tolist())) == 1003 and np.all(np.diff(idx) > 0)
    assert sorted(counts.tolist()) == [100] * 7 + [101] * 3  # equal shares, the remainder one each
    assert np.array_equal(idx, stratified_subset(labels, 1003, seed=7))
    assert not np.array_equal(idx, stratified_subset(labels, 1003, seed=8))
    # a class smaller than its share gives all it has; the others make up the difference
    small = np.array([0] * 3 + [1] * 100 + [2] * 100)
    assert sorted(np.bincount(small[stratified_subset(small, 30, 0)]).tolist()) == [3, 13, 14]
    assert np.array_equal(stratified_subset(small, 0, 0), np.arange(len(small)))


def test_subsets_in_record_id_budget_and_leaderboard(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    full = C.resolve(tiny_run_config)
    explicit_zero = C.resolve(C.merge(tiny_run_config, {"data": {"train_subset": 0, "subset_seed": 5}}))
    assert run_id_of(full) == run_id_of(explicit_zero)  # no subset: the id of runs from before the subset keys
    cfg = C.merge(tiny_run_config, {"data": {"train_subset": 64}, "eval": {"test_subset": 20}, "train": {"epochs": 1}})
    sub_id = run_id_of(C.resolve(cfg))
    assert sub_id != run_id_of(C.resolve(C.merge(tiny_run_config, {"train": {"epochs": 1}})))
    assert run_id_of(C.resolve(C.merge(cfg, {"eval": {"test_subset": 0}}))) == sub_id  # evaluation does not shape the training

    [path] = run_experiment(cfg, env_for(tmp_path, root))
    rec = json.loads(path.read_text())
    assert rec["run_id"] == f"{sub_id}-test20" and rec["training_run_id"] == sub_id
    assert rec["data"]["train_size"] == 64 and rec["data"]["test_size"] == 20
    assert rec["data"]["subsets"] == {"train": {"size": 64, "of": 200, "seed": 0, "stratified": True},
                                      "test": {"size": 20, "of": 40, "seed": 0, "stratified": True}}
    assert rec["budget"]["train_subset"] == 64 and rec["budget"]["train_images"] == 64
    assert rec["budget"]["test_subset"] == 20 and rec["budget"]["test_images"] == 20
    assert rec["metrics"]["clean"]["n"] == 20
    assert sum(h["rows"] for h in rec["training"]["history"]["train"]) == 64 // 32 * 32

    # a full run beside it: the block says which records used a subset
    full_cfg = C.merge(tiny_run_config, {"train": {"epochs": 1}, "run": {"method": "deterministic"}})
    run_experiment(C.merge(full_cfg, {"data": {"val_size": 0}}), env_for(tmp_path, root))
    [board] = load_boards(tmp_path / "runs", warn=False)
    [block] = board.blocks
    facts = dict(block.facts)
    assert facts["Subsets"] == "train 64 of 200 images; test 20 of 40 (seeded, stratified): deterministic (1 of 2 records)"
    assert block.table["setting"].str.contains("train_subset").any()  # the row is apart from the full run's


def test_no_subset_no_fact(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    run_experiment(C.merge(tiny_run_config, {"train": {"epochs": 1}}), env_for(tmp_path, root))
    [board] = load_boards(tmp_path / "runs", warn=False)
    assert "Subsets" not in dict(board.blocks[0].facts)


@pytest.mark.parametrize("override,pattern", [
    ("data.train_subset=-1", r"data\.train_subset = -1 is not valid: expected an integer >= 0"),
    ("data.train_subset=abc", r"data\.train_subset = 'abc' is not valid: expected an integer"),
    ("eval.test_subset=1.5", r"eval\.test_subset = 1\.5 is not valid: expected an integer"),
    ("data.subset_seed=-2", r"data\.subset_seed = -2 is not valid"),
    ("data.train_subset=200", r"data\.train_subset = 200 is not valid: the training split of cifar10 has 200 images"),
    ("eval.test_subset=41", r"eval\.test_subset = 41 is not valid: the test split of cifar10 has 40 images"),
])
def test_bad_subsets_fail_without_a_record(cifar10_dir, tmp_path: Path, capsys, override: str, pattern: str) -> None:
    root, _ = cifar10_dir
    argv = smoke_argv("deterministic", root, tmp_path) + ["--set", override]
    assert cli.main(argv) == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not list((tmp_path / "runs").rglob("*.json"))


@pytest.mark.parametrize("method", ["mimo", "deep_ensemble"])
def test_smoke_recipe_end_to_end(cifar10_dir, tmp_path: Path, capsys, method: str) -> None:
    root, _ = cifar10_dir
    assert cli.main(smoke_argv(method, root, tmp_path)) == 0
    [path] = list((tmp_path / "runs" / "adhoc").glob("*.json"))  # suite adhoc: never among the quick suite's records
    rec = json.loads(path.read_text())
    assert rec["status"] == "completed" and rec["identity"]["method"] == method and rec["identity"]["name"] == method
    assert rec["data"]["subsets"]["train"]["size"] == 64 and rec["metrics"]["clean"]["n"] == 20
    assert rec["config"]["run"]["backbone"] == "resnet8" and rec["config"]["backbone"] == {"width": 16}  # the suite entry's settings
    out = capsys.readouterr().out
    assert "train epoch 1/1" in out


# ---------------------------------------------------------------------------------------------
# run --from-suite


def test_suite_entry_settings_and_overrides() -> None:
    cfg = C.suite_entry("quick:mimo")
    assert cfg["run"]["method"] == "mimo" and cfg["run"]["seed"] == 0 and cfg["run"]["name"] == "mimo" and "suite" not in cfg["run"]
    assert cfg["method"] == {"members": 3, "input_repetition": 0.0, "batch_repetition": 1}
    assert cfg["train"]["batch_size"] == 256 and cfg["train"]["precision"] == "fp32" and cfg["backbone"] == {"width": 16}
    resolved = C.resolve(C.apply_overrides(cfg, ["run.seed=3", "train.epochs=1"]))
    assert resolved["run"]["seed"] == 3 and resolved["train"]["epochs"] == 1 and resolved["run"]["suite"] == "adhoc"
    assert C.suite_entry("quick:batchensemble")["train"]["lr"] == 0.2  # the entry's table over the defaults


@pytest.mark.parametrize("spec,pattern", [
    ("quick:nosuch", r"unknown run 'nosuch' in suite 'quick'; valid choices: deterministic, mimo, batchensemble, mc_dropout, deep_ensemble, subnetwork"),
    ("nosuite:mimo", r"unknown suite 'nosuite'; valid choices: .*quick"),
    ("quick", r"must look like SUITE:NAME"),
])
def test_from_suite_errors_list_the_choices(spec: str, pattern: str, capsys, tmp_path: Path) -> None:
    assert cli.main(["run", "--from-suite", spec, "--results-dir", str(tmp_path / "r"), "--checkpoint-dir", str(tmp_path / "k")]) == 2
    assert re.search(pattern, capsys.readouterr().err)
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------------------------------------
# list -v, describe, --version


def test_describe_method_options_with_defaults_and_help(capsys) -> None:
    assert cli.main(["describe", "mimo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("method mimo: MIMO")
    assert re.search(r"members: int = 3 +M subnetworks \(>= 1\)", out)
    assert re.search(r"batch_repetition: int = 4 +how many times each unique image appears", out)
    assert cli.main(["describe", "mc_dropout"]) == 0
    assert re.search(r"samples: list\[int\] = \[1, 30\] +the test-time sample counts K", capsys.readouterr().out)


def test_describe_dataset_backbone_and_config_table(capsys) -> None:
    assert cli.main(["describe", "cifar10-jpeg"]) == 0
    out = capsys.readouterr().out
    assert "source: jpeg-copy" in out and "eval.corruptions: none, official" in out and "regenerated" in out and "OOD use:" in out
    assert cli.main(["describe", "resnet50"]) == 0
    out = capsys.readouterr().out
    assert "input size: 224x224" in out and "width = 64" in out
    assert cli.main(["describe", "data"]) == 0
    assert re.search(r"train_subset: int = 0 +0: every training image", capsys.readouterr().out)
    assert cli.main(["describe", "nosuch"]) == 2
    assert "valid choices: batchensemble" in capsys.readouterr().err


def test_list_verbose_and_version(capsys) -> None:
    assert cli.main(["list", "--methods", "-v"]) == 0
    out = capsys.readouterr().out
    for name in ("deterministic", "mimo", "batchensemble", "mc_dropout", "deep_ensemble", "subnetwork"):
        assert f"method {name}" in out
    assert "member_method: str = 'deterministic'" in out and "backbone " not in out
    assert cli.main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "backbone resnet8: CIFAR ResNet-8" in out and "dataset cifar100:" in out
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and re.match(r"plures \d+\.\d+", capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------
# the training log's loss


def test_ensemble_loss_logged_per_member(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    root, _ = cifar10_dir
    logs: list[str] = []
    cfg = C.merge(tiny_run_config, {"run": {"method": "mimo"}, "method": {"members": 3, "batch_repetition": 1}, "train": {"epochs": 1}})
    [path] = run_experiment(cfg, env_for(tmp_path, root, logs))
    [line] = [m for m in logs if "epoch 1/1" in m]
    match = re.search(r"loss/member (\d+\.\d+) \(M=3\)", line)
    assert match, line
    history_loss = json.loads(path.read_text())["training"]["history"]["train"][0]["loss"]  # the record keeps the summed loss
    assert abs(history_loss / 3 - float(match.group(1))) < 1e-4
    assert "members" not in json.loads(path.read_text())["training"]["history"]["train"][0]
    logs.clear()
    run_experiment(C.merge(tiny_run_config, {"train": {"epochs": 1}}), env_for(tmp_path, root, logs))
    [line] = [m for m in logs if "epoch 1/1" in m]
    assert re.search(r": loss \d+\.\d{4}, lr", line) and "member" not in line


# ---------------------------------------------------------------------------------------------
# an interrupted bench continues


TINY_SUITE = """
name = "tinybench"
seeds = [0]

[defaults.run]
dataset = "cifar10"
backbone = "resnet8"

[defaults.backbone]
width = 4

[defaults.train]
epochs = 2
batch_size = 32
lr = 0.05
warmup_epochs = 0.5

[defaults.eval]
batch_size = 64
latency_batch = 8
latency_repeats = 1

[[runs]]
name = "deterministic"
run = { method = "deterministic" }

[[runs]]
name = "mimo"
run = { method = "mimo" }
method = { members = 2, batch_repetition = 1 }

[[runs]]
name = "batchensemble"
run = { method = "batchensemble" }
method = { members = 2 }
"""


def test_interrupted_bench_continues(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    from benchmark.core.runtime import StopFlag, StopRequested

    root, _ = cifar10_dir
    suite = tmp_path / "tinybench.toml"
    suite.write_text(TINY_SUITE)
    argv = ["bench", str(suite), "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress"]
    make_env = cli.make_env

    def interrupting_env(args):  # a SIGTERM after the first epoch of the second run (mimo), as a signal would set it
        env = make_env(args)
        flag, say = StopFlag(), env.log

        def log(message: str) -> None:
            say(message)
            if message.startswith("mimo-") and "train epoch 1/2" in message:
                flag.set("SIGTERM")

        env.stop, env.log = flag, log
        return env

    monkeypatch.setattr(cli, "make_env", interrupting_env)
    assert cli.main(argv) == 130
    out = capsys.readouterr()
    assert "[2/3] mimo seed 0" in out.out and "run the same command again to continue it" in out.err
    records = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(records) == 1 and "deterministic" in records[0].name  # the first run completed, the second stopped

    monkeypatch.setattr(cli, "make_env", make_env)
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    # the plan is read from disk: what is done, what resumes from which checkpoint, what starts
    assert lines[0] == f"bench tinybench: 3 runs in {tmp_path / 'runs' / 'tinybench'}: 1 done (skipped), 1 to resume from a checkpoint, 1 to start"
    assert lines[1] == f"  deterministic seed 0: done: completed record {records[0]}; skipped (--restart trains it again)"
    assert re.fullmatch(r"  mimo seed 0: resume from epoch 2 \(\S+/mimo-\S+/train\.pt\)", lines[2]), lines[2]
    assert lines[3] == "  batchensemble seed 0: start: no record and no checkpoint of this run"
    assert re.search(r"resuming mimo-\S+ train after epoch 1 of 2 \(next: epoch 2\)", out)
    after = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(after) == 3 and records[0] in after  # the deterministic run was not trained again
    assert not (tmp_path / "ckpt" / ".bench").exists()  # no state of its own: the disk is the state

    # a finished bench run again trains nothing, writes no record and keeps every final weight file as it was
    finals = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "ckpt").rglob("final.pt")}
    assert len(finals) == 3
    assert cli.main(argv + ["--no-cost-pass", "--skip-done"]) == 0  # --skip-done (the default now) changes nothing
    out = capsys.readouterr().out
    assert out.splitlines()[0].endswith(": 3 done (skipped), 0 to resume from a checkpoint, 0 to start")
    assert "train epoch" not in out and sorted((tmp_path / "runs").rglob("*.json")) == after
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (tmp_path / "ckpt").rglob("final.pt")} == finals

    # --restart trains the selected runs anew into new records; the old records stay
    assert cli.main(argv + ["--only", "deterministic", "--restart", "--no-cost-pass"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1] == "  deterministic seed 0: start anew (--restart)" and "train epoch 2/2" in out
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 4 and all(p.exists() for p in after)


def tiny_bench(root: Path, tmp_path: Path, only: str) -> tuple[Path, list[str]]:
    """The tiny suite's file and a ``bench`` command line of its runs ``only`` (cost pass with 2 repeats)."""
    suite = tmp_path / "tinybench.toml"
    suite.write_text(TINY_SUITE)
    return suite, ["bench", str(suite), "--only", only, "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir",
                   str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--leaderboard-dir", str(tmp_path / "boards"),
                   "--no-progress", "--cost-repeats", "2"]


def test_bench_with_overrides_has_its_own_namespace(cifar10_dir, tmp_path: Path, capsys) -> None:
    """``--set`` makes another bench: its records, cost pass and leaderboard go to ``<suite>+<hash>`` and the suite's own
    records, cost file and leaderboard stay byte-identical."""
    root, _ = cifar10_dir
    suite, argv = tiny_bench(root, tmp_path, "deterministic")
    assert cli.main(argv) == 0
    capsys.readouterr()
    before = {p: p.read_bytes() for p in tmp_path.glob("*/**/*") if p.is_file() and "ckpt" not in p.parts and "cache" not in p.parts}
    assert any(p.parent.name == "tinybench" and p.suffix == ".json" for p in before)
    assert (tmp_path / "cost" / "tinybench.json") in before and (tmp_path / "boards" / "tinybench" / "leaderboard.md") in before
    assert cli.main(argv + ["--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    namespace = re.search(r"go to the namespace (tinybench\+[0-9a-f]{8})", out).group(1)
    assert {p: p.read_bytes() for p in before} == before  # nothing of the suite's own changed
    [rec] = (tmp_path / "runs" / namespace).glob("*.json")
    assert json.loads(rec.read_text())["identity"]["suite"] == namespace
    assert (tmp_path / "cost" / f"{namespace}.json").is_file() and (tmp_path / "boards" / namespace / "leaderboard.md").is_file()
    # the same overrides are the same namespace: finished, so skipped
    assert cli.main(argv + ["--set", "train.epochs=1", "--no-cost-pass"]) == 0
    assert ": 1 done (skipped), 0 to resume from a checkpoint, 0 to start" in capsys.readouterr().out


def test_cost_pass_merges_into_the_models_it_did_not_time(cifar10_dir, tmp_path: Path, capsys) -> None:
    """A cost pass over some of a suite's models (the others' weights gone) keeps the others' figures, naming their pass."""
    import shutil

    root, _ = cifar10_dir
    suite, argv = tiny_bench(root, tmp_path, "deterministic,mimo")
    assert cli.main(argv) == 0
    first = json.loads((tmp_path / "cost" / "tinybench.json").read_text())
    assert len(first["models"]) == 2
    [mimo_ckpt] = (tmp_path / "ckpt").glob("mimo-*")
    shutil.rmtree(mimo_ckpt)
    assert cli.main(["cost", str(suite), "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                     "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--skip-missing", "--cost-repeats", "2",
                     "--leaderboard-dir", str(tmp_path / "boards")]) == 0
    second = json.loads((tmp_path / "cost" / "tinybench.json").read_text())
    by_id = {m["identity"]["method"]: m for m in second["models"]}
    assert set(by_id) == {"deterministic", "mimo"} and second["models_measured_together"] == [by_id["deterministic"]["run_id"]]
    old_mimo = next(m for m in first["models"] if m["identity"]["method"] == "mimo")
    assert by_id["mimo"]["ms_per_example_b1"] == old_mimo["ms_per_example_b1"] and by_id["mimo"]["from_pass"]["created"] == first["created"]
    assert "from_pass" not in by_id["deterministic"]


# ---------------------------------------------------------------------------------------------
# TensorBoard curves (optional extra)


def test_tensorboard_missing_is_a_config_error_before_data(cifar10_dir, tmp_path: Path, capsys, monkeypatch) -> None:
    import sys

    root, _ = cifar10_dir
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: importing it raises ImportError
    assert cli.main(smoke_argv("deterministic", root, tmp_path) + ["--set", "train.log=tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "needs the tensorboard package" in err and "pip install 'plures[tensorboard]'" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()  # nothing read, nothing written
    assert cli.main(smoke_argv("deterministic", root, tmp_path) + ["--set", "train.log=wandb"]) == 2
    assert "train.log = 'wandb' is not valid: expected a string; valid choices: none, tensorboard" in capsys.readouterr().err


def test_tensorboard_event_files_hold_the_curves(cifar10_dir, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (optional extra: pip install 'plures[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root, _ = cifar10_dir
    argv = smoke_argv("mimo", root, tmp_path) + ["--set", "train.log=tensorboard", "--set", "train.epochs=2", "--set", "train.nan_check_every=1"]
    assert cli.main(argv) == 0
    [path] = list((tmp_path / "runs").rglob("*.json"))
    rec = json.loads(path.read_text())
    run_id = rec["training_run_id"]
    assert run_id == run_id_of(C.resolve(C.merge(rec["config"], {"train": {"log": "none"}})))  # logging does not change the run id
    folder = tmp_path / "ckpt" / run_id / "tensorboard" / "train"
    events = EventAccumulator(str(folder))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/loss_per_member", "train/lr", "train/epoch_seconds", "train/step_loss_per_member"} <= tags
    history = rec["training"]["history"]["train"]
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([h["loss"] for h in history], rel=1e-6)
    assert [e.value for e in events.Scalars("train/loss_per_member")] == pytest.approx([h["loss"] / 3 for h in history], rel=1e-6)
    assert len(events.Scalars("train/step_loss_per_member")) == 4  # 64 images / batch 32 = 2 steps x 2 epochs
    # --tensorboard-dir puts them elsewhere
    other = tmp_path / "tb"
    assert cli.main(argv + ["--tensorboard-dir", str(other)]) == 0
    assert list((other / run_id / "train").glob("events.out.tfevents.*"))


def test_run_context_takes_the_training_subset_of_full_data(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    """A caller that loads the full data (a sweep's member job) still trains on the run's subset."""
    from benchmark.data.base import load_dataset
    from benchmark.runner import RunContext

    root, _ = cifar10_dir
    resolved = C.resolve(C.merge(tiny_run_config, {"data": {"train_subset": 50, "subset_seed": 3}}))
    data = load_dataset("cifar10", root, tmp_path / "cache", progress=False)
    ctx = RunContext(resolved, run_id_of(resolved), data, data.train.on_device(data.mean, data.std, "cpu"), env_for(tmp_path, root))
    assert len(ctx.data.train) == len(ctx.train_data) == 50
    assert ctx.data.subsets == {"train": {"size": 50, "of": 200, "seed": 3, "stratified": True}}
    expected = stratified_subset(np.asarray(data.train.labels), 50, 3)
    assert np.array_equal(np.asarray(ctx.data.train.labels), np.asarray(data.train.labels)[expected])


def test_bench_stopped_by_sigterm_continues(cifar10_dir, tmp_path: Path) -> None:
    """The same with a real SIGTERM to a ``bench`` process, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root, _ = cifar10_dir
    suite = tmp_path / "tinybench.toml"
    suite.write_text(TINY_SUITE.replace("epochs = 2", "epochs = 6"))
    argv = [sys.executable, "-m", "benchmark", "bench", str(suite), "--only", "deterministic,mimo", "--data-dir", str(root),
            "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
            "--leaderboard-dir", str(tmp_path / "boards"), "--no-progress"]
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=repo)
    lines = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # stop during the second run, once it has trained 2 of its 6 epochs
        lines.append(line)
        if line.startswith("mimo-") and "train epoch 2/6" in line:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "".join(lines)
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "run the same command again to continue it" in rest
    again = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, cwd=repo)
    assert again.returncode == 0, again.stdout + again.stderr
    out = again.stdout.splitlines()
    assert out[0].endswith(": 1 done (skipped), 1 to resume from a checkpoint, 0 to start"), again.stdout
    assert out[1].startswith("  deterministic seed 0: done: completed record ") and out[2].startswith("  mimo seed 0: resume from epoch ")
    assert re.search(r"resuming mimo-\S+ train (after epoch [2-5]|in epoch [2-6] after step)", again.stdout)
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 2

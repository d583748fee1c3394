"""Config errors fail before anything runs: the key, the value and what is expected; no record,
no checkpoint folder, no data read."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmark import cli
from benchmark.core import config as C


def _cli_run(tmp_path: Path, *overrides: str) -> list[str]:
    args = ["run", "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"), "--data-dir", str(tmp_path / "data"),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu", "--no-progress"]
    for o in overrides:
        args += ["--set", o]
    return args


@pytest.fixture
def no_data(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make reading data fail loudly; the list records any attempt."""
    import benchmark.runner as runner

    reached: list[str] = []

    def load_dataset(name: str, *a, **k):
        reached.append(name)
        raise AssertionError("data loading reached")

    monkeypatch.setattr(runner, "load_dataset", load_dataset)
    return reached


BAD = [
    ("train.epochs=abc", "train.epochs = 'abc' is not valid: expected an integer >= 0"),
    ("train.epochs=-1", "train.epochs = -1 is not valid: expected an integer >= 0"),
    ("train.precision=bf32", "train.precision = 'bf32' is not valid: expected a string; valid choices: fp32, bf16"),
    ("train.epochs=true", "train.epochs = True is not valid: expected an integer >= 0"),
    ("train.batch_size=0", "train.batch_size = 0 is not valid: expected an integer >= 1"),
    ("train.lr=0", "train.lr = 0 is not valid: expected a number > 0"),
    ("train.lr=nan", "train.lr = nan is not valid: expected a number > 0"),
    ("train.nesterov=1", "train.nesterov = 1 is not valid: expected a boolean (true or false)"),
    ("train.schedule=cosinus", "train.schedule = 'cosinus' is not valid: expected a string; valid choices: cosine, step, linear"),
    ("train.milestones=[0.5, -1]", "train.milestones = [0.5, -1] is not valid: element -1 is not a number >= 0"),
    ("eval.precision=bf32", "eval.precision = 'bf32' is not valid: expected a string; valid choices: fp32, bf16 (or absent for the default)"),
    ("eval.batch_size=0", "eval.batch_size = 0 is not valid: expected an integer >= 1"),
    ("eval.corruption_severities=[0, 3]", "eval.corruption_severities = [0, 3] is not valid: element 0 is not an integer in [1, 5]"),
    ("eval.ood=svhn", "eval.ood = 'svhn' is not valid: expected a list, each element a string"),
    ("eval.latency_repeats=0", "eval.latency_repeats = 0 is not valid: expected an integer >= 1"),
    ("run.seed=1.5", "run.seed = 1.5 is not valid: expected an integer >= 0"),
    ("run.seed=-1", "run.seed = -1 is not valid: expected an integer >= 0"),
    ("data.val_size=-5", "data.val_size = -5 is not valid: expected an integer >= 0"),
    ("data.download=yes", "data.download = 'yes' is not valid: expected a boolean (true or false)"),
    # the method's options, against its Options dataclass (before any data is read, too)
    ("method.members=abc", "method.members = 'abc' is not valid: expected an integer >= 1"),
    ("method.members=0", "method.members = 0 is not valid: expected an integer >= 1"),
    ("method.temperature=2", "unknown option(s) ['temperature'] for method 'deterministic'; valid options: label, members"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_bad_value_fails_before_anything_runs(override: str, message: str, tmp_path: Path, no_data: list[str], capsys) -> None:
    assert cli.main(_cli_run(tmp_path, override)) == 2
    err = capsys.readouterr().err
    assert f"error: {message}" in err, err
    assert no_data == []  # data loading was not reached
    assert not (tmp_path / "runs").exists()  # no record, not even a failed one
    assert not (tmp_path / "ckpt").exists()  # no checkpoint folder (no lock file either)


def test_resolve_raises_config_error_naming_key_value_and_expectation() -> None:
    with pytest.raises(C.ConfigError, match=r"^train\.epochs = 'abc' is not valid: expected an integer >= 0$"):
        C.resolve(C.apply_overrides({}, ["train.epochs=abc"]))
    with pytest.raises(C.ConfigError, match=r"train\.precision = 'bf32' .*; valid choices: fp32, bf16"):
        C.resolve({"train": {"precision": "bf32"}})


def test_integers_are_valid_numbers_but_booleans_are_neither() -> None:
    resolved = C.resolve({"train": {"warmup_epochs": 1, "lr": 1, "final_lr_fraction": 0}})  # TOML 1 for a float field
    assert resolved["train"]["warmup_epochs"] == 1 and resolved["train"]["lr"] == 1
    with pytest.raises(C.ConfigError, match=r"train\.lr = True is not valid: expected a number > 0"):
        C.resolve({"train": {"lr": True}})
    with pytest.raises(C.ConfigError, match=r"train\.batch_size = 64\.0 is not valid: expected an integer >= 1"):
        C.resolve({"train": {"batch_size": 64.0}})
    with pytest.raises(C.ConfigError, match=r"train\.augment = 0 is not valid: expected a boolean"):
        C.resolve({"train": {"augment": 0}})


def test_stage_changes_are_checked_like_the_config() -> None:
    """A method's stage that changes the training settings gets the same checks (TrainConfig.validate)."""
    with pytest.raises(C.ConfigError, match=r"train\.epochs = -3 is not valid"):
        C.TrainConfig(epochs=-3).validate()
    C.TrainConfig(epochs=0, warmup_epochs=0).validate()


def test_every_suite_resolves() -> None:
    from benchmark.catalogue.methods import get_method

    for path in sorted(C.SUITES_DIR.glob("*.toml")):
        for cfg in C.load_suite(str(path))[1]:
            resolved = C.resolve(cfg)
            C.check_options("method", resolved["run"]["method"], resolved["method"], get_method(resolved["run"]["method"]).Options)


def test_method_option_types() -> None:
    from benchmark.catalogue.methods import get_method

    mc = get_method("mc_dropout").Options
    with pytest.raises(C.ConfigError, match=r"^method\.samples = \[1, 'x'\] is not valid: element 'x' is not an integer$"):
        C.check_options("method", "mc_dropout", {"samples": [1, "x"]}, mc)
    with pytest.raises(C.ConfigError, match=r"^method\.rate = True is not valid: expected a number$"):
        C.check_options("method", "mc_dropout", {"rate": True}, mc)
    C.check_options("method", "mimo", {"input_repetition": 1, "members": 2}, get_method("mimo").Options)  # an integer is a valid number


def test_suite_defaults_with_a_bad_value_fail_before_any_run(tmp_path: Path, no_data: list[str], capsys) -> None:
    suite = tmp_path / "mine.toml"
    suite.write_text('name = "mine"\n[defaults.train]\nprecision = "bf32"\n[[runs]]\nname = "det"\nrun = { method = "deterministic" }\n')
    rc = cli.main(["bench", str(suite), "--results-dir", str(tmp_path / "runs"), "--checkpoint-dir", str(tmp_path / "ckpt"),
                   "--leaderboard-dir", str(tmp_path / "lb"), "--no-progress"])
    assert rc == 2 and "train.precision = 'bf32' is not valid" in capsys.readouterr().err
    assert no_data == [] and not (tmp_path / "runs").exists() and not (tmp_path / "ckpt").exists()


def test_batch_larger_than_the_training_set_writes_no_record(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    from benchmark.runner import Environment, run_experiment

    root, _ = cifar10_dir
    cfg = C.merge(tiny_run_config, {"train": {"batch_size": 512}})
    env = Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs", checkpoint_dir=tmp_path / "ckpt",
                      progress=False, log=lambda m: None)
    with pytest.raises(C.ConfigError, match=r"^train\.batch_size = 512 is not valid: it exceeds the 200 training images of cifar10$"):
        run_experiment(cfg, env)
    assert not (tmp_path / "runs").exists()

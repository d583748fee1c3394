"""``train.precision = "auto"``: measured, cached, kept for the run, and recorded as what was used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.catalogue.methods import get_method
from benchmark.core import config as C
from benchmark.core.config import TrainConfig
from benchmark.methods.base import Task
from benchmark.runner import Environment, run_experiment
from benchmark.training.precision import CACHE_NAME, MARGIN, choose_precision, load_choice
from benchmark.training.train import fit


def _method():
    method = get_method("deterministic").from_config({}, Task(num_classes=10, backbone="resnet8", backbone_options={"width": 4}))
    torch.manual_seed(0)
    return method, method.build()


def test_a_set_precision_is_used_as_configured_without_measuring(tmp_path: Path):
    method, model = _method()
    choice = choose_precision(model, method, TrainConfig(batch_size=8, precision="bf16"), image_size=16, cache_dir=tmp_path)
    assert (choice.used, choice.seconds_per_step, choice.reason) == ("bf16", {}, "as configured")
    assert not (tmp_path / CACHE_NAME).exists()


def test_auto_measures_both_chooses_by_the_margin_and_caches(tmp_path: Path):
    method, model = _method()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(batch_size=8, precision="auto")
    first = choose_precision(model, method, cfg, image_size=16, cache_dir=tmp_path, steps=1)
    assert set(first.seconds_per_step) == {"fp32", "bf16"} and not first.cached
    ratio = first.seconds_per_step["bf16"] / first.seconds_per_step["fp32"]
    assert first.used == ("bf16" if ratio <= MARGIN else "fp32") and f"{ratio:.2f}x" in first.reason
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # probes train copies, not the model
    second = choose_precision(model, method, cfg, image_size=16, cache_dir=tmp_path)
    assert second.cached and second.seconds_per_step == first.seconds_per_step and second.used == first.used
    other = choose_precision(model, method, TrainConfig(batch_size=16, precision="auto"), image_size=16, cache_dir=tmp_path, steps=1)
    assert not other.cached  # another shape: measured again
    assert len(json.loads((tmp_path / CACHE_NAME).read_text())) == 2


def test_fit_refuses_an_unresolved_auto():
    method, model = _method()
    with pytest.raises(ValueError, match="precision='auto' is resolved before training"):
        fit(model, method, None, TrainConfig(precision="auto"), seed_parts=(0,))


def test_auto_is_a_valid_training_precision_but_not_an_evaluation_one():
    base = {"run": {"method": "deterministic", "dataset": "cifar10", "backbone": "resnet8", "seed": 0}}
    assert C.resolve({**base, "train": {"precision": "auto"}})["train"]["precision"] == "auto"
    with pytest.raises(C.ConfigError, match="auto"):
        C.resolve({**base, "eval": {"precision": "auto"}})


def _env(tmp_path: Path, root: Path, name: str, cache: Path) -> Environment:
    return Environment(data_dir=str(root), cache_dir=str(cache), results_dir=tmp_path / name / "runs", checkpoint_dir=tmp_path / name / "ckpt",
                       progress=False, log=lambda m: None)


def _final(tmp_path: Path, name: str) -> dict:
    (path,) = (tmp_path / name / "ckpt").rglob("final.pt")
    return torch.load(path, weights_only=True)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("faster", ["bf16", "fp32"])
def test_the_record_states_the_precision_the_run_trained_in(cifar10_dir, tiny_run_config, tmp_path: Path, faster: str):
    """The cached measurement is set so that ``faster`` wins; the auto run must then train exactly as a run configured
    with ``faster`` (the same weights), and its record must say so."""
    root, _ = cifar10_dir
    cache = tmp_path / "cache"
    auto_cfg = {**tiny_run_config, "train": {**tiny_run_config["train"], "precision": "auto"}}
    [first] = run_experiment(auto_cfg, _env(tmp_path, root, "probe", cache))  # measures (real probe) and fills the cache
    store = json.loads((cache / CACHE_NAME).read_text())
    (key,) = store
    store[key].update({"fp32": 1.0, "bf16": 0.5} if faster == "bf16" else {"fp32": 0.5, "bf16": 1.0})
    (cache / CACHE_NAME).write_text(json.dumps(store))
    [auto] = run_experiment(auto_cfg, _env(tmp_path, root, "auto", cache))
    fixed_cfg = {**tiny_run_config, "train": {**tiny_run_config["train"], "precision": faster}}
    [fixed] = run_experiment(fixed_cfg, _env(tmp_path, root, "fixed", cache))
    rec = json.loads(auto.read_text())
    choice = rec["training"]["precision"]["train"]
    assert (choice["requested"], choice["used"], choice["cached"]) == ("auto", faster, True)
    assert rec["budget"]["precision"] == faster and rec["config"]["train"]["precision"] == "auto"
    weights, reference = _final(tmp_path, "auto"), _final(tmp_path, "fixed")
    assert all(torch.equal(weights[k], reference[k]) for k in reference)  # trained in the precision it states
    assert json.loads(fixed.read_text())["metrics"]["clean"] == rec["metrics"]["clean"]  # and evaluated in it
    kept = load_choice(tmp_path / "auto" / "ckpt" / rec["training_run_id"] / "train.precision.json")
    assert kept is not None and kept.used == faster
    assert json.loads(first.read_text())["training"]["precision"]["train"]["cached"] is False


def test_the_plan_probes_auto_at_the_precision_the_run_will_choose(tiny_run_config, tmp_path: Path):
    from benchmark.estimate import discover

    resolved = C.resolve({**tiny_run_config, "train": {**tiny_run_config["train"], "precision": "auto"}})
    ctx = discover(resolved, torch.device("cpu"), num_classes=10, image_size=32, probe=lambda stage: True, cache_dir=str(tmp_path))
    (plan,) = ctx.stages
    (measured,) = json.loads((tmp_path / CACHE_NAME).read_text()).values()  # measured once, where the run looks
    expected = "bf16" if measured["bf16"] / measured["fp32"] <= MARGIN else "fp32"
    assert plan.config.precision == expected and plan.probe is not None

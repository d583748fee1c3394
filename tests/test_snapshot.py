"""Snapshot ensembles: the cyclic cosine schedule against the paper's formula, snapshots at the cycle
ends, the one-pass ensemble against the snapshots evaluated one by one, and snapshots that survive a
resume (after an epoch and mid-epoch). Tiny and on the CPU (ResNet-8 of width 4 on 8x8 images)."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.snapshot import Snapshot, SnapshotNetwork, cycle_ends
from benchmark.catalogue.methods import get_method
from benchmark.core.config import ConfigError, TrainConfig
from benchmark.core.runtime import StopRequested
from benchmark.data.base import Split
from benchmark.data.device import DeviceData
from benchmark.methods import Task, combine
from benchmark.training.train import fit, lr_factor

K = 3
TASK = Task(num_classes=K, backbone="resnet8", backbone_options={"width": 4}, image_size=8)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def data(n: int = 96, seed: int = 0) -> DeviceData:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % K).astype(np.int64)
    images = np.clip(rng.normal(60 * labels[:, None, None, None] + 60, 30, size=(n, 8, 8, 3)), 0, 255).astype(np.uint8)
    return DeviceData(Split(images, labels), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def snapshot(members: int) -> Snapshot:
    return get_method("snapshot").from_config({"members": members}, TASK)


def config(epochs: int = 6, members: int = 3, **kw) -> TrainConfig:
    base = dict(epochs=epochs, batch_size=32, lr=0.1, weight_decay=5e-4, warmup_epochs=0.0, schedule="cyclic_cosine", augment=False,
                milestones=[float(e) for e in cycle_ends(TrainConfig(epochs=epochs, schedule="cyclic_cosine"), members)[:-1]])
    base.update(kw)
    return TrainConfig(**base)


def paper_lr(lr0: float, t: int, total: int, members: int) -> float:
    """Huang et al. 2017, Eq. (2): t = 1..T iterations, M cycles of ceil(T/M) iterations."""
    cycle = math.ceil(total / members)
    return lr0 / 2 * (math.cos(math.pi * ((t - 1) % cycle) / cycle) + 1)


class Recording(Snapshot):
    """The snapshot method, remembering the live weights at every epoch end (before the hook)."""

    def __init__(self, options, task) -> None:
        super().__init__(options, task)
        self.at_epoch: dict[int, dict[str, torch.Tensor]] = {}

    def end_of_epoch(self, model, epoch, cfg) -> None:
        self.at_epoch[epoch] = {k: v.clone() for k, v in model.live.state_dict().items()}
        super().end_of_epoch(model, epoch, cfg)


# ---------------------------------------------------------------------------------------------
# The schedule


@pytest.mark.parametrize("epochs, members, steps", [(6, 3, 3), (10, 5, 7), (4, 1, 5), (6, 2, 4)])
def test_cyclic_cosine_is_the_papers_formula(epochs: int, members: int, steps: int) -> None:
    cfg = config(epochs, members)
    total = epochs * steps
    for s in range(total):  # step s (0-based) is the paper's iteration t = s + 1
        assert lr_factor(cfg, s, steps) * cfg.lr == pytest.approx(paper_lr(cfg.lr, s + 1, total, members), abs=1e-12), s
    # the restarts: lr0 at the first step of every cycle, near 0 at the last
    cycle = total // members
    for k in range(members):
        assert lr_factor(cfg, k * cycle, steps) == 1.0
        assert lr_factor(cfg, (k + 1) * cycle - 1, steps) < 3 / cycle**2  # (pi / L)^2 / 4


def test_cyclic_cosine_without_milestones_is_one_cosine_cycle_and_keeps_the_warmup() -> None:
    one = TrainConfig(epochs=4, schedule="cyclic_cosine", warmup_epochs=0.0)
    cosine = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=0.0)
    assert [lr_factor(one, s, 5) for s in range(20)] == pytest.approx([lr_factor(cosine, s, 5) for s in range(20)])
    warm = TrainConfig(epochs=4, schedule="cyclic_cosine", warmup_epochs=1.0, milestones=[2.0])
    assert [lr_factor(warm, s, 5) for s in range(5)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lr_factor(warm, 5, 5) == 1.0 and lr_factor(warm, 10, 5) == 1.0  # cycles start after the warm-up and at epoch 2


def test_fit_follows_the_cyclic_schedule_per_epoch() -> None:
    method = snapshot(3)
    model = method.build()
    cfg = config(6, 3)
    train = data()
    steps = train.steps_per_epoch(cfg.batch_size)
    history = fit(model, method, train, cfg, seed_parts=("snap", 0), progress=False, log=lambda _: None)
    # history's lr is the rate after the epoch's last step: the next step's, i.e. iteration e * steps + 1
    for e, entry in enumerate(history, start=1):
        expected = paper_lr(cfg.lr, e * steps + 1, 6 * steps, 3) if e < 6 else 0.0
        assert entry["lr"] == pytest.approx(expected, abs=1e-9), (e, entry["lr"])
    assert history[1]["lr"] == history[3]["lr"] == pytest.approx(cfg.lr)  # restarts after epochs 2 and 4


# ---------------------------------------------------------------------------------------------
# The snapshots


def test_snapshots_are_the_weights_at_the_cycle_ends() -> None:
    method = Recording(Snapshot.Options(members=3), TASK)
    model = method.build()
    fit(model, method, data(), config(6, 3), seed_parts=("snap", 1), progress=False, log=lambda _: None)
    assert int(model.taken) == 3 and sorted(method.at_epoch) == [1, 2, 3, 4, 5, 6]
    for slot, epoch in zip(model.slots, (2, 4)):
        state = slot.state_dict()
        assert all(torch.equal(state[k], method.at_epoch[epoch][k]) for k in state)  # parameters and BatchNorm statistics
        other = method.at_epoch[epoch - 1]
        assert not all(torch.equal(state[k], other[k]) for k in state)  # not an earlier epoch's weights
        assert all(not p.requires_grad for p in slot.parameters())
    live = model.live.state_dict()
    assert all(torch.equal(live[k], method.at_epoch[6][k]) for k in live)  # the last member: the final weights
    # the members differ: the weights moved between snapshots
    a, b = (dict(m.named_parameters()) for m in model.slots)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_one_grouped_pass_equals_the_snapshots_evaluated_separately() -> None:
    method = snapshot(3)
    model = method.build()
    fit(model, method, data(), config(3, 3), seed_parts=("snap", 2), progress=False, log=lambda _: None)
    [variant] = method.eval_variants(model)
    assert (variant.label, variant.forward_passes, variant.members) == ("M=3", 3, 3)
    x, _ = next(data(40, seed=5).eval_batches(40))
    net = variant.network.eval()
    with torch.no_grad():
        together = net(x)
        separately = torch.cat([copy.deepcopy(m).eval()(x) for m in model.members_list()])
        looped = model.eval()(x)
    assert together.shape == (3, 40, K)
    torch.testing.assert_close(together, separately, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(looped, separately)
    probs = torch.softmax(separately.double(), -1).mean(0)
    torch.testing.assert_close(combine(together).exp().double(), probs, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(separately[0], separately[2], atol=1e-3)  # distinct members, not one network thrice


# ---------------------------------------------------------------------------------------------
# Resume


def full_state(model: SnapshotNetwork) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stop_after_checks", [9, 11])  # 3 steps and 4 stop checks per epoch: mid-epoch 3, end of epoch 3
def test_resume_keeps_the_snapshots(tmp_path: Path, stop_after, stop_after_checks: int) -> None:
    cfg = config(6, 3)
    method = snapshot(3)
    straight = method.build()
    fit(straight, method, data(), cfg, seed_parts=("snap", 3), progress=False, log=lambda _: None)

    ckpt = tmp_path / "train.pt"
    with pytest.raises(StopRequested, match="epoch 3"):
        fit(method.build(), method, data(), cfg, seed_parts=("snap", 3), checkpoint=ckpt, stop=stop_after(stop_after_checks),
            progress=False, log=lambda _: None)
    saved = torch.load(ckpt, weights_only=False)
    assert int(saved["model"]["taken"]) == 1  # the first cycle's snapshot is in the checkpoint
    assert saved["step"] == (2 if stop_after_checks == 9 else 0)
    resumed = method.build()
    with torch.no_grad():  # other weights everywhere (slots included): everything must come from the checkpoint
        for t in resumed.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
    fit(resumed, method, data(), cfg, seed_parts=("snap", 3), checkpoint=ckpt, resume=True, progress=False, log=lambda _: None)
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and int(b["taken"]) == 3
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


@pytest.fixture(autouse=True)
def same_start(monkeypatch):
    """Every ``build`` of these tests starts from the same initial weights (seed 0)."""
    original = Snapshot.build

    def build(self):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            return original(self)

    monkeypatch.setattr(Snapshot, "build", build)


# ---------------------------------------------------------------------------------------------
# Errors and the run


@pytest.mark.parametrize("changes, pattern", [
    ({"schedule": "linear"}, r"train.schedule = 'cyclic_cosine'.*got 'linear'"),
    ({"epochs": 7, "milestones": []}, r"train.epochs = 7 is not a positive multiple of members = 3"),
    ({"milestones": [2.0]}, r"train.milestones = \[2.0\] must be 2 increasing whole epochs in \(0, 6\)"),
    ({"milestones": [2.5, 4.0]}, r"must be 2 increasing whole epochs"),
    ({"warmup_epochs": 3.0}, r"warmup_epochs = 3.0 is longer than the first cycle"),
])
def test_bad_schedules_fail_naming_the_setting(changes: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        cycle_ends(TrainConfig(**{**dataclasses.asdict(config(6, 3)), **changes}), 3)


def test_explicit_milestones_set_the_cycles() -> None:
    assert cycle_ends(config(6, 3, milestones=[1.0, 4.0]), 3) == [1, 4, 6]
    assert cycle_ends(TrainConfig(epochs=200, schedule="cyclic_cosine", warmup_epochs=0.0), 5) == [40, 80, 120, 160, 200]


def test_members_option() -> None:
    method = snapshot(4)
    assert (method.members, method.test_members(), method.forward_passes(), method.variant()) == (1, 4, 4, "M=4")
    assert get_method("snapshot").from_config({}, TASK).test_members() == 5  # the paper's M on CIFAR
    with pytest.raises(ValueError, match="members must be >= 1"):
        snapshot(0)


def test_a_run_writes_an_ensemble_record(cifar10_dir, tiny_run_config, tmp_path: Path) -> None:
    from benchmark.core.config import merge
    from benchmark.runner import Environment, run_experiment

    root, _ = cifar10_dir
    cfg = merge(tiny_run_config, {"run": {"method": "snapshot"}, "method": {"members": 2},
                                  "train": {"epochs": 2, "schedule": "cyclic_cosine", "warmup_epochs": 0}})
    env = Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                      checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)
    [path] = run_experiment(cfg, env)
    rec = json.loads(path.read_text())
    assert rec["status"] == "completed" and rec["identity"]["members"] == 2 and rec["identity"]["variant"] == "M=2"
    assert rec["cost"]["forward_passes"] == 2 and len(rec["metrics"]["clean"]["members"]) == 2
    assert rec["method_extra"] == {"snapshot_epochs": [1, 2], "cycles": 2}
    assert [round(h["lr"], 9) for h in rec["training"]["history"]["train"]] == [0.05, 0.0]  # restarted after epoch 1
    bad = merge(cfg, {"train": {"schedule": "linear"}})
    with pytest.raises((ValueError, ConfigError), match="cyclic_cosine"):
        run_experiment(bad, env)


def test_every_suite_entry_of_the_method_has_its_cycles() -> None:
    """Each suite's snapshot entries give M cycles of whole epochs (the defaults' step milestones must not leak in)."""
    from benchmark.core import config as C

    seen = 0
    for path in sorted(C.SUITES_DIR.glob("*.toml")):
        for cfg in C.load_suite(str(path))[1]:
            resolved = C.resolve(cfg)
            if resolved["run"]["method"] == "snapshot":
                members = resolved["method"].get("members", 5)
                ends = cycle_ends(C.train_config(resolved), members)
                assert len(ends) == members and ends[-1] == resolved["train"]["epochs"], (path.name, ends)
                seen += 1
    assert seen

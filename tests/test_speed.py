"""The CPU-speed settings change how a step is executed, never what it computes or which run it is:
a compiled step gives an eager step's loss and gradients, a failed compilation falls back to eager
without changing the result, channels-last and compilation stay out of a run's id, threads are set
from the machine (or the user's / SLURM's / torchrun's count) and recorded."""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from benchmark.catalogue.methods import get_method
from benchmark.core import config as C
from benchmark.core import cpu
from benchmark.core.config import TrainConfig
from benchmark.data.base import Split
from benchmark.data.device import DeviceData
from benchmark.methods.base import Task, training_loss
from benchmark.runner import check_runs, run_id_of
from benchmark.training.train import CompiledNet, compile_override, fit, to_channels_last, train_one_epoch


def _data(n: int = 96, seed: int = 0) -> DeviceData:
    rng = np.random.default_rng(seed)
    split = Split(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n))
    return DeviceData(split, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _model(name: str = "deterministic", options: dict | None = None, seed: int = 0):
    method = get_method(name).from_config(dict(options or {}), Task(num_classes=10, backbone="resnet8", backbone_options={"width": 8}))
    torch.manual_seed(seed)
    return method, method.build()


def _grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _step(net, model, method, x, y) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = training_loss(method, net(x), y)
    loss.backward()
    return float(loss.detach()), _grads(model)


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")
@pytest.mark.parametrize("name, options", [("deterministic", {}), ("batchensemble", {"members": 2})])
def test_compiled_step_gives_the_eager_loss_and_gradients(name, options):
    method, model = _model(name, options)
    to_channels_last(model)
    twin = copy.deepcopy(model)
    data = _data()
    gen = torch.Generator().manual_seed(0)
    x, y = data.train_batch(data.epoch_order(gen), 0, 32, gen, augment=False)
    inputs, targets = method.training_batch(x.contiguous(memory_format=torch.channels_last), y, gen)
    model.train(), twin.train()
    compiled = CompiledNet(twin)
    eager_loss, eager_grads = _step(model, model, method, inputs, targets)
    compiled_loss, compiled_grads = _step(compiled, twin, method, inputs, targets)
    assert compiled.failed is None, compiled.note  # the compiled path really ran
    assert compiled_loss == pytest.approx(eager_loss, rel=1e-5, abs=1e-6)
    assert eager_grads.keys() == compiled_grads.keys()
    # float reassociation (fused kernels sum in another order): each gradient within 0.5% of its own norm (a lost
    # gradient scaling or a wrong kernel is off by order 1)
    worst = {key: float((compiled_grads[key] - g).norm() / g.norm().clamp_min(1e-12)) for key, g in eager_grads.items()}
    assert max(worst.values()) < 5e-3, sorted(worst.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                    reason="torch.compile's CPU backend (inductor) needs a C++ compiler; none on PATH")
def test_a_compiled_mc_dropout_step_compiles_whole_and_replays_from_the_global_seed():
    """MC dropout's masks are drawn inside the compiled graph (baselines.mc_dropout.graph_dropout_mask): the step
    compiles without a graph break or a fall-back, and the global seed, which the harness sets at every step,
    decides its masks (a resumed run replays them)."""
    import torch._dynamo

    method, model = _model("mc_dropout", {"rate": 0.2, "filterwise": True})
    to_channels_last(model)
    model.train()
    data = _data()
    gen = torch.Generator().manual_seed(0)
    x, y = data.train_batch(data.epoch_order(gen), 0, 32, gen, augment=False)
    inputs, targets = method.training_batch(x.contiguous(memory_format=torch.channels_last), y, gen)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = CompiledNet(model)
    losses = {}
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        losses.setdefault(seed, []).append(_step(compiled, model, method, inputs, targets))
    assert compiled.failed is None, compiled.note
    assert not torch._dynamo.utils.counters["graph_break"], dict(torch._dynamo.utils.counters["graph_break"])
    (loss_a, grads_a), (loss_b, grads_b) = losses[5]
    assert loss_a == loss_b and all(torch.equal(grads_a[k], grads_b[k]) for k in grads_a)
    assert losses[6][0][0] != loss_a  # other masks


def _failing_backend(gm, example_inputs):  # a torch.compile backend that cannot compile anything
    raise RuntimeError("no compiler here (test backend)")


def test_failed_compilation_falls_back_to_eager_with_the_same_result():
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0, schedule="linear", nan_check_every=1)
    data = _data()
    runs = {}
    for label in ("eager", "fallback"):
        method, model = _model()
        opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        net = CompiledNet(model, backend=_failing_backend) if label == "fallback" else model
        stats = train_one_epoch(net, method, opt, sched, data, cfg, seed_parts=("speed", 0), epoch=0, progress=False)
        runs[label] = (stats, {k: v.clone() for k, v in model.state_dict().items()}, net)
    (eager, eager_state, _), (fallback, fallback_state, net) = runs["eager"], runs["fallback"]
    assert net.failed is not None and "no compiler here" in net.failed
    assert fallback.compile.startswith("torch.compile failed, trained eagerly") and eager.compile == ""
    assert fallback.loss == eager.loss  # the failed first step was repeated eagerly with the same randomness
    for key, value in eager_state.items():
        assert torch.equal(fallback_state[key], value), key


def test_a_real_error_in_a_compiled_step_is_not_swallowed():
    method, model = _model()
    net = CompiledNet(model, backend=_failing_backend)
    assert net.fall_back(RuntimeError("first: compilation")) is True
    assert net.fall_back(RuntimeError("second: the step's own error")) is False  # already eager: the loop re-raises


def test_fit_records_the_compile_outcome_in_the_history():
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0, schedule="linear")
    method, model = _model()
    history = fit(model, method, _data(), cfg, seed_parts=("speed", 1), progress=False, log=lambda m: None)
    assert "compile" not in history[0]  # not compiled: the history has no compile entry (earlier records' shape)


def test_plures_compile_0_trains_eagerly_and_says_so(monkeypatch):
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, warmup_epochs=0.0, schedule="linear", compile=True)
    monkeypatch.setenv("PLURES_COMPILE", "off")
    method, model = _model()
    history = fit(model, method, _data(), cfg, seed_parts=("speed", 1), progress=False, log=lambda m: None)
    assert history[0]["compile"] == "eager: PLURES_COMPILE=off (train.compile = true)"
    monkeypatch.setenv("PLURES_COMPILE", "1")
    assert compile_override() is None  # as configured


def test_a_bad_plures_compile_is_refused_before_anything_runs(monkeypatch):
    monkeypatch.setenv("PLURES_COMPILE", "maybe")
    with pytest.raises(C.ConfigError, match=r"PLURES_COMPILE='maybe' is not a valid choice; use one of 0, off, false, no .* or 1, on, true, yes"):
        check_runs([("quick:deterministic", C.merge(_resolved(), {"train": {"compile": True}}))])
    check_runs([("eager", _resolved())])  # a run that does not compile does not read it


def _resolved(**train) -> dict:
    return C.resolve({"run": {"method": "deterministic", "dataset": "cifar10", "backbone": "resnet8", "seed": 0}, "train": train})


def test_layout_and_compilation_are_not_part_of_a_runs_id():
    base = run_id_of(_resolved())
    assert run_id_of(_resolved(channels_last=True)) == base
    assert run_id_of(_resolved(channels_last=True, compile=True)) == base
    assert run_id_of(_resolved(precision="bf16")) != base  # precision changes what is computed: another run
    assert run_id_of(_resolved(epochs=3)) != base


@pytest.mark.parametrize("environ, intra, source", [
    ({"PLURES_THREADS": "3"}, 3, "PLURES_THREADS"),
    ({"SLURM_CPUS_PER_TASK": "1"}, 1, "SLURM_CPUS_PER_TASK"),
    ({"PLURES_THREADS": "2", "SLURM_CPUS_PER_TASK": "1"}, 2, "PLURES_THREADS"),
])
def test_thread_count_sources(monkeypatch, environ, intra, source):
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu, "_threads", None)
    try:
        state = cpu.configure_threads(environ)
        assert state["intra_op"] == intra and state["source"] == source
    finally:
        torch.set_num_threads(before)


def test_torchrun_processes_share_the_cores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cpu, "_threads", None)
    monkeypatch.setattr(cpu, "usable_physical_cores", lambda: 8)
    try:
        state = cpu.configure_threads({"LOCAL_WORLD_SIZE": "4"})
        assert state["intra_op"] == 2 and "4 processes" in state["source"]
        monkeypatch.setattr(cpu, "_threads", None)
        assert cpu.configure_threads({}, processes=2)["intra_op"] == 4  # data-parallel ranks without torchrun
    finally:
        torch.set_num_threads(before)


def test_bad_thread_count_names_the_value(monkeypatch):
    monkeypatch.setattr(cpu, "_threads", None)
    with pytest.raises(ValueError, match="PLURES_THREADS='two'.*integers >= 1"):
        cpu.configure_threads({"PLURES_THREADS": "two"})


def test_records_made_with_either_layout_or_compilation_are_one_leaderboard_row():
    from benchmark.leaderboard.frame import config_fingerprint

    base = _resolved()
    old = {**base, "train": {k: v for k, v in base["train"].items() if k not in ("bn_group", "crop_pad", "norm_weight_decay")}}  # an older record's
    assert config_fingerprint(_resolved(channels_last=True, compile=True)) == config_fingerprint(base) == config_fingerprint(old)
    assert config_fingerprint(_resolved(bn_group=64)) != config_fingerprint(base)  # ghost BatchNorm changes what is computed


def test_channels_last_is_refused_where_onednns_avx2_kernel_corrupts_memory(monkeypatch) -> None:
    """A strided 1x1 convolution on fewer than 8 input channels per group trains in the default layout on an AVX2-only
    CPU (its channels-last weight gradient aborts or segfaults there: the tests' width-4 shortcut 4 -> 8 did); fit
    says so and trains."""
    from torch import nn

    from benchmark.training.train import channels_last_hazard

    def net(cin: int, stride: int, groups: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, cin, 3, padding=1), nn.Conv2d(cin, 8 * groups, 1, stride=stride, groups=groups))

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert "1x1 convolution of stride 2 on 4 input channels per group" in channels_last_hazard(net(4, 2), "cpu")
    assert channels_last_hazard(net(8, 2), "cpu") is None and channels_last_hazard(net(4, 1), "cpu") is None
    assert channels_last_hazard(net(16, 2, groups=4), "cpu") is not None  # 4 channels per group
    assert channels_last_hazard(net(4, 2), "cuda") is None
    from baselines.layers import BatchEnsembleConv2d  # a method's own convolution (F.conv2d on its weight)

    assert "on 4 input channels" in channels_last_hazard(nn.Sequential(BatchEnsembleConv2d(4, 8, 1, stride=2, members=2)), "cpu")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert channels_last_hazard(net(4, 2), "cpu") is None


def test_a_refused_channels_last_is_in_the_records_history(monkeypatch) -> None:
    """Where fit refuses channels-last (the AVX2 hazard), each epoch of the history says which layout trained and
    why, so a record whose configuration says channels_last = true does not claim a layout it did not use; where
    nothing is refused, the history has no such entry (older records stay comparable)."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, warmup_epochs=0.0, channels_last=True, log="none")
    # the subnetwork ensemble's width-8 network, 4 members: its stride-2 shortcut sees 2 input channels per group
    method, model = _model("subnetwork", {"members": 4})
    history = fit(model, method, _data(), cfg, seed_parts=("layout",), progress=False, log=lambda _m: None)
    assert len(history) == 2 and all("train.channels_last refused on this CPU" in e["layout"] for e in history), history
    assert "1x1 convolution of stride 2" in history[0]["layout"]
    assert not any(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
                   for p in model.parameters() if p.dim() == 4)
    method, model = _model("deterministic")  # width 8: no strided 1x1 convolution on fewer than 8 channels
    history = fit(model, method, _data(), cfg, seed_parts=("layout",), progress=False, log=lambda _m: None)
    assert all("layout" not in e for e in history)

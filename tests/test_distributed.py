"""Data-parallel training (benchmark.training.distributed) on the CPU: 2 gloo processes equal 1 process."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from benchmark.training.distributed import convert_sync_batchnorm, DistContext, SyncBatchNorm2d
from benchmark.runner import Environment, run_experiment
from tests.conftest import write_cifar_archive

# Measured (2 ranks vs 1, resnet8 w4, 60 images, batch 30, 2 epochs = 4 steps, fp32, SyncBatchNorm2d):
# max |delta| of the final weights 7e-6, gradients of one step 1e-6 relative. Float reassociation
# is then amplified by training itself: after 8 steps the same model differs by ~7e-3 between 2
# ranks and 1 process, and by ~4e-3 between 1 and 2 CPU threads of ONE process; so the test keeps
# to 4 steps. The bounds leave room for other CPUs.
WEIGHT_TOL = 1e-4
METRIC_TOL = 1e-4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join(rank: int, world: int, port: int, sync_bn: bool = True) -> DistContext:
    """This spawned process as rank ``rank`` of a gloo group on localhost (one CPU thread)."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist = DistContext(rank=rank, world_size=world, sync_bn=sync_bn)
    dist.init_process_group("gloo")
    return dist


def _worker(rank: int, world: int, port: int, cfg: dict, root: str, sync_bn: bool) -> None:
    dist = _join(rank, world, port, sync_bn)
    try:
        env = Environment(data_dir=f"{root}/data", cache_dir=f"{root}/cache-{rank}", results_dir=Path(root) / "runs",
                          checkpoint_dir=Path(root) / "ckpt", device="cpu", progress=False, log=lambda m: None, dist=dist)
        paths = run_experiment(cfg, env)
        assert (len(paths) == 1) == dist.is_main
    finally:
        dist.close()


def _run(cfg: dict, root: Path, world: int, sync_bn: bool = True) -> tuple[dict, dict]:
    if world == 1:
        env = Environment(data_dir=str(root / "data"), cache_dir=str(root / "cache"), results_dir=root / "runs", checkpoint_dir=root / "ckpt",
                          device="cpu", progress=False, log=lambda m: None)
        run_experiment(cfg, env)
    else:
        mp.spawn(_worker, args=(world, _free_port(), cfg, str(root), sync_bn), nprocs=world, join=True)
    (rec,) = [json.loads(p.read_text()) for p in (root / "runs").rglob("*.json")]
    (final,) = list((root / "ckpt").rglob("final.pt"))
    return rec, torch.load(final, weights_only=True)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=12, as_tar=False)  # 60 train, 12 test images
    return tmp_path


def _max_delta(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())


@pytest.mark.timeout(240)
def test_two_ranks_equal_one_process(data_root: Path, tiny_run_config: dict, tmp_path: Path) -> None:
    cfg = {**tiny_run_config, "train": {**tiny_run_config["train"], "batch_size": 30}}  # 2 steps per epoch, chunks of 15
    one = tmp_path / "one"
    one.mkdir()
    (one / "data").symlink_to(data_root / "data")
    two = tmp_path / "two"
    two.mkdir()
    (two / "data").symlink_to(data_root / "data")
    rec1, w1 = _run(cfg, one, 1)
    rec2, w2 = _run(cfg, two, 2)
    assert rec1["run_id"] == rec2["run_id"]
    assert (rec1["training"]["world_size"], rec2["training"]["world_size"]) == (1, 2)  # how many ranks trained each
    delta = _max_delta(w1, w2)
    print(f"max |weight delta| 2 ranks vs 1: {delta:.3g}")
    assert delta < WEIGHT_TOL
    c1, c2 = rec1["metrics"]["clean"], rec2["metrics"]["clean"]
    for key in ("accuracy", "nll", "ece", "brier"):
        if key in c1:
            assert abs(c1[key] - c2[key]) < METRIC_TOL, (key, c1[key], c2[key])
    h1, h2 = rec1["training"]["history"]["train"], rec2["training"]["history"]["train"]
    assert [e["rows"] for e in h1] == [e["rows"] for e in h2]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2)) < METRIC_TOL


def test_shard_chunks_and_weights() -> None:
    x, y = torch.randn(7, 3, 4, 4), torch.arange(7).expand(2, 7)
    parts = [DistContext(rank=r, world_size=2).shard(x, y) for r in range(2)]
    assert [p[1].shape[-1] for p in parts] == [4, 3]
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert sum(p[2] for p in parts) == pytest.approx(2.0)  # weights average to 1 under DDP's mean
    mimo_x = torch.randn(3, 7, 3, 4, 4)  # [M, B, C, H, W]
    xs, ys, _ = DistContext(rank=1, world_size=2).shard(mimo_x, torch.zeros(3, 7, dtype=torch.long))
    assert xs.shape == (3, 3, 3, 4, 4) and ys.shape == (3, 3) and torch.equal(xs, mimo_x[:, 4:])
    with pytest.raises(ValueError, match="cannot shard"):
        DistContext(rank=0, world_size=2).shard(torch.randn(7, 5), y)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        DistContext(rank=2, world_size=2)


def test_sync_batchnorm_is_batchnorm_on_one_process() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    ref.load_state_dict(net.state_dict())
    assert convert_sync_batchnorm(net) == 1 and isinstance(net[1], SyncBatchNorm2d)
    assert set(net.state_dict()) == set(ref.state_dict())
    x = torch.randn(5, 3, 6, 6)
    assert torch.allclose(net(x), ref(x))  # no process group: plain BatchNorm


def test_from_environment_single_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("WORLD_SIZE", "RANK", "SLURM_NTASKS"):
        monkeypatch.delenv(k, raising=False)
    assert DistContext.from_environment() is None


def test_wrapping_gives_no_buffer_deprecation_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """DDP is given its current buffer-sync keyword: no FutureWarning about ``broadcast_buffers`` in every log."""
    import warnings

    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(_free_port()))
    for sync_bn in (True, False):
        dist = DistContext(rank=0, world_size=1, sync_bn=sync_bn)
        dist.init_process_group("gloo")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                dist.wrap(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
        finally:
            dist.close()
        assert not [w for w in caught if "broadcast_buffers" in str(w.message)], [str(w.message) for w in caught]


def _stopping_worker(rank: int, world: int, port: int, cfg: dict, root: str, stop_at: int) -> None:
    """A rank of a run stopped (rank 0's request, agreed by all) after ``stop_at`` stop checks."""
    from benchmark.core.runtime import StopFlag, StopRequested
    from tests.conftest import StopAfter

    dist = _join(rank, world, port)
    try:
        env = Environment(data_dir=f"{root}/data", cache_dir=f"{root}/cache-{rank}", results_dir=Path(root) / "runs",
                          checkpoint_dir=Path(root) / "ckpt", device="cpu", progress=False, log=lambda m: None, dist=dist,
                          stop=StopAfter(stop_at) if rank == 0 and stop_at >= 0 else StopFlag())
        try:
            run_experiment(cfg, env)
        except StopRequested:
            assert stop_at >= 0
    finally:
        dist.close()


@pytest.mark.timeout(240)
def test_data_parallel_resume_keeps_the_interrupted_epochs_history(data_root: Path, tiny_run_config: dict, tmp_path: Path) -> None:
    """2 ranks stopped mid-epoch, then resumed: the epoch's history entry covers the whole epoch
    (rows exact, loss within float reassociation of the uninterrupted 2-rank run)."""
    cfg = {**tiny_run_config, "train": {**tiny_run_config["train"], "batch_size": 12}}  # 5 steps per epoch
    runs = {}
    for name in ("straight", "stopped"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "data").symlink_to(data_root / "data")
    mp.spawn(_stopping_worker, args=(2, _free_port(), cfg, str(tmp_path / "straight"), 10**6), nprocs=2, join=True)
    mp.spawn(_stopping_worker, args=(2, _free_port(), cfg, str(tmp_path / "stopped"), 5 + 1 + 2), nprocs=2, join=True)  # epoch 2, step 3
    assert not list((tmp_path / "stopped" / "runs").rglob("*.json"))
    mp.spawn(_stopping_worker, args=(2, _free_port(), cfg, str(tmp_path / "stopped"), -1), nprocs=2, join=True)
    for name in ("straight", "stopped"):
        (path,) = list((tmp_path / name / "runs").rglob("*.json"))
        runs[name] = json.loads(path.read_text())
    h1, h2 = runs["straight"]["training"]["history"]["train"], runs["stopped"]["training"]["history"]["train"]
    assert [e["rows"] for e in h1] == [e["rows"] for e in h2] and len(h2) == 2
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(h1, h2)) < 1e-6
    assert runs["stopped"]["training"]["world_size"] == 2


# ---- ghost BatchNorm: the paper recipes' BatchNorm groups (train.bn_group) are the same on 1 and 2 ranks

GHOST_RECIPES = ("deterministic", "mimo", "batchensemble")  # UB's per-core BatchNorm: plain, repeated rows, tiled rows


def _ghost_recipe(name: str, **train: object) -> dict:
    """The paper suite's recipe ``name`` (its bn_group, method options, schedule, channels_last) on a
    ResNet-8 of width 4 in fp32, with a global batch of two BatchNorm groups: one step per epoch."""
    from benchmark.core import config as C

    cfg = C.suite_entry(f"paper:{name}")
    # crop_pad: the suite's 2 px unless the caller says otherwise (with 2 or 3 px, one ReLU input of this tiny network lies
    # within rounding of zero: see test_a_gradient_differs_between_summation_orders_only_where_a_relu_input_crosses_zero)
    cfg = C.merge(cfg, {"run": {"backbone": "resnet8", "dataset": "cifar10"}, "eval": {}, "train": {"epochs": 1, "precision": "fp32", **train}})
    cfg["backbone"] = {"width": 4}  # the WRN's own options (init, shortcut) are not the ResNet-8's
    cfg["method"] = {k: v for k, v in cfg.get("method", {}).items() if k != "sites"}  # nor are MC dropout's WRN sites
    return C.resolve(cfg)


def _ghost_step(name: str, dist: DistContext | None, **train: object) -> dict:
    """One training step (fit, one epoch of one batch) of recipe ``name``: its loss, gradients, and the
    weights and BatchNorm statistics after the step."""
    from benchmark.catalogue.methods import build_method
    from benchmark.core.config import train_config
    from benchmark.data.device import DeviceData
    from benchmark.training.train import fit, norm_groups

    resolved = _ghost_recipe(name, **train)
    method = build_method(resolved, num_classes=10, image_size=16)
    cfg = train_config(resolved)
    if "batch_size" not in train:
        cfg.batch_size = 2 * norm_groups(method, cfg)  # two groups: one per rank
    gen = torch.Generator().manual_seed(1)

    class Split:
        images = torch.randint(0, 256, (cfg.batch_size, 16, 16, 3), generator=gen, dtype=torch.uint8).numpy()
        labels = torch.randint(0, 10, (cfg.batch_size,), generator=gen).numpy()

    torch.manual_seed(0)
    model = method.build()
    history = fit(model, method, DeviceData(Split(), (0.5,) * 3, (0.25,) * 3), cfg, seed_parts=(0, "train"), progress=False,
                  log=lambda m: None, dist=dist)
    return {"loss": history[0]["loss"], "bn_group": cfg.bn_group, "batch": cfg.batch_size,
            "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
            "state": {k: v.clone() for k, v in model.state_dict().items()}}


def _ghost_worker(rank: int, world: int, port: int, out: str, sync_bn: bool, train: dict) -> None:
    dist = _join(rank, world, port, sync_bn)
    try:
        results = {name: _ghost_step(name, dist, **train) for name in GHOST_RECIPES}
        if dist.is_main:
            torch.save(results, out)
    finally:
        dist.close()


def _two_ranks(tmp_path: Path, sync_bn: bool = True, **train: object) -> dict:
    out = tmp_path / f"two-{sync_bn}-{len(train)}.pt"
    mp.spawn(_ghost_worker, args=(2, _free_port(), str(out), sync_bn, train), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


def _relu_inputs_and_grads(name: str, crop_pad: int, chunks: int) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """The first step of ``_ghost_step``'s recipe and batch in one process, its batch computed as one call or as
    ``chunks`` calls of one BatchNorm group each (the mean loss of the chunks: the same step, another summation order
    in the convolutions): every ReLU's input (concatenated over the chunks) and the gradients."""
    from benchmark.catalogue.methods import build_method
    from benchmark.core.config import train_config
    from benchmark.core.runtime import make_generator
    from benchmark.data.device import DeviceData
    from benchmark.methods.base import training_loss
    from benchmark.training.ghost_norm import apply_ghost_norm
    from benchmark.training.train import channels_last_hazard, norm_groups, to_channels_last

    resolved = _ghost_recipe(name, crop_pad=crop_pad)
    method = build_method(resolved, num_classes=10, image_size=16)
    cfg = train_config(resolved)
    group = norm_groups(method, cfg)
    cfg.batch_size = 2 * group
    gen = torch.Generator().manual_seed(1)

    class Split:
        images = torch.randint(0, 256, (cfg.batch_size, 16, 16, 3), generator=gen, dtype=torch.uint8).numpy()
        labels = torch.randint(0, 10, (cfg.batch_size,), generator=gen).numpy()

    data = DeviceData(Split(), (0.5,) * 3, (0.25,) * 3)
    torch.manual_seed(0)
    model = method.build()
    apply_ghost_norm(model, cfg.bn_group, method.norm_layout().blocks)
    layout = torch.contiguous_format if channels_last_hazard(model, "cpu") else torch.channels_last  # as fit decides
    if layout == torch.channels_last:
        to_channels_last(model)
    model.train()
    step = make_generator(data.device, 0, "train", "step", 0, 0)  # fit's first batch (seed_parts (0, "train"))
    x, y = data.train_batch(data.epoch_order(make_generator(data.device, 0, "train", "order", 0)), 0, cfg.batch_size, step, crop_pad=crop_pad)
    x = x.contiguous(memory_format=layout)
    seen: dict[str, list[torch.Tensor]] = {}
    hooks = [m.register_forward_pre_hook(lambda _m, i, n=n: seen.setdefault(n, []).append(i[0].detach().clone()))
             for n, m in model.named_modules() if isinstance(m, nn.ReLU)]
    for xs, ys in zip(x.chunk(chunks), y.chunk(chunks)):
        inputs, targets = method.training_batch(xs, ys, torch.Generator().manual_seed(0))
        (training_loss(method, model(inputs), targets) / chunks).backward()
    for h in hooks:
        h.remove()
    return [torch.cat(v) for v in seen.values()], {k: p.grad.clone() for k, p in model.named_parameters()}


@pytest.mark.parametrize("crop_pad", [1, 2, 3, 4])
def test_a_gradient_differs_between_summation_orders_only_where_a_relu_input_crosses_zero(crop_pad: int) -> None:
    """What was an open finding (1 vs 2 ranks differing by up to 3% of a tensor's largest gradient with 2 or 3 px
    crops and ghost BatchNorm groups), explained: the same step computed as one batch or as two chunks of one group
    each, in one process, differs exactly as much, and only when a ReLU input lies within rounding of zero and
    changes sign between the two summation orders (measured with 2 px crops: one of 32,768 inputs of a stage-3
    ReLU; its gradient passes in one computation and not in the other, 2.3% of that layer's largest bias
    gradient). The convolutions sum in another order for another number of rows or threads, as on 2 ranks, so
    this is float rounding at the ReLU kink, which a width-4 network at 16 px magnifies; not ghost BatchNorm or
    data parallelism. Which crops produce a crossing depends on the CPU's rounding: the test asserts the rule
    (no crossing, no difference), on whatever crops cross here."""
    whole_in, whole = _relu_inputs_and_grads("deterministic", crop_pad, 1)
    chunk_in, chunked = _relu_inputs_and_grads("deterministic", crop_pad, 2)
    crossings = sum(int(((a > 0) != (b > 0)).sum()) for a, b in zip(whole_in, chunk_in))
    worst = max(float((chunked[k] - g).abs().max() / g.abs().max().clamp_min(1e-12)) for k, g in whole.items())
    print(f"crop {crop_pad} px: {crossings} ReLU input(s) change sign, worst gradient delta {worst:.2g} of its tensor's max")
    if crossings == 0:
        assert worst < 1e-4, (crop_pad, worst)


@pytest.mark.timeout(240)
def test_ghost_batchnorm_step_is_the_same_on_one_and_two_ranks(tmp_path: Path) -> None:
    """The paper recipes' ghost BatchNorm (groups of 64 rows: UB's per-core batch): the loss, every
    gradient, the weights after the step and the running statistics of 2 gloo ranks equal 1 process's
    at the same global batch (MIMO and BatchEnsemble groups: 16 images repeated or tiled 4 times);
    plain data parallel (no ghost groups, no synchronised BatchNorm) does not."""
    two = _two_ranks(tmp_path, crop_pad=4)
    for name in GHOST_RECIPES:
        one = _ghost_step(name, None, crop_pad=4)
        assert one["bn_group"] == 64 and one["batch"] == (128 if name == "deterministic" else 32), (name, one["batch"])
        assert abs(one["loss"] - two[name]["loss"]) < 1e-5, (name, one["loss"], two[name]["loss"])
        assert set(one["grads"]) == set(two[name]["grads"])
        # float reassociation only: every gradient within 1e-4 of its tensor's largest entry (measured: <= 2.1e-5)
        worst = max(float((two[name]["grads"][k] - g).abs().max() / g.abs().max().clamp_min(1e-12)) for k, g in one["grads"].items())
        print(f"{name}: loss {one['loss']:.6f} vs {two[name]['loss']:.6f}, worst gradient delta {worst:.2g} of its tensor's max")
        assert worst < 1e-4, (name, worst)
        assert _max_delta(one["state"], two[name]["state"]) < 1e-5, name  # weights and BatchNorm running statistics
    # the controls, deterministic recipe at batch 128: whole-batch BatchNorm on one process differs from the
    # groups of 64; plain data parallel (each rank normalising its own half) equals the groups on 2 ranks,
    # so without groups the step depends on the number of processes
    ghost = _ghost_step("deterministic", None)
    whole = _ghost_step("deterministic", None, bn_group=0, batch_size=128)
    plain = _two_ranks(tmp_path, sync_bn=False, bn_group=0, batch_size=128)["deterministic"]
    print(f"deterministic, batch 128: groups of 64 {ghost['loss']:.6f}, whole batch {whole['loss']:.6f}, plain 2 ranks {plain['loss']:.6f}")
    assert abs(whole["loss"] - ghost["loss"]) > 1e-4 and abs(plain["loss"] - ghost["loss"]) < 1e-5

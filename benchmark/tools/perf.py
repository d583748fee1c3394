"""Performance measurements: ``python -m benchmark perf`` (``make perf``) writes a record and a table.

Measured in one process, interleaved across methods, median of ``repeats`` with min/max:
- training step time of each method relative to the deterministic model (same backbone, same
  batch of unique images); the deep ensemble trains M deterministic members, so its training cost
  is M x deterministic by construction and is not re-measured;
- test-time ms per example at batch 1 and at a large batch, relative to deterministic;
- the training step's achieved FLOP/s against this machine's measured matrix-multiply FLOP/s;
- the data path's share of a training step (batch formation: gather, crop, flip, normalise);
- evaluation rate on memory-mapped corrupted data against clean data held in memory;
- corruption generation throughput.

Timings are figures of a benchmark script, never assertions in a unit test.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ..core.io import atomic_write_json, atomic_write_text
from ..core.runtime import autocast, make_generator
from ..data.base import Split
from ..data.datasets.cifar import CIFAR_MEAN, CIFAR_STD
from ..data.device import DeviceData
from ..evaluation.cost import latency_ms_per_example
from ..evaluation.evaluate import evaluate
from ..methods.base import Task, ensemble_loss
from ..catalogue.methods import get_method, method_names
from ..records import provenance, utc_now
from ..core.config import TrainConfig
from ..training.ghost_norm import apply_ghost_norm, grouped_training_batch
from ..training.train import channels_last_hazard, norm_groups, to_channels_last
from baselines.layers import grouped_kernels

# Extra training-step rows: (method, options). MIMO at batch repetition 1 processes the same rows
# per step as the deterministic model: the "for free" comparison; its default repetition (4)
# processes 4x the rows by design.
STEP_VARIANTS = {"mimo rep=1": ("mimo", {"batch_repetition": 1}), "packed gamma=1": ("packed", {"gamma": 1})}  # the quick suite's settings

TRAIN_SKIP = {"deep_ensemble": "M x deterministic by construction (members are trained as deterministic runs)"}


def _spread(times: list[float]) -> dict[str, float]:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_data(n: int, size: int = 32, classes: int = 10, seed: int = 0) -> Split:
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, classes, n))


class StepBench:
    """One method's training step on a fixed batch of unique images (model, optimizer, inputs ready);
    ``bn_group``: ghost BatchNorm's rows per group, as ``train.bn_group`` (0: the whole batch);
    ``compile_backend``: torch.compile's backend with ``compile`` (tests pass a cheap one)."""

    def __init__(self, name: str, task: Task, data: DeviceData, batch: int, precision: str, channels_last: bool, options: dict | None = None,
                 compile: bool = False, bn_group: int = 0, compile_backend: str = "inductor") -> None:
        self.name = name
        self.method = get_method(name).from_config(dict(options or {}), task)
        self.model = self.method.build().to(data.device)
        self.images_per_group = norm_groups(self.method, TrainConfig(batch_size=batch, bn_group=bn_group))
        if self.images_per_group:
            apply_ghost_norm(self.model, bn_group, self.method.norm_layout().blocks)
        channels_last = channels_last and not channels_last_hazard(self.model, data.device)  # as fit decides
        if channels_last:
            to_channels_last(self.model)
        self.forward = torch.compile(self.model, backend=compile_backend) if compile else self.model
        self.opt = torch.optim.SGD(self.method.param_groups(self.model, 5e-4), lr=0.01, momentum=0.9, nesterov=True)
        self.data, self.batch, self.precision, self.channels_last = data, batch, precision, channels_last
        self.order = data.epoch_order(make_generator(data.device, "perf"))
        self.step_i = 0

    def batch_inputs(self) -> tuple[Any, torch.Tensor]:
        gen = make_generator(self.data.device, "perf", self.step_i)
        steps = self.data.steps_per_epoch(self.batch)
        x, y = self.data.train_batch(self.order, self.step_i % steps, self.batch, gen)
        x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()
        self.step_i += 1
        return grouped_training_batch(self.method, x, y, gen, self.images_per_group)

    def step(self, inputs: Any = None, targets: torch.Tensor | None = None) -> None:
        """One optimisation step; forms the batch (data path + the method's member inputs) unless given."""
        self.model.train()
        if inputs is None:
            inputs, targets = self.batch_inputs()
        with autocast(self.precision, self.data.device):
            logits = self.forward(inputs)
        loss = ensemble_loss(logits, targets)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def step_flops(self) -> int:
        """FLOPs of one training step as the method defines it (grouped convolutions counted grouped,
        not as the block-diagonal dense form they train in on the CPU)."""
        counter = FlopCounterMode(display=False)
        with counter, grouped_kernels():
            self.step()
        return int(counter.get_total_flops())


class LoopedMembers(torch.nn.Module):
    """M member networks run one after another (``[1, B, K]`` each): the baseline of a one-pass ensemble."""

    def __init__(self, members: list[torch.nn.Module]) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.members])


def time_call(fn: Callable[[], None], device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def matmul_flops_per_second(device: torch.device, precision: str, n: int = 2048, repeats: int = 5) -> dict[str, float]:
    """This machine's dense matrix-multiply rate (FLOP/s) at ``precision``: the ceiling to compare with."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = [time_call(lambda: a @ b, device) for _ in range(repeats)]
    return {"n": n, "dtype": str(dtype), "flops_per_second": 2 * n**3 / statistics.median(times)}


def measure_methods(methods: list[str], backbone: str, backbone_options: dict, batch: int, precision: str, channels_last: bool,
                    device: torch.device, repeats: int, large_batch: int, log: Callable[[str], None], compile: bool = False) -> dict[str, Any]:
    task = Task(num_classes=10, backbone=backbone, backbone_options=backbone_options)
    data = DeviceData(synthetic_data(max(4 * batch, 1024)), CIFAR_MEAN, CIFAR_STD, device)
    benches = {m: StepBench(m, task, data, batch, precision, channels_last, compile=compile) for m in methods if m not in TRAIN_SKIP}
    for label, (name, options) in STEP_VARIANTS.items():
        if name in methods:
            benches[label] = StepBench(name, task, data, batch, precision, channels_last, options, compile=compile)
    first_step = {}
    for name, b in benches.items():  # warm-up (with --compile, the first step compiles)
        first_step[name] = time_call(b.step, device)
        b.step()
    step_times: dict[str, list[float]] = {m: [] for m in benches}
    data_times: list[float] = []
    for _ in range(repeats):  # interleaved
        for name, b in benches.items():
            step_times[name].append(time_call(b.step, device))
        det = benches.get("deterministic")
        if det is not None:
            data_times.append(time_call(det.batch_inputs, device))
    out: dict[str, Any] = {"train_step": {}, "inference": {}}
    det_step = statistics.median(step_times["deterministic"])
    for name, b in benches.items():
        s = _spread(step_times[name])
        flops = b.step_flops()
        out["train_step"][name] = {"seconds": s, "ratio_to_deterministic": s["median"] / det_step,
                                   "ratio_min": s["min"] / det_step, "ratio_max": s["max"] / det_step,
                                   "rows_per_unique_image": b.method.rows_per_example(), "flops_per_step": flops,
                                   "first_step_seconds": first_step[name],
                                   "achieved_flops_per_second": flops / s["median"]}
        log(f"train step {name:14s} {s['median'] * 1000:8.1f} ms  x{s['median'] / det_step:.3f} of deterministic")
    for name in TRAIN_SKIP:
        if name in methods:
            out["train_step"][name] = {"note": TRAIN_SKIP[name]}
    if data_times:
        share = statistics.median(data_times) / det_step
        out["data_path"] = {"seconds": _spread(data_times), "share_of_step": share}
        log(f"data path: {share * 100:.2f}% of a deterministic training step")
    # inference, interleaved per batch size
    example = next(data.eval_batches(1))[0]
    nets = {}
    for name in methods:
        method = get_method(name).from_config({}, task)
        model = benches[name].model if name in benches else method.build().to(device)
        if channels_last:  # as the harness's evaluation does (StepBench models are converted already)
            to_channels_last(model)
        for variant, net, passes, _ in method.eval_variants(model):
            nets[f"{name}" + (f" {variant}" if variant else "")] = (net.eval(), passes)
    if "deep_ensemble" in methods:  # the one-pass (grouped) evaluation against running the members one after another
        de = get_method("deep_ensemble").from_config({}, task)
        looped = LoopedMembers([de.member().build().to(device) for _ in range(de.members)])
        if channels_last:
            to_channels_last(looped)
        nets[f"deep_ensemble M={de.members} looped"] = (looped.eval(), de.members)
    for bs in (1, large_batch):
        per: dict[str, list[float]] = {k: [] for k in nets}
        for _ in range(repeats):
            for key, (net, _) in nets.items():
                per[key].append(latency_ms_per_example(net, example, bs, repeats=1, warmup=0, precision=precision, channels_last=channels_last)["median"])
        base = statistics.median(per["deterministic"])
        for key, ts in per.items():
            s = _spread(ts)
            out["inference"].setdefault(key, {})[f"batch_{bs}"] = {"ms_per_example": s, "ratio_to_deterministic": s["median"] / base,
                                                                   "forward_passes": nets[key][1]}
            log(f"inference b={bs:<4d} {key:18s} {s['median']:.4f} ms/example  x{s['median'] / base:.3f}")
    return out


def measure_corrupted_rate(backbone: str, backbone_options: dict, precision: str, channels_last: bool, device: torch.device,
                           n: int, repeats: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Evaluation images/s on a memory-mapped corrupted set (loaded per set, as the harness does) vs clean data in memory."""
    from ..corruptions.generate import generate_cifar_c
    from ..data.corrupted.cifar_c import load_cifar_c

    task = Task(num_classes=10, backbone=backbone, backbone_options=backbone_options)
    model = get_method("deterministic").from_config({}, task).build().to(device).eval()
    if channels_last:
        to_channels_last(model)
    split = synthetic_data(n)
    clean = DeviceData(split, CIFAR_MEAN, CIFAR_STD, device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = generate_cifar_c(split.images, split.labels, Path(tmp), corruptions=("brightness",), severities=(1,), progress=False)

        def corrupted() -> None:
            images, labels = load_cifar_c(folder, "brightness", 1)
            evaluate(model, DeviceData(Split(images, np.asarray(labels)), CIFAR_MEAN, CIFAR_STD, device), 1000, precision, channels_last, progress=False)

        def in_memory() -> None:
            evaluate(model, clean, 1000, precision, channels_last, progress=False)

        in_memory(), corrupted()
        t_clean, t_cor = [], []
        for _ in range(repeats):
            t_clean.append(time_call(in_memory, device))
            t_cor.append(time_call(corrupted, device))
    ratio = statistics.median(t_clean) / statistics.median(t_cor)
    log(f"corrupted-set evaluation rate: {ratio:.3f} of the clean in-memory rate ({n / statistics.median(t_clean):.0f} img/s clean)")
    return {"images": n, "clean_seconds": _spread(t_clean), "corrupted_seconds": _spread(t_cor), "rate_ratio": ratio,
            "clean_images_per_second": n / statistics.median(t_clean), "corrupted_images_per_second": n / statistics.median(t_cor)}


def measure_generation(n: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Seconds to generate all 19 corruptions x 5 severities for ``n`` 32x32 images."""
    from ..corruptions import ALL_CORRUPTIONS
    from ..corruptions.generate import generate_cifar_c

    split = synthetic_data(n)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_cifar_c(split.images, split.labels, Path(tmp), progress=False)
        seconds = time.perf_counter() - t0
    ms = seconds * 1000 / n / 5
    log(f"corruption generation: {seconds:.1f}s for {n} images x 19 corruptions x 5 severities ({ms:.3f} ms per image per pass over the 19)")
    return {"images": n, "corruptions": len(ALL_CORRUPTIONS), "severities": 5, "seconds": seconds, "ms_per_image_per_pass": ms}


class PeerBench:
    """A torch-uncertainty model's training step on the same rows as ours (their input conventions:
    MIMO takes the M member inputs stacked along the batch, BatchEnsemble the batch tiled M times)."""

    def __init__(self, model: torch.nn.Module, rows: int, device: torch.device, precision: str, channels_last: bool) -> None:
        self.model = model.to(device)
        channels_last = channels_last and not channels_last_hazard(self.model, device)  # as fit decides
        if channels_last:
            to_channels_last(self.model)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        x = torch.randn(rows, 3, 32, 32, device=device)
        self.x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        self.y = torch.randint(0, 10, (rows,), device=device)
        self.precision, self.device = precision, device

    def step(self) -> None:
        self.model.train()
        with autocast(self.precision, self.device):
            logits = self.model(self.x)
        loss = torch.nn.functional.cross_entropy(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


PEER_METHODS = ("mimo", "batchensemble")
PEER_SETTINGS = {
    "own": "each side at its own defaults: ours at the run's layout (the CPU suites' channels-last with --channels-last), "
           "torch.compile where asked (--peer-compile); torch-uncertainty eager in the default memory layout (its models and "
           "training routine set neither)",
    "equal": "both sides at equal settings: eager, the run's layout (channels-last with --channels-last)",
}


def measure_peers(batch: int, precision: str, channels_last: bool, device: torch.device, repeats: int, log: Callable[[str], None],
                  *, compile: tuple[str, ...] | list[str] | set[str] = (), settings: tuple[str, ...] = ("own", "equal")) -> dict[str, Any]:
    """Our MIMO (M=3, batch repetition 4) and BatchEnsemble (M=4) ResNet-18 training steps against
    torch-uncertainty's (``pip install 'plures[peers]'``), interleaved; ratio = ours / theirs.

    ``settings`` (:data:`PEER_SETTINGS`): ``own``, each side at its own defaults (ours at ``channels_last`` and
    compiled for the methods in ``compile``; theirs eager, default layout); ``equal``, both eager at ``channels_last``.
    ``out["settings"][setting][method]`` holds each comparison; ``out[method]`` repeats the first setting's (as before)."""
    try:
        import torch_uncertainty
        from torch_uncertainty.models.classification import batched_resnet, mimo_resnet
    except Exception as exc:  # noqa: BLE001 - absent, or broken by its own dependencies
        log(f"peer comparison skipped: torch-uncertainty not importable ({type(exc).__name__}: {exc}); pip install 'plures[peers]'")
        return {"skipped": f"torch-uncertainty not importable: {type(exc).__name__}: {exc}"}
    unknown = sorted(set(compile) - set(PEER_METHODS)) + sorted(set(settings) - set(PEER_SETTINGS))
    if unknown:
        raise ValueError(f"unknown peer method(s) or setting(s) {unknown}; valid: methods {', '.join(PEER_METHODS)}, settings {', '.join(PEER_SETTINGS)}")
    task = Task(num_classes=10, backbone="resnet18")
    data = DeviceData(synthetic_data(max(4 * batch, 1024)), CIFAR_MEAN, CIFAR_STD, device)
    options = {"mimo": {"members": 3, "batch_repetition": 4}, "batchensemble": {"members": 4}}
    peer_models = {"mimo": (lambda: mimo_resnet(in_channels=3, num_classes=10, arch=18, num_estimators=3, style="cifar"), 3 * 4 * batch),
                   "batchensemble": (lambda: batched_resnet(in_channels=3, num_classes=10, arch=18, num_estimators=4, style="cifar"), 4 * batch)}
    layouts = {"own": ({"channels_last": channels_last}, {"channels_last": False}), "equal": ({"channels_last": channels_last}, {"channels_last": channels_last})}
    sides: dict[str, dict[str, dict[str, Any]]] = {}
    benches: dict[str, Callable[[], None]] = {}
    for setting in settings:
        ours_cl, theirs_cl = layouts[setting][0]["channels_last"], layouts[setting][1]["channels_last"]
        sides[setting] = {}
        for name in PEER_METHODS:
            compiled = setting == "own" and name in compile
            ours = StepBench(name, task, data, batch, precision, ours_cl, options[name], compile=compiled)
            build, rows = peer_models[name]
            theirs = PeerBench(build(), rows, device, precision, theirs_cl)
            formed = ours.batch_inputs()  # both sides step on an already formed batch: the peers' data pipeline is not part of their model
            benches[f"{setting} ours {name}"] = lambda b=ours, f=formed: b.step(*f)
            benches[f"{setting} theirs {name}"] = theirs.step
            sides[setting][name] = {"ours": {"channels_last": ours_cl, "compile": compiled}, "theirs": {"channels_last": theirs_cl, "compile": False}}
    first: dict[str, float] = {}
    for key, fn in benches.items():  # warm-up (a compiled step compiles in its first call)
        first[key] = time_call(fn, device)
        fn()
    times: dict[str, list[float]] = {k: [] for k in benches}
    for _ in range(repeats):
        for key, fn in benches.items():
            times[key].append(time_call(fn, device))
    out: dict[str, Any] = {"torch_uncertainty": getattr(torch_uncertainty, "__version__", "unknown"), "backbone": "resnet18 (CIFAR stem)", "batch": batch,
                           "precision": precision, "settings": {}, "setting_notes": {s: PEER_SETTINGS[s] for s in settings}}
    for setting in settings:
        out["settings"][setting] = {}
        for name in PEER_METHODS:
            ours_t, theirs_t = times[f"{setting} ours {name}"], times[f"{setting} theirs {name}"]
            a, b = statistics.median(ours_t), statistics.median(theirs_t)
            out["settings"][setting][name] = {**sides[setting][name], "ours_seconds": _spread(ours_t), "theirs_seconds": _spread(theirs_t),
                                              "ours_first_step_seconds": first[f"{setting} ours {name}"],
                                              "theirs_first_step_seconds": first[f"{setting} theirs {name}"], "ours_over_theirs": a / b}
            log(f"peer {name} ({setting}): ours {a * 1000:.1f} ms / torch-uncertainty {b * 1000:.1f} ms = {a / b:.3f}")
    out.update(out["settings"][settings[0]])
    return out


def render_table(result: dict[str, Any]) -> str:
    """The perf record as a Markdown table (rounding only here)."""
    lines = [f"# Performance ({result['device']}, {result['provenance']['device_name']}, torch {result['provenance']['torch']})", "",
             f"Backbone {result['backbone']}, batch {result['batch']} unique images, precision {result['precision']}, "
             f"channels_last {result['channels_last']}, torch.compile {result.get('compile', False)}, host allocator "
             f"{'tuned' if result['provenance'].get('host_allocator', {}).get('tuned') else 'default'}; median of {result['repeats']} interleaved repeats [min-max]. Generated {result['created']}.", "",
             "| method | train step ms | x deterministic [min-max] | rows/image | inference b=1 x det | inference b=large x det | achieved GFLOP/s |",
             "|---|---|---|---|---|---|---|"]
    m = result["methods"]
    for name, t in m["train_step"].items():
        if "note" in t:
            lines.append(f"| {name} | - | {t['note']} | - | - | - | - |")
            continue
        inf = next((v for k, v in m["inference"].items() if k.split(" ")[0] == name), {}) if " " not in name else {}
        b1 = inf.get("batch_1", {}).get("ratio_to_deterministic")
        bl = next((v["ratio_to_deterministic"] for k, v in inf.items() if k != "batch_1"), None)
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"| {name} | {t['seconds']['median'] * 1000:.1f} | {t['ratio_to_deterministic']:.3f} [{t['ratio_min']:.3f}-{t['ratio_max']:.3f}] | "
                     f"{t['rows_per_unique_image']:g} | {fmt(b1)} | {fmt(bl)} | {t['achieved_flops_per_second'] / 1e9:.1f} |")
    if result.get("compile"):
        lines += ["", "First training step (includes torch.compile's compilation): " + ", ".join(
            f"{k} {v['first_step_seconds']:.1f} s" for k, v in m["train_step"].items() if "first_step_seconds" in v) + "."]
    lines += ["", "| inference | forward passes | ms/example b=1 | x det | ms/example large batch | x det |", "|---|---|---|---|---|---|"]
    for key, v in m["inference"].items():
        large = next(k for k in v if k != "batch_1")
        lines.append(f"| {key} | {v['batch_1']['forward_passes']} | {v['batch_1']['ms_per_example']['median']:.4f} | {v['batch_1']['ratio_to_deterministic']:.3f} | "
                     f"{v[large]['ms_per_example']['median']:.4f} | {v[large]['ratio_to_deterministic']:.3f} |")
    mm = result["matmul"]
    lines += ["", f"- Machine matmul ceiling: {mm['flops_per_second'] / 1e9:.1f} GFLOP/s ({mm['dtype']}, n={mm['n']}); deterministic training step achieves "
              f"{m['train_step']['deterministic']['achieved_flops_per_second'] / mm['flops_per_second']:.3f} of it."]
    if "data_path" in m:
        lines.append(f"- Data path (gather, crop, flip, normalise on the device): {m['data_path']['share_of_step'] * 100:.2f}% of a deterministic training step.")
    if "corrupted_rate" in result:
        c = result["corrupted_rate"]
        lines.append(f"- Corrupted-set evaluation (memory-mapped) runs at {c['rate_ratio']:.3f} of the clean in-memory rate ({c['clean_images_per_second']:.0f} img/s clean).")
    peers = result.get("peers", {})
    if "skipped" in peers:
        lines.append(f"- Peer comparison skipped: {peers['skipped']}.")
    layout = lambda side: ("channels-last" if side["channels_last"] else "default layout") + (", compiled" if side["compile"] else ", eager")  # noqa: E731
    for setting, comparison in (peers.get("settings") or {"": {n: peers[n] for n in PEER_METHODS if n in peers}}).items():
        for name, p in comparison.items():
            where = f" at {setting} settings (ours {layout(p['ours'])}; theirs {layout(p['theirs'])})" if setting else ""
            lines.append(f"- torch-uncertainty {peers['torch_uncertainty']} {name} ResNet-18 training step, same rows{where}: ours / theirs = {p['ours_over_theirs']:.3f} "
                         f"({p['ours_seconds']['median'] * 1000:.1f} ms vs {p['theirs_seconds']['median'] * 1000:.1f} ms, batch {peers['batch']}).")
    if "generation" in result:
        g = result["generation"]
        lines.append(f"- Corruption generation: {g['seconds']:.1f} s for {g['images']} images x 19 corruptions x 5 severities = {g['ms_per_image_per_pass']:.3f} ms per image per pass.")
    return "\n".join(lines) + "\n"


def perf_result(device: torch.device, methods: list[str], backbone: str, backbone_options: dict, batch: int, precision: str,
                channels_last: bool, repeats: int, large_batch: int, log: Callable[[str], None], *, compile: bool = False,
                corrupted_images: int = 0, peers: bool = False, peer_batch: int = 32, peer_compile: tuple[str, ...] | None = None,
                generation_images: int = 0, matmul: dict[str, float] | None = None) -> dict[str, Any]:
    """One perf record (what ``main`` writes and ``render_table`` renders); ``matmul``: a ceiling
    measured elsewhere (e.g. at a size that fills a GPU), else measured here at n=2048; ``peer_compile``: which of our
    peer-comparison methods compile at their own settings (default: all of them with ``compile``, none without)."""
    result: dict[str, Any] = {"created": utc_now(), "device": str(device), "provenance": provenance(str(device)), "backbone": backbone,
                              "backbone_options": backbone_options, "batch": batch, "precision": precision, "channels_last": channels_last,
                              "repeats": repeats, "platform": platform.platform()}
    result["matmul"] = matmul or matmul_flops_per_second(device, precision)
    result["compile"] = compile
    result["methods"] = measure_methods(methods, backbone, backbone_options, batch, precision, channels_last, device, repeats, large_batch, log,
                                        compile=compile)
    if corrupted_images:
        result["corrupted_rate"] = measure_corrupted_rate(backbone, backbone_options, precision, channels_last, device, corrupted_images,
                                                          max(3, repeats // 2), log)
    if peers:
        peer_compile = PEER_METHODS if peer_compile is None and compile else tuple(peer_compile or ())
        result["peers"] = measure_peers(peer_batch, precision, channels_last, device, repeats, log, compile=peer_compile)
    if generation_images:
        result["generation"] = measure_generation(generation_images, log)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark perf", description=__doc__.split("\n")[0])
    p.add_argument("--methods", default="", help=f"comma-separated (default: all registered: {', '.join(method_names())})")
    p.add_argument("--backbone", default="resnet20")
    p.add_argument("--width", type=int, default=None, help="backbone width option, where it has one")
    p.add_argument("--batch", type=int, default=128, help="unique images per training step")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile each training forward (first_step_seconds then includes the compile time)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--large-batch", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--corrupted-images", type=int, default=5000, help="images for the corrupted-vs-clean evaluation rate (0: skip)")
    p.add_argument("--generation-images", type=int, default=1000, help="images for the generation throughput (0: skip)")
    p.add_argument("--peers", action="store_true", help="also compare with torch-uncertainty's MIMO and BatchEnsemble ResNet-18 (optional extra)")
    p.add_argument("--peer-batch", type=int, default=32, help="unique images per step in the peer comparison")
    p.add_argument("--peer-compile", default=None, help=f"comma-separated: which of our peer-comparison methods ({', '.join(PEER_METHODS)}) "
                   "torch.compile at their own settings (default: all with --compile, none without; '' for none)")
    p.add_argument("--out", type=Path, default=Path("results/perf"))
    p.add_argument("--name", default=None, help="output file stem (default perf-<device>-<backbone>-<precision>[-cl][-compiled][-system-alloc])")
    args = p.parse_args(argv)
    from ..core.allocator import tune_host_allocator
    from ..core.runtime import select_device

    allocator = tune_host_allocator()  # as every run does (PLURES_HOST_ALLOCATOR=system measures glibc's defaults)
    device = select_device(args.device)
    methods = [m for m in args.methods.split(",") if m] or method_names()
    if "deterministic" not in methods:
        methods.insert(0, "deterministic")
    unknown = sorted(set(methods) - set(method_names()))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; valid choices: {', '.join(method_names())}")
    opts = {"width": args.width} if args.width else {}
    log = lambda m: print(m, flush=True)  # noqa: E731
    result = perf_result(device, methods, args.backbone, opts, args.batch, args.precision, args.channels_last, args.repeats, args.large_batch,
                         log, compile=args.compile, corrupted_images=args.corrupted_images, peers=args.peers, peer_batch=args.peer_batch,
                         peer_compile=None if args.peer_compile is None else tuple(m for m in args.peer_compile.split(",") if m), generation_images=args.generation_images)
    tag = f"{device.type}-{args.backbone}-{args.precision}" + ("-cl" if args.channels_last else "") + ("-compiled" if args.compile else "") + ("-system-alloc" if allocator["requested"] == "system" else "")
    stem = args.name or f"perf-{tag}"
    atomic_write_json(args.out / f"{stem}.json", result)
    table = render_table(result)
    atomic_write_text(args.out / f"{stem}.md", table)
    print(table)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

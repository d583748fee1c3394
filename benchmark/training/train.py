"""Training: train_one_epoch and fit (with checkpoints and resume).

Randomness is derived from (seed, stage, epoch, step), never carried along: the shuffle of an
epoch, the augmentation and method-specific sampling of a step, and the global RNG (dropout)
are all re-seeded per step. A run resumed from any checkpoint therefore replays exactly what
an uninterrupted run does (on the CPU).

A checkpoint is written atomically after every epoch (and, when a stop is requested by
SIGINT/SIGTERM or a preemption signal, after the current step); ``resume`` continues from it.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..core.config import TrainConfig
from ..core.io import atomic_write
from ..core.progress import progress_bar
from ..core.runtime import StopFlag, StopRequested, autocast, hash_seed, make_generator
from ..data.device import DeviceData
from ..methods.base import Method, training_loss
from .ghost_norm import apply_ghost_norm, average_running_stats, grouped_training_batch, remove_ghost_norm


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def optimizer_groups(method: Method, model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The method's parameter groups (:meth:`Method.param_groups` at ``cfg.weight_decay``); with
    ``cfg.norm_weight_decay`` set, the scales and offsets of normalisation layers (BatchNorm,
    InstanceNorm, GroupNorm, LayerNorm) move to groups of their own with that weight decay
    (``0.0``: L2 on kernels and biases only, as uncertainty-baselines' ImageNet scripts)."""
    groups = method.param_groups(model, cfg.weight_decay)
    if cfg.norm_weight_decay is None:
        return groups
    norm = {id(p) for m in model.modules() if isinstance(m, NORM_TYPES) for p in m.parameters(recurse=False)}
    out = []
    for group in groups:
        rest = [p for p in group["params"] if id(p) not in norm]
        normed = [p for p in group["params"] if id(p) in norm]
        out += [{**group, "params": rest}] if rest else []
        out += [{**group, "params": normed, "weight_decay": float(cfg.norm_weight_decay)}] if normed else []
    return out


def cycle_starts(cfg: TrainConfig, steps_per_epoch: int) -> list[int]:
    """The steps at which the ``cyclic_cosine`` schedule (re)starts a cycle: the end of the warm-up,
    then every milestone (epochs, rounded to a step) inside the training; sorted, without repeats."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    first = math.ceil(warm) if warm > 0 else 0
    restarts = {round(m * steps_per_epoch) for m in cfg.milestones}
    return [first, *sorted(s for s in restarts if first < s < total)]


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation ``step``: linear warm-up, then cosine/linear/step decay,
    or (``cyclic_cosine``) a cosine decay restarted at every milestone."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if warm > 0 and step < warm:
        return (step + 1) / warm
    floor = cfg.final_lr_fraction
    if cfg.schedule == "cyclic_cosine":  # Huang et al. 2017: lr0/2 (cos(pi mod(t-1, L) / L) + 1) for equal cycles of L steps
        starts = cycle_starts(cfg, steps_per_epoch)
        start = max(s for s in starts if s <= step) if step >= starts[0] else starts[0]
        end = next((s for s in starts if s > start), total)
        progress = (step - start) / max(1, end - start)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "cosine":
        progress = (step - warm) / max(1.0, total - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "linear":
        progress = (step - warm) / max(1.0, total - warm)
        return floor + (1 - floor) * max(0.0, 1 - progress)
    epoch = step / steps_per_epoch
    return cfg.gamma ** sum(epoch >= m for m in cfg.milestones)


# ---------------------------------------------------------------------------------------------
# Checkpoints


def channels_last_hazard(model: nn.Module, device: torch.device | str) -> str | None:
    """Why channels-last training would crash here, else None. oneDNN's AVX2 kernel for the weight gradient of a
    strided 1x1 convolution corrupts the heap in channels-last layout when its input channels per group are not a
    multiple of 8 (torch 2.14.1, oneDNN 3.12: a 4 -> 8 channel shortcut of stride 2 aborts or segfaults on an
    AVX2-only CPU with one thread, within a few steps; 8 channels and more, stride 1, or the default layout do
    not); the CPU suites' networks start at width 8, the tests' at 4."""
    if torch.device(device).type != "cpu":
        return None
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001  (an older torch or a non-x86 build)
        return None
    if isa != "AVX2":
        return None
    def pair(v: Any) -> tuple:
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

    for name, m in model.named_modules():  # nn.Conv2d and the methods' own convolutions (kernel_size, stride, in_channels)
        kernel, stride, cin = getattr(m, "kernel_size", None), getattr(m, "stride", None), getattr(m, "in_channels", None)
        if kernel is None or stride is None or not isinstance(cin, int):
            continue
        per_group = cin // int(getattr(m, "groups", 1) or 1)
        if pair(kernel) == (1, 1) and pair(stride) != (1, 1) and per_group % 8:
            return (f"{name or 'the model'} is a 1x1 convolution of stride {pair(stride)[0]} on {per_group} input channels "
                    f"per group, whose channels-last weight gradient corrupts memory in oneDNN's AVX2 kernel")
    return None


def to_channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter and buffer of ``model`` in channels-last layout, in place; other ranks as they are.

    ``model.to(memory_format=torch.channels_last)`` raises on 5-D tensors (e.g. the member-stacked
    convolution weights of a ``StackedEnsemble``); this converts what can be converted.
    """
    return model._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


COMPILE_ENV = "PLURES_COMPILE"
COMPILE_OFF = ("0", "off", "false", "no")
COMPILE_AS_CONFIGURED = ("", "1", "on", "true", "yes")


def compile_override() -> str | None:
    """What ``PLURES_COMPILE`` says about ``train.compile = true``: None (unset, or 1/on/true/yes) compiles as
    configured; 0/off/false/no trains eagerly, and the returned note says so in the epoch's history. Compilation
    is an execution setting (not part of a run's id); the switch is for machines where it does not pay or cannot
    run, and for the tests, whose tiny runs would spend their time compiling. Another value is a ValueError
    naming it and the valid choices."""
    raw = os.environ.get(COMPILE_ENV, "")
    value = raw.strip().lower()
    if value in COMPILE_AS_CONFIGURED:
        return None
    if value in COMPILE_OFF:
        return f"eager: {COMPILE_ENV}={raw} (train.compile = true)"
    raise ValueError(f"{COMPILE_ENV}={raw!r} is not a valid choice; use one of {', '.join(COMPILE_OFF)} (train eagerly) "
                     f"or {', '.join(c for c in COMPILE_AS_CONFIGURED if c)} (compile where train.compile = true)")


class CompiledNet:
    """``net`` through ``torch.compile`` (inductor on the CPU), falling back to ``net`` itself when compilation
    fails: no C++ compiler, an operator the backend cannot lower, a torch build without inductor.

    Compilation happens at the first call (the forward graph) and at the first backward (the backward graph);
    the training loop runs the first step's forward and backward under :meth:`fall_back`'s guard and repeats the
    step eagerly when either fails, so a failed compilation costs its own time and nothing else. ``note``
    says what happened (the epoch's history carries it). ``backend``: torch.compile's (tests pass one that fails).
    """

    def __init__(self, net: nn.Module, backend: Any = "inductor") -> None:
        self.eager = net
        self.compiled = torch.compile(net, backend=backend)
        self.failed: str | None = None

    def __call__(self, x: Any) -> torch.Tensor:
        return (self.eager if self.failed is not None else self.compiled)(x)

    def train(self, mode: bool = True) -> "CompiledNet":
        self.eager.train(mode)
        return self

    @property
    def note(self) -> str:
        return f"torch.compile failed, trained eagerly: {self.failed}" if self.failed is not None else "compiled"

    def fall_back(self, exc: BaseException) -> bool:
        """After ``exc`` in a compiled step: switch to eager and return True (repeat the step); False when already
        eager (``exc`` is the step's own error)."""
        if self.failed is not None or not isinstance(exc, Exception):
            return False
        def line(e: BaseException) -> str:
            text = str(e).strip().splitlines()
            return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")

        root = exc  # the underlying error (dynamo wraps the backend's in BackendCompilerFailed.inner_exception)
        for _ in range(8):
            inner = getattr(root, "inner_exception", None) or root.__cause__
            if not isinstance(inner, BaseException) or inner is root:
                break
            root = inner
        self.failed = line(exc) + (f" ({line(root)})" if root is not exc else "")
        return True


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: the previous checkpoint survives a crash."""
    atomic_write(path, lambda fh: torch.save(state, fh))


def load_checkpoint(path: Path, device: torch.device) -> dict[str, Any]:
    return torch.load(path, map_location=device, weights_only=False)


# ---------------------------------------------------------------------------------------------
# The loop


@dataclass
class EpochStats:
    epoch: int
    loss: float
    seconds: float
    lr: float
    rows: int
    first_step_seconds: float = 0.0  # includes torch.compile's compilation in a compiled run's first epoch
    members: int = 1  # M of the trained logits [M, B, K] (for the log; not part of the history)
    compile: str = ""  # with train.compile: "compiled", or why it fell back to eager (history: only when set)


@dataclass
class PartialEpoch:
    """The running sums of an epoch stopped after ``step`` steps, carried in its checkpoint so that the
    resumed epoch's history entry covers the whole epoch, as an uninterrupted run's does.
    ``loss_sum`` is the summed loss tensor (averaged over data-parallel ranks), added to exactly as
    the uninterrupted loop adds to it."""

    step: int
    loss_sum: torch.Tensor
    rows: int
    seconds: float
    first_step_seconds: float

    def state(self) -> dict[str, Any]:
        return {"step": self.step, "loss_sum": self.loss_sum.detach().clone(), "rows": self.rows, "seconds": self.seconds,
                "first_step_seconds": self.first_step_seconds}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None, step: int, device: torch.device) -> "PartialEpoch | None":
        """The partial sums a checkpoint carries for its ``step`` (None: none, or another step's)."""
        if not state or int(state.get("step", -1)) != step:
            return None
        return cls(step, torch.as_tensor(state["loss_sum"]).to(device), int(state["rows"]), float(state["seconds"]), float(state["first_step_seconds"]))


def loss_text(loss: float, members: int, digits: int = 4) -> str:
    """The training loss as the log shows it: the shared loss sums the members' cross-entropies, so an
    ensemble's is shown per member and labelled (``loss/member 1.9812 (M=3)``); one member: ``loss 1.9812``."""
    if members > 1:
        return f"loss/member {loss / members:.{digits}f} (M={members})"
    return f"loss {loss:.{digits}f}"


def history_entry(stats: EpochStats) -> dict[str, Any]:
    """One epoch of the record's history (the summed loss as always; ``members`` is the log's only)."""
    entry = asdict(stats)
    entry.pop("members")
    if not entry["compile"]:
        entry.pop("compile")
    return entry


def train_one_epoch(
    model: nn.Module,
    method: Method,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: DeviceData,
    cfg: TrainConfig,
    *,
    seed_parts: tuple,
    epoch: int,
    start_step: int = 0,
    stop: StopFlag | None = None,
    on_stop: Callable[[int, "PartialEpoch"], None] | None = None,
    progress: bool = True,
    desc: str = "",
    dist: Any = None,
    curves: Callable[[str, float, int], None] | None = None,
    partial: PartialEpoch | None = None,
    images_per_group: int | None = None,
) -> EpochStats:
    """One epoch from ``start_step``; returns the mean loss over the steps run.

    ``partial``: the sums of the epoch's first ``start_step`` steps (from a checkpoint written by a
    stop, see ``on_stop``); with them the loss, rows and seconds cover the whole epoch.
    ``on_stop(step, partial)`` is called when a stop is requested mid-epoch, with the sums so far.
    ``dist`` (a ``benchmark.training.distributed.DistContext``): train on this rank's chunk of each batch.
    ``curves(tag, value, global_step)`` receives the loss per member wherever it is read anyway (the NaN checks).
    ``images_per_group``: ghost BatchNorm's images per group (:func:`norm_groups`); the training batch is then
    formed group by group.
    """
    device = data.device
    model.train()
    steps = data.steps_per_epoch(cfg.batch_size)
    order = data.epoch_order(make_generator(device, *seed_parts, "order", epoch))
    if partial is not None and partial.step != start_step:
        partial = None
    # one process continues the carried sum (the same additions as uninterrupted); data parallel
    # sums this rank's steps from zero and adds the carried ranks' average to their average
    carried = partial.loss_sum if partial is not None and dist is not None else None
    loss_sum = partial.loss_sum.clone() if partial is not None and dist is None else torch.zeros((), device=device)
    rows = partial.rows if partial is not None else 0
    members = 1
    t0 = time.perf_counter()
    first_step = partial.first_step_seconds if partial is not None else 0.0
    earlier_seconds = partial.seconds if partial is not None else 0.0
    bar = progress_bar(range(start_step, steps), desc=desc, unit="step", enable=progress, total=steps - start_step)
    for step in bar:
        torch.manual_seed(hash_seed(*seed_parts, "global", epoch, step))
        gen = make_generator(device, *seed_parts, "step", epoch, step)
        x, y = data.train_batch(order, step, cfg.batch_size, gen, augment=cfg.augment, crop_pad=cfg.crop_pad)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        inputs, targets = grouped_training_batch(method, x, y, gen, images_per_group)
        rows += targets.shape[1]
        weight = 1.0
        if dist is not None:  # data parallel: this rank's rows of the global batch (benchmark.training.distributed)
            inputs, targets, weight = dist.shard(inputs, targets)

        def forward_backward() -> tuple[torch.Tensor, torch.Tensor]:
            with autocast(cfg.precision, device):
                out = model(inputs)
            value = training_loss(method, out, targets)
            optimizer.zero_grad(set_to_none=True)
            (value * weight if dist is not None else value).backward()
            return out, value

        try:
            logits, loss = forward_backward()
        except Exception as exc:  # a compiled step whose compilation failed: the same step again, eagerly
            if not (isinstance(model, CompiledNet) and model.fall_back(exc)):
                raise
            torch.manual_seed(hash_seed(*seed_parts, "global", epoch, step))
            logits, loss = forward_backward()
        members = int(logits.shape[0]) if logits.dim() == 3 else 1
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * weight
        if step == start_step and partial is None:  # one synchronisation per epoch: the first step's time (compilation, warm-up)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            first_step = time.perf_counter() - t0
        if cfg.nan_check_every and (step + 1) % cfg.nan_check_every == 0 or step == steps - 1:
            value = float(loss.detach())
            if not math.isfinite(value):
                hint = " or use precision='fp32'" if cfg.precision != "fp32" else ""
                raise NonFiniteLossError(f"training loss is {value} at epoch {epoch + 1}, step {step + 1}; "
                                         f"lower the learning rate (now {scheduler.get_last_lr()[0]:.4g}){hint}")
            bar.set_postfix_str(loss_text(value, members, 3), refresh=False)
            if curves is not None:
                curves("train/step_loss_per_member", value / members, epoch * steps + step + 1)
        if stop is not None and stop.is_set() and step < steps - 1:
            if on_stop is not None:
                so_far = loss_sum if dist is None else dist.average(loss_sum) + (carried if carried is not None else 0.0)
                on_stop(step + 1, PartialEpoch(step + 1, so_far, rows, earlier_seconds + time.perf_counter() - t0, first_step))
            # the same words as fit's "resuming ... in epoch E after step S" (S steps of the epoch done)
            raise StopRequested(f"stopped in epoch {epoch + 1} after step {step + 1} of {steps}: {stop.reason}")
    n = max(1, steps - (0 if partial is not None else start_step))
    if dist is not None:
        loss_sum = dist.average(loss_sum)  # the global batch's mean loss, as one process reports it
        if carried is not None:
            loss_sum = carried + loss_sum
    return EpochStats(epoch, float(loss_sum) / n, earlier_seconds + time.perf_counter() - t0, scheduler.get_last_lr()[0], rows, first_step, members,
                      model.note if isinstance(model, CompiledNet) else "")


def norm_groups(method: Method, cfg: TrainConfig, world_size: int = 1) -> int | None:
    """Ghost BatchNorm's images per group for ``cfg.bn_group`` rows per group (None: off, or one group
    per batch). ``bn_group`` must be a whole number of the method's rows per image and of its row
    blocks (:class:`~benchmark.methods.base.NormLayout`), and the batch (data parallel: each rank's
    share) a whole number of groups; a ValueError names the values otherwise."""
    if not cfg.bn_group:
        return None
    layout = method.norm_layout()
    g, r = cfg.bn_group, layout.rows_per_image
    if g % r or g % layout.blocks:
        raise ValueError(f"train.bn_group={g} must be a multiple of the {r} row(s) per image and of the {layout.blocks} row block(s) "
                         f"that method {method.name!r} trains with")
    images = g // r
    if cfg.batch_size % images or (cfg.batch_size // images) % world_size:
        raise ValueError(f"train.bn_group={g} rows make groups of {images} images for method {method.name!r}: train.batch_size="
                         f"{cfg.batch_size} must be a multiple of {images * world_size} (groups of {images} images x {world_size} process(es))")
    return images if images < cfg.batch_size else None


def fit(
    model: nn.Module,
    method: Method,
    data: DeviceData,
    cfg: TrainConfig,
    *,
    seed_parts: tuple,
    checkpoint: Path | None = None,
    resume: bool = False,
    stop: StopFlag | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    desc: str = "train",
    dist: Any = None,
    curves: Callable[[str, float, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` for ``cfg.epochs`` epochs; returns the per-epoch history.

    With ``checkpoint`` set, writes it after every epoch; with ``resume``, continues from it.
    With ``dist`` (a ``benchmark.training.distributed.DistContext``), trains data-parallel over its ranks
    (rank 0 alone writes checkpoints; stops are agreed so all ranks stop at the same step).
    ``curves(tag, value, global_step)`` receives the training curves (e.g. a TensorBoard writer's ``add_scalar``):
    per epoch the loss (summed over members, as the history), the loss per member, the learning rate and the time.
    After every epoch ``method.end_of_epoch(model, epochs_done, cfg)`` runs before that epoch's checkpoint is
    written (e.g. the snapshot ensemble copies the weights at a cycle's end into the model's own state).
    """
    cfg.validate()
    if cfg.precision == "auto":
        raise ValueError("train.precision='auto' is resolved before training (benchmark.training.precision.choose_precision); "
                         "fit trains in 'fp32' or 'bf16'")
    device = data.device
    model.to(device)
    hazard = channels_last_hazard(model, device) if cfg.channels_last else None
    if hazard:
        log(f"{desc}: train.channels_last off on this CPU: {hazard}; trained in the default layout")
        cfg = replace(cfg, channels_last=False)
    if cfg.channels_last:
        to_channels_last(model)
    steps = data.steps_per_epoch(cfg.batch_size)
    if steps == 0:
        raise ValueError(f"batch_size={cfg.batch_size} exceeds the {len(data)} training images")
    optimizer = torch.optim.SGD(optimizer_groups(method, model, cfg), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps))
    epoch, step, history = 0, 0, []
    partial: PartialEpoch | None = None
    if resume and checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, step, history = state["epoch"], state["step"], state["history"]
        partial = PartialEpoch.from_state(state.get("partial"), step, device) if step else None
        if epoch >= cfg.epochs:
            return history
        if step:  # stopped mid-epoch: ``step`` steps of epoch ``epoch + 1`` are done
            log(f"resuming {desc} in epoch {epoch + 1} after step {step} of {steps} (next: step {step + 1}) from {checkpoint}")
        else:
            log(f"resuming {desc} after epoch {epoch} of {cfg.epochs} (next: epoch {epoch + 1}) from {checkpoint}")

    images_per_group = norm_groups(method, cfg, dist.world_size if dist is not None else 1)
    if images_per_group:  # ghost BatchNorm (benchmark.training.ghost_norm), for this stage only
        apply_ghost_norm(model, cfg.bn_group, method.norm_layout().blocks)
    net = model
    if dist is not None:  # data parallel (benchmark.training.distributed): DDP wrapper; stop polled in lockstep
        net = dist.wrap(model)
        stop = dist.agreed_stop(stop) if stop is not None else None
    eager_note = compile_override() if cfg.compile else None
    if cfg.compile and eager_note is None:  # the first step of the first epoch then includes the compilation (history: first_step_seconds)
        net = CompiledNet(net)

    def save(e: int, s: int, part: PartialEpoch | None = None) -> None:
        if images_per_group:
            average_running_stats(model, dist)  # every rank: the ranks' ghost BatchNorm statistics, as one process's
        if checkpoint is not None and (dist is None or dist.is_main):
            save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                         "epoch": e, "step": s, "history": history, "config": asdict(cfg),
                                         "partial": part.state() if part is not None else None})

    fallback_logged = False
    try:
        while epoch < cfg.epochs:
            stats = train_one_epoch(net, method, optimizer, scheduler, data, cfg, seed_parts=seed_parts, epoch=epoch, start_step=step,
                                    stop=stop, on_stop=lambda s, part, e=epoch: save(e, s, part), progress=progress,
                                    desc=f"{desc} {epoch + 1}/{cfg.epochs}", dist=dist, curves=curves, partial=partial,
                                    images_per_group=images_per_group)
            partial = None
            history.append(history_entry(replace(stats, compile=eager_note) if eager_note else stats))
            if hazard:  # the record says which layout trained, where it is not the configured one
                history[-1]["layout"] = f"default: train.channels_last refused on this CPU ({hazard})"
            method.end_of_epoch(model, epoch + 1, cfg)  # before the checkpoint: what it keeps in the model survives a resume
            if curves is not None:
                for tag, value in (("loss", stats.loss), ("loss_per_member", stats.loss / stats.members), ("lr", stats.lr), ("epoch_seconds", stats.seconds)):
                    curves(f"train/{tag}", value, epoch + 1)
            epoch, step = epoch + 1, 0
            save(epoch, 0)
            log(f"{desc} epoch {epoch}/{cfg.epochs}: {loss_text(stats.loss, stats.members)}, lr {stats.lr:.4g}, {stats.seconds:.1f}s")
            if isinstance(net, CompiledNet) and net.failed is not None and not fallback_logged:
                log(f"{desc}: {net.note}")
                fallback_logged = True
            if stop is not None and stop.is_set() and epoch < cfg.epochs:
                raise StopRequested(f"stopped after epoch {epoch} of {cfg.epochs}: {stop.reason}")
    finally:
        if images_per_group:
            remove_ghost_norm(model)
    return history

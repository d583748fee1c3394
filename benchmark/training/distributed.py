"""Several processes (GPUs) on one run: data-parallel training that equals the 1-process run.

A :class:`DistContext` passed as ``Environment(dist=...)`` makes ``fit``:

* form the *global* batch exactly as one process does (same per-step seeds, same augmentation,
  same method-specific sampling), then keep this rank's contiguous chunk of its rows
  (:meth:`DistContext.shard`);
* weight the rank's loss by ``rows_rank * world / rows_global`` and let DistributedDataParallel
  average the gradients, so the update is the gradient of the method's loss (``ensemble_loss``
  by default; a mean over the global batch) whatever the chunk sizes;
* optionally (``sync_bn=True``, the default) normalise with full-batch BatchNorm statistics
  (:class:`SyncBatchNorm2d`, which works on the CPU with gloo as well as with NCCL); without it each
  rank normalises with its own chunk's statistics, as plain DDP does, and the result differs
  from the 1-process run by more than float reassociation; with ghost BatchNorm
  (``train.bn_group``, :mod:`benchmark.training.ghost_norm`) every rank holds whole groups and
  normalises them itself, as one process does, with no communication;
* agree on stop requests across ranks (one all-reduce per poll), so every rank stops at the
  same step; only rank 0 writes checkpoints, final weights and records.

Dropout masks (MC dropout) are drawn per rank on the rank's rows, so that method is not
bit-comparable with the 1-process run (its masks are statistically the same).

Processes come from torchrun (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) or from SLURM through submitit (``submitit.helpers.TorchDistributedEnvironment``):
see :meth:`DistContext.from_environment`.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from .ghost_norm import ghost_norms


# --------------------------------------------------------------------------- BatchNorm


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: the gradient of a sum over ranks is the sum of the gradients."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        out = tensor.clone(memory_format=torch.contiguous_format)
        tdist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return _AllReduceSum.apply(grad)


def _all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(tensor)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch over all ranks.

    Differentiable (the statistics' all-reduce back-propagates), on any device and backend.
    Outside training, or with no process group of more than one rank, it is plain BatchNorm2d;
    its parameters, buffers and state-dict keys are BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not (tdist.is_available() and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        xf = x.float()
        local_n = torch.full((1,), xf.numel() // c, dtype=torch.float32, device=x.device)
        # two passes (mean, then centred squares), as accurate as the 1-process kernel's variance
        packed = _all_reduce(torch.cat([xf.sum((0, 2, 3)), local_n]))
        n = packed[-1]
        mean = packed[:c] / n
        centred = xf - mean[None, :, None, None]
        var = _all_reduce((centred * centred).sum((0, 2, 3))) / n
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Turn every exact ``nn.BatchNorm2d`` of ``model`` into :class:`SyncBatchNorm2d`, in place.

    The module objects, their parameters and buffers stay the same (only the class changes, so
    references that methods hold to their layers stay valid). Returns how many were converted.
    """
    count = 0
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = SyncBatchNorm2d
            count += 1
    return count


# --------------------------------------------------------------------------- the context


class _AgreedStop:
    """A stop flag that every rank reads alike: set on all ranks once it is set on any."""

    def __init__(self, flag: Any, ctx: "DistContext") -> None:
        self.flag = flag
        self.ctx = ctx
        self.reason = ""

    def is_set(self) -> bool:
        local = bool(self.flag is not None and self.flag.is_set())
        agreed = self.ctx.any(local)
        if agreed:
            self.reason = getattr(self.flag, "reason", "") if local else "stop requested on another rank"
        return agreed


def buffer_sync_option(sync: bool) -> dict[str, bool]:
    """DDP's keyword for syncing buffers (BatchNorm statistics) from rank 0 at each forward:
    ``forward_sync_buffers`` where this torch has it (``broadcast_buffers`` is deprecated there, with a
    FutureWarning at every wrap), else ``broadcast_buffers``. The one difference, a sync at the wrap
    whatever the value, changes nothing here: every rank builds (or loads) the same weights."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": sync} if "forward_sync_buffers" in params else {"broadcast_buffers": sync}


@dataclass
class DistContext:
    """This process's place in a data-parallel job (see the module docstring).

    ``sync_bn``: full-batch BatchNorm statistics; ``find_unused_parameters``: passed to DDP
    (needed by networks with parameters that a training step leaves unused).
    """

    rank: int
    world_size: int
    local_rank: int = 0
    sync_bn: bool = True
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank={self.rank}, world_size={self.world_size}: expected 0 <= rank < world_size")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes checkpoints, final weights and records."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, *, init: bool = True, backend: str | None = None, **options: Any) -> "DistContext | None":
        """The context of this process, or None when it is the only one.

        torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
        ``MASTER_PORT``) are used when set; otherwise, inside a SLURM job of several tasks,
        submitit's ``TorchDistributedEnvironment`` exports them. ``init`` starts the process group
        (``backend``: nccl with CUDA, else gloo).
        """
        if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1:
            import submitit

            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return None
        ctx = cls(rank=int(os.environ["RANK"]), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")), **options)
        if init and not tdist.is_initialized():
            ctx.init_process_group(backend)
        return ctx

    def init_process_group(self, backend: str | None = None, init_method: str = "env://") -> None:
        """Join the process group (``MASTER_ADDR``/``MASTER_PORT`` from the environment by default)."""
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(self.local_rank)
        tdist.init_process_group(backend, init_method=init_method, rank=self.rank, world_size=self.world_size)

    def device(self) -> str:
        """The device this rank trains on: ``cuda:<local_rank>`` when CUDA is there, else ``cpu``."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    # ---- what ``fit`` calls

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train with: ``model`` (BatchNorm made synchronous if ``sync_bn``; ghost
        BatchNorm layers, whose groups never cross ranks, stay as they are) in DDP.

        Checkpoints keep using ``model`` itself (same parameters, no ``module.`` prefix).
        """
        if self.sync_bn:
            convert_sync_batchnorm(model)
        device_ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
        # ghost BatchNorm keeps each rank's running statistics and averages them when read (ghost_norm):
        # rank 0's must not overwrite the others' at every forward
        broadcast = not self.sync_bn and not ghost_norms(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=self.find_unused_parameters,
                                                   **buffer_sync_option(broadcast))

    def shard(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's contiguous chunk of a global training batch, and its loss weight.

        ``inputs``: images ``[..., B, C, H, W]`` (the batch axis is the 4th from the end, e.g.
        ``[B, C, H, W]`` or MIMO's ``[M, B, C, H, W]``); ``targets``: ``[M, B]`` (classes) or
        ``[M, B, K]`` (probabilities). The weight ``rows_rank * world / B`` makes DDP's gradient
        average the gradient of the global mean.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 4 or targets.dim() < 2 or inputs.shape[-4] != targets.shape[1]:
            shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
            raise ValueError(f"cannot shard training inputs {shape} with targets {tuple(targets.shape)}: expected images [..., B, C, H, W] with B = targets.shape[1]")
        b = targets.shape[1]
        if b < self.world_size:
            raise ValueError(f"batch of {b} rows cannot be split over {self.world_size} ranks")
        rows = torch.tensor_split(torch.arange(b), self.world_size)[self.rank]
        start, stop = int(rows[0]), int(rows[-1]) + 1
        axis = inputs.dim() - 4
        return inputs.narrow(axis, start, stop - start), targets[:, start:stop], (stop - start) * self.world_size / b

    def average(self, value: torch.Tensor) -> torch.Tensor:
        """The mean over ranks of ``value`` (a tensor on the training device)."""
        out = value.detach().clone()
        tdist.all_reduce(out)
        return out / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (a collective: call it on all ranks)."""
        t = torch.tensor([1.0 if flag else 0.0], device=self.device())
        tdist.all_reduce(t)
        return bool(t.item() > 0)

    def agreed_stop(self, flag: Any) -> _AgreedStop:
        """A flag polled in lockstep: every rank stops at the same step (one all-reduce per poll)."""
        return _AgreedStop(flag, self)

    def barrier(self) -> None:
        tdist.barrier()

    def close(self) -> None:
        """Leave the process group."""
        if tdist.is_initialized():
            tdist.destroy_process_group()

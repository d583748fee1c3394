"""Ghost BatchNorm: training statistics from fixed-size groups of a batch's rows (``train.bn_group``).

uncertainty-baselines trains on TPU cores with Keras' per-replica BatchNormalization: each core
normalises its own ``per_core_batch_size`` rows (64 on CIFAR, 128 on ImageNet; BatchEnsemble's tiled
and MIMO's repeated rows counted, so a BatchEnsemble M=4 group is 16 images tiled 4 times), whatever
the global batch. One GPU at batch 512 would normalise over 512 rows, 4 GPUs over 128 each: the result
would depend on the number of devices. With ``train.bn_group = G`` every BatchNorm layer instead
normalises, in training, each group of G rows with that group's own mean and variance, and the
groups are the same on 1 or N processes: the harness forms each group's training rows from its own
images (:func:`grouped_training_batch`: ``Method.training_batch`` once per group, as each core forms
its own), data parallel gives every rank whole groups, and no statistic crosses a group.

Which rows form a group is the method's :class:`~benchmark.methods.base.NormLayout`: with one block,
group j is the contiguous slice ``[j*G, (j+1)*G)`` of the rows the BatchNorm layers see; with M
member-major blocks (BatchEnsemble tiles the batch M times inside the network, Masksembles stacks M
member chunks), group j is the same slice ``[j*G/M, (j+1)*G/M)`` of every block, i.e. the M members'
rows of the same images.

Running statistics (used in evaluation, which is unchanged): after each step the momentum average
moves towards the mean over the step's groups of the group means and of the group variances
(unbiased within the group, as ``nn.BatchNorm2d``). Under data parallelism each rank averages its
own groups and the ranks' running statistics are averaged when read (:func:`average_running_stats`,
before a checkpoint and at the end of training): the momentum average is linear, so this equals
the 1-process statistics, and it is Keras' reading of per-replica moving averages (``ON_READ``
variables aggregated by ``MEAN``). ``G = 0`` (the default) or a group of the whole batch is plain
BatchNorm.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["GhostNorm", "apply_ghost_norm", "average_running_stats", "ghost_norms", "grouped_training_batch", "remove_ghost_norm"]


class GhostNorm:
    """Mixin over ``nn.BatchNorm2d`` (or a subclass): training statistics per group of ``group_rows``
    rows laid out in ``blocks`` member-major blocks (see the module docstring). Made by
    :func:`apply_ghost_norm`, which swaps a module's class for ``Ghost<its class>``; parameters,
    buffers and state-dict keys stay the module's own; evaluation is the base class's."""

    group_rows: int
    blocks: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if not self.training or rows == self.group_rows:
            return super().forward(x)  # type: ignore[misc]
        g, b = self.group_rows, self.blocks
        if rows % g:
            raise ValueError(f"ghost BatchNorm: a training batch of {rows} rows is not a whole number of groups of "
                             f"train.bn_group={g} rows")
        n, r = rows // g, g // b
        # group j's rows become channel block j of one batch: [b*r rows, n*C channels], one BatchNorm call
        # (on a CPU about twice as fast as n calls on the slices; the same arithmetic)
        shape = x.shape[1:]
        folded = x.reshape(b, n, r, *shape).transpose(1, 2).reshape(b * r, n * shape[0], *shape[1:])
        weight = self.weight.repeat(n) if self.weight is not None else None
        bias = self.bias.repeat(n) if self.bias is not None else None
        y, mean, inv_std = torch.native_batch_norm(folded, weight, bias, None, None, True, 0.0, self.eps)
        if self.track_running_stats and self.running_mean is not None:
            self._update_running_stats(mean.view(n, -1), inv_std.view(n, -1), g * x[0, 0].numel())
        out = y.view(b, r, n, *shape).transpose(1, 2).reshape(x.shape)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    @torch.no_grad()
    def _update_running_stats(self, means: torch.Tensor, inv_stds: torch.Tensor, count: int) -> None:
        """Move the running mean and variance towards the groups' mean statistics (``count`` values per group and channel)."""
        var = (inv_stds.float().pow(-2) - self.eps) * (count / max(count - 1, 1))
        self.num_batches_tracked.add_(1)
        m = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - m).add_(means.float().mean(0).to(self.running_mean.dtype), alpha=m)
        self.running_var.mul_(1 - m).add_(var.mean(0).to(self.running_var.dtype), alpha=m)


_GHOST_CLASSES: dict[type, type] = {}


def _ghost_class(cls: type) -> type:
    if cls not in _GHOST_CLASSES:
        _GHOST_CLASSES[cls] = type(f"Ghost{cls.__name__}", (GhostNorm, cls), {"__module__": __name__, "_plain": cls})
    return _GHOST_CLASSES[cls]


def ghost_norms(model: nn.Module) -> list[nn.Module]:
    """The ghost BatchNorm layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, GhostNorm)]


def apply_ghost_norm(model: nn.Module, group_rows: int, blocks: int = 1) -> int:
    """Make every ``nn.BatchNorm2d`` of ``model`` (subclasses included) a ghost BatchNorm with groups of
    ``group_rows`` rows in ``blocks`` blocks, in place (the module objects stay; only their class
    changes); returns how many. ``group_rows`` must be a multiple of ``blocks``."""
    if group_rows < 1 or blocks < 1 or group_rows % blocks:
        raise ValueError(f"ghost BatchNorm: group_rows={group_rows} must be a positive multiple of blocks={blocks}")
    count = 0
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            if not isinstance(module, GhostNorm):
                module.__class__ = _ghost_class(type(module))
            module.group_rows, module.blocks = group_rows, blocks
            count += 1
    return count


def remove_ghost_norm(model: nn.Module) -> int:
    """Undo :func:`apply_ghost_norm`: every ghost BatchNorm of ``model`` back to its own class; returns how many."""
    layers = ghost_norms(model)
    for module in layers:
        module.__class__ = module._plain
        del module.group_rows, module.blocks
    return len(layers)


def average_running_stats(model: nn.Module, dist: Any) -> None:
    """Average the ghost BatchNorm layers' running statistics over the data-parallel ranks (a
    collective: every rank calls it). ``dist``: a ``DistContext``; None does nothing."""
    if dist is None:
        return
    for module in ghost_norms(model):
        if module.running_mean is not None:
            module.running_mean.copy_(dist.average(module.running_mean))
            module.running_var.copy_(dist.average(module.running_var))


def grouped_training_batch(method: Any, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                           images_per_group: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's training inputs and targets, formed group by group: ``method.training_batch`` on
    each slice of ``images_per_group`` images, joined along the row axis (inputs: the 4th axis from
    the end, ``[..., rows, C, H, W]``; targets ``[M, rows]``), so that every group's rows come from its
    own images (MIMO shuffles within a group, as each core does in the reference). ``None``: one call."""
    if not images_per_group or images_per_group >= x.shape[0]:
        return method.training_batch(x, y, generator)
    parts = [method.training_batch(xs, ys, generator) for xs, ys in zip(x.split(images_per_group), y.split(images_per_group))]
    inputs = [p[0] for p in parts]
    if not all(isinstance(t, torch.Tensor) and t.dim() >= 4 for t in inputs):
        raise ValueError(f"method {method.name!r}: ghost BatchNorm joins the training inputs of its groups along their row axis "
                         f"and needs image tensors [..., rows, C, H, W]")
    return torch.cat(inputs, dim=inputs[0].dim() - 4), torch.cat([p[1] for p in parts], dim=-1)

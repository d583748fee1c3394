"""Deep ensembles (Lakshminarayanan et al., 2017): M networks trained independently, combined.

Each member is an ordinary run of ``member_method`` (default: the deterministic network) with its
own seed, trained exactly like that run (same data, epochs, schedule: an equal budget per
member), obtained through the stage context's ``member_model``: a member whose saved final weights
already exist (e.g. the suite's deterministic run of that seed) is reused, not retrained.
Run seed ``s`` uses member seeds ``s*M .. s*M + M-1``, so seed 0 reuses deterministic seeds 0..M-1.

At evaluation the members run as one module giving member logits ``[M, B, K]``; the harness
averages their probabilities. For deterministic members it is :func:`grouped_ensemble`: the
backbone rebuilt through its layer factories with every layer M times as wide and grouped M ways
(member m is group m: its weights copied in, nothing shared), so one pass of grouped
convolutions evaluates all members (on the CPU about 2x faster than ``torch.vmap`` over stacked
weights, whose pooling has no batching rule). Other member methods use :class:`StackedEnsemble`
(one ``torch.vmap`` pass over stacked parameters). Test cost: M forward passes of the member
network (M times its FLOPs and parameters).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state

from benchmark.backbones import Layers
from benchmark.methods import METHODS, Method, MethodOptions, SingleMember, StageContext, Task, register_method

from .layers import GroupedConv2d, GroupedLinear, GroupedSubnetworks


def _set_tensor(root: nn.Module, name: str, value: torch.Tensor, parameter: bool) -> None:
    """Replace parameter or buffer ``name`` (dotted) of ``root`` by ``value`` (any shape)."""
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name)
    if parameter:
        setattr(owner, attr, nn.Parameter(value))
    else:
        owner.register_buffer(attr, value, persistent=attr not in owner._non_persistent_buffers_set)


class StackedEnsemble(nn.Module):
    """M networks of one architecture evaluated in one vectorised pass.

    ``members``: networks mapping ``[B, C, H, W]`` to ``[B, K]`` or ``[Mi, B, K]`` (e.g. a
    ``SingleMember``'s ``[1, B, K]``). ``forward`` returns ``[M * Mi, B, K]`` (``[M, B, K]`` for
    one-member networks). The stacked parameters and buffers live in ``self.stacked``, a copy of
    the first member whose every tensor has a leading member axis (state-dict keys are the
    member's keys); the members passed in are not kept.

    In eval mode the pass is one ``torch.vmap`` over the member axis (BatchNorm uses each
    member's running statistics). In train mode (BatchNorm would update its statistics in place,
    which vmap does not allow) ``forward`` runs the members one after the other, as
    :meth:`looped_forward` does; gradients reach the stacked parameters either way.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("StackedEnsemble needs at least one member, got none")
        names = [sorted(n for n, _ in m.named_parameters()) + sorted(n for n, _ in m.named_buffers()) for m in members]
        if any(n != names[0] for n in names[1:]):
            raise ValueError("StackedEnsemble members must share one architecture (same parameter and buffer names)")
        params, buffers = stack_module_state(members)
        self.num_members = len(members)
        self.stacked = copy.deepcopy(members[0])
        for name, value in params.items():
            _set_tensor(self.stacked, name, value.detach().clone(), parameter=True)
        for name, value in buffers.items():
            _set_tensor(self.stacked, name, value.detach().clone(), parameter=False)
        self.train(members[0].training)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return dict(self.stacked.named_parameters()), dict(self.stacked.named_buffers())

    def _member_axis_first(self, out: torch.Tensor) -> torch.Tensor:
        """``[M, B, K]`` or ``[M, Mi, B, K]`` -> ``[M * Mi, B, K]``."""
        return out.flatten(0, 1) if out.dim() == 4 else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> member logits ``[M, B, K]`` (one vmap pass in eval mode)."""
        if self.training:
            return self.looped_forward(x)
        params, buffers = self._state()

        def one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
            return functional_call(self.stacked, (p, b), (inputs,))

        out = torch.vmap(one, in_dims=(0, 0, None), randomness="different")(params, buffers, x)
        return self._member_axis_first(out)

    def looped_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The same as ``forward``, one member after the other (a reference for tests): ``[M, B, K]``."""
        params, buffers = self._state()
        outs = [functional_call(self.stacked, ({k: v[m] for k, v in params.items()}, {k: v[m] for k, v in buffers.items()}), (x,))
                for m in range(self.num_members)]
        return self._member_axis_first(torch.stack(outs))


def widened_grouped_layers(layers: Layers, members: int) -> Layers:
    """``layers`` with every layer M times as wide and grouped M ways (group m = member m): the stem
    reads the image tiled M times, the head gives M x K outputs."""
    m = members

    def conv(i: int, o: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
        return GroupedConv2d(i * m, o * m, k, stride, padding, bias, groups=m)

    def stem(i: int, o: int, k: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
        return GroupedConv2d(i, o * m, k, stride, padding, bias, groups=m)  # i is already in_channels * M

    dropout = None if layers.branch_dropout is None else (lambda c: layers.branch_dropout(c * m))
    return layers.with_(conv=conv, first_conv=stem, in_channels=layers.in_channels * m, norm=lambda c: layers.norm(c * m),
                        branch_dropout=dropout, linear=lambda i, o: GroupedLinear(i * m, o * m, m))


def grouped_ensemble(task: Task, members: Sequence[nn.Module]) -> GroupedSubnetworks:
    """One grouped network equal to M ``SingleMember`` backbones of ``task``: ``[B,C,H,W] -> [M,B,K]``.

    Each grouped tensor is the members' tensors concatenated along the output axis (convolutions,
    normalisation parameters and statistics) or stacked (the grouped head); member m is group m.
    """
    m = len(members)
    grouped = GroupedSubnetworks(task.backbone_net(widened_grouped_layers(task.layers(), m)), m)
    states = [net.state_dict() for net in members]
    merged = {}
    for key, target in grouped.state_dict().items():
        parts = [st[key] for st in states]
        if target.shape == parts[0].shape:  # e.g. BatchNorm's num_batches_tracked
            merged[key] = parts[0].clone()
        elif target.shape == (m, *parts[0].shape):
            merged[key] = torch.stack(parts)
        else:
            merged[key] = torch.cat(parts)
    grouped.load_state_dict(merged)
    return grouped


@dataclass
class DeepEnsembleOptions(MethodOptions):
    """``members``: M independent runs; ``member_method``: the registered method each member runs."""

    members: int = 4
    member_method: str = "deterministic"


@register_method("deep_ensemble")
class DeepEnsemble(Method):
    """M independently trained runs of ``member_method`` with seeds ``seed*M + m``, one stacked pass."""

    Options = DeepEnsembleOptions

    def __init__(self, options: DeepEnsembleOptions, task: Any) -> None:
        super().__init__(options, task)
        if int(options.members) < 1:
            raise ValueError(f"deep_ensemble: members must be >= 1, got {options.members}")
        if options.member_method == self.name:
            raise ValueError(f"deep_ensemble: member_method cannot be {self.name!r} itself; choose e.g. 'deterministic'")
        METHODS.get(options.member_method)  # an unknown name fails here and lists the valid ones (the catalogue is loaded)
        self.member_runs: list[dict[str, Any]] = []

    def member(self) -> Method:
        """The method one member runs, with its default options."""
        return METHODS.get(self.options.member_method).from_config({}, self.task)

    def member_seeds(self, seed: int) -> list[int]:
        return [seed * self.members + m for m in range(self.members)]

    def variant(self) -> str:
        base = f"M={self.members}"
        default = DeepEnsembleOptions.__dataclass_fields__["member_method"].default
        return base if self.options.member_method == default else f"{base} {self.options.member_method}"

    def build(self) -> nn.Module:
        """Untrained stand-in of the trained ensemble: M fresh members (init seeds 0..M-1), stacked."""
        nets = []
        for m in range(self.members):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(m)
                nets.append(self.member().build())
        return self.combine_members(nets)

    def combine_members(self, nets: Sequence[nn.Module]) -> nn.Module:
        """The one-pass ensemble of trained members: grouped when the member method builds the plain
        backbone (the contract's default ``build``, e.g. deterministic members), else stacked."""
        if type(self.member()).build is Method.build and all(isinstance(n, SingleMember) for n in nets):
            device = next(nets[0].parameters()).device
            return grouped_ensemble(self.task, [n.cpu() for n in nets]).to(device)
        return StackedEnsemble(nets)

    def run(self, ctx: StageContext) -> nn.Module:
        """Obtain (train or reuse) the M member runs and stack them; trains nothing itself."""
        first = len(ctx.members)
        nets = [ctx.member_model({"run": {"method": self.options.member_method, "seed": s}, "method": {}}) for s in self.member_seeds(ctx.seed)]
        self.member_runs = [dict(entry) for entry in ctx.members[first:]]
        return self.combine_members(nets).to(ctx.device)

    def forward_passes(self) -> int:
        return self.members * self.member().forward_passes()

    def extra_record(self) -> dict[str, Any]:
        return {"member_method": self.options.member_method, "member_run_ids": [e["run_id"] for e in self.member_runs],
                "member_seeds": [e["seed"] for e in self.member_runs], "member_reused": [e["reused"] for e in self.member_runs]}

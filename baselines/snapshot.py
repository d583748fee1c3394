"""Snapshot ensembles (Huang et al., "Snapshot Ensembles: Train 1, get M for free", ICLR 2017).

One network is trained once, with the run's budget (the deterministic run's epochs), under a
cyclic cosine learning rate restarted M times: the schedule ``cyclic_cosine`` of the training loop
(``lr(t) = lr0/2 (cos(pi mod(t-1, L) / L) + 1)`` per iteration for M equal cycles of L
iterations, the paper's formula, when the warm-up is 0). The weights at the end of every cycle
are the members: the training loop calls :meth:`Snapshot.end_of_epoch` after every epoch, which
copies the live weights (parameters and BatchNorm statistics) into the next frozen slot of the
network when that epoch ends a cycle. The slots are submodules of the trained network, so every
checkpoint holds the snapshots taken so far and a resumed run keeps them; the last member is the
live network at the end of training.

Cycles. With ``train.milestones`` empty (the default) the M cycles are equal: restarts at epochs
``k * epochs / M`` (``train.epochs`` must then be a multiple of M). Explicit ``train.milestones``
(M - 1 whole epochs, increasing, inside the training) set the restarts instead. The run's
``train.schedule`` must be ``cyclic_cosine``: the record's config then states the schedule that
trained it (the error says so otherwise).

Test time: the M snapshots combined by the mean of their probabilities, in one grouped pass (as
the deep ensemble's members: member m = group m of a network M times as wide, grouped M ways).
Training cost 1x the deterministic run, inference M forward passes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from benchmark.core.config import TrainConfig
from benchmark.methods import EvalVariant, Method, MethodOptions, SingleMember, StageContext, register_method

from .deep_ensemble import grouped_ensemble

SCHEDULE = "cyclic_cosine"


class SnapshotNetwork(nn.Module):
    """The live network (``[B, C, H, W] -> [1, B, K]`` in training) and M - 1 frozen slots for the
    snapshots of the first M - 1 cycles; ``taken`` counts the snapshots taken (the M-th is the live
    network once training ends). In evaluation mode ``forward`` returns the M members' logits
    ``[M, B, K]`` (slots first, live last), one after the other; :meth:`members_list` gives them."""

    def __init__(self, live: nn.Module, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ValueError(f"snapshot: members must be >= 1, got {members}")
        self.live = live
        self.slots = nn.ModuleList(copy.deepcopy(live) for _ in range(members - 1))
        for slot in self.slots:
            slot.requires_grad_(False)
        self.register_buffer("taken", torch.zeros((), dtype=torch.long))

    @property
    def num_members(self) -> int:
        return len(self.slots) + 1

    def members_list(self) -> list[nn.Module]:
        """The M member networks in cycle order (the frozen slots, then the live network)."""
        return [*self.slots, self.live]

    @torch.no_grad()
    def take_snapshot(self) -> int:
        """Copy the live weights into the next slot (none left: the live network is the last member);
        returns the number of snapshots taken."""
        k = int(self.taken)
        if k >= self.num_members:
            raise RuntimeError(f"snapshot: all {self.num_members} snapshots are taken; no cycle is left to end")
        if k < len(self.slots):
            self.slots[k].load_state_dict(self.live.state_dict())
        self.taken.fill_(k + 1)
        return k + 1

    def train(self, mode: bool = True) -> "SnapshotNetwork":
        super().train(mode)
        for slot in self.slots:  # frozen snapshots keep their BatchNorm statistics
            slot.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.live(x)
        return torch.cat([net(x) for net in self.members_list()])


@dataclass
class SnapshotOptions(MethodOptions):
    """``members``: M, the learning-rate cycles and the snapshots (one at the end of each cycle)."""

    members: int = 5  # M: cycles of the cyclic cosine schedule, one snapshot at each cycle's end (Huang et al.: 5 on CIFAR)


def cycle_ends(cfg: TrainConfig, members: int) -> list[int]:
    """The epochs (1-based counts of epochs done) that end the M cycles: ``train.milestones`` when
    given (M - 1 whole epochs inside the training), else M equal cycles; then ``train.epochs``.
    A configuration that cannot give M cycles ending at epoch boundaries raises ValueError naming it."""
    epochs = int(cfg.epochs)
    if cfg.schedule != SCHEDULE:
        raise ValueError(f"snapshot trains with train.schedule = {SCHEDULE!r} (the cyclic cosine schedule), got {cfg.schedule!r}; "
                         f"set train.schedule = \"{SCHEDULE}\" (and train.warmup_epochs = 0 for the paper's schedule)")
    if not cfg.milestones:
        if epochs < members or epochs % members:
            raise ValueError(f"snapshot: train.epochs = {epochs} is not a positive multiple of members = {members}, so the "
                             f"{members} cycles cannot be equal whole epochs; change one, or give train.milestones "
                             f"({members - 1} restart epochs)")
        return [epochs * (k + 1) // members for k in range(members)]
    ends = [float(m) for m in cfg.milestones]
    if (len(ends) != members - 1 or any(m != int(m) for m in ends) or ends != sorted(set(ends))
            or ends[0] <= 0 or ends[-1] >= epochs):
        raise ValueError(f"snapshot: train.milestones = {list(cfg.milestones)} must be {members - 1} increasing whole epochs "
                         f"in (0, {epochs}) for members = {members} (or empty: {members} equal cycles)")
    if cfg.warmup_epochs > ends[0]:
        raise ValueError(f"snapshot: train.warmup_epochs = {cfg.warmup_epochs} is longer than the first cycle (ends at epoch {int(ends[0])})")
    return [*(int(m) for m in ends), epochs]


@register_method("snapshot")
class Snapshot(Method):
    """One network, a cyclic cosine schedule with M cycles; the weights at each cycle's end are the members."""

    Options = SnapshotOptions

    def __init__(self, options: SnapshotOptions, task: Any) -> None:
        super().__init__(options, task)
        if int(options.members) < 1:
            raise ValueError(f"snapshot: members must be >= 1, got {options.members}")
        self.snapshot_epochs: list[int] = []

    @property
    def members(self) -> int:
        """One network trains (training targets ``[1, B]``); ``test_members()`` snapshots are combined."""
        return 1

    def test_members(self) -> int:
        return int(self.options.members)

    def variant(self) -> str:
        return f"M={self.test_members()}"

    def forward_passes(self) -> int:
        return self.test_members()

    def build(self) -> SnapshotNetwork:
        return SnapshotNetwork(SingleMember(self.task.backbone_net()), self.test_members())

    def end_of_epoch(self, model: nn.Module, epoch: int, cfg: TrainConfig) -> None:
        """At the end of each cycle: the live weights become the next member (kept in ``model``)."""
        if epoch in cycle_ends(cfg, self.test_members()):
            model.take_snapshot()

    def run(self, ctx: StageContext) -> nn.Module:
        """One training stage under the cyclic schedule (equal cycles filled in as ``milestones``)."""
        model = self.build()
        cfg = ctx.train_config()
        ends = cycle_ends(cfg, self.test_members())  # a bad schedule fails here, before training (and at plan time)
        self.snapshot_epochs = ends
        ctx.fit(model, self, stage="train", milestones=[float(e) for e in ends[:-1]])
        if int(model.taken) != self.test_members():
            raise RuntimeError(f"snapshot: {int(model.taken)} snapshots taken at the end of training, expected {self.test_members()} "
                               f"(cycle ends at epochs {ends})")
        return model

    def eval_variants(self, model: nn.Module) -> list[EvalVariant]:
        """The M snapshots in one grouped pass (member m = group m), M forward passes of the backbone."""
        nets = model.members_list()
        device = next(model.parameters()).device
        grouped = grouped_ensemble(self.task, nets).to(device)
        return [EvalVariant(self.variant(), grouped, self.forward_passes(), self.test_members())]

    def extra_record(self) -> dict[str, Any]:
        return {"snapshot_epochs": list(self.snapshot_epochs), "cycles": self.test_members()}

"""The method contract: every method turns one input batch into member logits ``[M, B, K]``.

Everything downstream (loss, combination, metrics, records, leaderboards) depends
only on that shape. A method differs only in

(a) how it builds its network from a backbone (:meth:`Method.build`),
(b) how it forms each member's training inputs and targets from a batch
    (:meth:`Method.training_batch`), and, where it needs its own, the training loss over them
    (:meth:`Method.loss`; default: the shared :func:`ensemble_loss`), and
(c) for multi-stage methods, the stages it runs (:meth:`Method.run`).

Adding a method is one module that subclasses :class:`Method` and registers it
with ``@register_method("name")``, plus one config entry in a suite; nothing in
the harness changes. This module imports no method: the catalogue
(:mod:`benchmark.catalogue`) loads the built-in ones (``baselines``, ``mimo``) and
the user's plug-ins.

The network a method builds is an ``nn.Module`` whose ``forward(x)`` takes a batch
of images ``[B, C, H, W]`` and returns member logits ``[M, B, K]`` (in eval mode:
the prediction). During training the harness calls
``model(inputs)`` on whatever ``training_batch`` returned as inputs and expects
``[M, B', K]`` logits matching targets ``[M, B']`` (integer classes) or ``[M, B', K]``
(probabilities: soft targets), then takes the step's loss from :func:`training_loss`, the one
place that computes it (``method.loss(logits, targets)``, checked to be a scalar).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Layers, build_backbone
from ..core.config import TrainConfig
from ..core.registry import Registry


# ---------------------------------------------------------------------------------------------
# The shared loss and the shared combination (written once)


def ensemble_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over members, averaged over the batch (computed in float32).

    logits ``[M, B, K]``; targets ``[M, B]`` (integer classes) or ``[M, B, K]`` (probabilities,
    soft targets: the cross-entropy ``-sum_k t_k log p_k``) -> scalar.
    """
    soft = targets.dim() == 3
    if logits.dim() != 3 or targets.shape[:2] != logits.shape[:2] or targets.shape[2:] not in ((), logits.shape[2:]):
        raise ValueError(f"expected logits [M, B, K] and targets [M, B] (classes) or [M, B, K] (probabilities); "
                         f"got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if targets.is_floating_point() != soft:
        raise ValueError(f"targets {tuple(targets.shape)} of dtype {targets.dtype}: [M, B] targets are integer classes, "
                         f"[M, B, K] targets floating-point probabilities")
    m, b, k = logits.shape
    flat = targets.reshape(m * b, k).float() if soft else targets.reshape(m * b)
    total = F.cross_entropy(logits.reshape(m * b, k).float(), flat, reduction="sum")
    return total / b


class LossError(ValueError):
    """A method's :meth:`Method.loss` returned something other than a scalar tensor."""


def training_loss(method: "Method", logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The training loss of one step: ``method.loss(logits, targets)``, checked to be a
    floating-point scalar tensor (:class:`LossError` names the method, the shapes and what came
    back). The one place the harness (training loop, contract checks) computes the loss."""
    loss = method.loss(logits, targets)
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0 or not loss.is_floating_point():
        got = f"a {loss.dtype} tensor of shape {list(loss.shape)}" if isinstance(loss, torch.Tensor) else f"{type(loss).__name__} {loss!r}"
        raise LossError(f"method {method.name or type(method).__name__!r}: loss(logits {list(logits.shape)}, targets {list(targets.shape)}) "
                        f"returned {got}; expected a floating-point scalar tensor (sum over members, mean over the batch)")
    return loss


def member_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """``[M, B, K]`` logits -> ``[M, B, K]`` member log-probabilities (float16/bfloat16 computed in
    float32, float32/float64 in their own precision)."""
    dtype = logits.dtype if logits.dtype in (torch.float32, torch.float64) else torch.float32
    return torch.log_softmax(logits.to(dtype), dim=-1)


def combine_member_log_probs(member_lp: torch.Tensor) -> torch.Tensor:
    """``[M, B, K]`` member log-probabilities -> ``[B, K]`` log of the mean member probability."""
    return torch.logsumexp(member_lp, dim=0) - math.log(member_lp.shape[0])


def combine(logits: torch.Tensor) -> torch.Tensor:
    """Log of the mean member probability: ``logsumexp_m log_softmax(logits_m) - log M``.

    ``[M, B, K]`` -> ``[B, K]`` log-probabilities. Never averages logits. The one combination of
    the project (the metrics use it too).
    """
    return combine_member_log_probs(member_log_probs(logits))


# ---------------------------------------------------------------------------------------------
# The task a method is built for


@dataclass(frozen=True)
class Task:
    """What a network must fit: classes, input channels, image size, and the backbone to use."""

    num_classes: int
    backbone: str
    backbone_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    in_channels: int = 3
    image_size: int = 32
    dataset: str = ""

    def layers(self, **changes: Any) -> Layers:
        """The default layer factories for this task, with ``changes`` applied."""
        base = Layers(in_channels=self.in_channels, num_outputs=self.num_classes)
        return base.with_(**changes) if changes else base

    def backbone_net(self, layers: Layers | None = None) -> nn.Module:
        return build_backbone(self.backbone, layers or self.layers(), **self.backbone_options)


class StageContext(Protocol):
    """What a method's :meth:`Method.run` may use (implemented by ``benchmark.runner.RunContext``,
    and by the sweep's planning context, which records ``member_model`` requests without training).

    ``fit(model, method, stage, **train_changes)`` trains ``model`` in place as stage ``stage``
    (checkpointed and resumable); ``member_model(overrides)`` returns the trained network of
    another run (this run's config merged with ``overrides``), reusing its saved weights when it
    exists; ``members`` lists the runs obtained that way.
    """

    config: dict[str, Any]
    run_id: str
    device: torch.device
    members: list[dict[str, Any]]

    @property
    def seed(self) -> int: ...

    def train_config(self, **changes: Any) -> TrainConfig: ...

    def fit(self, model: nn.Module, method: "Method", stage: str = "train", **train_changes: Any) -> list[dict[str, Any]]: ...

    def member_model(self, overrides: dict[str, Any]) -> nn.Module: ...


class NormLayout(NamedTuple):
    """How a training batch's rows reach the network's BatchNorm layers, for ghost BatchNorm
    (``train.bn_group``, :mod:`benchmark.training.ghost_norm`).

    ``rows_per_image``: rows the BatchNorm layers see per training image (BatchEnsemble: M tiled
    rows; MIMO: the batch repetition); ``blocks``: 1 when each image's rows lie together in the
    order of the images (a group is a contiguous slice), M when the rows form M member-major blocks
    (block m: member m's rows of the whole batch, as BatchEnsemble's tiling and Masksembles' member
    chunks lay them out), a group then being the same slice of every block.
    """

    rows_per_image: int
    blocks: int = 1


class EvalVariant(NamedTuple):
    """One way a trained network is evaluated: a leaderboard row of its own."""

    label: str  # the variant label ("" for a method's only variant)
    network: nn.Module  # returns member logits [members, B, K]
    forward_passes: int  # backbone forward passes per test example
    members: int  # the members whose predictions are combined


class SingleMember(nn.Module):
    """Wraps a backbone that returns ``[B, K]`` so that it returns ``[1, B, K]``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).unsqueeze(0)


# ---------------------------------------------------------------------------------------------
# The method base class and registry


@dataclass
class MethodOptions:
    """Options every method accepts; subclasses add their own fields (with defaults).

    ``members``: M, the number of members the network predicts with.
    ``label``: free text added to the leaderboard variant (and the records' identity) of every
    row of the run, e.g. ``"width x2, FLOPs matched to deep_ensemble M=4"`` for an equal-cost
    single model; it names the run (part of its id when set) and changes nothing else. Methods that
    label their own variants (override ``variant`` or ``eval_variants``) refuse it.
    """

    members: int = 1
    label: str = ""  # added to the leaderboard variant of the run's rows, e.g. "width x2, FLOPs matched to deep_ensemble M=4"


class Method:
    """Base class. Subclasses set ``Options`` (a dataclass) and override what differs.

    The defaults implement a single deterministic network trained in one stage.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = MethodOptions

    def __init__(self, options: Any, task: Task) -> None:
        self.options = options
        self.task = task
        if self.label() and (type(self).variant is not Method.variant or type(self).eval_variants is not Method.eval_variants):
            raise ValueError(f"method {self.name!r} labels its own variants and takes no label option (got label={self.label()!r}); "
                             f"label names rows of methods with the default variants, e.g. deterministic")

    def label(self) -> str:
        """The ``label`` option (free text added to the variant), "" when unset or absent from ``Options``."""
        return str(getattr(self.options, "label", "") or "").strip()

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any], task: Task) -> "Method":
        """Build from a ``[method]`` config table; unknown keys fail and list the valid ones."""
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        bad = sorted(set(config) - fields)
        if bad:
            raise ValueError(f"unknown option(s) {bad} for method {cls.name!r}; valid options: {', '.join(sorted(fields))}")
        return cls(cls.Options(**config), task)

    @property
    def members(self) -> int:
        """M, the members the network is trained with."""
        return int(self.options.members)

    def test_members(self) -> int:
        """The members combined at test time in the default variant (:meth:`variant`); MC dropout:
        its first sample count, where it trains one member."""
        return self.members

    def variant(self) -> str:
        """A short label that tells apart configurations of one method on a leaderboard."""
        return ", ".join(t for t in (f"M={self.members}" if self.members != 1 else "", self.label()) if t)

    # -- (a) the network ---------------------------------------------------------------------
    def build(self) -> nn.Module:
        """A network whose ``forward(x [B,C,H,W])`` returns ``[M, B, K]``."""
        return SingleMember(self.task.backbone_net())

    # -- (b) member inputs and targets -------------------------------------------------------
    def training_batch(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator) -> tuple[Any, torch.Tensor]:
        """Form the network's training input and member targets from a batch: ``[M, B']`` classes, or
        ``[M, B', K]`` probabilities (soft targets) for a :meth:`loss` that takes them (the default does)."""
        return x, y.unsqueeze(0).expand(self.members, -1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one step: the network's member logits ``[M, B', K]`` (under bf16
        autocast they may be bfloat16: compute in float32) and the targets :meth:`training_batch`
        gave (``[M, B']`` classes or ``[M, B', K]`` probabilities) -> a scalar tensor that the
        gradient flows through. Keep the shared scale: summed over members, averaged over the batch
        (the log shows it per member). Default: :func:`ensemble_loss`, the shared cross-entropy."""
        return ensemble_loss(logits, targets)

    def rows_per_example(self) -> float:
        """Training rows the network processes per unique training image (for cost accounting)."""
        return 1.0

    def norm_layout(self) -> NormLayout:
        """How the training rows reach the BatchNorm layers (:class:`NormLayout`). Default: the
        :meth:`rows_per_example` rows of each image together, in the images' order."""
        return NormLayout(round(self.rows_per_example()))

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups. Default: weight decay on every parameter (kernels, norm
        scales and offsets, biases), as the reference recipes apply L2."""
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]

    def end_of_epoch(self, model: nn.Module, epoch: int, cfg: TrainConfig) -> None:
        """Called by the training loop after every completed epoch of a stage this method trains
        (``epoch``: epochs done, 1-based; ``cfg``: the stage's settings), before the epoch's
        checkpoint is written. State that must survive a resume belongs in ``model``'s state dict
        (the checkpoint saves it). Default: nothing. (The snapshot ensemble copies the weights at
        the end of each learning-rate cycle.)"""

    # -- (c) stages ---------------------------------------------------------------------------
    def run(self, ctx: StageContext) -> nn.Module:
        """Run the training stages and return the network to evaluate. Default: one stage."""
        model = self.build()
        ctx.fit(model, self, stage="train")
        return model

    # -- cost -----------------------------------------------------------------------------------
    def forward_passes(self) -> int:
        """Forward passes of the backbone per test example (MIMO: 1; deep ensemble: M; ...)."""
        return 1

    def eval_variants(self, model: nn.Module) -> list[EvalVariant]:
        """The ways the trained ``model`` is evaluated, each a leaderboard row of its own (label,
        network, forward passes per test example, members). Default: one. (MC dropout evaluates
        one trained network with several sample counts.)"""
        return [EvalVariant(self.variant(), model, self.forward_passes(), self.test_members())]

    def extra_record(self) -> dict[str, Any]:
        """Method-specific facts to store in the record (e.g. member records, masks' sizes)."""
        return {}


METHODS: Registry[type[Method]] = Registry("method")


def register_method(name: str):
    """Class decorator: register a :class:`Method` subclass under ``name``."""

    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        METHODS.register(name)(cls)
        return cls

    return deco

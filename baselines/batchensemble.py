"""BatchEnsemble (Wen, Tran & Ba, 2020): M members that share every weight but rank-1 factors.

Every convolution (stem and shortcuts included) and the dense head become BatchEnsemble layers
(:mod:`baselines.layers`): member m's weight is ``W o (s_m r_m^T)``, computed as
``((x o r_m) W) o s_m``, never materialised; r and s start at N(init_mean, init_std); the head
(and any layer built with a bias) has a per-member bias; BatchNorm is shared by all members.
The batch is tiled M times at the network input at training and at test time (member m takes
chunk m), so ``forward(x [B,C,H,W]) -> [M, B, K]`` and each test example costs M forward passes.

Optimisation, as the reference recipe: no weight decay on the fast weights r and s (weight decay
on everything else: kernels, BatchNorm scales/offsets, per-member biases); the gradients of r, s
and the per-member biases are multiplied by ``grad_scale`` (0.5 on CIFAR, 0.25 on ImageNet): each
layer passes them through an identity whose backward scales the gradient (``grad_scale`` of the
layers, set by :meth:`BatchEnsemble.build`). It scales the loss gradient only (weight decay, added by
the optimizer, is not scaled); being part of the forward, it survives ``torch.compile``,
``copy.deepcopy`` and ``load_state_dict`` (tensor hooks on the parameters, used before, were dropped
by compiled graphs: a compiled step trained the fast weights at twice the intended rate).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from benchmark.methods import Method, MethodOptions, NormLayout, register_method

from .layers import BatchEnsembleConv2d, BatchEnsembleLinear, TiledEnsemble, batchensemble_layers


@dataclass
class BatchEnsembleOptions(MethodOptions):
    """``members``: M; ``grad_scale``: multiplier on the gradients of r, s and per-member biases;
    ``init_mean``/``init_std``: the normal law r and s start from."""

    members: int = 4
    grad_scale: float = 0.5
    init_mean: float = 1.0
    init_std: float = 0.5


@register_method("batchensemble")
class BatchEnsemble(Method):
    """Rank-1 fast-weight ensemble on a tiled batch: logits ``[M, B, K]`` from M forward passes."""

    Options = BatchEnsembleOptions

    def __init__(self, options: BatchEnsembleOptions, task: Any) -> None:
        super().__init__(options, task)
        if options.members < 1:
            raise ValueError(f"batchensemble needs members >= 1, got {options.members}")
        if options.grad_scale <= 0:
            raise ValueError(f"batchensemble needs grad_scale > 0, got {options.grad_scale}")
        if options.init_std < 0:
            raise ValueError(f"batchensemble needs init_std >= 0, got {options.init_std}")

    def build(self) -> nn.Module:
        """``TiledEnsemble`` over the backbone built from BatchEnsemble conv/linear factories."""
        o = self.options
        fast = dict(members=o.members, init_mean=o.init_mean, init_std=o.init_std)
        layers = self.task.layers(conv=partial(BatchEnsembleConv2d, **fast), linear=partial(BatchEnsembleLinear, **fast))
        model = TiledEnsemble(self.task.backbone_net(layers), o.members)
        for layer in batchensemble_layers(model):
            layer.grad_scale = float(o.grad_scale)
        return model

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """Two groups: the fast weights r, s without weight decay; every other parameter with it."""
        fast = {id(p) for layer in batchensemble_layers(model) for p in layer.fast_weights()}
        params = [p for p in model.parameters() if p.requires_grad]
        groups = [{"params": [p for p in params if id(p) not in fast], "weight_decay": weight_decay},
                  {"params": [p for p in params if id(p) in fast], "weight_decay": 0.0}]
        return [g for g in groups if g["params"]]

    def rows_per_example(self) -> float:
        """The network processes each training image M times (the tiled batch)."""
        return float(self.members)

    def norm_layout(self) -> NormLayout:
        """M rows per image in M member-major blocks (the batch tiled inside the network): a ghost
        BatchNorm group holds the M tiled copies of the same images, as a reference core's batch."""
        return NormLayout(self.members, blocks=self.members)

    def forward_passes(self) -> int:
        """M: the test batch is tiled M times."""
        return self.members

"""Backbones built from layer factories.

Every architecture here builds its layers only through a :class:`Layers` bundle
(convolution, linear, normalisation, activation, residual-branch dropout, the
number of input channels of the first convolution and the number of outputs of
the head), so a method changes layers (rank-1 fast weights, grouped
subnetworks, always-on dropout, M concatenated inputs, M x K outputs) without
re-implementing an architecture.

A backbone maps images ``[B, in_channels, H, W]`` to head outputs
``[B, num_outputs]``. Registered names: see ``BACKBONES.names()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from .core.registry import Registry

ConvFactory = Callable[..., nn.Module]


def _conv(in_ch: int, out_ch: int, kernel_size: int, stride: int = 1, padding: int = 0, bias: bool = False) -> nn.Module:
    return nn.Conv2d(in_ch, out_ch, kernel_size, stride=stride, padding=padding, bias=bias)


def _linear(in_features: int, out_features: int) -> nn.Module:
    return nn.Linear(in_features, out_features)


def _norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def _act() -> nn.Module:
    return nn.ReLU(inplace=True)


@dataclass(frozen=True)
class Layers:
    """The layer factories a backbone is built from.

    conv(in_ch, out_ch, kernel_size, stride=1, padding=0, bias=False); linear(in, out);
    norm(channels); act(); branch_dropout(channels) or None (a module placed inside each
    residual branch, between its convolutions: MC dropout's hook); first_conv (the stem's
    convolution, default ``conv``: MIMO widens only its input channels); in_channels of the
    first convolution; num_outputs of the head.
    """

    conv: ConvFactory = _conv
    linear: Callable[[int, int], nn.Module] = _linear
    norm: Callable[[int], nn.Module] = _norm
    act: Callable[[], nn.Module] = _act
    branch_dropout: Callable[[int], nn.Module] | None = None
    first_conv: ConvFactory | None = None
    in_channels: int = 3
    num_outputs: int = 10

    def stem_conv(self, *args: Any, **kwargs: Any) -> nn.Module:
        return (self.first_conv or self.conv)(*args, **kwargs)

    def dropout(self, channels: int) -> nn.Module:
        return self.branch_dropout(channels) if self.branch_dropout is not None else nn.Identity()

    def with_(self, **changes: Any) -> "Layers":
        return replace(self, **changes)


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder and the keyword options it accepts (with defaults)."""

    name: str
    build: Callable[..., nn.Module]
    options: dict[str, Any] = field(default_factory=dict)
    input_size: int = 32
    description: str = ""


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(name: str, input_size: int = 32, description: str = "", **options: Any):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES.register(name)(BackboneSpec(name, fn, dict(options), input_size, description))
        return fn

    return deco


def build_backbone(name: str, layers: Layers, **options: Any) -> nn.Module:
    """Build backbone ``name`` from ``layers``; unknown options fail and list the valid ones."""
    spec = BACKBONES.get(name)
    bad = sorted(set(options) - set(spec.options))
    if bad:
        valid = ", ".join(sorted(spec.options)) or "(none)"
        raise ValueError(f"unknown option(s) {bad} for backbone {name!r}; valid options: {valid}")
    return spec.build(layers, **{**spec.options, **options})


# ---------------------------------------------------------------------------------------------
# Blocks


def _shortcut(layers: Layers, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """The residual branch's skip path: identity, or a strided 1x1 projection + norm when the shape changes."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(layers.conv(in_ch, out_ch, 1, stride=stride), layers.norm(out_ch))


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al.): conv-norm-act-[dropout]-conv-norm, + shortcut, act."""

    expansion = 1

    def __init__(self, layers: Layers, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = layers.conv(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn1 = layers.norm(out_ch)
        self.act1 = layers.act()
        self.drop = layers.dropout(out_ch)
        self.conv2 = layers.conv(out_ch, out_ch, 3, stride=1, padding=1)
        self.bn2 = layers.norm(out_ch)
        self.act2 = layers.act()
        self.shortcut = _shortcut(layers, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.drop(self.act1(self.bn1(self.conv1(x))))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Wide-ResNet block (Zagoruyko & Komodakis): norm-act-conv-norm-act-[dropout]-conv, + shortcut."""

    def __init__(self, layers: Layers, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = layers.norm(in_ch)
        self.act1 = layers.act()
        self.conv1 = layers.conv(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn2 = layers.norm(out_ch)
        self.act2 = layers.act()
        self.drop = layers.dropout(out_ch)
        self.conv2 = layers.conv(out_ch, out_ch, 3, stride=1, padding=1)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = layers.conv(in_ch, out_ch, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.drop(self.act2(self.bn2(out))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class Bottleneck(nn.Module):
    """ResNet-50 bottleneck (stride on the 3x3 convolution, torchvision's "v1.5")."""

    expansion = 4

    def __init__(self, layers: Layers, in_ch: int, width: int, stride: int) -> None:
        super().__init__()
        out_ch = width * self.expansion
        self.conv1 = layers.conv(in_ch, width, 1)
        self.bn1 = layers.norm(width)
        self.act1 = layers.act()
        self.conv2 = layers.conv(width, width, 3, stride=stride, padding=1)
        self.bn2 = layers.norm(width)
        self.act2 = layers.act()
        self.drop = layers.dropout(width)
        self.conv3 = layers.conv(width, out_ch, 1)
        self.bn3 = layers.norm(out_ch)
        self.act3 = layers.act()
        self.shortcut = _shortcut(layers, in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.drop(self.act2(self.bn2(self.conv2(out))))
        out = self.bn3(self.conv3(out))
        return self.act3(out + self.shortcut(x))


# ---------------------------------------------------------------------------------------------
# Networks


class Network(nn.Module):
    """stem -> stages -> [final norm-act] -> global average pool -> head."""

    def __init__(self, stem: nn.Module, stages: nn.Module, final: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.final = final
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> pooled features [B, F]."""
        return torch.flatten(self.pool(self.final(self.stages(self.stem(x)))), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C_in, H, W] -> [B, num_outputs]."""
        return self.head(self.features(x))


def _stages(layers: Layers, block: type, in_ch: int, widths: list[int], depths: list[int], strides: list[int]) -> tuple[nn.Sequential, int]:
    stages = []
    for width, depth, stride in zip(widths, depths, strides):
        blocks = []
        for i in range(depth):
            blocks.append(block(layers, in_ch, width, stride if i == 0 else 1))
            in_ch = width * getattr(block, "expansion", 1)
        stages.append(nn.Sequential(*blocks))
    return nn.Sequential(*stages), in_ch


def cifar_resnet(layers: Layers, depth: int = 20, width: int = 16) -> nn.Module:
    """He et al.'s CIFAR ResNet-(6n+2): three stages of n basic blocks, widths w, 2w, 4w."""
    if (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (8, 14, 20, 32, 56, ...), got {depth}")
    n = (depth - 2) // 6
    stem = nn.Sequential(layers.stem_conv(layers.in_channels, width, 3, padding=1), layers.norm(width), layers.act())
    stages, out_ch = _stages(layers, BasicBlock, width, [width, 2 * width, 4 * width], [n] * 3, [1, 2, 2])
    return Network(stem, stages, nn.Identity(), layers.linear(out_ch, layers.num_outputs))


def wide_resnet(layers: Layers, depth: int = 28, widen: int = 10) -> nn.Module:
    """WRN-d-k: three stages of (d-4)/6 pre-activation blocks, widths 16k, 32k, 64k."""
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    n = (depth - 4) // 6
    stem = layers.stem_conv(layers.in_channels, 16, 3, padding=1)
    stages, out_ch = _stages(layers, PreActBlock, 16, [16 * widen, 32 * widen, 64 * widen], [n] * 3, [1, 2, 2])
    final = nn.Sequential(layers.norm(out_ch), layers.act())
    return Network(stem, stages, final, layers.linear(out_ch, layers.num_outputs))


def resnet18_cifar(layers: Layers, width: int = 64) -> nn.Module:
    """ResNet-18 with a CIFAR stem: one 3x3 convolution at stride 1, no max-pool, then four stages of
    two basic blocks (widths w, 2w, 4w, 8w; strides 1, 2, 2, 2) and global average pooling.

    The same network serves CIFAR (32x32: feature maps 32, 16, 8, 4) and Tiny-ImageNet (64x64: 64,
    32, 16, 8, four times the FLOPs). On Tiny-ImageNet this is the stem of TorchUncertainty's
    ResNet-18 recipe (``experiments/classification/tiny-imagenet/configs/resnet18/standard.yaml``,
    ``style: cifar``), the common choice of Tiny-ImageNet papers that train from scratch; ImageNet's
    7x7 stride-2 stem with max-pool would reduce 64x64 images to 16x16 before the first stage.
    """
    stem = nn.Sequential(layers.stem_conv(layers.in_channels, width, 3, padding=1), layers.norm(width), layers.act())
    widths = [width, 2 * width, 4 * width, 8 * width]
    stages, out_ch = _stages(layers, BasicBlock, width, widths, [2, 2, 2, 2], [1, 2, 2, 2])
    return Network(stem, stages, nn.Identity(), layers.linear(out_ch, layers.num_outputs))


def resnet50(layers: Layers, width: int = 64) -> nn.Module:
    """ResNet-50 for 224x224 ImageNet images (7x7 stem, max-pool, bottlenecks 3-4-6-3)."""
    stem = nn.Sequential(
        layers.stem_conv(layers.in_channels, width, 7, stride=2, padding=3),
        layers.norm(width),
        layers.act(),
        nn.MaxPool2d(3, stride=2, padding=1),
    )
    widths = [width, 2 * width, 4 * width, 8 * width]
    stages, out_ch = _stages(layers, Bottleneck, width, widths, [3, 4, 6, 3], [1, 2, 2, 2])
    return Network(stem, stages, nn.Identity(), layers.linear(out_ch, layers.num_outputs))


for _depth in (8, 14, 20, 32, 56):
    register_backbone(f"resnet{_depth}", description=f"CIFAR ResNet-{_depth}", width=16)(
        lambda layers, width=16, _d=_depth: cifar_resnet(layers, _d, width)
    )
for _depth, _k in ((28, 10), (16, 4), (16, 2), (16, 1), (10, 1), (10, 2)):
    # ``widen`` (default k) widens the same network, e.g. the equal-cost single model WRN-28-20 in the wrn28-10 block
    register_backbone(f"wrn{_depth}-{_k}", description=f"WideResNet-{_depth}-{_k} (option widen: k)", widen=_k)(
        lambda layers, widen=_k, _d=_depth: wide_resnet(layers, _d, widen)
    )
register_backbone("resnet18", description="ResNet-18, CIFAR stem (3x3 stride 1, no max-pool); also for 64x64 Tiny-ImageNet",
                  width=64)(resnet18_cifar)
register_backbone("resnet50", input_size=224, description="ResNet-50, ImageNet", width=64)(resnet50)

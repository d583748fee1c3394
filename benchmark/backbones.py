"""Backbones built from layer factories.

Every architecture here builds its layers only through a :class:`Layers` bundle
(convolution, linear, normalisation, activation, residual-branch dropout, the
number of input channels of the first convolution and the number of outputs of
the head), so a method changes layers (rank-1 fast weights, grouped
subnetworks, always-on dropout, M concatenated inputs, M x K outputs) without
re-implementing an architecture.

A backbone maps images ``[B, in_channels, H, W]`` to head outputs
``[B, num_outputs]``. Registered names: see ``BACKBONES.names()``.

Options that match uncertainty-baselines' Keras models (the paper recipes set them; every
default is the network as it was before they existed): ``init = "he_normal"`` (WRN and
ResNet-50: Keras' truncated he-normal kernels, zero biases, ResNet-50's head N(0, 0.01)) and,
for WRN, ``shortcut = "input"`` (the 1x1 projection shortcut reads the block's input, not its
pre-activation). ``Layers.dropout_sites = "reference"`` places MC dropout where UB's models do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch
from torch import nn

from .core.config import ConfigError, check_choice, check_value
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


DROPOUT_SITES = ("branch", "reference")
INITS = ("torch", "he_normal")
SHORTCUTS = ("preact", "input")


@dataclass(frozen=True)
class Layers:
    """The layer factories a backbone is built from.

    conv(in_ch, out_ch, kernel_size, stride=1, padding=0, bias=False); linear(in, out);
    norm(channels); act(); branch_dropout(channels) or None (MC dropout's hook: the module placed
    at each of ``dropout_sites``); first_conv (the stem's convolution, default ``conv``: MIMO
    widens only its input channels); in_channels of the first convolution; num_outputs of the head.

    ``dropout_sites``: ``branch`` (one site per residual block, between its convolutions: after
    the activation before the block's last convolution) or ``reference`` (uncertainty-baselines'
    sites: in a WRN block after the first convolution, before the second BatchNorm, as
    ``wide_resnet_dropout.py`` with ``residual_dropout``; in ResNet-50 after the stem's and every
    bottleneck's BN-ReLU and after the projection shortcut's BatchNorm, as ``resnet50_dropout.py``).
    """

    conv: ConvFactory = _conv
    linear: Callable[[int, int], nn.Module] = _linear
    norm: Callable[[int], nn.Module] = _norm
    act: Callable[[], nn.Module] = _act
    branch_dropout: Callable[[int], nn.Module] | None = None
    first_conv: ConvFactory | None = None
    in_channels: int = 3
    num_outputs: int = 10
    dropout_sites: str = "branch"

    def stem_conv(self, *args: Any, **kwargs: Any) -> nn.Module:
        return (self.first_conv or self.conv)(*args, **kwargs)

    def dropout(self, channels: int) -> nn.Module:
        return self.branch_dropout(channels) if self.branch_dropout is not None else nn.Identity()

    def reference_dropout(self) -> bool:
        """Whether dropout goes to the reference code's sites (``dropout_sites == "reference"``) and not one per branch."""
        if self.dropout_sites not in DROPOUT_SITES:
            raise ValueError(f"dropout_sites {self.dropout_sites!r} is not valid; valid choices: {', '.join(DROPOUT_SITES)}")
        return self.branch_dropout is not None and self.dropout_sites == "reference"

    def with_(self, **changes: Any) -> "Layers":
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Initialisation (uncertainty-baselines' Keras initialisers)

TRUNCATED_NORMAL_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2] (Keras' VarianceScaling divides by it)


def _kernels(module: nn.Module) -> list[nn.Module]:
    """The submodules of ``module`` (itself included) with a kernel: a ``weight`` parameter of 2 or more dimensions."""
    return [m for m in module.modules() if isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.dim() >= 2]


def he_normal_(module: nn.Module) -> nn.Module:
    """Keras' ``he_normal`` on every kernel of ``module``: a normal of std ``sqrt(2 / fan_in) / 0.8796``
    truncated at two of its stds (so the kernel's std is ``sqrt(2 / fan_in)``), zero biases. fan_in:
    the inputs of one output unit (``in / groups * kh * kw`` for a convolution, the last dimension
    of a dense or grouped dense weight)."""
    with torch.no_grad():
        for m in _kernels(module):
            w = m.weight
            fan_in = math.prod(w.shape[1:]) if w.dim() == 4 else w.shape[-1]
            std = math.sqrt(2.0 / fan_in) / TRUNCATED_NORMAL_STD
            nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std)
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                m.bias.zero_()
    return module


def normal_head_(module: nn.Module, std: float = 0.01) -> nn.Module:
    """UB's ResNet-50 head: kernels N(0, std) (Keras ``RandomNormal(stddev=0.01)``), zero biases."""
    with torch.no_grad():
        for m in _kernels(module):
            nn.init.normal_(m.weight, 0.0, std)
            if isinstance(getattr(m, "bias", None), nn.Parameter):
                m.bias.zero_()
    return module


def _then(factory: Callable[..., nn.Module], init: Callable[[nn.Module], nn.Module]) -> Callable[..., nn.Module]:
    return lambda *args, **kwargs: init(factory(*args, **kwargs))


def initialised(layers: Layers, init: str, head: Callable[[nn.Module], nn.Module] = he_normal_) -> Layers:
    """``layers`` whose convolutions (``init = "he_normal"``) are initialised by :func:`he_normal_`
    and whose dense layer by ``head``; ``init = "torch"``: unchanged (PyTorch's default initialisation)."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is not valid; valid choices: {', '.join(INITS)}")
    if init == "torch":
        return layers
    first = _then(layers.first_conv, he_normal_) if layers.first_conv is not None else None
    return layers.with_(conv=_then(layers.conv, he_normal_), first_conv=first, linear=_then(layers.linear, head))


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its builder and the keyword options it accepts (with defaults)."""

    name: str
    build: Callable[..., nn.Module]
    options: dict[str, Any] = field(default_factory=dict)
    input_size: int = 32
    description: str = ""
    choices: dict[str, tuple[str, ...]] = field(default_factory=dict)  # option -> its valid values


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(name: str, input_size: int = 32, description: str = "", choices: dict[str, tuple[str, ...]] | None = None,
                      **options: Any):
    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        BACKBONES.register(name)(BackboneSpec(name, fn, dict(options), input_size, description, dict(choices or {})))
        return fn

    return deco


def check_backbone_options(name: str, options: dict[str, Any]) -> None:
    """ConfigError for an unknown backbone ``name`` or option (listing the valid ones), a value
    of another type than the option's default, or a value outside the option's choices."""
    spec = BACKBONES.get(name)
    bad = sorted(set(options) - set(spec.options))
    if bad:
        valid = ", ".join(sorted(spec.options)) or "(none)"
        raise ConfigError(f"unknown option(s) {bad} for backbone {name!r}; valid options: {valid}")
    for key, value in options.items():
        if key in spec.choices:
            check_choice("backbone", key, value, spec.choices[key])
        elif isinstance(spec.options[key], (bool, int, float, str)):
            check_value("backbone", key, value, type(spec.options[key]))


def build_backbone(name: str, layers: Layers, **options: Any) -> nn.Module:
    """Build backbone ``name`` from ``layers``; unknown options or bad values fail and list the valid ones."""
    check_backbone_options(name, options)
    spec = BACKBONES.get(name)
    return spec.build(layers, **{**spec.options, **options})


# ---------------------------------------------------------------------------------------------
# Blocks


def _shortcut(layers: Layers, in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """The residual branch's skip path: identity, or a strided 1x1 projection + norm when the shape
    changes (+ dropout at the reference sites, as UB's ResNet-50)."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    drop = [layers.dropout(out_ch)] if layers.reference_dropout() else []
    return nn.Sequential(layers.conv(in_ch, out_ch, 1, stride=stride), layers.norm(out_ch), *drop)


class BasicBlock(nn.Module):
    """Post-activation residual block (He et al.): conv-norm-act-[dropout]-conv-norm, + shortcut, act."""

    expansion = 1

    def __init__(self, layers: Layers, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        if layers.reference_dropout():
            raise ValueError("dropout_sites 'reference' is defined for the WRN and ResNet-50 backbones (uncertainty-baselines' "
                             "wide_resnet_dropout.py and resnet50_dropout.py); CIFAR ResNets and ResNet-18 take dropout_sites 'branch'")
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
    """Wide-ResNet block (Zagoruyko & Komodakis): norm-act-conv-norm-act-[dropout]-conv, + shortcut
    (dropout at the reference sites: norm-act-conv-[dropout]-norm-act-conv).

    ``shortcut``: what the 1x1 projection (where the shape changes) reads: ``preact`` the block's
    pre-activation ``act(norm(x))``, ``input`` the block's input ``x`` (uncertainty-baselines'
    ``wide_resnet.py``: ``x = inputs`` projected by a 1x1 convolution). The identity shortcut adds ``x``.
    """

    def __init__(self, layers: Layers, in_ch: int, out_ch: int, stride: int, shortcut: str = "preact") -> None:
        super().__init__()
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut {shortcut!r} is not valid; valid choices: {', '.join(SHORTCUTS)}")
        self.bn1 = layers.norm(in_ch)
        self.act1 = layers.act()
        self.conv1 = layers.conv(in_ch, out_ch, 3, stride=stride, padding=1)
        self.bn2 = layers.norm(out_ch)
        self.act2 = layers.act()
        self.drop = layers.dropout(out_ch)
        self.drop_after_conv = layers.reference_dropout()
        self.conv2 = layers.conv(out_ch, out_ch, 3, stride=1, padding=1)
        self.shortcut: nn.Module | None = None
        self.shortcut_from_input = shortcut == "input"
        if stride != 1 or in_ch != out_ch:
            self.shortcut = layers.conv(in_ch, out_ch, 1, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.act1(self.bn1(x))
        out = self.conv1(pre)
        if self.drop_after_conv:
            out = self.conv2(self.act2(self.bn2(self.drop(out))))
        else:
            out = self.conv2(self.drop(self.act2(self.bn2(out))))
        if self.shortcut is None:
            return out + x
        return out + self.shortcut(x if self.shortcut_from_input else pre)


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
        self.drop1: nn.Module | None = layers.dropout(width) if layers.reference_dropout() else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        if self.drop1 is not None:
            out = self.drop1(out)
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


def wide_resnet(layers: Layers, depth: int = 28, widen: int = 10, init: str = "torch", shortcut: str = "preact") -> nn.Module:
    """WRN-d-k: three stages of (d-4)/6 pre-activation blocks, widths 16k, 32k, 64k.

    ``init``: ``torch`` (PyTorch's default) or ``he_normal`` (every kernel, head included, as
    uncertainty-baselines' ``wide_resnet.py``: :func:`he_normal_`); ``shortcut``: see :class:`PreActBlock`.
    """
    if (depth - 4) % 6 != 0:
        raise ValueError(f"WideResNet depth must be 6n+4 (10, 16, 22, 28, ...), got {depth}")
    n = (depth - 4) // 6
    layers = initialised(layers, init)
    stem = layers.stem_conv(layers.in_channels, 16, 3, padding=1)
    block = PreActBlock if shortcut == "preact" else _with_shortcut(shortcut)
    stages, out_ch = _stages(layers, block, 16, [16 * widen, 32 * widen, 64 * widen], [n] * 3, [1, 2, 2])
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


def _with_shortcut(shortcut: str) -> Callable[..., nn.Module]:
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut {shortcut!r} is not valid; valid choices: {', '.join(SHORTCUTS)}")
    return lambda layers, in_ch, out_ch, stride: PreActBlock(layers, in_ch, out_ch, stride, shortcut)


def resnet50(layers: Layers, width: int = 64, init: str = "torch") -> nn.Module:
    """ResNet-50 for 224x224 ImageNet images (7x7 stem, max-pool, bottlenecks 3-4-6-3).

    ``init``: ``torch`` (PyTorch's default) or ``he_normal`` (uncertainty-baselines' ResNet-50
    models: :func:`he_normal_` convolutions, the head :func:`normal_head_` N(0, 0.01)).
    """
    layers = initialised(layers, init, head=normal_head_)
    stem_drop = [layers.dropout(width)] if layers.reference_dropout() else []
    stem = nn.Sequential(
        layers.stem_conv(layers.in_channels, width, 7, stride=2, padding=3),
        layers.norm(width),
        layers.act(),
        *stem_drop,
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
    register_backbone(f"wrn{_depth}-{_k}", description=f"WideResNet-{_depth}-{_k} (option widen: k)", choices={"init": INITS, "shortcut": SHORTCUTS},
                      widen=_k, init="torch", shortcut="preact")(
        lambda layers, widen=_k, init="torch", shortcut="preact", _d=_depth: wide_resnet(layers, _d, widen, init, shortcut)
    )
register_backbone("resnet18", description="ResNet-18, CIFAR stem (3x3 stride 1, no max-pool); also for 64x64 Tiny-ImageNet",
                  width=64)(resnet18_cifar)
register_backbone("resnet50", input_size=224, description="ResNet-50, ImageNet", choices={"init": INITS}, width=64, init="torch")(resnet50)

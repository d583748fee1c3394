"""The options that let the paper recipes match uncertainty-baselines' code: he-normal
initialisation and the input-fed projection shortcut of the WRN, MC dropout at the reference
sites, the crop padding, weight decay without the normalisation layers; each validated like
every other option, and each leaving the run ids of the suites that do not set it unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines.mc_dropout import AlwaysDropout, DropoutRNG, MCDropout
from benchmark.backbones import Layers, PreActBlock, build_backbone, check_backbone_options
from benchmark.core import config as C
from benchmark.data.base import Split
from benchmark.data.device import DeviceData
from benchmark.catalogue.methods import get_method
from benchmark.methods import Task
from benchmark.runner import run_id_of
from benchmark.training.train import optimizer_groups

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------- run ids of the suites that do not set the options


def test_quick_suite_run_ids_are_those_of_its_committed_records() -> None:
    """The new train keys are None unless set, and None leaves the hash as it was: the quick suite
    resolves to the run ids of the records committed before the keys existed (seed 0), and of the
    seeds 1 and 2 published since (layout and compilation changed in between, outside the ids)."""
    recorded = {json.loads(p.read_text())["training_run_id"] for p in (ROOT / "results/reference/runs/quick").glob("*.json")}
    assert recorded
    _, runs = C.load_suite("quick")
    resolved = [C.resolve(C.merge(r, {"run": {"seed": seed}})) for r in runs for seed in (0, 1, 2)]
    assert all(r["train"]["crop_pad"] is None and r["train"]["norm_weight_decay"] is None for r in resolved)
    assert recorded == {run_id_of(r) for r in resolved}  # every row at every published seed, and nothing else


def test_setting_an_option_changes_the_run_id_and_its_default_does_not() -> None:
    _, runs = C.load_suite("quick")
    base = runs[0]
    rid = run_id_of(C.resolve(base))
    assert run_id_of(C.resolve(C.merge(base, {"train": {"crop_pad": None, "norm_weight_decay": None}}))) == rid
    assert run_id_of(C.resolve(C.merge(base, {"train": {"crop_pad": 2}}))) != rid
    assert run_id_of(C.resolve(C.merge(base, {"train": {"norm_weight_decay": 0.0}}))) != rid


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("section, key, value, expected", [
    ("train", "crop_pad", -1, "train.crop_pad = -1 is not valid: expected an integer >= 0"),
    ("train", "crop_pad", 2.5, "train.crop_pad = 2.5 is not valid: expected an integer >= 0 (or absent for the default)"),
    ("train", "norm_weight_decay", -1e-4, "train.norm_weight_decay = -0.0001 is not valid"),
])
def test_bad_train_values_fail_naming_them(section: str, key: str, value: object, expected: str) -> None:
    with pytest.raises(C.ConfigError, match=expected.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        C.resolve({section: {key: value}})


def test_method_choice_options_fail_listing_the_choices() -> None:
    with pytest.raises(C.ConfigError, match=r"method\.sites = 'everywhere' is not valid; valid choices: branch, reference"):
        C.check_options("method", "mc_dropout", {"sites": "everywhere"}, get_method("mc_dropout").Options)
    C.check_options("method", "mc_dropout", {"sites": "reference", "max_rows": 500}, get_method("mc_dropout").Options)


@pytest.mark.parametrize("name, options, expected", [
    ("wrn28-10", {"init": "glorot"}, r"backbone\.init = 'glorot' is not valid; valid choices: torch, he_normal"),
    ("wrn28-10", {"shortcut": "raw"}, r"backbone\.shortcut = 'raw' is not valid; valid choices: preact, input"),
    ("wrn28-10", {"widen": "ten"}, r"backbone\.widen = 'ten' is not valid: expected an integer"),
    ("wrn28-10", {"depth": 40}, r"unknown option\(s\) \['depth'\] for backbone 'wrn28-10'; valid options: init, shortcut, widen"),
    ("resnet50", {"shortcut": "input"}, r"unknown option\(s\) \['shortcut'\] for backbone 'resnet50'; valid options: init, width"),
])
def test_bad_backbone_options_fail_listing_the_valid_ones(name: str, options: dict, expected: str) -> None:
    with pytest.raises(C.ConfigError, match=expected):
        check_backbone_options(name, options)
    with pytest.raises(C.ConfigError, match=expected):  # the builder checks the same way
        build_backbone(name, Layers(), **options)


# ---------------------------------------------------------------- initialisation and shortcut


def _kernel_std_ok(w: torch.Tensor, fan_in: int) -> None:
    w = w.detach()
    std = math.sqrt(2.0 / fan_in)
    assert float(w.std()) == pytest.approx(std, rel=0.05)
    assert float(w.abs().max()) <= 2 * std / 0.87962566103423978 + 1e-6  # truncated at two stds of the untruncated normal


def test_he_normal_initialises_every_kernel_of_the_wrn_as_keras() -> None:
    torch.manual_seed(0)
    net = build_backbone("wrn16-2", Layers(num_outputs=10), init="he_normal")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 + 3 * 2 * 2 + 3  # stem, two convolutions in each of 6 blocks, a projection per stage (the first's too: 16 -> 32)
    for conv in convs:
        if conv.weight.numel() >= 2000:  # enough values for the std to be within 5%
            _kernel_std_ok(conv.weight, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])
    wide = build_backbone("wrn16-2", Layers(num_outputs=100), init="he_normal")
    _kernel_std_ok(wide.head.weight, wide.head.in_features)
    assert torch.equal(net.head.bias, torch.zeros_like(net.head.bias))
    default = build_backbone("wrn16-2", Layers(num_outputs=10))
    assert float(default.stages[2][0].conv1.weight.detach().std()) < 0.6 * float(net.stages[2][0].conv1.weight.detach().std())  # PyTorch's is sqrt(1/3) of it


def test_he_normal_resnet50_head_is_normal_001() -> None:
    torch.manual_seed(0)
    net = build_backbone("resnet50", Layers(num_outputs=1000), init="he_normal")
    assert float(net.head.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
    assert torch.equal(net.head.bias, torch.zeros(1000))
    conv = net.stages[3][0].conv2
    _kernel_std_ok(conv.weight, conv.in_channels * 9)


@pytest.mark.parametrize("shortcut", ["preact", "input"])
def test_projection_shortcut_reads_the_pre_activation_or_the_input(shortcut: str) -> None:
    torch.manual_seed(0)
    block = PreActBlock(Layers(), 4, 8, 2, shortcut=shortcut).eval()
    with torch.no_grad():
        block.bn1.running_mean.uniform_(-1, 1)  # so that the pre-activation differs from the input
        x = torch.randn(2, 4, 8, 8)
        pre = block.act1(block.bn1(x))
        branch = block.conv2(block.act2(block.bn2(block.conv1(pre))))
        expected = branch + block.shortcut(x if shortcut == "input" else pre)
        assert torch.allclose(block(x), expected, atol=1e-6)
        other = branch + block.shortcut(pre if shortcut == "input" else x)
        assert not torch.allclose(block(x), other, atol=1e-3)


# ---------------------------------------------------------------- MC dropout sites


class _Record(nn.Module):
    """A dropout stand-in that records what it receives and passes it on."""

    def __init__(self, seen: list[torch.Tensor]) -> None:
        super().__init__()
        self.seen = seen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return x


@pytest.mark.parametrize("sites", ["branch", "reference"])
def test_wrn_dropout_sits_after_the_first_convolution_at_the_reference_sites(sites: str) -> None:
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    layers = Layers(branch_dropout=lambda c: _Record(seen), dropout_sites=sites)
    block = PreActBlock(layers, 4, 4, 1).eval()
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        block(x)
        after_conv = block.conv1(block.act1(block.bn1(x)))
        after_act = block.act2(block.bn2(after_conv))
    assert len(seen) == 1
    assert torch.allclose(seen[0], after_conv if sites == "reference" else after_act)


def _dropouts(net: nn.Module) -> int:
    return sum(isinstance(m, AlwaysDropout) for m in net.modules())


def test_resnet50_reference_sites_are_ubs() -> None:
    """UB's resnet50_dropout.py: after the stem's BN-ReLU, after the first two BN-ReLUs of each of
    the 16 bottlenecks and after the BatchNorm of each of the 4 projection shortcuts: 37 sites."""
    def net(sites: str) -> nn.Module:
        task = Task(num_classes=10, backbone="resnet50", image_size=224)
        return MCDropout(MCDropout.Options(rate=0.05, filterwise=True, sites=sites), task).build()

    assert _dropouts(net("branch")) == 16
    reference = net("reference")
    assert _dropouts(reference) == 1 + 2 * 16 + 4
    assert isinstance(reference.net.stem[3], AlwaysDropout) and isinstance(reference.net.stages[0][0].shortcut[2], AlwaysDropout)


def test_reference_sites_are_refused_where_the_reference_has_none() -> None:
    layers = Layers(branch_dropout=lambda c: AlwaysDropout(0.1, DropoutRNG()), dropout_sites="reference")
    with pytest.raises(ValueError, match="dropout_sites 'reference' is defined for the WRN and ResNet-50 backbones"):
        build_backbone("resnet8", layers)


# ---------------------------------------------------------------- crop padding and weight decay of the norms


def test_crop_pad_bounds_the_shift() -> None:
    """One bright pixel in the middle of a 16x16 image lands within +-pad px of where it was."""
    images = np.zeros((64, 16, 16, 3), dtype=np.uint8)
    images[:, 8, 8, :] = 255
    data = DeviceData(Split(images, np.zeros(64, dtype=np.int64)), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    order = torch.arange(64)
    for pad, expected in ((None, 4), (2, 2), (0, 0)):
        x, _ = data.train_batch(order, 0, 64, torch.Generator().manual_seed(0), crop_pad=pad)
        where = (x[:, 0] > 0).nonzero()[:, 1:]
        assert len(where) == 64
        rows, cols = where[:, 0] - 8, where[:, 1]
        shift_cols = torch.minimum((cols - 8).abs(), (cols - 7).abs())  # a flip moves column 8 to 7
        assert int(rows.abs().max()) == expected and int(shift_cols.max()) <= expected
    default, _ = data.train_batch(order, 0, 64, torch.Generator().manual_seed(1))
    four, _ = data.train_batch(order, 0, 64, torch.Generator().manual_seed(1), crop_pad=4)
    assert torch.equal(default, four)  # unset is the earlier +-4 px


def test_norm_weight_decay_moves_norm_parameters_to_their_own_groups() -> None:
    task = Task(num_classes=10, backbone="resnet8", backbone_options={"width": 8})
    method = get_method("batchensemble").from_config({"members": 2}, task)
    model = method.build()
    norms = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    unchanged = optimizer_groups(method, model, C.TrainConfig(weight_decay=5e-4))
    assert [g["weight_decay"] for g in unchanged] == [5e-4, 0.0]
    groups = optimizer_groups(method, model, C.TrainConfig(weight_decay=5e-4, norm_weight_decay=0.0))
    by_decay = {g["weight_decay"]: g["params"] for g in groups if any(id(p) in norms for p in g["params"])}
    assert set(by_decay) == {0.0} and {id(p) for p in by_decay[0.0]} == norms
    assert sorted(sum((g["params"] for g in groups), []), key=id) == sorted(sum((g["params"] for g in unchanged), []), key=id)
    decayed = [p for g in groups if g["weight_decay"] == 5e-4 for p in g["params"]]
    assert decayed and not any(id(p) in norms for p in decayed)
    torch.optim.SGD(groups, lr=0.1)  # every parameter once


# ---------------------------------------------------------------- every paper method with the paper's options


def _paper_entries() -> list[tuple[str, dict, dict]]:
    """(method, method options, backbone options) of each CIFAR-10 entry of the paper suite (one per method)."""
    out, seen = [], set()
    for run in C.load_suite("paper")[1]:
        r = C.resolve(run)
        if r["run"]["dataset"] == "cifar10" and r["run"]["seed"] == 0 and r["run"]["method"] not in seen:
            seen.add(r["run"]["method"])
            out.append((r["run"]["method"], r["method"], {k: v for k, v in r["backbone"].items() if k != "widen"}))
    return out


@pytest.mark.parametrize("method, options, backbone_options", _paper_entries(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_paper_method_passes_the_contract_with_the_paper_options(method: str, options: dict, backbone_options: dict) -> None:
    """The paper suite's method and backbone options (he_normal, input shortcut, reference dropout
    sites) on a small WRN-10-1: every contract check passes (shapes, combination, loss, one SGD step)."""
    from benchmark.catalogue.checks import contract_task, run_checks

    assert backbone_options == {"init": "he_normal", "shortcut": "input"}
    task = contract_task("wrn10-1", backbone_options)
    failed = [r for r in run_checks(method, task, options) if not r.passed]
    assert not failed, failed

"""The one contract, checked for every registered method (a new method is tested automatically)."""

from __future__ import annotations

import math

import pytest
import torch

from benchmark.backbones import BACKBONES, Layers, build_backbone
from benchmark.methods import combine, ensemble_loss, Task
from benchmark.methods.catalogue import get_method, method_names
from benchmark.core.runtime import make_generator

TASK = Task(num_classes=5, backbone="resnet8", backbone_options={"width": 8}, image_size=16)


def batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)


def train_loss(method, model, x, y, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)  # same dropout masks
    inputs, targets = method.training_batch(x, y, make_generator(torch.device("cpu"), "contract", seed))
    return ensemble_loss(model(inputs), targets)


@pytest.mark.parametrize("name", method_names())
def test_member_logits_shape_loss_and_combination(name: str) -> None:
    method = get_method(name).from_config({}, TASK)
    torch.manual_seed(0)
    model = method.build()
    x, y = batch()
    for variant, net, passes, members in method.eval_variants(model):
        net.eval()
        with torch.no_grad():
            logits = net(x)
        assert logits.dim() == 3 and logits.shape[1:] == (12, 5), (variant, logits.shape)
        assert logits.shape[0] == members, (variant, "the variant's declared members are the logits' first axis")
        assert passes >= 1
        probs = combine(logits).exp()
        torch.testing.assert_close(probs, torch.softmax(logits, -1).mean(0), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(probs.sum(-1), torch.ones(12), rtol=1e-5, atol=1e-5)
    model.train()
    loss = train_loss(method, model, x, y)
    assert loss.dim() == 0 and math.isfinite(loss.item())
    inputs, targets = method.training_batch(x, y, make_generator(torch.device("cpu"), "contract", 0))
    assert targets.shape[0] == method.members  # the members trained (MC dropout: 1; its test members differ)
    assert method.eval_variants(model)[0].members == method.test_members()


@pytest.mark.parametrize("name", method_names())
def test_one_step_lowers_the_loss_on_a_fixed_batch(name: str) -> None:
    method = get_method(name).from_config({}, TASK)
    torch.manual_seed(0)
    model = method.build()
    model.train()
    x, y = batch()
    opt = torch.optim.SGD(method.param_groups(model, 0.0), lr=0.02)
    before = train_loss(method, model, x, y)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = train_loss(method, model, x, y)
    assert after.item() < before.item(), (name, before.item(), after.item())


@pytest.mark.parametrize("name", method_names())
def test_unknown_option_lists_valid_ones(name: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown option\(s\) \['bogus'\] for method '{name}'; valid options: .*"):
        get_method(name).from_config({"bogus": 1}, TASK)


def test_loss_and_combination_definitions() -> None:
    logits = torch.randn(3, 4, 6)
    targets = torch.randint(0, 6, (3, 4))
    ref = sum(torch.nn.functional.cross_entropy(logits[m], targets[m]) for m in range(3))
    torch.testing.assert_close(ensemble_loss(logits, targets), ref)
    # the mean of probabilities, not the softmax of the mean logit
    avg_logit = torch.softmax(logits.mean(0), -1)
    assert not torch.allclose(combine(logits).exp(), avg_logit, atol=1e-3)
    with pytest.raises(ValueError, match="expected logits"):
        ensemble_loss(logits, targets[0])


@pytest.mark.parametrize("name", [n for n in BACKBONES.names() if BACKBONES.get(n).input_size == 32 and n != "wrn28-10"])
def test_cifar_backbones_build_from_layer_factories(name: str) -> None:
    made = []

    def conv(*args, **kwargs):
        made.append(args[:2])
        return torch.nn.Conv2d(*args, **kwargs)

    net = build_backbone(name, Layers(conv=conv, in_channels=6, num_outputs=7))
    assert made[0][0] == 6  # the first convolution takes the requested input channels
    assert net(torch.randn(2, 6, 32, 32)).shape == (2, 7)


def test_large_backbones_have_the_reference_sizes() -> None:
    def params(name: str, **kw) -> int:
        return sum(p.numel() for p in build_backbone(name, Layers(**kw)).parameters())

    assert abs(params("wrn28-10") - 36.5e6) < 0.1e6  # WRN-28-10, the reference recipes' 36.5M
    assert abs(params("resnet50", num_outputs=1000) - 25.6e6) < 0.1e6  # ResNet-50, 25.6M
    assert abs(params("resnet20") - 0.27e6) < 0.01e6  # He et al.'s 0.27M
    with pytest.raises(ValueError, match="depth must be 6n\\+2"):
        from benchmark.backbones import cifar_resnet

        cifar_resnet(Layers(), depth=21)

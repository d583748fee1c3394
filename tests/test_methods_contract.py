"""The one contract, checked for every registered method (a new method, built-in or plug-in, is
tested automatically: ``pytest --plures-plugin=my_module`` adds a plug-in's methods). The checks
themselves live in :mod:`benchmark.catalogue.checks` (also run by ``python -m benchmark check-method``)."""

from __future__ import annotations

import pytest
import torch

from benchmark.backbones import BACKBONES, Layers, build_backbone
from benchmark.methods import Method, MethodOptions, combine, ensemble_loss
from benchmark.catalogue.methods import get_method, method_names
from benchmark.catalogue.checks import CHECKS, check_compile, contract_task, run_checks
from benchmark.core.config import load_suite

TASK = contract_task()  # ResNet-8 of width 8, 5 classes, 16-pixel images


@pytest.mark.parametrize("check", list(CHECKS))
@pytest.mark.parametrize("name", method_names())
def test_method_contract(name: str, check: str) -> None:
    CHECKS[check](get_method(name), TASK, {})


_COMPILED_ROWS = [(cfg["run"]["name"], cfg["run"]["method"], dict(cfg.get("method", {})))
                  for cfg in load_suite("quick", seeds=[0])[1] if cfg["train"].get("compile")]


@pytest.mark.parametrize("row, name, options", _COMPILED_ROWS, ids=[r[0] for r in _COMPILED_ROWS])
def test_every_compiled_quick_row_traces_into_one_graph(row: str, name: str, options: dict) -> None:
    """The quick suite compiles these rows' training steps: a graph break would run them in pieces (MC dropout's
    mask draw made its compiled step twice as slow as eager)."""
    assert check_compile(get_method(name), TASK, options).startswith("the training forward traces into one graph")


class _ExtraMemberTargets(Method):
    def training_batch(self, x, y, generator):
        return x, y.unsqueeze(0).expand(self.members + 1, -1)


class _AcceptsAnything(Method):
    @classmethod
    def from_config(cls, config, task):
        return cls(MethodOptions(), task)


class _Frozen(Method):
    def param_groups(self, model, weight_decay):
        return [{"params": list(model.parameters()), "lr": 0.0, "weight_decay": weight_decay}]


@pytest.mark.parametrize("cls, failing", [(_ExtraMemberTargets, {"training-targets", "loss", "sgd-step"}),
                                          (_AcceptsAnything, {"unknown-option"}), (_Frozen, {"sgd-step"})])
def test_the_checks_catch_violations(cls: type[Method], failing: set[str]) -> None:
    results = run_checks(cls, TASK)
    assert [r.name for r in results] == list(CHECKS)
    assert {r.name for r in results if not r.passed} == failing, results
    assert all(r.message for r in results)


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

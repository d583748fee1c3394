"""The training-loss hook of the method contract (``Method.loss``, taken by ``training_loss``):
the default is the shared cross-entropy, bit for bit as before the hook; soft targets ``[M, B, K]``
train; the documentation's label-smoothing plug-in passes ``check-method``, trains, and its loss is the
one label smoothing predicts; broken loss hooks fail ``check-method`` (and a run) with messages
that name what is wrong.

Plug-ins are written to a temporary folder outside the repository and loaded through
``PLURES_PLUGINS``, as users load them; the autouse fixture of ``tests/test_plugins.py`` unloads
them after each test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmark import cli
from benchmark.catalogue import plugins as P
from benchmark.catalogue.checks import ADVICE_CHECKS, CHECKS, contract_task, fixed_batch, run_checks
from benchmark.catalogue.methods import get_method, load_methods, method_names
from benchmark.core import config as C
from benchmark.methods import Method, ensemble_loss
from benchmark.methods.base import LossError, training_loss
from benchmark.runner import Environment, run_experiment
from benchmark.training.distributed import DistContext
from tests.doc_text import doc_block, doc_page, doc_section
from tests.test_plugins import only_builtins_after, write_module  # noqa: F401 - the autouse fixture unloads plug-ins


SOFT = '''
import torch
import torch.nn.functional as F

from benchmark.methods import Method, register_method


@register_method("soft_smoothing")
class SoftSmoothing(Method):
    """Label smoothing (eps = 0.2) as soft targets [M, B, K]; the shared loss."""

    def training_batch(self, x, y, generator):
        soft = F.one_hot(y, self.task.num_classes).float() * 0.8 + 0.2 / self.task.num_classes
        return x, soft.unsqueeze(0).expand(self.members, -1, -1)
'''

BROKEN = '''
import torch
import torch.nn.functional as F

from benchmark.methods import Method, ensemble_loss, register_method


@register_method("per_example_loss")
class PerExample(Method):
    """Forgets to reduce: per-example losses [M, B]."""

    def loss(self, logits, targets):
        return F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")


@register_method("detached_loss")
class Detached(Method):
    """Returns the loss's value, cut off from the graph."""

    def loss(self, logits, targets):
        return torch.tensor(ensemble_loss(logits, targets).item())


@register_method("classes_only_loss")
class ClassesOnly(Method):
    """Soft targets [M, B, K], but a loss that takes classes [M, B] only."""

    def training_batch(self, x, y, generator):
        return x, F.one_hot(y, self.task.num_classes).float().unsqueeze(0)

    def loss(self, logits, targets):
        m, b, k = logits.shape
        return F.nll_loss(logits.reshape(m * b, k).float().log_softmax(-1), targets.reshape(m * b))


@register_method("not_probabilities")
class NotProbabilities(Method):
    """Soft targets that are not probabilities (rows sum to 2)."""

    def training_batch(self, x, y, generator):
        return x, 2 * F.one_hot(y, self.task.num_classes).float().unsqueeze(0)
'''

OLD_FORMULA = '''
import torch.nn.functional as F

from benchmark.methods import Method, register_method


@register_method("old_formula")
class OldFormula(Method):
    """The deterministic method trained on the ensemble loss as written before the hook existed."""

    def loss(self, logits, targets):
        m, b, k = logits.shape
        total = F.cross_entropy(logits.reshape(m * b, k).float(), targets.reshape(m * b), reduction="sum")
        return total / b
'''


def load_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, module: str, code: str) -> None:
    """Write ``code`` as ``module`` outside the repository and load it as users do (PLURES_PLUGINS)."""
    monkeypatch.syspath_prepend(str(write_module(tmp_path / "research", module, code)))
    monkeypatch.setenv(P.ENV_VAR, ",".join(filter(None, [*P.env_modules(), module])))
    load_methods()


@pytest.fixture
def smoothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> type[Method]:
    """The documentation's label-smoothing plug-in, loaded from its own module: its class."""
    filename, code = doc_block("plugin-loss-example")
    load_plugin(tmp_path, monkeypatch, filename.removesuffix(".py"), code)
    return get_method("label_smoothing")


def old_formula(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The shared loss exactly as ``ensemble_loss`` computed it before the hook."""
    m, b, k = logits.shape
    total = F.cross_entropy(logits.reshape(m * b, k).float(), targets.reshape(m * b), reduction="sum")
    return total / b


def env_for(tmp_path: Path, root: Path) -> Environment:
    return Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)


def tiny_run(cfg: dict, method: str, tmp_path: Path, root: Path, **options) -> dict:
    """One epoch of ``method`` on the tests' tiny CIFAR-10; its record."""
    config = C.merge(cfg, {"run": {"method": method}, "method": options, "train": {"epochs": 1}})
    [path] = run_experiment(config, env_for(tmp_path, root))
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------------------------
# The default: the shared cross-entropy, as before


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_default_loss_and_gradients_are_the_shared_cross_entropy_bit_for_bit(dtype: torch.dtype) -> None:
    method = get_method("deterministic").from_config({}, contract_task())
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 7, 5, generator=g).to(dtype)
    targets = torch.randint(0, 5, (3, 7), generator=g)
    losses, grads = [], []
    for fn in (lambda lg, t: training_loss(method, lg, t), old_formula):
        logits = base.clone().requires_grad_(True)
        loss = fn(logits, targets)
        loss.backward()
        losses.append(loss)
        grads.append(logits.grad)
    assert losses[0].dtype == torch.float32 and losses[0].dim() == 0
    assert torch.equal(losses[0], losses[1]) and torch.equal(grads[0], grads[1])


def test_no_builtin_method_overrides_the_loss() -> None:
    """Every built-in method (the quick suite's included) trains on the unchanged shared loss."""
    assert [name for name in method_names() if get_method(name).loss is not Method.loss] == []


def test_training_on_the_default_loss_gives_the_runs_of_the_old_formula(cifar10_dir, tiny_run_config: dict, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The training loop takes its loss from the hook; on the default it trains exactly what the
    pre-hook loss trained: the same epoch losses and the same clean metrics, bit for bit."""
    root, _ = cifar10_dir
    load_plugin(tmp_path, monkeypatch, "plures_test_old_formula", OLD_FORMULA)
    default = tiny_run(tiny_run_config, "deterministic", tmp_path, root)
    old = tiny_run(tiny_run_config, "old_formula", tmp_path, root)
    assert default["status"] == old["status"] == "completed"
    assert default["training"]["history"]["train"][0]["loss"] == old["training"]["history"]["train"][0]["loss"]
    assert default["metrics"]["clean"] == old["metrics"]["clean"]


def test_shared_loss_takes_soft_targets_and_names_bad_ones() -> None:
    g = torch.Generator().manual_seed(1)
    logits, labels = torch.randn(2, 6, 4, generator=g), torch.randint(0, 4, (2, 6), generator=g)
    one_hot = F.one_hot(labels, 4).float()
    assert torch.allclose(ensemble_loss(logits, one_hot), ensemble_loss(logits, labels), rtol=1e-6, atol=0)
    soft = torch.softmax(torch.randn(2, 6, 4, generator=g), -1)
    expected = -(soft * logits.log_softmax(-1)).sum() / 6
    torch.testing.assert_close(ensemble_loss(logits, soft), expected)
    with pytest.raises(ValueError, match=r"targets \[M, B\] \(classes\) or \[M, B, K\] \(probabilities\); got \(2, 6, 4\) and \(2, 6, 3\)"):
        ensemble_loss(logits, soft[..., :3])
    with pytest.raises(ValueError, match=r"targets \(2, 6\) of dtype torch.float32: \[M, B\] targets are integer classes"):
        ensemble_loss(logits, labels.float())
    with pytest.raises(ValueError, match=r"\[M, B, K\] targets floating-point probabilities"):
        ensemble_loss(logits, one_hot.long())


def test_data_parallel_shards_soft_targets_on_the_batch_axis() -> None:
    x, y = torch.randn(7, 3, 4, 4), torch.randint(0, 5, (2, 7))
    soft = F.one_hot(y, 5).float()
    for rank in range(2):
        _, hard, weight = DistContext(rank=rank, world_size=2).shard(x, y)
        _, chunk, soft_weight = DistContext(rank=rank, world_size=2).shard(x, soft)
        assert torch.equal(chunk, F.one_hot(hard, 5).float()) and weight == soft_weight


# ---------------------------------------------------------------------------------------------
# The documentation's label-smoothing plug-in (docs/how-to/own-method.md)


def test_docs_label_smoothing_passes_check_method(smoothing: type[Method], capsys) -> None:
    assert P.plugin_of("label_smoothing").module == "smooth_labels"
    assert cli.main(["check-method", "label_smoothing", "--set", "method.smoothing=0.2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("method label_smoothing (plug-in smooth_labels, from PLURES_PLUGINS)")
    assert [line.split()[:2] for line in lines[1:-1]] == [["PASS", name] for name in [*CHECKS, *ADVICE_CHECKS]]
    assert lines[-1] == f"{len(CHECKS) + len(ADVICE_CHECKS)} passed, 0 failed"
    with pytest.raises(ValueError, match=r"smoothing = 1.5 is not valid: expected 0 <= smoothing < 1"):
        smoothing.from_config({"smoothing": 1.5}, contract_task())


def test_label_smoothing_loss_is_what_label_smoothing_predicts(smoothing: type[Method]) -> None:
    """On the network's own training logits: (1 - eps) * cross-entropy + eps * the cross-entropy
    against the uniform distribution (mean over classes of -log p), summed over members and
    averaged over the batch; not the plain cross-entropy; eps = 0 gives the shared loss exactly."""
    task = contract_task()
    x, y = fixed_batch(task)
    eps = 0.2
    method = smoothing.from_config({"smoothing": eps}, task)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = method.build()
    inputs, targets = method.training_batch(x, y, torch.Generator().manual_seed(0))
    logits = model(inputs)
    b = targets.shape[1]
    log_p = logits.float().log_softmax(-1)
    plain = -log_p.gather(-1, targets.unsqueeze(-1)).sum() / b
    uniform = -log_p.mean(-1).sum() / b
    loss = training_loss(method, logits, targets)
    torch.testing.assert_close(loss, (1 - eps) * plain + eps * uniform)
    torch.testing.assert_close(plain, ensemble_loss(logits, targets))
    assert abs(loss.item() - plain.item()) > 1e-3 * plain.item()
    unsmoothed = smoothing.from_config({"smoothing": 0.0}, task)
    assert torch.equal(training_loss(unsmoothed, logits, targets), ensemble_loss(logits, targets))


def test_label_smoothing_trains_on_its_own_loss(smoothing: type[Method], cifar10_dir, tiny_run_config: dict, tmp_path: Path) -> None:
    """A tiny run of the plug-in completes; its epoch loss differs from the deterministic run of the
    same seed (same weights, batches, augmentation), and with eps = 0 it is that run, bit for bit."""
    root, _ = cifar10_dir
    smoothed = tiny_run(tiny_run_config, "label_smoothing", tmp_path, root, smoothing=0.2)
    assert smoothed["status"] == "completed" and smoothed["identity"]["method"] == "label_smoothing"
    assert smoothed["config"]["method"]["smoothing"] == 0.2
    plain = tiny_run(tiny_run_config, "deterministic", tmp_path, root)
    unsmoothed = tiny_run(tiny_run_config, "label_smoothing", tmp_path, root, smoothing=0.0)
    loss = {name: r["training"]["history"]["train"][0]["loss"] for name, r in [("0.2", smoothed), ("plain", plain), ("0.0", unsmoothed)]}
    assert all(math.isfinite(v) for v in loss.values())
    assert loss["0.0"] == loss["plain"] and loss["0.2"] != loss["plain"], loss
    assert unsmoothed["metrics"]["clean"] == plain["metrics"]["clean"]


# ---------------------------------------------------------------------------------------------
# Soft targets and broken loss hooks


def test_soft_targets_pass_check_method_and_train(cifar10_dir, tiny_run_config: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Smoothed labels as soft targets on the shared loss: the contract holds, the loss equals the
    label-smoothing hook's, and a run trains on them (counting its rows as the deterministic run does)."""
    load_plugin(tmp_path, monkeypatch, "plures_test_soft", SOFT)
    filename, code = doc_block("plugin-loss-example")
    load_plugin(tmp_path, monkeypatch, filename.removesuffix(".py"), code)
    results = run_checks("soft_smoothing")
    assert all(r.passed for r in results), results
    assert dict((r.name, r.message) for r in results)["training-targets"] == "targets [1, 12, 5] (probabilities), logits [1, 12, 5]"
    task = contract_task()
    x, y = fixed_batch(task)
    soft = get_method("soft_smoothing").from_config({}, task)
    hook = get_method("label_smoothing").from_config({"smoothing": 0.2}, task)
    logits = torch.randn(1, len(y), task.num_classes, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(training_loss(soft, logits, soft.training_batch(x, y, None)[1]),
                               training_loss(hook, logits, hook.training_batch(x, y, None)[1]))
    root, _ = cifar10_dir
    record = tiny_run(tiny_run_config, "soft_smoothing", tmp_path, root)
    assert record["status"] == "completed"
    rows = record["training"]["history"]["train"][0]["rows"]
    assert rows == tiny_run(tiny_run_config, "deterministic", tmp_path, root)["training"]["history"]["train"][0]["rows"] > task.num_classes


@pytest.mark.parametrize("name, failing, message", [
    ("per_example_loss", {"loss", "sgd-step"},
     "method 'per_example_loss': loss(logits [1, 12, 5], targets [1, 12]) returned a torch.float32 tensor of shape [1, 12]; "
     "expected a floating-point scalar tensor (sum over members, mean over the batch)"),
    ("detached_loss", {"loss", "sgd-step"}, "carries no gradient: it must be computed from the logits"),
    ("classes_only_loss", {"loss", "sgd-step"}, "loss(logits [1, 12, 5], targets [1, 12, 5]) raised RuntimeError"),
    ("not_probabilities", {"training-targets", "loss"},
     "soft training targets [1, 12, 5] are not probabilities: smallest 0, rows sum to 1 +- 1"),
])
def test_broken_loss_hooks_fail_check_method_naming_the_problem(name: str, failing: set[str], message: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The first failing check of each broken method says what is wrong."""
    load_plugin(tmp_path, monkeypatch, "plures_test_broken_loss", BROKEN)
    results = run_checks(name)
    assert {r.name for r in results if not r.passed} == failing, results
    [first] = [r for r in results if not r.passed][:1]
    assert message in first.message, first


def test_check_method_prints_the_broken_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    load_plugin(tmp_path, monkeypatch, "plures_test_broken_loss", BROKEN)
    assert cli.main(["check-method", "per_example_loss"]) == 1
    out = capsys.readouterr().out
    assert ("FAIL  loss              method 'per_example_loss': loss(logits [1, 12, 5], targets [1, 12]) returned a torch.float32 "
            "tensor of shape [1, 12]") in out
    assert out.splitlines()[-1] == f"{len(CHECKS) + len(ADVICE_CHECKS) - 2} passed, 2 failed"


def test_a_run_with_a_non_scalar_loss_stops_with_the_message(cifar10_dir, tiny_run_config: dict, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    root, _ = cifar10_dir
    load_plugin(tmp_path, monkeypatch, "plures_test_broken_loss", BROKEN)
    with pytest.raises(LossError, match=r"method 'per_example_loss': loss\(logits \[1, 32, 10\], targets \[1, 32\]\) returned "):
        tiny_run(tiny_run_config, "per_example_loss", tmp_path, root)
    [path] = (tmp_path / "runs").rglob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "failed" and record["error"]["type"] == "LossError"


def test_tutorial_table_lists_the_loss_hook() -> None:
    assert "| `loss(logits, targets)` | `ensemble_loss`" in doc_page("how-to/method-contract.md")
    assert "<!-- plugin-loss-example: smooth_labels.py -->" in doc_section("how-to/own-method.md", "A method with its own training loss")

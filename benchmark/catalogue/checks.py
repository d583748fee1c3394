"""The method contract as checks that any registered method (built-in or plug-in) must pass.

Each check takes a method class, a :class:`Task` and the method's options (and, by keyword, a
device: the CPU unless told), runs the method on a fixed random batch on that device, and returns a short description of what it saw; a violation raises
``AssertionError`` with a message that says what was expected. :func:`run_checks` runs them all and
returns ``(check name, passed, message)`` rows. The tests (``tests/test_methods_contract.py``) and
``python -m benchmark check-method NAME`` use them.

The checks: member logits ``[M, B, K]`` for every eval variant, with M its declared members; the
combination is the mean of the member probabilities; the training targets are ``[M, B']`` classes
or ``[M, B', K]`` probabilities with M = ``method.members``, and the network's training logits
match them; the method's training loss (:meth:`Method.loss`, through :func:`training_loss`) takes
those logits and targets and returns a finite scalar whose gradient reaches the logits and the
parameters; one SGD step lowers it on a fixed batch; an unknown option fails and lists the valid ones.

:data:`DEVICE_CHECKS` (run when named, e.g. on a GPU by ``benchmark.tools.gpu_check``) add a
training step under bf16 autocast, channels-last layouts (the same logits as the default layout,
finite gradients) and evaluation under the run's precision (every variant, no gradients).
:data:`ADVICE_CHECKS` are advice, not contract: the training forward traces into one torch.compile
graph (``check-method`` warns where it does not).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from contextlib import contextmanager
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn

from ..core.registry import unknown
from ..core.runtime import make_generator
from ..methods.base import EvalVariant, LossError, Method, Task, combine, training_loss
from .methods import get_method

BATCH = 12  # images in the fixed batch
SGD_LR = 0.02  # the step size of the one-step check
BOGUS_OPTION = "bogus"


def contract_task(backbone: str = "resnet8", backbone_options: dict[str, Any] | None = None, num_classes: int = 5,
                  image_size: int = 16) -> Task:
    """The small task the checks build methods for (default: ResNet-8 of width 8, 5 classes, 16 px)."""
    options = {"width": 8} if backbone_options is None else dict(backbone_options)
    return Task(num_classes=num_classes, backbone=backbone, backbone_options=options, image_size=image_size)


def fixed_batch(task: Task, n: int = BATCH, seed: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random batch (drawn on the CPU, then moved to ``device``): images ``[n, C, H, W]`` and labels ``[n]``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, task.in_channels, task.image_size, task.image_size, generator=g)
    y = torch.randint(0, task.num_classes, (n,), generator=g)
    return x.to(device), y.to(device)


class CheckResult(NamedTuple):
    name: str
    passed: bool
    message: str


@contextmanager
def _seeded(seed: int = 0, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's generators (initialisation, dropout masks; the CPU's and ``device``'s), restoring them afterwards."""
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        yield


def _built(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> tuple[Method, nn.Module]:
    """The method and its network, initialised on the CPU (the same weights on every device), moved to ``device``."""
    method = cls.from_config(dict(options), task)
    return method, method.build().to(device)


def _training_batch(method: Method, x: torch.Tensor, y: torch.Tensor) -> tuple[Any, torch.Tensor]:
    return method.training_batch(x, y, make_generator(x.device, "contract", 0))


def _train_loss(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with _seeded(0, x.device):  # the same dropout masks on every call
        inputs, targets = _training_batch(method, x, y)
        return training_loss(method, model(inputs), targets)


def _label(label: str) -> str:
    return repr(label) if label else "(default)"


def _variant_logits(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> list[tuple[EvalVariant, torch.Tensor]]:
    """Each eval variant of a freshly built network, with its eval-mode logits on the fixed batch."""
    out = []
    with _seeded(0, device):
        method, model = _built(cls, task, options, device)
        x, _ = fixed_batch(task, device=device)
        variants = method.eval_variants(model)
        assert variants, "eval_variants() returned no variant"
        assert variants[0].members == method.test_members(), (
            f"the first eval variant declares members={variants[0].members}, method.test_members() is {method.test_members()}")
        for v in variants:
            v.network.eval()
            with torch.no_grad():
                out.append((v, v.network(x)))
    return out


def check_member_logits(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """Every eval variant returns member logits ``[M, B, K]``, M its declared members, and
    declares at least one forward pass."""
    seen = []
    for v, logits in _variant_logits(cls, task, options, device):
        shape = list(logits.shape)
        assert logits.dim() == 3 and shape[1:] == [BATCH, task.num_classes], (
            f"variant {_label(v.label)}: logits of shape {shape} for {BATCH} images of {task.num_classes} classes; expected [M, {BATCH}, {task.num_classes}]")
        assert shape[0] == v.members, f"variant {_label(v.label)}: logits have {shape[0]} members, the variant declares members={v.members}"
        assert v.forward_passes >= 1, f"variant {_label(v.label)}: forward_passes={v.forward_passes}, expected >= 1"
        seen.append(f"{_label(v.label)} {shape}")
    return "logits " + ", ".join(seen)


def check_combination(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """``combine`` of every variant's logits is the mean of the member probabilities, a distribution."""
    worst = 0.0
    for v, logits in _variant_logits(cls, task, options, device):
        probs = combine(logits).exp()
        expected = torch.softmax(logits.double(), -1).mean(0).to(probs.dtype)
        error = (probs - expected).abs().max().item()
        assert error <= 1e-5 + 1e-5 * expected.abs().max().item(), (
            f"variant {_label(v.label)}: combined probabilities differ from the mean of member probabilities by {error:.3g}")
        total = (probs.sum(-1) - 1).abs().max().item()
        assert total <= 1e-5, f"variant {_label(v.label)}: combined probabilities sum to 1 +- {total:.3g}"
        assert bool(torch.isfinite(probs).all()), f"variant {_label(v.label)}: non-finite probabilities"
        worst = max(worst, error)
    return f"mean of member probabilities (max deviation {worst:.1e})"


def _targets_problem(targets: Any, members: int, num_classes: int) -> str | None:
    """What is wrong with training targets (None: ``[M, B']`` classes in ``[0, K)`` or ``[M, B', K]``
    probabilities, with M = ``members``)."""
    expected = f"expected [M, B'] class indices or [M, B', {num_classes}] probabilities with M = members = {members}"
    if not isinstance(targets, torch.Tensor):
        return f"training targets are a {type(targets).__name__}; {expected}"
    shape = list(targets.shape)
    if targets.dim() not in (2, 3) or (targets.dim() == 3 and shape[2] != num_classes):
        return f"training targets of shape {shape}; {expected}"
    if shape[0] != members:
        return f"training targets have {shape[0]} members on their first axis; method.members is {members}"
    if targets.dim() == 2:
        if targets.is_floating_point() or targets.dtype == torch.bool:
            return f"training targets {shape} of dtype {targets.dtype}: [M, B'] targets are integer classes (soft targets are [M, B', K] probabilities)"
        if targets.numel() and not (0 <= int(targets.min()) and int(targets.max()) < num_classes):
            return f"training targets {shape} hold classes {int(targets.min())}..{int(targets.max())}; expected classes in [0, {num_classes - 1}]"
        return None
    if not targets.is_floating_point():
        return f"soft training targets {shape} of dtype {targets.dtype}; [M, B', K] targets are floating-point probabilities"
    low, total = float(targets.min()), (targets.double().sum(-1) - 1).abs().max().item()
    if low < 0 or total > 1e-4:
        return f"soft training targets {shape} are not probabilities: smallest {low:.3g}, rows sum to 1 +- {total:.3g}"
    return None


def _training_logits(method: Method, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's training targets for the batch (checked: :func:`_targets_problem`) and the
    network's training logits for its inputs (checked: ``[M, B', K]`` matching the targets)."""
    inputs, targets = _training_batch(method, x, y)
    problem = _targets_problem(targets, method.members, method.task.num_classes)
    assert problem is None, problem
    logits = model(inputs)
    expected = [*targets.shape[:2], method.task.num_classes]
    assert list(logits.shape) == expected, f"training logits of shape {list(logits.shape)} for targets {list(targets.shape)}; expected {expected}"
    return targets, logits


def check_training_targets(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """``training_batch`` gives targets ``[M, B']`` (classes) or ``[M, B', K]`` (probabilities) with
    M = ``method.members``, and the network's training logits are ``[M, B', K]``."""
    with _seeded(0, device):
        method, model = _built(cls, task, options, device)
        model.train()
        x, y = fixed_batch(task, device=device)
        targets, logits = _training_logits(method, model, x, y)
    kind = "probabilities" if targets.dim() == 3 else "classes"
    return f"targets {list(targets.shape)} ({kind}), logits {list(logits.shape)}"


def check_loss(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """The method's training loss (:meth:`Method.loss`) of a freshly built network, given its training
    logits ``[M, B', K]`` and targets, is a finite floating-point scalar, and its gradient reaches the
    logits (finite, not zero everywhere) and the parameters (finite)."""
    with _seeded(0, device):
        method, model = _built(cls, task, options, device)
        model.train()
        x, y = fixed_batch(task, device=device)
        with _seeded(0, device):  # the masks of the sgd-step check's first loss
            targets, logits = _training_logits(method, model, x, y)
        logits.retain_grad()
        called = f"loss(logits {list(logits.shape)}, targets {list(targets.shape)})"
        try:
            loss = training_loss(method, logits, targets)
        except LossError as exc:
            raise AssertionError(str(exc)) from None
        except Exception as exc:  # the method's loss rejects the method's own targets
            raise AssertionError(f"{called} raised {type(exc).__name__}: {exc}") from None
        assert math.isfinite(loss.item()), f"{called} is {loss.item()}"
        assert loss.requires_grad, f"{called} = {loss.item():.4f} carries no gradient: it must be computed from the logits (no .item(), .detach() or torch.no_grad())"
        loss.backward()
        assert logits.grad is not None, f"{called}: no gradient reached the logits"
        assert bool(torch.isfinite(logits.grad).all()), f"{called}: non-finite gradient with respect to the logits"
        assert bool(logits.grad.ne(0).any()), f"{called}: the gradient with respect to the logits is zero everywhere"
        grads = _finite_grads(model)
    return f"{called} = {loss.item():.4f}, {grads} finite gradients"


def check_sgd_step(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """One SGD step (no weight decay, the method's parameter groups) lowers the loss on a fixed batch."""
    with _seeded(0, device):
        method, model = _built(cls, task, options, device)
        model.train()
        x, y = fixed_batch(task, device=device)
        opt = torch.optim.SGD(method.param_groups(model, 0.0), lr=SGD_LR)
        before = _train_loss(method, model, x, y)
        opt.zero_grad()
        before.backward()
        opt.step()
        with torch.no_grad():
            after = _train_loss(method, model, x, y)
    assert after.item() < before.item(), f"one SGD step (lr {SGD_LR}) did not lower the loss: {before.item():.5f} -> {after.item():.5f}"
    return f"loss {before.item():.4f} -> {after.item():.4f}"


def check_unknown_option(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:  # noqa: ARG001 - no tensors
    """An unknown option raises ``ValueError`` that names it and lists every valid option."""
    try:
        cls.from_config({**options, BOGUS_OPTION: 1}, task)
    except ValueError as exc:
        message = str(exc)
    else:
        raise AssertionError(f"from_config accepted the unknown option {BOGUS_OPTION!r}; it must raise ValueError listing the valid options")
    pattern = rf"unknown option\(s\) \[{re.escape(repr(BOGUS_OPTION))}\] for method {re.escape(repr(cls.name))}; valid options: "
    assert re.search(pattern, message), f"the error {message!r} does not match {pattern!r}"
    valid = [f.name for f in dataclasses.fields(cls.Options)]
    missing = [name for name in valid if name not in message.split("valid options:", 1)[1]]
    assert not missing, f"the error {message!r} does not list the valid option(s) {missing}"
    return f"lists {', '.join(sorted(valid))}"


def _channels_last(model: nn.Module) -> nn.Module:
    """Every 4-D parameter and buffer in channels-last layout (what training does with ``channels_last``)."""
    return model._apply(lambda t: t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t)


@contextmanager
def _exact_fp32() -> Iterator[None]:
    """float32 without TF32 (cuDNN allows it by default on CUDA), so that two layouts compare at float32 precision."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=torch.backends.cudnn.benchmark,
                                        deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


def _autocast(precision: str, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def _finite_grads(model: nn.Module) -> int:
    """The number of parameters with a gradient; raises if any gradient is not finite."""
    with_grad = [(n, p.grad) for n, p in model.named_parameters() if p.grad is not None]
    bad = [n for n, g in with_grad if not bool(torch.isfinite(g).all())]
    assert not bad, f"non-finite gradients in {bad[:3]}"
    assert with_grad, "no parameter received a gradient"
    return len(with_grad)


def check_bf16_autocast(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """A training step under bf16 autocast: logits ``[M, B', K]``, a finite loss and finite gradients,
    and a loss within 0.1 (relative) of the float32 loss on the same weights and masks."""
    device = torch.device(device)
    with _seeded(0, device):
        method, model = _built(cls, task, options, device)
        model.train()
        x, y = fixed_batch(task, device=device)
        reference = _train_loss(method, model, x, y).item()
        with _seeded(0, device):
            inputs, targets = _training_batch(method, x, y)
            with _autocast("bf16", device):
                logits = model(inputs)
        assert list(logits.shape) == [*targets.shape, task.num_classes], f"bf16 training logits of shape {list(logits.shape)}"
        loss = training_loss(method, logits, targets)
        assert math.isfinite(loss.item()), f"the bf16 loss is {loss.item()}"
        loss.backward()
        grads = _finite_grads(model)
    gap = abs(loss.item() - reference) / max(abs(reference), 1e-6)
    assert gap <= 0.1, f"bf16 loss {loss.item():.4f} differs from the float32 loss {reference:.4f} by {gap:.1%}"
    return f"loss {loss.item():.4f} (fp32 {reference:.4f}), {grads} finite gradients"


def check_channels_last(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """Channels-last weights and inputs give the default layout's training logits (float32, within
    1e-3 relative; for a stochastic forward, logits of the same shape) and finite gradients."""
    device = torch.device(device)
    worst = 0.0
    with _seeded(0, device), _exact_fp32():
        method, model = _built(cls, task, options, device)
        x, y = fixed_batch(task, device=device)
        model.train()
        with _seeded(0, device):
            inputs, _ = _training_batch(method, x, y)
            reference = model(inputs).detach()
        with _seeded(1, device):  # another seed: does the training forward draw masks (dropout)?
            stochastic = not torch.equal(model(inputs).detach(), reference)
        _channels_last(model)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        with _seeded(0, device):
            inputs, targets = _training_batch(method, x_cl, y)
            logits = model(inputs)
        worst = max(worst, ((logits.detach() - reference).norm() / reference.norm().clamp_min(1e-12)).item())
        training_loss(method, logits, targets).backward()
        grads = _finite_grads(model)
    if stochastic:  # masks are drawn in memory order, so a layout draws other masks: shapes and gradients only
        return f"stochastic training forward (masks depend on the layout): logits {list(logits.shape)}, {grads} finite gradients"
    assert worst <= 1e-3, f"channels-last training logits differ from the default layout's by {worst:.2e} (relative)"
    return f"training logits within {worst:.1e} of the default layout, {grads} finite gradients"


def check_evaluation(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu", precision: str = "bf16") -> str:
    """Every eval variant in eval mode, without gradients, under ``precision`` autocast and channels-last:
    member logits ``[M, B, K]`` and combined probabilities that form a finite distribution."""
    device = torch.device(device)
    seen = []
    with _seeded(0, device), torch.no_grad():
        method, model = _built(cls, task, options, device)
        _channels_last(model)
        x, _ = fixed_batch(task, device=device)
        x = x.contiguous(memory_format=torch.channels_last)
        for v in method.eval_variants(model):
            v.network.eval()
            with _autocast(precision, device):
                logits = v.network(x)
            assert list(logits.shape) == [v.members, BATCH, task.num_classes], (
                f"variant {_label(v.label)}: {precision} eval logits of shape {list(logits.shape)}; expected {[v.members, BATCH, task.num_classes]}")
            probs = combine(logits.float()).exp()
            assert bool(torch.isfinite(probs).all()), f"variant {_label(v.label)}: non-finite probabilities under {precision}"
            total = (probs.sum(-1) - 1).abs().max().item()
            assert total <= 1e-4, f"variant {_label(v.label)}: combined probabilities sum to 1 +- {total:.3g}"
            seen.append(f"{_label(v.label)} {list(logits.shape)}")
    return f"{precision} eval " + ", ".join(seen)


def check_compile(cls: type[Method], task: Task, options: dict[str, Any], device: torch.device | str = "cpu") -> str:
    """The training forward traces into one torch.compile graph (``torch._dynamo.explain``: traced, not
    compiled). A graph break is no error: the step still trains, in pieces with eager Python between
    them, but that can make a compiled step slower than an eager one (MC dropout's mask draw once made
    it twice as slow). Suites that set ``train.compile = true`` (the quick suite) compile the step."""
    import torch._dynamo  # here, not at import: dynamo's import is slow and only this check needs it

    device = torch.device(device)
    method, model = _built(cls, task, options, device)
    x, y = fixed_batch(task, device=device)
    model.train()
    with _seeded(0, device):
        inputs, _ = _training_batch(method, x, y)
        explained = torch._dynamo.explain(model)(inputs)
    if explained.graph_break_count:
        reasons = sorted({(str(r.reason).strip().splitlines() or [""])[0][:160] for r in explained.break_reasons})
        raise AssertionError(
            f"{explained.graph_break_count} graph break(s) in the training forward ({'; '.join(reasons[:3])}): "
            "a suite that compiles (train.compile = true, as the quick suite) runs the step in pieces, which can be "
            "slower than eager; remove the breaks or set train.compile = false on the method's rows")
    return f"the training forward traces into one graph ({explained.op_count} operators)"


CHECKS: dict[str, Callable[..., str]] = {
    "member-logits": check_member_logits,
    "combination": check_combination,
    "training-targets": check_training_targets,
    "loss": check_loss,
    "sgd-step": check_sgd_step,
    "unknown-option": check_unknown_option,
}

# Run when named (``run_checks(..., checks=ALL_CHECKS)``): what a GPU adds to the contract.
DEVICE_CHECKS: dict[str, Callable[..., str]] = {
    "bf16-autocast": check_bf16_autocast,
    "channels-last": check_channels_last,
    "evaluation": check_evaluation,
}

ALL_CHECKS: list[str] = [*CHECKS, *DEVICE_CHECKS]

# Advice, not contract: ``check-method`` runs these after the contract and reports a failure as a warning
# (its exit status stays 0); ``run_checks`` runs them when named.
ADVICE_CHECKS: dict[str, Callable[..., str]] = {
    "compile": check_compile,
}


def run_checks(method: str | type[Method], task: Task | None = None, options: dict[str, Any] | None = None,
               checks: list[str] | None = None, device: torch.device | str = "cpu") -> list[CheckResult]:
    """Run the contract checks (default: those of :data:`CHECKS`; :data:`DEVICE_CHECKS` and
    :data:`ADVICE_CHECKS` when named) on a method (a registered name or a class), on ``device``
    (default: the CPU).

    Options that the method rejects raise ``ValueError`` before any check runs; a check that
    fails, or crashes, gives a row with ``passed=False`` and the reason.
    """
    known = {**CHECKS, **DEVICE_CHECKS, **ADVICE_CHECKS}
    cls = get_method(method) if isinstance(method, str) else method
    task = task or contract_task()
    options = dict(options or {})
    bad = [name for name in checks or [] if name not in known]
    if bad:
        raise unknown("contract check", bad[0], list(known))
    cls.from_config(dict(options), task)  # bad options are the caller's error, not the method's
    results = []
    for name in checks or list(CHECKS):
        try:
            results.append(CheckResult(name, True, known[name](cls, task, options, device=device)))
        except AssertionError as exc:
            results.append(CheckResult(name, False, str(exc) or "assertion failed"))
        except Exception as exc:  # a crash in build, forward or the step is a failure of the method
            results.append(CheckResult(name, False, f"{type(exc).__name__}: {exc}"))
    return results

"""Planning: a sweep expanded into its array tasks (:func:`expand`), the member runs each run reuses
found by probing its method on the meta device (:func:`member_requests`), and each task's payload.

A run whose method obtains other runs' networks through ``member_model`` (a deep ensemble's
members, a subnetwork ensemble's parent) needs them first. Its method's ``run`` is called with a
:class:`PlanningContext`, under ``torch.device("meta")``: ``member_model`` records the request and
returns an untrained network on the meta device, and the probe ends, by the planning context's own
stop signal, when the method trains (``fit``) or reads a tensor's values (a scalar, a copy off the
meta device, a value-dependent shape): whatever it does then needs real data. Any other error fails
the plan, naming the run and its method. Requests made after that point are not seen here; such a
member is then trained inside the run's own task.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from ..core import config as C
from ..methods.base import Method
from ..catalogue.methods import build_method
from ..catalogue.plugins import ENV_VAR as PLUGINS_VARIABLE  # PLURES_PLUGINS
from ..runner import StageContextBase, member_config, run_id_of
from .spec import Sweep

class PlanError(C.ConfigError):
    """A run's method could not describe the member runs it reuses (its error is the cause)."""


@dataclass
class SweepTask:
    """One array task: a run of the sweep (``kind="run"``, writes records) or a member run that
    only another run reuses (``kind="member"``: trains and saves its final weights)."""

    kind: str
    run_id: str
    suite: str
    name: str
    seed: int
    config: dict[str, Any]  # run: the run config; member: the resolved config of the run that reuses it
    overrides: dict[str, Any] | None = None  # member: RunContext.member_model's overrides
    needs: list[str] = field(default_factory=list)  # run ids whose weights this task reuses
    stage: int = 0  # array index: after every array of a lower stage

    def payload(self, sweep: Sweep) -> dict[str, Any]:
        """What the job's :func:`benchmark.sweep.jobs.run_task` receives; ``plugins`` is this
        process's ``PLURES_PLUGINS`` (None when unset), which the job sets before building anything,
        so that it resolves the same methods as the launch."""
        p = sweep.paths
        return {"kind": self.kind, "run_id": self.run_id, "config": self.config, "overrides": self.overrides, "device": sweep.device,
                "sync_bn": sweep.sync_bn, "log_dir": str(p["log_dir"]),
                "env": {k: (str(p[k]) if p[k] is not None else None) for k in ("data_dir", "cache_dir", "results_dir", "checkpoint_dir")},
                "plugins": os.environ.get(PLUGINS_VARIABLE)}


# --------------------------------------------------------------------------- probing a method


class PlanningStop(BaseException):
    """The planning context's stop signal: the probed method now needs real data (it trains, or
    reads a tensor's values), so its member requests so far are all that planning can see.
    A BaseException, so that a method's own ``except Exception`` cannot turn it into another error."""


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _copies_off_meta(func: Any, args: tuple, kwargs: dict[str, Any]) -> bool:
    """Whether ``func`` copies a meta tensor to a real device (``.cpu()``, ``.to(...)``, ``copy_``)."""
    packet = func.overloadpacket
    if packet is torch.ops.aten._to_copy:
        device = kwargs.get("device")
        return device is not None and torch.device(device).type != "meta" and args[0].is_meta
    if packet is torch.ops.aten.copy_:
        return args[1].is_meta and not args[0].is_meta
    return False


class _ValueGuard(TorchDispatchMode):
    """Raises :class:`PlanningStop` at the first operation that needs a meta tensor's values."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        if torch.Tag.data_dependent_output in func.tags:  # item(), bool(), equal(), ...
            if any(t.is_meta for t in _tensors((args, kwargs))):
                raise PlanningStop(f"the method reads tensor values ({func})")
        elif _copies_off_meta(func, args, kwargs):
            raise PlanningStop(f"the method reads tensor values ({func})")
        elif torch.Tag.dynamic_output_shape in func.tags:  # e.g. boolean-mask indexing: the shape depends on values
            try:
                return func(*args, **kwargs)
            except NotImplementedError:
                if any(t.is_meta for t in _tensors((args, kwargs))):
                    raise PlanningStop(f"the method reads tensor values ({func})") from None
                raise
        return func(*args, **kwargs)


def _probe_method(resolved: dict[str, Any]) -> Method:
    # Shapes do not matter on the meta device: any class count and image size will do.
    return build_method(resolved, num_classes=10, image_size=32)


class PlanningContext(StageContextBase):
    """The stage context a method's ``run`` is probed with (:class:`benchmark.methods.base.StageContext`):
    ``member_model`` records its overrides in ``requests`` and returns an untrained network on the
    meta device; ``fit`` raises :class:`PlanningStop`. Trains nothing, reads no data."""

    def __init__(self, resolved: dict[str, Any]) -> None:
        super().__init__(resolved, run_id_of(resolved), torch.device("meta"))
        self.requests: list[dict[str, Any]] = []

    def fit(self, model: nn.Module, method: Method, stage: str = "train", **train_changes: Any) -> list[dict[str, Any]]:
        raise PlanningStop(f"the method trains (stage {stage!r})")

    def member_model(self, overrides: dict[str, Any]) -> nn.Module:
        self.requests.append(copy.deepcopy(overrides))
        return super().member_model(overrides)

    def _member_network(self, sub: dict[str, Any], sub_id: str) -> tuple[nn.Module, bool]:
        with torch.device("meta"):
            return _probe_method(sub).build(), False


def member_requests(resolved: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``member_model`` overrides a run's method asks for (e.g. a deep ensemble's M member
    runs), found by running its ``run`` against a :class:`PlanningContext`: no data, nothing
    trained. Raises :class:`PlanError` (naming the run id and method) when the method fails."""
    ctx = PlanningContext(resolved)
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]), _ValueGuard():
            _probe_method(resolved).run(ctx)
    except PlanningStop:
        pass
    except Exception as exc:
        raise PlanError(f"run {ctx.run_id} (method {resolved['run']['method']!r}): cannot plan the member runs it reuses: "
                        f"{type(exc).__name__}: {exc}") from exc
    return ctx.requests


# --------------------------------------------------------------------------- expansion


def _override(key: str, value: Any) -> dict[str, Any]:
    table, name = key.split(".")
    return {table: {name: copy.deepcopy(value)}}


def _select(runs: list[dict[str, Any]], sweep: Sweep, suite: str) -> list[dict[str, Any]]:
    for key, values, get in (("methods", sweep.methods, lambda r: {r["run"].get("name", ""), r["run"].get("method", "deterministic")}),
                             ("datasets", sweep.datasets, lambda r: {r["run"].get("dataset", "cifar10-jpeg")}),
                             ("backbones", sweep.backbones, lambda r: {r["run"].get("backbone", "resnet20")})):
        if not values:
            continue
        available = sorted(set().union(*(get(r) for r in runs)) - {""})
        unknown = sorted(set(values) - set(available))
        if unknown:
            raise C.ConfigError(f"{sweep.path}: {key} {unknown} match no run of suite {suite!r}; valid choices: {', '.join(available)}")
        runs = [r for r in runs if get(r) & set(values)]
    return runs


def _reseed(runs: list[dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """The suite's runs with ``seeds`` instead of their own (one per distinct run x seed)."""
    seen, out = set(), []
    for cfg in runs:
        key = json.dumps({**cfg, "run": {k: v for k, v in cfg["run"].items() if k != "seed"}}, sort_keys=True, default=str)
        if key in seen:
            continue
        seen.add(key)
        out.extend(C.merge(cfg, {"run": {"seed": s}}) for s in seeds)
    return out


def _run_configs(sweep: Sweep) -> list[dict[str, Any]]:
    """The run configs of the sweep, in order: its suites' runs, filtered, reseeded, with [set] and each [grid] point."""
    configs = []
    for suite in sweep.suites:
        meta, runs = C.load_suite(suite)
        runs = _select(runs, sweep, meta["name"])
        if sweep.seeds is not None:
            runs = _reseed(runs, sweep.seeds)
        for cfg in runs:
            for key, value in sweep.set.items():
                cfg = C.merge(cfg, _override(key, value))
            keys = list(sweep.grid)
            for combo in itertools.product(*(sweep.grid[k] for k in keys)):
                point = cfg
                for key, value in zip(keys, combo):
                    point = C.merge(point, _override(key, value))
                label = ",".join(f"{k}={v}" for k, v in zip(keys, combo) if len(sweep.grid[k]) > 1)
                if label:
                    point = C.merge(point, {"run": {"name": f"{point['run'].get('name', '')}[{label}]"}})
                configs.append(point)
    return configs


def expand(sweep: Sweep) -> list[SweepTask]:
    """Every task of the sweep, in submission order (stage, then sweep order); ids are unique."""
    tasks: dict[str, SweepTask] = {}
    members: dict[str, SweepTask] = {}

    def add_needs(task: SweepTask, resolved: dict[str, Any], depth: int = 0) -> None:
        """Members that ``task``'s run obtains through member_model (and, recursively, theirs)."""
        if depth > 4:
            return
        for overrides in member_requests(resolved):
            sub = member_config(resolved, overrides)
            sub_id = run_id_of(sub)
            task.needs.append(sub_id)
            if sub_id not in tasks and sub_id not in members:
                r = sub["run"]
                members[sub_id] = SweepTask("member", sub_id, task.suite, f"{r['method']} (member)", int(r["seed"]), resolved, overrides=overrides)
                add_needs(members[sub_id], sub, depth + 1)

    for cfg in _run_configs(sweep):
        resolved = C.resolve(cfg)  # unknown tables or keys fail here, naming them
        rid = run_id_of(resolved)
        if rid in tasks:
            continue
        r = resolved["run"]
        tasks[rid] = SweepTask("run", rid, r["suite"], r["name"] or r["method"], int(r["seed"]), cfg)
    for rid in list(tasks):
        add_needs(tasks[rid], C.resolve(tasks[rid].config))
    for rid in list(members):
        if rid in tasks:  # a member that is also a run of the sweep: the run (with its record) covers it
            del members[rid]
    everything = {**tasks, **members}

    def stage(t: SweepTask, seen: tuple[str, ...] = ()) -> int:
        needs = [everything[n] for n in t.needs if n in everything and n not in seen]
        return 1 + max(stage(n, (*seen, t.run_id)) for n in needs) if needs else 0

    ordered = list(members.values()) + list(tasks.values())
    for t in ordered:
        t.stage = stage(t)
    return sorted(ordered, key=lambda t: t.stage)

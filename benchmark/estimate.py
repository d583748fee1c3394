"""What a bench has left to do, in hours of this machine's time, from measured step times.

:func:`estimate_runs` takes the resolved runs of a bench in the order the bench runs them and, for
each, the state the runner decides from disk (:func:`benchmark.runner.run_state`: done, resume or
start), the training it has left and where each figure comes from:

* **a record**: a finished record of the same training configuration at another seed (its run id
  with the seed set aside), under the results folder, made on this machine's kind of device (on a
  CPU its model and vector instruction sets: the same network trains 3x slower on an AVX2 EPYC than
  on an AVX-512 one, so another kind's rate would mislead): the seconds per epoch of each of its own
  training stages (``training.history``), and its evaluation time (the record's wall time, from
  ``started`` to its last variant's ``created``, less its training);
* else **a probe**: the method's stages are run against an :class:`EstimatingContext`, whose
  ``fit`` times a few real training steps of the stage at the run's shapes on random data
  (:func:`benchmark.training.probe.probe_step_seconds`) and trains nothing else; seconds per epoch
  = step time x steps per epoch. Evaluation is then not estimated (said per run and in the total).

A multi-stage method's member runs (a deep ensemble's members, a subnetwork ensemble's parent,
obtained through ``member_model``) count where the harness will train them: not when their final
weights exist (in the checkpoint folder, or in a store of kept weights: ``Environment.weights_dirs``),
nor when an earlier run of the bench trains them; otherwise their training is added to the first
run that needs them (a member whose record is done but whose final weights are not on this machine
is trained again: said so). A run that resumes counts the epochs its checkpoint has
left (an epoch stopped mid-way counts whole). Not estimated: the cost pass and the leaderboard at
the end of a bench (minutes), and anything after a stage the probe cannot follow (a method that
reads trained values to decide what to train next is probed up to that point).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .catalogue.methods import build_method
from .core import config as C
from .core.runtime import Environment, select_device
from .core.cpu import cpu_facts
from .data.base import load_dataset, resolve_cache_dir
from .leaderboard.study import device_kind
from .methods.base import Method
from .records import load_records
from .runner import RunState, StageContextBase, find_final_weights, run_id_of, run_state
from .training.precision import choose_precision
from .training.probe import StepProbe, probe_step_seconds

__all__ = ["EstimatingContext", "Part", "RunEstimate", "StagePlan", "busy_warning", "estimate_runs", "format_estimates", "machine_kind", "training_key"]

PROBE_STEPS = 4


def training_key(resolved: dict[str, Any]) -> str:
    """The run id with the seed set aside: runs of one training configuration at any seed share it."""
    return run_id_of(C.merge(resolved, {"run": {"seed": 0}}))


@dataclass
class StagePlan:
    """One training stage a method asked for: its name, settings and (when probed) the step probe."""

    stage: str
    config: C.TrainConfig
    probe: StepProbe | None = None


class EstimatingContext(StageContextBase):
    """The stage context a method's ``run`` is called with to learn what it trains
    (:class:`benchmark.methods.base.StageContext`): ``fit`` lists the stage in ``stages`` and, when
    ``probe(stage)`` says so, times a few real steps of it (:func:`probe_step_seconds`), training
    nothing more; ``member_model`` lists the member run and returns its untrained network."""

    def __init__(self, resolved: dict[str, Any], device: torch.device, num_classes: int, image_size: int,
                 probe: Callable[[str], bool] = lambda stage: True, probe_steps: int = PROBE_STEPS, cache_dir: str | None = None) -> None:
        super().__init__(resolved, run_id_of(resolved), device)
        self.cache_dir = resolve_cache_dir(cache_dir)  # where train.precision = "auto" keeps its measurements, as the run
        self.num_classes, self.image_size, self.probe_steps = num_classes, image_size, probe_steps
        self.should_probe = probe
        self.stages: list[StagePlan] = []
        self.member_configs: dict[str, dict[str, Any]] = {}

    def fit(self, model: nn.Module, method: Method, stage: str = "train", **train_changes: Any) -> list[dict[str, Any]]:
        cfg = self.train_config(**train_changes)
        probe = None
        if self.should_probe(stage):
            if cfg.precision == "auto":  # the precision the run will choose (measured as it will be; cached)
                cfg = dataclasses.replace(cfg, precision=choose_precision(model, method, cfg, image_size=self.image_size,
                                                                          in_channels=method.task.in_channels, device=self.device,
                                                                          cache_dir=self.cache_dir).used)
            probe = probe_step_seconds(model, method, cfg, num_classes=self.num_classes, image_size=self.image_size,
                                       in_channels=method.task.in_channels, device=self.device, steps=self.probe_steps)
        self.stages.append(StagePlan(stage, cfg, probe))
        return []

    def _member_network(self, sub: dict[str, Any], sub_id: str) -> tuple[nn.Module, bool]:
        self.member_configs[sub_id] = sub
        return build_method(sub, self.num_classes, self.image_size).build().to(self.device), False


def discover(resolved: dict[str, Any], device: torch.device, num_classes: int, image_size: int,
             probe: Callable[[str], bool], cache_dir: str | None = None) -> EstimatingContext:
    """Run the method's stages against an :class:`EstimatingContext`. An error after the method has
    asked for a stage or a member (e.g. it checks what training produced) ends the discovery there;
    an error before that is the run's own and is raised, naming the run."""
    ctx = EstimatingContext(resolved, device, num_classes, image_size, probe, cache_dir=cache_dir)
    method = build_method(resolved, num_classes, image_size)
    try:
        with torch.random.fork_rng(devices=[]):
            method.run(ctx)
    except Exception as exc:  # noqa: BLE001 - after a stage or member the method may read what training would have produced
        if not ctx.stages and not ctx.members:
            raise C.ConfigError(f"run {ctx.run_id} (method {resolved['run']['method']!r}): cannot estimate what it trains: "
                                f"{type(exc).__name__}: {exc}") from exc
    return ctx


# ------------------------------------------------------------------------------------------------
# what finished records say


@dataclass(frozen=True)
class Measured:
    """What the finished records of one training configuration measured: seconds per epoch per own
    stage, the evaluation seconds (None: not derivable) and the record that said so."""

    stage_rate: dict[str, float]
    eval_seconds: float | None
    source: str


def _time(text: str) -> _dt.datetime:
    return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))


def machine_kind(device: torch.device) -> str:
    """This machine's kind of ``device`` as a record's :func:`benchmark.leaderboard.study.device_kind` names it:
    on a CPU its model and vector instruction sets, on a GPU the GPU's name."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device_kind({"provenance": {"device": "cpu", "cpu": cpu_facts()}})


def measured_by_key(results_dir: Path, kind: str | None = None) -> dict[str, Measured]:
    """``training_key -> Measured`` from the completed records under ``results_dir`` (the newest
    training run of each key; its variants' records together give its evaluation time); ``kind``:
    only records made on that kind of device (:func:`machine_kind`)."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for rec in load_records(results_dir).records:
        if kind is not None and device_kind(rec) != kind:
            continue
        if isinstance(rec.get("config"), dict) and rec.get("training_run_id"):
            by_run.setdefault(str(rec["training_run_id"]), []).append(rec)
    out: dict[str, tuple[str, Measured]] = {}
    for run_id, recs in by_run.items():
        first = recs[0]
        training = first.get("training") or {}
        members = {str(m.get("run_id")) for m in training.get("members") or [] if isinstance(m, dict)}
        history = training.get("history") or {}
        rate = {stage: sum(float(e.get("seconds", 0.0)) for e in epochs) / len(epochs)
                for stage, epochs in history.items() if stage not in members and isinstance(epochs, list) and epochs}
        try:
            wall = (max(_time(r["created"]) for r in recs) - _time(first["started"])).total_seconds()
            evaluation = wall - float((first.get("cost") or {}).get("train_seconds") or 0.0)
        except (KeyError, TypeError, ValueError):
            evaluation = -1.0
        prov = first.get("provenance") or {}
        cpu = (prov.get("cpu") or {}).get("model") if isinstance(prov.get("cpu"), dict) else None
        where = f"{Path(str(first.get('_path', run_id))).name}, {prov.get('hostname', '?')}, {cpu or prov.get('device_name', '?')}"
        try:
            key = training_key(first["config"])
        except (KeyError, TypeError, AttributeError):  # a record older than some config table: not comparable
            continue
        newest = max(str(r.get("created")) for r in recs)
        if key not in out or newest > out[key][0]:
            out[key] = (newest, Measured(rate, evaluation if evaluation >= 0 else None, f"record {where}"))
    return {k: m for k, (_, m) in out.items()}


# ------------------------------------------------------------------------------------------------
# the estimate


@dataclass(frozen=True)
class Part:
    """One piece of a run's remaining work: ``what`` (a stage, a member, evaluation), ``seconds``
    (None: not estimated), ``source`` (where the figure comes from, or why there is none) and the
    ``detail`` of the figure (a rate)."""

    what: str
    seconds: float | None
    source: str
    detail: str = ""  # e.g. the rate: "56.3 s/epoch"


@dataclass
class RunEstimate:
    """A run of the bench: its ``label``, :class:`RunState` and remaining ``parts``."""

    label: str
    state: RunState
    parts: list[Part] = field(default_factory=list)

    @property
    def train_seconds(self) -> float:
        return sum(p.seconds or 0.0 for p in self.parts if p.what != "evaluation")

    @property
    def eval_seconds(self) -> float | None:
        ev = [p for p in self.parts if p.what == "evaluation"]
        return ev[0].seconds if ev else 0.0

    def describe(self) -> str:
        """``<total>: <part> <time> [<source>]; ...`` (a source said once: later parts with it say ``[same]``)."""
        if self.state.action == "skip":
            return "nothing left"
        said, texts = set(), []
        for p in self.parts:
            source = ", ".join(t for t in (p.detail, "same source" if p.source in said else p.source) if t)
            said.add(p.source)
            texts.append(f"{p.what} {_hours(p.seconds)} [{source}]" if p.seconds is not None else f"{p.what} not estimated [{source}]")
        total = self.train_seconds + (self.eval_seconds or 0.0)
        return f"{_hours(total)}{'+' if self.eval_seconds is None else ''}: " + "; ".join(texts)


def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    return f"{seconds / 3600:.2f} h" if seconds >= 360 else f"{seconds:.0f} s"


class _Estimator:
    def __init__(self, env: Environment, probe_steps: int) -> None:
        self.env, self.probe_steps = env, probe_steps
        self.device = select_device(env.device)
        self.measured = measured_by_key(Path(env.results_dir), machine_kind(self.device))
        self.datasets: dict[str, Any] = {}
        self.probes: dict[tuple[str, str], StepProbe] = {}  # (training key, stage) -> probe: one per configuration
        self.will_exist: set[str] = set()  # run ids whose final weights exist by the time a later run needs them
        self.counts: dict[str, float] = {"record": 0, "probe": 0, "load": os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
                                         "cpus": float(os.cpu_count() or 1)}  # the load before any probe: other work slows the probes

    def data(self, resolved: dict[str, Any]) -> tuple[int, int, int]:
        """(classes, image size, training images) of the run's data (loaded once per dataset)."""
        name = resolved["run"]["dataset"]
        if name not in self.datasets:
            self.datasets[name] = load_dataset(name, self.env.data_dir, self.env.cache_dir, download=bool(resolved["data"]["download"]),
                                               progress=False)
        data = self.datasets[name]
        d = resolved["data"]
        n = int(d["train_subset"]) or len(data.train) - int(d["val_size"])
        return data.num_classes, data.image_size, n

    def training_parts(self, resolved: dict[str, Any], state: RunState, depth: int = 0) -> list[Part]:
        """The remaining training of run ``resolved`` (own stages, then members it will train)."""
        key = training_key(resolved)
        known = self.measured.get(key)
        classes, size, n_train = self.data(resolved)
        ctx = discover(resolved, self.device, classes, size,
                       probe=lambda stage: (known is None or stage not in known.stage_rate) and (key, stage) not in self.probes,
                       cache_dir=self.env.cache_dir)
        parts = []
        for sub_id, sub in ctx.member_configs.items():
            parts.extend(self.member_parts(sub, sub_id, depth))
        done = _stages_done(ctx.stages, state)
        for plan in ctx.stages:
            left = plan.config.epochs - done.get(plan.stage, 0)
            if left <= 0:
                continue
            if known is not None and plan.stage in known.stage_rate:
                rate, source = known.stage_rate[plan.stage], known.source
                self.counts["record"] += 1
            else:
                probe = self.probes.setdefault((key, plan.stage), plan.probe) if plan.probe else self.probes[(key, plan.stage)]
                steps = n_train // int(plan.config.batch_size)
                rate = probe.seconds_per_step * steps
                source = f"probe: {probe.seconds_per_step * 1000:.0f} ms/step (mean of {probe.steps}) x {steps} steps"
                self.counts["probe"] += plan.probe is not None
            parts.append(Part(f"{plan.stage} {left:g}/{plan.config.epochs} epochs", left * rate, source, f"{rate:.1f} s/epoch"))
        return parts

    def member_parts(self, sub: dict[str, Any], sub_id: str, depth: int) -> list[Part]:
        r = sub["run"]
        what = f"member {r['method']} seed {r['seed']}"
        found = find_final_weights(self.env, sub_id)  # the checkpoint folder's, else a store's
        if found is not None:
            kept = "" if found.parent.parent == Path(self.env.checkpoint_dir) else f" (kept in {found.parent.parent})"
            return [Part(what, 0.0, f"its final weights exist{kept}: reused")]
        if sub_id in self.will_exist:
            return [Part(what, 0.0, "trained earlier in this bench: reused")]
        if depth > 4:
            return [Part(what, None, "members nested too deep to follow")]
        self.will_exist.add(sub_id)
        state = run_state(sub, self.env)
        parts = self.training_parts(sub, state if state.action == "resume" else RunState("start", sub_id), depth + 1)
        note = ("; its record is done but its final weights are not in the checkpoint folder" + (" nor a weights store" if self.env.weights_dirs else "")
                + ": trained again") if state.action == "skip" else ""
        return [Part(f"{what} ({p.what})", p.seconds, p.source + note, p.detail) for p in parts]

    def run(self, label: str, resolved: dict[str, Any]) -> RunEstimate:
        state = run_state(resolved, self.env)
        est = RunEstimate(label, state)
        if state.action == "skip":
            return est
        run_id = state.run_id
        if run_id in self.will_exist:
            est.parts.append(Part("training", 0.0, "trained earlier in this bench as another run's member: only evaluated"))
        else:
            est.parts.extend(self.training_parts(resolved, state))
        self.will_exist.add(run_id)
        known = self.measured.get(training_key(resolved))
        if known is not None and known.eval_seconds is not None:
            est.parts.append(Part("evaluation", known.eval_seconds, known.source))
        else:
            est.parts.append(Part("evaluation", None, "no finished record of this configuration"))
        return est


def _stages_done(stages: list[StagePlan], state: RunState) -> dict[str, int]:
    """Epochs done per stage of a resumed run: the stages before its checkpoint's stage are done, its
    stage has the checkpoint's completed epochs (an epoch stopped mid-way counts as not done)."""
    if state.action != "resume" or state.point is None:
        return {}
    names = [s.stage for s in stages]
    if state.point.stage not in names:
        return {}
    i = names.index(state.point.stage)
    done = {s.stage: s.config.epochs for s in stages[:i]}
    done[state.point.stage] = int(state.point.epoch)
    return done


def estimate_runs(runs: list[tuple[str, dict[str, Any]]], env: Environment, probe_steps: int = PROBE_STEPS) -> tuple[list[RunEstimate], dict[str, float]]:
    """The estimate of each ``(label, resolved config)`` in bench order, and how many stage rates came
    from records and from probes (``record``, ``probe``), with the machine's 1-minute load average before
    the probes (``load``) and its ``cpus``."""
    est = _Estimator(env, probe_steps)
    return [est.run(label, resolved) for label, resolved in runs], dict(est.counts)


BUSY_LOAD = 0.5  # a load average of at least this many runnable processes per CPU before the probes: a busy machine


def format_estimates(estimates: list[RunEstimate], counts: dict[str, float]) -> list[str]:
    """Lines for a person: per run its state and estimate, then the total (and a warning when the probes ran on a
    busy machine: their rates are then slower than an idle machine's)."""
    lines = []
    for e in estimates:
        lines.append(f"  {e.label}: {e.state.describe()}")
        if e.state.action != "skip":
            lines.append(f"      estimate {e.describe()}")
    train = sum(e.train_seconds for e in estimates)
    evals = [e.eval_seconds for e in estimates if e.state.action != "skip"]
    unknown = sum(v is None for v in evals)
    ev = sum(v for v in evals if v is not None)
    untimed = [p for e in estimates for p in e.parts if p.seconds is None and p.what != "evaluation"]
    remaining = sum(e.state.action != "skip" for e in estimates)
    total = f"{(train + ev) / 3600:.2f} h"
    lines.append(f"estimated time left: {total} of this machine's time for {remaining} of {len(estimates)} runs at the measured rates "
                 f"(training {train / 3600:.2f} h, evaluation {ev / 3600:.2f} h"
                 + (f"; the evaluation of {unknown} run(s) not estimated: no finished record of their configuration" if unknown else "")
                 + (f"; {len(untimed)} training part(s) not estimated" if untimed else "")
                 + f"); stage times: {int(counts.get('record', 0))} from records, {int(counts.get('probe', 0))} probed"
                 + ("; not counted: the cost pass and leaderboard at the end" if remaining else ""))
    if remaining and math.isclose(train + ev, 0.0):
        lines[-1] += " (all left is evaluation of runs trained earlier)"
    warning = busy_warning(counts)
    if warning:
        lines.append(warning)
    return lines


def busy_warning(counts: dict[str, float]) -> str | None:
    """A warning when steps were probed on a busy machine (:data:`BUSY_LOAD`), else None."""
    load, cpus = float(counts.get("load", 0.0)), float(counts.get("cpus", 1.0))
    if counts.get("probe", 0) and load >= BUSY_LOAD * cpus:
        return (f"warning: the machine was busy before the probes (1-minute load average {load:.1f} on {cpus:.0f} CPUs): other work "
                "slows the probed steps, so their rates overstate an idle machine's time; run the plan on an idle machine")
    return None

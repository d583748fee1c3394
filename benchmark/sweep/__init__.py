"""Sweeps: many runs of the harness as submitit job arrays (SLURM, local processes or in-process).

``python -m benchmark sweep FILE [--dry-run] [--cluster slurm|local|debug] [--partition P] ...``
expands a sweep file into runs (stable ids: ``benchmark.runner.run_id_of``), skips those whose
completed record exists, and submits the rest: ONE job array per stage, one run per array task,
each task a :class:`~benchmark.slurm_job.CheckpointableCall` of :func:`run_task` (requeued after
preemption or a time limit with ``resume=True``, continuing from the harness's checkpoint).

Stages: runs whose method reuses other runs' trained weights through ``RunContext.member_model``
(a deep ensemble's members, a subnetwork ensemble's parent) depend on them. Those member runs are
found by running the method's stage logic against a recording context on the meta device (no
data, no training: :func:`member_requests`), scheduled as tasks of an earlier array (a member
that is not itself a run of the sweep only trains and saves its weights, writing no record), and
the dependent array starts ``afterany`` the earlier one (SLURM) or after it (local, debug). A
last one-task job rebuilds the leaderboards (``write_leaderboards``) after all of them.

``python -m benchmark sweep-status FILE [--resubmit-failed]`` lists each run as pending, running,
done or failed, from the records, the submission manifest (``<log_dir>/manifest.json``: run id ->
job id and log paths), failure notes the tasks leave (``<log_dir>/failures/<run id>.json``) and
``squeue``.

The sweep file (TOML; unknown keys are errors that list the valid ones)::

    name = "tiny"                     # default: the file's stem; labels jobs and the log folder
    description = "..."
    suite = "quick"                   # or suites = ["quick", "paper"]: names or paths of suites
    methods = ["deterministic"]       # keep runs whose name or method is listed (default: all)
    datasets = ["cifar10"]            # keep runs on these datasets (default: all)
    backbones = ["resnet8"]           # keep runs on these backbones (default: all)
    seeds = [0, 1, 2]                 # replaces the suites' seeds
    device = "auto"                   # the harness's device (auto: cuda if there)
    sync_bn = true                    # multi-task jobs: full-batch BatchNorm statistics

    [set]                             # fixed overrides for every run ("table.key" = value)
    "train.epochs" = 1
    [grid]                            # one run per combination; names get "[train.lr=0.1]"
    "train.lr" = [0.1, 0.05]
    [paths]                           # relative to the launch directory
    results_dir = "results/runs"; checkpoint_dir = "results/checkpoints"
    leaderboard_dir = "results/leaderboards"; log_dir = "results/sweeps/<name>"
    data_dir = "..."; cache_dir = "..."  # default: the harness's ($PLURES_DATA_DIR, ./data)
    [slurm]
    cluster = "slurm"                 # slurm | local | debug
    partition, time_min, gpus_per_node, cpus_per_task, mem_gb, constraint, account, qos,
    array_parallelism, nodes, tasks_per_node, max_num_timeout, grace_s,
    additional = { ... }              # more sbatch parameters (submitit's slurm_additional_parameters)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import pickle
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core import config as C

SWEEP_KEYS = ("name", "description", "suite", "suites", "methods", "datasets", "backbones", "seeds", "device", "sync_bn",
              "set", "grid", "paths", "slurm")
PATH_KEYS = ("results_dir", "checkpoint_dir", "leaderboard_dir", "log_dir", "data_dir", "cache_dir")
SLURM_KEYS = ("cluster", "partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "account", "qos",
              "array_parallelism", "nodes", "tasks_per_node", "max_num_timeout", "grace_s", "additional")
STATES = ("pending", "running", "done", "failed")
MANIFEST = "manifest.json"


class SubmissionError(RuntimeError):
    """The scheduler refused a submission (its own message is included); nothing of it was recorded."""


# --------------------------------------------------------------------------- the sweep file


@dataclass
class Sweep:
    """A parsed sweep file: which runs, where they write, how they are submitted."""

    name: str
    path: Path
    description: str
    suites: list[str]
    methods: list[str]
    datasets: list[str]
    backbones: list[str]
    seeds: list[int] | None
    device: str
    sync_bn: bool
    set: dict[str, Any]
    grid: dict[str, list[Any]]
    paths: dict[str, Path | None]
    slurm: dict[str, Any]


def _flatten(table: dict[str, Any], where: str) -> dict[str, Any]:
    """``{"train.lr": 1}`` or ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; keys must be table.key."""
    out = {}
    for key, value in table.items():
        if isinstance(value, dict) and "." not in key:
            for sub, v in value.items():
                out[f"{key}.{sub}"] = v
        else:
            out[key] = value
    for key in out:
        parts = key.split(".")
        if len(parts) != 2 or not all(parts):
            raise C.ConfigError(f"{where}: key {key!r} must be table.key (e.g. \"train.epochs\", \"method.members\")")
    return out


def _override(key: str, value: Any) -> dict[str, Any]:
    table, name = key.split(".")
    return {table: {name: copy.deepcopy(value)}}


def _str_list(raw: dict[str, Any], key: str, path: Path) -> list[str]:
    value = raw.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise C.ConfigError(f"{path}: {key} must be a list of strings, found {value!r}")
    return value


def load_sweep(path: str | Path, slurm_overrides: dict[str, Any] | None = None) -> Sweep:
    """Parse and check a sweep file; ``slurm_overrides`` (from the command line) win over [slurm]."""
    path = Path(path)
    raw = C.load_toml(path)
    bad = sorted(set(raw) - set(SWEEP_KEYS))
    if bad:
        raise C.ConfigError(f"{path}: unknown key(s) {bad}; valid keys: {', '.join(SWEEP_KEYS)}")
    for table, valid in (("paths", PATH_KEYS), ("slurm", SLURM_KEYS)):
        sub = raw.get(table, {})
        if not isinstance(sub, dict):
            raise C.ConfigError(f"{path}: [{table}] must be a table, found {sub!r}")
        bad = sorted(set(sub) - set(valid))
        if bad:
            raise C.ConfigError(f"{path}: unknown key(s) {bad} in [{table}]; valid keys: {', '.join(valid)}")
    if "suite" in raw and "suites" in raw:
        raise C.ConfigError(f"{path}: give either suite or suites, not both")
    suites = _str_list(raw, "suites", path) if "suites" in raw else _str_list(raw, "suite", path)
    if not suites:
        raise C.ConfigError(f"{path}: no suite named; add suite = \"quick\" (valid suites: {', '.join(sorted(q.stem for q in C.SUITES_DIR.glob('*.toml')))})")
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise C.ConfigError(f"{path}: seeds must be a non-empty list of integers, found {seeds!r}")
    grid = _flatten(raw.get("grid", {}), f"{path} [grid]")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise C.ConfigError(f"{path} [grid]: {key} must be a non-empty list of values, found {values!r}")
    name = str(raw.get("name", path.stem))
    slurm = {**raw.get("slurm", {}), **{k: v for k, v in (slurm_overrides or {}).items() if v is not None}}
    slurm.setdefault("cluster", "slurm")
    from .slurm_job import CLUSTERS

    if slurm["cluster"] not in CLUSTERS:
        raise C.ConfigError(f"{path}: cluster {slurm['cluster']!r} is not valid; valid choices: {', '.join(CLUSTERS)}")
    given = raw.get("paths", {})
    defaults = {"results_dir": "results/runs", "checkpoint_dir": "results/checkpoints", "leaderboard_dir": "results/leaderboards",
                "log_dir": f"results/sweeps/{name}", "data_dir": None, "cache_dir": None}
    paths = {k: (Path(given[k]).absolute() if given.get(k) is not None else (Path(v).absolute() if v is not None else None)) for k, v in defaults.items()}
    return Sweep(name=name, path=path, description=str(raw.get("description", "")), suites=suites, methods=_str_list(raw, "methods", path),
                 datasets=_str_list(raw, "datasets", path), backbones=_str_list(raw, "backbones", path), seeds=seeds,
                 device=str(raw.get("device", "auto")), sync_bn=bool(raw.get("sync_bn", True)),
                 set=_flatten(raw.get("set", {}), f"{path} [set]"), grid=grid, paths=paths, slurm=slurm)


# --------------------------------------------------------------------------- expansion


@dataclass
class Task:
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
        p = sweep.paths
        return {"kind": self.kind, "run_id": self.run_id, "config": self.config, "overrides": self.overrides, "device": sweep.device,
                "sync_bn": sweep.sync_bn, "log_dir": str(p["log_dir"]),
                "env": {k: (str(p[k]) if p[k] is not None else None) for k in ("data_dir", "cache_dir", "results_dir", "checkpoint_dir")}}


class _ProbeDone(Exception):
    pass


class _RecordingContext:
    """Stands in for ``RunContext`` while a method's ``run`` is probed: records ``member_model``
    requests (returning untrained networks on the meta device) and stops at the first ``fit``."""

    def __init__(self, resolved: dict[str, Any]) -> None:
        import torch

        self.config = resolved
        self.device = torch.device("meta")
        self.members: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.history: dict[str, Any] = {}
        self.train_seconds = 0.0

    @property
    def seed(self) -> int:
        return int(self.config["run"]["seed"])

    def train_config(self, **changes: Any):
        from ..core.config import TrainConfig

        return TrainConfig(**{**self.config["train"], **changes})

    def fit(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        raise _ProbeDone

    def member_model(self, overrides: dict[str, Any]):
        import torch

        from ..runner import member_config, run_id_of

        self.requests.append(copy.deepcopy(overrides))
        sub = member_config(self.config, overrides)
        with torch.device("meta"):
            model = _probe_method(sub).build()
        self.members.append({"run_id": run_id_of(sub), "reused": False, "seed": sub["run"]["seed"], "method": sub["run"]["method"]})
        return model


def _probe_method(resolved: dict[str, Any]):
    from ..methods.catalogue import build_method

    # Shapes do not matter on the meta device: any class count and image size will do.
    return build_method(resolved, num_classes=10, image_size=32)


def member_requests(resolved: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``member_model`` overrides a run's method asks for (e.g. a deep ensemble's M member
    runs), found by running its ``run`` against a recording context: no data, nothing trained."""
    import torch

    ctx = _RecordingContext(resolved)
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            _probe_method(resolved).run(ctx)
    except _ProbeDone:
        pass
    except Exception:  # noqa: BLE001 - a method doing real work on meta tensors after its requests
        pass
    return ctx.requests


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


def expand(sweep: Sweep) -> list[Task]:
    """Every task of the sweep, in submission order (stage, then sweep order); ids are unique."""
    from ..runner import member_config, run_id_of

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
    tasks: dict[str, Task] = {}
    members: dict[str, Task] = {}

    def add_needs(task: Task, resolved: dict[str, Any], depth: int = 0) -> None:
        """Members that ``task``'s run obtains through member_model (and, recursively, theirs)."""
        if depth > 4:
            return
        for overrides in member_requests(resolved):
            sub = member_config(resolved, overrides)
            sub_id = run_id_of(sub)
            task.needs.append(sub_id)
            if sub_id not in tasks and sub_id not in members:
                r = sub["run"]
                members[sub_id] = Task("member", sub_id, task.suite, f"{r['method']} (member)", int(r["seed"]), resolved, overrides=overrides)
                add_needs(members[sub_id], sub, depth + 1)

    for cfg in configs:
        resolved = C.resolve(cfg)  # unknown tables or keys fail here, naming them
        rid = run_id_of(resolved)
        if rid in tasks:
            continue
        r = resolved["run"]
        tasks[rid] = Task("run", rid, r["suite"], r["name"] or r["method"], int(r["seed"]), cfg)
    for rid in list(tasks):
        add_needs(tasks[rid], C.resolve(tasks[rid].config))
    for rid in list(members):
        if rid in tasks:  # a member that is also a run of the sweep: the run (with its record) covers it
            del members[rid]
    everything = {**tasks, **members}

    def stage(t: Task, seen: tuple[str, ...] = ()) -> int:
        needs = [everything[n] for n in t.needs if n in everything and n not in seen]
        return 1 + max(stage(n, (*seen, t.run_id)) for n in needs) if needs else 0

    ordered = list(members.values()) + list(tasks.values())
    for t in ordered:
        t.stage = stage(t)
    return sorted(ordered, key=lambda t: t.stage)


# --------------------------------------------------------------------------- what exists


def completed_runs(results_dir: Path) -> set[tuple[str, str]]:
    """(suite, training run id) of every completed record under ``results_dir``."""
    from ..records import load_records

    return {(r["identity"]["suite"], r.get("training_run_id", r["run_id"])) for r in load_records(results_dir).records}


def failed_runs(results_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(suite, run id) -> the newest failed record, for runs whose newest record failed."""
    from ..records import load_records

    out = {}
    for r in load_records(results_dir, include_failed=True).records:
        if r["status"] == "failed":
            out[(r["identity"]["suite"], r["run_id"])] = r
    return out


def is_done(task: Task, sweep: Sweep, completed: set[tuple[str, str]]) -> bool:
    if task.kind == "member":
        return (Path(sweep.paths["checkpoint_dir"]) / task.run_id / "final.pt").exists()
    return (task.suite, task.run_id) in completed


# --------------------------------------------------------------------------- the job side


def _failure_path(log_dir: str | Path, run_id: str) -> Path:
    return Path(log_dir) / "failures" / f"{run_id}.json"


def train_member(config: dict[str, Any], overrides: dict[str, Any], env: Any) -> Path:
    """Train (or find) the member run that ``config``'s run reuses through ``member_model(overrides)``,
    exactly as that run would, and save its final weights; writes no record. Returns their path."""
    from ..core.runtime import select_device, stop_on_signals
    from ..data.base import load_dataset
    from ..runner import RunContext, member_config, run_id_of

    resolved = C.resolve(config)
    device = select_device(env.device)
    # the same data the reusing run would load (its seed picks the validation split)
    data = load_dataset(resolved["run"]["dataset"], env.data_dir, env.cache_dir, val_size=resolved["data"]["val_size"],
                        val_seed=resolved["run"]["seed"], download=resolved["data"]["download"], progress=env.progress)
    ctx = RunContext(resolved, run_id_of(resolved), data, data.train.on_device(data.mean, data.std, device), env)
    with stop_on_signals(env.stop):
        ctx.member_model(overrides)
    return Path(env.checkpoint_dir) / run_id_of(member_config(resolved, overrides)) / "final.pt"


def run_task(payload: dict[str, Any], *, resume: bool = False) -> dict[str, Any]:
    """One array task (module level, so submitit pickles it by reference): a harness run.

    Inside a SLURM job of several tasks (or under torchrun), trains data-parallel
    (``benchmark.distributed``); stop requests come from ``slurm_job.STOP_REQUESTED``. A failure
    leaves a note in ``<log_dir>/failures/`` (the harness also writes a failed record) and raises.
    """
    from ..core.io import atomic_write_json
    from ..core.runtime import Environment, StopRequested
    from ..records import utc_now
    from ..runner import run_experiment
    from ..training.distributed import DistContext
    from .slurm_job import STOP_REQUESTED

    import torch

    if os.environ.get("SLURM_CPUS_PER_TASK"):  # torch would use every core of the node, not the task's share
        torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
    dist = DistContext.from_environment(sync_bn=payload.get("sync_bn", True))
    e = payload["env"]
    env = Environment(data_dir=e["data_dir"], cache_dir=e["cache_dir"], results_dir=Path(e["results_dir"]), checkpoint_dir=Path(e["checkpoint_dir"]),
                      device=dist.device() if dist is not None else payload["device"], resume=resume, progress=False,
                      log=lambda m: print(m, flush=True), stop=STOP_REQUESTED, dist=dist)
    print(f"sweep task {payload['kind']} {payload['run_id']} (resume={resume})", flush=True)
    try:
        if payload["kind"] == "member":
            out = {"run_id": payload["run_id"], "final": str(train_member(payload["config"], payload["overrides"], env))}
        else:
            out = {"run_id": payload["run_id"], "records": [str(p) for p in run_experiment(payload["config"], env)]}
    except StopRequested:
        raise
    except Exception as exc:
        if env.is_main:
            atomic_write_json(_failure_path(payload["log_dir"], payload["run_id"]),
                              {"run_id": payload["run_id"], "time": utc_now(), "type": type(exc).__name__, "message": str(exc),
                               "traceback": traceback.format_exc()})
        raise
    finally:
        if dist is not None:
            dist.close()
    return out


def rebuild_leaderboard(results_dir: str, out_dir: str, suites: list[str]) -> list[str]:
    """The sweep's last job: leaderboards of its suites from the records (a pure function of them)."""
    from ..leaderboard import write_leaderboards

    return [str(p) for p in write_leaderboards(Path(results_dir), Path(out_dir), suites=suites)]


# --------------------------------------------------------------------------- manifest


def manifest_path(sweep: Sweep) -> Path:
    return Path(sweep.paths["log_dir"]) / MANIFEST


def read_manifest(sweep: Sweep) -> dict[str, Any]:
    path = manifest_path(sweep)
    if not path.exists():
        return {"sweep": str(sweep.path), "name": sweep.name, "runs": {}, "submissions": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise C.ConfigError(f"{path} is not valid JSON ({exc}); move it away to start a fresh manifest") from None


def _write_manifest(sweep: Sweep, manifest: dict[str, Any]) -> None:
    from ..core.io import atomic_write_json
    from ..records import utc_now

    manifest["updated"] = utc_now()
    atomic_write_json(manifest_path(sweep), manifest)


# --------------------------------------------------------------------------- submission


def _executor(sweep: Sweep, folder: Path, *, dependency: str | None = None, leaderboard: bool = False):
    from .slurm_job import make_executor

    s = sweep.slurm
    extra = dict(s.get("additional") or {})
    if dependency:
        extra["dependency"] = dependency
    common = {k: s.get(k) for k in ("partition", "account", "qos")}
    if leaderboard:
        return make_executor(s["cluster"], folder, **common, time_min=30, cpus_per_task=1,
                             mem_gb=min(float(s["mem_gb"]), 4.0) if s.get("mem_gb") else None,
                             name=f"{sweep.name}-leaderboard", slurm_additional_parameters=extra or None)
    return make_executor(s["cluster"], folder, **common, time_min=s.get("time_min"), gpus_per_node=s.get("gpus_per_node"),
                         cpus_per_task=s.get("cpus_per_task"), mem_gb=s.get("mem_gb"), constraint=s.get("constraint"),
                         array_parallelism=s.get("array_parallelism"), nodes=s.get("nodes", 1), tasks_per_node=s.get("tasks_per_node", 1),
                         name=sweep.name, max_num_timeout=s.get("max_num_timeout"), slurm_additional_parameters=extra or None)


def _submit_array(executor: Any, calls: list[tuple[Any, tuple]]) -> list[Any]:
    """Submit ``calls`` as one array; SLURM's refusal becomes a SubmissionError with sbatch's message."""
    try:
        with executor.batch():
            jobs = [executor.submit(fn, *args) for fn, args in calls]
    except Exception as exc:  # noqa: BLE001 - submitit raises several kinds, all carrying sbatch's text
        raise SubmissionError(f"submission of {len(calls)} task(s) refused: {exc}") from exc
    return jobs


def _array_id(job: Any) -> str:
    return str(job.job_id).split("_")[0]


@dataclass
class Launch:
    """What a launch submitted: the arrays (job lists, by stage) and the leaderboard job."""

    arrays: list[list[Any]]
    leaderboard: Any
    skipped: list[Task]
    submitted: list[Task]

    def jobs(self) -> list[Any]:
        return [j for a in self.arrays for j in a] + ([self.leaderboard] if self.leaderboard is not None else [])


def launch(sweep: Sweep, tasks: list[Task], *, wait_s: float | None = None, log: Any = print) -> Launch:
    """Submit the tasks not done yet (one array per stage, then the leaderboard job).

    On SLURM the arrays are chained with ``afterany`` dependencies and this returns at once
    (``wait_s``: then wait that long for every job). On the local and debug clusters each
    array is waited for before the next starts, and the leaderboard is rebuilt here.
    Each array's tasks enter the manifest as soon as it is accepted, never before.
    """
    from ..records import utc_now
    from .slurm_job import CheckpointableCall, wait_all

    completed = completed_runs(Path(sweep.paths["results_dir"]))
    skipped = [t for t in tasks if is_done(t, sweep, completed)]
    todo = [t for t in tasks if t not in skipped]
    cluster = sweep.slurm["cluster"]
    folder = Path(sweep.paths["log_dir"]) / "jobs"
    manifest = read_manifest(sweep)
    suites = sorted({t.suite for t in tasks})
    call = CheckpointableCall(run_task, grace_s=float(sweep.slurm.get("grace_s", 60.0)))
    arrays: list[list[Any]] = []
    for stage in sorted({t.stage for t in todo}):
        group = [t for t in todo if t.stage == stage]
        dependency = "afterany:" + ":".join(_array_id(a[0]) for a in arrays) if arrays and cluster == "slurm" else None
        if arrays and cluster != "slurm":
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        # a resubmitted run's old failure note goes (restored if the scheduler refuses the array)
        notes = {p: p.read_bytes() for t in group if (p := _failure_path(sweep.paths["log_dir"], t.run_id)).exists()}
        for p in notes:
            p.unlink()
        try:
            jobs = _submit_array(_executor(sweep, folder, dependency=dependency), [(call, (t.payload(sweep),)) for t in group])
        except SubmissionError:
            for p, raw in notes.items():
                p.write_bytes(raw)
            raise
        arrays.append(jobs)
        now = utc_now()
        manifest["submissions"].append({"time": now, "cluster": cluster, "stage": stage, "array_id": _array_id(jobs[0]), "tasks": len(jobs),
                                        "dependency": dependency})
        for t, job in zip(group, jobs):
            old = manifest["runs"].get(t.run_id, {})
            manifest["runs"][t.run_id] = {"kind": t.kind, "suite": t.suite, "name": t.name, "seed": t.seed, "stage": stage, "cluster": cluster,
                                          "job_id": str(job.job_id), "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr),
                                          "result": str(job.paths.result_pickle), "submitted": now,
                                          "previous_jobs": old.get("previous_jobs", []) + ([old["job_id"]] if old.get("job_id") else [])}
        _write_manifest(sweep, manifest)
        log(f"submitted stage {stage}: {len(jobs)} task(s) as array {_array_id(jobs[0])} on {cluster}" + (f" ({dependency})" if dependency else ""))
    board = None
    if cluster == "slurm":
        if arrays:
            dependency = "afterany:" + ":".join(_array_id(a[0]) for a in arrays)
            (board,) = _submit_array(_executor(sweep, folder, dependency=dependency, leaderboard=True),
                                     [(rebuild_leaderboard, (str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites))])
            manifest["leaderboard_job"] = {"job_id": str(board.job_id), "stdout": str(board.paths.stdout), "dependency": dependency}
            _write_manifest(sweep, manifest)
            log(f"leaderboard job {board.job_id} ({dependency})")
        if wait_s is not None and arrays:
            wait_all([j for a in arrays for j in a] + [board], timeout_s=wait_s, return_exceptions=True)
    else:
        if arrays:
            wait_all(arrays[-1], timeout_s=wait_s if wait_s is not None else 7 * 24 * 3600.0, return_exceptions=True)
        for path in rebuild_leaderboard(str(sweep.paths["results_dir"]), str(sweep.paths["leaderboard_dir"]), suites):
            log(f"leaderboard: {path}")
    return Launch(arrays, board, skipped, todo)


# --------------------------------------------------------------------------- status


def _squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """Job id (``123_4``) -> squeue's compact state (PD, R, CG, ...); None when squeue is unusable."""
    ids = sorted({j.split("_")[0] for j in job_ids})
    if not ids:
        return {}
    try:
        r = subprocess.run(["squeue", "-h", "-r", "-o", "%i %t", "-j", ",".join(ids)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return {} if "Invalid job id" in r.stderr else None
    return dict(line.split(None, 1) for line in r.stdout.splitlines() if line.strip())


def _result_failed(path: str | None) -> bool:
    """Whether submitit's result file says the task raised."""
    if not path or not Path(path).exists():
        return False
    try:
        with open(path, "rb") as fh:
            return pickle.load(fh)[0] == "error"
    except Exception:  # noqa: BLE001 - an unreadable result tells nothing
        return False


@dataclass
class RunStatus:
    task: Task
    state: str
    job_id: str
    log: str
    note: str


def status(sweep: Sweep, tasks: list[Task] | None = None) -> list[RunStatus]:
    """The state of every task of the sweep (see the module docstring)."""
    tasks = expand(sweep) if tasks is None else tasks
    completed = completed_runs(Path(sweep.paths["results_dir"]))
    failed = failed_runs(Path(sweep.paths["results_dir"]))
    runs = read_manifest(sweep)["runs"]
    slurm_ids = [m["job_id"] for m in runs.values() if m.get("cluster") == "slurm"]
    queue = _squeue_states(slurm_ids) if slurm_ids else {}
    out = []
    for t in tasks:
        m = runs.get(t.run_id, {})
        job, logpath = m.get("job_id", ""), m.get("stdout", "")
        note_file = _failure_path(sweep.paths["log_dir"], t.run_id)
        if is_done(t, sweep, completed):
            state, note = "done", ""
        elif queue is not None and job in queue:
            code = queue[job]
            state, note = ("pending", f"queued ({code})") if code in ("PD", "RQ", "RS", "RH", "RD") else ("running", code)
        elif note_file.exists():
            err = json.loads(note_file.read_text())
            state, note = "failed", f"{err['type']}: {err['message']}"[:200]
        elif (t.suite, t.run_id) in failed and (not m or failed[(t.suite, t.run_id)]["created"] >= m.get("submitted", "")):
            err = failed[(t.suite, t.run_id)].get("error", {})
            state, note = "failed", f"{err.get('type', '')}: {err.get('message', '')}"[:200]
        elif not m:
            state, note = "pending", "not submitted"
        elif _result_failed(m.get("result")):
            state, note = "failed", "the task raised (see its log)"
        elif m.get("cluster") == "slurm" and queue is not None:
            state, note = "failed", "left the queue without a record or result (killed, cancelled, out of memory?)"
        else:
            state, note = "running", "submitted; no result yet"
        out.append(RunStatus(t, state, job, logpath, note))
    return out


# --------------------------------------------------------------------------- command line


def _add_slurm_options(p: argparse.ArgumentParser) -> None:
    from .slurm_job import CLUSTERS

    g = p.add_argument_group("submission (override the file's [slurm] table)")
    g.add_argument("--cluster", choices=CLUSTERS, help="slurm (sbatch), local (subprocesses) or debug (in this process, one by one)")
    for name, typ, text in (("partition", str, "SLURM partition"), ("time-min", int, "time limit per task, minutes"),
                            ("gpus-per-node", int, "GPUs per node"), ("cpus-per-task", int, "CPUs per task"), ("mem-gb", float, "memory per node, GB"),
                            ("constraint", str, "node constraint"), ("account", str, "account"), ("qos", str, "quality of service"),
                            ("array-parallelism", int, "most array tasks running at once"), ("nodes", int, "nodes per task (multi-node DDP)"),
                            ("tasks-per-node", int, "processes per node (one per GPU for DDP)")):
        g.add_argument(f"--{name}", type=typ, help=text)


def _slurm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("cluster", "partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "account", "qos", "array_parallelism",
            "nodes", "tasks_per_node")
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def format_plan(sweep: Sweep, tasks: list[Task], done: set[str]) -> str:
    lines = [f"sweep {sweep.name} ({sweep.path}): {len(tasks)} task(s), {len(done)} done and skipped; cluster {sweep.slurm['cluster']}",
             f"  results {sweep.paths['results_dir']}  checkpoints {sweep.paths['checkpoint_dir']}  logs {sweep.paths['log_dir']}",
             f"  {'stage':<5}  {'kind':<6}  {'state':<7}  {'run id':<58}  {'name':<30}  seed  needs"]
    for t in tasks:
        state = "skip" if t.run_id in done else "submit"
        lines.append(f"  {t.stage:<5}  {t.kind:<6}  {state:<7}  {t.run_id:<58}  {t.name:<30}  {t.seed:<4}  {len(t.needs)}")
    params = {k: v for k, v in sweep.slurm.items() if k != "cluster"}
    lines.append(f"  slurm parameters: {json.dumps(params, sort_keys=True)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark sweep FILE ...``."""
    p = argparse.ArgumentParser(prog="python -m benchmark sweep", description="Expand a sweep file into runs and submit them as submitit job arrays.")
    p.add_argument("file", type=Path, help="a sweep file (.toml), e.g. benchmark/sweeps/tiny.toml")
    p.add_argument("--dry-run", action="store_true", help="print the plan (runs, stable ids, what is skipped) and submit nothing")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="on SLURM, wait up to this long for every job")
    _add_slurm_options(p)
    args = p.parse_args(argv)
    try:
        sweep = load_sweep(args.file, _slurm_overrides(args))
        tasks = expand(sweep)
        completed = completed_runs(Path(sweep.paths["results_dir"]))
        done = {t.run_id for t in tasks if is_done(t, sweep, completed)}
        print(format_plan(sweep, tasks, done), flush=True)
        if args.dry_run:
            return 0
        result = launch(sweep, tasks, wait_s=args.wait, log=lambda m: print(m, flush=True))
    except SubmissionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result.submitted)} task(s) submitted, {len(result.skipped)} skipped (done); manifest {manifest_path(sweep)}", flush=True)
    if sweep.slurm["cluster"] != "slurm":
        bad = [s for s in status(sweep, tasks) if s.state != "done"]
        for s in bad:
            print(f"{s.state.upper()} {s.task.run_id}: {s.note} (log {s.log})", file=sys.stderr)
        return 1 if bad else 0
    return 0


def status_main(argv: list[str] | None = None) -> int:
    """``python -m benchmark sweep-status FILE [--resubmit-failed]``."""
    p = argparse.ArgumentParser(prog="python -m benchmark sweep-status", description="Each run of a sweep: pending, running, done or failed, with its log.")
    p.add_argument("file", type=Path, help="the sweep file that was submitted")
    p.add_argument("--resubmit-failed", action="store_true", help="submit the failed runs again (they alone)")
    p.add_argument("--wait", type=float, default=None, metavar="SECONDS", help="with --resubmit-failed on SLURM, wait up to this long")
    _add_slurm_options(p)
    args = p.parse_args(argv)
    sweep = load_sweep(args.file, _slurm_overrides(args))
    tasks = expand(sweep)
    rows = status(sweep, tasks)
    print(f"{'state':<8} {'run id':<58} {'name':<24} {'seed':<4} {'job':<12} log / note")
    for s in rows:
        print(f"{s.state:<8} {s.task.run_id:<58} {s.task.name:<24} {s.task.seed:<4} {s.job_id or '-':<12} {s.log or '-'}" + (f"  [{s.note}]" if s.note else ""))
    counts = {state: sum(s.state == state for s in rows) for state in STATES}
    print(", ".join(f"{n} {state}" for state, n in counts.items()))
    if args.resubmit_failed:
        failed = [s.task for s in rows if s.state == "failed"]
        if not failed:
            print("no failed runs to resubmit")
            return 0
        try:
            launch(sweep, failed, wait_s=args.wait, log=lambda m: print(m, flush=True))
        except SubmissionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    return 1 if counts["failed"] else 0

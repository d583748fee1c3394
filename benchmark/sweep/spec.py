"""The sweep file: :class:`Sweep` and :func:`load_sweep` (parsing and checking; see the package
docstring for the format). Unknown keys are errors that list the valid ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core import config as C

SWEEP_KEYS = ("name", "description", "suite", "suites", "methods", "datasets", "backbones", "seeds", "device", "sync_bn",
              "set", "grid", "paths", "slurm")
PATH_KEYS = ("results_dir", "checkpoint_dir", "leaderboard_dir", "log_dir", "data_dir", "cache_dir")
SLURM_KEYS = ("cluster", "partition", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint", "account", "qos",
              "array_parallelism", "nodes", "tasks_per_node", "max_num_timeout", "grace_s", "additional")


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

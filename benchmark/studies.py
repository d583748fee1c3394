"""A study's cells and its page: the runs of a suite (as ``bench`` runs them) or of a sweep (grid
points included) are the cells; their completed records (found by run id, so records of an earlier
configuration of the same suite never enter) go to :func:`benchmark.leaderboard.study.build_study`,
which writes ``study.md``, ``study.csv`` and ``study.png``/``.svg``. The cells without a completed
record are listed on the page as not finished.

Cross-CPU repeats (:mod:`benchmark.tools.cross_cpu`) live apart from the study's records, one results
folder per kind of CPU: ``<results dir>/../cross-cpu/<cpu kind>/`` (:func:`cross_cpu_dir`); the
study lists them beside its own record of the same cell, never in its gaps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .core import config as C
from .leaderboard.frame import flatten
from .leaderboard.study import Study, build_study, write_study
from .leaderboard.study_plot import write_study_figure
from .runner import check_runs, completed_records, run_id_of

__all__ = ["StudyCells", "cross_cpu_dir", "cross_cpu_slug", "infer_axis", "load_record_files", "study_from_cells", "suite_cells", "sweep_cells", "write_cells_study"]

# flattened keys that differ between cells without being a study's axis
NOT_AN_AXIS = ("run.seed", "run.name", "run.suite")


class StudyCells:
    """The cells of a study: ``(label, resolved config)`` pairs, the ``name`` its output folder takes,
    its ``description``, the folder its records are in and its ``budget`` note (a suite's ``budget_note``)."""

    def __init__(self, name: str, description: str, cells: list[tuple[str, dict[str, Any]]], results_dir: Path, budget: str = "") -> None:
        self.name, self.description, self.cells, self.results_dir, self.budget = name, description, cells, Path(results_dir), budget


def cross_cpu_dir(results_dir: Path | str) -> Path:
    """The folder of the cross-CPU repeats of the records in ``results_dir`` (a sibling: ``results/reference/runs``
    -> ``results/reference/cross-cpu``), holding one results folder per kind of CPU."""
    return Path(results_dir).parent / "cross-cpu"


def cross_cpu_slug(kind: str) -> str:
    """A folder name for a device kind, e.g. ``AMD EPYC (avx2 avx512)`` -> ``amd-epyc-avx2-avx512``."""
    slug = re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")
    return slug or "unknown"


def load_record_files(paths: list[Path]) -> list[dict[str, Any]]:
    """The validated records at ``paths`` (e.g. from :func:`benchmark.runner.completed_records`), in that order, each
    with its ``_path``; a path whose folder's loader did not keep it (invalid) is left out."""
    from .records import load_records

    by_path = {r["_path"]: r for folder in sorted({Path(p).parent for p in paths}) for r in load_records(folder).records}
    return [by_path[str(p)] for p in paths if str(p) in by_path]


def suite_cells(suite: str, results_dir: Path, seeds: list[int] | None = None, namespace: str | None = None) -> StudyCells:
    """A suite's runs at its seeds (or ``seeds``, as ``bench --seeds``), in its namespace (``bench``'s
    ``<suite>+<hash>`` with ``--set``: pass it as ``namespace``)."""
    meta, runs = C.load_suite(suite, seeds=seeds)
    ns = namespace or meta["name"]
    labelled = [(f"{r['run']['name']} seed {r['run']['seed']}", C.merge(r, {"run": {"suite": ns}})) for r in runs]
    resolved = check_runs(labelled)
    return StudyCells(ns, meta.get("description", ""), [(label, res) for (label, _), res in zip(labelled, resolved)], results_dir,
                      budget=meta.get("budget_note", ""))


def sweep_cells(path: Path) -> StudyCells:
    """A sweep file's runs (its suites, filters, seeds, [set] and every [grid] point); records under its results_dir."""
    from .sweep.plan import expand
    from .sweep.spec import load_sweep

    sweep = load_sweep(path)
    tasks = [t for t in expand(sweep) if t.kind == "run"]
    resolved = check_runs([(f"{t.name} seed {t.seed}", t.config) for t in tasks])
    return StudyCells(sweep.name, sweep.description, [(f"{t.name} seed {t.seed}", res) for t, res in zip(tasks, resolved)],
                      Path(sweep.paths["results_dir"] or "results/runs"))


def infer_axis(cells: list[tuple[str, dict[str, Any]]]) -> str:
    """The one ``backbone.*`` key whose value differs between the cells; ConfigError naming the
    differing keys when there is none or more than one (then pass the axis explicitly)."""
    flats = [flatten(res) for _, res in cells]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if k not in NOT_AN_AXIS and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flats}) > 1]
    backbone = [k for k in differing if k.startswith("backbone.")]
    if len(backbone) == 1:
        return backbone[0]
    raise C.ConfigError(f"cannot tell the study's axis: {len(backbone)} backbone options differ between the cells "
                        f"({', '.join(backbone) or 'none'}); keys that differ: {', '.join(differing) or 'none'}; give --axis KEY")


def study_from_cells(cells: StudyCells, axis: str | None = None, command: str = "") -> Study:
    """The study of the cells' completed records along ``axis`` (default: :func:`infer_axis`)."""
    if not cells.cells:
        raise C.ConfigError(f"study {cells.name}: no runs")
    axis = axis or infer_axis(cells.cells)
    if any(axis not in flatten(res) for _, res in cells.cells):
        valid = sorted({k for _, res in cells.cells for k in flatten(res)})
        raise C.ConfigError(f"--axis {axis!r} is not a config key of every cell; valid keys: {', '.join(valid)}")
    records, missing, seen = [], [], set()
    for label, res in cells.cells:
        paths = completed_records(cells.results_dir, res, run_id_of(res))
        if not paths:
            missing.append(label)
        for p in paths:
            if p not in seen:
                seen.add(p)
                records.append(p)
    repeats = []
    root = cross_cpu_dir(cells.results_dir)
    for kind_dir in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        for _, res in cells.cells:
            repeats.extend(completed_records(kind_dir, res, run_id_of(res)))
    return build_study(load_record_files(records), axis, cells.name, description=cells.description, missing=missing, command=command,
                       repeats=load_record_files(sorted(set(repeats))), budget=cells.budget, runs=len(cells.cells))


def write_cells_study(cells: StudyCells, out_dir: Path, axis: str | None = None, command: str = "", plot: bool = True) -> tuple[Study, list[Path]]:
    """Build the study and write it into ``out_dir/<name>/``: ``study.md``, ``study.csv`` and (with ``plot``) ``study.png``/``.svg``."""
    study = study_from_cells(cells, axis, command)
    folder = Path(out_dir) / cells.name
    paths = write_study(study, folder)
    if plot and study.blocks:
        paths.extend(write_study_figure(study, folder / "study"))
    return study, paths

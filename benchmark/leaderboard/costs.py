"""The interleaved cost pass's latencies in the leaderboard (torch-free).

``python -m benchmark cost SUITE`` (and the end of ``bench``) measures every final model of a suite
in one process, interleaved (:mod:`benchmark.cost_pass`), and writes one file per suite,
``<cost dir>/<suite>.json`` (default cost dir: ``<results dir>/../cost``, i.e. ``results/cost``
beside ``results/runs``). Each of its ``models`` entries names the record it measured (``run_id``
and the record's ``created`` time); the leaderboard takes its ms-per-example figures in place of
the record's own per-run measurement only for that exact record (a record written later, e.g. a
run trained again, keeps its per-run figure until the next cost pass).

:func:`attach_cost_pass` puts the figures on the records (``rec["_latency"]``), which
:func:`record_latency` and the frame read; :func:`latency_facts` says per block where the latency
columns come from, and flags an ensemble measured cheaper per example than the deterministic model
of its backbone (its member) beyond the min-max spread of both measurements.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

COST_PASS_KIND = "plures-cost-pass"
COST_PASS_VERSION = 1
LATENCY_KEY = "_latency"  # set on a record by attach_cost_pass: the cost pass's entry for it
LATENCY_FIELDS = ("ms_per_example_b1", "ms_per_example_large")


def default_cost_dir(results_dir: Path | str) -> Path:
    """Where cost passes go for records under ``results_dir``: its sibling ``cost`` folder
    (``results/runs`` -> ``results/cost``)."""
    return Path(results_dir).resolve().parent / "cost"


def cost_file(cost_dir: Path | str, suite: str) -> Path:
    return Path(cost_dir) / f"{suite}.json"


class CostPassFileError(ValueError):
    """A cost-pass file that cannot be used; the message names the file and what is wrong."""


def _spread_ok(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), (int, float)) and not isinstance(value.get(k), bool)
                                           and math.isfinite(value[k]) and value[k] > 0 for k in ("median", "min", "max"))


def read_cost_pass(path: Path | str) -> dict[str, Any]:
    """The cost pass stored at ``path``; :class:`CostPassFileError` when it is unreadable or malformed."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CostPassFileError(f"{path}: unreadable cost pass: {exc}") from None
    if not isinstance(data, dict) or data.get("kind") != COST_PASS_KIND:
        raise CostPassFileError(f"{path}: not a cost pass (kind must be {COST_PASS_KIND!r})")
    if data.get("version") != COST_PASS_VERSION:
        raise CostPassFileError(f"{path}: cost pass version {data.get('version')!r}; this reader knows {COST_PASS_VERSION}")
    models = data.get("models")
    if not isinstance(models, list) or not models:
        raise CostPassFileError(f"{path}: 'models' must be a non-empty list")
    for i, m in enumerate(models):
        if not isinstance(m, dict) or not isinstance(m.get("run_id"), str) or not isinstance(m.get("record_created"), str):
            raise CostPassFileError(f"{path}: models[{i}] must name its record (run_id, record_created)")
        for f in LATENCY_FIELDS:
            if not _spread_ok(m.get(f)):
                raise CostPassFileError(f"{path}: models[{i}].{f} must hold positive median, min and max")
    return data


def attach_cost_pass(records: list[dict[str, Any]], cost_dir: Path | str | None, problems: list[tuple[str, str]] | None = None) -> dict[str, dict[str, Any]]:
    """Put each suite's cost-pass figures on the records it measured (``rec["_latency"]``: the
    pass's entry for that record plus ``pass``, the pass's facts); returns ``{suite: pass}`` for
    the suites with a usable pass. A malformed file is appended to ``problems`` (or raised)."""
    passes: dict[str, dict[str, Any]] = {}
    if cost_dir is None:
        return passes
    for suite in sorted({r["identity"]["suite"] for r in records}):
        path = cost_file(cost_dir, suite)
        if not path.is_file():
            continue
        try:
            data = read_cost_pass(path)
        except CostPassFileError as exc:
            if problems is None:
                raise
            problems.append((str(path), str(exc)))
            continue
        data = {**data, "_path": str(path)}
        passes[suite] = data
        entries = {(m["run_id"], m["record_created"]): m for m in data["models"]}
        for rec in records:
            entry = entries.get((rec["run_id"], rec.get("created")))
            if rec["identity"]["suite"] == suite and entry is not None:
                rec[LATENCY_KEY] = {**entry, "pass": pass_facts(data)}
    return passes


def pass_facts(data: dict[str, Any]) -> dict[str, Any]:
    """The facts of a pass a reader needs beside its figures (date, repeats, machine, models)."""
    keys = ("created", "repeats", "warmup", "calls_per_sample", "threads", "torch", "device", "device_name", "cpu_model", "example", "seconds")
    return {k: data.get(k) for k in keys} | {"models_measured": len(data.get("models") or []), "_path": data.get("_path")}


def record_latency(rec: dict[str, Any]) -> dict[str, Any]:
    """The latency figures the leaderboard shows for ``rec``: the cost pass's when it measured this
    record, else the record's own per-run ``cost``."""
    latency = rec.get(LATENCY_KEY)
    return latency if isinstance(latency, dict) else (rec.get("cost") if isinstance(rec.get("cost"), dict) else {})


def latency_source(rec: dict[str, Any]) -> str:
    """``interleaved`` (the cost pass measured this record) or ``per-run`` (the record's own figure)."""
    return "interleaved" if isinstance(rec.get(LATENCY_KEY), dict) else "per-run"


def _label(rec: dict[str, Any]) -> str:
    ident = rec["identity"]
    return " ".join(str(x) for x in (ident["method"], ident.get("variant")) if x)


def _spread(rec: dict[str, Any], field: str) -> dict[str, float] | None:
    value = record_latency(rec).get(field)
    return value if _spread_ok(value) else None


def _flops(rec: dict[str, Any]) -> float | None:
    v = (rec.get("cost") or {}).get("flops_per_example")
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def cheaper_than_member(records: list[dict[str, Any]]) -> list[str]:
    """Ensembles (records with 2+ members) measured cheaper per example than their member, the
    deterministic model of the same suite, dataset and backbone (same seed when there is one),
    beyond the measurements' min-max spread (the ensemble's slowest repeat is faster than the
    member's fastest), at batch 1 or at the large batch. An ensemble with fewer FLOPs per example
    than that member (e.g. subnetworks of a fraction of its width) is not flagged: its FLOPs say why."""
    dets: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for rec in records:
        if rec["identity"]["method"] == "deterministic" and int(rec["identity"]["members"]) == 1:
            ident = rec["identity"]
            dets.setdefault((ident["suite"], ident["dataset"], ident["backbone"]), []).append(rec)
    flags = []
    for rec in records:
        ident = rec["identity"]
        candidates = dets.get((ident["suite"], ident["dataset"], ident["backbone"]), [])
        if int(ident["members"]) < 2 or not candidates:
            continue
        det = next((d for d in candidates if d["identity"]["seed"] == ident["seed"]), candidates[0])
        fe, fd = _flops(rec), _flops(det)
        if fe is not None and fd is not None and fe < fd:
            continue
        for field, where in (("ms_per_example_b1", "batch 1"), ("ms_per_example_large", "the large batch")):
            e, d = _spread(rec, field), _spread(det, field)
            if e is None or d is None or not (e["median"] < d["median"] and e["max"] < d["min"]):
                continue
            why = ("both from the interleaved cost pass: investigate (e.g. a kernel faster on the wider grouped layers)"
                   if latency_source(rec) == latency_source(det) == "interleaved"
                   else f"measured at different times ({latency_source(rec)} vs {latency_source(det)} figure): not comparable; "
                        f"run python -m benchmark cost {ident['suite']}")
            flags.append(f"{_label(rec)} (seed {ident['seed']}) measured {e['median']:.4g} ms/ex [{e['min']:.4g}-{e['max']:.4g}] at {where}, "
                         f"below its member deterministic (seed {det['identity']['seed']}) at {d['median']:.4g} [{d['min']:.4g}-{d['max']:.4g}] "
                         f"beyond the min-max spread, with {fe / fd if fe and fd else float('nan'):.3g}x its FLOPs per example; {why}")
    return flags


def latency_facts(frame: pd.DataFrame, records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """A block's facts on its latency columns: which rows come from the interleaved cost pass (its
    date, repeats, machine, models measured together), which keep the per-run figure, and the
    ensembles flagged by :func:`cheaper_than_member`."""
    if not records:
        return []
    inter = [r for r in records if latency_source(r) == "interleaved"]
    per_run = sorted({_label(r) for r in records if latency_source(r) == "per-run"})
    parts = []
    if inter:
        p = inter[0][LATENCY_KEY]["pass"]
        created = str(p.get("created") or "")
        parts.append(f"latency from the interleaved cost pass of {created[:10]} {created[11:16]} UTC".rstrip()
                     + f" ({len(inter)} of {len(records)} records; {p.get('models_measured')} models measured together in one process, "
                       f"median of {p.get('repeats')} interleaved repeats with min-max, on {p.get('device')} "
                       f"({p.get('cpu_model') if p.get('device') == 'cpu' and p.get('cpu_model') else p.get('device_name')})"
                     + f", torch {p.get('torch')}, {p.get('threads')} thread{'s' if p.get('threads') != 1 else ''}; example: {p.get('example')})")
    if per_run:
        parts.append("per-run figure (each run measured alone at the end of its evaluation, at different times; not strictly comparable "
                     "across rows) for: " + ", ".join(per_run))
    facts = [("Latency", "; ".join(parts))]
    flags = cheaper_than_member(records)
    if flags:
        facts.append(("Latency check", "; ".join(flags)))
    return facts

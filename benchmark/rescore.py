"""``python -m benchmark rescore``: recompute a record's metrics from its stored predictions.

Every record written with ``eval.predictions`` (the default) has a sidecar of the predictions its
metrics were computed from (:mod:`benchmark.evaluation.predictions`). Rescoring feeds those
predictions through the same metric code as the evaluation (:class:`MetricAccumulator`, which
also computes every metric registered in :mod:`benchmark.evaluation.metric_specs`, so a metric
registered after a run applies to it without training again; the corrupted summary of
:mod:`benchmark.evaluation.robustness`; the OOD metrics of :mod:`benchmark.evaluation.ood`):

* ``metrics.clean`` and ``metrics.val``: every metric (per member and diversity too when the
  members' predictions were kept; otherwise those keep their recorded values);
* ``metrics.corrupted``: every cell, and the summary over the cells;
* ``metrics.ood``: every OOD set that was evaluated (detection metrics per score).

Without ``--write`` it reports the differences from the recorded values (a relative tolerance of
``--rtol``, default 1e-6, plus an absolute 1e-12) and metrics the record lacks (new ones); with
``--write`` it rewrites the record file atomically with the rescored metrics, everything else
kept, and appends ``{"at", "plures", "parts", "changed"}`` to its ``rescored`` list.

Float32 predictions (the default) reproduce the recorded metrics on the device class that
evaluated them (CPU records on a CPU: to the last bits but for summation order); rescoring a GPU
record on a CPU may move a confidence across an ECE bin edge by one float32 ulp (exp differs),
and float16 predictions reproduce the metrics only to about 1e-3.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from .evaluation.metric_specs import apply_prediction_metrics
from .evaluation.metrics import MetricAccumulator
from .evaluation.ood import ood_entry, scores_of
from .evaluation.predictions import PredictionsError, load_predictions, split_predictions
from .evaluation.robustness import summarise
from .records import RecordError, load_records, rewrite_record, utc_now, validate

DEFAULT_RTOL = 1e-6
ATOL = 1e-12
DEFAULT_RESULTS = Path("results/runs")


def rescore_split(old: dict[str, Any], pred: dict[str, np.ndarray], batch_size: int = 1000, single_member: bool = False) -> dict[str, Any]:
    """The metrics of one split from its predictions (``log_probs``, ``targets``, ``members``?), over
    ``old`` (the recorded ones, kept where the predictions cannot recompute them: member metrics
    without members). ``single_member``: a one-member model, whose member is ``log_probs``."""
    if "targets" not in pred:
        raise PredictionsError("the stored predictions lack targets")
    acc = MetricAccumulator()
    log_probs, targets, members = pred["log_probs"], pred["targets"], pred.get("members")
    if members is None and single_member:
        members = log_probs[None]
    for i in range(0, len(targets), batch_size):
        j = min(i + batch_size, len(targets))
        acc.update_log_probs(torch.from_numpy(np.ascontiguousarray(log_probs[i:j])), torch.from_numpy(np.ascontiguousarray(targets[i:j])),
                             None if members is None else torch.from_numpy(np.ascontiguousarray(members[:, i:j])))
    return {**old, **acc.compute()}


def rescore_metrics(record: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], list[str]]:
    """(the record's metrics recomputed from ``arrays``, the parts rescored: ``clean``, ``val``,
    ``corrupted/<c>/<s>``, ``corrupted/summary``, ``ood/<name>``)."""
    metrics = copy.deepcopy(record["metrics"])
    batch = int(((record.get("config") or {}).get("eval") or {}).get("batch_size") or 1000)
    single = bool(((record.get("predictions") or {}).get("notes") or {}).get("single_member"))
    parts: list[str] = []
    for split in ("clean", "val"):
        pred = split_predictions(arrays, split)
        if isinstance(metrics.get(split), dict) and pred:
            metrics[split] = rescore_split(metrics[split], pred, batch, single)
            parts.append(split)
    corrupted = metrics.get("corrupted")
    if isinstance(corrupted, dict) and isinstance(corrupted.get("per"), dict):
        every = True
        for name, cells in corrupted["per"].items():
            for sev, old in cells.items():
                pred = split_predictions(arrays, f"corrupted/{name}/{sev}")
                if pred:
                    cells[sev] = rescore_split(old, pred, batch, single)
                    parts.append(f"corrupted/{name}/{sev}")
                else:
                    every = False
        if every and corrupted["per"]:
            corrupted["summary"] = {**(corrupted.get("summary") or {}), **summarise(corrupted["per"])}
            parts.append("corrupted/summary")
    ood = metrics.get("ood")
    if isinstance(ood, dict):
        inside = split_predictions(arrays, "ood_in") or split_predictions(arrays, "clean")
        for name, old in ood.items():
            pred = split_predictions(arrays, f"ood/{name}")
            if not isinstance(old, dict) or "absent" in old or not pred or not inside:
                continue
            entry = ood_entry(scores_of(inside["log_probs"]), scores_of(pred["log_probs"]), len(inside["log_probs"]), len(pred["log_probs"]))
            ood[name] = {**old, **entry}
            parts.append(f"ood/{name}")
    # the prediction-metric groups of metric_specs (temperature-scaled metrics, selective prediction, OOD by every score)
    members = int(record["identity"].get("members") or 1)
    parts += [f"group/{g}" for g in apply_prediction_metrics(metrics, arrays, members)]
    return metrics, parts


def differences(old: Any, new: Any, rtol: float = DEFAULT_RTOL, where: str = "metrics") -> list[tuple[str, Any, Any]]:
    """(key path, recorded, rescored) of every number that differs beyond ``rtol`` (relative) +
    1e-12 (absolute), or that only one side has (a metric registered after the run: recorded None)."""
    out: list[tuple[str, Any, Any]] = []
    if isinstance(old, dict) or isinstance(new, dict):
        old_d, new_d = (old if isinstance(old, dict) else {}), (new if isinstance(new, dict) else {})
        for key in sorted(set(old_d) | set(new_d), key=str):
            out += differences(old_d.get(key), new_d.get(key), rtol, f"{where}.{key}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            out += differences(a, b, rtol, f"{where}[{i}]")
        return out
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (old, new))
    if numbers:
        if not (math.isclose(old, new, rel_tol=rtol, abs_tol=ATOL) or (math.isnan(old) and math.isnan(new))):
            out.append((where, old, new))
    elif old != new:
        out.append((where, old, new))
    return out


def rescore_record(record: dict[str, Any], *, write: bool = False, rtol: float = DEFAULT_RTOL) -> dict[str, Any]:
    """Rescore one loaded record (with ``_path``): ``{"path", "parts", "differences", "written"}``.
    PredictionsError when its sidecar is absent, missing or does not match."""
    arrays = load_predictions(record)
    metrics, parts = rescore_metrics(record, arrays)
    diffs = differences(record["metrics"], metrics, rtol)
    written = False
    if write:
        new = {k: v for k, v in record.items() if k != "_path"}
        new["metrics"] = metrics
        new["rescored"] = [*(record.get("rescored") or []), {"at": utc_now(), "plures": _version(), "parts": parts,
                                                             "changed": [d[0] for d in diffs]}]
        rewrite_record(record["_path"], new)
        written = True
    return {"path": record["_path"], "parts": parts, "differences": diffs, "written": written}


def _version() -> str:
    from . import __version__

    return __version__


def select_records(paths: Iterable[str | Path], results_dir: Path, suite: str | None) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """The completed records to rescore: the given files (or every newest record under given
    folders), else those of ``results_dir`` (or its ``suite`` folder); and (file, problem) pairs."""
    records, problems = [], []
    roots = [Path(p) for p in paths] or [results_dir / suite if suite else results_dir]
    for root in roots:
        if root.is_file():
            try:
                rec = validate(json.loads(root.read_text()), where=str(root))
            except (OSError, ValueError) as exc:
                problems.append((str(root), str(exc)))
                continue
            rec["_path"] = str(root)
            records.append(rec)
        elif root.is_dir():
            loaded = load_records(root)
            records += loaded.records
            problems += loaded.problems
        else:
            problems.append((str(root), "no such record file or folder"))
    if suite:
        records = [r for r in records if r["identity"]["suite"] == suite]
    return [r for r in records if r["status"] == "completed"], problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark rescore", description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("records", nargs="*", help="record files or folders of records (default: every newest record under --results-dir)")
    p.add_argument("--suite", help="only the records of this suite (default folder: RESULTS_DIR/SUITE)")
    p.add_argument("--results-dir", type=Path, default=DEFAULT_RESULTS, help=f"where the records are (default: {DEFAULT_RESULTS})")
    p.add_argument("--write", action="store_true", help="rewrite each record with its rescored metrics (atomically; noted in its 'rescored' list)")
    p.add_argument("--rtol", type=float, default=DEFAULT_RTOL, help=f"relative tolerance of a difference report (default: {DEFAULT_RTOL:g})")
    args = p.parse_args(argv)
    records, problems = select_records(args.records, args.results_dir, args.suite)
    for path, why in problems:
        print(f"skipped {path}: {why}")
    if not records and not problems:
        print("no records to rescore")
    failures = len(problems)
    differing = 0
    skipped = 0
    for rec in records:
        if not isinstance(rec.get("predictions"), dict):  # written before predictions were stored, or with eval.predictions = false
            print(f"skipped {rec['_path']}: no sidecar (no stored predictions in this record)")
            skipped += 1
            continue
        try:
            result = rescore_record(rec, write=args.write, rtol=args.rtol)
        except (PredictionsError, RecordError, ValueError) as exc:
            print(f"cannot rescore {rec['_path']}: {exc}")
            failures += 1
            continue
        diffs = result["differences"]
        differing += bool(diffs)
        state = "rewritten" if result["written"] else ("matches" if not diffs else f"{len(diffs)} difference(s)")
        print(f"{rec['_path']}: {len(result['parts'])} part(s) rescored, {state}")
        for key, old, new in diffs[:50]:
            print(f"  {key}: recorded {old!r} -> rescored {new!r}")
        if len(diffs) > 50:
            print(f"  ... and {len(diffs) - 50} more")
    print(f"{len(records) - skipped} record(s), {differing} with differences, {failures} problem(s), {skipped} without a sidecar"
          + (" (rewritten)" if args.write else ""))
    return 1 if failures or (differing and not args.write) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

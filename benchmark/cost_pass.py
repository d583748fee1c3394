"""The interleaved cost pass: every final model of a suite measured together, in one process.

Each run measures its own latency at the end of its evaluation (:func:`benchmark.runner`'s
``measure_cost``): alone, at its own time, so two rows of a leaderboard may differ by what the
machine was doing then (an ensemble can look faster per example than the deterministic model it
contains). ``python -m benchmark cost SUITE`` and the end of ``bench`` rebuild every model of the
suite's records in one process and time them interleaved, as ``make perf`` does:

- rebuild: for each record, the method of its resolved config (:func:`benchmark.runner.build_method`
  on the record's dataset), its network from ``method.build()`` with the training run's saved final
  weights (``<checkpoint dir>/<training run id>/final.pt``, else a store of kept weights,
  ``--weights-dir``: :func:`benchmark.runner.find_final_weights`), channels-last when the run evaluated
  so, and the network of the ``method.eval_variants`` entry whose label is the record's variant
  (MC dropout's K=1 and K=4 are two records of one training run: loaded once);
- input: the first image of the dataset's test split, normalised as in evaluation, tiled to the
  batch (as the per-run measurement does);
- timing: per batch size (1, then each record's ``eval.latency_batch``), ``warmup`` rounds over all
  models, then ``repeats`` rounds; in each round every model is timed once (round-robin; the
  starting model rotates by one per round, so no model always follows the same one), a sample
  being ``calls`` forward passes at batch 1 (one at the large batch) in the record's precision;
  reported: the median ms per example with the min and max over the rounds.

One file per suite, ``<cost dir>/<suite>.json`` (written atomically; default cost dir
``results/cost`` beside ``results/runs``), holds one entry per model (naming the record it
measured: run id and creation time) and the pass's facts (date, machine, torch, threads, repeats,
the models measured together); :mod:`benchmark.leaderboard.costs` reads it.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from .core.cpu import cpu_model
from .core.io import atomic_write_json
from .core.runtime import autocast, select_device
from .data.base import Dataset, load_dataset
from .leaderboard.costs import COST_PASS_KIND, COST_PASS_VERSION, cost_file
from .records import load_records, provenance, utc_now
from .runner import WeightsError, final_weights, load_trained, trained_precision

MIN_REPEATS = 2  # the documented figures (docs/records.md) use the default, 5; tests may use 2
DEFAULT_REPEATS = 5
DEFAULT_CALLS_B1 = 10  # forward passes per sample at batch 1 (one pass of a small network is ~1 ms: timer and scheduler noise)
ORDER = "round-robin over the models in each repeat (warm-up rounds first); the starting model rotates by one per repeat"


class CostPassError(ValueError):
    """A cost pass that cannot run: no records, a missing checkpoint, a variant the method no longer
    evaluates; the message names the run and what was expected."""


@dataclass
class Measured:
    """One model of the pass: its record, network and how its run evaluated."""

    key: str  # the record's run id
    record: dict[str, Any]
    net: nn.Module
    precision: str
    channels_last: bool
    large_batch: int
    forward_passes: int
    checkpoint: Path
    example: torch.Tensor  # one normalised test image [1, C, H, W]

    def input(self, batch: int) -> torch.Tensor:
        x = self.example.expand(batch, *self.example.shape[1:]).clone()
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x.contiguous()


def suite_name(suite: str) -> str:
    """A suite's name from its name or its file (``benchmark/suites/<name>.toml`` or a path)."""
    if suite.endswith(".toml") or Path(suite).is_file():
        from .core.config import load_suite

        return load_suite(suite)[0]["name"]
    return suite


def suite_records(results_dir: Path | str, suite: str) -> list[dict[str, Any]]:
    """The newest completed record per run id of ``suite`` under ``results_dir`` (path order)."""
    loaded = load_records(results_dir).records
    mine = [r for r in loaded if r["identity"]["suite"] == suite]
    if not mine:
        have = sorted({r["identity"]["suite"] for r in loaded})
        raise CostPassError(f"no completed records of suite {suite!r} under {results_dir}; suites with records: {', '.join(have) or 'none'} "
                            f"(pass --results-dir to read another folder)")
    return mine


checkpoint_of = final_weights  # the record's final weights (benchmark.runner.final_weights)


def missing_checkpoints(records: list[dict[str, Any]], checkpoint_dir: Path | str,
                        weights_dirs: Sequence[Path | str] = ()) -> list[tuple[dict[str, Any], Path]]:
    found = [(r, checkpoint_of(r, checkpoint_dir, weights_dirs)) for r in records]  # the checkpoint folder's path where none has them
    return [(r, path) for r, path in found if not path.is_file()]


def _where(checkpoint_dir: Path | str, weights_dirs: Sequence[Path | str]) -> str:
    return f"{checkpoint_dir}" + "".join(f" or {w}" for w in weights_dirs)


def missing_message(missing: list[tuple[dict[str, Any], Path]], checkpoint_dir: Path | str) -> str:
    lines = "; ".join(f"run {r['run_id']} (training run {r.get('training_run_id')}): expected final weights at {p}" for r, p in missing)
    return (f"cannot measure {len(missing)} model(s): {lines}; the cost pass loads each record's final weights from --checkpoint-dir "
            f"{checkpoint_dir} (pass the folder the runs were trained with, or run them again)")


def first_test_image(data: Dataset, device: torch.device) -> torch.Tensor:
    """The first image of ``data``'s test split, normalised as evaluation does: ``[1, C, H, W]``."""
    one = data.test.take(np.arange(1)).on_device(data.mean, data.std, device)
    return next(one.eval_batches(1))[0]


def load_models(records: list[dict[str, Any]], checkpoint_dir: Path | str, *, data_dir: Any = None, cache_dir: Any = None,
                device: torch.device | str = "cpu", log: Callable[[str], None] = print, weights_dirs: Sequence[Path | str] = ()) -> list[Measured]:
    """Every record's evaluated network rebuilt from its config and its training run's final weights
    (one load per training run; from ``checkpoint_dir``, else a store of kept weights in ``weights_dirs``), in
    record order; :class:`CostPassError` names a run whose weights are missing or do not fit, or whose
    variant the method does not evaluate."""
    device = torch.device(device)
    missing = missing_checkpoints(records, checkpoint_dir, weights_dirs)
    if missing:
        raise CostPassError(missing_message(missing, checkpoint_dir))
    datasets: dict[str, tuple[Dataset, torch.Tensor]] = {}
    trained: dict[tuple[str, str], tuple[Any, nn.Module]] = {}
    out = []
    for rec in records:
        resolved = rec["config"]
        name = resolved["run"]["dataset"]
        if name not in datasets:
            data = load_dataset(name, data_dir, cache_dir, download=False, progress=False)
            datasets[name] = (data, first_test_image(data, device))
        data, example = datasets[name]
        path = checkpoint_of(rec, checkpoint_dir, weights_dirs)
        channels_last = bool(resolved["train"]["channels_last"])
        key = (str(path), str(channels_last))
        try:
            run = load_trained(rec, checkpoint_dir, data, device, model=trained.get(key), weights_dirs=weights_dirs)
        except WeightsError as exc:
            raise CostPassError(str(exc)) from None
        trained[key] = (run.method, run.model)
        precision = resolved["eval"].get("precision") or trained_precision(resolved["train"]["precision"], rec)
        out.append(Measured(rec["run_id"], rec, run.network, precision, channels_last, int(resolved["eval"]["latency_batch"]),
                            run.forward_passes, path, example))
        log(f"cost pass: loaded {rec['run_id']} from {path}")
    return out


@torch.no_grad()
def time_sample(m: Measured, x: torch.Tensor, calls: int) -> float:
    """ms per example of ``calls`` forward passes of ``m`` on the prepared batch ``x``."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    with autocast(m.precision, x.device):
        sync()
        t0 = time.perf_counter()
        for _ in range(calls):
            m.net(x)
        sync()
    return (time.perf_counter() - t0) * 1000 / (calls * x.shape[0])


def measure_interleaved(models: list[Measured], *, repeats: int = DEFAULT_REPEATS, warmup: int = 1, calls_b1: int = DEFAULT_CALLS_B1,
                        log: Callable[[str], None] = print) -> dict[str, dict[str, dict[str, Any]]]:
    """``{run id: {"ms_per_example_b1": spread, "ms_per_example_large": spread}}``, each spread the
    median, min and max over ``repeats`` interleaved rounds (and the samples)."""
    if repeats < MIN_REPEATS:
        raise CostPassError(f"repeats = {repeats} is not valid: the cost pass needs at least {MIN_REPEATS} (default {DEFAULT_REPEATS})")
    if not models:
        raise CostPassError("no models to measure")
    out: dict[str, dict[str, dict[str, Any]]] = {m.key: {} for m in models}
    n = len(models)
    for field, batch_of, calls in (("ms_per_example_b1", lambda m: 1, calls_b1), ("ms_per_example_large", lambda m: m.large_batch, 1)):
        inputs = {m.key: m.input(batch_of(m)) for m in models}
        for _ in range(warmup):
            for m in models:
                time_sample(m, inputs[m.key], calls)
        samples: dict[str, list[float]] = {m.key: [] for m in models}
        for r in range(repeats):
            for m in models[r % n:] + models[: r % n]:
                samples[m.key].append(time_sample(m, inputs[m.key], calls))
        for m in models:
            s = samples[m.key]
            out[m.key][field] = {"median": statistics.median(s), "min": min(s), "max": max(s), "repeats": repeats, "batch_size": batch_of(m),
                                 "calls_per_sample": calls, "samples": s}
        del inputs
        log(f"cost pass: {field} measured ({repeats} interleaved repeats over {n} models)")
    return out


def kept_entries(path: Path, records: list[dict[str, Any]], measured: set[tuple[str, str]]) -> list[dict[str, Any]]:
    """The entries of the suite's earlier pass at ``path`` for models this pass did not measure (their
    weights missing, or a bench of some of the suite's runs) whose records still exist unchanged:
    a pass merges into the file, never drops a model it did not time. Each kept entry names the pass
    it comes from (``from_pass``: its date and the models measured together with it there)."""
    from .leaderboard.costs import CostPassFileError, read_cost_pass

    if not path.is_file():
        return []
    try:
        old = read_cost_pass(path)
    except CostPassFileError:
        return []  # a malformed file is replaced (the leaderboard reported it as a problem)
    current = {(r["run_id"], r.get("created")) for r in records}
    kept = []
    for e in old["models"]:
        key = (e["run_id"], e["record_created"])
        if key in current and key not in measured:
            source = e.get("from_pass") or {"created": old.get("created"), "models_measured_together": old.get("models_measured_together")}
            kept.append({**e, "from_pass": source})
    return kept


def run_cost_pass(suite: str, results_dir: Path | str, checkpoint_dir: Path | str, cost_dir: Path | str, *, data_dir: Any = None,
                  cache_dir: Any = None, device: str = "auto", repeats: int = DEFAULT_REPEATS, warmup: int = 1, calls_b1: int = DEFAULT_CALLS_B1,
                  skip_missing: bool = False, log: Callable[[str], None] = print, weights_dirs: Sequence[Path | str] = ()) -> Path:
    """Measure every model of ``suite``'s records interleaved and write ``<cost dir>/<suite>.json``;
    returns its path. ``skip_missing``: leave out (and name) records whose final weights are missing
    instead of failing (the end of ``bench``: records of older benches may have lost theirs).
    ``weights_dirs``: stores of kept final weights searched after ``checkpoint_dir``."""
    if repeats < MIN_REPEATS:
        raise CostPassError(f"repeats = {repeats} is not valid: the cost pass needs at least {MIN_REPEATS} (default {DEFAULT_REPEATS})")
    t0 = time.perf_counter()
    records = suite_records(results_dir, suite)
    missing = missing_checkpoints(records, checkpoint_dir, weights_dirs)
    if missing and skip_missing:
        log(f"cost pass: {len(missing)} of {len(records)} model(s) left out, their final weights not under {_where(checkpoint_dir, weights_dirs)} "
            f"(e.g. {missing[0][1]}); they keep their per-run latency (or their earlier pass's figures). To time them, "
            f"train them in this checkout or pass the --checkpoint-dir they were trained with")
        gone = {id(r) for r, _ in missing}
        records = [r for r in records if id(r) not in gone]
        if not records:
            raise CostPassError(f"no model of suite {suite!r} has its final weights under {_where(checkpoint_dir, weights_dirs)}")
    dev = select_device(device)
    models = load_models(records, checkpoint_dir, data_dir=data_dir, cache_dir=cache_dir, device=dev, log=log, weights_dirs=weights_dirs)
    loaded = time.perf_counter()
    figures = measure_interleaved(models, repeats=repeats, warmup=warmup, calls_b1=calls_b1, log=log)
    measured = time.perf_counter()
    prov = provenance(str(dev))
    entries = []
    for m in models:
        rec = m.record
        own = rec.get("cost") or {}
        entries.append({"run_id": m.key, "record": rec.get("_path"), "record_created": rec["created"], "training_run_id": rec.get("training_run_id"),
                        "identity": rec["identity"], "checkpoint": str(m.checkpoint), "precision": m.precision, "channels_last": m.channels_last,
                        "forward_passes": m.forward_passes, **figures[m.key],
                        "per_run": {f: (own.get(f) or {}).get("median") for f in ("ms_per_example_b1", "ms_per_example_large")}})
    kept = kept_entries(cost_file(cost_dir, suite), suite_records(results_dir, suite), {(e["run_id"], e["record_created"]) for e in entries})
    if kept:
        log(f"cost pass: {len(kept)} model(s) not measured this time keep the figures of their earlier pass")
    names = sorted({m.record["config"]["run"]["dataset"] for m in models})
    result = {
        "kind": COST_PASS_KIND, "version": COST_PASS_VERSION, "suite": suite, "created": utc_now(),
        "repeats": repeats, "warmup": warmup, "calls_per_sample": {"batch_1": calls_b1, "large_batch": 1}, "order": ORDER,
        "example": f"the first image of the {', '.join(names)} test split, normalised, tiled to the batch",
        "device": str(dev), "device_name": prov.get("device_name"), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "platform": platform.platform(), "hostname": prov.get("hostname"),
        "git_commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"), "host_allocator": prov.get("host_allocator"),
        "models_measured_together": [m.key for m in models], "left_out": [{"run_id": r["run_id"], "expected": str(p)} for r, p in missing],
        "seconds": time.perf_counter() - t0, "seconds_loading": loaded - t0, "seconds_measuring": measured - loaded,
        "models": entries + kept,
    }
    path = atomic_write_json(cost_file(cost_dir, suite), result)
    log(f"cost pass of suite {suite}: {len(models)} models in {result['seconds']:.1f}s (measuring {result['seconds_measuring']:.1f}s) -> {path}")
    return path

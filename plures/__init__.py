"""plures' Python API: a thin facade over the harness (``benchmark``), the one public entry of the
installed distribution.

>>> import plures
>>> records = plures.run({"run": {"method": "mimo", "dataset": "cifar10-jpeg", "backbone": "resnet8"}, "train": {"epochs": 1}})
>>> trained = plures.load(records[0])               # the trained model and its method, from the record
>>> metrics = plures.evaluate(trained)              # the record's clean metrics, recomputed
>>> plures.leaderboard("quick", reference=True)     # the published quick leaderboard, rebuilt

Everything here calls the harness's own functions (``benchmark.runner``, ``benchmark.leaderboard``):
there is no second implementation. Folders default as the command line's do: your records in
``results/runs``, checkpoints in ``results/checkpoints``, the published records in ``results/reference``;
data by the one rule (``--data-dir``/``data_dir``, else ``$PLURES_DATA_DIR``, else ``../shared/data`` when
it exists, else ``./data``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["TrainedRun", "boards", "evaluate", "leaderboard", "load", "records", "run"]

from benchmark.runner import TrainedRun, trained_precision  # noqa: E402  (TrainedRun re-exported: what load returns)


def _environment(results_dir: Path | str | None, checkpoint_dir: Path | str | None, data_dir: Any, cache_dir: Any, device: str | None,
                 restart: bool = False, progress: bool = False, log: Any = None):
    from benchmark.core.runtime import DEFAULT_CHECKPOINTS, DEFAULT_RESULTS, Environment

    return Environment(data_dir=data_dir, cache_dir=cache_dir, results_dir=Path(results_dir or DEFAULT_RESULTS),
                       checkpoint_dir=Path(checkpoint_dir or DEFAULT_CHECKPOINTS), device=device, restart=restart, progress=progress,
                       log=log or (lambda message: print(message, flush=True)))


def run(config: dict[str, Any] | str | Path, *, results_dir: Path | str | None = None, checkpoint_dir: Path | str | None = None,
        data_dir: Any = None, cache_dir: Any = None, device: str | None = None, restart: bool = False,
        progress: bool = False) -> list[dict[str, Any]]:
    """Train and evaluate one run (a config dict, or a ``.toml`` run config); returns its records (one per
    evaluated variant), each with ``_path``. As on the command line, a finished run is not trained again
    (its records are returned), an interrupted one resumes, and ``restart=True`` trains anew."""
    from benchmark.core import config as C
    from benchmark.runner import run_experiment

    cfg = C.load_toml(config) if isinstance(config, (str, Path)) else config
    paths = run_experiment(cfg, _environment(results_dir, checkpoint_dir, data_dir, cache_dir, device, restart, progress))
    return [_read(p) for p in paths]


def _read(path: Path | str) -> dict[str, Any]:
    from benchmark.records import validate

    rec = validate(json.loads(Path(path).read_text()), where=str(path))
    rec["_path"] = str(path)
    return rec


def _record(record_or_run: dict[str, Any] | str | Path, results_dir: Path | str | None) -> dict[str, Any]:
    """A record from a record dict, a record file, or a run id / training run id (its newest record under ``results_dir``)."""
    if isinstance(record_or_run, dict):
        return record_or_run
    path = Path(record_or_run)
    if path.suffix == ".json" and path.is_file():
        return _read(path)
    from benchmark.core.runtime import DEFAULT_RESULTS
    from benchmark.records import load_records

    name = path.name
    found = [r for r in load_records(results_dir or DEFAULT_RESULTS).records if name in (r["run_id"], r.get("training_run_id"))]
    if not found:
        raise FileNotFoundError(f"no record file {path} and no completed record of run {name!r} under {results_dir or DEFAULT_RESULTS}; "
                                f"pass a record (.json), a run id, or results_dir=")
    return max(found, key=lambda r: r["created"])


def load(record_or_run: dict[str, Any] | str | Path, *, checkpoint_dir: Path | str | None = None, results_dir: Path | str | None = None,
         data_dir: Any = None, cache_dir: Any = None, device: str = "cpu") -> TrainedRun:
    """A finished run's trained model and its method: from a record (dict or file) or a run id, with the final
    weights of its training run (``<checkpoint_dir>/<training run id>/final.pt``). Returns a
    :class:`~benchmark.runner.TrainedRun` (``.method``, ``.model``, ``.network``: the evaluated variant in eval
    mode, ``.record``, ``.data``)."""
    from benchmark.core.runtime import DEFAULT_CHECKPOINTS
    from benchmark.data.base import load_dataset
    from benchmark.runner import WeightsError, final_weights, load_trained

    rec = _record(record_or_run, results_dir)
    resolved = rec["config"]
    weights = final_weights(rec, checkpoint_dir or DEFAULT_CHECKPOINTS)
    if not weights.is_file():  # said before any data is read
        raise WeightsError(f"run {rec['run_id']}: expected its final weights at {weights} (pass the checkpoint_dir the run was "
                           f"trained with, or train it here: plures.run(record['config']))")
    data = load_dataset(resolved["run"]["dataset"], data_dir, cache_dir, val_size=resolved["data"]["val_size"],
                        val_seed=resolved["run"]["seed"], download=False, progress=False)
    return load_trained(rec, checkpoint_dir or DEFAULT_CHECKPOINTS, data, device)


def evaluate(trained: TrainedRun, *, test_subset: int | None = None, test_subset_seed: int | None = None, corruptions: str | None = None,
             batch_size: int | None = None, data_dir: Any = None, cache_dir: Any = None, progress: bool = False) -> dict[str, Any]:
    """The metrics of a loaded run on its dataset's test split, as its record computed them: ``{"clean": ...}``
    (with the prediction metrics: calibrated NLL, AURC, ...), ``"val"`` when the run held out a validation
    split, and, with ``corruptions`` (``"regenerated"``, ``"official"`` or a folder; default: none), ``"corrupted"``.
    Unset arguments take the record's evaluation settings, so ``evaluate(load(record))["clean"]`` reproduces
    the record's clean metrics."""
    from benchmark.data.base import take_subset
    from benchmark.evaluation.evaluate import evaluate_with_predictions
    from benchmark.evaluation.metric_specs import apply_prediction_metrics
    from benchmark.evaluation.predictions import KeepPolicy, prefixed
    from benchmark.evaluation.robustness import evaluate_corrupted

    ev = dict(trained.config["eval"])
    for key, value in (("test_subset", test_subset), ("test_subset_seed", test_subset_seed), ("batch_size", batch_size)):
        if value is not None:
            ev[key] = value
    data, device = trained.data, next(trained.network.parameters()).device
    members = int(trained.record["identity"]["members"])
    precision = ev["precision"] or trained_precision(trained.config["train"]["precision"], trained.record)
    kwargs = dict(batch_size=int(ev["batch_size"]), precision=precision, channels_last=bool(trained.config["train"]["channels_last"]),
                  progress=progress)
    # as the run evaluated: the clean (and validation) pass keeping the predictions the record's policy keeps,
    # then the prediction metrics (calibrated NLL, AURC, ...) computed from them
    keeping = KeepPolicy(ev, members, data.num_classes)
    test = take_subset(data.test, int(ev["test_subset"]), int(ev["test_subset_seed"])).on_device(data.mean, data.std, device)
    metrics: dict[str, Any] = {}
    metrics["clean"], kept = evaluate_with_predictions(trained.network, test, desc="eval", **kwargs,
                                                       keep=keeping.keep("clean", len(test)) or "combined")
    arrays = prefixed("clean", kept)
    if data.val is not None:
        val = data.val.on_device(data.mean, data.std, device)
        metrics["val"], val_kept = evaluate_with_predictions(trained.network, val, desc="eval val", **kwargs,
                                                             keep=keeping.keep("val", len(val)) or "combined")
        arrays.update(prefixed("val", val_kept))
    apply_prediction_metrics(metrics, arrays, members)
    if corruptions and corruptions != "none":
        env = _environment(None, None, data_dir, cache_dir, str(device))
        metrics["corrupted"] = evaluate_corrupted(trained.network, data, {**ev, "corruptions": corruptions}, env, **kwargs)
    return metrics


def leaderboard(suite: str | None = None, *, reference: bool = False, results_dir: Path | str | None = None, out: Path | str | None = None,
                resamples: int | None = None) -> list[Path]:
    """Rebuild a suite's leaderboard (all suites when ``suite`` is None) from its records: your own
    (``results/runs`` -> ``results/leaderboards``, beside the published reference rows) or, with
    ``reference=True``, the published ones (``results/reference``). Returns the files written."""
    from benchmark.core.runtime import DEFAULT_RESULTS, REFERENCE_ROOT, REFERENCE_RUNS
    from benchmark.leaderboard import write_leaderboards
    from benchmark.leaderboard.comparisons import DEFAULT_RESAMPLES

    root = REFERENCE_ROOT if reference else DEFAULT_RESULTS.parent
    return write_leaderboards(Path(results_dir or root / "runs"), Path(out or root / "leaderboards"), suites=[suite] if suite else None,
                              n_resamples=resamples or DEFAULT_RESAMPLES, reference_dir=None if reference else REFERENCE_RUNS)


def _records_dir(results_dir: Path | str | None, reference: bool) -> Path:
    from benchmark.core.runtime import DEFAULT_RESULTS, REFERENCE_RUNS

    return Path(results_dir) if results_dir else (REFERENCE_RUNS if reference else DEFAULT_RESULTS)


def records(results_dir: Path | str | None = None, *, suite: str | None = None, reference: bool = False,
            problems: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """The newest completed record per run under ``results_dir`` (default: your ``results/runs``; with
    ``reference=True`` the published ``results/reference/runs``), schema-checked, each with ``_path``;
    only ``suite``'s when given. Malformed files are left out and, with ``problems``, appended to it as
    (path, reason)."""
    from benchmark.records import load_records

    loaded = load_records(_records_dir(results_dir, reference))
    if problems is not None:
        problems.extend(loaded.problems)
    return [r for r in loaded.records if suite is None or r["identity"]["suite"] == suite]


def boards(results_dir: Path | str | None = None, *, suites: list[str] | None = None, reference: bool = False) -> list[Any]:
    """The leaderboards of the records under ``results_dir`` (as :func:`records` chooses it) as data, without writing
    anything: one board per suite, one block per (dataset, backbone), each block's ``table`` a DataFrame."""
    from benchmark.leaderboard.boards import load_boards

    return load_boards(_records_dir(results_dir, reference), suites, warn=False)

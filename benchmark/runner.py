"""One run: config in, record out.

``run_experiment`` resolves a config, loads the data (decoded once, cached), lets the method run
its stages through a :class:`RunContext`, evaluates the result (clean, and corrupted when asked),
measures its cost and writes one record per evaluated variant. A failure writes a record marked
``failed`` with the error; a stop request (Ctrl-C, SIGTERM, preemption) leaves the checkpoints
resumable and writes nothing.

A run is idempotent in its identity. When it starts, on any path (``run``, ``bench``, a sweep task,
a scheduler's requeue), it decides from disk (:func:`run_state`): a completed record of its
identity (its training run id and the evaluation settings that shape the metrics, in its suite's
folder) means it is done, and that record is returned without training; a stage checkpoint means it
resumes from it; else it starts. ``Environment.restart`` trains anew instead; nothing finished is
deleted first (the new final weights and record replace the old ones when they are complete).

A bad config value, name or option, or data that cannot be found, fails before anything is locked
or written. While a run trains and evaluates it holds a lock (``run.lock`` in its checkpoint
folder): a second process with the same run id fails at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import json
import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .backbones import check_backbone_options
from .core import config as C
from .core.allocator import tune_host_allocator
from .core.config import TrainConfig
from .core.cpu import configure_threads
from .core.runtime import DEFAULT_CHECKPOINTS, DEFAULT_RESULTS, Environment, StopRequested, hash_seed, select_device, stop_on_signals
from .core.io import atomic_write_json
from .data.base import (Dataset, check_data_sizes, check_ood_names, dataset_spec, hold_out_validation, load_dataset, resolve_cache_dir, subset_facts, take_subset,
                        with_train_subset)
from .data.corrupted.base import corrupted_source
from .evaluation.cost import measure_cost, peak_memory_mb
from .corruptions import corruption_set
from .evaluation.evaluate import evaluate_with_predictions
from .evaluation.metric_specs import apply_prediction_metrics
from .evaluation.predictions import KeepPolicy, prefixed
from .evaluation.ood import evaluate_ood
from .evaluation.robustness import evaluate_corrupted
from .methods.base import Method
from .catalogue.methods import build_method as build_method_for, get_method
from .records import load_records, provenance, utc_now, write_record
from .training.checkpoints import ResumePoint, resume_point
from .training.precision import PrecisionChoice, choose_precision, load_choice, stage_precision
from .training.train import compile_override, fit, save_checkpoint, to_channels_last

__all__ = ["DEFAULT_CHECKPOINTS", "DEFAULT_RESULTS", "Environment", "LOCK_NAME", "RunContext", "RunLockedError", "RunState", "StageContextBase",
           "TrainedRun", "WeightsError", "build_method", "check_runs", "completed_records", "final_weights", "find_final_weights", "load_trained", "member_config", "record_matches", "record_run_id", "run_experiment", "run_id_of", "run_lock", "run_state",
           "select_device"]

LOCK_NAME = "run.lock"
NON_SHAPING_TRAIN = ("log",)  # train keys that do not change what is trained (not in the run id)
# eval keys that do not change a record's metrics (a record evaluated with other values still counts as this run's)
NON_SHAPING_EVAL = ("batch_size", "latency_repeats", "latency_batch", "predictions", "predictions_dtype")
SUBSET_KEYS = ("train_subset", "subset_seed")  # data keys that shape a run only when a training subset is taken


def run_id_of(resolved: dict[str, Any]) -> str:
    """A stable id: method, dataset, backbone, seed and a hash of everything that shapes the result."""
    shaping = {k: v for k, v in resolved.items() if k != "eval"}
    shaping["run"] = {k: v for k, v in resolved["run"].items() if k not in ("suite", "name")}
    # keys added later at their earlier value leave the id as it was; execution keys count at their original defaults
    shaping["train"] = {k: v for k, v in resolved["train"].items()
                        if k not in NON_SHAPING_TRAIN and not (k in C.TRAIN_KEYS_ADDED and v == C.TRAIN_KEYS_ADDED[k])}
    shaping["train"].update({k: v for k, v in C.EXECUTION_TRAIN.items() if k in shaping["train"]})
    if not resolved["data"].get("train_subset"):  # all training images: the ids of runs from before the subset keys
        shaping["data"] = {k: v for k, v in resolved["data"].items() if k not in SUBSET_KEYS}
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:10]
    r = resolved["run"]
    return f"{r['method']}-{r['dataset']}-{r['backbone']}-s{r['seed']}-{digest}"


class StageContextBase:
    """What every stage context shares (:class:`benchmark.methods.base.StageContext`): the run's
    resolved config, id, seed and training budget, and the bookkeeping of the member runs it obtains.

    ``member_model(overrides)`` derives the member run's config and id (:func:`member_config`,
    :func:`run_id_of`), asks the subclass for its network (:meth:`_member_network`) and lists it in
    ``members``; ``fit`` is the subclass's. :class:`RunContext` trains; the sweep's planning
    context (``benchmark.sweep.plan``) records requests on the meta device without training.
    """

    def __init__(self, resolved: dict[str, Any], run_id: str, device: torch.device) -> None:
        self.config = resolved
        self.run_id = run_id
        self.device = device
        self.history: dict[str, list[dict[str, Any]]] = {}
        self.train_seconds = 0.0
        self.members: list[dict[str, Any]] = []

    @property
    def seed(self) -> int:
        return int(self.config["run"]["seed"])

    def train_config(self, **changes: Any) -> TrainConfig:
        return TrainConfig(**{**self.config["train"], **changes})

    def fit(self, model: nn.Module, method: Method, stage: str = "train", **train_changes: Any) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} does not train")

    def member_model(self, overrides: dict[str, Any]) -> nn.Module:
        """The network of the run ``self.config`` merged with ``overrides`` (e.g. another method and
        seed), as the subclass provides it; the run is listed in ``members``."""
        sub = member_config(self.config, overrides)
        sub_id = run_id_of(sub)
        model, reused = self._member_network(sub, sub_id)
        self.members.append({"run_id": sub_id, "reused": reused, "seed": sub["run"]["seed"], "method": sub["run"]["method"]})
        return model

    def _member_network(self, sub: dict[str, Any], sub_id: str) -> tuple[nn.Module, bool]:
        """The network of member run ``sub_id`` (resolved config ``sub``) and whether existing weights were reused."""
        raise NotImplementedError(f"{type(self).__name__} provides no member networks")


class RunContext(StageContextBase):
    """What a method's stages may use (:class:`benchmark.methods.base.StageContext`): training
    stages with checkpoints, and other runs' models.

    ``fit(model, method, stage)`` trains in place (resuming a stage from its checkpoint);
    ``member_model(overrides)`` returns the trained model of another run of the same data and
    budget (training it, or reusing its saved weights when that run already exists).
    """

    def __init__(self, resolved: dict[str, Any], run_id: str, data: Dataset, train_data: Any, env: Environment) -> None:
        super().__init__(resolved, run_id, train_data.device)
        size, seed = int(resolved["data"]["train_subset"]), int(resolved["data"]["subset_seed"])
        if size and "train" not in (data.subsets or {}):  # a caller that loaded the full data (a sweep's member job)
            data = with_train_subset(data, size, seed)
            train_data = data.train.on_device(data.mean, data.std, train_data.device)
        self.data = data
        self.train_data = train_data
        self.env = env
        self.checkpoints = Path(env.checkpoint_dir) / run_id
        self.precision: dict[str, PrecisionChoice] = {}  # per stage, where train.precision is "auto"

    def fit(self, model: nn.Module, method: Method, stage: str = "train", **train_changes: Any) -> list[dict[str, Any]]:
        cfg = self.train_config(**train_changes)
        if cfg.precision == "auto":
            choice = self._choose_precision(model, method, cfg, stage)
            cfg = dataclasses.replace(cfg, precision=choice.used)
            self.precision[stage] = choice
        writer = tensorboard_writer(self.tensorboard_folder(stage)) if cfg.log == "tensorboard" and self.env.is_main else None
        try:
            history = fit(model, method, self.train_data, cfg, seed_parts=(self.seed, stage), checkpoint=self.checkpoints / f"{stage}.pt",
                          resume=not self.env.restart, stop=self.env.stop, progress=self.env.progress, log=self.env.log,
                          desc=f"{self.run_id} {stage}", dist=self.env.dist, curves=writer.add_scalar if writer is not None else None)
        finally:
            if writer is not None:
                writer.close()
        # the epochs' own times (an interrupted epoch's parts included): a resumed run counts the training it
        # resumed, and a run whose training had finished before this process counts it too
        self.train_seconds += sum(float(h.get("seconds", 0.0)) for h in history)
        self.history[stage] = history
        return history

    def _choose_precision(self, model: nn.Module, method: Method, cfg: TrainConfig, stage: str) -> PrecisionChoice:
        """``train.precision = "auto"`` for this stage: the choice it started with when it resumes (kept beside its
        checkpoint), else measured (:func:`choose_precision`, cached per machine and shape); data-parallel ranks
        train in bf16 only when every rank measured it faster."""
        keep = stage_precision(self.checkpoints / f"{stage}.pt")
        kept = load_choice(keep) if not self.env.restart and (self.checkpoints / f"{stage}.pt").exists() else None
        if kept is not None:
            self.env.log(f"{self.run_id} {stage}: {kept.describe()}, as when the stage started")
            return kept
        choice = choose_precision(model, method, cfg, image_size=int(self.train_data.images.shape[1]), in_channels=method.task.in_channels,
                                  device=self.device, cache_dir=resolve_cache_dir(self.env.cache_dir))
        if self.env.dist is not None and self.env.dist.any(choice.used != "bf16"):
            choice = dataclasses.replace(choice, used="fp32", reason=choice.reason + "; fp32: not every data-parallel rank measured bf16 faster")
        if self.env.is_main:
            keep.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(keep, choice.as_record())
        self.env.log(f"{self.run_id} {stage}: {choice.describe()}")
        return choice

    def used_precision(self) -> str | None:
        """The precision the last trained stage used, where ``train.precision`` was "auto" (None: no such stage here)."""
        return list(self.precision.values())[-1].used if self.precision else None

    def tensorboard_folder(self, stage: str) -> Path:
        """Where a stage's TensorBoard event files go: ``<tensorboard dir>/<run id>/<stage>`` when the
        environment names one (``--tensorboard-dir``), else ``<checkpoint dir>/<run id>/tensorboard/<stage>``."""
        root = getattr(self.env, "tensorboard_dir", None)
        return Path(root) / self.run_id / stage if root else self.checkpoints / "tensorboard" / stage

    def _member_network(self, sub: dict[str, Any], sub_id: str) -> tuple[nn.Module, bool]:
        """The trained network of run ``sub_id``. Reuses the saved final weights of that run if they
        exist (:func:`find_final_weights`: the checkpoint folder's, else a store's of kept weights);
        otherwise trains it here (checkpointed under its own run id) and saves them in the checkpoint
        folder for later reuse."""
        method = build_method(sub, self.data)
        model = method.build().to(self.device)
        final = Path(self.env.checkpoint_dir) / sub_id / "final.pt"  # where a member trained here is saved (never into a store)
        found = find_final_weights(self.env, sub_id)
        reused = found is not None
        if self.env.dist is not None:  # every rank must take the same branch (training is collective)
            reused = self.env.dist.any(reused)
            return self._trained_or_reused(method, model, sub, sub_id, found or final, reused), reused
        if reused:
            return self._trained_or_reused(method, model, sub, sub_id, found, True), True
        # One process trains a member run at a time: another run's process training the same member
        # (two ensembles sharing members) is waited for, and its weights reused.
        with run_lock(final.parent, sub_id, wait=self.env.log):
            found = find_final_weights(self.env, sub_id)
            return self._trained_or_reused(method, model, sub, sub_id, found or final, found is not None), found is not None

    def _trained_or_reused(self, method: Method, model: nn.Module, sub: dict[str, Any], sub_id: str, final: Path, reused: bool) -> nn.Module:
        """``reused``: the member's network loaded from ``final`` (its checkpoint folder's or a store's weights); else
        trained here and saved to ``final`` (its checkpoint folder's)."""
        if reused:
            model.load_state_dict(torch.load(final, map_location=self.device, weights_only=True))
            self.env.log(f"reusing trained member {sub_id} from {final}")
            return model
        sub_ctx = RunContext(sub, sub_id, self.data, self.train_data, self.env)
        seed_initialisation(sub)
        model = method.run(sub_ctx)
        if self.env.is_main:
            save_final(model, final)
        self.train_seconds += sub_ctx.train_seconds
        self.history[sub_id] = sub_ctx.history.get("train", [])
        return model


TENSORBOARD_MISSING = "train.log = 'tensorboard' needs the tensorboard package, which is not installed: pip install 'plures[tensorboard]'"


def check_tensorboard() -> None:
    """ConfigError (before any data is read) when the tensorboard package cannot be imported."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise C.ConfigError(TENSORBOARD_MISSING) from None


def tensorboard_writer(folder: Path) -> Any:
    """A TensorBoard ``SummaryWriter`` writing event files into ``folder``."""
    check_tensorboard()
    from torch.utils.tensorboard import SummaryWriter

    folder.mkdir(parents=True, exist_ok=True)
    return SummaryWriter(log_dir=str(folder))


def member_config(resolved: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The resolved config of the run that ``RunContext.member_model(overrides)`` obtains (its run id
    is ``run_id_of`` of it); used by sweeps to schedule such runs first."""
    merged = C.merge(resolved, overrides)
    if "method" in overrides:  # another method's options are exactly the ones given, never this run's
        merged["method"] = dict(overrides["method"])
    return C.resolve(merged)


def seed_initialisation(resolved: dict[str, Any]) -> None:
    """Seed the global RNG (weight initialisation) from the run's seed, so that a run trained as
    another run's member equals the same run trained on its own."""
    torch.manual_seed(hash_seed(int(resolved["run"]["seed"]), "init"))


def save_final(model: nn.Module, path: Path) -> None:
    save_checkpoint(path, model.state_dict())


def build_method(resolved: dict[str, Any], data: Dataset) -> Method:
    """The method of ``resolved`` for ``data``'s classes and image size."""
    return build_method_for(resolved, data.num_classes, data.image_size)


def _identity(resolved: dict[str, Any], method: Method, variant: str, members: int) -> dict[str, Any]:
    r = resolved["run"]
    return {"suite": r["suite"], "name": r["name"] or r["method"], "method": r["method"], "variant": variant, "dataset": r["dataset"],
            "backbone": r["backbone"], "members": members, "seed": r["seed"]}


def _data_facts(data: Dataset, resolved: dict[str, Any]) -> dict[str, Any]:
    """The data a run used; with a subset, ``train_size``/``test_size`` are the images used and
    ``subsets`` says of how many, with which seed (the clean test subset: ``eval.test_subset``)."""
    facts = {"dataset": data.name, "source": data.source, "source_path": data.source_path, "train_size": len(data.train),
             "test_size": len(data.test), "val_size": len(data.val) if data.val is not None else 0, "num_classes": data.num_classes}
    subsets = dict(data.subsets or {})
    ev = resolved["eval"]
    if ev["test_subset"]:
        subsets["test"] = subset_facts(ev["test_subset"], len(data.test), ev["test_subset_seed"])
        facts["test_size"] = int(ev["test_subset"])
    if subsets:
        facts["subsets"] = subsets
    return facts


def _subset_budget(resolved: dict[str, Any], data: Dataset) -> dict[str, Any]:
    """The budget's subset facts: how many training and clean test images were used (0: all)."""
    return {"train_subset": int(resolved["data"]["train_subset"]), "train_images": len(data.train),
            "test_subset": int(resolved["eval"]["test_subset"]), "test_images": int(resolved["eval"]["test_subset"]) or len(data.test)}


def record_run_id(run_id: str, resolved: dict[str, Any]) -> str:
    """The id of a training run's record: with a clean test subset, ``-test<N>`` (and the seed when not 0)
    is appended, so a record of a subset evaluation never stands in for one of the whole test set."""
    n, seed = int(resolved["eval"]["test_subset"]), int(resolved["eval"]["test_subset_seed"])
    return run_id + (f"-test{n}" + (f"s{seed}" if seed else "") if n else "")


class RunLockedError(RuntimeError):
    """Another process holds the run's lock; the message names its pid and host."""


def _lock_holder(path: Path) -> dict[str, Any]:
    """The pid, host and start time the lock's holder wrote (it writes them right after locking)."""
    for _ in range(20):
        try:
            holder = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        if holder:
            return holder
        time.sleep(0.05)
    return {}


@contextlib.contextmanager
def run_lock(folder: Path, run_id: str, wait: Callable[[str], None] | None = None) -> Iterator[Path]:
    """Hold an exclusive ``flock`` on ``folder/run.lock`` (created with the folder) while the block
    runs; if another process holds it, raise :class:`RunLockedError` naming its pid and host, or,
    with ``wait`` (a log function), say whom it waits for and wait until the lock is free.

    The lock is the open file's, so it goes away with the process, also on SIGKILL; the file stays
    (removing it could let a third process lock a new file while the second waits on the old one).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(path)
            who = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            if wait is None:
                raise RunLockedError(f"run {run_id} is already running ({who}; lock {path}); wait for it to finish, or stop that "
                                     f"process; running the command again then resumes from its checkpoint") from None
            wait(f"run {run_id} is running in {who}; waiting for it to finish (lock {path})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "run_id": run_id,
                                 "started": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode())
        os.fsync(fd)
        yield path
    finally:
        os.close(fd)  # releases the lock


class WeightsError(ValueError):
    """A finished run's final weights are missing, do not fit the network its config builds, or its
    variant is not one the method evaluates; the message names the run and the file."""


def trained_precision(requested: str, record: dict[str, Any] | None = None) -> str:
    """The precision a run's network computes in: ``requested`` unless "auto", which resolves to what the run
    used (its record's budget), else fp32 (a run that trained no stage of its own, e.g. an ensemble of members)."""
    if requested != "auto":
        return requested
    used = ((record or {}).get("budget") or {}).get("precision")
    return used if used in C.PRECISIONS else "fp32"


class TrainedRun:
    """A finished run rebuilt from its record: ``method``, the trained ``model`` (as the method built it),
    ``network`` (the evaluated variant's network, in eval mode), ``forward_passes``, ``data`` (its dataset,
    without its training subset), ``record`` and the ``weights`` file it was loaded from."""

    def __init__(self, record: dict[str, Any], method: Method, model: nn.Module, network: nn.Module, forward_passes: int,
                 data: Dataset, weights: Path) -> None:
        self.record, self.method, self.model, self.network = record, method, model, network
        self.forward_passes, self.data, self.weights = forward_passes, data, weights

    @property
    def config(self) -> dict[str, Any]:
        return self.record["config"]

    def __repr__(self) -> str:
        return f"TrainedRun({self.record['run_id']!r}, method={self.record['identity']['method']!r}, weights={str(self.weights)!r})"


def find_final_weights(where: Environment | Sequence[Path | str], run_id: str) -> Path | None:
    """The final weights of run ``run_id`` on this machine: ``<folder>/<run id>/final.pt`` of the first folder that
    has them, the checkpoint folder first, then each store of kept weights in order (``Environment.weights_dirs``);
    None: nowhere. ``where``: an Environment, or the folders themselves in that order."""
    folders = [where.checkpoint_dir, *where.weights_dirs] if isinstance(where, Environment) else list(where)
    for folder in folders:
        path = Path(folder) / run_id / "final.pt"
        if path.is_file():
            return path
    return None


def final_weights(rec: dict[str, Any], checkpoint_dir: Path | str, weights_dirs: Sequence[Path | str] = ()) -> Path:
    """Where the final weights of the record's training run are: ``<checkpoint dir>/<training run id>/final.pt``, or
    where they are kept when only a store of ``weights_dirs`` has them (:func:`find_final_weights`)."""
    run_id = str(rec.get("training_run_id") or rec["run_id"])
    return find_final_weights([checkpoint_dir, *weights_dirs], run_id) or Path(checkpoint_dir) / run_id / "final.pt"


def load_trained(rec: dict[str, Any], checkpoint_dir: Path | str, data: Dataset, device: torch.device | str = "cpu",
                 model: tuple[Method, nn.Module] | None = None, weights_dirs: Sequence[Path | str] = ()) -> TrainedRun:
    """The finished run of record ``rec`` rebuilt from its resolved config and its final weights on ``data``
    (the record's dataset; the weights from ``checkpoint_dir``, else a store of ``weights_dirs``), channels-last when
    the run evaluated so; ``model``: an already loaded (method, model) of the same training run (its other
    variants). :class:`WeightsError` when it cannot be."""
    resolved = rec["config"]
    path = final_weights(rec, checkpoint_dir, weights_dirs)
    if model is None:
        if not path.is_file():
            raise WeightsError(f"run {rec['run_id']}: expected its final weights at {path} (pass the checkpoint folder the run was "
                               f"trained with, or train it in this checkout)")
        method = build_method(resolved, data)
        net = method.build()
        try:
            net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, ValueError, OSError) as exc:
            raise WeightsError(f"run {rec['run_id']}: the final weights {path} do not load into the network its config builds "
                               f"(method {resolved['run']['method']}): {exc}") from None
        net = net.to(device)
        if resolved["train"]["channels_last"]:  # as the run's evaluation did
            to_channels_last(net)
        model = (method, net)
    method, net = model
    variants = {v.label: v for v in method.eval_variants(net)}
    want = rec["identity"]["variant"]
    if want not in variants:
        raise WeightsError(f"run {rec['run_id']}: variant {want!r} is not among the variants method {resolved['run']['method']} "
                           f"evaluates now: {', '.join(repr(v) for v in variants)}")
    v = variants[want]
    return TrainedRun(rec, method, net, v.network.eval(), int(v.forward_passes), data, path)


def _eval_identity(ev: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in ev.items() if k not in NON_SHAPING_EVAL}


def record_matches(rec: dict[str, Any], resolved: dict[str, Any], run_id: str) -> bool:
    """Whether record ``rec`` is one of run ``resolved``'s (training run ``run_id``): the same training run and the
    same evaluation settings (those that shape the metrics; a setting the record predates is not compared)."""
    if rec.get("training_run_id") != run_id:
        return False
    want = _eval_identity(resolved["eval"])
    got = {"test_subset": 0, "test_subset_seed": 0, **_eval_identity((rec.get("config") or {}).get("eval") or {})}
    return all(got[k] == want[k] for k in want.keys() & got.keys())


def completed_records(results_dir: Path | str, resolved: dict[str, Any], run_id: str) -> list[Path]:
    """The newest completed records (one per evaluated variant) of run ``resolved`` (training run ``run_id``) in its
    suite's folder (:func:`record_matches`), in the order the run wrote them. ``[]``: none."""
    mine = [r for r in load_records(Path(results_dir) / resolved["run"]["suite"]).records if record_matches(r, resolved, run_id)]
    return [Path(r["_path"]) for r in sorted(mine, key=lambda r: r["created"])]


class RunState:
    """What a run does when it starts, decided from disk (:func:`run_state`): ``skip`` (its completed
    ``records`` exist), ``resume`` (from ``point``, its newest stage checkpoint) or ``start``."""

    def __init__(self, action: str, run_id: str, records: list[Path] | None = None, point: ResumePoint | None = None,
                 restart: bool = False) -> None:
        self.action, self.run_id, self.records, self.point, self.restart = action, run_id, list(records or []), point, restart

    def describe(self) -> str:
        """One line for a person: what the run does and why."""
        if self.action == "skip":
            more = f" (and {len(self.records) - 1} more)" if len(self.records) > 1 else ""
            return f"done: completed record {self.records[0]}{more}; skipped (--restart trains it again)"
        if self.action == "resume":
            return f"{self.point.describe()} ({self.point.path})"
        return "start anew (--restart)" if self.restart else "start: no record and no checkpoint of this run"

    def __repr__(self) -> str:
        return f"RunState({self.action!r}, {self.run_id!r})"


def check_runs(configs: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Resolve and check every run of a batch (``(label, config)`` pairs) before any of them trains:
    the resolved configs, or one ConfigError listing every problem of every run (label: message)."""
    resolved, problems = [], []
    for label, cfg in configs:
        try:
            res = C.resolve(cfg)
            check_run_inputs(res)
            resolved.append(res)
        except Exception as exc:  # noqa: BLE001 - every kind of bad value is reported together (ConfigError, unknown names, plug-ins)
            problems.append(f"  {label}: {exc}")
    if problems:
        raise C.ConfigError(f"{len(problems)} of {len(configs)} run(s) have problems; nothing was run:\n" + "\n".join(problems))
    return resolved


def run_state(resolved: dict[str, Any], env: Environment) -> RunState:
    """What run ``resolved`` does when it starts under ``env``: skip, resume or start (:class:`RunState`)."""
    run_id = run_id_of(resolved)
    if env.restart:
        return RunState("start", run_id, restart=True)
    done = completed_records(env.results_dir, resolved, run_id)
    if done:
        return RunState("skip", run_id, records=done)
    point = resume_point(env.checkpoint_dir, run_id)
    return RunState("resume", run_id, point=point) if point is not None else RunState("start", run_id)


def check_run_inputs(resolved: dict[str, Any]) -> None:
    """ConfigError (before any data is read) for a bad method, option, backbone, dataset, corrupted
    source, OOD set or logging choice of run ``resolved``."""
    options = get_method(resolved["run"]["method"]).Options
    C.check_options("method", resolved["run"]["method"], resolved["method"], options)
    try:  # the options' own rules (``__post_init__``: e.g. a rate in [0, 1)), before any data is read
        options(**resolved["method"])
    except (TypeError, ValueError) as exc:
        raise C.ConfigError(f"method {resolved['run']['method']!r}: {exc}") from None
    check_backbone_options(resolved["run"]["backbone"], resolved["backbone"])
    if resolved["train"].get("compile"):
        try:
            compile_override()
        except ValueError as exc:
            raise C.ConfigError(str(exc)) from None
    spec = dataset_spec(resolved["run"]["dataset"])
    if resolved["eval"]["corruptions"] != "none":  # a corrupted-set kind the dataset lacks fails before training
        corrupted_source(spec.corrupted_source(resolved["eval"]["corruptions"]))
    check_ood_names(list(resolved["eval"]["ood"]))
    if resolved["train"]["log"] == "tensorboard":
        check_tensorboard()


def run_experiment(config: dict[str, Any], env: Environment | None = None) -> list[Path]:
    """Train and evaluate one run; returns the paths of its records (one per eval variant).

    The run decides from disk (:func:`run_state`): done (its completed records are returned, nothing
    is trained or written), resume from its newest checkpoint, or start; ``env.restart`` trains anew.
    """
    env = env or Environment()
    tune_host_allocator()  # idempotent; also for runs started without the CLI (sweep jobs, notebooks)
    # intra-op = physical cores (data parallel: each rank its share), inter-op = 1 (idempotent; benchmark.core.cpu)
    configure_threads(processes=env.dist.world_size if env.dist is not None else 1)
    resolved = C.resolve(config)  # every value's type and range: a bad one fails here, nothing written
    run_id = run_id_of(resolved)
    device = select_device(env.device)
    # Bad method / backbone / dataset / OOD names and method options fail here, before any data is read.
    check_run_inputs(resolved)
    state = run_state(resolved, env)
    if env.is_main:
        env.log(f"run {run_id} on {device}: {state.describe()}")
    skip = state.action == "skip"
    if env.dist is not None:  # every rank takes the same branch (training is collective)
        skip = env.dist.any(skip)
    if skip:
        return state.records
    # The data, its subsets and the batch size are checked before the lock is taken: a failed lookup leaves nothing behind.
    data = _load_data(resolved, env)
    # Data parallel: the main rank alone locks (the other ranks are the same run).
    lock = run_lock(Path(env.checkpoint_dir) / run_id, run_id) if env.is_main else contextlib.nullcontext()
    with lock:
        if env.dist is None and not env.restart:  # another process may have finished it while this one read the data
            done = completed_records(env.results_dir, resolved, run_id)
            if done:
                env.log(f"run {run_id} finished in another process meanwhile: completed record {done[0]}; skipped")
                return done
        return _train_and_record(resolved, run_id, data, device, env)


def _load_data(resolved: dict[str, Any], env: Environment) -> Dataset:
    """The run's dataset with its training subset; ConfigError for a hold-out, subset or batch larger than the data."""
    data = load_dataset(resolved["run"]["dataset"], env.data_dir, env.cache_dir, download=resolved["data"]["download"], progress=env.progress)
    check_data_sizes(resolved, len(data.train), len(data.test))
    if resolved["data"]["val_size"]:
        data = hold_out_validation(data, int(resolved["data"]["val_size"]), int(resolved["run"]["seed"]))
    return with_train_subset(data, int(resolved["data"]["train_subset"]), int(resolved["data"]["subset_seed"]))


def _train_and_record(resolved: dict[str, Any], run_id: str, data: Dataset, device: torch.device, env: Environment) -> list[Path]:
    """Run the method's stages, evaluate and write the records (a failure: a failed record)."""
    method = build_method(resolved, data)
    base = {"run_id": record_run_id(run_id, resolved), "config": resolved, "data": _data_facts(data, resolved)}
    started = utc_now()
    ctx: RunContext | None = None
    try:
        train_data = data.train.on_device(data.mean, data.std, device)
        ctx = RunContext(resolved, run_id, data, train_data, env)
        with stop_on_signals(env.stop):
            seed_initialisation(resolved)
            model = method.run(ctx)
        if not env.is_main:  # data parallel: rank 0 alone saves, evaluates and records
            return []
        save_final(model, ctx.checkpoints / "final.pt")
        return _evaluate_and_record(model, method, ctx, data, resolved, base, started, env)
    except StopRequested as exc:
        env.log(f"{exc}; running it again resumes from the checkpoints in {Path(env.checkpoint_dir) / run_id}")
        raise
    except Exception as exc:
        if not env.is_main:
            raise
        record = {**base, "status": "failed", "started": started, "identity": _identity(resolved, method, method.variant(), method.test_members()),
                  "provenance": provenance(str(device), _method_classes(method, ctx)), "cost": {}, "metrics": {},
                  "error": {"type": type(exc).__name__, "message": str(exc), "traceback": traceback.format_exc()}}
        path = write_record(env.results_dir, record)
        env.log(f"run {run_id} failed: {type(exc).__name__}: {exc}; record {path}")
        raise


def _method_classes(method: Method, ctx: StageContextBase | None) -> list[type]:
    """The classes of the method that ran and of its member runs' methods (for the record's provenance)."""
    classes = [type(method)]
    for member in ctx.members if ctx is not None else []:
        try:
            cls = get_method(member["method"])
        except Exception:  # noqa: BLE001  (provenance never fails a run)
            continue
        if cls not in classes:
            classes.append(cls)
    return classes


def _evaluate_and_record(model: nn.Module, method: Method, ctx: RunContext, data: Dataset, resolved: dict[str, Any],
                         base: dict[str, Any], started: str, env: Environment) -> list[Path]:
    device = ctx.device
    ev = resolved["eval"]
    train_cfg = ctx.train_config()
    trained = ctx.used_precision() or trained_precision(train_cfg.precision)  # what the network was trained in
    precision = ev["precision"] or trained
    # the clean test set, or its seeded stratified subset (corrupted and OOD evaluation keep their own settings)
    test = take_subset(data.test, int(ev["test_subset"]), int(ev["test_subset_seed"])).on_device(data.mean, data.std, device)
    val = data.val.on_device(data.mean, data.std, device) if data.val is not None else None
    epochs_trained = sum(len(h) for h in ctx.history.values())
    prov = provenance(str(device), _method_classes(method, ctx))  # one run, one provenance (git is asked once, not per variant)
    paths = []
    if train_cfg.channels_last:  # networks assembled after training (e.g. the deep ensemble's) are not converted yet
        to_channels_last(model)
    for variant, net, passes, members in method.eval_variants(model):
        net.eval()
        kwargs = dict(batch_size=ev["batch_size"], precision=precision, channels_last=train_cfg.channels_last, progress=env.progress)
        keeping = KeepPolicy(ev, members, data.num_classes)
        arrays: dict[str, Any] = {}
        # OOD detection's in-distribution side is the whole test set: the clean pass's predictions when it was over all of it
        reuse_clean = bool(ev["ood"]) and not int(ev["test_subset"])
        t0 = time.perf_counter()
        # the combined prediction is always kept: OOD detection may reuse it, and the prediction metrics need it
        clean, clean_kept = evaluate_with_predictions(net, test, desc=f"eval {variant or method.name}", **kwargs,
                                                keep=keeping.keep("clean", len(test)) or "combined")
        metrics: dict[str, Any] = {"clean": clean}
        eval_seconds = time.perf_counter() - t0
        keeping.store(arrays, "clean", clean_kept)
        val_kept: dict[str, Any] = {}
        if val is not None:
            metrics["val"], val_kept = evaluate_with_predictions(net, val, desc="eval val", **kwargs, keep=keeping.keep("val", len(val)) or "combined")
            keeping.store(arrays, "val", val_kept)
        if ev["corruptions"] != "none":
            images = len(ev["corruption_severities"]) * len(corruption_set(ev["corruption_set"])) * (int(ev["corruption_subset"]) or len(data.test))
            metrics["corrupted"] = evaluate_corrupted(net, data, ev, env, **kwargs, keep=keeping.keep("corrupted", images, corrupted=True),
                                                      predictions=arrays if keeping.on else None)
        if ev["ood"]:
            metrics["ood"] = evaluate_ood(net, data, list(ev["ood"]), env, **kwargs, keep=keeping.keep("ood", len(data.test)),
                                          predictions=arrays if keeping.on else None, in_predictions=clean_kept if reuse_clean else None)
        # metrics of the whole prediction (temperature from the validation split, OOD by every score): from the
        # predictions kept for the sidecar, else (eval.predictions = false) from the clean and validation ones
        apply_prediction_metrics(metrics, arrays if keeping.on else {**prefixed("clean", clean_kept), **prefixed("val", val_kept)}, members)
        example = next(test.eval_batches(1))[0]
        cost = measure_cost(net, example, forward_passes=passes, large_batch=ev["latency_batch"], precision=precision,
                            channels_last=train_cfg.channels_last, repeats=ev["latency_repeats"])
        cost.update({"train_seconds": ctx.train_seconds, "epochs_trained": epochs_trained,
                     "seconds_per_epoch": ctx.train_seconds / epochs_trained if epochs_trained else None,
                     "rows_per_example": method.rows_per_example(), "eval_seconds_clean": eval_seconds,
                     "peak_memory_mb": peak_memory_mb(device)})
        record = {**base, "run_id": base["run_id"] + (f"-{variant}" if variant != method.variant() else ""), "status": "completed",
                  "started": started, "identity": _identity(resolved, method, variant, members),
                  "training_run_id": ctx.run_id, "provenance": prov, "cost": cost, "metrics": metrics,
                  "budget": {"epochs": train_cfg.epochs, "batch_size": train_cfg.batch_size,
                             "precision": trained,
                             **_subset_budget(resolved, data)},
                  "training": {"history": ctx.history, "members": ctx.members,
                               **({"precision": {k: v.as_record() for k, v in ctx.precision.items()}} if ctx.precision else {}),
                               "world_size": env.dist.world_size if env.dist is not None else 1},  # data-parallel ranks that trained it
                  "method_extra": method.extra_record()}
        path = write_record(env.results_dir, record, arrays if keeping.on else None, predictions_dtype=ev["predictions_dtype"],
                            predictions_notes=keeping.notes())
        env.log(f"{record['run_id']}: acc {clean['accuracy']:.4f}  nll {clean['nll']:.4f}  ece {clean['ece']:.4f}  -> {path}")
        paths.append(path)
    return paths

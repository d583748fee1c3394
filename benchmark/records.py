"""Run records: one immutable JSON file per run, the source of truth of every published number.

A record holds identity (method, variant, dataset, backbone, members, seed, the resolved config),
provenance (git commit and dirty flag, versions, device, the method modules' content hashes), data (which data: official, regenerated
or a JPEG copy), cost, metrics (clean, per corruption and severity, per member, diversity) and a
schema version. Floats are stored at full precision; rounding happens only in rendered tables.

Records are written atomically and never overwritten: a rerun writes a new file
``<root>/<suite>/<run_id>__<UTC timestamp>.json``; readers take the newest per run id.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .core.io import atomic_write_json
from .evaluation.predictions import write_predictions

SCHEMA_VERSION = 1
REQUIRED = ("schema_version", "run_id", "status", "identity", "config", "provenance", "cost", "metrics")
IDENTITY_KEYS = ("suite", "method", "variant", "dataset", "backbone", "members", "seed")
IDENTITY_STRINGS = ("suite", "dataset", "backbone", "method", "variant")
IDENTITY_INTEGERS = ("members", "seed")  # int, not bool
STATUSES = ("completed", "failed")


class RecordError(ValueError):
    """A record that cannot be used; the message names the file and what is wrong."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("benchmark", "baselines", "mimo")  # an untracked file under these makes the checkout dirty


def git_state(cwd: Path | None = None) -> dict[str, Any]:
    """The commit and dirty flag of the checkout holding this package (``None`` outside git).

    Dirty: a tracked file differs from the commit, or an untracked (not ignored) file lies under
    one of :data:`PACKAGES` (a new method module, say); ``git_untracked`` lists those files.
    """
    cwd = cwd or REPO_ROOT

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    untracked = git("ls-files", "--others", "--exclude-standard", "--", *PACKAGES)
    new_files = sorted(untracked.splitlines()) if untracked else []
    dirty = None if status is None else bool(status) or bool(new_files)
    return {"git_commit": commit, "git_dirty": dirty, "git_untracked": new_files}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def module_provenance(classes: Iterable[type]) -> list[dict[str, Any]]:
    """``{"module", "path", "sha256"}`` of the source file of each class's module and of its base
    classes' modules (once each, in order): the code of the methods that ran. ``path`` is relative
    to the checkout for files inside it (built-ins), absolute otherwise (plug-ins)."""
    out: dict[str, dict[str, Any]] = {}
    for cls in classes:
        for klass in cls.__mro__:
            name = klass.__module__
            if name in out or name in ("builtins", "abc", "typing"):
                continue
            file = getattr(sys.modules.get(name), "__file__", None)
            if not file:
                continue
            path = Path(file).resolve()
            try:
                shown = str(path.relative_to(REPO_ROOT))
            except ValueError:
                shown = str(path)
            try:
                digest = _sha256(path)
            except OSError:
                digest = None
            out[name] = {"module": name, "path": shown, "sha256": digest}
    return list(out.values())


def provenance(device: str, method_classes: Iterable[type] = ()) -> dict[str, Any]:
    """Git state, versions, device and host, and the method modules that ran (:func:`module_provenance`)."""
    import numpy
    import torch

    try:
        import torchvision

        tv = torchvision.__version__
    except ImportError:  # pragma: no cover
        tv = None
    dev = {"device": device}
    if device.startswith("cuda") and torch.cuda.is_available():
        dev["device_name"] = torch.cuda.get_device_name(torch.device(device))
    else:
        dev["device_name"] = platform.processor() or platform.machine()
        dev["cpu_threads"] = torch.get_num_threads()
    from . import __version__
    from .core.allocator import host_allocator_state
    from .core.cpu import cpu_facts, thread_state

    dev["host_allocator"] = host_allocator_state()
    dev["threads"] = thread_state()  # intra-/inter-op threads and where the count came from (benchmark.core.cpu.configure_threads)
    dev["cpu"] = cpu_facts()  # model and capability (avx2, avx512, avx512_bf16, amx): the host of the data path, and the device on a CPU run
    return {**git_state(), **dev, "torch": torch.__version__, "torchvision": tv, "numpy": numpy.__version__,
            "python": platform.python_version(), "hostname": socket.gethostname(), "plures": __version__, "argv": list(sys.argv),
            "method_modules": module_provenance(method_classes)}


def record_path(root: Path, suite: str, run_id: str, created: str) -> Path:
    stamp = created.replace("-", "").replace(":", "").replace(".", "")
    return Path(root) / suite / f"{run_id}__{stamp}.json"


def write_record(root: Path, record: dict[str, Any], predictions: dict[str, np.ndarray] | None = None, *,
                 predictions_dtype: str = "float32", predictions_notes: dict[str, Any] | None = None) -> Path:
    """Validate and write ``record`` as a new file (never overwrites); returns its path.

    With ``predictions`` (arrays named as in :mod:`benchmark.evaluation.predictions`), they are
    written first, beside the record (``<run_id>__<sha256[:16]>.predictions.npz``), and the record's
    ``predictions`` entry names that file and its sha256.
    """
    record.setdefault("schema_version", SCHEMA_VERSION)
    record.setdefault("created", utc_now())
    validate(record, where="<new record>")
    path = record_path(root, record["identity"]["suite"], record["run_id"], record["created"])
    if predictions:
        record["predictions"] = write_predictions(path.parent, record["run_id"], predictions, dtype=predictions_dtype, notes=predictions_notes)
    return atomic_write_json(path, record, overwrite=False)


def rewrite_record(path: Path | str, record: dict[str, Any]) -> Path:
    """Replace the record file ``path`` with ``record`` (validated; atomically: a reader sees the old
    file or the new one). For ``rescore --write`` only: records are otherwise never overwritten."""
    record = {k: v for k, v in record.items() if k != "_path"}
    validate(record, where=str(path))
    return atomic_write_json(Path(path), record, overwrite=True)


def validate(record: Any, where: str) -> dict[str, Any]:
    """Check the structure of a record and its identity's types (migrating older schema versions); raise RecordError."""
    if not isinstance(record, dict):
        raise RecordError(f"{where}: a record must be a JSON object, found {type(record).__name__}")
    version = record.get("schema_version")
    if not isinstance(version, int):
        raise RecordError(f"{where}: missing or non-integer schema_version ({version!r})")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema_version {version} is newer than this plures understands ({SCHEMA_VERSION}); upgrade plures")
    if version < 1:
        raise RecordError(f"{where}: schema_version {version} is not a known version (1..{SCHEMA_VERSION})")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise RecordError(f"{where}: missing field(s) {missing}")
    ident = record["identity"]
    if not isinstance(ident, dict):
        raise RecordError(f"{where}: identity must be an object, found {type(ident).__name__}")
    missing = [k for k in IDENTITY_KEYS if k not in ident]
    if missing:
        raise RecordError(f"{where}: identity lacks {missing}")
    for k in IDENTITY_STRINGS:
        if not isinstance(ident[k], str):
            raise RecordError(f"{where}: identity.{k} must be a string, found {ident[k]!r}")
    for k in IDENTITY_INTEGERS:
        if isinstance(ident[k], bool) or not isinstance(ident[k], int):
            raise RecordError(f"{where}: identity.{k} must be an integer, found {ident[k]!r}")
    if record["status"] not in STATUSES:
        raise RecordError(f"{where}: status {record['status']!r} is not one of {list(STATUSES)}")
    if record["status"] == "completed" and "clean" not in record["metrics"]:
        raise RecordError(f"{where}: a completed record needs metrics.clean")
    return record


@dataclass(frozen=True)
class LoadedRecords:
    records: list[dict[str, Any]]  # each with "_path"
    problems: list[tuple[str, str]]  # (file, reason)


def load_records(root: Path | str, *, newest_only: bool = True, include_failed: bool = False) -> LoadedRecords:
    """All valid records under ``root`` (recursively); malformed files are reported, never used.

    ``newest_only`` keeps the newest record per (suite, run_id).
    """
    root = Path(root)
    records, problems = [], []
    for path in sorted(root.rglob("*.json")) if root.exists() else []:
        try:
            rec = validate(json.loads(path.read_text()), where=str(path))
        except (OSError, json.JSONDecodeError) as exc:
            problems.append((str(path), f"unreadable JSON: {exc}"))
            continue
        except RecordError as exc:
            problems.append((str(path), str(exc)))
            continue
        if rec["status"] != "completed" and not include_failed:
            continue
        rec["_path"] = str(path)
        records.append(rec)
    if newest_only:
        newest: dict[tuple[str, str], dict[str, Any]] = {}
        for rec in records:
            key = (rec["identity"]["suite"], rec["run_id"])
            if key not in newest or rec["created"] > newest[key]["created"]:
                newest[key] = rec
        records = sorted(newest.values(), key=lambda r: r["_path"])
    return LoadedRecords(records, problems)

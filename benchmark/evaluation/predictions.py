"""A record's stored predictions: one compressed ``.npz`` sidecar beside each record (numpy only,
no torch: the leaderboard and the pure-numpy metrics read it).

The runner keeps the predictions that evaluation computes anyway (no second pass) and writes them
beside the record ``<run_id>__<stamp>.json`` as ``<run_id>__<sha256[:16]>.predictions.npz``
(``np.savez_compressed``, written atomically; named by content: :func:`sidecar_path`); the
record's ``predictions`` entry names the file and its sha256 (:func:`write_predictions`). ``python -m benchmark rescore`` recomputes every metric
of a record from it.

Arrays (``N`` examples, ``K`` classes, ``M`` members; log-probabilities are natural logs, float32
by default, float16 with ``eval.predictions_dtype = "float16"``; :func:`load_predictions` returns
them as float32; targets and indices int64):

``clean/targets`` [N], ``clean/log_probs`` [N, K], ``clean/members`` [M, N, K]
    the clean test set (or its ``eval.test_subset``): targets, the combined prediction (log of the
    mean member probability) and each member's log-probabilities.
``clean/member_entropy`` [N]
    the mean over members of each member's predictive entropy (nats), kept even where the members
    are not: the mutual information (epistemic part) is ``entropy(log_probs) - member_entropy``.
``val/targets``, ``val/log_probs``, ``val/members``, ``val/member_entropy``
    the same for the validation split, when the run has one.
``corrupted/indices`` [n]
    the test-set indices of the images of every corrupted cell (the ``eval.corruption_subset``
    sample; all of them without a subset), when the corrupted source uses that sample.
``corrupted/<corruption>/<severity>/targets`` [n], ``.../log_probs`` [n, K], ``.../members`` [M, n, K],
``.../member_entropy`` [n]
    each corrupted cell.
``ood/<name>/log_probs`` [n, K], ``ood/<name>/members`` [M, n, K], ``ood/<name>/member_entropy`` [n]
    each OOD set that was evaluated (an absent set has no arrays).
``ood_in/log_probs`` [N', K], ``ood_in/members``, ``ood_in/member_entropy``
    the in-distribution side of OOD detection when it is not ``clean/`` (a run with a clean test
    subset: OOD detection uses the whole test set); otherwise ``clean/`` is it.

Members are kept (:func:`keep_for`) when ``M <= MAX_MEMBERS`` and the split's member array stays
under ``SPLIT_MEMBER_BYTES`` (clean, val, each OOD set) or, for all corrupted cells together, under
``CORRUPTED_MEMBER_BYTES``; otherwise only the combined prediction is stored and the record's entry
says why (``members_dropped``). A one-member model stores no ``members``: its member's
log-probabilities are ``log_probs`` exactly (``notes.single_member``). Corrupted cells whose combined log-probabilities together exceed
``CORRUPTED_BYTES`` (the full ImageNet-C: 75 x 50,000 x 1,000 floats) store no predictions at all
(noted there too); their metrics are then not rescored.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..core.config import PREDICTIONS_DTYPES
from ..core.io import atomic_write

PREDICTIONS_VERSION = 1
SUFFIX = ".predictions.npz"
MAX_MEMBERS = 16  # members' log-probabilities are stored for M <= 16 ...
SPLIT_MEMBER_BYTES = 256 * 2**20  # ... when one split's member array is at most 256 MiB (clean, val, each OOD set) ...
CORRUPTED_MEMBER_BYTES = 32 * 2**20  # ... and all corrupted cells' member arrays together at most 32 MiB
CORRUPTED_BYTES = 2**30  # all corrupted cells' combined log-probabilities at most 1 GiB (else no corrupted predictions: full ImageNet-C)


class PredictionsError(ValueError):
    """A sidecar that is missing, does not match its record's sha256, or lacks an array; the message names the file."""


def keep_for(members: int, images: int, classes: int, dtype: str, *, corrupted: bool = False) -> tuple[str, str | None]:
    """("members" or "combined", why members are not kept or None) for a split of ``images`` examples
    (for ``corrupted``: all cells' images together) of a model of ``members`` members."""
    limit = CORRUPTED_MEMBER_BYTES if corrupted else SPLIT_MEMBER_BYTES
    size = members * images * classes * np.dtype(dtype).itemsize
    if members > MAX_MEMBERS:
        return "combined", f"{members} members > {MAX_MEMBERS}"
    if size > limit:
        return "combined", f"member log-probabilities {size / 2**20:.1f} MiB > {limit / 2**20:.0f} MiB"
    return "members", None


def sidecar_path(folder: str | os.PathLike, run_id: str, sha256: str) -> Path:
    """Where the sidecar of a record of ``run_id`` with content ``sha256`` goes: ``<folder>/<run_id>__<sha256[:16]>.predictions.npz``.

    Named by its content, not by the record's timestamp: two evaluations with identical
    predictions (a run resumed from its checkpoints, say) share one file."""
    return Path(folder) / f"{run_id}__{sha256[:16]}{SUFFIX}"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stored(name: str, array: np.ndarray, dtype: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=dtype)
    if array.dtype.kind in "iu":
        return np.ascontiguousarray(array, dtype=np.int64)
    raise PredictionsError(f"prediction array {name!r} has dtype {array.dtype}; expected floats (log-probabilities) or integers")


def write_predictions(folder: str | os.PathLike, run_id: str, arrays: Mapping[str, np.ndarray], *, dtype: str = "float32",
                      notes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``arrays`` (names as in the module docstring) into ``folder`` (the record's; compressed,
    atomically: a temporary file, then renamed; named by :func:`sidecar_path`; an identical file
    already there is kept); return the record's ``predictions`` entry: ``file`` (the name, beside
    the record), ``sha256``, ``bytes``, ``dtype``, ``version``, ``contents`` (array names) and ``notes``."""
    if dtype not in PREDICTIONS_DTYPES:
        raise PredictionsError(f"predictions dtype {dtype!r} is not valid; valid choices: {', '.join(PREDICTIONS_DTYPES)}")
    stored = {name: _stored(name, a, dtype) for name, a in arrays.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **stored)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    path = sidecar_path(folder, run_id, digest)
    if not (path.is_file() and file_sha256(path) == digest):
        atomic_write(path, lambda fh: fh.write(data), overwrite=True, size=len(data))
    return {"file": path.name, "sha256": digest, "bytes": len(data), "dtype": dtype,
            "version": PREDICTIONS_VERSION, "contents": sorted(stored), "notes": dict(notes or {})}


def _record_and_path(record_or_path: Mapping[str, Any] | str | os.PathLike) -> tuple[dict[str, Any], Path]:
    if isinstance(record_or_path, Mapping):
        rec = dict(record_or_path)
        where = rec.get("_path")
        if not where:
            raise PredictionsError(f"record {rec.get('run_id', '?')} has no '_path' (load it with benchmark.records.load_records), "
                                   "so its sidecar cannot be found")
        return rec, Path(where)
    path = Path(record_or_path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise PredictionsError(f"{path}: cannot read the record: {exc}") from exc
    return rec, path


def sidecar_of(record_or_path: Mapping[str, Any] | str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(the sidecar's path, the record's ``predictions`` entry); PredictionsError when the record has none."""
    rec, path = _record_and_path(record_or_path)
    entry = rec.get("predictions")
    if not isinstance(entry, dict) or not entry.get("file"):
        raise PredictionsError(f"{path}: no sidecar (the record has no 'predictions' entry: written before predictions were stored, "
                               "or with eval.predictions = false)")
    return path.parent / str(entry["file"]), entry


_HASHES: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256: a leaderboard hashes each file once


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = file_sha256(path)
    return _HASHES[key]


def sidecar_problem(record: Mapping[str, Any], *, required: bool = False) -> str | None:
    """Why ``record``'s sidecar cannot be used (missing file, sha256 mismatch; with ``required``, also
    a record without a ``predictions`` entry: "no sidecar"), or None when it is fine (or not needed)."""
    if not isinstance(record.get("predictions"), dict):
        return "no sidecar (no stored predictions in this record)" if required else None
    try:
        side, entry = sidecar_of(record)
    except PredictionsError as exc:
        return str(exc)
    if not side.is_file():
        return f"predictions sidecar {side.name} is missing"
    try:
        digest = _cached_sha256(side)
    except OSError as exc:
        return f"predictions sidecar {side.name} cannot be read: {exc}"
    if digest != entry.get("sha256"):
        return f"predictions sidecar {side.name} does not match the record's sha256 ({digest[:12]}... != {str(entry.get('sha256'))[:12]}...)"
    return None


def load_predictions(record_or_path: Mapping[str, Any] | str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """The arrays of a record's sidecar (names and shapes: the module docstring), floats as float32.

    ``record_or_path``: a record as :func:`benchmark.records.load_records` returns it (with
    ``_path``) or the path of a record file. With ``verify`` (the default) the file's sha256 must
    equal the record's; a missing or mismatching sidecar raises :class:`PredictionsError`.
    """
    side, entry = sidecar_of(record_or_path)
    if not side.is_file():
        raise PredictionsError(f"predictions sidecar {side} is missing (named by its record)")
    data = side.read_bytes()
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.get("sha256"):
            raise PredictionsError(f"predictions sidecar {side} does not match its record: sha256 {digest} != recorded {entry.get('sha256')}")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return {name: (npz[name].astype(np.float32) if npz[name].dtype.kind == "f" else npz[name]) for name in npz.files}
    except (OSError, ValueError) as exc:
        raise PredictionsError(f"predictions sidecar {side} cannot be read: {exc}") from exc


def split_predictions(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays under ``prefix`` (``"clean"``, ``"val"``, ``"corrupted/<c>/<s>"``, ``"ood/<name>"``,
    ``"ood_in"``) without it: ``{"log_probs", "targets"?, "members"?}`` ({} when absent)."""
    head = prefix.rstrip("/") + "/"
    return {name[len(head):]: a for name, a in arrays.items() if name.startswith(head) and "/" not in name[len(head):]}


def prefixed(prefix: str, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``arrays`` named under ``prefix`` (the inverse of :func:`split_predictions`)."""
    return {f"{prefix}/{name}": a for name, a in arrays.items()}


class KeepPolicy:
    """Which predictions one evaluated variant keeps (``eval.predictions``, ``eval.predictions_dtype``)
    and why members were dropped where they were (:func:`keep_for`)."""

    def __init__(self, ev: Mapping[str, Any], members: int, classes: int) -> None:
        self.on = bool(ev.get("predictions", True))
        self.dtype = str(ev.get("predictions_dtype", "float32"))
        self.members, self.classes = int(members), int(classes)
        self.dropped: dict[str, str] = {}

    def keep(self, split: str, images: int, *, corrupted: bool = False) -> str | None:
        """``"members"``, ``"combined"`` or None (predictions off) for ``split`` of ``images`` examples."""
        if not self.on:
            return None
        size = images * self.classes * np.dtype(self.dtype).itemsize
        if corrupted and size > CORRUPTED_BYTES:
            self.dropped[split] = f"no predictions stored: combined log-probabilities {size / 2**30:.1f} GiB > {CORRUPTED_BYTES / 2**30:.0f} GiB"
            return None
        if self.members == 1:  # the one member's log-probabilities are the combined ones, bit for bit
            return "combined"
        how, why = keep_for(self.members, images, self.classes, self.dtype, corrupted=corrupted)
        if why:
            self.dropped[split] = why
        return how

    def store(self, arrays: dict[str, np.ndarray], prefix: str, kept: Mapping[str, np.ndarray]) -> None:
        if self.on and kept:
            arrays.update(prefixed(prefix, kept))

    def notes(self) -> dict[str, Any]:
        """The record entry's ``notes``: the size policy and where members were dropped."""
        return {"members_dropped": dict(self.dropped), "single_member": self.members == 1, "max_members": MAX_MEMBERS, "split_member_bytes": SPLIT_MEMBER_BYTES,
                "corrupted_member_bytes": CORRUPTED_MEMBER_BYTES, "corrupted_bytes": CORRUPTED_BYTES}

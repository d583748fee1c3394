"""CIFAR-10-C / CIFAR-100-C layout: ``<folder>/<corruption>.npy`` uint8 [5N, 32, 32, 3]
(severity-major) plus ``<folder>/labels.npy`` [5N]; read memory-mapped. A folder made by
:func:`benchmark.corruptions.generate.generate_cifar_c` carries ``regenerated.json``.

Two sources: ``cifar-c-files`` (the released files, or any folder in their layout, in the official
test order) and ``cifar-c-regenerated`` (generated from the run's own test set, or its seeded
subset, with the dataset's corruption profile, and cached under the cache dir).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...corruptions import check_corruption, check_severity, corruption_set
from ...corruptions.generate import generate_cifar_c
from ..base import Split, resolve_cache_dir, resolve_data_dir
from .base import CORRUPTED_SOURCES, CorruptedDataError, CorruptedSource, subset_indices

if TYPE_CHECKING:  # pragma: no cover
    from ...core.runtime import Environment
    from ..base import Dataset

OFFICIAL_SOURCES = (
    "CIFAR-10-C: https://zenodo.org/record/2535967 ; CIFAR-100-C: https://zenodo.org/record/3555552 "
    "(or regenerate one with `python -m benchmark.corruptions.generate`)"
)


def cifar_c_source(folder: Path) -> str:
    """``"regenerated"`` if ``folder`` holds a regenerated.json, else ``"official"``."""
    return "regenerated" if (Path(folder) / "regenerated.json").exists() else "official"


def _severities(folder: Path) -> tuple[int, ...]:
    """Severities stored in ``folder`` (all five unless a regenerated.json says otherwise)."""
    manifest = folder / "regenerated.json"
    if manifest.exists():
        return tuple(int(s) for s in json.loads(manifest.read_text()).get("severities", (1, 2, 3, 4, 5)))
    return (1, 2, 3, 4, 5)


def _load_npy(path: Path, what: str, expected: str) -> np.ndarray:
    if not path.exists():
        raise CorruptedDataError(f"missing {what} file {path} (expected {expected}); get it from {OFFICIAL_SOURCES}")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # truncated / not an .npy
        raise CorruptedDataError(
            f"unreadable {what} file {path} (expected {expected}): {e}; get it from {OFFICIAL_SOURCES}"
        ) from e


def load_cifar_c(
    folder: Path, corruption: str, severity: int | None = None, *, expected_labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Memory-mapped CIFAR-C images and labels of one corruption.

    Returns (images uint8 [N, 32, 32, 3], labels [N]) for one severity, or [5N, ...] for
    ``severity=None`` (all five, severity-major). ``expected_labels`` [N], if given, must equal
    the stored labels of every severity block.
    """
    folder = Path(folder)
    check_corruption(corruption)
    if severity is not None:
        severity = check_severity(severity)
    sevs = _severities(folder)
    k = len(sevs)
    lab_path = folder / "labels.npy"
    labels = _load_npy(lab_path, "labels", f"integer array [{k}N]")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer) or len(labels) % k:
        raise CorruptedDataError(
            f"malformed labels file {lab_path}: expected an integer array of shape [{k}N]; "
            f"found shape {labels.shape} dtype {labels.dtype}; get it from {OFFICIAL_SOURCES}"
        )
    n = len(labels) // k
    img_path = folder / f"{corruption}.npy"
    expected = f"uint8 array of shape ({k * n}, 32, 32, 3)"
    images = _load_npy(img_path, corruption, expected)
    if images.shape != (k * n, 32, 32, 3) or images.dtype != np.uint8:
        raise CorruptedDataError(
            f"malformed file {img_path}: expected {expected} (to match {lab_path}); "
            f"found shape {images.shape} dtype {images.dtype}; get it from {OFFICIAL_SOURCES}"
        )
    if expected_labels is not None:
        exp = np.asarray(expected_labels)
        if exp.shape != (n,) or not np.array_equal(np.asarray(labels).reshape(k, n), np.broadcast_to(exp, (k, n))):
            raise CorruptedDataError(
                f"labels in {lab_path} do not equal expected_labels (shape {exp.shape}) tiled {k} times; "
                "the folder belongs to another test set or order"
            )
    if severity is None:
        return images, labels
    if severity not in sevs:
        raise CorruptedDataError(f"severity {severity} is not stored in {folder}; it holds severities {list(sevs)}")
    i = sevs.index(severity)
    return images[i * n : (i + 1) * n], labels[i * n : (i + 1) * n]




# ---------------------------------------------------------------------------------------------
# The sources


@dataclass
class CifarCFolder:
    """A CIFAR-C folder opened for one dataset's test set: cell ``(corruption, severity)`` is the
    test subset's rows of that file (``rows``), whose labels must equal the clean test labels."""

    data: "Dataset"
    folder: Path
    rows: np.ndarray  # rows of each severity block that hold the evaluated test images
    expected: np.ndarray  # their clean labels
    device: Any
    seed: int | None
    desc: str = "eval corrupted"

    @property
    def source(self) -> str:
        return cifar_c_source(self.folder)

    def cell(self, corruption: str, severity: int) -> tuple[Any, int]:
        images, labels = load_cifar_c(self.folder, corruption, severity)
        rows = self.rows
        if len(labels) <= rows[-1] or not np.array_equal(np.asarray(labels[rows]), self.expected):
            raise ValueError(f"labels of {self.folder}/{corruption}.npy (severity {severity}) do not match the clean test labels of "
                             f"{self.data.name}: the corrupted set belongs to another test set or order (an ImageFolder copy is in class "
                             "order; use eval.corruptions = \"regenerated\" for it)")
        cells = images[rows] if len(rows) < len(labels) else images
        return Split(cells, self.expected).on_device(self.data.mean, self.data.std, self.device), len(rows)


def _test_subset(data: "Dataset", ev: dict[str, Any]) -> np.ndarray:
    return subset_indices(len(data.test), int(ev["corruption_subset"]), int(ev["corruption_seed"]))


def open_files(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> CifarCFolder:
    """A folder in the CIFAR-C layout, in the test set's order: rows = the evaluated test images."""
    idx = _test_subset(data, ev)
    return CifarCFolder(data, Path(str(folder)), idx, np.asarray(data.test.labels[idx]), device, seed=None)


def regenerated_folder(data: "Dataset", ev: dict[str, Any], env: "Environment") -> Path:
    """Generate (or find in the cache) the regenerated set of ``data``'s evaluated test images."""
    idx = _test_subset(data, ev)
    root = resolve_cache_dir(env.cache_dir, resolve_data_dir(env.data_dir))
    folder = root / f"{data.name}-C" / f"regenerated-seed{ev['corruption_seed']}-n{len(idx)}-{ev['corruption_set']}"
    images = np.ascontiguousarray(data.test.images[idx])
    labels = np.asarray(data.test.labels[idx])
    return generate_cifar_c(images, labels, folder, corruptions=corruption_set(ev["corruption_set"]),
                            severities=tuple(ev["corruption_severities"]), seed=int(ev["corruption_seed"]), progress=env.progress,
                            profile=data.spec.corruption_profile)


def open_regenerated(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> CifarCFolder:
    """A regenerated folder holds only the evaluated images, in order: rows = 0 .. n-1."""
    idx = _test_subset(data, ev)
    out = regenerated_folder(data, ev, env)
    return CifarCFolder(data, out, np.arange(len(idx)), np.asarray(data.test.labels[idx]), device, seed=int(ev["corruption_seed"]))


CORRUPTED_SOURCES.register("cifar-c-files")(CorruptedSource(
    "cifar-c-files", open_files, "CIFAR-10-C / CIFAR-100-C files (<corruption>.npy + labels.npy), the release or a folder in its layout"))
CORRUPTED_SOURCES.register("cifar-c-regenerated")(CorruptedSource(
    "cifar-c-regenerated", open_regenerated, "generated from the run's test set by benchmark.corruptions (seeded, cached)"))

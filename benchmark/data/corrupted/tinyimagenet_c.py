"""Tiny-ImageNet-C (Hendrycks and Dietterich, ICLR 2019): JPEG folders
``<root>/<corruption>/<severity>/<wnid>/<file>.JPEG`` of 64x64 images, as the release has them, or
the same layout regenerated from the run's own test images.

Two sources, for any dataset whose spec says ``corruption_profile="tinyimagenet"`` and whose test
split is uint8 ``[N, 64, 64, 3]`` with integer labels:

- ``tinyimagenet-c-files`` (``eval.corruptions = "official"``: ``<data root>/Tiny-ImageNet-C``, or
  a folder path): a cell's labels are the positions of its class folders in sorted order (the
  dataset's sorted-wnid class order), so all of the dataset's classes must be present.
  Cells are aligned with the clean test set by file name: when every file is ``val_<N>.<ext>``,
  ``N`` is the index of the clean test image it was made from (the Tiny-ImageNet val order), the
  evaluated rows are the same test indices as the clean subset, and their labels must equal the
  clean labels (else the folder belongs to another test set: an error says so). Otherwise the cell
  is evaluated as its own image set: rows in (class folder, file name) order, the
  ``eval.corruption_subset`` sample drawn over the cell.
- ``tinyimagenet-c-regenerated``: the evaluated test images (all, or the seeded
  ``eval.corruption_subset`` sample) corrupted with :func:`benchmark.corruptions.corrupt` and the
  dataset's profile, each (corruption, severity) cell seeded as CIFAR-C regeneration is
  (:func:`benchmark.corruptions.generate.cell_seed`, batch by batch), truncated to uint8 and saved
  as JPEG quality 85 (``optimize=True``) as make_tinyimagenet_c.py did, in the release's layout:
  ``<cache>/<dataset>-C/regenerated-seed<S>-n<N>/<corruption>/<severity>/<class folder>/val_<i>.JPEG``
  (``i`` the clean test index; class folders are the dataset's ``wnids`` when it has that attribute,
  else the zero-padded class index, so sorted order is class order either way). A cell is written
  into a temporary folder and renamed when complete: an interrupted run resumes at the first
  missing cell, and a repeat run reuses every cell. ``regenerated.json`` records how.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
from PIL import Image

import benchmark

from ...core.io import atomic_write_json
from ...core.progress import progress_bar
from ...corruptions import CORRUPTIONS_VERSION, check_corruption, check_profile, check_severity, corruption_set
from ...corruptions.generate import array_sha256, corrupt_array
from ..base import Split, resolve_cache_dir, resolve_data_dir
from .base import CORRUPTED_SOURCES, CorruptedDataError, CorruptedSource, check_cell_folders, subset_indices

if TYPE_CHECKING:  # pragma: no cover
    from ...core.runtime import Environment
    from ..base import Dataset

TINY_C_SOURCE = "Tiny-ImageNet-C: https://zenodo.org/record/2536630"
JPEG_QUALITY = 85  # make_tinyimagenet_c.py: Image.fromarray(np.uint8(img)).save(path, quality=85, optimize=True)
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
VAL_NAME = re.compile(r"^val_(\d+)\.(jpe?g|png)$", re.IGNORECASE)
MANIFEST = "regenerated.json"


# ---------------------------------------------------------------------------------------------
# Reading a folder in the release's layout


@dataclass(frozen=True)
class CellFiles:
    """The files of one cell: ``paths`` and ``labels`` in (class folder, file name) order, and
    ``index`` (the clean test index of each file, from ``val_<N>``; ``None`` when a name is not
    of that form)."""

    folder: Path
    paths: tuple[Path, ...]
    labels: np.ndarray
    index: np.ndarray | None


def class_folders_of(root: Path) -> list[str] | None:
    """The class folders in class order that a regenerated folder recorded (``None`` for a release)."""
    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return None
    folders = json.loads(manifest.read_text()).get("class_folders")
    return [str(f) for f in folders] if folders else None


def list_cell(root: Path, corruption: str, severity: int, num_classes: int) -> CellFiles:
    """The images of ``root/<corruption>/<severity>/<class folder>/*`` with their class indices.

    Class ``k`` is the ``k``-th class folder in sorted order (the sorted-wnid order of
    Tiny-ImageNet), or the order a regenerated folder's manifest records; ``num_classes`` folders
    are expected.
    """
    root = Path(root)
    check_corruption(corruption)
    severity = check_severity(severity)
    corr_dir = root / corruption
    if not corr_dir.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise CorruptedDataError(f"missing corruption folder {corr_dir}; {root} holds: {found or '(nothing)'}; "
                                 f"expected {root}/<corruption>/<severity 1-5>/<wnid>/*.JPEG; get it from {TINY_C_SOURCE}")
    folder = corr_dir / str(severity)
    if not folder.is_dir():
        found = sorted(p.name for p in corr_dir.iterdir() if p.is_dir())
        raise CorruptedDataError(f"missing severity folder {folder}; {corr_dir} holds: {found or '(nothing)'}")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir())
    recorded = class_folders_of(root)
    if recorded is not None:
        unknown = [w for w in present if w not in recorded]
        if unknown:
            raise CorruptedDataError(f"class folders {unknown[:10]} in {folder} are not among the {len(recorded)} "
                                     f"class folders {root / MANIFEST} records")
        order = recorded
    else:
        if len(present) != num_classes:
            raise CorruptedDataError(
                f"{folder} has {len(present)} class folders, the dataset {num_classes} classes: labels are the "
                f"positions of the class folders (wnids) in sorted order, so every class folder must be present "
                f"(found e.g. {present[:5]})")
        order = present
    to_idx = {w: k for k, w in enumerate(order)}
    paths: list[Path] = []
    labels: list[int] = []
    for w in present:
        for f in sorted((folder / w).iterdir()):
            if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file():
                paths.append(f)
                labels.append(to_idx[w])
    if not paths:
        raise CorruptedDataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the class folders under {folder}")
    matches = [VAL_NAME.match(p.name) for p in paths]
    index = np.array([int(m.group(1)) for m in matches], dtype=np.int64) if all(matches) else None
    if index is not None and len(np.unique(index)) != len(index):
        index = None  # the same val_<N> in two class folders: not a pairing with the clean set
    return CellFiles(folder, tuple(paths), np.asarray(labels, dtype=np.int64), index)


def decode(paths: Sequence[Path], size: tuple[int, int]) -> np.ndarray:
    """Decode images to uint8 ``[N, H, W, 3]`` (RGB); each must be ``size`` (H, W): no resizing."""
    out = np.empty((len(paths), size[0], size[1], 3), dtype=np.uint8)
    for k, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise CorruptedDataError(f"cannot decode {p}: {e}") from None
        if arr.shape[:2] != tuple(size):
            raise CorruptedDataError(f"{p} is {arr.shape[1]}x{arr.shape[0]}, the test images {size[1]}x{size[0]}; "
                                     "Tiny-ImageNet-C images are evaluated as they are (no resizing)")
        out[k] = arr
    return out


def read_cell(root: Path, corruption: str, severity: int, num_classes: int, test_labels: np.ndarray,
              subset: int, seed: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(images uint8 [n, H, W, 3], labels [n], clean test indices [n] or ``None``) of one cell.

    Aligned (file names ``val_<N>``): the rows are the clean subset's test indices
    (:func:`subset_indices` over ``len(test_labels)``), each of which must be in the cell, with
    the clean labels. Otherwise: the cell's own files, a seeded subset drawn over them.
    """
    cell = list_cell(root, corruption, severity, num_classes)
    test_labels = np.asarray(test_labels)
    if cell.index is None:
        rows = subset_indices(len(cell.paths), subset, seed)
        return decode([cell.paths[i] for i in rows], size), cell.labels[rows], None
    idx = subset_indices(len(test_labels), subset, seed)
    where = {int(n): k for k, n in enumerate(cell.index)}
    missing = [int(i) for i in idx if int(i) not in where]
    if missing:
        raise CorruptedDataError(
            f"{cell.folder} lacks {len(missing)} of the {len(idx)} evaluated test images, e.g. val_{missing[0]} "
            f"(file names val_<N> pair each image with clean test image N; the folder holds {len(cell.paths)} images)")
    rows = np.array([where[int(i)] for i in idx], dtype=np.int64)
    labels = cell.labels[rows]
    bad = np.nonzero(labels != test_labels[idx])[0]
    if len(bad):
        i = int(idx[bad[0]])
        raise CorruptedDataError(
            f"{len(bad)} image(s) of {cell.folder} lie in another class than their clean test image, e.g. val_{i} "
            f"(class {int(labels[bad[0]])}, clean label {int(test_labels[i])}): the folder belongs to another test set "
            "or class order")
    return decode([cell.paths[r] for r in rows], size), labels, idx


# ---------------------------------------------------------------------------------------------
# Regenerating in the release's layout


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """uint8 [H, W, 3] saved as make_tinyimagenet_c.py saved it (JPEG, ``quality``, optimize=True)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=int(quality), optimize=True)
    return buf.getvalue()


def default_class_folders(num_classes: int) -> list[str]:
    """Zero-padded class indices (``000``, ``001``, ...): sorted order is class order."""
    width = max(3, len(str(max(num_classes - 1, 0))))
    return [f"{k:0{width}d}" for k in range(num_classes)]


def _identity(images: np.ndarray, labels: np.ndarray, indices: np.ndarray, class_folders: Sequence[str], seed: int,
              batch_size: int, profile: str) -> dict:
    return {
        "seed": int(seed),
        "n": int(len(images)),
        "images_sha256": array_sha256(images),
        "labels_sha256": array_sha256(np.asarray(labels).astype(np.int64)),
        "indices_sha256": array_sha256(np.asarray(indices).astype(np.int64)),
        "class_folders": list(class_folders),
        "batch_size": int(batch_size),
        "profile": profile,
        "jpeg_quality": JPEG_QUALITY,
        "code_version": {"benchmark": benchmark.__version__, "corruptions": CORRUPTIONS_VERSION},
    }


def _write_cell(out_dir: Path, corruption: str, severity: int, images: np.ndarray, labels: np.ndarray,
                indices: np.ndarray, class_folders: Sequence[str], seed: int, batch_size: int, profile: str) -> None:
    final = out_dir / corruption / str(severity)
    tmp = out_dir / corruption / f".{severity}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    corrupted = corrupt_array(images, corruption, severity, seed=seed, batch_size=batch_size, profile=profile)
    for folder in sorted({class_folders[int(y)] for y in labels}):
        (tmp / folder).mkdir(parents=True, exist_ok=True)
    for img, y, i in zip(corrupted, labels, indices):
        (tmp / class_folders[int(y)] / f"val_{int(i)}.JPEG").write_bytes(jpeg_bytes(img))
    try:
        os.replace(tmp, final)
    except OSError:  # another process completed the cell first
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.is_dir():
            raise


def generate_tinyimagenet_c(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    *,
    indices: np.ndarray | None = None,
    num_classes: int | None = None,
    class_folders: Sequence[str] | None = None,
    corruptions: Sequence[str] = corruption_set("benchmark15"),
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    batch_size: int = 500,
    profile: str = "tinyimagenet",
    progress: bool = True,
) -> Path:
    """Write ``out_dir/<corruption>/<severity>/<class folder>/val_<i>.JPEG`` for every cell; return ``out_dir``.

    images: uint8 [N, H, W, 3]; labels: int [N]; ``indices``: the clean test index of each image
    (default 0..N-1), used in the file names; ``class_folders``: one folder name per class, in class
    order (default :func:`default_class_folders` of ``num_classes``, else of ``max(labels) + 1``).
    Cells already present for the same inputs are kept; a folder regenerated from other inputs
    raises ValueError; one made by older corruption code from the same inputs is regenerated.
    """
    out_dir = Path(out_dir)
    corruptions = [check_corruption(c) for c in corruptions]
    severities = [check_severity(s) for s in severities]
    check_profile(profile)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        got = f"{getattr(images, 'shape', None)} {getattr(images, 'dtype', type(images).__name__)}"
        raise ValueError(f"images must be uint8 [N, H, W, 3]; got {got}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape [{len(images)}]; got {labels.shape} {labels.dtype}")
    indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
    if indices.shape != (len(images),) or len(np.unique(indices)) != len(indices):
        raise ValueError(f"indices must be {len(images)} distinct integers; got shape {indices.shape}")
    if class_folders is None:
        class_folders = default_class_folders(num_classes or int(labels.max(initial=-1)) + 1)
    class_folders = [str(f) for f in class_folders]
    if len(labels) and (labels.min() < 0 or labels.max() >= len(class_folders)):
        raise ValueError(f"labels must lie in 0..{len(class_folders) - 1} (one class folder each); got {labels.min()}..{labels.max()}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    images = np.ascontiguousarray(images)
    identity = _identity(images, labels, indices, class_folders, seed, batch_size, profile)
    manifest = out_dir / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        diff = sorted(k for k in identity if old.get(k) != identity[k])
        if diff == ["code_version"]:
            warnings.warn(f"{out_dir} was regenerated by corruption code {old.get('code_version')}; regenerating it with "
                          f"{identity['code_version']}", stacklevel=2)
            for p in out_dir.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)
        elif diff:
            raise ValueError(f"{out_dir} holds a set regenerated from different inputs (differs in {diff}); "
                             "use another folder or delete that one")
    elif out_dir.is_dir() and any(p.is_dir() for p in out_dir.iterdir()):
        raise ValueError(f"{out_dir} holds folders but no {MANIFEST} (a release or foreign data); refusing to write into it")
    todo = [(c, s) for c in corruptions for s in severities if not (out_dir / c / str(s)).is_dir()]
    if not todo:
        return out_dir
    atomic_write_json(manifest, {
        "source": "regenerated",
        "note": "Regenerated with plures' benchmark.corruptions (make_tinyimagenet_c.py's parameters for the "
                "'tinyimagenet' profile), saved as JPEG quality 85; NOT the official Tiny-ImageNet-C release. Frost, "
                "motion blur, snow and spatter depart from the original (benchmark/corruptions module docstrings).",
        **identity,
    })
    bar = progress_bar(total=len(todo), desc="tinyimagenet-c", unit="set", enable=progress)
    for c, s in todo:
        _write_cell(out_dir, c, s, images, labels, indices, class_folders, seed, batch_size, profile)
        bar.update(1)
    bar.close()
    return out_dir


# ---------------------------------------------------------------------------------------------
# The sources


@dataclass
class TinyImageNetCSet:
    """A Tiny-ImageNet-C folder opened for one dataset's test split."""

    data: "Dataset"
    folder: Path
    subset: int
    subset_seed: int
    device: Any
    source: str
    desc: str = "eval Tiny-ImageNet-C"

    @property
    def seed(self) -> int | None:
        """The regeneration seed (``None`` for released files)."""
        return self.subset_seed if self.source == "regenerated" else None

    def cell(self, corruption: str, severity: int) -> tuple[Any, int]:
        test = self.data.test
        size = (int(test.images.shape[1]), int(test.images.shape[2]))
        images, labels, _ = read_cell(self.folder, corruption, severity, self.data.num_classes, np.asarray(test.labels),
                                      self.subset, self.subset_seed, size)
        return Split(images, labels).on_device(self.data.mean, self.data.std, self.device), len(labels)


def _array_test(data: "Dataset") -> Any:
    test = data.test
    images = getattr(test, "images", None)
    if images is None or getattr(images, "ndim", 0) != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"Tiny-ImageNet-C evaluation needs a test split held as uint8 [N, H, W, 3] arrays; dataset "
                         f"{data.name!r} has {type(test).__name__}")
    return test


def open_files(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> TinyImageNetCSet:
    """The released folders (or a folder in their layout); every cell asked for must exist."""
    _array_test(data)
    folder = Path(str(folder))
    if not folder.is_dir():
        raise CorruptedDataError(f"Tiny-ImageNet-C folder {folder} not found (eval.corruptions = {ev['corruptions']!r}); "
                                 f"expected {folder}/<corruption>/<severity 1-5>/<wnid>/*.JPEG; get it from {TINY_C_SOURCE}")
    names, severities = check_cell_folders(folder, ev)
    source = "regenerated" if (folder / MANIFEST).is_file() else "official"
    return TinyImageNetCSet(data, folder, int(ev["corruption_subset"]), int(ev["corruption_seed"]), device, source)


def class_folders_for(data: "Dataset") -> list[str]:
    """The dataset's wnids when it has a ``wnids`` attribute (one per class), else zero-padded indices."""
    wnids = getattr(data, "wnids", None)
    if wnids is not None and len(wnids) == data.num_classes:
        return [str(w) for w in wnids]
    return default_class_folders(data.num_classes)


def regenerated_folder(data: "Dataset", ev: dict[str, Any], env: "Environment") -> Path:
    """Generate (or find in the cache) the regenerated cells of ``data``'s evaluated test images."""
    test = _array_test(data)
    idx = subset_indices(len(test), int(ev["corruption_subset"]), int(ev["corruption_seed"]))
    root = resolve_cache_dir(env.cache_dir, resolve_data_dir(env.data_dir))
    folder = root / f"{data.name}-C" / f"regenerated-seed{ev['corruption_seed']}-n{len(idx)}"
    return generate_tinyimagenet_c(
        np.ascontiguousarray(test.images[idx]), np.asarray(test.labels[idx]), folder, indices=idx,
        class_folders=class_folders_for(data), corruptions=corruption_set(ev["corruption_set"]),
        severities=tuple(int(s) for s in ev["corruption_severities"]), seed=int(ev["corruption_seed"]),
        profile=data.spec.corruption_profile, progress=env.progress)


def open_regenerated(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> TinyImageNetCSet:
    """The evaluated test images regenerated (or found in the cache) in the release's layout."""
    out = regenerated_folder(data, ev, env)
    return TinyImageNetCSet(data, out, int(ev["corruption_subset"]), int(ev["corruption_seed"]), device, "regenerated")


CORRUPTED_SOURCES.register("tinyimagenet-c-files")(CorruptedSource(
    "tinyimagenet-c-files", open_files,
    "Tiny-ImageNet-C JPEG folders <corruption>/<severity>/<wnid>/*.JPEG (the release or a folder in its layout)"))
CORRUPTED_SOURCES.register("tinyimagenet-c-regenerated")(CorruptedSource(
    "tinyimagenet-c-regenerated", open_regenerated,
    "the test images corrupted with the dataset's profile, saved as JPEG q85 in Tiny-ImageNet-C's layout (seeded, cached)"))

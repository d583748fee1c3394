"""Loaders for corrupted test sets in their official layouts.

CIFAR-10-C / CIFAR-100-C: ``<folder>/<corruption>.npy`` uint8 [5N, 32, 32, 3] (severity-major)
plus ``<folder>/labels.npy`` [5N]; read memory-mapped. A folder made by
:func:`benchmark.corruptions.generate.generate_cifar_c` carries ``regenerated.json``.

ImageNet-C: ``<root>/<corruption>/<severity>/<wnid>/<name>.JPEG`` (224x224, JPEG q85);
evaluate with CenterCrop(224) only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms

from benchmark.corruptions import check_corruption, check_severity

OFFICIAL_SOURCES = (
    "CIFAR-10-C: https://zenodo.org/record/2535967 ; CIFAR-100-C: https://zenodo.org/record/3555552 "
    "(or regenerate one with `python -m benchmark.corruptions.generate`)"
)
IMAGENET_C_SOURCE = "ImageNet-C: https://zenodo.org/record/2235448"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")


class CorruptedDataError(ValueError):
    """A corrupted-set file or folder that is missing or not in the official format."""


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


# ---------------------------------------------------------------- ImageNet-C


def imagenet_val_transform() -> transforms.Compose:
    """Clean ImageNet evaluation transform: Resize(256), CenterCrop(224) (PIL in, PIL out)."""
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])


def imagenet_c_transform() -> transforms.CenterCrop:
    """ImageNet-C evaluation transform: CenterCrop(224) only (images are already 224)."""
    return transforms.CenterCrop(224)


def imagenet_classes(root: Path) -> list[str]:
    """Sorted class folder names (wnids) under ``root/train`` or else ``root/val``."""
    root = Path(root)
    for split in ("train", "val"):
        d = root / split
        if d.is_dir():
            classes = sorted(p.name for p in d.iterdir() if p.is_dir())
            if classes:
                return classes
    found = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise CorruptedDataError(
        f"no class folders under {root / 'train'} or {root / 'val'}; {root} contains: {found or '(nothing)'}"
    )


class ImageNetC(Dataset):
    """``<root>/<corruption>/<severity>/<wnid>/*.JPEG`` as (image, clean class index) pairs.

    ``class_to_idx`` maps wnid -> index of the CLEAN dataset (so labels match the model's
    head); every wnid folder present must be in it. ``transform`` defaults to CenterCrop(224)
    followed by ToTensor (float [3, 224, 224] in [0, 1]).
    """

    def __init__(
        self,
        root: Path,
        corruption: str,
        severity: int,
        class_to_idx: dict[str, int],
        transform: Callable | None = None,
    ) -> None:
        check_corruption(corruption)
        severity = check_severity(severity)
        self.root = Path(root)
        corr_dir = self.root / corruption
        if not corr_dir.is_dir():
            found = sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []
            raise CorruptedDataError(
                f"missing corruption folder {corr_dir}; {self.root} holds: {found or '(nothing)'}; "
                f"get it from {IMAGENET_C_SOURCE}"
            )
        folder = corr_dir / str(severity)
        if not folder.is_dir():
            found = sorted(p.name for p in corr_dir.iterdir() if p.is_dir())
            raise CorruptedDataError(f"missing severity folder {folder}; {corr_dir} holds: {found or '(nothing)'}")
        wnids = sorted(p.name for p in folder.iterdir() if p.is_dir())
        unknown_wnids = [w for w in wnids if w not in class_to_idx]
        if unknown_wnids:
            raise CorruptedDataError(
                f"class folders {unknown_wnids[:10]} in {folder} are not in class_to_idx "
                f"({len(class_to_idx)} clean classes, e.g. {sorted(class_to_idx)[:5]})"
            )
        self.samples: list[tuple[Path, int]] = [
            (f, class_to_idx[w])
            for w in wnids
            for f in sorted((folder / w).iterdir())
            if f.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not self.samples:
            raise CorruptedDataError(
                f"no images ({', '.join(IMAGE_EXTENSIONS)}) in class folders under {folder}; found classes: {wnids}"
            )
        self.corruption, self.severity = corruption, severity
        self.transform = transform or transforms.Compose([imagenet_c_transform(), transforms.ToTensor()])

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[i]
        with Image.open(path) as im:
            img = im.convert("RGB")
        return self.transform(img), target

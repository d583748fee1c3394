"""``cifar10-jpeg``: CIFAR-10 re-encoded as one JPEG per image, in an ImageFolder layout
``train/<class>/*``, ``test/<class>/*``: the folder ``<root>/cifar10-jpeg/`` or the tarball
``<root>/cifar10-jpeg.tar.gz``. A distinct dataset, not comparable with official CIFAR-10 numbers.
Its test set is in class order, so the released CIFAR-10-C files (official order) do not match it:
evaluate it on regenerated sets, or on a folder made from this copy.
"""

from __future__ import annotations

from pathlib import Path

from ..base import DATA_ENV, DATASETS, DataError, DatasetSpec, cached_splits
from ..imagefolder import read_image_folder
from .cifar import CIFAR_C_SOURCES, CIFAR_MEAN, CIFAR_STD


def _jpeg_copy(folder_name: str):
    def load(root: Path, cache: Path, download: bool, progress: bool):
        candidates = [root / folder_name, root / f"{folder_name}.tar.gz"]
        src = next((c for c in candidates if c.exists()), None)
        if src is None:
            raise DataError(
                f"{folder_name} not found: expected the folder {candidates[0]}/ (train/<class>/*, test/<class>/*) "
                f"or the archive {candidates[1]}; point --data-dir / ${DATA_ENV} at the folder that holds it "
                f"(on the plures build machines: ../shared/data)."
            )
        splits, classes, _ = cached_splits(cache, src, lambda: read_image_folder(src, progress=progress))
        return splits, classes, "jpeg-copy", src

    return load


DATASETS.register("cifar10-jpeg")(DatasetSpec("cifar10-jpeg", _jpeg_copy("cifar10-jpeg"), CIFAR_MEAN, CIFAR_STD, "jpeg-copy",
                                              "CIFAR-10 re-encoded as JPEG (ImageFolder); not comparable with official CIFAR-10 numbers",
                                              corrupted=CIFAR_C_SOURCES, official_corrupted_folder="CIFAR-10-C", corruption_profile="cifar"))

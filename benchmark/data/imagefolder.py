"""ImageFolder layouts ``<root>/<split>/<class>/<image>`` (a folder, or a ``.tar.gz`` holding one),
decoded with PIL into arrays (for the uint8 cache of :mod:`benchmark.data.base`)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..core.progress import progress_bar
from .base import IMAGE_SUFFIXES, DataError, Split


def _decode_image(raw: bytes, where: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"cannot decode image {where}: {exc}") from None


def _folder_entries(root: Path, split: str) -> Iterator[tuple[str, str, Callable[[], bytes]]]:
    base = root / split
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                yield cls_dir.name, str(f), f.read_bytes


def read_image_folder(root: Path, splits: tuple[str, ...] = ("train", "test"), progress: bool = True) -> tuple[dict[str, Split], tuple[str, ...]]:
    """Read ``<root>/<split>/<class>/<image>`` (a folder, or a ``.tar.gz`` holding one top folder).

    Classes are the sorted folder names of the first split (torchvision's ImageFolder order);
    images are ordered by class, then file name. All images must share one size.
    """
    root = Path(root)
    per_split: dict[str, list[tuple[str, str, bytes]]] = {s: [] for s in splits}
    if root.is_dir():
        for split in splits:
            if not (root / split).is_dir():
                raise DataError(f"missing folder {root / split}: an ImageFolder dataset needs {root}/<split>/<class>/<image> for splits {list(splits)}")
            per_split[split] = [(c, w, read()) for c, w, read in _folder_entries(root, split)]
    elif root.is_file():
        try:
            with tarfile.open(root, "r:*") as tar:
                for member in progress_bar(tar, desc=f"reading {root.name}", unit="file", enable=progress):
                    parts = Path(member.name).parts
                    if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                        continue
                    # <top>/<split>/<class>/<file> or <split>/<class>/<file>
                    for i, part in enumerate(parts[:-2]):
                        if part in per_split and len(parts) - i == 3:
                            per_split[part].append((parts[i + 1], f"{root}:{member.name}", tar.extractfile(member).read()))
                            break
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{root} is not a readable tar archive ({exc})") from None
        for split in splits:
            per_split[split].sort(key=lambda e: (e[0], e[1]))
    else:
        raise DataError(f"ImageFolder dataset not found at {root}")
    classes = tuple(sorted({c for c, _, _ in per_split[splits[0]]}))
    if not classes:
        raise DataError(f"no images found under {root}/{splits[0]}/<class>/ (suffixes {IMAGE_SUFFIXES})")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in splits:
        entries = per_split[split]
        if not entries:
            raise DataError(f"no images found for split {split!r} under {root}")
        unknown_cls = sorted({c for c, _, _ in entries} - set(index))
        if unknown_cls:
            raise DataError(f"split {split!r} of {root} has classes {unknown_cls} that {splits[0]!r} lacks; classes: {list(classes)}")
        images = [_decode_image(raw, where) for _, where, raw in progress_bar(entries, desc=f"decoding {split}", unit="img", enable=progress)]
        shapes = {im.shape for im in images}
        if len(shapes) != 1:
            raise DataError(f"images of {root}/{split} have several sizes {sorted(shapes)[:5]}; this loader needs one size")
        out[split] = Split(np.stack(images), np.array([index[c] for c, _, _ in entries], dtype=np.int64))
    return out, classes


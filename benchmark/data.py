"""Datasets: read once, decode once into a uint8 cache on disk, memory-map, batch on the device.

Sources
- ``cifar10`` / ``cifar100``: torchvision's official archives (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``, or their extracted folders) in the data root; downloaded when the
  network allows, checked against their md5.
- ``cifar10-jpeg``: an ImageFolder layout ``train/<class>/*``, ``test/<class>/*``, either as a
  folder ``<root>/cifar10-jpeg/`` or the tarball ``<root>/cifar10-jpeg.tar.gz`` (the JPEG
  re-encoded CIFAR-10 copy; a distinct dataset, not comparable with official CIFAR-10 numbers).

Every split is decoded once into ``<cache>/<dataset>/<split>_{images,labels}.npy`` (uint8
``[N, H, W, 3]`` and int64 ``[N]``) and memory-mapped afterwards; an epoch never decodes an image.

The data root comes from ``--data-dir``, else ``$PLURES_DATA_DIR``, else ``./data``; the cache from
``--cache-dir``, else ``$PLURES_CACHE_DIR``, else ``./data/cache`` (never inside the data root,
which may be shared or read-only).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from .io import atomic_save_npy, atomic_write_json
from .progress import progress_bar
from .registry import Registry

DATA_ENV = "PLURES_DATA_DIR"
CACHE_ENV = "PLURES_CACHE_DIR"
CACHE_VERSION = 1

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DataError(RuntimeError):
    """Missing or corrupt data; the message says what was expected where and how to get it."""


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$PLURES_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get(DATA_ENV) or "data").expanduser()


def resolve_cache_dir(cache_dir: str | os.PathLike | None, data_dir: Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$PLURES_CACHE_DIR``, else ``./data/cache``.

    Never inside the data root by default: data roots are often read-only or shared (and a
    permission check cannot tell, since root may write anywhere).
    """
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path("data") / "cache").expanduser()


@dataclass(frozen=True)
class Split:
    """One split held as arrays: images uint8 ``[N, H, W, 3]`` (often a memmap), labels int64 ``[N]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.images[idx], self.labels[idx])


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "official", "jpeg-copy", ...
    source_path: str
    val: Split | None = None
    # train/test/val may instead be streaming splits (benchmark.imagenet.StreamingImageFolder): see device_data.

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(getattr(self.train, "image_size", None) or self.train.images.shape[1])


# ---------------------------------------------------------------------------------------------
# Official CIFAR archives (torchvision's format: pickled batches, planar CHW rows of 3072 bytes)


@dataclass(frozen=True)
class CifarArchive:
    filename: str
    folder: str
    md5: str
    url: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    names_key: str


CIFAR10_ARCHIVE = CifarArchive(
    "cifar-10-python.tar.gz", "cifar-10-batches-py", "c58f30108f718f92721af3b95e74349a",
    "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "labels", "batches.meta", "label_names",
)
CIFAR100_ARCHIVE = CifarArchive(
    "cifar-100-python.tar.gz", "cifar-100-python", "eb9058c3a382ffc7106e4002c42a8d85",
    "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    ("train",), ("test",), "fine_labels", "meta", "fine_label_names",
)


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _unpickle(raw: bytes, where: str) -> dict:
    try:
        return pickle.loads(raw, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise DataError(f"{where} is not a valid CIFAR batch file ({type(exc).__name__}: {exc})") from None


def _decode_batches(entries: list[tuple[str, bytes]], label_key: str) -> Split:
    images, labels = [], []
    for where, raw in entries:
        batch = _unpickle(raw, where)
        data = np.asarray(batch.get("data"))
        if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8 or label_key not in batch:
            raise DataError(f"{where}: expected 'data' uint8 [N, 3072] and '{label_key}', found data {data.dtype} {data.shape}, keys {sorted(batch)}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return Split(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


def read_cifar_archive(path: Path, spec: CifarArchive, md5: str | None = "official") -> tuple[Split, Split, tuple[str, ...]]:
    """Read a CIFAR ``.tar.gz`` or its extracted folder -> (train, test, class names).

    ``md5="official"`` checks a tarball against the published checksum; ``None`` skips the check.
    """
    path = Path(path)
    expected = spec.md5 if md5 == "official" else md5
    names = [*spec.train_files, *spec.test_files, spec.meta_file]
    if path.is_dir():
        raw = {}
        for name in names:
            f = path / name
            if not f.is_file():
                raise DataError(f"missing {f}: a CIFAR folder {path} must hold {', '.join(names)}")
            raw[name] = f.read_bytes()
    else:
        if expected is not None:
            got = md5sum(path)
            if got != expected:
                raise DataError(f"{path} is corrupt or incomplete: md5 {got}, expected {expected}. Delete it and download {spec.url} again.")
        raw = {}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for name in names:
                    member = f"{spec.folder}/{name}"
                    try:
                        fh = tar.extractfile(member)
                    except KeyError:
                        fh = None
                    if fh is None:
                        raise DataError(f"{path} has no member {member}: not a {spec.filename} archive")
                    raw[name] = fh.read()
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{path} is not a readable .tar.gz ({exc}); download {spec.url} again") from None
    train = _decode_batches([(f"{path}:{n}", raw[n]) for n in spec.train_files], spec.label_key)
    test = _decode_batches([(f"{path}:{n}", raw[n]) for n in spec.test_files], spec.label_key)
    meta = _unpickle(raw[spec.meta_file], f"{path}:{spec.meta_file}")
    classes = tuple(meta[spec.names_key])
    return train, test, classes


def _find_or_download_cifar(root: Path, spec: CifarArchive, download: bool) -> Path:
    for candidate in (root / spec.folder, root / spec.filename):
        if candidate.exists():
            return candidate
    if download:
        try:
            from torchvision.datasets.utils import download_url

            download_url(spec.url, str(root), spec.filename, spec.md5)
            return root / spec.filename
        except Exception as exc:  # noqa: BLE001 - no network, proxy, ...
            reason = f"download failed ({type(exc).__name__}: {exc})"
    else:
        reason = "download disabled"
    raise DataError(
        f"CIFAR archive not found: expected {root / spec.filename} (md5 {spec.md5}) or the extracted folder "
        f"{root / spec.folder}/; {reason}. Get it from {spec.url} and put it at {root / spec.filename}, "
        f"or point --data-dir / ${DATA_ENV} at the folder that holds it."
    )


# ---------------------------------------------------------------------------------------------
# ImageFolder layouts (a folder or a .tar.gz), decoded with PIL


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


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


# ---------------------------------------------------------------------------------------------
# The cache


def _source_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size if path.is_file() else None, "mtime": int(st.st_mtime), "version": CACHE_VERSION}


def cached_splits(cache: Path, source: Path, read: Callable[[], tuple[dict[str, Split], tuple[str, ...]]]) -> tuple[dict[str, Split], tuple[str, ...], bool]:
    """Memory-mapped splits from ``cache``, building them with ``read()`` if absent or stale.

    Returns (splits, classes, hit) where ``hit`` tells whether the cache was reused.
    """
    import json

    meta_path = cache / "meta.json"
    fingerprint = _source_fingerprint(source)
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("source") == fingerprint:
                splits = {
                    s: Split(np.load(cache / f"{s}_images.npy", mmap_mode="r"), np.load(cache / f"{s}_labels.npy"))
                    for s in meta["splits"]
                }
                return splits, tuple(meta["classes"]), True
        except (OSError, ValueError, KeyError):
            pass  # stale or damaged cache: rebuild below
    splits, classes = read()
    for s, split in splits.items():
        atomic_save_npy(cache / f"{s}_images.npy", np.ascontiguousarray(split.images, dtype=np.uint8))
        atomic_save_npy(cache / f"{s}_labels.npy", split.labels.astype(np.int64))
    atomic_write_json(meta_path, {"source": fingerprint, "splits": sorted(splits), "classes": list(classes)})
    return cached_splits(cache, source, read)[:2] + (False,)


# ---------------------------------------------------------------------------------------------
# Registry of datasets


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[[Path, Path, bool, bool], tuple[dict[str, Split], tuple[str, ...], str, Path]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    description: str


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _official(spec: CifarArchive):
    def load(root: Path, cache: Path, download: bool, progress: bool):
        src = _find_or_download_cifar(root, spec, download)

        def read():
            train, test, classes = read_cifar_archive(src, spec)
            return {"train": train, "test": test}, classes

        splits, classes, _ = cached_splits(cache, src, read)
        return splits, classes, "official", src

    return load


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


def _imagenet(root: Path, cache: Path, download: bool, progress: bool):
    from .imagenet import load_imagenet  # streamed from the JPEG files: no uint8 cache

    return load_imagenet(root, progress)


DATASETS.register("cifar10")(DatasetSpec("cifar10", _official(CIFAR10_ARCHIVE), CIFAR_MEAN, CIFAR_STD, "official", "CIFAR-10, torchvision's official archive"))
DATASETS.register("cifar100")(DatasetSpec("cifar100", _official(CIFAR100_ARCHIVE), CIFAR100_MEAN, CIFAR100_STD, "official", "CIFAR-100, torchvision's official archive"))
DATASETS.register("cifar10-jpeg")(DatasetSpec("cifar10-jpeg", _jpeg_copy("cifar10-jpeg"), CIFAR_MEAN, CIFAR_STD, "jpeg-copy", "CIFAR-10 re-encoded as JPEG (ImageFolder); not comparable with official CIFAR-10 numbers"))
DATASETS.register("imagenet")(DatasetSpec("imagenet", _imagenet, IMAGENET_MEAN, IMAGENET_STD, "official", "ImageNet ILSVRC-2012, <root>/imagenet/{train,val}/<wnid>/*.JPEG, streamed (benchmark.imagenet)"))


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    *,
    val_size: int = 0,
    val_seed: int = 0,
    download: bool = True,
    progress: bool = True,
) -> Dataset:
    """Load dataset ``name`` (decoded once into the cache), optionally holding out ``val_size``
    training images (a seeded random subset) as a validation split."""
    spec = DATASETS.get(name)
    root = resolve_data_dir(data_dir)
    cache = resolve_cache_dir(cache_dir, root) / name
    splits, classes, source, src = spec.load(root, cache, download, progress)
    train, val = splits["train"], None
    if val_size:
        if not 0 < val_size < len(train):
            raise ValueError(f"val_size={val_size} must be between 1 and {len(train) - 1} (training images)")
        perm = np.random.default_rng(val_seed).permutation(len(train))
        keep, held = np.sort(perm[val_size:]), np.sort(perm[:val_size])
        val, train = train.take(held), train.take(keep)
    return Dataset(name, classes, train, splits["test"], spec.mean, spec.std, source, str(src), val)


# ---------------------------------------------------------------------------------------------
# Batches formed on the device


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with ``pad`` zero pixels of padding and random horizontal flip, on a whole batch.

    ``images``: uint8 ``[B, H, W, C]`` on any device -> same shape. One gather, no per-image loop.
    """
    b, h, w, _ = images.shape
    dev = images.device
    padded = torch.nn.functional.pad(images, (0, 0, pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (b, 1, 1), device=dev, generator=generator)
    flip = torch.rand((b, 1, 1), device=dev, generator=generator) < 0.5
    rows = torch.arange(h, device=dev).view(1, h, 1) + dy
    cols = torch.arange(w, device=dev).view(1, 1, w)
    cols = torch.where(flip, w - 1 - cols, cols) + dx
    idx = torch.arange(b, device=dev).view(b, 1, 1)
    return padded[idx, rows, cols]


class DeviceData:
    """A split held on the training device as uint8 ``[N, H, W, C]``; yields normalised float batches.

    Batches are ``[B, C, H, W]`` float32 in channels_last memory layout (a permuted NHWC tensor).
    """

    def __init__(self, split: Split, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.images = torch.from_numpy(np.array(split.images, dtype=np.uint8, order="C")).to(self.device)  # copy: the cache is a read-only memmap
        self.labels = torch.from_numpy(np.asarray(split.labels, dtype=np.int64)).to(self.device)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.inv_std = 1.0 / (torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255)

    def __len__(self) -> int:
        return len(self.labels)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, C]`` -> float ``[B, C, H, W]`` (channels_last), mean/std normalised."""
        return (images.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self), device=self.device, generator=generator)

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of an epoch whose shuffled ``order`` is given (drop-last batching)."""
        idx = order[step * batch_size : (step + 1) * batch_size]
        images = self.images[idx]
        if augment:
            images = random_crop_flip(images, generator)
        return self.normalise(images), self.labels[idx]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self), batch_size):
            yield self.normalise(self.images[start : start + batch_size]), self.labels[start : start + batch_size]


def device_data(split, mean: tuple[float, ...], std: tuple[float, ...], device: torch.device | str = "cpu"):
    """What the training loop and evaluation read: ``DeviceData`` for a :class:`Split` held as
    arrays; a streaming split (e.g. ``benchmark.imagenet.StreamingImageFolder``) bound to ``device``."""
    if isinstance(split, Split):
        return DeviceData(split, mean, std, device)
    return split.on_device(mean, std, device)

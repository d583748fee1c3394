"""Image folders streamed from their JPEG files (ImageNet, ILSVRC-2012): :class:`StreamingImageFolder`.

Layout: ``<data root>/imagenet/{train,val}/<wnid>/*.JPEG`` (the validation images sorted into
wnid folders, as ``valprep.sh`` does). Classes are the sorted wnids of ``train``: the standard
class order. ImageNet is too large for the uint8 cache of :mod:`benchmark.data`, so its splits
are :class:`StreamingImageFolder` objects: the interface of :class:`benchmark.data.DeviceData`
(``device``, ``len``, ``steps_per_epoch``, ``epoch_order``, ``train_batch``, ``eval_batches``,
``normalise``) over files decoded by DataLoader workers.

- Training: RandomResizedCrop(224, scale (0.08, 1), ratio (3/4, 4/3)) and a horizontal flip
  (torchvision's sampling rule, PIL bilinear). Evaluation: Resize(256), CenterCrop(224).
- Workers return uint8 ``[B, 224, 224, 3]``; batches are pinned (CUDA), moved with
  ``non_blocking`` and normalised on the device (ImageNet mean / std), as DeviceData does.
- Workers: ``$PLURES_DATA_WORKERS`` (default: the CPU count, at most 8; 0 decodes in the main
  process). The count never changes a result.

Determinism. An epoch's order is ``epoch_order(generator)`` (a randperm from the loop's
per-epoch generator, as in DeviceData). The augmentation of image ``i`` in an epoch is drawn from
a ``random.Random`` seeded by (epoch seed, ``i``), where the epoch seed is a hash of that epoch's
order, itself a function of (run seed, stage, epoch). So the uint8 batch of any step is a pure
function of (run seed, stage, epoch, step): independent of the worker count, prefetching, and of
where a run was interrupted. A resumed run therefore sees bit-identical input batches, and on the
CPU trains bit-identically to an uninterrupted run. Not bit-exact: on CUDA, nondeterministic
kernels (cuDNN algorithm choice, atomics in backward) make the weights differ in the last bits
whether or not a run is resumed; decoding is bit-exact only for the same Pillow / libjpeg build.

ImageNet-C is evaluated by the corrupted-set sources of :mod:`benchmark.data.corrupted.imagenet_c`.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import functional as TF

from ..core.progress import progress_bar
from ..core.runtime import hash_seed
from .base import IMAGE_SUFFIXES, DataError

WORKERS_ENV = "PLURES_DATA_WORKERS"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


def num_workers(default: int | None = None) -> int:
    """DataLoader workers: ``$PLURES_DATA_WORKERS``, else ``default``, else min(8, CPU count)."""
    raw = os.environ.get(WORKERS_ENV)
    if raw is None or raw == "":
        return default if default is not None else min(8, os.cpu_count() or 1)
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"${WORKERS_ENV}={raw!r} must be a whole number >= 0 (0: decode in the main process)")
    return n


def epoch_seed(order: np.ndarray) -> int:
    """The augmentation seed of an epoch: a hash of its order (int64 ``[N]``)."""
    digest = hashlib.blake2b(np.ascontiguousarray(order, dtype=np.int64).tobytes(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


# ---------------------------------------------------------------------------------------------
# Per-image transforms (PIL in, uint8 [H, W, 3] tensor out)


def random_resized_crop_box(width: int, height: int, rng: random.Random, scale: tuple[float, float] = CROP_SCALE,
                            ratio: tuple[float, float] = CROP_RATIO) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a RandomResizedCrop, torchvision's rule (10 tries, then a
    centred crop clipped to ``ratio``) with draws from ``rng``."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(img: Image.Image, size: int, rng: random.Random) -> Image.Image:
    """RandomResizedCrop(size) then a horizontal flip with probability 1/2, drawn from ``rng``."""
    top, left, h, w = random_resized_crop_box(img.width, img.height, rng)
    out = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


def eval_transform(img: Image.Image, size: int = IMAGE_SIZE, resize: int = RESIZE_SIZE) -> Image.Image:
    """Resize(resize) of the shorter side, then CenterCrop(size) (torchvision's functions)."""
    return TF.center_crop(TF.resize(img, resize, antialias=True), [size, size])


def to_uint8(img: Image.Image) -> torch.Tensor:
    """PIL image -> uint8 ``[H, W, 3]``."""
    return torch.from_numpy(np.array(img.convert("RGB"), dtype=np.uint8))


def open_rgb(path: str | Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - truncated or not an image
        raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None


class _Files(TorchDataset):
    """Item ``i`` -> (uint8 ``[S, S, 3]``, label): evaluation transform, or with ``seed`` the
    training augmentation drawn from ``random.Random(hash(seed, i))``."""

    def __init__(self, folder: Path, files: np.ndarray, labels: np.ndarray, size: int, resize: int, seed: int | None) -> None:
        self.folder, self.files, self.labels = str(folder), files, labels
        self.size, self.resize, self.seed = size, resize, seed

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = open_rgb(os.path.join(self.folder, self.files[i].decode()))
        if self.seed is None:
            img = eval_transform(img, self.size, self.resize)
        else:
            img = train_transform(img, self.size, random.Random(hash_seed(self.seed, int(i))))
        return to_uint8(img), int(self.labels[i])


class _Steps(Sampler[list[int]]):
    """The index lists of steps ``start .. steps-1`` of an epoch's ``order`` (drop-last)."""

    def __init__(self, order: np.ndarray, start: int, steps: int, batch_size: int) -> None:
        self.order, self.start, self.steps, self.batch_size = order, start, steps, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(self.start, self.steps):
            yield self.order[s * self.batch_size : (s + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.steps - self.start


@dataclass
class _Stream:
    order: torch.Tensor
    batch_size: int
    augment: bool
    next_step: int
    steps: int
    batches: Iterator


# ---------------------------------------------------------------------------------------------
# The streaming split


class StreamingImageFolder:
    """A split of image files ``<folder>/<relative path>`` decoded on the fly.

    Implements DeviceData's interface: ``train_batch`` -> (float ``[B, 3, S, S]`` normalised,
    int64 ``[B]``) on ``device``; ``eval_batches`` likewise with Resize+CenterCrop. ``files``:
    relative paths as bytes ``[N]`` (a numpy array, so forked workers share it without copying);
    ``labels``: int64 ``[N]``. Call :meth:`on_device` to bind mean, std and device.
    """

    def __init__(self, folder: Path, files: np.ndarray, labels: np.ndarray, *, mean: Sequence[float],
                 std: Sequence[float], device: torch.device | str = "cpu", image_size: int = IMAGE_SIZE,
                 resize_size: int = RESIZE_SIZE, workers: int | None = None) -> None:
        if len(files) != len(labels):
            raise ValueError(f"{len(files)} files but {len(labels)} labels")
        self.folder = Path(folder)
        self.files = np.asarray(files, dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.image_size, self.resize_size = int(image_size), int(resize_size)
        self.workers = workers
        self.device = torch.device(device)
        self.mean_values, self.std_values = tuple(mean), tuple(std)
        self.mean = torch.tensor(self.mean_values, device=self.device).view(1, -1, 1, 1) * 255
        self.inv_std = 1.0 / (torch.tensor(self.std_values, device=self.device).view(1, -1, 1, 1) * 255)
        self._stream: _Stream | None = None
        self._epoch: tuple[torch.Tensor, np.ndarray, int] | None = None

    def _copy(self, files: np.ndarray, labels: np.ndarray, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> "StreamingImageFolder":
        return StreamingImageFolder(self.folder, files, labels, mean=mean, std=std, device=device, image_size=self.image_size,
                                    resize_size=self.resize_size, workers=self.workers)

    def on_device(self, mean: Sequence[float], std: Sequence[float], device: torch.device | str) -> "StreamingImageFolder":
        """This split with batches normalised by ``mean``/``std`` (in [0, 1] units) on ``device``."""
        return self._copy(self.files, self.labels, mean, std, device)

    def take(self, idx: np.ndarray) -> "StreamingImageFolder":
        """The images ``idx`` (e.g. a held-out validation subset), in that order."""
        return self._copy(self.files[idx], self.labels[idx], self.mean_values, self.std_values, self.device)

    def path(self, i: int) -> Path:
        return self.folder / self.files[i].decode()

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"StreamingImageFolder({str(self.folder)!r}, {len(self)} images, {self.image_size}px, device={self.device})"

    # -- batches ---------------------------------------------------------------------------
    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, H, W, C]`` -> float ``[B, C, H, W]`` (channels_last), mean/std normalised."""
        return (images.permute(0, 3, 1, 2).float() - self.mean) * self.inv_std

    def to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A decoded (pinned when CUDA) uint8 batch -> normalised float batch and labels on the device."""
        cuda = self.device.type == "cuda"
        return self.normalise(images.to(self.device, non_blocking=cuda)), labels.to(self.device, non_blocking=cuda)

    def loader(self, dataset: TorchDataset, **kwargs: Any) -> DataLoader:
        """A DataLoader over ``dataset`` with this split's workers, pinned memory on CUDA. Its own
        generator: starting it must not draw from the global RNG, which the training loop seeds
        per step (dropout), or a run resumed mid-epoch would differ from an uninterrupted one."""
        workers = num_workers(self.workers)
        return DataLoader(dataset, num_workers=workers, pin_memory=self.device.type == "cuda",
                          prefetch_factor=4 if workers else None, generator=torch.Generator().manual_seed(0), **kwargs)

    def steps_per_epoch(self, batch_size: int) -> int:
        return len(self) // batch_size

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        return torch.randperm(len(self), device=self.device, generator=generator)

    def _epoch_of(self, order: torch.Tensor) -> tuple[np.ndarray, int]:
        if self._epoch is None or self._epoch[0] is not order:
            cpu = order.detach().cpu().numpy().astype(np.int64)
            self._epoch = (order, cpu, epoch_seed(cpu))
        return self._epoch[1], self._epoch[2]

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator, augment: bool = True,
                    crop_pad: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of the epoch whose ``order`` is given (drop-last batching). ``crop_pad``
        must stay None: streamed images are augmented by random-resized crops, not padded shifts.

        Augmentation is seeded by (epoch seed, image index), not by ``generator`` (workers decode
        steps ahead, before the loop derives their generators); ``generator`` is left untouched.
        Consecutive steps come from one prefetching DataLoader; any other step starts a new one.
        """
        if crop_pad is not None:
            raise ValueError(f"train.crop_pad = {crop_pad!r} applies to images held on the device (CIFAR, Tiny-ImageNet); "
                             f"{self.folder} is streamed and augmented by random-resized crops: leave train.crop_pad unset")
        steps = len(order) // batch_size
        if not 0 <= step < steps:
            raise IndexError(f"step {step} out of range: an epoch of {len(order)} images has {steps} steps of {batch_size}")
        s = self._stream
        if s is None or s.order is not order or s.batch_size != batch_size or s.augment != augment or s.next_step != step:
            self._stream = None  # drops the previous loader (its workers exit)
            cpu, seed = self._epoch_of(order)
            files = _Files(self.folder, self.files, self.labels, self.image_size, self.resize_size, seed if augment else None)
            batches = iter(self.loader(files, batch_sampler=_Steps(cpu, step, steps, batch_size)))
            s = self._stream = _Stream(order, batch_size, augment, step, steps, batches)
        images, labels = next(s.batches)
        s.next_step += 1
        if s.next_step >= s.steps:
            self._stream = None
        return self.to_device(images, labels)

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The split in order, Resize+CenterCrop, as normalised batches of ``batch_size``."""
        files = _Files(self.folder, self.files, self.labels, self.image_size, self.resize_size, None)
        for images, labels in self.loader(files, batch_size=batch_size, shuffle=False):
            yield self.to_device(images, labels)


# ---------------------------------------------------------------------------------------------
# Loading


def scan_class_folders(split_dir: Path, classes: Sequence[str], progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """Relative paths ``<wnid>/<file>`` (bytes ``[N]``, by class then name) and labels ``[N]``."""
    files: list[str] = []
    labels: list[int] = []
    for k, wnid in enumerate(progress_bar(classes, desc=f"listing {split_dir.name}", unit="class", enable=progress)):
        d = split_dir / wnid
        if not d.is_dir():
            continue
        names = sorted(e.name for e in os.scandir(d) if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES)
        files.extend(f"{wnid}/{n}" for n in names)
        labels.extend([k] * len(names))
    return np.array([f.encode() for f in files], dtype=np.bytes_), np.array(labels, dtype=np.int64)

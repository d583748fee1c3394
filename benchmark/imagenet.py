"""ImageNet (ILSVRC-2012) streamed from its JPEG files, and ImageNet-C evaluation.

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

ImageNet-C (``[eval] corruptions``): ``"official"`` reads ``<data root>/imagenet-c``, a path reads
that folder (``<corruption>/<severity>/<wnid>/*.JPEG``, evaluated with CenterCrop(224) only);
``"regenerated"`` corrupts the Resize(256)+CenterCrop(224) validation images on the fly with
:func:`benchmark.corruptions.corrupt` (``profile="imagenet"``, seeded per image) and round-trips
them through JPEG quality 85, as ImageNet-C was made.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import functional as TF

from .data import DATA_ENV, IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD, DataError
from .progress import progress_bar
from .train import derive_seed

if TYPE_CHECKING:  # pragma: no cover
    from .data import Dataset
    from .runner import Environment

WORKERS_ENV = "PLURES_DATA_WORKERS"
IMAGENET_FOLDER = "imagenet"
IMAGENET_C_FOLDER = "imagenet-c"
IMAGE_SIZE = 224
RESIZE_SIZE = 256
JPEG_QUALITY = 85  # ImageNet-C's files were saved at this quality
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
            img = train_transform(img, self.size, random.Random(derive_seed(self.seed, int(i))))
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

    def __init__(self, folder: Path, files: np.ndarray, labels: np.ndarray, *, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, device: torch.device | str = "cpu", image_size: int = IMAGE_SIZE,
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

    def train_batch(self, order: torch.Tensor, step: int, batch_size: int, generator: torch.Generator, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``step`` of the epoch whose ``order`` is given (drop-last batching).

        Augmentation is seeded by (epoch seed, image index), not by ``generator`` (workers decode
        steps ahead, before the loop derives their generators); ``generator`` is left untouched.
        Consecutive steps come from one prefetching DataLoader; any other step starts a new one.
        """
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


def _scan(split_dir: Path, classes: Sequence[str], progress: bool) -> tuple[np.ndarray, np.ndarray]:
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


def load_imagenet(root: Path, progress: bool = True) -> tuple[dict[str, Any], tuple[str, ...], str, Path]:
    """``<root>/imagenet/{train,val}/<wnid>/*`` -> ({"train", "test": StreamingImageFolder}, wnids,
    "official", folder). The validation set is the test split. Raises DataError naming the layout."""
    base = Path(root) / IMAGENET_FOLDER
    layout = (f"{base}/train/<wnid>/*.JPEG and {base}/val/<wnid>/*.JPEG (ILSVRC-2012, the validation images sorted into "
              f"wnid folders, e.g. by valprep.sh)")
    missing = [s for s in ("train", "val") if not (base / s).is_dir()]
    if missing:
        raise DataError(f"ImageNet not found: missing {', '.join(str(base / s) for s in missing)}; expected {layout}. ImageNet "
                        f"cannot be downloaded automatically (https://image-net.org); point --data-dir / ${DATA_ENV} at the "
                        f"folder that holds imagenet/")
    classes = tuple(sorted(p.name for p in (base / "train").iterdir() if p.is_dir()))
    if not classes:
        raise DataError(f"no class folders in {base / 'train'}; expected {layout}")
    val_classes = sorted(p.name for p in (base / "val").iterdir() if p.is_dir())
    unknown = [w for w in val_classes if w not in set(classes)]
    if not val_classes or unknown:
        what = f"class folders {unknown[:10]} that {base / 'train'} lacks" if unknown else "no class folders (a flat folder?)"
        raise DataError(f"{base / 'val'} has {what}; expected {layout}")
    splits: dict[str, Any] = {}
    for split, name in (("train", "train"), ("val", "test")):
        files, labels = _scan(base / split, classes, progress)
        if not len(files):
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base / split}/<wnid>/; expected {layout}")
        splits[name] = StreamingImageFolder(base / split, files, labels)
    return splits, classes, "official", base


# ---------------------------------------------------------------------------------------------
# ImageNet-C


class _CenterCropUint8:
    """ImageNet-C's evaluation transform: CenterCrop(224) only, to uint8 ``[224, 224, 3]``."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_uint8(TF.center_crop(img, [IMAGE_SIZE, IMAGE_SIZE]))


class RegeneratedImageNetC(TorchDataset):
    """Validation images corrupted on the fly: Resize(256), CenterCrop(224), ``corrupt(...,
    profile="imagenet")`` seeded by (seed, corruption, severity, image index), JPEG quality 85.
    Item ``i`` -> (uint8 ``[224, 224, 3]``, label); the same bytes whatever the batching."""

    def __init__(self, split: StreamingImageFolder, corruption: str, severity: int, seed: int) -> None:
        from .corruptions import check_corruption, check_severity

        self.split, self.corruption, self.severity, self.seed = split, check_corruption(corruption), check_severity(severity), int(seed)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from .corruptions import corrupt

        img = eval_transform(open_rgb(self.split.path(i)))
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.corruption, self.severity, int(i)))
        x = corrupt(to_uint8(img)[None], self.corruption, self.severity, generator=g, profile="imagenet")[0]
        buf = io.BytesIO()
        Image.fromarray(x.numpy()).save(buf, format="JPEG", quality=JPEG_QUALITY)
        buf.seek(0)
        return to_uint8(Image.open(buf)), int(self.split.labels[i])


def imagenet_c_folder(ev: dict[str, Any], env: "Environment") -> Path | None:
    """The ImageNet-C folder of ``[eval] corruptions`` (None: regenerated on the fly)."""
    from .data import resolve_data_dir

    kind = ev["corruptions"]
    if kind == "regenerated":
        return None
    folder = resolve_data_dir(env.data_dir) / IMAGENET_C_FOLDER if kind == "official" else Path(kind)
    if not folder.is_dir():
        from .data_corrupted import IMAGENET_C_SOURCE, CorruptedDataError

        raise CorruptedDataError(f"ImageNet-C folder {folder} not found (eval.corruptions = {kind!r}); expected "
                                 f"{folder}/<corruption>/<severity 1-5>/<wnid>/*.JPEG; get it from {IMAGENET_C_SOURCE}")
    return folder


def evaluate_imagenet_c(net: nn.Module, data: "Dataset", ev: dict[str, Any], env: "Environment", *, batch_size: int, precision: str,
                        channels_last: bool, progress: bool = True) -> dict[str, Any]:
    """Metrics per corruption and severity on ImageNet-C, and their means (as
    ``robustness.evaluate_corrupted`` returns them). ``corruption_subset = N``: the same seeded
    sample of N images (in sorted order) in every corruption x severity; 0: all."""
    from .corruptions import corruption_set
    from .data_corrupted import ImageNetC
    from .metrics import MetricAccumulator
    from .robustness import corrupted_result, env_device, evaluate_cells, subset_indices
    from .train import predict_logits

    names = corruption_set(ev["corruption_set"])
    severities = [int(s) for s in ev["corruption_severities"]]
    subset, seed = int(ev["corruption_subset"]), int(ev["corruption_seed"])
    folder = imagenet_c_folder(ev, env)
    if folder is not None:  # fail before evaluating anything when a cell is absent
        missing = [f"{n}/{s}" for n in names for s in severities if not (folder / n / str(s)).is_dir()]
        if missing:
            from .data_corrupted import CorruptedDataError

            raise CorruptedDataError(f"missing severity folder(s) {missing[:10]}{' ...' if len(missing) > 10 else ''} in {folder} "
                                     f"(corruption_set {ev['corruption_set']!r}, severities {severities}); expected "
                                     f"{folder}/<corruption>/<severity>/<wnid>/*.JPEG")
    device = env_device(net)
    clean = data.test if isinstance(data.test, StreamingImageFolder) else None
    if clean is None:
        raise ValueError(f"ImageNet-C evaluation needs the streamed ImageNet validation split, got {type(data.test).__name__}")
    stream = clean.on_device(data.mean, data.std, device)
    class_to_idx = {w: i for i, w in enumerate(data.classes)}
    net.eval()

    def cell(name: str, s: int) -> tuple[dict[str, Any], int]:
        dataset = (RegeneratedImageNetC(clean, name, s, seed) if folder is None
                   else ImageNetC(folder, name, s, class_to_idx, transform=_CenterCropUint8()))
        idx = subset_indices(len(dataset), subset, seed)
        acc = MetricAccumulator()
        with torch.no_grad():
            for images, labels in stream.loader(torch.utils.data.Subset(dataset, idx.tolist()), batch_size=batch_size, shuffle=False):
                x, y = stream.to_device(images, labels)
                acc.update(predict_logits(net, x, precision, channels_last), y)
        return acc.compute(), len(idx)

    per, seen, seconds = evaluate_cells(names, severities, cell, "eval ImageNet-C", progress)
    return corrupted_result(per, ev, source="regenerated" if folder is None else "official", folder=folder,
                            seed=seed if folder is None else None, images=seen, seconds=seconds)

"""ImageNet-C: the released JPEG folders ``<root>/<corruption>/<severity>/<wnid>/<name>.JPEG``
(224x224, JPEG q85; evaluated with CenterCrop(224) only), or the validation images corrupted on the
fly (Resize(256), CenterCrop(224), :func:`benchmark.corruptions.corrupt` with the dataset's
profile, seeded per image, round-tripped through JPEG quality 85, as ImageNet-C was made).

Two sources: ``imagenet-c-files`` (``eval.corruptions = "official"``: ``<data root>/imagenet-c``,
or a folder path) and ``imagenet-c-regenerated``. Both read through the streamed split's DataLoader
(:class:`benchmark.data.streaming.StreamingImageFolder`), which the dataset's test split must be.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import torch
from PIL import Image
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import Subset
from torchvision import transforms
from torchvision.transforms import functional as TF

from ...core.runtime import hash_seed
from ...corruptions import check_corruption, check_severity, corrupt
from ..streaming import IMAGE_SIZE, StreamingImageFolder, eval_transform, open_rgb, to_uint8
from .base import CORRUPTED_SOURCES, CorruptedDataError, CorruptedSource, check_cell_folders, subset_indices

if TYPE_CHECKING:  # pragma: no cover
    from ...core.runtime import Environment
    from ..base import Dataset

IMAGENET_C_SOURCE = "ImageNet-C: https://zenodo.org/record/2235448"
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
JPEG_QUALITY = 85  # ImageNet-C's files were saved at this quality


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


class ImageNetC(TorchDataset):
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


class _CenterCropUint8:
    """ImageNet-C's evaluation transform: CenterCrop(224) only, to uint8 ``[224, 224, 3]``."""

    def __call__(self, img: Image.Image) -> torch.Tensor:
        return to_uint8(TF.center_crop(img, [IMAGE_SIZE, IMAGE_SIZE]))


class RegeneratedImageNetC(TorchDataset):
    """Validation images corrupted on the fly: Resize(256), CenterCrop(224), ``corrupt(...,
    profile)`` (the dataset's profile, ``"imagenet"``) seeded by (seed, corruption, severity, image index), JPEG quality 85.
    Item ``i`` -> (uint8 ``[224, 224, 3]``, label); the same bytes whatever the batching."""

    def __init__(self, split: StreamingImageFolder, corruption: str, severity: int, seed: int, profile: str = "imagenet") -> None:
        self.split, self.corruption, self.severity, self.seed = split, check_corruption(corruption), check_severity(severity), int(seed)
        self.profile = profile

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = eval_transform(open_rgb(self.split.path(i)))
        g = torch.Generator().manual_seed(hash_seed(self.seed, self.corruption, self.severity, int(i)))
        x = corrupt(to_uint8(img)[None], self.corruption, self.severity, generator=g, profile=self.profile)[0]
        buf = io.BytesIO()
        Image.fromarray(x.numpy()).save(buf, format="JPEG", quality=JPEG_QUALITY)
        buf.seek(0)
        return to_uint8(Image.open(buf)), int(self.split.labels[i])


# ---------------------------------------------------------------------------------------------
# The sources


@dataclass
class LoaderSplit:
    """One cell: ``dataset`` (uint8 images and labels) read through the clean stream's DataLoader
    and normalised on its device; what :func:`benchmark.evaluation.evaluate.evaluate` reads."""

    stream: StreamingImageFolder
    dataset: TorchDataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def eval_batches(self, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, labels in self.stream.loader(self.dataset, batch_size=batch_size, shuffle=False):
            yield self.stream.to_device(images, labels)


@dataclass
class ImageNetCSet:
    """ImageNet-C opened for one dataset: the released folder (``folder``) or regenerated cells."""

    clean: StreamingImageFolder
    stream: StreamingImageFolder  # the clean split bound to the device (its loader and normalisation)
    make: Callable[[str, int], TorchDataset]
    subset: int
    subset_seed: int  # eval.corruption_seed: the subset's sample, and the regeneration seed
    folder: Path | None
    source: str
    desc: str = "eval ImageNet-C"

    @property
    def seed(self) -> int | None:
        """The regeneration seed recorded with the result (``None`` for released files)."""
        return self.subset_seed if self.folder is None else None

    def cell(self, corruption: str, severity: int) -> tuple[LoaderSplit, int]:
        dataset = self.make(corruption, severity)
        idx = subset_indices(len(dataset), self.subset, self.subset_seed)  # type: ignore[arg-type]
        return LoaderSplit(self.stream, Subset(dataset, idx.tolist())), len(idx)


def _streamed_test(data: "Dataset") -> StreamingImageFolder:
    """The test split as image files read by DataLoader workers (``path(i)``, ``loader``, ``to_device``)."""
    if not all(hasattr(data.test, a) for a in ("path", "loader", "to_device")):
        raise ValueError(f"ImageNet-C evaluation reads the test split's image files through its DataLoader (a streamed split, "
                         f"benchmark.data.streaming.StreamingImageFolder); dataset {data.name!r} has {type(data.test).__name__}")
    return data.test


def open_files(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> ImageNetCSet:
    """The released folders (or a folder in their layout); every cell asked for must exist."""
    folder = Path(str(folder))
    kind = ev["corruptions"]
    if not folder.is_dir():
        raise CorruptedDataError(f"ImageNet-C folder {folder} not found (eval.corruptions = {kind!r}); expected "
                                 f"{folder}/<corruption>/<severity 1-5>/<wnid>/*.JPEG; get it from {IMAGENET_C_SOURCE}")
    names, severities = check_cell_folders(folder, ev)
    clean = _streamed_test(data)
    class_to_idx = {w: i for i, w in enumerate(data.classes)}

    def make(name: str, s: int) -> TorchDataset:
        return ImageNetC(folder, name, s, class_to_idx, transform=_CenterCropUint8())

    return ImageNetCSet(clean, clean.on_device(data.mean, data.std, device), make, int(ev["corruption_subset"]), int(ev["corruption_seed"]),
                        folder, "official")


def open_regenerated(data: "Dataset", ev: dict[str, Any], folder: Path | None, env: "Environment", device: Any) -> ImageNetCSet:
    """The validation images corrupted on the fly, seeded per image: nothing is stored."""
    clean = _streamed_test(data)
    seed, profile = int(ev["corruption_seed"]), data.spec.corruption_profile

    def make(name: str, s: int) -> TorchDataset:
        return RegeneratedImageNetC(clean, name, s, seed, profile)

    return ImageNetCSet(clean, clean.on_device(data.mean, data.std, device), make, int(ev["corruption_subset"]), seed, None, "regenerated")


CORRUPTED_SOURCES.register("imagenet-c-files")(CorruptedSource(
    "imagenet-c-files", open_files, "ImageNet-C JPEG folders <corruption>/<severity>/<wnid>/*.JPEG (the release or a folder in its layout)"))
CORRUPTED_SOURCES.register("imagenet-c-regenerated")(CorruptedSource(
    "imagenet-c-regenerated", open_regenerated, "validation images corrupted on the fly (seeded per image, JPEG q85)"))

"""ImageNet (ILSVRC-2012): ``<data root>/imagenet/{train,val}/<wnid>/*.JPEG`` (the validation images
sorted into wnid folders, as ``valprep.sh`` does), streamed from the files
(:class:`benchmark.data.streaming.StreamingImageFolder`: too large for the uint8 cache).
Classes are the sorted wnids of ``train``. The validation set is the test split.

Corrupted sets: ImageNet-C, the released JPEG folders or regenerated on the fly with the ImageNet
profile (:mod:`benchmark.data.corrupted.imagenet_c`); its mCE is relative to AlexNet's published
errors, as in Hendrycks and Dietterich (2019).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import DATA_ENV, DATASETS, IMAGE_SUFFIXES, DataError, DatasetSpec, PublishedErrors

IMAGENET_FOLDER = "imagenet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ImageNet-C: AlexNet's error averaged over the 5 severities (Hendrycks & Dietterich, 2019), and its
# clean error (a third-party figure). mCE on ImageNet-C is relative to these.
ALEXNET_SOURCE = "Hendrycks & Dietterich (2019), ImageNet-C AlexNet errors"
ALEXNET_IMAGENET_C_ERROR: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}
ALEXNET_CLEAN_ERROR = 0.4345
ALEXNET = PublishedErrors(f"AlexNet ({ALEXNET_SOURCE})", ALEXNET_IMAGENET_C_ERROR, ALEXNET_CLEAN_ERROR)


def load_imagenet(root: Path, progress: bool = True) -> tuple[dict[str, Any], tuple[str, ...], str, Path]:
    """``<root>/imagenet/{train,val}/<wnid>/*`` -> ({"train", "test": StreamingImageFolder}, wnids,
    "official-val", folder). The validation set is the test split. Raises DataError naming the layout."""
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
    from ..streaming import StreamingImageFolder, scan_class_folders  # torch: only when ImageNet is loaded

    splits: dict[str, Any] = {}
    for split, name in (("train", "train"), ("val", "test")):
        files, labels = scan_class_folders(base / split, classes, progress)
        if not len(files):
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {base / split}/<wnid>/; expected {layout}")
        splits[name] = StreamingImageFolder(base / split, files, labels, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return splits, classes, "official-val", base


def _load(root: Path, cache: Path, download: bool, progress: bool):
    return load_imagenet(root, progress)  # streamed from the JPEG files: no uint8 cache


DATASETS.register("imagenet")(DatasetSpec(
    "imagenet", _load, IMAGENET_MEAN, IMAGENET_STD, "official-val",
    "ImageNet ILSVRC-2012, <root>/imagenet/{train,val}/<wnid>/*.JPEG, streamed (benchmark.data.streaming)",
    corrupted={"official": "imagenet-c-files", "regenerated": "imagenet-c-regenerated"}, official_corrupted_folder="imagenet-c",
    corruption_profile="imagenet", mce_reference=ALEXNET, ood=False))

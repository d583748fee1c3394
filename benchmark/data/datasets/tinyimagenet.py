"""Tiny-ImageNet-200 (Le and Yang 2015): 200 ImageNet classes, 64x64 RGB JPEGs, 500 training and 50
validation images per class; and its validation images resized to 32x32 as an OOD set for CIFAR-10.

Read from the two tarballs ``tiny-imagenet-200-train.tar.gz`` and ``tiny-imagenet-200-val.tar.gz``
in the data root (checked by sha256), or from their extracted folders ``tiny-imagenet-200-train/``
and ``tiny-imagenet-200-val/`` there:

- ``tiny-imagenet-200-train/train/<wnid>/<wnid>_<N>.JPEG`` (+ ``wnids.txt``, ``words.txt``),
- ``tiny-imagenet-200-val/val/<wnid>/val_<N>.JPEG`` (+ ``val_annotations.txt``, ``wnids.txt``,
  ``words.txt``), ``N`` the line of ``val_annotations.txt``.

The train split is the 100,000 training images (by class, then N); the test split is the 10,000
validation images in the release's order (``val_0``, ``val_1``, ...): the release's own test split
has no labels. Classes are the wnids in sorted order (the label of ``n01443537`` is 0), named by
their ``words.txt`` entry. Grayscale images (1,821 train, 168 val) are converted to RGB by
repeating the channel (PIL ``convert("RGB")``). Everything is decoded once into the uint8 cache and
memory-mapped afterwards (``<cache>/tinyimagenet/``, about 1.2 GB; ``<cache>/tinyimagenet32/``).
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ...core.progress import progress_bar
from ..base import DATA_ENV, DATASETS, OOD_SETS, DataError, DatasetSpec, OODSpec, Split, cached_splits, sha256sum

IMAGE_SIZE = 64
OOD_SIZE = 32
# eval.corruptions -> corrupted-set source (benchmark.data.corrupted.tinyimagenet_c): the released
# Tiny-ImageNet-C folders, or the val images corrupted with the "tinyimagenet" profile
TINY_C_SOURCES = {"official": "tinyimagenet-c-files", "regenerated": "tinyimagenet-c-regenerated"}


@dataclass(frozen=True)
class TinyPart:
    """One of the two tarballs (or its extracted folder) in the data root."""

    split: str  # the image folder inside: "train" or "val"
    filename: str
    folder: str
    sha256: str
    count: int  # images in the complete release
    pattern: str  # file name of one image; group 1 is N

    def layout(self, root: Path) -> str:
        inner = "<wnid>/<wnid>_<N>.JPEG" if self.split == "train" else "<wnid>/val_<N>.JPEG"
        return f"{root / self.filename} or the folder {root / self.folder}/ ({self.folder}/{self.split}/{inner}, words.txt)"


# sha256 of the tarballs as packed for plures (../shared/data/README.md: the release's bytes, from
# the public repository seshuad/IMagenet, commit 153dbc1)
TRAIN = TinyPart("train", "tiny-imagenet-200-train.tar.gz", "tiny-imagenet-200-train",
                 "05a011c707e91556c960422ca7384f9839a63041e983ceb904a2473f17ed77e8", 100_000, r"^(n\d+)_(\d+)\.jpe?g$")
VAL = TinyPart("val", "tiny-imagenet-200-val.tar.gz", "tiny-imagenet-200-val",
               "105bb942ac38acb0287c1a721bc2430b86423c7cb3cfde4e30cb949787ac1549", 10_000, r"^val_(\d+)\.jpe?g$")
RELEASE = "Tiny-ImageNet-200 (http://cs231n.stanford.edu/tiny-imagenet-200.zip, the train and val folders)"

# Mean and standard deviation per channel of the 100,000 training images (grayscale ones as RGB),
# over every pixel, in [0, 1]: computed once from the uint8 cache with
# ``x = np.load(".../tinyimagenet/train_images.npy", mmap_mode="r")`` and float64 sums per channel
# (population std over all pixels). The mean is the one commonly quoted for Tiny-ImageNet; the std is
# larger than the often quoted (0.2302, 0.2265, 0.2262), which averages per-image standard deviations.
TINY_MEAN = (0.4802, 0.4481, 0.3975)
TINY_STD = (0.2764, 0.2689, 0.2816)


def find_part(root: Path, part: TinyPart) -> Path:
    """The extracted folder if present, else the tarball; DataError naming both when neither is."""
    for candidate in (root / part.folder, root / part.filename):
        if candidate.exists():
            return candidate
    raise DataError(f"Tiny-ImageNet {part.split} split not found: expected {part.layout(root)}. It cannot be downloaded "
                    f"automatically here; point --data-dir / ${DATA_ENV} at the folder that holds it (on the plures build "
                    f"machines: ../shared/data). Source: {RELEASE}.")


def check_tarball(path: Path, part: TinyPart, expected: str | None = "official") -> None:
    """A tarball's sha256 must be the published one (``expected=None`` skips the check)."""
    want = part.sha256 if expected == "official" else expected
    if want is None:
        return
    got = sha256sum(path)
    if got != want:
        raise DataError(f"{path} is corrupt or incomplete: sha256 {got}, expected {want}. Delete it and copy "
                        f"{part.filename} again (it is one of the two Tiny-ImageNet tarballs of the plures data folder; "
                        f"or put the extracted folder {part.folder}/ in its place).")


# ---------------------------------------------------------------------------------------------
# Reading one part: (wnid, N, where, read bytes) per image, and its text files


@dataclass
class _PartFiles:
    images: list[tuple[str, int, str, bytes]]  # (wnid, N, where, raw JPEG)
    texts: dict[str, str]  # words.txt, wnids.txt, val_annotations.txt when present


def _image_key(part: TinyPart, wnid: str, name: str, where: str) -> int | None:
    """N of ``<wnid>/<name>``; None for a file that is not an image; DataError for an image named otherwise."""
    if not name.lower().endswith((".jpeg", ".jpg")):
        return None
    m = re.match(part.pattern, name, flags=re.IGNORECASE)
    if m is None or (part.split == "train" and m.group(1) != wnid):
        raise DataError(f"unexpected image name {where}: in {part.folder}/{part.split}/{wnid}/ the images are named "
                        f"{'<wnid>_<N>.JPEG' if part.split == 'train' else 'val_<N>.JPEG'}")
    return int(m.group(m.lastindex))


_TEXTS = ("words.txt", "wnids.txt", "val_annotations.txt")


def _read_folder(src: Path, part: TinyPart) -> _PartFiles:
    base = src / part.split
    if not base.is_dir():
        raise DataError(f"missing folder {base}: expected {part.layout(src.parent)}")
    images = []
    for cls_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(cls_dir.iterdir()):
            n = _image_key(part, cls_dir.name, f.name, str(f))
            if n is not None:
                images.append((cls_dir.name, n, str(f), f.read_bytes()))
    texts = {t: (src / t).read_text() for t in _TEXTS if (src / t).is_file()}
    return _PartFiles(images, texts)


def _read_tarball(src: Path, part: TinyPart, progress: bool) -> _PartFiles:
    images, texts = [], {}
    try:
        with tarfile.open(src, "r:gz") as tar:
            for member in progress_bar(tar, desc=f"reading {src.name}", unit="file", enable=progress):
                if not member.isfile():
                    continue
                parts = Path(member.name).parts
                if len(parts) == 2 and parts[1] in _TEXTS:
                    texts[parts[1]] = tar.extractfile(member).read().decode("utf-8")
                elif len(parts) == 4 and parts[1] == part.split:
                    where = f"{src}:{member.name}"
                    n = _image_key(part, parts[2], parts[3], where)
                    if n is not None:
                        images.append((parts[2], n, where, tar.extractfile(member).read()))
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{src} is not a readable .tar.gz ({type(exc).__name__}: {exc}); delete it and copy {part.filename} again") from None
    return _PartFiles(images, texts)


def read_part(src: Path, part: TinyPart, progress: bool = True, sha256: str | None = "official") -> _PartFiles:
    """The images and text files of a part (a tarball, checked by sha256 first, or its folder)."""
    src = Path(src)
    if src.is_dir():
        files = _read_folder(src, part)
    else:
        check_tarball(src, part, sha256)
        files = _read_tarball(src, part, progress)
    if not files.images:
        raise DataError(f"no images found in {src}: expected {part.layout(src.parent)}")
    return files


def parse_words(text: str) -> dict[str, str]:
    """``words.txt``: ``<wnid>\\t<names>`` per line -> {wnid: names}."""
    out = {}
    for line in text.splitlines():
        wnid, _, names = line.partition("\t")
        if wnid.strip() and names.strip():
            out[wnid.strip()] = names.strip()
    return out


def class_names(wnids: tuple[str, ...], words: dict[str, str], where: str) -> tuple[str, ...]:
    missing = [w for w in wnids if w not in words]
    if missing:
        raise DataError(f"{where}: words.txt has no name for wnid(s) {missing[:10]}")
    return tuple(words[w] for w in wnids)


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_rgb(raw: bytes, where: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """One JPEG -> uint8 [size, size, 3] (grayscale and other modes converted to RGB)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
        raise DataError(f"cannot decode image {where}: {exc}") from None
    if arr.shape != (size, size, 3):
        raise DataError(f"image {where} is {arr.shape[1]}x{arr.shape[0]}; every Tiny-ImageNet image is {size}x{size}")
    return arr


def _decode_all(entries: list[tuple[str, int, str, bytes]], desc: str, progress: bool,
                transform: Callable[[np.ndarray], np.ndarray] | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Decode into one preallocated array (no list of 100,000 arrays and a stacked copy)."""
    out = np.empty((len(entries), size, size, 3), dtype=np.uint8)
    for i, (_, _, where, raw) in enumerate(progress_bar(entries, desc=desc, unit="img", enable=progress)):
        img = decode_rgb(raw, where)
        out[i] = transform(img) if transform is not None else img
    return out


def _ordered(files: _PartFiles, part: TinyPart) -> list[tuple[str, int, str, bytes]]:
    key: Callable[[tuple[str, int, str, bytes]], tuple] = (lambda e: (e[0], e[1])) if part.split == "train" else (lambda e: (e[1], e[0]))
    entries = sorted(files.images, key=key)
    seen: dict[tuple, str] = {}
    for e in entries:  # val_<N> must be unique across class folders
        k = (e[0], e[1]) if part.split == "train" else (e[1],)
        if k in seen:
            raise DataError(f"duplicate image index: {seen[k]} and {e[2]}")
        seen[k] = e[2]
    return entries


def _check_val_annotations(files: _PartFiles, entries: list[tuple[str, int, str, bytes]]) -> None:
    """Each val image's folder must be the wnid val_annotations.txt gives it (when the file is present)."""
    text = files.texts.get("val_annotations.txt")
    if text is None:
        return
    truth = {}
    for line in text.splitlines():
        cols = line.split("\t")
        if len(cols) >= 2:
            m = re.match(VAL.pattern, cols[0], flags=re.IGNORECASE)
            if m:
                truth[int(m.group(1))] = cols[1]
    bad = [(where, wnid, truth[n]) for wnid, n, where, _ in entries if n in truth and truth[n] != wnid]
    if bad:
        where, got, want = bad[0]
        raise DataError(f"{len(bad)} val image(s) lie in another class folder than val_annotations.txt says, e.g. {where} "
                        f"is in {got}/ but annotated {want}")


def read_tinyimagenet(root: Path, progress: bool = True) -> tuple[dict[str, Split], tuple[str, ...]]:
    """Decode both parts: ({"train", "test"}, class names in sorted-wnid order)."""
    train_files = read_part(find_part(root, TRAIN), TRAIN, progress)
    val_files = read_part(find_part(root, VAL), VAL, progress)
    wnids = tuple(sorted({e[0] for e in train_files.images}))
    listed = train_files.texts.get("wnids.txt")
    if listed is not None and sorted(listed.split()) != list(wnids):
        raise DataError(f"the class folders of {TRAIN.folder}/train ({len(wnids)}) differ from its wnids.txt ({len(listed.split())} wnids)")
    unknown = sorted({e[0] for e in val_files.images} - set(wnids))
    if unknown:
        raise DataError(f"{VAL.folder}/val has class folders {unknown[:10]} that {TRAIN.folder}/train lacks")
    words = parse_words(train_files.texts.get("words.txt") or val_files.texts.get("words.txt") or "")
    names = class_names(wnids, words, f"{root}/{TRAIN.folder}")
    index = {w: i for i, w in enumerate(wnids)}
    splits = {}
    for name, files, part in (("train", train_files, TRAIN), ("test", val_files, VAL)):
        entries = _ordered(files, part)
        if part is VAL:
            _check_val_annotations(files, entries)
        labels = np.array([index[e[0]] for e in entries], dtype=np.int64)
        splits[name] = Split(_decode_all(entries, f"decoding Tiny-ImageNet {part.split}", progress), labels)
        files.images.clear()  # free the JPEG bytes before the next part
    return splits, names


def _load(root: Path, cache: Path, download: bool, progress: bool):
    sources = [find_part(root, TRAIN), find_part(root, VAL)]
    splits, classes, _ = cached_splits(cache, sources, lambda: read_tinyimagenet(root, progress))
    return splits, classes, "official-val", sources[0].parent


DATASETS.register("tinyimagenet")(DatasetSpec(
    "tinyimagenet", _load, TINY_MEAN, TINY_STD, "official-val",
    "Tiny-ImageNet-200, 64x64, 200 classes: trained on the 100,000 train images, tested on the 10,000 val images "
    "(the release's test split is unlabelled)",
    corrupted=TINY_C_SOURCES, official_corrupted_folder="Tiny-ImageNet-C", corruption_profile="tinyimagenet", ood=False))


# ---------------------------------------------------------------------------------------------
# The OOD set for CIFAR: the val images at 32x32


def downscale_box(img: np.ndarray, size: int = OOD_SIZE) -> np.ndarray:
    """uint8 [64, 64, 3] -> [size, size, 3] by area averaging: PIL's ``Image.reduce(64 // size)``, which
    gives each output pixel the mean of its k x k block, rounded half up (for 64 -> 32:
    ``(sum of the 2x2 block + 2) // 4``).

    Why this filter: for an integer factor the block mean is the exact antialiased downscale (every
    input pixel weighs the same, no ringing as with LANCZOS, no extra blur as with bilinear's wider
    support), and it is one pass; ``Image.resize(..., Image.BOX)`` computes the same filter in two
    separable passes rounding to uint8 in between, off by one in about a third of the values."""
    from PIL import Image

    factor, rest = divmod(img.shape[0], size)
    if rest or img.shape[0] != img.shape[1]:
        raise ValueError(f"cannot downscale a {img.shape[1]}x{img.shape[0]} image to {size}x{size} by an integer factor")
    return np.asarray(Image.fromarray(img).reduce(factor), dtype=np.uint8)


def read_tinyimagenet32(root: Path, progress: bool = True) -> tuple[dict[str, Split], tuple[str, ...]]:
    """The val images (release order) downscaled to 32x32: ({"test"}, sorted wnids)."""
    files = read_part(find_part(root, VAL), VAL, progress)
    entries = _ordered(files, VAL)
    _check_val_annotations(files, entries)
    wnids = tuple(sorted({e[0] for e in entries}))
    index = {w: i for i, w in enumerate(wnids)}
    images = _decode_all(entries, "decoding Tiny-ImageNet val at 32x32", progress, transform=downscale_box, size=OOD_SIZE)
    return {"test": Split(images, np.array([index[e[0]] for e in entries], dtype=np.int64))}, wnids


def load_tinyimagenet32(root: Path, cache: Path) -> np.ndarray:
    """uint8 [10000, 32, 32, 3], decoded once into ``cache`` and memory-mapped afterwards."""
    src = find_part(root, VAL)
    splits, _, _ = cached_splits(cache, src, lambda: read_tinyimagenet32(root, progress=True))
    return splits["test"].images


# Tiny-ImageNet classes that fall under a CIFAR-10 class (our reading of the 200 words.txt names; OpenOOD
# (Yang et al. 2022, "OpenOOD: Benchmarking Generalized OOD Detection") discusses this overlap of its
# TIN near-OOD set with CIFAR). None is removed: this set is all 10,000 val images.
CIFAR10_OVERLAP = {
    "automobile": ("beach wagon", "convertible", "limousine", "sports car"),
    "bird": ("goose", "black stork", "king penguin", "albatross"),
    "cat": ("tabby", "Persian cat", "Egyptian cat"),
    "dog": ("Chihuahua", "Yorkshire terrier", "golden retriever", "Labrador retriever", "German shepherd", "standard poodle"),
    "frog": ("bullfrog", "tailed frog"),
    "ship": ("gondola", "lifeboat"),
    "truck": ("moving van", "police van"),
}

OOD_SETS.register("tinyimagenet32")(OODSpec(
    "tinyimagenet32", load_tinyimagenet32,
    "Tiny-ImageNet-200's 10,000 val images downscaled 64->32 by 2x2 block means (PIL Image.reduce(2), rounded half up): "
    "a near-OOD set for CIFAR-10 (OpenOOD uses Tiny-ImageNet so). It shares concepts with CIFAR-10, kept in: "
    + "; ".join(f"{c}: {', '.join(v)}" for c, v in CIFAR10_OVERLAP.items())
    + f" ({sum(map(len, CIFAR10_OVERLAP.values()))} of 200 classes, 50 images each)",
    uses_cache=True))

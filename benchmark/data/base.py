"""Datasets: the interface every dataset plugs into, the decoded-data cache and the data root.

A dataset is one module in :mod:`benchmark.data.datasets` (or a plug-in module) that registers a
:class:`DatasetSpec` with ``DATASETS.register(name)``: how to load its splits, its normalisation,
which corrupted-set sources evaluate it (``eval.corruptions``), with which corruption profile,
which reference its mCE is relative to, and whether its test split serves as an OOD set. The
harness asks the spec, never the name.

Array datasets are decoded once into ``<cache>/<dataset>/<split>_{images,labels}.npy`` (uint8
``[N, H, W, 3]`` and int64 ``[N]``) and memory-mapped afterwards (:func:`cached_splits`); an epoch
never decodes an image.

The data root comes from ``--data-dir``, else ``$PLURES_DATA_DIR``, else ``./data``; the cache from
``--cache-dir``, else ``$PLURES_CACHE_DIR``, else ``./data/cache`` (never inside the data root,
which may be shared or read-only).

This module imports neither torch nor a dataset: reading the registry (e.g. for a leaderboard's
mCE reference) stays light.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.io import atomic_save_npy, atomic_write_json
from ..core.registry import Registry, import_package, unknown

DATA_ENV = "PLURES_DATA_DIR"
CACHE_ENV = "PLURES_CACHE_DIR"
CACHE_VERSION = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class DataError(RuntimeError):
    """Missing or corrupt data; the message says what was expected where and how to get it."""


SHARED_DATA = Path("..") / "shared" / "data"  # a data folder shared beside the checkout (the plures build machines' layout)
DATA_RULE = f"--data-dir, else ${DATA_ENV}, else {SHARED_DATA} when that folder exists, else ./data"


def data_dir_source(data_dir: str | os.PathLike | None = None) -> tuple[Path, str]:
    """The data root and where it came from, by the one rule every entry point uses (:data:`DATA_RULE`)."""
    if data_dir:
        return Path(data_dir).expanduser(), "--data-dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    if SHARED_DATA.is_dir():
        return SHARED_DATA, f"{SHARED_DATA} (it exists)"
    return Path("data"), "the default ./data"


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: ``data_dir`` if given, else ``$PLURES_DATA_DIR``, else ``../shared/data`` when that folder
    exists, else ``./data`` (:data:`DATA_RULE`; ``make`` follows the same rule)."""
    return data_dir_source(data_dir)[0]


def resolve_cache_dir(cache_dir: str | os.PathLike | None, data_dir: Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$PLURES_CACHE_DIR``, else ``./data/cache``.

    Never inside the data root by default: data roots are often read-only or shared (and a
    permission check cannot tell, since root may write anywhere).
    """
    return Path(cache_dir or os.environ.get(CACHE_ENV) or Path("data") / "cache").expanduser()



def file_digest(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (``algorithm``: a :func:`hashlib.new` name), read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "md5", chunk)


def sha256sum(path: Path, chunk: int = 1 << 20) -> str:
    return file_digest(path, "sha256", chunk)


@dataclass(frozen=True)
class Split:
    """One split held as arrays: images uint8 ``[N, H, W, 3]`` (often a memmap), labels int64 ``[N]``."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def take(self, idx: np.ndarray) -> "Split":
        return Split(self.images[idx], self.labels[idx])

    def on_device(self, mean: tuple[float, ...], std: tuple[float, ...], device: Any = "cpu") -> Any:
        """This split held on ``device`` as a :class:`benchmark.data.device.DeviceData`."""
        from .device import DeviceData  # torch is imported only by what trains and evaluates

        return DeviceData(self, mean, std, device)


@dataclass(frozen=True)
class Dataset:
    name: str
    classes: tuple[str, ...]
    train: Split
    test: Split
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str  # "official", "official-val" (the release's labelled val split is the test split), "jpeg-copy", ...
    source_path: str
    val: Split | None = None
    # the subsets taken of the full splits (:func:`with_train_subset`): split -> facts (size, of, seed, stratified)
    subsets: dict[str, dict[str, Any]] | None = None
    # train/test/val may instead be streaming splits (benchmark.data.streaming.StreamingImageFolder); every
    # split has len(), image_size, take(idx) and on_device(mean, std, device).

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.train.image_size)

    @property
    def spec(self) -> "DatasetSpec":
        return dataset_spec(self.name)



# ---------------------------------------------------------------------------------------------
# The cache


def _source_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size if path.is_file() else None, "mtime": int(st.st_mtime), "version": CACHE_VERSION}


def cached_splits(cache: Path, source: Path | Sequence[Path], read: Callable[[], tuple[dict[str, Split], tuple[str, ...]]]) -> tuple[dict[str, Split], tuple[str, ...], bool]:
    """Memory-mapped splits from ``cache``, building them with ``read()`` if absent or stale.

    ``source``: the file or folder the splits are read from, or several (e.g. one archive per
    split); a change of any of them (path, size, mtime) rebuilds the cache. The files are written
    atomically, ``meta.json`` last, so a crash while building leaves no cache that looks valid.
    Returns (splits, classes, hit) where ``hit`` tells whether the cache was reused.
    """
    meta_path = cache / "meta.json"
    fingerprint: Any = _source_fingerprint(source) if isinstance(source, (str, os.PathLike)) else [_source_fingerprint(Path(s)) for s in source]
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
# The dataset interface and its registry


@dataclass(frozen=True)
class PublishedErrors:
    """A published model's corruption errors: the mCE reference of a dataset whose papers use one
    (ImageNet-C: AlexNet). ``errors``: corruption -> error averaged over the five severities."""

    label: str
    errors: dict[str, float]
    clean_error: float


# (splits {"train", "test"}, class names, source kind, source path) = load(root, cache, download, progress)
Loader = Callable[[Path, Path, bool, bool], "tuple[dict[str, Any], tuple[str, ...], str, Path]"]


@dataclass(frozen=True)
class DatasetSpec:
    """What the harness needs to know of a dataset; every field has a meaning for every dataset.

    - ``corrupted``: ``eval.corruptions`` kind -> registered corrupted-set source
      (:mod:`benchmark.data.corrupted`): ``"official"`` (also used for a folder path) and
      ``"regenerated"``; a kind that is absent is not available for this dataset.
    - ``official_corrupted_folder``: the released corrupted set's folder under the data root.
    - ``corruption_profile``: the corruption parameters regenerated sets use (``cifar``, ``imagenet``).
    - ``mce_reference``: published errors that mCE is relative to; ``None``: the leaderboard block's
      deterministic runs on the same corrupted data.
    - ``ood``: its test split may serve as an out-of-distribution set for other datasets.
    """

    name: str
    load: Loader
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str
    description: str
    corrupted: dict[str, str] | None = None
    official_corrupted_folder: str | None = None
    corruption_profile: str = "cifar"
    mce_reference: PublishedErrors | None = None
    ood: bool = True

    def corrupted_source(self, kind: str) -> str:
        """The corrupted-set source evaluating ``eval.corruptions = kind`` (a folder path counts as
        ``"official"``: a folder in the official layout)."""
        key = kind if kind in ("official", "regenerated") else "official"
        sources = self.corrupted or {}
        if key not in sources:
            from ..core.config import ConfigError

            where = f"a folder path ({kind!r})" if key != kind else repr(kind)
            raise ConfigError(f"eval.corruptions = {where} is not available for dataset {self.name!r}; "
                             f"valid choices: none{''.join(', ' + k for k in sorted(sources))}{', or a folder path' if 'official' in sources else ''}")
        return sources[key]


@dataclass(frozen=True)
class OODSpec:
    """An out-of-distribution set that is not a registered dataset (e.g. SVHN's test split):
    ``load(data_root) -> uint8 [N, H, W, 3]``, raising DataError when absent. With ``uses_cache``
    it is called as ``load(data_root, cache_folder)``, ``cache_folder`` being ``<cache>/<name>``,
    for a set decoded once and memory-mapped afterwards (:func:`cached_splits`)."""

    name: str
    load: Callable[..., np.ndarray]
    description: str
    uses_cache: bool = False


DATASETS: Registry[DatasetSpec] = Registry("dataset")
OOD_SETS: Registry[OODSpec] = Registry("OOD set")


def load_datasets() -> None:
    """Import the dataset modules of :mod:`benchmark.data.datasets` (idempotent)."""
    import_package(f"{__package__}.datasets")


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; an unknown name raises listing the valid ones."""
    load_datasets()
    return DATASETS.get(name)


def dataset_names() -> list[str]:
    load_datasets()
    return DATASETS.names()


def ood_names() -> list[str]:
    """Valid ``eval.ood`` entries: the OOD-only sets, then every dataset usable as one."""
    load_datasets()
    return [*OOD_SETS.names(), *(n for n in DATASETS.names() if DATASETS.get(n).ood)]


def check_ood_names(names: list[str]) -> None:
    bad = sorted(set(names) - set(ood_names()))
    if bad:
        from ..core.config import ConfigError

        raise ConfigError(f"unknown OOD dataset(s) {bad} in eval.ood; valid choices: {', '.join(ood_names())}")


def ood_images(name: str, data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None) -> np.ndarray:
    """Test images ``[N, H, W, 3]`` uint8 of OOD set ``name``: an OOD-only set, or a registered
    dataset's test split. Raises DataError when absent."""
    load_datasets()
    if name in OOD_SETS:
        spec = OOD_SETS.get(name)
        root = resolve_data_dir(data_dir)
        return spec.load(root, resolve_cache_dir(cache_dir, root) / name) if spec.uses_cache else spec.load(root)
    if name not in DATASETS or not DATASETS.get(name).ood:
        raise unknown("OOD dataset", name, ood_names())
    return np.asarray(load_dataset(name, data_dir, cache_dir, download=False, progress=False).test.images)


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
    spec = dataset_spec(name)
    root, why = data_dir_source(data_dir)
    cache = resolve_cache_dir(cache_dir, root) / name
    try:
        splits, classes, source, src = spec.load(root, cache, download, progress)
    except DataError as exc:
        raise DataError(f"{exc}\n  (data root {root}, from {why}; the rule: {DATA_RULE})") from None
    data = Dataset(name, classes, splits["train"], splits["test"], spec.mean, spec.std, source, str(src), None)
    return hold_out_validation(data, val_size, val_seed) if val_size else data


def hold_out_validation(data: Dataset, val_size: int, val_seed: int) -> Dataset:
    """``data`` with ``val_size`` of its training images (a seeded random subset) held out as its validation split."""
    train = data.train
    if not 0 < val_size < len(train):
        raise ValueError(f"val_size={val_size} must be between 1 and {len(train) - 1} (training images)")
    perm = np.random.default_rng(val_seed).permutation(len(train))
    keep, held = np.sort(perm[val_size:]), np.sort(perm[:val_size])
    return dataclasses.replace(data, train=train.take(keep), val=train.take(held))



# ---------------------------------------------------------------------------------------------
# Subsets (``data.train_subset``, ``eval.test_subset``)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``size`` examples, stratified by class.

    Every class gets an equal share; the remainder goes, one each, to the classes first in a
    seeded order; a class with fewer examples than its share gives all of them and the shortfall
    is spread over the others the same way. ``size`` 0 or at least ``len(labels)``: every index.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if size <= 0 or size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    order = rng.permutation(len(classes))  # which classes take the remainder first
    left = size
    while left > 0:
        open_classes = order[quota[order] < counts[order]]
        share, extra = divmod(left, len(open_classes))
        for rank, c in enumerate(open_classes):
            take = min(share + (rank < extra), int(counts[c] - quota[c]))
            quota[c] += take
            left -= take
    by_class = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    chosen = [rng.permutation(by_class[s : s + c])[:q] for s, c, q in zip(starts, counts, quota) if q]
    return np.sort(np.concatenate(chosen))


def subset_facts(size: int, full: int, seed: int) -> dict[str, Any]:
    """What a record states of one subset: its size, the full split's size, the seed, the sampling."""
    return {"size": int(size), "of": int(full), "seed": int(seed), "stratified": True}


def check_subset(key: str, size: int, full: int, what: str) -> None:
    """A subset must be smaller than its split (0 means all): ConfigError naming the key and the split's size."""
    if size and size >= full:
        from ..core.config import ConfigError

        raise ConfigError(f"{key} = {size} is not valid: {what} has {full} images; use a smaller number, or 0 for all of them")


def check_data_sizes(resolved: dict[str, Any], train_images: int, test_images: int) -> None:
    """ConfigError when run ``resolved``'s validation hold-out, training or test subset, or its batch does
    not fit a dataset of ``train_images`` training (before any hold-out) and ``test_images`` test images:
    the one check of a run's sizes, made by the run once its data is read and by a sweep's launch before it
    submits anything."""
    from ..core.config import ConfigError

    name = resolved["run"]["dataset"]
    train, val = train_images, int(resolved["data"]["val_size"])
    if val and not 0 < val < train:
        raise ConfigError(f"data.val_size = {val} is not valid: the training split of {name} has {train} images")
    train -= val
    held = f" ({val} of its images held out for validation)" if val else ""
    check_subset("data.train_subset", int(resolved["data"]["train_subset"]), train, f"the training split of {name}{held}")
    check_subset("eval.test_subset", int(resolved["eval"]["test_subset"]), test_images, f"the test split of {name}")
    train = int(resolved["data"]["train_subset"]) or train
    batch = resolved["train"]["batch_size"]
    if batch > train:
        raise ConfigError(f"train.batch_size = {batch} is not valid: it exceeds the {train} training images of {name}")


def take_subset(split: Any, size: int, seed: int) -> Any:
    """``split`` restricted to :func:`stratified_subset` of its labels (the split itself for 0)."""
    if not size:
        return split
    return split.take(stratified_subset(np.asarray(split.labels), size, seed))


def with_train_subset(data: Dataset, size: int, seed: int) -> Dataset:
    """``data`` with its training split replaced by a seeded, stratified sample of ``size`` images
    (0: unchanged); the validation hold-out, if any, was taken before. ``data.subsets["train"]``
    says what was taken. Raises ConfigError if ``size`` is not below the training split's size."""
    if not size:
        return data
    check_subset("data.train_subset", size, len(data.train), f"the training split of {data.name}")
    facts = {**(data.subsets or {}), "train": subset_facts(size, len(data.train), seed)}
    return dataclasses.replace(data, train=take_subset(data.train, size, seed), subsets=facts)

"""CIFAR-10 and CIFAR-100 from torchvision's official archives (``cifar-10-python.tar.gz``,
``cifar-100-python.tar.gz``, or their extracted folders) in the data root: pickled batches of
planar CHW rows of 3072 bytes; downloaded when the network allows, checked against their md5.
Corrupted sets: the released CIFAR-10-C / CIFAR-100-C files, or regenerated with the CIFAR profile.
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..base import DATA_ENV, DATASETS, DataError, DatasetSpec, Split, cached_splits, md5sum

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
# eval.corruptions -> corrupted-set source (benchmark.data.corrupted)
CIFAR_C_SOURCES = {"official": "cifar-c-files", "regenerated": "cifar-c-regenerated"}


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
        batch_labels = np.asarray(batch[label_key], dtype=np.int64)
        if len(batch_labels) != len(data):  # else every later batch's labels would be shifted against its images
            raise DataError(f"{where}: {len(data)} images but {len(batch_labels)} labels in '{label_key}'; the file is corrupt or "
                            "not a CIFAR batch: get the archive again")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(batch_labels)
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


def _official(spec: CifarArchive):
    def load(root: Path, cache: Path, download: bool, progress: bool):
        src = _find_or_download_cifar(root, spec, download)

        def read():
            train, test, classes = read_cifar_archive(src, spec)
            return {"train": train, "test": test}, classes

        splits, classes, _ = cached_splits(cache, src, read)
        return splits, classes, "official", src

    return load


DATASETS.register("cifar10")(DatasetSpec("cifar10", _official(CIFAR10_ARCHIVE), CIFAR_MEAN, CIFAR_STD, "official", "CIFAR-10, torchvision's official archive",
                                         corrupted=CIFAR_C_SOURCES, official_corrupted_folder="CIFAR-10-C", corruption_profile="cifar"))
DATASETS.register("cifar100")(DatasetSpec("cifar100", _official(CIFAR100_ARCHIVE), CIFAR100_MEAN, CIFAR100_STD, "official", "CIFAR-100, torchvision's official archive",
                                          corrupted=CIFAR_C_SOURCES, official_corrupted_folder="CIFAR-100-C", corruption_profile="cifar"))

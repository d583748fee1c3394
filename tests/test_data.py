"""Data: official CIFAR archive formats, ImageFolder, the cache, device batches and augmentation."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.data import base as D
from benchmark.data import device as DV
from benchmark.data.datasets import cifar as CF
from tests.conftest import CIFAR10_CLASSES, write_cifar_archive, write_image_folder


@pytest.mark.parametrize("kind,spec", [("cifar10", CF.CIFAR10_ARCHIVE), ("cifar100", CF.CIFAR100_ARCHIVE)])
@pytest.mark.parametrize("as_tar", [True, False])
def test_reads_torchvision_archive_formats(tmp_path: Path, kind: str, spec: CF.CifarArchive, as_tar: bool) -> None:
    arrays = write_cifar_archive(tmp_path, kind, per_batch=7, as_tar=as_tar)
    src = tmp_path / (spec.filename if as_tar else spec.folder)
    train, test, classes = CF.read_cifar_archive(src, spec, md5=None)
    np.testing.assert_array_equal(train.images, arrays["train_images"])
    np.testing.assert_array_equal(train.labels, arrays["train_labels"])
    np.testing.assert_array_equal(test.images, arrays["test_images"])
    np.testing.assert_array_equal(test.labels, arrays["test_labels"])
    assert train.images.dtype == np.uint8 and train.images.shape[1:] == (32, 32, 3)
    assert len(classes) == (10 if kind == "cifar10" else 100)
    if kind == "cifar10":
        assert list(classes) == CIFAR10_CLASSES


def test_official_archive_md5_is_checked(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path, "cifar10", per_batch=3, as_tar=True)
    with pytest.raises(D.DataError, match=r"md5 .* expected c58f30108f718f92721af3b95e74349a"):
        D.load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False, progress=False)


def test_missing_archive_says_what_and_where(tmp_path: Path) -> None:
    with pytest.raises(D.DataError) as err:
        D.load_dataset("cifar100", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False, progress=False)
    msg = str(err.value)
    assert str(tmp_path / "cifar-100-python.tar.gz") in msg and "eb9058c3a382ffc7106e4002c42a8d85" in msg and "--data-dir" in msg


def test_corrupt_batch_file_is_reported(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path, "cifar10", per_batch=3, as_tar=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(D.DataError, match="data_batch_3"):
        D.load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False, progress=False)


def test_a_batch_whose_label_count_differs_from_its_images_is_an_error(tmp_path: Path) -> None:
    """Labels longer or shorter than the image array would shift every later batch's labels."""
    import pickle

    write_cifar_archive(tmp_path, "cifar10", per_batch=4, as_tar=False)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    batch = pickle.loads(path.read_bytes())
    batch["labels"] = batch["labels"][:-1]
    path.write_bytes(pickle.dumps(batch))
    with pytest.raises(D.DataError, match=r"data_batch_2: 4 images but 3 labels in 'labels'"):
        D.load_dataset("cifar10", data_dir=tmp_path, cache_dir=tmp_path / "cache", download=False, progress=False)


def test_unknown_dataset_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=r"unknown dataset 'cifar11'; valid choices: .*cifar10, cifar10-jpeg, cifar100"):
        D.load_dataset("cifar11", data_dir=tmp_path)


@pytest.mark.parametrize("packed", [False, True])
def test_image_folder_and_tarball(tmp_path: Path, packed: bool) -> None:
    classes = ["cat", "airplane", "dog"]  # ImageFolder order is sorted: airplane, cat, dog
    root = tmp_path / "cifar10-jpeg"
    written = write_image_folder(root, classes, {"train": 4, "test": 2}, fmt="PNG")
    if packed:
        with tarfile.open(tmp_path / "cifar10-jpeg.tar.gz", "w:gz") as tar:
            tar.add(root, arcname="cifar10-jpeg")
        import shutil

        shutil.rmtree(root)
    ds = D.load_dataset("cifar10-jpeg", data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    assert ds.classes == ("airplane", "cat", "dog") and ds.source == "jpeg-copy"
    for split, got in (("train", ds.train), ("test", ds.test)):
        images, labels = written[split]
        order = np.argsort([classes[l] for l in labels], kind="stable")  # by sorted class name, then file
        np.testing.assert_array_equal(got.images, images[order])  # PNG is lossless
        np.testing.assert_array_equal(got.labels, [sorted(classes).index(classes[l]) for l in labels[order]])


def test_image_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(D.DataError, match="cifar10-jpeg not found"):
        D.load_dataset("cifar10-jpeg", data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    root = tmp_path / "cifar10-jpeg"
    write_image_folder(root, ["a", "b"], {"train": 2}, fmt="PNG")
    with pytest.raises(D.DataError, match="missing folder .*test"):
        D.load_dataset("cifar10-jpeg", data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)
    write_image_folder(root, ["a", "b"], {"test": 1}, fmt="PNG")
    (root / "test" / "b" / "0000.png").write_bytes(b"garbage")
    with pytest.raises(D.DataError, match="cannot decode image .*0000.png"):
        D.load_dataset("cifar10-jpeg", data_dir=tmp_path, cache_dir=tmp_path / "cache", progress=False)


def test_cache_is_built_once_then_memory_mapped(tmp_path: Path) -> None:
    write_cifar_archive(tmp_path / "data", "cifar10", per_batch=5, as_tar=False)
    calls = []
    src = tmp_path / "data" / "cifar-10-batches-py"

    def read():
        calls.append(1)
        train, test, classes = CF.read_cifar_archive(src, CF.CIFAR10_ARCHIVE, md5=None)
        return {"train": train, "test": test}, classes

    cache = tmp_path / "cache" / "cifar10"
    first, classes1, hit1 = D.cached_splits(cache, src, read)
    mtime = (cache / "train_images.npy").stat().st_mtime_ns
    second, classes2, hit2 = D.cached_splits(cache, src, read)
    assert (hit1, hit2) == (False, True) and len(calls) == 1
    assert (cache / "train_images.npy").stat().st_mtime_ns == mtime
    assert isinstance(second["train"].images, np.memmap)
    np.testing.assert_array_equal(first["test"].images, second["test"].images)
    # a changed source invalidates the cache
    import os

    os.utime(src, ns=(0, 10**9))
    D.cached_splits(cache, src, read)
    assert len(calls) == 2


def test_validation_split_is_held_out(cifar10_dir) -> None:
    root, arrays = cifar10_dir
    ds = D.load_dataset("cifar10", data_dir=root, cache_dir=root / "cache", val_size=30, val_seed=1, progress=False)
    assert len(ds.val) == 30 and len(ds.train) == len(arrays["train_labels"]) - 30
    rows = {r.tobytes() for r in ds.train.images.reshape(len(ds.train), -1)}
    assert not any(r.tobytes() in rows for r in ds.val.images.reshape(30, -1))
    with pytest.raises(ValueError, match="val_size=100000"):
        D.load_dataset("cifar10", data_dir=root, cache_dir=root / "cache", val_size=100000, progress=False)


def test_data_root_resolution(monkeypatch, tmp_path: Path) -> None:
    """--data-dir, else $PLURES_DATA_DIR, else ../shared/data when that folder exists, else ./data; the source is named."""
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path / "checkout" if (tmp_path / "checkout").mkdir() is None else tmp_path)
    assert D.resolve_data_dir(None) == Path("data") and D.data_dir_source(None)[1] == "the default ./data"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert D.resolve_data_dir(None) == Path("../shared/data") and D.data_dir_source(None)[1] == "../shared/data (it exists)"
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.resolve_data_dir(None) == tmp_path
    assert D.resolve_data_dir(tmp_path / "x") == tmp_path / "x"


def test_random_crop_flip_shapes_determinism_and_content() -> None:
    images = torch.randint(0, 256, (64, 32, 32, 3), dtype=torch.uint8)
    out1 = DV.random_crop_flip(images, torch.Generator().manual_seed(5))
    out2 = DV.random_crop_flip(images, torch.Generator().manual_seed(5))
    out3 = DV.random_crop_flip(images, torch.Generator().manual_seed(6))
    assert out1.shape == images.shape and out1.dtype == torch.uint8
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    # every output is a 32x32 window of the zero-padded image, possibly mirrored
    padded = torch.nn.functional.pad(images, (0, 0, 4, 4, 4, 4))
    flips = 0
    for i in range(len(images)):
        windows = [padded[i, dy : dy + 32, dx : dx + 32] for dy in range(9) for dx in range(9)]
        plain = any(torch.equal(out1[i], w) for w in windows)
        mirrored = any(torch.equal(out1[i], w.flip(1)) for w in windows)
        assert plain or mirrored
        flips += mirrored and not plain
    assert 10 < flips < 54  # about half mirrored


def test_device_batches_normalise_and_cover_the_epoch() -> None:
    labels = np.arange(100) % 10
    images = np.random.default_rng(0).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    dd = DV.DeviceData(D.Split(images, labels), CF.CIFAR_MEAN, CF.CIFAR_STD)
    order = dd.epoch_order(torch.Generator().manual_seed(0))
    seen = []
    for step in range(dd.steps_per_epoch(25)):
        x, y = dd.train_batch(order, step, 25, torch.Generator().manual_seed(step), augment=False)
        assert x.shape == (25, 3, 32, 32) and x.dtype == torch.float32
        assert x.is_contiguous(memory_format=torch.channels_last)
        seen.extend(order[step * 25 : (step + 1) * 25].tolist())
        ref = (torch.from_numpy(images[order[step * 25 : (step + 1) * 25].numpy()]).permute(0, 3, 1, 2).float() / 255
               - torch.tensor(CF.CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CF.CIFAR_STD).view(1, 3, 1, 1)
        torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(y, torch.from_numpy(labels[order[step * 25 : (step + 1) * 25].numpy()]))
    assert sorted(seen) == list(range(100))
    xs = torch.cat([x for x, _ in dd.eval_batches(30)])
    assert xs.shape[0] == 100


def test_cache_never_defaults_into_the_data_root(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv(D.CACHE_ENV, raising=False)
    assert D.resolve_cache_dir(None, tmp_path) == Path("data") / "cache"
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "c"))
    assert D.resolve_cache_dir(None, tmp_path) == tmp_path / "c"
    assert D.resolve_cache_dir(tmp_path / "d", tmp_path) == tmp_path / "d"

"""Shared fixtures: tiny datasets written in the real on-disk formats."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from benchmark.core.runtime import StopFlag

pytest_plugins = ["tests.slurm_fixtures"]

# The quick suite compiles its training steps (train.compile = true), which pays over a real run's thousands
# of steps; the tests' runs of its rows take a few steps each and would spend their time in inductor's C++
# builds. They train eagerly (benchmark.training.train.compile_override; subprocesses inherit it); the tests of
# compilation itself build CompiledNet directly or unset the variable.
os.environ["PLURES_COMPILE"] = "0"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--plures-plugin", action="append", default=[], metavar="MODULE",
                     help="import a plug-in module of methods (repeatable or comma-separated) before collection, "
                          "so that the method contract tests include its methods")


def pytest_configure(config: pytest.Config) -> None:
    """Load the ``--plures-plugin`` modules through the plug-in loader (after the built-in methods)."""
    modules = [m.strip() for value in config.getoption("plures_plugin") for m in value.split(",") if m.strip()]
    if modules:
        from benchmark.catalogue.methods import load_methods
        from benchmark.catalogue.plugins import PluginError

        try:
            load_methods(modules, source="pytest --plures-plugin")
        except PluginError as exc:
            raise pytest.UsageError(str(exc)) from exc


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs ``-n auto --dist loadgroup``), the tests that share one
    machine-wide resource run on one worker, one after another: the real SLURM cluster of the
    session (one per worker would start several controllers and compete for the node's CPUs) and
    headless Chromium. Without xdist the mark is inert."""
    for item in items:
        if item.get_closest_marker("slurm") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.xdist_group("machine-wide"))


CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def learnable_images(labels: np.ndarray, size: int = 32, seed: int = 0) -> np.ndarray:
    """uint8 [N, size, size, 3] images whose class is visible (a class-coloured square, plus noise)."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size, 3), dtype=np.uint8)
    palette = np.array([[(37 * k) % 256, (91 * k + 50) % 256, (173 * k + 100) % 256] for k in range(int(labels.max()) + 1)], dtype=np.uint8)
    q = size // 4
    images[:, q : 3 * q, q : 3 * q, :] = palette[labels][:, None, None, :]
    return images


def _batch_bytes(images: np.ndarray, labels: np.ndarray, label_key: str) -> bytes:
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # planar CHW rows, as the release
    return pickle.dumps({"batch_label": "tiny", label_key: labels.tolist(), "data": data, "filenames": [f"{i}.png" for i in range(len(images))]})


def write_cifar_archive(root: Path, kind: str = "cifar10", per_batch: int = 20, as_tar: bool = True, seed: int = 0) -> dict:
    """Write a tiny archive in torchvision's exact format; returns the arrays it holds.

    cifar10: cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta} (key 'labels');
    cifar100: cifar-100-python/{train,test,meta} (key 'fine_labels', names 'fine_label_names').
    """
    rng = np.random.default_rng(seed)
    if kind == "cifar10":
        folder, label_key, k = "cifar-10-batches-py", "labels", 10
        train_names, test_names = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
        meta_name, meta = "batches.meta", {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": per_batch}
        tarname = "cifar-10-python.tar.gz"
    else:
        folder, label_key, k = "cifar-100-python", "fine_labels", 100
        train_names, test_names = ["train"], ["test"]
        meta_name, meta = "meta", {"fine_label_names": [f"class{i:03d}" for i in range(100)], "coarse_label_names": [f"super{i}" for i in range(20)]}
        tarname = "cifar-100-python.tar.gz"
    files, arrays = {}, {"train_images": [], "train_labels": [], "test_images": [], "test_labels": []}
    for split, names in (("train", train_names), ("test", test_names)):
        for name in names:
            labels = rng.integers(0, k, size=per_batch)
            images = learnable_images(labels, seed=int(rng.integers(1 << 30)))
            files[name] = _batch_bytes(images, labels, label_key)
            arrays[f"{split}_images"].append(images)
            arrays[f"{split}_labels"].append(labels)
    files[meta_name] = pickle.dumps(meta)
    root.mkdir(parents=True, exist_ok=True)
    if as_tar:
        with tarfile.open(root / tarname, "w:gz") as tar:
            for name, raw in files.items():
                info = tarfile.TarInfo(f"{folder}/{name}")
                info.size = len(raw)
                tar.addfile(info, io.BytesIO(raw))
    else:
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name, raw in files.items():
            (root / folder / name).write_bytes(raw)
    return {key: np.concatenate(v) for key, v in arrays.items()}


def write_image_folder(root: Path, classes: list[str], per_class: dict[str, int], size: int = 32, fmt: str = "PNG", seed: int = 0) -> dict:
    """Write ``root/<split>/<class>/NNNN.<fmt>``; returns {split: (images, labels)} in ImageFolder order."""
    from PIL import Image

    out = {}
    for split, n in per_class.items():
        labels = np.repeat(np.arange(len(classes)), n)
        images = learnable_images(labels, size=size, seed=seed + len(split))
        for i, (img, lab) in enumerate(zip(images, labels)):
            d = root / split / classes[lab]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i % n:04d}.{fmt.lower()}", format=fmt)
        out[split] = (images, labels)
    return out


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny test models run fastest on one thread (and do not fight over the cores); restored after
    each test (in-process sweep tasks set the thread count themselves)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, dict]:
    """A data root holding a tiny CIFAR-10 in the extracted-folder form (no md5 to match)."""
    arrays = write_cifar_archive(tmp_path / "data", "cifar10", per_batch=40, as_tar=False)
    return tmp_path / "data", arrays


class StopAfter(StopFlag):
    """A stop request that arrives after ``n`` checks (the training loop checks once per step)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def is_set(self) -> bool:
        self.n -= 1
        if self.n < 0:
            self.reason = "test"
        return self.n < 0


@pytest.fixture
def stop_after() -> type:
    """``stop_after(n)``: a stop flag that requests a stop at the n-th step (to interrupt and resume runs)."""
    return StopAfter


@pytest.fixture
def tiny_run_config() -> dict:
    """A run config small enough for a unit test (tiny backbone, 2 epochs, tiny latency probes)."""
    return {
        "run": {"method": "deterministic", "dataset": "cifar10", "backbone": "resnet8", "seed": 0},
        "backbone": {"width": 4},
        "train": {"epochs": 2, "batch_size": 32, "lr": 0.05, "warmup_epochs": 0.5},
        "eval": {"batch_size": 64, "latency_batch": 8, "latency_repeats": 1},
    }

"""CIFAR-C generation in the official layout, and the CIFAR-C / ImageNet-C loaders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.corruptions import ALL_CORRUPTIONS, corrupt
from benchmark.corruptions.generate import corrupt_array, cell_seed, generate_cifar_c, main
from benchmark.data.corrupted.base import CorruptedDataError
from benchmark.data.corrupted.cifar_c import cifar_c_source, load_cifar_c
from benchmark.data.corrupted.imagenet_c import imagenet_classes, imagenet_val_transform, ImageNetC
from benchmark.core.registry import UnknownNameError

N = 8
RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (N, 32, 32, 3), dtype=np.uint8)
LABELS = RNG.integers(0, 10, N)


@pytest.fixture(scope="module")
def regen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_cifar_c(IMAGES, LABELS, tmp_path_factory.mktemp("regen") / "CIFAR-10-C", progress=False)


def test_generated_layout(regen: Path) -> None:
    names = sorted(p.name for p in regen.iterdir())
    assert names == sorted([f"{c}.npy" for c in ALL_CORRUPTIONS] + ["labels.npy", "regenerated.json"])
    labels = np.load(regen / "labels.npy")
    assert labels.shape == (5 * N,) and labels.dtype == np.uint8
    assert np.array_equal(labels, np.tile(LABELS, 5))
    for c in ALL_CORRUPTIONS:
        a = np.load(regen / f"{c}.npy", mmap_mode="r")
        assert a.shape == (5 * N, 32, 32, 3) and a.dtype == np.uint8
    meta = json.loads((regen / "regenerated.json").read_text())
    assert meta["source"] == "regenerated" and meta["complete"] and meta["seed"] == 0 and meta["n"] == N
    assert meta["corruptions"] == list(ALL_CORRUPTIONS) and len(meta["images_sha256"]) == 64
    assert meta["code_version"]["benchmark"]


def test_severity_major_rows(regen: Path) -> None:
    bright = np.load(regen / "brightness.npy")
    for s in range(1, 6):
        for i in (0, N - 1):
            one = corrupt(torch.from_numpy(IMAGES[i : i + 1]), "brightness", s, generator=torch.Generator()).numpy()
            assert np.array_equal(bright[(s - 1) * N + i], one[0])
    noise = np.load(regen / "gaussian_noise.npy")
    assert np.array_equal(noise[2 * N : 3 * N], corrupt_array(IMAGES, "gaussian_noise", 3, seed=0))
    assert cell_seed(0, "fog", 1) != cell_seed(0, "fog", 2) != cell_seed(1, "fog", 2)


def test_read_back(regen: Path) -> None:
    assert cifar_c_source(regen) == "regenerated"
    x, y = load_cifar_c(regen, "fog", 4, expected_labels=LABELS)
    assert x.shape == (N, 32, 32, 3) and np.array_equal(y, LABELS)
    assert np.array_equal(x, np.load(regen / "fog.npy")[3 * N : 4 * N])
    xa, ya = load_cifar_c(regen, "fog")
    assert xa.shape == (5 * N, 32, 32, 3) and isinstance(xa, np.memmap)


def test_cache_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "c"
    few = ("gaussian_noise", "contrast", "frost")
    generate_cifar_c(IMAGES, LABELS, out, corruptions=few, progress=False)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    frost = np.load(out / "frost.npy")
    generate_cifar_c(IMAGES, LABELS, out, corruptions=few, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes  # nothing rewritten
    (out / "frost.npy").unlink()  # as if a crash happened before frost was written
    generate_cifar_c(IMAGES, LABELS, out, corruptions=few, progress=False)
    assert np.array_equal(np.load(out / "frost.npy"), frost)  # same bytes again
    for name in ("gaussian_noise.npy", "contrast.npy", "labels.npy"):
        assert (out / name).stat().st_mtime_ns == mtimes[name]
    with pytest.raises(ValueError, match="seed"):
        generate_cifar_c(IMAGES, LABELS, out, corruptions=few, seed=1, progress=False)
    with pytest.raises(ValueError, match="images_sha256"):
        generate_cifar_c(IMAGES[::-1].copy(), LABELS, out, corruptions=few, progress=False)


def test_generate_refuses_foreign_folder_and_bad_inputs(tmp_path: Path) -> None:
    np.save(tmp_path / "fog.npy", np.zeros((5, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="no regenerated.json"):
        generate_cifar_c(IMAGES, LABELS, tmp_path, corruptions=["fog"], progress=False)
    with pytest.raises(ValueError, match=r"uint8 \[N, 32, 32, 3\]"):
        generate_cifar_c(IMAGES.astype(np.float32), LABELS, tmp_path / "x", progress=False)
    with pytest.raises(UnknownNameError, match="fgo"):
        generate_cifar_c(IMAGES, LABELS, tmp_path / "x", corruptions=["fgo"], progress=False)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--images" in capsys.readouterr().out
    np.save(tmp_path / "x.npy", IMAGES[:2])
    np.save(tmp_path / "y.npy", LABELS[:2])
    rc = main(["--images", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"), "--out", str(tmp_path / "o"),
               "--corruptions", "contrast,fog", "--no-progress"])
    assert rc == 0 and np.load(tmp_path / "o" / "fog.npy").shape == (10, 32, 32, 3)


# ---------------------------------------------------------------- official-layout CIFAR-C files


@pytest.fixture
def official(tmp_path: Path) -> Path:
    d = tmp_path / "CIFAR-10-C"
    d.mkdir()
    rng = np.random.default_rng(1)
    np.save(d / "labels.npy", np.tile(LABELS, 5).astype(np.uint8))
    for c in ("fog", "snow"):
        np.save(d / f"{c}.npy", rng.integers(0, 256, (5 * N, 32, 32, 3), dtype=np.uint8))
    return d


def test_official_folder_loads(official: Path) -> None:
    assert cifar_c_source(official) == "official"
    full = np.load(official / "snow.npy")
    for s in range(1, 6):
        x, y = load_cifar_c(official, "snow", s, expected_labels=LABELS)
        assert np.array_equal(x, full[(s - 1) * N : s * N]) and np.array_equal(y, LABELS)
    np.save(official / "labels.npy", np.tile(LABELS, 5).astype(np.int64))  # any integer dtype
    assert load_cifar_c(official, "fog", 1)[1].dtype == np.int64


def test_official_folder_errors(official: Path) -> None:
    with pytest.raises(CorruptedDataError, match=r"frost\.npy.*2535967.*3555552"):
        load_cifar_c(official, "frost", 1)
    np.save(official / "frost.npy", np.zeros((5 * N, 32, 32), np.uint8))
    with pytest.raises(CorruptedDataError, match=r"frost\.npy.*\(40, 32, 32, 3\).*found shape \(40, 32, 32\)"):
        load_cifar_c(official, "frost", 1)
    np.save(official / "frost.npy", np.zeros((5 * N, 32, 32, 3), np.float32))
    with pytest.raises(CorruptedDataError, match="uint8.*found.*float32"):
        load_cifar_c(official, "frost", 1)
    with pytest.raises(CorruptedDataError, match="expected_labels"):
        load_cifar_c(official, "fog", 1, expected_labels=(LABELS + 1) % 10)
    with pytest.raises(UnknownNameError, match="'mist'.*valid choices"):
        load_cifar_c(official, "mist", 1)
    with pytest.raises(ValueError, match="severity 6.*1, 2, 3, 4, 5"):
        load_cifar_c(official, "fog", 6)
    np.save(official / "labels.npy", np.zeros((5 * N, 2), np.uint8))
    with pytest.raises(CorruptedDataError, match="labels.npy.*found shape"):
        load_cifar_c(official, "fog", 1)
    (official / "labels.npy").unlink()
    with pytest.raises(CorruptedDataError, match=r"missing labels file .*labels\.npy.*zenodo"):
        load_cifar_c(official, "fog", 1)
    (official / "labels.npy").write_bytes(b"not an npy")
    with pytest.raises(CorruptedDataError, match="unreadable"):
        load_cifar_c(official, "fog", 1)


# ---------------------------------------------------------------- ImageNet-C


def _jpeg(path: Path, size: tuple[int, int], seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, quality=85)


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    for w in ("n01440764", "n01443537", "n01484850"):
        (root / "train" / w).mkdir(parents=True)
    c = root / "ImageNet-C"
    for k, w in enumerate(("n01443537", "n01484850")):
        for j in range(2):
            _jpeg(c / "fog" / "3" / w / f"ILSVRC2012_val_{k}{j}.JPEG", (224, 224), 10 * k + j)
    (c / "fog" / "1").mkdir(parents=True)
    return root


def test_imagenet_c_dataset(imagenet_root: Path) -> None:
    classes = imagenet_classes(imagenet_root)
    assert classes == ["n01440764", "n01443537", "n01484850"]
    ds = ImageNetC(imagenet_root / "ImageNet-C", "fog", 3, {w: i for i, w in enumerate(classes)})
    assert len(ds) == 4
    assert [t for _, t in ds.samples] == [1, 1, 2, 2]  # clean indices, not 0..1
    x, t = ds[2]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32 and t == 2


def test_imagenet_c_errors(imagenet_root: Path) -> None:
    c2i = {w: i for i, w in enumerate(imagenet_classes(imagenet_root))}
    croot = imagenet_root / "ImageNet-C"
    with pytest.raises(CorruptedDataError, match=r"snow.*holds: \['fog'\].*2235448"):
        ImageNetC(croot, "snow", 3, c2i)
    with pytest.raises(CorruptedDataError, match=r"fog/5.*holds: \['1', '3'\]"):
        ImageNetC(croot, "fog", 5, c2i)
    with pytest.raises(CorruptedDataError, match="no images"):
        ImageNetC(croot, "fog", 1, c2i)
    with pytest.raises(CorruptedDataError, match="n01484850.*not in class_to_idx"):
        ImageNetC(croot, "fog", 3, {"n01443537": 0})
    with pytest.raises(UnknownNameError, match="'haze'"):
        ImageNetC(croot, "haze", 3, c2i)
    with pytest.raises(ValueError, match="severity 0"):
        ImageNetC(croot, "fog", 0, c2i)
    with pytest.raises(CorruptedDataError, match="no class folders.*contains"):
        imagenet_classes(croot)


def test_imagenet_val_transform() -> None:
    img = Image.fromarray(np.zeros((300, 400, 3), np.uint8))
    out = imagenet_val_transform()(img)
    assert out.size == (224, 224)

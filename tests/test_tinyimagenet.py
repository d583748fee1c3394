"""Tiny-ImageNet: the dataset and the 32x32 OOD set from tiny files in the release's layouts (tarballs
and extracted folders) that these tests build, checksum and truncation errors, and the backbones at
64x64. The real tarballs are read only by the slow-marked test (PLURES_DATA_DIR)."""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from benchmark.data.base import DataError, load_dataset, ood_images, ood_names
from benchmark.data.datasets import tinyimagenet as tin

# deliberately not in sorted order in wnids.txt; words.txt also names wnids that are not classes
WNIDS = ["n03000002", "n01000001", "n02000003"]
WORDS = {"n01000001": "goldfish, Carassius auratus", "n02000003": "tabby, tabby cat", "n03000002": "sports car, sport car",
         "n09999999": "entity"}
N_TRAIN = 3
# val_<N> -> wnid: release order mixes classes
VAL_ANN = {0: "n02000003", 1: "n03000002", 2: "n01000001", 3: "n03000002", 4: "n01000001", 5: "n02000003"}
GRAY = ("train", "n02000003", 1)  # one grayscale training image


def _jpeg(rng: np.random.Generator, gray: bool = False) -> bytes:
    # smooth images so JPEG keeps them recognisable; the tests compare decoded pixels, never the source arrays
    base = rng.integers(0, 256, (8, 8, 1 if gray else 3), dtype=np.uint8)
    img = Image.fromarray(base[..., 0] if gray else base).resize((64, 64), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _release_files(seed: int = 0) -> dict[str, dict[str, bytes]]:
    """{top folder: {relative path: bytes}} for the train and val parts."""
    rng = np.random.default_rng(seed)
    words = "".join(f"{w}\t{n}\n" for w, n in WORDS.items()).encode()
    wnids = "".join(f"{w}\n" for w in WNIDS).encode()
    train = {"wnids.txt": wnids, "words.txt": words}
    for w in WNIDS:
        for n in range(N_TRAIN):
            train[f"train/{w}/{w}_{n}.JPEG"] = _jpeg(rng, gray=("train", w, n) == GRAY)
        train[f"boxes/{w}_boxes.txt"] = b"ignored\n"
    val = {"wnids.txt": wnids, "words.txt": words,
           "val_annotations.txt": "".join(f"val_{n}.JPEG\t{w}\t0\t0\t63\t63\n" for n, w in VAL_ANN.items()).encode()}
    for n, w in VAL_ANN.items():
        val[f"val/{w}/val_{n}.JPEG"] = _jpeg(rng)
    return {"tiny-imagenet-200-train": train, "tiny-imagenet-200-val": val}


def _write_tarball(path: Path, top: str, files: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _write_folder(root: Path, top: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        p = root / top / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


@pytest.fixture()
def release():
    return _release_files()


@pytest.fixture()
def tar_root(tmp_path, release, monkeypatch):
    """A data root holding the two tarballs; the module's expected sha256 set to theirs."""
    root = tmp_path / "data"
    root.mkdir()
    for part in (tin.TRAIN, tin.VAL):
        _write_tarball(root / part.filename, part.folder, release[part.folder])
    monkeypatch.setattr(tin, "TRAIN", dataclasses.replace(tin.TRAIN, sha256=tin.sha256sum(root / tin.TRAIN.filename)))
    monkeypatch.setattr(tin, "VAL", dataclasses.replace(tin.VAL, sha256=tin.sha256sum(root / tin.VAL.filename)))
    return root


def _decode(raw: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as img:
        return np.asarray(img.convert("RGB"))


def _expected(release):
    """Independent expectation: classes sorted by wnid, train by class then N, val by N."""
    wnids = sorted(WNIDS)
    train = release["tiny-imagenet-200-train"]
    val = release["tiny-imagenet-200-val"]
    tr_imgs = np.stack([_decode(train[f"train/{w}/{w}_{n}.JPEG"]) for w in wnids for n in range(N_TRAIN)])
    tr_labels = np.repeat(np.arange(len(wnids)), N_TRAIN)
    te_imgs = np.stack([_decode(val[f"val/{VAL_ANN[n]}/val_{n}.JPEG"]) for n in sorted(VAL_ANN)])
    te_labels = np.array([wnids.index(VAL_ANN[n]) for n in sorted(VAL_ANN)])
    return wnids, tr_imgs, tr_labels, te_imgs, te_labels


def _check_dataset(data, release):
    wnids, tr_imgs, tr_labels, te_imgs, te_labels = _expected(release)
    assert data.classes == tuple(WORDS[w] for w in wnids)
    assert data.classes[0] == "goldfish, Carassius auratus"
    assert data.image_size == 64 and data.num_classes == 3
    np.testing.assert_array_equal(data.train.labels, tr_labels)
    np.testing.assert_array_equal(data.test.labels, te_labels)
    np.testing.assert_array_equal(np.asarray(data.train.images), tr_imgs)
    np.testing.assert_array_equal(np.asarray(data.test.images), te_imgs)
    # the grayscale image became RGB with three equal channels
    g = np.asarray(data.train.images)[wnids.index(GRAY[1]) * N_TRAIN + GRAY[2]]
    assert g.shape == (64, 64, 3) and (g[..., 0] == g[..., 1]).all() and (g[..., 1] == g[..., 2]).all()
    with Image.open(io.BytesIO(release["tiny-imagenet-200-train"][f"train/{GRAY[1]}/{GRAY[1]}_{GRAY[2]}.JPEG"])) as img:
        assert img.mode == "L"


def test_reads_tarballs_into_memory_mapped_cache(tar_root, tmp_path, release):
    cache = tmp_path / "cache"
    data = load_dataset("tinyimagenet", tar_root, cache, progress=False)
    _check_dataset(data, release)
    assert data.source == "official-val"
    assert (cache / "tinyimagenet" / "train_images.npy").is_file()
    again = load_dataset("tinyimagenet", tar_root, cache, progress=False)
    assert isinstance(again.train.images, np.memmap)
    _check_dataset(again, release)


def test_reads_extracted_folders(tmp_path, release):
    root = tmp_path / "data"
    for top, files in release.items():
        _write_folder(root, top, files)
    _check_dataset(load_dataset("tinyimagenet", root, tmp_path / "cache", progress=False), release)


def test_validation_holdout_from_train(tar_root, tmp_path):
    data = load_dataset("tinyimagenet", tar_root, tmp_path / "cache", val_size=2, val_seed=1, progress=False)
    assert len(data.val) == 2 and len(data.train) == 3 * N_TRAIN - 2 and len(data.test) == len(VAL_ANN)


def test_replacing_a_tarball_rebuilds_the_cache(tar_root, tmp_path, release, monkeypatch):
    cache = tmp_path / "cache"
    load_dataset("tinyimagenet", tar_root, cache, progress=False)
    changed = _release_files(seed=1)
    part = tin.VAL
    _write_tarball(tar_root / part.filename, part.folder, changed[part.folder])
    st = (tar_root / part.filename).stat()
    os.utime(tar_root / part.filename, (st.st_atime, st.st_mtime + 10))
    monkeypatch.setattr(tin, "VAL", dataclasses.replace(tin.VAL, sha256=tin.sha256sum(tar_root / part.filename)))
    data = load_dataset("tinyimagenet", tar_root, cache, progress=False)
    np.testing.assert_array_equal(np.asarray(data.test.images), _expected(changed)[3])


@pytest.mark.parametrize("part_name", ["TRAIN", "VAL"])
def test_bad_sha256_names_file_hash_and_remedy(tar_root, tmp_path, part_name):
    part = getattr(tin, part_name)
    path = tar_root / part.filename
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        load_dataset("tinyimagenet", tar_root, tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert str(path) in msg and part.sha256 in msg and tin.sha256sum(path) in msg
    assert "Delete it and copy" in msg and part.filename in msg
    assert not (tmp_path / "cache" / "tinyimagenet" / "meta.json").exists()


def test_truncated_tarball(tar_root, tmp_path):
    path = tar_root / tin.TRAIN.filename
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="corrupt or incomplete: sha256") as err:
        load_dataset("tinyimagenet", tar_root, tmp_path / "cache", progress=False)
    assert str(path) in str(err.value) and tin.TRAIN.sha256 in str(err.value)
    # without the checksum, the archive itself is reported unreadable, by name
    with pytest.raises(DataError, match="not a readable .tar.gz") as err:
        tin.read_part(path, tin.TRAIN, progress=False, sha256=None)
    assert str(path) in str(err.value) and tin.TRAIN.filename in str(err.value)


def test_missing_data_names_both_forms(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("tinyimagenet", tmp_path, tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "tiny-imagenet-200-train.tar.gz" in msg and "tiny-imagenet-200-train/" in msg and "PLURES_DATA_DIR" in msg


def test_val_folder_disagreeing_with_annotations(tmp_path, release):
    root = tmp_path / "data"
    val = dict(release["tiny-imagenet-200-val"])
    val["val/n01000001/val_0.JPEG"] = val.pop("val/n02000003/val_0.JPEG")  # annotated n02000003
    _write_folder(root, "tiny-imagenet-200-train", release["tiny-imagenet-200-train"])
    _write_folder(root, "tiny-imagenet-200-val", val)
    with pytest.raises(DataError, match="val_0.JPEG is in n01000001/ but annotated n02000003"):
        load_dataset("tinyimagenet", root, tmp_path / "cache", progress=False)


def test_missing_word_for_a_class(tmp_path, release):
    root = tmp_path / "data"
    for top, files in release.items():
        files = {**files, "words.txt": b"n01000001\tgoldfish\n"}
        _write_folder(root, top, files)
    with pytest.raises(DataError, match=r"words.txt has no name for wnid\(s\) \['n02000003', 'n03000002'\]"):
        load_dataset("tinyimagenet", root, tmp_path / "cache", progress=False)


# ---------------------------------------------------------------------------------------------
# The OOD set


def test_ood_set_is_val_downscaled_by_2x2_means(tar_root, tmp_path, release):
    assert "tinyimagenet32" in ood_names()
    assert "tinyimagenet" not in ood_names()  # 64x64: not an OOD set for 32x32 datasets as it is
    cache = tmp_path / "cache"
    images = ood_images("tinyimagenet32", tar_root, cache)
    assert images.shape == (len(VAL_ANN), 32, 32, 3) and images.dtype == np.uint8
    val = release["tiny-imagenet-200-val"]
    for i, n in enumerate(sorted(VAL_ANN)):
        with Image.open(io.BytesIO(val[f"val/{VAL_ANN[n]}/val_{n}.JPEG"])) as img:
            full = img.convert("RGB")
            want = np.asarray(full.reduce(2))
        np.testing.assert_array_equal(images[i], want)
        # independently of PIL: the mean of each 2x2 block rounded half up, exactly
        sums = np.asarray(full, dtype=np.int64).reshape(32, 2, 32, 2, 3).sum(axis=(1, 3))
        np.testing.assert_array_equal(images[i], (sums + 2) // 4)
        # and it is antialiased: not the plain subsampling of every other pixel
        assert not np.array_equal(images[i], np.asarray(full)[::2, ::2])
    # memory-mapped from the cache afterwards, without decoding again
    assert (cache / "tinyimagenet32" / "test_images.npy").is_file()
    again = ood_images("tinyimagenet32", tar_root, cache)
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, images)


def test_ood_set_reads_extracted_val_folder_alone(tmp_path, release):
    root = tmp_path / "data"
    _write_folder(root, "tiny-imagenet-200-val", release["tiny-imagenet-200-val"])
    assert ood_images("tinyimagenet32", root, tmp_path / "cache").shape == (len(VAL_ANN), 32, 32, 3)


def test_ood_set_absent_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="tiny-imagenet-200-val.tar.gz"):
        ood_images("tinyimagenet32", tmp_path, tmp_path / "cache")


# ---------------------------------------------------------------------------------------------
# The real tarballs (slow: about 5 s for the OOD set, a minute or two for the dataset on 2 cores)


def _real_root() -> Path:
    root = Path(os.environ.get("PLURES_DATA_DIR", "/nonexistent"))
    if not (root / tin.VAL.filename).is_file() and not (root / tin.VAL.folder).is_dir():
        pytest.skip("the Tiny-ImageNet tarballs are not in $PLURES_DATA_DIR")
    return root


@pytest.mark.slow
def test_real_ood_set(tmp_path):
    root = _real_root()
    t0 = time.perf_counter()
    images = ood_images("tinyimagenet32", root, tmp_path)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = ood_images("tinyimagenet32", root, tmp_path)
    assert time.perf_counter() - t0 < 1.0 < first + 1.0
    assert images.shape == (10_000, 32, 32, 3) and isinstance(again, np.memmap)
    # val_0 is a n03444034 (go-kart) picture per val_annotations.txt; its 32x32 version from the tarball
    with tarfile.open(root / tin.VAL.filename) as tar:
        raw = tar.extractfile("tiny-imagenet-200-val/val/n03444034/val_0.JPEG").read()
    with Image.open(io.BytesIO(raw)) as img:
        sums = np.asarray(img.convert("RGB"), dtype=np.int64).reshape(32, 2, 32, 2, 3).sum(axis=(1, 3))
    np.testing.assert_array_equal(again[0], (sums + 2) // 4)
    print(f"tinyimagenet32: decoded and cached in {first:.1f} s")


# ---------------------------------------------------------------------------------------------
# Backbones at 64x64


def _conv_flops(cin: int, cout: int, k: int, out_hw: int) -> int:
    return 2 * cin * cout * k * k * out_hw * out_hw  # a multiply-add counts 2, as torch's FLOP counter


def _resnet18_flops(size: int, w: int, classes: int) -> int:
    """ResNet-18, CIFAR stem, counted by hand: stem, 4 stages of 2 basic blocks, projection shortcuts, head."""
    total = _conv_flops(3, w, 3, size)
    cin, hw = w, size
    for i, width in enumerate((w, 2 * w, 4 * w, 8 * w)):
        stride = 1 if i == 0 else 2
        hw //= stride
        total += _conv_flops(cin, width, 3, hw) + 3 * _conv_flops(width, width, 3, hw)
        if stride != 1 or cin != width:
            total += _conv_flops(cin, width, 1, hw)
        cin = width
    return total + 2 * cin * classes


def _cifar_resnet_flops(size: int, depth: int, w: int, classes: int) -> int:
    n = (depth - 2) // 6
    total = _conv_flops(3, w, 3, size)
    cin, hw = w, size
    for i, width in enumerate((w, 2 * w, 4 * w)):
        stride = 1 if i == 0 else 2
        hw //= stride
        total += _conv_flops(cin, width, 3, hw) + (2 * n - 1) * _conv_flops(width, width, 3, hw)
        if stride != 1 or cin != width:
            total += _conv_flops(cin, width, 1, hw)
        cin = width
    return total + 2 * cin * classes


@pytest.mark.parametrize("name,options,by_hand", [
    ("resnet18", {"width": 8}, lambda s: _resnet18_flops(s, 8, 200)),
    ("resnet20", {"width": 4}, lambda s: _cifar_resnet_flops(s, 20, 4, 200)),
    ("resnet8", {}, lambda s: _cifar_resnet_flops(s, 8, 16, 200)),
    ("wrn16-1", {}, None),
    ("wrn10-2", {}, None),
])
def test_backbones_at_64x64_with_flops_of_the_input_size(name, options, by_hand):
    import torch

    from benchmark.backbones import Layers, build_backbone
    from benchmark.evaluation.cost import count_parameters, flops_per_example

    torch.manual_seed(0)
    net = build_backbone(name, Layers(num_outputs=200), **options).eval()
    flops = {}
    for size in (32, 64):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            out = net(x)
        assert out.shape == (2, 200) and torch.isfinite(out).all()
        flops[size] = flops_per_example(net, x)
    head = 2 * net.head.in_features * 200
    # every convolution's output has 4x the pixels at 64x64; the head after global pooling is unchanged
    assert flops[64] - head == 4 * (flops[32] - head)
    if by_hand is not None:
        assert flops[64] == by_hand(64) and flops[32] == by_hand(32)
    assert count_parameters(net) == sum(p.numel() for p in net.parameters())


def test_record_costs_come_from_the_dataset_image_size(tar_root, tmp_path):
    """A run on (tiny) Tiny-ImageNet records the FLOPs of a 64x64 forward, and is evaluated on
    regenerated Tiny-ImageNet-C (the spec's source for eval.corruptions = "regenerated")."""
    import json

    from benchmark.runner import Environment, run_experiment

    cfg = {"run": {"method": "deterministic", "dataset": "tinyimagenet", "backbone": "resnet18", "seed": 0},
           "backbone": {"width": 4},
           "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0, "precision": "fp32", "channels_last": False},
           "eval": {"batch_size": 8, "latency_batch": 2, "latency_repeats": 1, "corruptions": "regenerated",
                    "corruption_severities": [1], "corruption_subset": 3}}
    env = Environment(data_dir=str(tar_root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                      checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)
    [path] = run_experiment(cfg, env)
    rec = json.loads(path.read_text())
    assert rec["status"] == "completed"
    assert rec["cost"]["flops_per_example"] == _resnet18_flops(64, 4, 3)
    assert rec["metrics"]["clean"]["n"] == len(VAL_ANN)
    corrupted = rec["metrics"]["corrupted"]
    assert corrupted["images"] == 15 * 3 and len(corrupted["per"]) == 15
    assert "tinyimagenet-C" in corrupted["folder"] and corrupted["per"]["fog"]["1"]["n"] == 3


@pytest.mark.slow
def test_real_dataset(tmp_path):
    """Both real tarballs: 100,000 + 10,000 images, 500 / 50 per class, the release's val order."""
    root = _real_root()
    if not (root / tin.TRAIN.filename).is_file() and not (root / tin.TRAIN.folder).is_dir():
        pytest.skip("the Tiny-ImageNet train tarball is not in $PLURES_DATA_DIR")
    t0 = time.perf_counter()
    data = load_dataset("tinyimagenet", root, tmp_path, progress=False)
    print(f"tinyimagenet: decoded and cached in {time.perf_counter() - t0:.1f} s")
    assert data.train.images.shape == (100_000, 64, 64, 3) and data.test.images.shape == (10_000, 64, 64, 3)
    assert (np.bincount(data.train.labels, minlength=200) == 500).all() and (np.bincount(data.test.labels, minlength=200) == 50).all()
    assert data.classes[0] == "goldfish, Carassius auratus" and data.num_classes == 200
    # val_0 is annotated n03444034 (go-kart); n03444034 is class 107 in sorted-wnid order
    assert data.test.labels[0] == 107 and data.classes[107].startswith("go-kart")
    # the training mean per channel is the one hard-coded in the module (to 4 decimals)
    images = data.train.images
    total = sum(images[i : i + 5000].sum(axis=(0, 1, 2), dtype=np.float64) for i in range(0, len(images), 5000))
    mean = total / (len(images) * 64 * 64 * 255)
    np.testing.assert_allclose(mean, tin.TINY_MEAN, atol=5.1e-5)  # hard-coded to 4 decimals

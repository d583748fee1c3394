"""Tiny-ImageNet-C: the 'tinyimagenet' corruption profile, the release's folder layout, regeneration in
that layout (JPEG q85, seeded, cached, resumable) and evaluation through the one corrupted loop."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.core import config as C
from benchmark.core.runtime import Environment
from benchmark.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, corrupt
from benchmark.corruptions.generate import corrupt_array
from benchmark.corruptions.params import FOG_MAPSIZE, PARAMS, PROFILE_SIZE, PROFILES
from benchmark.data.base import DATASETS, Dataset, DatasetSpec, Split, load_datasets
from benchmark.data.corrupted.base import CORRUPTED_SOURCES, CorruptedDataError, load_sources, subset_indices
from benchmark.data.corrupted import tinyimagenet_c as tc
from tests.conftest import learnable_images

TOY = "toy-tiny64"
WNIDS = ("n01443537", "n01629819", "n02094433")  # sorted: class k is WNIDS[k]


def _toy_load(root: Path, cache: Path, download: bool, progress: bool):
    rng = np.random.default_rng(0)
    splits = {}
    for name, n in (("train", 60), ("test", 12)):
        labels = rng.integers(0, 3, size=n)
        splits[name] = Split(learnable_images(labels, size=64, seed=n), labels.astype(np.int64))
    return splits, ("goldfish", "salamander", "terrier"), "synthetic", root


@pytest.fixture
def toy():
    """A registered 64x64 array dataset of 3 classes using the Tiny-ImageNet-C sources; its loaded Dataset."""
    load_datasets()
    load_sources()
    spec = DatasetSpec(TOY, _toy_load, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "synthetic", "64x64 arrays made by a test",
                       corrupted={"official": "tinyimagenet-c-files", "regenerated": "tinyimagenet-c-regenerated"},
                       official_corrupted_folder="Tiny-ImageNet-C", corruption_profile="tinyimagenet", ood=False)
    DATASETS.register(TOY)(spec)
    splits, classes, source, _ = _toy_load(Path("."), Path("."), False, False)
    yield Dataset(TOY, classes, splits["train"], splits["test"], spec.mean, spec.std, source, "")
    del DATASETS._items[TOY]


def _env(tmp_path: Path) -> Environment:
    return Environment(data_dir=str(tmp_path / "data"), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", progress=False, log=lambda m: None)


def _ev(**changes) -> dict:
    ev = {"corruptions": "regenerated", "corruption_set": "benchmark15", "corruption_severities": [1, 2, 3, 4, 5],
          "corruption_subset": 0, "corruption_seed": 0}
    ev.update(changes)
    return ev


def _decode(raw: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# ---------------------------------------------------------------------------------------------
# The profile


def test_profile_constants() -> None:
    assert "tinyimagenet" in PROFILES and PROFILE_SIZE["tinyimagenet"] == 64 and FOG_MAPSIZE["tinyimagenet"] == 64
    tiny = PARAMS["tinyimagenet"]
    assert set(tiny) == set(ALL_CORRUPTIONS) and all(len(v) == 5 for v in tiny.values())
    # values quoted in ../shared/notes/cifar-c-protocol.md from make_tinyimagenet_c.py
    assert tiny["gaussian_noise"] == [0.04, 0.08, 0.12, 0.15, 0.18]
    assert tiny["jpeg_compression"] == [65, 58, 50, 40, 25]
    assert tiny["pixelate"] == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert [len(z) for z in tiny["zoom_blur"]] == [7, 12, 16, 21, 26]  # np.arange end points, as in the script
    assert tiny["elastic_transform"][4] == pytest.approx((64 * 0.16, 64 * 0.03, 64 * 0.02))
    for name in ALL_CORRUPTIONS:  # neither the CIFAR nor the ImageNet constants, except where the scripts agree
        if name not in ("zoom_blur", "impulse_noise", "gaussian_noise", "contrast", "brightness", "saturate"):
            assert str(tiny[name]) != str(PARAMS["cifar"][name]), name


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_corruption_runs_at_64(name: str) -> None:
    x = torch.from_numpy(learnable_images(np.array([0, 1]), size=64, seed=1))
    for s in (1, 3, 5):
        y = corrupt(x, name, s, generator=torch.Generator().manual_seed(0), profile="tinyimagenet")
        assert y.shape == x.shape and y.dtype == torch.uint8
    assert not torch.equal(y, x)


def test_pixelate_uses_the_64px_factors() -> None:
    x = learnable_images(np.array([0, 1, 2]), size=64, seed=2)
    for s, c in enumerate([0.9, 0.8, 0.7, 0.6, 0.5], start=1):
        ref = np.stack([np.asarray(Image.fromarray(im).resize((int(64 * c),) * 2, Image.BOX).resize((64, 64), Image.BOX)) for im in x])
        out = corrupt(torch.from_numpy(x), "pixelate", s, generator=torch.Generator(), profile="tinyimagenet").numpy()
        assert np.array_equal(out, ref), s


# ---------------------------------------------------------------------------------------------
# The release's layout


def _write_release(root: Path, test: Split, cells, *, name=lambda i: f"val_{i}.JPEG", shuffle_classes=None) -> dict:
    """A folder in Tiny-ImageNet-C's layout holding each test image (lightly changed per cell) as JPEG q85."""
    saved = {}
    for c, s in cells:
        for i, (img, y) in enumerate(zip(test.images, test.labels)):
            wnid = WNIDS[int(y) if shuffle_classes is None else shuffle_classes[int(y)]]
            d = root / c / str(s) / wnid
            d.mkdir(parents=True, exist_ok=True)
            raw = tc.jpeg_bytes(np.clip(img.astype(int) + 10 * s, 0, 255).astype(np.uint8))
            (d / name(i)).write_bytes(raw)
            saved[(c, s, i)] = _decode(raw)
    return saved


def test_release_folder_is_read_in_clean_order_with_clean_labels(toy, tmp_path: Path) -> None:
    root = tmp_path / "data" / "Tiny-ImageNet-C"
    saved = _write_release(root, toy.test, [(c, s) for c in BENCHMARK_CORRUPTIONS for s in (1, 2)])
    src = CORRUPTED_SOURCES.get("tinyimagenet-c-files")
    ev = _ev(corruptions="official", corruption_severities=[1, 2], corruption_subset=5, corruption_seed=3)
    opened = src.open(toy, ev, root, _env(tmp_path), "cpu")
    assert opened.source == "official" and opened.seed is None
    idx = subset_indices(12, 5, 3)
    images, labels, rows = tc.read_cell(root, "fog", 2, 3, toy.test.labels, 5, 3, (64, 64))
    assert np.array_equal(rows, idx) and np.array_equal(labels, toy.test.labels[idx])
    for k, i in enumerate(idx):
        assert np.array_equal(images[k], saved[("fog", 2, int(i))])
    split, n = opened.cell("fog", 2)
    assert n == 5 and len(split) == 5
    batches = list(split.eval_batches(4))
    assert sum(len(b[1]) for b in batches) == 5
    assert torch.equal(torch.cat([b[1] for b in batches]).cpu(), torch.from_numpy(toy.test.labels[idx]))


def test_release_errors_name_the_problem(toy, tmp_path: Path) -> None:
    src = CORRUPTED_SOURCES.get("tinyimagenet-c-files")
    root = tmp_path / "Tiny-ImageNet-C"
    with pytest.raises(CorruptedDataError, match="not found.*<wnid>"):
        src.open(toy, _ev(corruptions="official"), root, _env(tmp_path), "cpu")
    _write_release(root, toy.test, [("fog", 1)])
    with pytest.raises(CorruptedDataError, match=r"missing severity folder\(s\).*gaussian_noise/1"):
        src.open(toy, _ev(corruptions="official"), root, _env(tmp_path), "cpu")
    # a file in the wrong class folder: another test set or class order
    wrong = tmp_path / "wrong"
    _write_release(wrong, toy.test, [("fog", 1)], shuffle_classes=[1, 2, 0])
    with pytest.raises(CorruptedDataError, match="another class than their clean test image"):
        tc.read_cell(wrong, "fog", 1, 3, toy.test.labels, 0, 0, (64, 64))
    # a class folder missing: labels would shift
    (root / "fog" / "1" / WNIDS[0]).rename(tmp_path / "gone")
    with pytest.raises(CorruptedDataError, match="2 class folders, the dataset 3 classes"):
        tc.read_cell(root, "fog", 1, 3, toy.test.labels, 0, 0, (64, 64))
    with pytest.raises(CorruptedDataError, match="is 32x32, the test images 64x64"):
        small = tmp_path / "small" / "fog" / "1"
        for w in WNIDS:
            (small / w).mkdir(parents=True)
            Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(small / w / "val_0.JPEG")
        tc.read_cell(tmp_path / "small", "fog", 1, 3, np.zeros(1, int), 0, 0, (64, 64))


def test_release_with_other_file_names_is_its_own_image_set(toy, tmp_path: Path) -> None:
    root = tmp_path / "rel"
    _write_release(root, toy.test, [("contrast", 4)], name=lambda i: f"img{i:03d}.JPEG")
    images, labels, rows = tc.read_cell(root, "contrast", 4, 3, toy.test.labels, 0, 0, (64, 64))
    assert rows is None and len(labels) == 12
    # (class folder, file name) order
    expected = sorted((int(y), i) for i, y in enumerate(toy.test.labels))
    assert labels.tolist() == [y for y, _ in expected]
    sub_images, sub_labels, _ = tc.read_cell(root, "contrast", 4, 3, toy.test.labels, 4, 1, (64, 64))
    keep = subset_indices(12, 4, 1)
    assert np.array_equal(sub_labels, labels[keep]) and np.array_equal(sub_images, images[keep])


# ---------------------------------------------------------------------------------------------
# Regeneration


def test_regenerated_layout_bytes_and_subset(toy, tmp_path: Path) -> None:
    ev = _ev(corruption_set="benchmark15", corruption_severities=[2, 5], corruption_subset=7, corruption_seed=4)
    src = CORRUPTED_SOURCES.get("tinyimagenet-c-regenerated")
    opened = src.open(toy, ev, None, _env(tmp_path), "cpu")
    folder = opened.folder
    assert folder == tmp_path / "cache" / f"{TOY}-C" / "regenerated-seed4-n7"
    assert opened.source == "regenerated" and opened.seed == 4
    idx = subset_indices(12, 7, 4)
    meta = json.loads((folder / "regenerated.json").read_text())
    assert meta["source"] == "regenerated" and meta["profile"] == "tinyimagenet" and meta["jpeg_quality"] == 85
    assert meta["class_folders"] == ["000", "001", "002"] and meta["n"] == 7
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(BENCHMARK_CORRUPTIONS)
    for c in ("gaussian_noise", "glass_blur", "jpeg_compression"):
        assert sorted(p.name for p in (folder / c).iterdir()) == ["2", "5"]
        files = sorted((folder / c / "5").glob("*/*.JPEG"))
        assert sorted(f.name for f in files) == sorted(f"val_{i}.JPEG" for i in idx)
        # independent expectation: the cell's corruption of the subset, truncated, then PIL JPEG q85
        images = np.ascontiguousarray(toy.test.images[idx])
        expect = corrupt_array(images, c, 5, seed=4, batch_size=500, profile="tinyimagenet")
        for k, i in enumerate(idx):
            path = folder / c / "5" / f"{int(toy.test.labels[i]):03d}" / f"val_{i}.JPEG"
            buf = io.BytesIO()
            Image.fromarray(expect[k]).save(buf, "JPEG", quality=85)
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), _decode(buf.getvalue()))
    split, n = opened.cell("jpeg_compression", 5)
    assert n == 7 and torch.equal(torch.cat([b[1] for b in split.eval_batches(3)]).cpu(), torch.from_numpy(toy.test.labels[idx]))


def test_regeneration_is_cached_resumable_and_seeded(toy, tmp_path: Path) -> None:
    x, y = toy.test.images, toy.test.labels
    out = tmp_path / "tic"
    few = ("shot_noise", "frost", "brightness")
    tc.generate_tinyimagenet_c(x, y, out, num_classes=3, corruptions=few, severities=(1, 3), progress=False)
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*.JPEG")}
    assert len(files) == 3 * 2 * 12
    frost = {p: p.read_bytes() for p in (out / "frost" / "3").rglob("*.JPEG")}
    tc.generate_tinyimagenet_c(x, y, out, num_classes=3, corruptions=few, severities=(1, 3), progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.JPEG")} == files  # nothing rewritten
    import shutil

    shutil.rmtree(out / "frost" / "3")  # as if a crash happened before this cell was renamed into place
    (out / "frost" / ".3.partial-1").mkdir()  # a crashed writer's leftovers are ignored
    tc.generate_tinyimagenet_c(x, y, out, num_classes=3, corruptions=few, severities=(1, 3), progress=False)
    assert {p: p.read_bytes() for p in (out / "frost" / "3").rglob("*.JPEG")} == frost  # same bytes again
    for p, t in files.items():
        if "frost/3" not in str(p):
            assert p.stat().st_mtime_ns == t
    other = tc.generate_tinyimagenet_c(x, y, tmp_path / "s1", num_classes=3, corruptions=("frost",), severities=(3,), seed=1,
                                       progress=False)
    assert {p.name: p.read_bytes() for p in (other / "frost" / "3").rglob("*.JPEG")} != {p.name: b for p, b in frost.items()}
    with pytest.raises(ValueError, match="seed"):
        tc.generate_tinyimagenet_c(x, y, out, num_classes=3, corruptions=few, seed=1, progress=False)
    meta = json.loads((out / "regenerated.json").read_text())
    meta["code_version"]["corruptions"] = "1"
    (out / "regenerated.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="regenerating"):
        tc.generate_tinyimagenet_c(x, y, out, num_classes=3, corruptions=("frost",), severities=(3,), progress=False)
    assert not (out / "shot_noise").exists()  # stale cells were dropped, frost/3 regenerated
    assert {p: p.read_bytes() for p in (out / "frost" / "3").rglob("*.JPEG")} == frost


def test_foreign_folder_is_never_written_into(toy, tmp_path: Path) -> None:
    root = tmp_path / "release"
    _write_release(root, toy.test, [("fog", 1)])
    with pytest.raises(ValueError, match="no regenerated.json"):
        tc.generate_tinyimagenet_c(toy.test.images, toy.test.labels, root, num_classes=3, corruptions=("fog",), progress=False)
    with pytest.raises(ValueError, match=r"uint8 \[N, H, W, 3\]"):
        tc.generate_tinyimagenet_c(toy.test.images.astype(np.float32), toy.test.labels, tmp_path / "x", progress=False)


def test_regenerated_folder_reads_back_as_official_layout(toy, tmp_path: Path) -> None:
    # a regenerated folder passed as eval.corruptions = <path> is read by the files source, reported as regenerated
    out = tc.generate_tinyimagenet_c(toy.test.images, toy.test.labels, tmp_path / "made", num_classes=3,
                                     corruptions=BENCHMARK_CORRUPTIONS, severities=(1,), progress=False)
    opened = CORRUPTED_SOURCES.get("tinyimagenet-c-files").open(toy, _ev(corruptions=str(out), corruption_severities=[1]),
                                                                 out, _env(tmp_path), "cpu")
    assert opened.source == "regenerated"
    images, labels, rows = tc.read_cell(out, "snow", 1, 3, toy.test.labels, 0, 0, (64, 64))
    assert np.array_equal(rows, np.arange(12)) and np.array_equal(labels, toy.test.labels)


def test_evaluated_by_the_one_loop(toy, tiny_run_config, tmp_path: Path) -> None:
    from benchmark.runner import run_experiment

    cfg = C.merge(tiny_run_config, {"run": {"dataset": TOY}, "train": {"epochs": 1},
                                    "eval": {"corruptions": "regenerated", "corruption_severities": [1, 5], "corruption_subset": 6,
                                             "ood": []}})
    [path] = run_experiment(cfg, _env(tmp_path))
    record = json.loads(path.read_text())
    assert "corrupted" in record["metrics"], sorted(record["metrics"])
    corrupted = record["metrics"]["corrupted"]
    assert corrupted["source"] == "regenerated" and corrupted["seed"] == 0
    assert sorted(corrupted["per"]) == sorted(BENCHMARK_CORRUPTIONS)
    assert corrupted["images"] == 15 * 2 * 6 and all(cell[s]["n"] == 6 for cell in corrupted["per"].values() for s in ("1", "5"))


# ---------------------------------------------------------------------------------------------
# The PSNR tool (benchmark/tools/tinyimagenet_c_psnr.py)


def test_psnr_tool_on_a_small_val_tarball(tmp_path: Path) -> None:
    import tarfile

    from benchmark.corruptions.fidelity import psnr
    from benchmark.tools import tinyimagenet_c_psnr as tool

    labels = np.array([2, 0, 1, 0, 2, 1])  # val_<N> -> class (wnids sorted)
    images = learnable_images(labels, size=64, seed=5)
    with tarfile.open(tmp_path / "tiny-imagenet-200-val.tar.gz", "w:gz") as tar:
        for n, (img, y) in enumerate(zip(images, labels)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "PNG")  # lossless, so the decoded sample equals `images`
            info = tarfile.TarInfo(f"tiny-imagenet-200-val/val/{WNIDS[y]}/val_{n}.JPEG")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))
    got, got_labels, idx, total, classes = tool.read_val_sample(tmp_path, 4, 1)
    assert total == 6 and classes == 3 and np.array_equal(idx, subset_indices(6, 4, 1))
    assert np.array_equal(got, images[idx]) and np.array_equal(got_labels, labels[idx])
    out = tmp_path / "psnr.md"
    tool.main(["--data-dir", str(tmp_path), "--n", "4", "--seed", "1", "--corruptions", "contrast,fog", "--out", str(out)])
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| contrast |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    # independent: contrast s3 of the sample, truncated, JPEG q85, decoded, PSNR against clean
    y = corrupt(torch.from_numpy(images[idx]), "contrast", 3, generator=torch.Generator(), profile="tinyimagenet").numpy()
    dec = np.stack([_decode(tc.jpeg_bytes(im)) for im in y])
    assert float(cells[3]) == pytest.approx(psnr(images[idx], dec).mean(), abs=0.006)
    assert cells[6] == "yes"  # contrast's PSNR falls with severity
    assert "python -m benchmark.tools.tinyimagenet_c_psnr" in text

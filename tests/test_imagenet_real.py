"""The ``imagenet`` dataset path on real ImageNet JPEGs (slow, run on purpose: ``make test-slow`` or
``pytest -m slow tests/test_imagenet_real.py``).

Tiny-ImageNet's files are original ImageNet JPEGs (64x64, some grayscale) in ``<wnid>/`` folders:
``benchmark.tools.imagenet_from_tiny`` lays 10 classes of them out as ``imagenet/{train,val}`` and
the test runs the ``imagenet`` dataset end to end through the CLI: streamed decoding by 2 DataLoader
workers, RandomResizedCrop training and Resize(256)/CenterCrop(224) evaluation, ImageNet-C
regenerated on the fly (ImageNet profile, JPEG q85) for 3 cheap corruptions at all 5 severities (the
AlexNet reference publishes only the mean over the five, so mCE needs all of them), and the
leaderboard's mCE against AlexNet, checked against a computation by hand. Skipped when the
Tiny-ImageNet tarballs are not in ``$PLURES_DATA_DIR``. About 1-2 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import csv
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark import cli
from benchmark.corruptions import CORRUPTION_SETS
from benchmark.data.base import load_dataset
from benchmark.data.datasets import tinyimagenet as tin
from benchmark.data.datasets.imagenet import ALEXNET_CLEAN_ERROR, ALEXNET_IMAGENET_C_ERROR
from benchmark.data.streaming import WORKERS_ENV
from benchmark.tools.imagenet_from_tiny import MANIFEST, Request, build

pytestmark = pytest.mark.slow

CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS = 10, 20, 10
CHEAP = ("gaussian_noise", "contrast", "jpeg_compression")  # ~0.1-0.3 s per 224x224 image each
SUBSET = 10  # corrupted images per cell


def _tiny_root() -> Path:
    root = Path(os.environ.get("PLURES_DATA_DIR", "/nonexistent"))
    if not all((root / p.filename).is_file() for p in (tin.TRAIN, tin.VAL)):
        pytest.skip(f"the Tiny-ImageNet tarballs ({tin.TRAIN.filename}, {tin.VAL.filename}) are not in $PLURES_DATA_DIR={root}")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, float]:
    """(Tiny-ImageNet root, data root holding imagenet/, seconds the build took)."""
    tiny = _tiny_root()
    out = tmp_path_factory.mktemp("imagenet-from-tiny")
    t0 = time.perf_counter()
    build(tiny, out, Request(CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS), log=lambda *_: None)
    return tiny, out, time.perf_counter() - t0


def test_folder_holds_the_release_bytes(built: tuple[Path, Path, float]) -> None:
    tiny, out, seconds = built
    base = out / "imagenet"
    # the expected selection, from the val tarball's own text files (an independent listing)
    with tarfile.open(tiny / tin.VAL.filename) as tar:
        wnids = sorted(tar.extractfile(f"{tin.VAL.folder}/wnids.txt").read().decode().split())[:CLASSES]
        ann = tar.extractfile(f"{tin.VAL.folder}/val_annotations.txt").read().decode()
        val_n: dict[str, list[int]] = {w: [] for w in wnids}
        for line in ann.splitlines():
            name, wnid = line.split("\t")[:2]
            if wnid in val_n:
                val_n[wnid].append(int(name[len("val_"):].split(".")[0]))
        expected_val = {w: sorted(f"val_{n}.JPEG" for n in sorted(ns)[:VAL_PER_CLASS]) for w, ns in val_n.items()}
        val_bytes = {w: tar.extractfile(f"{tin.VAL.folder}/val/{w}/{expected_val[w][0]}").read() for w in wnids[:3]}
    assert sorted(p.name for p in (base / "train").iterdir()) == wnids
    assert sorted(p.name for p in (base / "val").iterdir()) == wnids
    for w in wnids:  # train images are numbered 0..499 per class: the smallest numbers are 0..K-1
        assert sorted(p.name for p in (base / "train" / w).iterdir()) == sorted(f"{w}_{i}.JPEG" for i in range(TRAIN_PER_CLASS))
        assert sorted(p.name for p in (base / "val" / w).iterdir()) == expected_val[w]
    for w, raw in val_bytes.items():  # the bytes are the release's, not re-encoded
        assert (base / "val" / w / expected_val[w][0]).read_bytes() == raw
    w, wanted = wnids[0], f"{tin.TRAIN.folder}/train/{wnids[0]}/{wnids[0]}_3.JPEG"
    with tarfile.open(tiny / tin.TRAIN.filename, "r|gz") as tar:  # streamed up to that member only
        raw = next(tar.extractfile(m).read() for m in tar if m.name == wanted)
    assert (base / "train" / w / f"{w}_3.JPEG").read_bytes() == raw
    manifest = json.loads((base / MANIFEST).read_text())
    assert manifest["wnids"] == wnids and manifest["train_per_class"] == TRAIN_PER_CLASS
    # idempotent: the same request is a no-op (nothing rewritten), another one is refused
    stamp = (base / MANIFEST).stat().st_mtime_ns
    messages: list[str] = []
    build(tiny, out, Request(CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS), log=messages.append)
    assert "up to date" in messages[0] and (base / MANIFEST).stat().st_mtime_ns == stamp
    with pytest.raises(Exception, match="--force"):
        build(tiny, out, Request(CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS + 1), log=lambda *_: None)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left
    print(f"imagenet_from_tiny: {CLASSES} classes x ({TRAIN_PER_CLASS} + {VAL_PER_CLASS}) images in {seconds:.1f} s")


def test_loader_reads_the_real_files(built: tuple[Path, Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, root, _ = built
    monkeypatch.setenv(WORKERS_ENV, "2")
    data = load_dataset("imagenet", root, tmp_path / "cache", progress=False)
    assert (len(data.train), len(data.test), len(data.classes)) == (CLASSES * TRAIN_PER_CLASS, CLASSES * VAL_PER_CLASS, CLASSES)
    test = data.test.on_device(data.mean, data.std, "cpu")
    batches = list(test.eval_batches(32))  # every val image, decoded by the workers
    assert [tuple(x.shape) for x, _ in batches] == [(32, 3, 224, 224)] * 3 + [(4, 3, 224, 224)]
    assert torch.cat([y for _, y in batches]).tolist() == data.test.labels.tolist()
    x = torch.cat([x for x, _ in batches])
    # by hand: 64x64 -> Resize(256) (4x, bilinear) -> CenterCrop(224): the centre 56x56 of the original, upsampled
    with Image.open(data.test.path(0)) as im:
        ref = np.asarray(im.convert("RGB").resize((256, 256), Image.Resampling.BILINEAR), dtype=np.float32)[16:240, 16:240] / 255
    std, mean = np.array(data.std, dtype=np.float32), np.array(data.mean, dtype=np.float32)
    assert np.abs(x[0].permute(1, 2, 0).numpy() * std + mean - ref).mean() < 2 / 255
    # the selection holds a grayscale JPEG of the release (val_1234 of n01698640): it comes out as RGB, R = G = B
    modes = {}
    for i in range(len(data.test)):
        with Image.open(data.test.path(i)) as im:
            modes[i] = im.mode
    gray = [i for i, m in modes.items() if m != "RGB"]
    assert gray and all(modes[i] == "L" for i in gray)
    pixels = x[gray[0]].permute(1, 2, 0).numpy() * std + mean
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() < 1e-5 and np.abs(pixels[..., 1] - pixels[..., 2]).max() < 1e-5
    # training batches: RandomResizedCrop + flip of real files, same bytes with 0 and 2 workers
    order = data.train.epoch_order(torch.Generator().manual_seed(0))
    two = data.train.on_device(data.mean, data.std, "cpu").train_batch(order, 1, 20, torch.Generator())
    monkeypatch.setenv(WORKERS_ENV, "0")
    zero = data.train.on_device(data.mean, data.std, "cpu").train_batch(order, 1, 20, torch.Generator())
    assert two[0].shape == (20, 3, 224, 224) and torch.equal(two[0], zero[0]) and torch.equal(two[1], zero[1])


def test_imagenet_end_to_end_through_the_cli(built: tuple[Path, Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _, root, _ = built
    monkeypatch.setenv(WORKERS_ENV, "2")
    # A named set of 3 cheap corruptions, for this test only (the registry of named sets is the product's).
    monkeypatch.setitem(CORRUPTION_SETS, "test-cheap3", CHEAP)
    runs, boards = tmp_path / "runs", tmp_path / "boards"
    sets = {"run.dataset": "imagenet", "run.backbone": "resnet50", "run.method": "deterministic", "run.suite": "imagenet-real-test",
            "backbone.width": 4, "train.epochs": 1, "train.batch_size": 20, "train.lr": 0.05, "train.warmup_epochs": 0.0,
            "train.precision": "fp32", "train.channels_last": False, "eval.batch_size": 50, "eval.corruptions": "regenerated",
            "eval.corruption_set": "test-cheap3", "eval.corruption_severities": [1, 2, 3, 4, 5], "eval.corruption_subset": SUBSET,
            "eval.latency_batch": 4, "eval.latency_repeats": 1}
    argv = ["run", "--data-dir", str(root), "--cache-dir", str(tmp_path / "cache"), "--results-dir", str(runs),
            "--checkpoint-dir", str(tmp_path / "ckpt"), "--device", "cpu", "--no-progress"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}"]
    t0 = time.perf_counter()
    assert cli.main(argv) == 0
    seconds = time.perf_counter() - t0
    [path] = [p for p in runs.rglob("*.json") if not p.name.endswith((".predictions.json",))]
    record = json.loads(path.read_text())
    assert record["status"] == "completed"
    assert (record["data"]["train_size"], record["data"]["test_size"], record["data"]["num_classes"]) == (200, 100, CLASSES)
    corrupted = record["metrics"]["corrupted"]
    assert corrupted["source"] == "regenerated" and corrupted["corruptions"] == list(CHEAP) and corrupted["seed"] == 0
    assert corrupted["images"] == len(CHEAP) * 5 * SUBSET
    assert {c: sorted(corrupted["per"][c]) for c in CHEAP} == {c: ["1", "2", "3", "4", "5"] for c in CHEAP}

    # mCE against AlexNet in the leaderboard, as Hendrycks and Dietterich define it, by hand
    assert cli.main(["leaderboard", "--results-dir", str(runs), "--out", str(boards)]) == 0
    with open(boards / "imagenet-real-test" / "leaderboard.csv", newline="") as fh:
        [row] = [r for r in csv.DictReader(fh) if r["kind"] == "measured"]  # the board also shows published (reported) rows
    clean_err = 1 - record["metrics"]["clean"]["accuracy"]
    err = {c: [1 - corrupted["per"][c][str(s)]["accuracy"] for s in range(1, 6)] for c in CHEAP}
    mce = 100 * np.mean([sum(err[c]) / (5 * ALEXNET_IMAGENET_C_ERROR[c]) for c in CHEAP])
    rel = 100 * np.mean([sum(e - clean_err for e in err[c]) / (5 * (ALEXNET_IMAGENET_C_ERROR[c] - ALEXNET_CLEAN_ERROR)) for c in CHEAP])
    assert float(row["mCE"]) == pytest.approx(mce, rel=1e-9) and float(row["rel_mCE"]) == pytest.approx(rel, rel=1e-9)
    assert 0 < float(row["mCE"]) < 1000
    page = (boards / "imagenet-real-test" / "leaderboard.md").read_text()
    assert "AlexNet" in page
    with capsys.disabled():
        print(f"\nimagenet end to end (train 200, eval 100 + {corrupted['images']} regenerated ImageNet-C): run {seconds:.0f} s, "
              f"clean accuracy {record['metrics']['clean']['accuracy']:.3f}, mCE {float(row['mCE']):.1f}")

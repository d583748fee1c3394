"""ImageNet streamed from JPEG folders, and ImageNet-C evaluation, on tiny fake trees."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from benchmark.core import config as C
from benchmark.corruptions import BENCHMARK_CORRUPTIONS
from benchmark.data.base import DataError, load_dataset
from benchmark.data.corrupted.base import CorruptedDataError
from benchmark.data.corrupted.imagenet_c import RegeneratedImageNetC
from benchmark.data.datasets.imagenet import IMAGENET_MEAN, IMAGENET_STD
from benchmark.data.streaming import WORKERS_ENV, StreamingImageFolder, eval_transform
from benchmark.evaluation.robustness import evaluate_corrupted
from benchmark.methods import Task
from benchmark.catalogue.methods import get_method
from benchmark.runner import Environment, run_experiment
from benchmark.core.runtime import StopRequested

WNIDS = ["n01440764", "n01443537", "n02102040"]  # deliberately written out of order below
TRAIN_PER_CLASS, VAL_PER_CLASS = 4, 2
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]


def _jpeg(path: Path, size: tuple[int, int], colour: tuple[int, int, int], seed: int) -> None:
    """A JPEG of ``size`` (width, height): noise with a class-coloured centre."""
    rng = np.random.default_rng(seed)
    w, h = size
    img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=90)


@pytest.fixture(autouse=True)
def _no_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKERS_ENV, "0")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/imagenet/{train,val}/<wnid>/*.JPEG`` (64x80 and 80x64 images) and
    ``<root>/imagenet-c/<15 corruptions>/{1,2}/<wnid>/*.JPEG`` (224x224)."""
    root = tmp_path_factory.mktemp("data")
    seed = 0
    for k in (2, 0, 1):
        wnid = WNIDS[k]
        for split, n in (("train", TRAIN_PER_CLASS), ("val", VAL_PER_CLASS)):
            for i in range(n):
                seed += 1
                size = (64, 80) if i % 2 else (80, 64)
                _jpeg(root / "imagenet" / split / wnid / f"{wnid}_{i:04d}.JPEG", size, COLOURS[k], seed)
    for c in BENCHMARK_CORRUPTIONS:
        for s in (1, 2):
            for k, wnid in enumerate(WNIDS):
                seed += 1
                _jpeg(root / "imagenet-c" / c / str(s) / wnid / f"ILSVRC2012_val_{k:08d}.JPEG", (224, 224), COLOURS[k], seed)
    return root


def _env(tmp_path: Path, root: Path) -> Environment:
    return Environment(data_dir=str(root), cache_dir=str(tmp_path / "cache"), results_dir=tmp_path / "runs",
                       checkpoint_dir=tmp_path / "ckpt", device="cpu", progress=False, log=lambda *_: None)


def _gen(*seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash(seed) & 0xFFFF_FFFF)


class _Logits(nn.Module):
    """A tiny network returning member logits ``[1, B, K]``."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(3, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))[None]


# ---------------------------------------------------------------------------------------------
# The dataset


def test_dataset_loads_in_wnid_order(tree: Path, tmp_path: Path) -> None:
    data = load_dataset("imagenet", tree, tmp_path / "cache", progress=False)
    assert data.classes == tuple(WNIDS)
    assert isinstance(data.train, StreamingImageFolder) and isinstance(data.test, StreamingImageFolder)
    assert (len(data.train), len(data.test)) == (3 * TRAIN_PER_CLASS, 3 * VAL_PER_CLASS)
    assert data.image_size == 224 and (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.test.path(2).parent.name == WNIDS[1]
    assert not (tmp_path / "cache").exists()  # nothing decoded into a cache
    held = load_dataset("imagenet", tree, tmp_path / "cache", val_size=3, progress=False)
    assert (len(held.train), len(held.val)) == (9, 3)
    assert sorted(held.train.files.tolist() + held.val.files.tolist()) == sorted(data.train.files.tolist())


def test_train_batches_shape_normalisation_and_reproducibility(tree: Path) -> None:
    data = load_dataset("imagenet", tree, progress=False)
    train = data.train.on_device(data.mean, data.std, "cpu")
    order = train.epoch_order(_gen(0, 0))
    assert train.steps_per_epoch(4) == 3
    x0, y0 = train.train_batch(order, 0, 4, _gen(1))
    x1, y1 = train.train_batch(order, 1, 4, _gen(2))
    assert x0.shape == (4, 3, 224, 224) and x0.dtype == torch.float32 and y0.dtype == torch.int64
    assert y0.tolist() == data.train.labels[order[:4].numpy()].tolist()
    pixels = x0 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # Same epoch order: the same bytes, whether a step follows the previous one or starts fresh
    # (a resumed run), and whatever generator the step gets (augmentation keys on the epoch).
    again = data.train.on_device(data.mean, data.std, "cpu")
    order2 = again.epoch_order(_gen(0, 0))
    assert torch.equal(order, order2)
    xr, yr = again.train_batch(order2, 1, 4, _gen(99))
    assert torch.equal(xr, x1) and torch.equal(yr, y1)
    assert torch.equal(again.train_batch(order2, 0, 4, _gen(1))[0], x0)
    # Another epoch (another order): other crops of the same image.
    other = train.epoch_order(_gen(0, 1))
    xo, _ = train.train_batch(other, 0, 12, _gen(1))
    xs, _ = train.train_batch(order, 0, 12, _gen(1))
    first = {int(i): xs[j] for j, i in enumerate(order)}
    assert not all(torch.equal(xo[j], first[int(i)]) for j, i in enumerate(other))
    # Starting a loader leaves the global RNG (seeded per step by the loop, used by dropout) alone.
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    data.train.on_device(data.mean, data.std, "cpu").train_batch(order, 2, 4, _gen(1))
    assert torch.equal(torch.rand(3), expected)
    with pytest.raises(IndexError, match="step 3 out of range"):
        train.train_batch(order, 3, 4, _gen(1))


def test_workers_do_not_change_the_batches(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = load_dataset("imagenet", tree, progress=False)
    order = torch.randperm(len(data.train), generator=_gen(3))
    plain = [data.train.on_device(data.mean, data.std, "cpu").train_batch(order, s, 4, _gen(s))[0] for s in range(3)]
    monkeypatch.setenv(WORKERS_ENV, "2")
    streamed = data.train.on_device(data.mean, data.std, "cpu")
    assert all(torch.equal(streamed.train_batch(order, s, 4, _gen(s))[0], plain[s]) for s in range(3))


def test_eval_batches_are_resized_and_center_cropped(tree: Path) -> None:
    data = load_dataset("imagenet", tree, progress=False)
    test = data.test.on_device(data.mean, data.std, "cpu")
    batches = list(test.eval_batches(4))
    assert [tuple(x.shape) for x, _ in batches] == [(4, 3, 224, 224), (2, 3, 224, 224)]
    assert torch.cat([y for _, y in batches]).tolist() == [0, 0, 1, 1, 2, 2]
    with Image.open(data.test.path(1)) as im:  # 64x80 (w x h): shorter side to 256, then the centre 224
        ref = np.asarray(eval_transform(im.convert("RGB")), dtype=np.float32) / 255
    expected = (torch.from_numpy(ref).permute(2, 0, 1) - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(batches[0][0][1], expected, atol=1e-5)
    # The centre colour of the image survives the crop.
    assert batches[0][0][1, :, 112, 112].argmax().item() == 0


# ---------------------------------------------------------------------------------------------
# Runs


def test_run_with_imagenet_c(tree: Path, tmp_path: Path) -> None:
    cfg = {
        "run": {"method": "deterministic", "dataset": "imagenet", "backbone": "resnet50", "seed": 0},
        "backbone": {"width": 4},
        "train": {"epochs": 1, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0.0},
        "eval": {"batch_size": 4, "latency_batch": 2, "latency_repeats": 1, "corruptions": str(tree / "imagenet-c"),
                 "corruption_severities": [1, 2], "corruption_subset": 2},
    }
    [path] = run_experiment(cfg, _env(tmp_path, tree))
    record = json.loads(path.read_text())
    assert record["status"] == "completed"
    assert record["data"]["train_size"] == 12 and record["data"]["test_size"] == 6 and record["data"]["num_classes"] == 3
    corrupted = record["metrics"]["corrupted"]
    assert corrupted["source"] == "official" and corrupted["corruptions"] == list(BENCHMARK_CORRUPTIONS)
    assert set(corrupted["per"]) == set(BENCHMARK_CORRUPTIONS) and set(corrupted["per"]["fog"]) == {"1", "2"}
    assert corrupted["subset"] == 2 and corrupted["images"] == 15 * 2 * 2
    assert set(corrupted["summary"]) >= {"cA", "cNLL", "cECE", "cBrier"}
    assert 0.0 <= corrupted["summary"]["cA"] <= 1.0

    # "official" reads <data root>/imagenet-c
    official = C.merge(cfg, {"eval": {"corruptions": "official", "corruption_severities": [1], "corruption_subset": 0}})
    [path] = run_experiment(official, _env(tmp_path, tree))
    corrupted = json.loads(path.read_text())["metrics"]["corrupted"]
    assert corrupted["folder"] == str(tree / "imagenet-c") and corrupted["images"] == 15 * 3


def test_resumed_run_equals_uninterrupted(tree: Path, tmp_path: Path, stop_after) -> None:
    cfg = {"run": {"method": "deterministic", "dataset": "imagenet", "backbone": "resnet50", "seed": 1}, "backbone": {"width": 2},
           "train": {"epochs": 2, "batch_size": 4, "lr": 0.05, "warmup_epochs": 0.0},
           "eval": {"batch_size": 6, "latency_batch": 2, "latency_repeats": 1}}
    [straight] = run_experiment(cfg, _env(tmp_path / "a", tree))
    with pytest.raises(StopRequested):  # mid-epoch 2 (3 steps per epoch)
        run_experiment(cfg, dataclasses.replace(_env(tmp_path / "b", tree), stop=stop_after(4)))
    [resumed] = run_experiment(cfg, _env(tmp_path / "b", tree))
    run_id = json.loads(straight.read_text())["run_id"]
    sa, sb = (torch.load(tmp_path / d / "ckpt" / run_id / "final.pt") for d in ("a", "b"))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _evaluate(tree: Path, tmp_path: Path, **ev_changes):
    data = load_dataset("imagenet", tree, progress=False)
    ev = {**C.resolve({})["eval"], "corruptions": str(tree / "imagenet-c"), "corruption_severities": [1], **ev_changes}
    torch.manual_seed(0)
    return evaluate_corrupted(_Logits(3), data, ev, _env(tmp_path, tree), batch_size=4, precision="fp32", channels_last=False, progress=False)


def test_imagenet_c_errors(tree: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"imagenet/train.*imagenet/val"):
        load_dataset("imagenet", tmp_path / "nowhere", progress=False)
    with pytest.raises(CorruptedDataError, match=r"missing severity folder.*gaussian_noise/3.*fog/3"):
        _evaluate(tree, tmp_path, corruption_severities=[3])
    with pytest.raises(CorruptedDataError, match="ImageNet-C folder .* not found"):
        _evaluate(tree, tmp_path, corruptions=str(tmp_path / "no-such-c"))
    bad = tmp_path / "bad-c"
    for c in BENCHMARK_CORRUPTIONS:
        _jpeg(bad / c / "1" / "n09999999" / "x.JPEG", (224, 224), COLOURS[0], 0)
    with pytest.raises(CorruptedDataError, match="n09999999"):
        _evaluate(tree, tmp_path, corruptions=str(bad))


def test_imagenet_layout_errors(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "imagenet" / "train" / WNIDS[0]).mkdir(parents=True)
    with pytest.raises(DataError, match=r"missing .*imagenet/val"):
        load_dataset("imagenet", root, progress=False)
    _jpeg(root / "imagenet" / "val" / "n09999999" / "a.JPEG", (32, 32), COLOURS[0], 0)
    with pytest.raises(DataError, match=r"n09999999.*lacks"):
        load_dataset("imagenet", root, progress=False)


def test_regenerated_imagenet_c_is_seeded(tree: Path, tmp_path: Path) -> None:
    data = load_dataset("imagenet", tree, progress=False)
    cell = RegeneratedImageNetC(data.test, "gaussian_noise", 3, seed=0)
    a, label = cell[1]
    assert a.shape == (224, 224, 3) and a.dtype == torch.uint8 and label == 0
    assert torch.equal(cell[1][0], a) and not torch.equal(RegeneratedImageNetC(data.test, "gaussian_noise", 3, seed=1)[1][0], a)
    # Severity 3: the ImageNet elastic transform at severity 1 (a sigma of 170 px) takes ~15 s per image here.
    out = _evaluate(tree, tmp_path, corruptions="regenerated", corruption_set="benchmark15", corruption_subset=1, corruption_severities=[3])
    assert out["source"] == "regenerated" and out["seed"] == 0 and out["images"] == 15
    assert set(out["per"]) == set(BENCHMARK_CORRUPTIONS)


# ---------------------------------------------------------------------------------------------
# The suite


def test_imagenet_suite_loads_with_valid_options() -> None:
    meta, runs = C.load_suite("imagenet")
    assert meta["name"] == "imagenet" and runs
    names = set()
    for cfg in runs:
        resolved = C.resolve(cfg)
        assert resolved["run"]["dataset"] == "imagenet" and resolved["run"]["backbone"] == "resnet50"
        assert resolved["eval"]["corruptions"] == "official" and resolved["eval"]["corruption_set"] == "benchmark15"
        task = Task(num_classes=1000, backbone="resnet50", image_size=224, dataset="imagenet")
        get_method(resolved["run"]["method"]).from_config(dict(resolved["method"]), task)  # unknown options fail here
        names.add(resolved["run"]["name"])
    assert {"deterministic", "mimo", "batchensemble", "mc_dropout", "deep_ensemble"} <= names

"""Images per second of the streamed ImageNet input path against the cached (in-memory uint8) path.

    nice -n 10 python -m benchmark.tools.stream_throughput --data-dir data/imagenet-from-tiny \\
        --images 500 --workers 0,1,2 --out results/perf/imagenet-streaming-cpu.md

``--data-dir`` is a data root holding ``imagenet/train/<wnid>/*.JPEG`` (real ImageNet, or the folder
``benchmark.tools.imagenet_from_tiny`` builds from Tiny-ImageNet). It times, on the first
``--images`` training images (spread over every class: a seeded sample):

- the streamed training path (:class:`benchmark.data.streaming.StreamingImageFolder`
  ``train_batch``: JPEG decode, RandomResizedCrop(224) and flip, collation, normalisation) and the
  streamed evaluation path (``eval_batches``: decode, Resize(256), CenterCrop(224)), with 0, 1, 2...
  DataLoader workers (``$PLURES_DATA_WORKERS``): wall-clock images per second, from creating the
  loader to the last batch (worker start-up included), and CPU milliseconds per image (this process
  and its workers together: ``getrusage``), the figure that does not depend on what else the
  machine runs;
- the cached path: the same images decoded once and held as uint8 ``[N, 224, 224, 3]``, batches
  formed by :class:`benchmark.data.device.DeviceData` (gather, 4-pixel random crop and flip,
  normalisation): what every cached dataset does;
- per-image components in this process (decode alone, RandomResizedCrop alone, Resize+CenterCrop
  alone) on these files, and on ``--large`` synthetic JPEGs of ImageNet's usual size (500x375,
  quality 90, made by upsampling these images): Tiny-ImageNet's 64x64 files decode ~30x faster
  than real ImageNet files, so the large-file figures are the ones to extrapolate from.

Files are read once before timing (page cache warm): a network file system adds its own latency.
Writes a markdown report with the command, the machine, its load average before and after, and
what a full ImageNet epoch should cost. Not imported by the product.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import random
import resource
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import PIL
import torch
from PIL import Image

from benchmark.core.io import atomic_write_text
from benchmark.data.base import DATA_ENV
from benchmark.data.datasets.imagenet import IMAGENET_MEAN, IMAGENET_STD, load_imagenet
from benchmark.data.device import DeviceData
from benchmark.data.streaming import WORKERS_ENV, StreamingImageFolder, eval_transform, open_rgb, to_uint8, train_transform

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012 training set
LARGE_SIZE = (500, 375)  # ImageNet's most common image size (width, height)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (DataLoader workers)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn: Callable[[], int]) -> tuple[float, float, int]:
    """(wall s, CPU s incl. reaped workers, images) of ``fn()``, which returns the images it produced."""
    gc.collect()
    c0, t0 = cpu_seconds(), time.perf_counter()
    n = fn()
    wall = time.perf_counter() - t0
    gc.collect()  # drops finished loaders: their workers are joined, so getrusage counts them
    time.sleep(0.2)
    return wall, cpu_seconds() - c0, n


def stream_train(split: StreamingImageFolder, batch: int) -> Callable[[], int]:
    def run() -> int:
        order = split.epoch_order(torch.Generator().manual_seed(0))
        steps = split.steps_per_epoch(batch)
        for s in range(steps):
            split.train_batch(order, s, batch, torch.Generator())
        return steps * batch
    return run


def stream_eval(split: StreamingImageFolder, batch: int) -> Callable[[], int]:
    def run() -> int:
        return sum(len(y) for _, y in split.eval_batches(batch))
    return run


def cached_train(data: DeviceData, batch: int) -> Callable[[], int]:
    def run() -> int:
        g = torch.Generator().manual_seed(0)
        order = data.epoch_order(g)
        steps = data.steps_per_epoch(batch)
        for s in range(steps):
            data.train_batch(order, s, batch, g)
        return steps * batch
    return run


def per_image(label: str, items: list, fn: Callable) -> tuple[str, float]:
    """CPU ms per image of ``fn(item)`` over ``items``, in this process."""
    c0 = time.process_time()
    for it in items:
        fn(it)
    return label, 1000 * (time.process_time() - c0) / len(items)


def large_jpegs(paths: list[Path], n: int) -> list[bytes]:
    """``n`` JPEGs of 500x375 (quality 90), bicubic upsamplings of the first images."""
    out = []
    for p in paths[:n]:
        img = open_rgb(p).resize(LARGE_SIZE, Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def decode_bytes(raw: bytes) -> Image.Image:
    with Image.open(io.BytesIO(raw)) as im:
        return im.convert("RGB")


def measure(root: Path, images: int, workers: list[int], batch: int, large: int, seed: int) -> dict:
    splits, classes, _, base = load_imagenet(root, progress=False)
    full: StreamingImageFolder = splits["train"]
    idx = np.sort(np.random.default_rng(seed).permutation(len(full))[: min(images, len(full))])
    split = full.take(idx).on_device(IMAGENET_MEAN, IMAGENET_STD, "cpu")
    paths = [split.path(i) for i in range(len(split))]
    nbytes = sum(len(p.read_bytes()) for p in paths)  # warm the page cache
    sizes = {}
    for p in paths[:50]:
        with Image.open(p) as im:
            sizes[im.size] = sizes.get(im.size, 0) + 1
    rows = []
    old = os.environ.get(WORKERS_ENV)
    try:
        for w in workers:
            os.environ[WORKERS_ENV] = str(w)
            for path, fn in (("stream, train (decode, RandomResizedCrop, flip)", stream_train(split, batch)),
                             ("stream, eval (decode, Resize 256, CenterCrop 224)", stream_eval(split, batch))):
                wall, cpu, n = timed(fn)
                rows.append({"path": path, "workers": w, "images": n, "wall_s": wall, "img_per_s": n / wall, "cpu_ms_per_img": 1000 * cpu / n})
    finally:
        if old is None:
            os.environ.pop(WORKERS_ENV, None)
        else:
            os.environ[WORKERS_ENV] = old
    # the cached path: decoded once (Resize 256 + CenterCrop 224), held as uint8, batches on the device
    t0 = time.perf_counter()
    decoded = np.stack([to_uint8(eval_transform(open_rgb(p))).numpy() for p in paths])
    decode_once = time.perf_counter() - t0

    cached = DeviceData(SimpleNamespace(images=decoded, labels=split.labels), IMAGENET_MEAN, IMAGENET_STD, "cpu")
    wall, cpu, n = timed(cached_train(cached, batch))
    rows.append({"path": "cached, train (uint8 in memory: gather, crop, flip, normalise)", "workers": "-", "images": n, "wall_s": wall,
                 "img_per_s": n / wall, "cpu_ms_per_img": 1000 * cpu / n})
    # components, one process
    rng = random.Random(seed)
    pil = [open_rgb(p) for p in paths[:200]]
    comps = [per_image("decode (open + RGB)", paths[:200], open_rgb),
             per_image("RandomResizedCrop(224) + flip", pil, lambda im: train_transform(im, 224, rng)),
             per_image("Resize(256) + CenterCrop(224)", pil, eval_transform),
             per_image("to uint8 tensor", [train_transform(im, 224, rng) for im in pil[:50]], to_uint8)]
    raws = large_jpegs(paths, large)
    big = [decode_bytes(r) for r in raws]
    comps_large = [per_image(f"decode ({LARGE_SIZE[0]}x{LARGE_SIZE[1]} JPEG q90, {np.mean([len(r) for r in raws]) / 1024:.0f} KiB mean)", raws, decode_bytes),
                   per_image("RandomResizedCrop(224) + flip", big, lambda im: train_transform(im, 224, rng)),
                   per_image("Resize(256) + CenterCrop(224)", big, eval_transform)]
    built = base / "from-tiny.json"  # made by benchmark.tools.imagenet_from_tiny
    manifest = json.loads(built.read_text()) if built.is_file() else None
    return {"manifest": manifest, "rows": rows, "components": comps, "components_large": comps_large, "images": len(split), "classes": len(classes),
            "folder": str(base), "mean_file_kib": nbytes / len(paths) / 1024, "sizes": sizes, "decode_once_s": decode_once,
            "large": len(raws), "large_kib": float(np.mean([len(r) for r in raws])) / 1024}


def report(res: dict, argv: list[str], load_before: tuple[float, ...], load_after: tuple[float, ...]) -> str:
    cpus = os.cpu_count() or 1
    busy = max(load_before[0], load_after[0]) > 0.5 * cpus
    niceness = os.nice(0)  # this process's priority as it ran (the report shows the command as it was run)
    sizes = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(res["sizes"].items(), key=lambda kv: -kv[1]))
    lines = [
        "# ImageNet input path on the CPU: streamed JPEG files against the in-memory cache",
        "",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} by",
        "",
        "```bash",
        (f"nice -n {niceness} " if niceness > 0 else "") + "python -m benchmark.tools.stream_throughput " + " ".join(argv),
        "```",
        "",
        f"- Machine: {platform.platform()}, {platform.processor() or platform.machine()}, {cpus} CPUs; torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread(s) in this process; DataLoader workers use 1), Pillow {PIL.__version__}.",
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{x:.2f}' for x in load_before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in load_after)}."
        + (f" **The 1-minute load average was above {cpus / 2:g} on {cpus} CPUs (concurrent work, or work that had just "
           "ended)" + (f" and this ran at nice {niceness}" if niceness > 0 else "") + ": the wall-clock rates below may be "
           "below what these cores give when idle. The CPU ms per image are the load-independent figures (CPU time "
           "actually spent, this process and its workers)**."
           if busy else ""),
        f"- Images: {res['images']} training images of {res['classes']} classes under `{res['folder']}` (a seeded sample), "
        f"{res['mean_file_kib']:.1f} KiB per file on average; sizes of the first 50: {sizes}. Files read once before timing "
        "(page cache warm)."
        + (f" The folder: Tiny-ImageNet's original JPEGs laid out by `python -m benchmark.tools.imagenet_from_tiny --classes "
           f"{m['classes']} --train-per-class {m['train_per_class']} --val-per-class {m['val_per_class']}`."
           if (m := res.get("manifest")) else ""),
        "",
        "| path | DataLoader workers | images | wall s | images/s (wall) | CPU ms / image |",
        "|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(f"| {r['path']} | {r['workers']} | {r['images']} | {r['wall_s']:.2f} | {r['img_per_s']:.0f} | {r['cpu_ms_per_img']:.2f} |")
    lines += ["", f"The cache was filled once by decoding these files (Resize 256, CenterCrop 224): {res['decode_once_s']:.1f} s.", "",
              "Per image, one process (CPU ms):", "", "| component | these files | ImageNet-size JPEG |", "|---|---|---|"]
    large = dict(res["components_large"])
    for label, ms in res["components"]:
        match = next((v for k, v in large.items() if k == label), None)
        lines.append(f"| {label} | {ms:.3f} | {'' if match is None else f'{match:.3f}'} |")
    dec_label, dec_ms = res["components_large"][0]
    lines.append(f"| {dec_label} | | {dec_ms:.3f} |")
    train_large = dec_ms + large["RandomResizedCrop(224) + flip"] + dict(res["components"])["to uint8 tensor"]
    per_core = 1000 / train_large
    epoch_core_h = IMAGENET_TRAIN_IMAGES * train_large / 1000 / 3600
    large_kib = res["large_kib"]
    stream_ms = [r["cpu_ms_per_img"] for r in res["rows"] if r["path"].startswith("stream, train")]
    comps = dict(res["components"])
    comp_sum = comps["decode (open + RGB)"] + comps["RandomResizedCrop(224) + flip"] + comps["to uint8 tensor"]
    cached_ms = next(r["cpu_ms_per_img"] for r in res["rows"] if r["path"].startswith("cached"))
    lines += [
        "",
        "## What to expect with real ImageNet",
        "",
        f"- On these {res['classes']}-class 64x64 files the decode is nearly free and the cost is the 224x224 resampling; "
        "real ImageNet JPEGs (about 110 KiB on average, most 500x375) cost the decode of the larger file as well. From the "
        f"ImageNet-size column: about **{train_large:.1f} CPU ms per training image** (decode {dec_ms:.1f} + RandomResizedCrop/flip "
        f"{large['RandomResizedCrop(224) + flip']:.1f} + tensor), i.e. **at most about {per_core:.0f} images/s per worker core**, "
        f"and one ImageNet epoch ({IMAGENET_TRAIN_IMAGES:,} images) costs at least {epoch_core_h:.1f} core-hours of decoding. "
        f"At most: these synthetic files ({large_kib:.0f} KiB, smooth upsampled content) decode faster than real photographs "
        "of ~110 KiB, whose entropy decoding costs more; measure on the cluster's own files with this tool to know.",
        f"- A node with 8 workers (`$PLURES_DATA_WORKERS` defaults to min(8, CPUs)) should stream at most about {8 * per_core:,.0f} "
        f"images/s ({IMAGENET_TRAIN_IMAGES / (8 * per_core) / 60:.0f} min per epoch), 16 workers about {16 * per_core:,.0f} images/s; "
        "ResNet-50 training in mixed precision runs at roughly 2,500-3,000 images/s on one A100 (NVIDIA's "
        f"DeepLearningExamples figures), which needs at least {2750 / per_core:.0f} decoding cores per such GPU at this rate, "
        "more with real files and the loader's overheads (next point): give each GPU several more worker cores than that "
        "(`$PLURES_DATA_WORKERS` may exceed 8 when the node has them), or the GPU waits on the decoder. A slow or network "
        "file system adds reading time not measured here.",
        f"- Overheads: the streamed rows of the table cost {min(stream_ms):.1f}-{max(stream_ms):.1f} CPU ms per image end to "
        f"end, against {comp_sum:.2f} ms for the components alone (decode, crop, tensor) on the same files: collation, "
        "normalisation, worker start-up and inter-process transfer, and on a loaded machine cache misses and context "
        "switches. On an idle node expect the end-to-end cost nearer the components' sum; measure there.",
        f"- The cached path (uint8 already decoded at 224: gather, crop, flip, normalise) measured {cached_ms:.2f} CPU ms per "
        "image here: the streamed path's extra cost is the decode and resampling above, which is why only ImageNet is "
        "streamed (its 1.28 M images at 224x224x3 would take ~190 GB as uint8).",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.stream_throughput", description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=None, help=f"data root holding imagenet/train (default: ${DATA_ENV}, else ./data)")
    p.add_argument("--images", type=int, default=500, help="training images to time (a seeded sample; default 500)")
    p.add_argument("--workers", default="0,1,2", help="DataLoader worker counts, comma-separated (default 0,1,2)")
    p.add_argument("--batch", type=int, default=50, help="batch size (default 50)")
    p.add_argument("--large", type=int, default=50, help="synthetic ImageNet-size JPEGs for the per-image components (default 50)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads of this process (default 1: idle OpenMP threads spin, which inflates CPU time on a busy machine)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the markdown report here (default: print it)")
    args = p.parse_args(argv)
    try:
        workers = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        p.error(f"--workers {args.workers!r}: expected whole numbers separated by commas, e.g. 0,1,2")
    if not workers or min(workers) < 0 or args.images < args.batch or args.batch < 1 or args.large < 1:
        p.error("--workers must be >= 0, --batch >= 1, --images >= --batch, --large >= 1")
    root = args.data_dir or Path(os.environ.get(DATA_ENV) or "data")
    torch.set_num_threads(max(1, args.threads))
    load_before = os.getloadavg()
    res = measure(root, args.images, workers, args.batch, args.large, args.seed)
    text = report(res, argv, load_before, os.getloadavg())
    if args.out:
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

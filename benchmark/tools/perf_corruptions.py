"""Time regenerating all 19 corruptions x 5 severities for N CIFAR test images.

``python -m benchmark.tools.perf_corruptions --n 10000`` (random images) or
``--images test_images.npy`` / ``--jpeg-root /tmp/cifar10-jpeg/test`` (real images).
Reports total seconds, ms per image per pass over the 19 corruptions (one severity each;
the pip ``imagecorruptions`` family needs ~8 ms per 32x32 image per pass), per-corruption
seconds, and the PSNR fidelity table; writes a JSON record (default results/perf/corruptions.json).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from benchmark.corruptions import ALL_CORRUPTIONS, CORRUPTION_SETS, SEVERITIES
from benchmark.corruptions.fidelity import monotone_in_severity, psnr
from benchmark.corruptions.generate import corrupt_array
from benchmark.core.io import atomic_write_json

IMAGECORRUPTIONS_MS_PER_IMAGE_PASS = 8.0


def load_jpeg_folder(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``root/<class>/*.jpg`` in sorted class/file order: (uint8 [N, H, W, 3], int64 [N])."""
    root = Path(root)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"no class folders under {root}")
    images, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            if f.suffix.lower() in (".jpg", ".jpeg", ".png"):
                with Image.open(f) as im:
                    images.append(np.asarray(im.convert("RGB")))
                labels.append(k)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _images(args: argparse.Namespace) -> tuple[np.ndarray, str]:
    if args.images is not None:
        return np.load(args.images)[: args.n], str(args.images)
    if args.jpeg_root is not None:
        return load_jpeg_folder(args.jpeg_root)[0][: args.n], str(args.jpeg_root)
    rng = np.random.default_rng(args.seed)
    return rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8), "random"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the timing and print/write the report."""
    ap = argparse.ArgumentParser(prog="python -m benchmark.tools.perf_corruptions", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="number of images (default 10000)")
    ap.add_argument("--images", type=Path, default=None, help="uint8 .npy [N, 32, 32, 3] of clean images")
    ap.add_argument("--jpeg-root", type=Path, default=None, help="ImageFolder of JPEGs, e.g. /tmp/cifar10-jpeg/test")
    ap.add_argument("--corruptions", default="all19", help=f"set name ({', '.join(CORRUPTION_SETS)}) or comma list")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=Path("results/perf/corruptions.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = CORRUPTION_SETS.get(args.corruptions) or tuple(c.strip() for c in args.corruptions.split(","))
    images, source = _images(args)
    n = len(images)
    per_corruption: dict[str, float] = {}
    psnr_rows: dict[str, dict[int, float]] = {}
    t_all = time.perf_counter()
    for c in tqdm(names, desc="corruptions", disable=None):
        t0 = time.perf_counter()
        outs = {s: corrupt_array(images, c, s, seed=args.seed, batch_size=args.batch_size) for s in SEVERITIES}
        per_corruption[c] = time.perf_counter() - t0
        psnr_rows[c] = {s: float(psnr(images, o).mean()) for s, o in outs.items()}
    total = time.perf_counter() - t_all
    passes = len(SEVERITIES)
    ms_per_image_pass = 1000.0 * total / (n * passes) * (len(ALL_CORRUPTIONS) / len(names))
    import pandas as pd

    table = pd.DataFrame.from_dict(psnr_rows, orient="index")
    table.index.name, table.columns.name = "corruption", "severity"
    mono = monotone_in_severity(table)
    print(f"images: {n} from {source}; threads: {torch.get_num_threads()}; cores: {os.cpu_count()}")
    print(f"total: {total:.1f} s for {len(names)} corruptions x {passes} severities")
    print(f"ms per image per pass over 19 corruptions: {ms_per_image_pass:.2f} "
          f"(imagecorruptions ~{IMAGECORRUPTIONS_MS_PER_IMAGE_PASS:.0f})")
    for c, s in sorted(per_corruption.items(), key=lambda kv: -kv[1]):
        print(f"  {c:18s} {s:7.2f} s  ({1000 * s / (n * passes):.3f} ms/image/severity)")
    print("\nMean PSNR (dB) vs clean:")
    print(table.round(2).assign(monotone=mono).to_string())
    record = {
        "n_images": n,
        "images_source": source,
        "corruptions": list(names),
        "severities": list(SEVERITIES),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "seconds_total": total,
        "ms_per_image_per_pass_19": ms_per_image_pass,
        "reference_imagecorruptions_ms_per_image_per_pass": IMAGECORRUPTIONS_MS_PER_IMAGE_PASS,
        "seconds_per_corruption": per_corruption,
        "psnr_db": {c: {str(s): v for s, v in row.items()} for c, row in psnr_rows.items()},
        "psnr_monotone_decreasing": {c: bool(v) for c, v in mono.items()},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "note": "timing covers corruption only (no .npy writing); fidelity from the same outputs",
    }
    atomic_write_json(args.out, record)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

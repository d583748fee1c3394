"""Per-image cost of every corruption and severity at one image size (one CPU thread by default).

    nice -n 10 python -m benchmark.tools.corruption_cost --profile imagenet --size 224 --batch 4 \\
        --repeats 2 --out results/corruptions/imagenet-c-cost-224.md

Times :func:`benchmark.corruptions.corrupt` on a batch of smooth random images (the cost does not
depend on the content, except JPEG's), after one warm-up call per cell, and reports CPU milliseconds
per image (``time.process_time``: the process's own CPU time, so a machine shared with other work
does not inflate it as it does wall time): the minimum over ``repeats`` of (batch time / batch size). Regenerating ImageNet-C (50,000
images x 15 corruptions x 5 severities) costs the sum of a row's five cells x 50,000 per corruption.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, CORRUPTIONS_VERSION, SEVERITIES, corrupt


def smooth_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """uint8 [n, size, size, 3]: upsampled coarse noise plus fine noise (photo-like spectra, roughly)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, max(size // 16, 2), max(size // 16, 2), generator=g)
    x = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = (0.85 * x + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def cost_table(profile: str, size: int, batch: int, repeats: int, corruptions: Sequence[str]) -> dict[str, dict[int, float]]:
    """corruption -> severity -> ms per image."""
    x = smooth_images(batch, size)
    out: dict[str, dict[int, float]] = {}
    for c in corruptions:
        out[c] = {}
        for s in SEVERITIES:
            corrupt(x[:1], c, s, generator=torch.Generator().manual_seed(0), profile=profile)  # warm-up
            best = float("inf")
            for r in range(repeats):
                t0 = time.process_time()
                corrupt(x, c, s, generator=torch.Generator().manual_seed(r), profile=profile)
                best = min(best, (time.process_time() - t0) / batch * 1000)
            out[c][s] = best
        print(c, " ".join(f"{out[c][s]:.1f}" for s in SEVERITIES), file=sys.stderr, flush=True)
    return out


def to_markdown(table: dict[str, dict[int, float]], profile: str, size: int, batch: int, repeats: int, threads: int,
                command: str) -> str:
    lines = [
        f"# Corruption cost at {size} px (profile `{profile}`)",
        "",
        f"CPU milliseconds per image (process time), {threads} thread(s) ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores visible, shared with other work while measured), batches of {batch}, the best of "
        f"{repeats} timed calls after a warm-up; corruption code version {CORRUPTIONS_VERSION}. The last column is "
        "the CPU time one corruption's five severities take for the 50,000 ImageNet validation images.",
        "",
        f"Measure again: `{command}`",
        "",
        "| corruption | " + " | ".join(f"s{s}" for s in SEVERITIES) + " | mean | 50,000 x 5 severities (CPU hours) |",
        "|---|" + "---:|" * (len(SEVERITIES) + 2),
    ]
    total = 0.0
    for c, row in table.items():
        vals = [row[s] for s in SEVERITIES]
        hours = sum(vals) * 50_000 / 1000 / 3600
        if c in BENCHMARK_CORRUPTIONS:
            total += hours
        extra = "" if c in BENCHMARK_CORRUPTIONS else " (extra)"
        lines.append(f"| {c}{extra} | " + " | ".join(f"{v:.1f}" for v in vals) + f" | {np.mean(vals):.1f} | {hours:.2f} |")
    lines += ["", f"The 15 benchmark corruptions: {total:.1f} CPU hours for all of ImageNet-C at this rate."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.tools.corruption_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="imagenet")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    table = cost_table(args.profile, args.size, args.batch, args.repeats, names)
    command = "nice -n 10 python -m benchmark.tools.corruption_cost " + " ".join(argv if argv is not None else sys.argv[1:])
    text = to_markdown(table, args.profile, args.size, args.batch, args.repeats, args.threads, command)
    if args.out:
        from benchmark.core.io import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

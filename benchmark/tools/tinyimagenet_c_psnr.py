"""PSNR of regenerated Tiny-ImageNet-C against the clean images, per corruption and severity.

Decodes a seeded sample of the Tiny-ImageNet-200 validation images (``val_<N>`` order, as the
``tinyimagenet`` dataset's test split) straight from ``tiny-imagenet-200-val.tar.gz`` (or the
extracted ``tiny-imagenet-200-val/`` folder) in the data root, regenerates every corruption and
severity with the ``tinyimagenet`` profile in the release's layout (JPEG quality 85, as
:mod:`benchmark.data.corrupted.tinyimagenet_c` writes it), reads the cells back and reports the mean
PSNR against clean, with and without the JPEG step, and whether it falls with severity.

    nice -n 10 python -m benchmark.tools.tinyimagenet_c_psnr --data-dir ../shared/data \\
        --n 200 --seed 0 --out results/corruptions/tinyimagenet-c-psnr.md
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from benchmark.corruptions import ALL_CORRUPTIONS, BENCHMARK_CORRUPTIONS, CORRUPTIONS_VERSION, SEVERITIES
from benchmark.corruptions.fidelity import monotone_in_severity, psnr
from benchmark.corruptions.generate import corrupt_array
from benchmark.corruptions.params import PARAMS
from benchmark.data.base import resolve_data_dir
from benchmark.data.corrupted.base import subset_indices
from benchmark.data.corrupted.tinyimagenet_c import generate_tinyimagenet_c, jpeg_bytes, read_cell

VAL_FILE = re.compile(r"(?:^|/)val/(n\d+)/val_(\d+)\.jpe?g$", re.IGNORECASE)


def read_val_sample(root: Path, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(images uint8 [n, 64, 64, 3], labels [n], val indices [n], val images, classes) of a seeded sample.

    Labels are positions in the sorted wnids; the sample is :func:`subset_indices` over the
    ``val_<N>`` order (so the same images as ``eval.corruption_subset = n`` with ``corruption_seed = seed``).
    """
    entries: dict[int, tuple[str, bytes | Path]] = {}
    folder, tarball = root / "tiny-imagenet-200-val", root / "tiny-imagenet-200-val.tar.gz"
    if folder.is_dir():
        for p in folder.rglob("*"):
            m = VAL_FILE.search(p.relative_to(root).as_posix())
            if m:
                entries[int(m.group(2))] = (m.group(1), p)
    elif tarball.is_file():
        with tarfile.open(tarball, "r:*") as tar:
            members = {}
            for member in tar:
                m = VAL_FILE.search(member.name)
                if m and member.isfile():
                    members[int(m.group(2))] = (m.group(1), member)
            total = len(members)
            keep = set(subset_indices(total, n, seed).tolist())
            for k, (w, member) in members.items():
                entries[k] = (w, tar.extractfile(member).read() if k in keep else b"")
    else:
        raise SystemExit(f"neither {folder}/ nor {tarball} found: point --data-dir at the folder that holds them")
    if sorted(entries) != list(range(len(entries))):
        raise SystemExit(f"val file names are not val_0 .. val_{len(entries) - 1}")
    wnids = sorted({w for w, _ in entries.values()})
    idx = subset_indices(len(entries), n, seed)
    images = []
    for k in idx:
        src = entries[int(k)][1]
        raw = src.read_bytes() if isinstance(src, Path) else src
        with Image.open(io.BytesIO(raw)) as im:
            images.append(np.asarray(im.convert("RGB")))
    labels = np.array([wnids.index(entries[int(k)][0]) for k in idx], dtype=np.int64)
    return np.stack(images), labels, idx, len(entries), len(wnids)


def tables(images: np.ndarray, labels: np.ndarray, idx: np.ndarray, total: int, num_classes: int, seed: int,
           corruptions: Sequence[str], work: Path) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(PSNR of the regenerated set read back, PSNR before the JPEG step, seconds to regenerate)."""
    t0 = time.perf_counter()
    out = generate_tinyimagenet_c(images, labels, work, indices=idx, num_classes=num_classes, corruptions=corruptions,
                                  severities=SEVERITIES, seed=seed, progress=False)
    seconds = time.perf_counter() - t0
    test_labels = np.full(total, -1, dtype=np.int64)  # only the sampled ones are read
    test_labels[idx] = labels
    after, before = {}, {}
    for c in corruptions:
        after[c], before[c] = {}, {}
        for s in SEVERITIES:
            # read back as the evaluation does: the eval.corruption_subset = n sample of the val order
            cell, cell_labels, rows = read_cell(out, c, s, num_classes, test_labels, len(idx), seed, images.shape[1:3])
            assert np.array_equal(rows, idx) and np.array_equal(cell_labels, labels)
            after[c][s] = float(psnr(images, cell).mean())
            raw = corrupt_array(images, c, s, seed=seed, batch_size=500, profile="tinyimagenet")
            before[c][s] = float(psnr(images, raw).mean())
    frame = lambda d: pd.DataFrame.from_dict(d, orient="index").rename_axis(index="corruption", columns="severity")  # noqa: E731
    return frame(after), frame(before), seconds


def _param_text(c: str) -> str:
    vals = PARAMS["tinyimagenet"][c]
    if c == "zoom_blur":
        return " / ".join(f"1..{float(v[-1]):.2f}" for v in vals)
    return " / ".join(str(tuple(round(float(x), 3) for x in v)) if isinstance(v, tuple) else f"{v:g}" for v in vals)


def to_markdown(after: pd.DataFrame, before: pd.DataFrame, jpeg_only: float, n: int, seed: int, seconds: float,
                command: str, notes: dict[str, str]) -> str:
    mono_after = monotone_in_severity(after)
    mono_before = monotone_in_severity(before)
    lines = [
        "# Regenerated Tiny-ImageNet-C: PSNR against clean",
        "",
        f"Mean PSNR (dB) of {n} Tiny-ImageNet-200 validation images (a seeded sample, seed {seed}: the images "
        f"`eval.corruption_subset = {n}` evaluates) against their corrupted versions, regenerated with the "
        "`tinyimagenet` profile (make_tinyimagenet_c.py's parameters) and saved as JPEG quality 85 in the release's "
        "layout, as `tinyimagenet-c-regenerated` makes them, then read back. "
        f"Corruption code version {CORRUPTIONS_VERSION}. For scale: the JPEG q85 step alone gives {jpeg_only:.2f} dB. "
        + (f"Regenerating the {len(after)} x 5 cells took {seconds:.0f} s on one CPU process (shared with other work)."
           if seconds > 1 else ""),
        "",
        f"Regenerate: `{command}`",
        "",
        "| corruption | " + " | ".join(f"s{s}" for s in after.columns) + " | falls with severity | before JPEG: s1 .. s5 | falls before JPEG |",
        "|---|" + "---:|" * len(after.columns) + "---|---|---|",
    ]
    for c in after.index:
        bench = "" if c in BENCHMARK_CORRUPTIONS else " (extra)"
        pre = " / ".join(f"{v:.2f}" for v in before.loc[c])
        lines.append(f"| {c}{bench} | " + " | ".join(f"{v:.2f}" for v in after.loc[c])
                     + f" | {'yes' if mono_after[c] else '**no**'} | {pre} | {'yes' if mono_before[c] else '**no**'} |")
    lines += ["", "Parameters per severity (make_tinyimagenet_c.py):", ""]
    lines += [f"- {c}: {_param_text(c)}" for c in after.index]
    exceptions = [c for c in after.index if not (mono_after[c] and mono_before[c])]
    lines += ["", "Where PSNR does not fall at every step:" if exceptions else "PSNR falls at every step for every corruption.", ""]
    lines += [f"- {c}: {notes.get(c, '(no explanation recorded)')}" for c in exceptions]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmark.tools.tinyimagenet_c_psnr", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="data root holding tiny-imagenet-200-val(.tar.gz) (default $PLURES_DATA_DIR)")
    ap.add_argument("--n", type=int, default=200, help="validation images sampled (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="sample and regeneration seed (default 0)")
    ap.add_argument("--corruptions", default=",".join(ALL_CORRUPTIONS))
    ap.add_argument("--notes", type=Path, default=None, help="optional 'corruption: explanation' lines for non-monotone rows")
    ap.add_argument("--out", type=Path, default=None, help="markdown file to write (default: print)")
    ap.add_argument("--work", type=Path, default=None,
                    help="folder for the regenerated cells, kept and reused by a repeat run (default: a temporary folder)")
    args = ap.parse_args(argv)
    root = resolve_data_dir(args.data_dir)
    images, labels, idx, total, classes = read_val_sample(root, args.n, args.seed)
    corruptions = [c.strip() for c in args.corruptions.split(",") if c.strip()]
    if args.work is not None:
        after, before, seconds = tables(images, labels, idx, total, classes, args.seed, corruptions, args.work)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            after, before, seconds = tables(images, labels, idx, total, classes, args.seed, corruptions, Path(tmp) / "tic")
    jpeg_only = float(np.mean([psnr(im[None], np.asarray(Image.open(io.BytesIO(jpeg_bytes(im))).convert("RGB"))[None])[0]
                               for im in images]))
    notes = {}
    if args.notes and args.notes.is_file():
        for line in args.notes.read_text().splitlines():
            if ":" in line:
                k, v = line.split(":", 1)
                notes[k.strip()] = v.strip()
    shown = list(argv if argv is not None else sys.argv[1:])
    if "--work" in shown:  # a local folder: not part of the command that regenerates the table
        k = shown.index("--work")
        del shown[k : k + 2]
    command = "nice -n 10 python -m benchmark.tools.tinyimagenet_c_psnr " + " ".join(shown)
    text = to_markdown(after, before, jpeg_only, len(images), args.seed, seconds, command, notes)
    if args.out:
        from benchmark.core.io import atomic_write_text

        atomic_write_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Regenerate CIFAR-10-C / CIFAR-100-C style sets in the official layout.

``out_dir/<corruption>.npy``: uint8 [S*N, 32, 32, 3], severity-major (rows (s-1)*N..s*N-1
are severity s); ``out_dir/labels.npy``: the labels tiled S times; ``out_dir/regenerated.json``
marks the folder as regenerated (not the Zenodo release) and records how.

Each (corruption, severity) gets its own generator seeded from (seed, corruption, severity),
consumed batch by batch, so regenerating one corruption reproduces its bytes (for the same
images, seed and batch_size). Existing corruption files are kept: a crashed run resumes.

CLI: ``python -m benchmark.corruptions.generate --images X.npy --labels Y.npy --out DIR``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

import benchmark
from benchmark.corruptions import (
    ALL_CORRUPTIONS,
    CORRUPTION_SETS,
    CORRUPTIONS_VERSION,
    check_corruption,
    check_profile,
    check_severity,
    corrupt,
)
from benchmark.core.io import atomic_save_npy, atomic_write_json

MANIFEST = "regenerated.json"


def cell_seed(seed: int, corruption: str, severity: int) -> int:
    """The 63-bit generator seed of one (corruption, severity) cell of a regenerated set: sha256 of
    (seed, corruption, severity), stable across runs and platforms. (Not the harness's
    :func:`benchmark.core.runtime.hash_seed`: regenerated sets keep the bytes they were made with.)"""
    digest = hashlib.sha256(f"plures-corruptions/{int(seed)}/{corruption}/{int(severity)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def array_sha256(a: np.ndarray) -> str:
    """sha256 of an array's dtype, shape and C-order bytes."""
    h = hashlib.sha256(f"{a.dtype.str}{tuple(a.shape)}".encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def corrupt_array(
    images: np.ndarray, corruption: str, severity: int, *, seed: int, batch_size: int = 1000, profile: str = "cifar"
) -> np.ndarray:
    """Corrupt uint8 [N, H, W, 3] in batches with the derived generator: uint8 [N, H, W, 3]."""
    g = torch.Generator().manual_seed(cell_seed(seed, corruption, severity))
    out = np.empty_like(images)
    for s in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[s : s + batch_size]))
        out[s : s + batch_size] = corrupt(batch, corruption, severity, generator=g, profile=profile).numpy()
    return out


def _check_inputs(images: np.ndarray, labels: np.ndarray, severities: Sequence[int], batch_size: int) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        got = f"{getattr(images, 'shape', None)} {getattr(images, 'dtype', type(images).__name__)}"
        raise ValueError(f"images must be uint8 [N, 32, 32, 3]; got {got}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers of shape [{len(images)}]; got {labels.shape} {labels.dtype}")
    for s in severities:
        check_severity(s)
    if list(severities) != sorted(set(severities)):
        raise ValueError(f"severities must be increasing and distinct; got {list(severities)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")


def _identity(images: np.ndarray, labels: np.ndarray, severities: Sequence[int], seed: int, batch_size: int, profile: str) -> dict:
    """What must match for existing files in a folder to be reused."""
    return {
        "seed": int(seed),
        "severities": [int(s) for s in severities],
        "n": int(len(images)),
        "images_sha256": array_sha256(images),
        "labels_sha256": array_sha256(np.asarray(labels).astype(np.int64)),
        "batch_size": int(batch_size),
        "profile": profile,
        "code_version": {"benchmark": benchmark.__version__, "corruptions": CORRUPTIONS_VERSION},
    }


def _stale_code(old: dict, identity: dict) -> bool:
    """True when a manifest differs from ``identity`` in the code version alone."""
    diff = {k for k in identity if old.get(k) != identity[k]}
    return diff == {"code_version"}


def _manifest(identity: dict, done: list[str], complete: bool) -> dict:
    return {
        "source": "regenerated",
        "note": "Regenerated with plures' benchmark.corruptions; NOT the official CIFAR-C release "
        "(Zenodo 2535967 / 3555552). Frost, motion blur, snow and spatter depart from the "
        "original (see benchmark/corruptions module docstrings).",
        **identity,
        "corruptions": done,
        "complete": complete,
    }


def _load_manifest(out_dir: Path) -> dict | None:
    path = out_dir / MANIFEST
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _done(out_dir: Path, rows: int) -> list[str]:
    """Corruptions whose file exists with the expected row count, in ALL_CORRUPTIONS order."""
    done = []
    for c in ALL_CORRUPTIONS:
        f = out_dir / f"{c}.npy"
        if f.exists():
            arr = np.load(f, mmap_mode="r")
            if arr.shape == (rows, 32, 32, 3) and arr.dtype == np.uint8:
                done.append(c)
    return done


def generate_cifar_c(
    images: np.ndarray,
    labels: np.ndarray,
    out_dir: Path,
    *,
    corruptions: Sequence[str] = ALL_CORRUPTIONS,
    severities: Sequence[int] = (1, 2, 3, 4, 5),
    seed: int = 0,
    batch_size: int = 1000,
    progress: bool = True,
    profile: str = "cifar",
) -> Path:
    """Write ``out_dir/<corruption>.npy`` + ``labels.npy`` + ``regenerated.json``; return ``out_dir``.

    images: uint8 [N, 32, 32, 3]; labels: int [N]; ``profile``: the corruption constants
    (:data:`benchmark.corruptions.params.PROFILES`). Files already present for the same inputs
    are reused (a repeat call returns at once); a folder made from other inputs, or holding
    an official release, raises ValueError rather than mixing sets.
    """
    out_dir = Path(out_dir)
    corruptions = [check_corruption(c) for c in corruptions]
    _check_inputs(images, labels, severities, batch_size)
    identity = _identity(images, labels, severities, seed, batch_size, check_profile(profile))
    rows = len(severities) * len(images)
    old = _load_manifest(out_dir)
    stale = old is not None and _stale_code(old, identity)
    if stale:
        # made by an older generator from the same inputs: a stale cache, regenerated in place
        warnings.warn(f"{out_dir} was regenerated by corruption code {old.get('code_version')}; "
                      f"regenerating it with {identity['code_version']}", stacklevel=2)
        for c in ALL_CORRUPTIONS:
            (out_dir / f"{c}.npy").unlink(missing_ok=True)
        old = None
    if old is not None:
        old_id = {k: old.get(k) for k in identity}
        if old_id != identity:
            diff = sorted(k for k in identity if old_id[k] != identity[k])
            raise ValueError(
                f"{out_dir} holds a set regenerated from different inputs (differs in {diff}); "
                "use another out_dir or delete that folder"
            )
        if old.get("complete") and set(corruptions) <= set(old.get("corruptions", [])):
            if all((out_dir / f"{c}.npy").exists() for c in corruptions) and (out_dir / "labels.npy").exists():
                return out_dir
    elif not stale and out_dir.exists() and any(out_dir.glob("*.npy")):
        raise ValueError(
            f"{out_dir} holds .npy files but no {MANIFEST} (an official release or foreign data); "
            "refusing to write into it; use another out_dir"
        )
    done = _done(out_dir, rows) if out_dir.exists() else []
    atomic_write_json(out_dir / MANIFEST, _manifest(identity, done, complete=False))
    label_dtype = np.uint8 if int(np.max(labels, initial=0)) < 256 and int(np.min(labels, initial=0)) >= 0 else np.int64
    if not (out_dir / "labels.npy").exists():
        atomic_save_npy(out_dir / "labels.npy", np.tile(np.asarray(labels).astype(label_dtype), len(severities)))
    todo = [c for c in corruptions if c not in done]
    n = len(images)
    bar = tqdm(total=len(todo) * len(severities), desc="cifar-c", unit="set", disable=None if progress else True)
    for c in todo:
        out = np.empty((rows, 32, 32, 3), dtype=np.uint8)
        for k, s in enumerate(severities):
            bar.set_postfix_str(f"{c} s{s}")
            out[k * n : (k + 1) * n] = corrupt_array(images, c, s, seed=seed, batch_size=batch_size, profile=profile)
            bar.update(1)
        atomic_save_npy(out_dir / f"{c}.npy", out)
        done.append(c)
    bar.close()
    done = [c for c in ALL_CORRUPTIONS if c in set(done)]
    atomic_write_json(out_dir / MANIFEST, _manifest(identity, done, complete=True))
    return out_dir


def _parse_corruptions(text: str) -> list[str]:
    if text in CORRUPTION_SETS:
        return list(CORRUPTION_SETS[text])
    return [check_corruption(c.strip()) for c in text.split(",") if c.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: regenerate a CIFAR-C style folder from clean test images."""
    ap = argparse.ArgumentParser(
        prog="python -m benchmark.corruptions.generate",
        description="Regenerate CIFAR-10-C/100-C style corrupted test sets in the official .npy layout.",
    )
    ap.add_argument("--images", type=Path, required=True, help="uint8 .npy [N, 32, 32, 3] of clean test images")
    ap.add_argument("--labels", type=Path, required=True, help="integer .npy [N] of test labels")
    ap.add_argument("--out", type=Path, required=True, help="output folder (e.g. data/CIFAR-10-C-regen)")
    ap.add_argument("--corruptions", default="all19",
                    help=f"a set name ({', '.join(CORRUPTION_SETS)}) or a comma-separated list (default all19)")
    ap.add_argument("--severities", default="1,2,3,4,5", help="comma-separated severities (default 1,2,3,4,5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    images = np.load(args.images)
    labels = np.load(args.labels)
    out = generate_cifar_c(
        images, labels, args.out,
        corruptions=_parse_corruptions(args.corruptions),
        severities=[int(s) for s in args.severities.split(",")],
        seed=args.seed, batch_size=args.batch_size, progress=not args.no_progress,
    )
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

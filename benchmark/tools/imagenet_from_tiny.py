"""An ImageNet-layout folder made of Tiny-ImageNet's real ImageNet JPEGs, to run the ``imagenet``
dataset path (streamed decoding, Resize(256)/CenterCrop(224), RandomResizedCrop, ImageNet-C
regenerated on the fly, mCE against AlexNet) on real files where ImageNet itself is not at hand.

    nice -n 10 python -m benchmark.tools.imagenet_from_tiny --data-dir ../shared/data \\
        --out data/imagenet-from-tiny --classes 100 --train-per-class 500 --val-per-class 50

writes ``<out>/imagenet/train/<wnid>/<wnid>_<N>.JPEG`` and ``<out>/imagenet/val/<wnid>/val_<N>.JPEG``,
the layout :func:`benchmark.data.datasets.imagenet.load_imagenet` reads from a data root, so
``--data-dir <out>`` (or ``PLURES_DATA_DIR=<out>``) with ``run.dataset = "imagenet"`` trains on it.

- Source: ``tiny-imagenet-200-train.tar.gz`` and ``tiny-imagenet-200-val.tar.gz`` in the data root
  (sha256-checked unless ``--no-verify``; streamed member by member with :mod:`tarfile`, nothing
  extracted besides the chosen images), or their extracted folders.
- Classes: the first ``--classes`` wnids of the train split in sorted order (ImageNet's class order
  is the sorted wnids too). Images: per class, the ``--train-per-class`` train images and
  ``--val-per-class`` val images with the smallest release numbers ``N`` (500 and 50 per class exist).
  The same arguments always give the same files, whatever the order of the tarball's members.
- The JPEG bytes are copied unchanged (no re-encoding): 64x64, 1,821 train and 168 val images of
  the release are grayscale JPEGs, which the ImageNet loader converts to RGB as it must for real
  ImageNet's grayscale files. The images are 64x64, so Resize(256) upsamples them 4x: the accuracy
  of a model trained on this folder says nothing about ImageNet; the folder checks the code path and
  measures its decoding cost per file.
- Idempotent and atomic: the folder is built under ``<out>/.imagenet.tmp-<pid>/`` and renamed to
  ``<out>/imagenet/`` when complete, with ``<out>/imagenet/from-tiny.json`` (the arguments and the
  source tarballs' sha256). Run again with the same arguments: nothing is done. With other arguments
  it stops naming the difference, unless ``--force`` (the old folder is then replaced, also atomically).

Not imported by the product (a tool beside it, like :mod:`benchmark.tools.perf`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

from benchmark.data.base import DATA_ENV, DataError
from benchmark.data.datasets.tinyimagenet import TRAIN, VAL, TinyPart, check_tarball, find_part

FOLDER = "imagenet"
MANIFEST = "from-tiny.json"
MAX_TRAIN_PER_CLASS, MAX_VAL_PER_CLASS, MAX_CLASSES = 500, 50, 200


@dataclass(frozen=True)
class Request:
    """What to build: the first ``classes`` sorted wnids, ``train``/``val`` images per class."""

    classes: int
    train: int
    val: int

    def check(self) -> None:
        for name, value, top in (("--classes", self.classes, MAX_CLASSES), ("--train-per-class", self.train, MAX_TRAIN_PER_CLASS),
                                 ("--val-per-class", self.val, MAX_VAL_PER_CLASS)):
            if not 1 <= value <= top:
                raise ValueError(f"{name} {value} out of range: Tiny-ImageNet-200 has between 1 and {top}")


@dataclass
class _Pick:
    """The ``keep`` images with the smallest N of at most ``limit`` classes with the smallest wnids
    seen so far (memory: limit x keep JPEGs, whatever the order of the members)."""

    limit: int | None  # None: only the classes in ``only``
    keep: int
    only: frozenset[str] | None = None
    per_class: dict[str, dict[int, tuple[str, bytes]]] = field(default_factory=dict)  # wnid -> N -> (file name, JPEG)
    seen: set[str] = field(default_factory=set)  # every wnid met (to report what the split holds)

    def offer(self, wnid: str, n: int, read: Callable[[], tuple[str, bytes]]) -> None:
        """Consider image N of ``wnid``; ``read`` (file name and bytes) is called only if it is kept."""
        self.seen.add(wnid)
        if self.only is not None and wnid not in self.only:
            return
        if wnid not in self.per_class:
            if self.limit is not None and len(self.per_class) >= self.limit:
                largest = max(self.per_class)
                if wnid > largest:
                    return
                del self.per_class[largest]
            self.per_class[wnid] = {}
        images = self.per_class[wnid]
        if n in images:
            raise DataError(f"two images numbered {n} in class {wnid}")
        if len(images) < self.keep:
            images[n] = read()
        elif n < (worst := max(images)):
            del images[worst]
            images[n] = read()


def _members(src: Path, part: TinyPart) -> Iterator[tuple[str, int, str, Callable[[], bytes]]]:
    """(wnid, N, file name, read-bytes callable) for every image of a part, tarball or folder."""
    pattern = re.compile(part.pattern, flags=re.IGNORECASE)

    def parse(wnid: str, name: str, where: str) -> int | None:
        if not name.lower().endswith((".jpeg", ".jpg")):
            return None
        m = pattern.match(name)
        if m is None or (part.split == "train" and m.group(1) != wnid):
            raise DataError(f"unexpected image name {where}; expected {part.layout(src.parent)}")
        return int(m.group(m.lastindex))

    if src.is_dir():
        base = src / part.split
        if not base.is_dir():
            raise DataError(f"missing folder {base}; expected {part.layout(src.parent)}")
        for d in sorted(p for p in base.iterdir() if p.is_dir()):
            for f in sorted(d.iterdir()):
                n = parse(d.name, f.name, str(f))
                if n is not None:
                    yield d.name, n, f.name, f.read_bytes
        return
    try:
        with tarfile.open(src, "r|gz") as tar:  # a stream: members are read in order, never sought
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 4 or parts[1] != part.split:
                    continue
                n = parse(parts[2], parts[3], f"{src}:{member.name}")
                if n is not None:
                    yield parts[2], n, parts[3], lambda m=member: tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{src} is not a readable .tar.gz ({type(exc).__name__}: {exc}); copy {part.filename} again") from None


def collect(root: Path, request: Request, verify: bool = True) -> tuple[dict[str, dict[str, dict[int, tuple[str, bytes]]]], dict]:
    """{split: {wnid: {N: (file name, JPEG bytes)}}} and the sources (path, sha256 or folder)."""
    request.check()
    out: dict[str, dict[str, dict[int, tuple[str, bytes]]]] = {}
    sources: dict[str, dict] = {}
    wnids: list[str] | None = None
    for part, keep in ((TRAIN, request.train), (VAL, request.val)):
        src = find_part(root, part)
        if src.is_file() and verify:
            check_tarball(src, part)
        sources[part.split] = {"path": str(src), "sha256": part.sha256 if src.is_file() and verify else None}
        pick = _Pick(request.classes if wnids is None else None, keep, None if wnids is None else frozenset(wnids))
        for wnid, n, name, read in _members(src, part):
            pick.offer(wnid, n, lambda name=name, read=read: (name, read()))
        if wnids is None:
            wnids = sorted(pick.per_class)
            if len(wnids) < request.classes:
                raise DataError(f"{src} holds {len(pick.seen)} classes; --classes {request.classes} asks for more")
        short = {w: len(pick.per_class.get(w, {})) for w in wnids if len(pick.per_class.get(w, {})) < keep}
        if short:
            w = next(iter(short))
            raise DataError(f"{src}: class {w} has {short[w]} {part.split} images, fewer than the {keep} asked for "
                            f"({len(short)} such classes)")
        out[part.split] = {w: dict(sorted(pick.per_class[w].items())) for w in wnids}
    return out, sources


def _manifest(request: Request, sources: dict, wnids: Sequence[str]) -> dict:
    return {"tool": "benchmark.tools.imagenet_from_tiny", "classes": request.classes, "train_per_class": request.train,
            "val_per_class": request.val, "wnids": list(wnids),
            "sources": {k: Path(v["path"]).name for k, v in sources.items()},
            "note": "Tiny-ImageNet-200's 64x64 JPEGs (original bytes) in the ImageNet layout: a code-path check, not ImageNet"}


def _same(existing: dict, wanted: dict) -> list[str]:
    keys = ("classes", "train_per_class", "val_per_class", "sources")
    return [f"{k}: {existing.get(k)!r} there, {wanted[k]!r} asked" for k in keys if existing.get(k) != wanted[k]]


def build(root: Path, out: Path, request: Request, *, force: bool = False, verify: bool = True, log=print) -> Path:
    """Build (or find up to date) ``<out>/imagenet``; returns that folder."""
    request.check()
    out = Path(out)
    target = out / FOLDER
    wanted_keys = {"classes": request.classes, "train_per_class": request.train, "val_per_class": request.val,
                   "sources": {p.split: p.filename if find_part(root, p).is_file() else p.folder for p in (TRAIN, VAL)}}
    if target.exists():
        try:
            existing = json.loads((target / MANIFEST).read_text())
        except (OSError, ValueError):
            existing = None
        if existing is None:
            raise DataError(f"{target} exists and was not made by this tool (no readable {MANIFEST}); choose another --out")
        diff = _same(existing, wanted_keys)
        if not diff:
            log(f"{target}: up to date ({request.classes} classes, {request.train} train and {request.val} val images per class)")
            return target
        if not force:
            raise DataError(f"{target} was built with other arguments ({'; '.join(diff)}); pass --force to replace it")
    t0 = time.perf_counter()
    images, sources = collect(Path(root), request, verify)
    wnids = list(images["train"])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{FOLDER}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        for split, classes in images.items():
            for wnid, files in classes.items():
                d = tmp / split / wnid
                d.mkdir(parents=True)
                for name, raw in files.values():
                    (d / name).write_bytes(raw)
        manifest = _manifest(request, sources, wnids)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        old = None
        if target.exists():  # --force: swap, then delete the old folder
            old = out / f".{FOLDER}.old-{os.getpid()}"
            target.rename(old)
        tmp.rename(target)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_train, n_val = (sum(len(v) for v in images[s].values()) for s in ("train", "val"))
    log(f"{target}: {len(wnids)} classes, {n_train} train and {n_val} val images in {time.perf_counter() - t0:.1f} s")
    return target


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.imagenet_from_tiny", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None,
                   help=f"the data root holding the Tiny-ImageNet tarballs (default: ${DATA_ENV}, else ./data)")
    p.add_argument("--out", type=Path, required=True, help="data root to write: <out>/imagenet/{train,val}/<wnid>/*.JPEG")
    p.add_argument("--classes", type=int, default=100, help=f"the first N wnids in sorted order (1-{MAX_CLASSES}; default 100)")
    p.add_argument("--train-per-class", type=int, default=MAX_TRAIN_PER_CLASS, help=f"train images per class (1-{MAX_TRAIN_PER_CLASS}; default all)")
    p.add_argument("--val-per-class", type=int, default=MAX_VAL_PER_CLASS, help=f"val images per class (1-{MAX_VAL_PER_CLASS}; default all)")
    p.add_argument("--force", action="store_true", help="replace an <out>/imagenet built with other arguments")
    p.add_argument("--no-verify", action="store_true", help="skip the tarballs' sha256 check")
    args = p.parse_args(argv)
    root = args.data_dir or Path(os.environ.get(DATA_ENV) or "data")
    try:
        build(root, args.out, Request(args.classes, args.train_per_class, args.val_per_class), force=args.force, verify=not args.no_verify)
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

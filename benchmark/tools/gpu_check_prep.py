"""The GPU check's data preparation, run in the background while the GPU stages run.

``python -m benchmark.tools.gpu_check_prep --dataset cifar10-jpeg --workers 14 ...`` decodes the
dataset into the uint8 cache and regenerates its corrupted test set (the folder that runs with
``eval.corruptions = "regenerated"`` read) with one process per (corruption, severity) cell, in
parallel; ``generate_cifar_c`` then finds every file in place and only completes its manifest,
so a run reads exactly what it would have generated itself, serially. Writes a JSON status file.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import atomic_save_npy, atomic_write_json

_IMAGES: np.ndarray | None = None  # the clean test images, inherited by the forked workers


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _cell(corruption: str, severity: int, seed: int, profile: str) -> np.ndarray:
    from ..corruptions.generate import corrupt_array

    assert _IMAGES is not None
    return corrupt_array(_IMAGES, corruption, severity, seed=seed, profile=profile)


def regenerated_path(dataset: str, n: int, ev: dict[str, Any], data_dir: str | None, cache_dir: str | None) -> Path:
    """The folder ``benchmark.data.corrupted.cifar_c.regenerated_folder`` uses for ``n`` evaluated test images."""
    from ..data.base import resolve_cache_dir, resolve_data_dir

    root = resolve_cache_dir(cache_dir, resolve_data_dir(data_dir))
    return root / f"{dataset}-C" / f"regenerated-seed{ev['corruption_seed']}-n{n}-{ev['corruption_set']}"


def prepare(dataset: str, data_dir: str | None, cache_dir: str | None, evaluation: dict[str, Any], workers: int, log: Any = print,
            test_size: int | None = None) -> dict[str, Any]:
    """Decode ``dataset`` (cached) and regenerate its corrupted test set as a run with the
    ``[eval]`` settings ``evaluation`` (defaults for what it omits) reads it. A sample
    (``corruption_subset``) not smaller than the test set (``test_size``, when known) is skipped."""
    subset = int(evaluation.get("corruption_subset", 0))
    if subset and test_size is not None and subset >= test_size:
        return {"skipped": f"sample of {subset} >= {test_size} test images"}
    global _IMAGES
    from ..core.config import EvalSection
    from ..core.runtime import Environment
    from ..corruptions.generate import generate_cifar_c
    from ..data.base import load_dataset
    from ..data.corrupted.base import subset_indices
    from ..data.corrupted.cifar_c import regenerated_folder
    from ..corruptions import corruption_set

    status: dict[str, Any] = {"dataset": dataset, "eval": evaluation, "workers": workers}
    t0 = time.perf_counter()
    data = load_dataset(dataset, data_dir, cache_dir, progress=False)
    status["decode_seconds"] = time.perf_counter() - t0
    status.update(train=len(data.train), test=len(data.test))
    log(f"prep: {dataset} decoded or read from the cache in {status['decode_seconds']:.1f}s ({len(data.train)} train, {len(data.test)} test)")
    ev = {**EvalSection().__dict__, **evaluation, "corruptions": "regenerated"}
    if subset and subset >= len(data.test):
        return {"skipped": f"sample of {subset} >= {len(data.test)} test images"}
    idx = subset_indices(len(data.test), subset, int(ev["corruption_seed"]))
    images = np.ascontiguousarray(data.test.images[idx])
    labels = np.asarray(data.test.labels[idx])
    folder = regenerated_path(data.name, len(idx), ev, data_dir, cache_dir)
    corruptions = list(corruption_set(ev["corruption_set"]))
    severities = tuple(ev["corruption_severities"])
    profile = data.spec.corruption_profile
    t1 = time.perf_counter()
    # the manifest first (no corruption yet), so that the files written below count as done
    generate_cifar_c(images, labels, folder, corruptions=[], severities=severities, seed=int(ev["corruption_seed"]), progress=False, profile=profile)
    todo = [c for c in corruptions if not (folder / f"{c}.npy").exists()]
    _IMAGES = images
    n = len(images)
    with ProcessPoolExecutor(max(1, workers), mp_context=multiprocessing.get_context("fork"), initializer=_one_thread) as pool:
        futures = {c: [pool.submit(_cell, c, s, int(ev["corruption_seed"]), profile) for s in severities] for c in todo}
        for c, cells in futures.items():
            out = np.empty((len(severities) * n, *images.shape[1:]), dtype=np.uint8)
            for k, f in enumerate(cells):
                out[k * n : (k + 1) * n] = f.result()
            atomic_save_npy(folder / f"{c}.npy", out)
    env = Environment(data_dir=data_dir, cache_dir=cache_dir, progress=False)
    final = regenerated_folder(data, ev, env)  # completes the manifest; regenerates serially what is missing
    status.update(folder=str(final), corruptions=len(corruptions), severities=len(severities), images=n, generated=len(todo),
                  generate_seconds=time.perf_counter() - t1, same_folder=final == folder)
    log(f"prep: {len(todo)} of {len(corruptions)} corruptions x {len(severities)} severities regenerated for {n} images "
        f"in {status['generate_seconds']:.1f}s ({workers} processes) -> {final}")
    return status


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.tools.gpu_check_prep", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="cifar10-jpeg")
    p.add_argument("--data-dir")
    p.add_argument("--cache-dir")
    p.add_argument("--eval", default="{}", help="the runs' [eval] settings as JSON (corruption_set, corruption_severities, corruption_subset, corruption_seed)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--subsets", default="", help="comma-separated corrupted-set samples to prepare, in order (0: the full test set; "
                                                 "default: the one of --eval); samples not smaller than the test set are skipped")
    p.add_argument("--status", type=Path, required=True, help="JSON status file, rewritten after each sample")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    evaluation = json.loads(args.eval)
    subsets = [int(x) for x in args.subsets.split(",") if x.strip()] or [int(evaluation.get("corruption_subset", 0))]
    status: dict[str, Any] = {"ok": True, "prepared": []}
    try:
        for subset in subsets:
            one = prepare(args.dataset, args.data_dir, args.cache_dir, {**evaluation, "corruption_subset": subset}, args.workers,
                          log=lambda m: print(m, flush=True), test_size=status.get("test"))
            if one.get("skipped"):
                continue
            status.update({k: v for k, v in one.items() if k in ("dataset", "train", "test", "decode_seconds")})
            status["prepared"].append(one)
            atomic_write_json(args.status, {**status, "seconds": time.perf_counter() - t0})
    except Exception as exc:  # noqa: BLE001 - reported to the check, which carries on
        status.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        print(f"prep failed: {status['error']}", flush=True)
    status["seconds"] = time.perf_counter() - t0
    atomic_write_json(args.status, status)
    return 0 if status["ok"] else 1


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

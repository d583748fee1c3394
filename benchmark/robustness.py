"""Evaluation on corrupted test sets (CIFAR-10-C / CIFAR-100-C layouts), per corruption and severity.

Which set (``[eval] corruptions``):
- ``"regenerated"``: generated from the run's own clean test set by ``benchmark.corruptions``
  (Hendrycks' CIFAR parameters, seeded) and cached under the cache dir; records say so.
- ``"official"``: the released folder ``<data root>/CIFAR-10-C`` (or ``CIFAR-100-C``).
- any other value: a folder path in the official layout.

``corruption_subset = N`` evaluates a fixed subset of N test images (a random sample drawn with
``corruption_seed``, kept in test-set order; the same images for every corruption, severity and
method; recorded); 0 means all. A random sample, not the first N: a test set stored in class
order (such as an ImageFolder copy) would otherwise give a subset of one class. Summaries average over the named ``corruption_set``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
from torch import nn

from .corruptions import CORRUPTION_SETS, corruption_set
from .corruptions.generate import generate_cifar_c
from .data import Dataset, DeviceData, Split, resolve_cache_dir, resolve_data_dir
from .data_corrupted import cifar_c_source, load_cifar_c
from .progress import progress_bar
from .train import evaluate

if TYPE_CHECKING:  # pragma: no cover
    from .runner import Environment

OFFICIAL_FOLDERS = {"cifar10": "CIFAR-10-C", "cifar10-jpeg": "CIFAR-10-C", "cifar100": "CIFAR-100-C"}
SUMMARY_KEYS = {"accuracy": "cA", "nll": "cNLL", "ece": "cECE", "brier": "cBrier"}


def subset_indices(n_total: int, subset: int, seed: int) -> np.ndarray:
    """Sorted indices of the evaluated test images: all of them, or a seeded random sample of ``subset``."""
    if not subset or subset >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:subset])


def corrupted_folder(data: Dataset, ev: dict[str, Any], env: "Environment", progress: bool = True) -> Path:
    """The folder of corrupted sets to evaluate on, generating (and caching) it when asked."""
    kind = ev["corruptions"]
    if kind == "official":
        if data.name not in OFFICIAL_FOLDERS:
            raise ValueError(f"no official corrupted release is known for dataset {data.name!r}; known: {', '.join(sorted(OFFICIAL_FOLDERS))}")
        return resolve_data_dir(env.data_dir) / OFFICIAL_FOLDERS[data.name]
    if kind != "regenerated":
        return Path(kind)
    idx = subset_indices(len(data.test), int(ev["corruption_subset"]), int(ev["corruption_seed"]))
    names = corruption_set(ev["corruption_set"])
    root = resolve_cache_dir(env.cache_dir, resolve_data_dir(env.data_dir))
    folder = root / f"{data.name}-C" / f"regenerated-seed{ev['corruption_seed']}-n{len(idx)}-{ev['corruption_set']}"
    images = np.ascontiguousarray(data.test.images[idx])
    labels = np.asarray(data.test.labels[idx])
    return generate_cifar_c(images, labels, folder, corruptions=names, severities=tuple(ev["corruption_severities"]),
                            seed=int(ev["corruption_seed"]), progress=progress)


def evaluate_corrupted(net: nn.Module, data: Dataset, ev: dict[str, Any], env: "Environment", *, batch_size: int, precision: str,
                       channels_last: bool, progress: bool = True) -> dict[str, Any]:
    """Metrics per corruption and severity, and their means over the corruption set.

    Returns {"source", "folder", "corruption_set", "corruptions", "severities", "subset", "per":
    {corruption: {"<severity>": metrics}}, "summary": {cA, cNLL, cECE, cBrier, disagreement, kl},
    "images_per_second"}.
    """
    if ev["corruption_set"] not in CORRUPTION_SETS:
        raise ValueError(f"unknown corruption_set {ev['corruption_set']!r}; valid choices: {', '.join(sorted(CORRUPTION_SETS))}")
    if data.name == "imagenet":  # ImageNet-C: JPEG folders, streamed (benchmark.imagenet)
        from .imagenet import evaluate_imagenet_c

        return evaluate_imagenet_c(net, data, ev, env, batch_size=batch_size, precision=precision, channels_last=channels_last, progress=progress)
    folder = corrupted_folder(data, ev, env, progress)
    names = corruption_set(ev["corruption_set"])
    severities = [int(s) for s in ev["corruption_severities"]]
    subset = int(ev["corruption_subset"])
    idx = subset_indices(len(data.test), subset, int(ev["corruption_seed"]))
    expected = np.asarray(data.test.labels[idx])
    regenerated = ev["corruptions"] == "regenerated"  # a regenerated folder holds only the subset, in order
    device = env_device(net)

    def cell(name: str, s: int) -> tuple[dict[str, Any], int]:
        images, labels = load_cifar_c(folder, name, s)
        rows = np.arange(len(idx)) if regenerated else idx
        if len(labels) <= rows[-1] or not np.array_equal(np.asarray(labels[rows]), expected):
            raise ValueError(f"labels of {folder}/{name}.npy (severity {s}) do not match the clean test labels of {data.name}: "
                             "the corrupted set belongs to another test set or order (an ImageFolder copy is in class order; "
                             "use eval.corruptions = \"regenerated\" for it)")
        cells = images[rows] if len(rows) < len(labels) else images
        split = DeviceData(Split(cells, expected), data.mean, data.std, device)
        return evaluate(net, split, batch_size=batch_size, precision=precision, channels_last=channels_last, progress=False), len(rows)

    per, seen, seconds = evaluate_cells(names, severities, cell, "eval corrupted", progress)
    return corrupted_result(per, ev, source=cifar_c_source(folder), folder=folder, seed=int(ev["corruption_seed"]) if regenerated else None,
                            images=seen, seconds=seconds)


def evaluate_cells(names: tuple[str, ...] | list[str], severities: list[int], cell: Callable[[str, int], tuple[dict[str, Any], int]],
                   desc: str, progress: bool) -> tuple[dict[str, dict[str, Any]], int, float]:
    """Run ``cell(corruption, severity) -> (metrics, images)`` over the grid, with a progress bar.

    Returns (per: {corruption: {"<severity>": metrics}}, images evaluated, seconds).
    """
    per: dict[str, dict[str, Any]] = {}
    seen = 0
    t0 = time.perf_counter()
    bar = progress_bar(total=len(names) * len(severities), desc=desc, unit="set", enable=progress)
    for name in names:
        per[name] = {}
        for s in severities:
            per[name][str(s)], n = cell(name, s)
            seen += n
            bar.update(1)
    bar.close()
    return per, seen, time.perf_counter() - t0


def corrupted_result(per: dict[str, dict[str, Any]], ev: dict[str, Any], *, source: str, folder: Path | None, seed: int | None,
                     images: int, seconds: float) -> dict[str, Any]:
    """The record's ``metrics.corrupted`` entry (one structure for every corrupted test set)."""
    return {"source": source, "folder": None if folder is None else str(folder), "corruption_set": ev["corruption_set"],
            "corruptions": list(per), "severities": [int(s) for s in ev["corruption_severities"]], "subset": int(ev["corruption_subset"]),
            "seed": seed, "per": per, "summary": summarise(per), "images": images, "seconds": seconds,
            "images_per_second": images / seconds if seconds else None}


def env_device(net: nn.Module):
    return next(net.parameters()).device


def summarise(per: dict[str, dict[str, dict[str, Any]]], corruptions: list[str] | None = None) -> dict[str, float]:
    """Means over corruptions x severities: cA, cNLL, cECE, cBrier, and mean member diversity."""
    cells = [m for c, sev in per.items() if corruptions is None or c in corruptions for m in sev.values()]
    out = {short: float(np.mean([m[key] for m in cells])) for key, short in SUMMARY_KEYS.items()}
    out["disagreement"] = float(np.mean([m["diversity"]["disagreement"] for m in cells]))
    out["kl"] = float(np.mean([m["diversity"]["kl"] for m in cells]))
    return out


# ---------------------------------------------------------------------------------------------
# Out-of-distribution detection


SVHN_FILE = "test_32x32.mat"


def ood_images(name: str, env: "Environment") -> np.ndarray:
    """Test images ``[N, 32, 32, 3]`` uint8 of OOD dataset ``name``: a registered dataset (its test
    split) or ``svhn`` (torchvision's ``test_32x32.mat`` in the data root or ``<root>/svhn``).
    Raises DataError when absent."""
    from .data import DATASETS, DataError, load_dataset

    root = resolve_data_dir(env.data_dir)
    if name == "svhn":
        path = next((p for p in (root / SVHN_FILE, root / "svhn" / SVHN_FILE) if p.exists()), None)
        if path is None:
            raise DataError(f"SVHN not found: expected {root / SVHN_FILE} or {root / 'svhn' / SVHN_FILE} (http://ufldl.stanford.edu/housenumbers/)")
        try:
            from scipy.io import loadmat
        except ImportError:
            raise DataError(f"reading {path} needs scipy (pip install scipy)") from None
        return np.ascontiguousarray(loadmat(path)["X"].transpose(3, 0, 1, 2))
    if name not in DATASETS:
        raise ValueError(f"unknown OOD dataset {name!r}; valid choices: svhn, {', '.join(DATASETS.names())}")
    return np.asarray(load_dataset(name, env.data_dir, env.cache_dir, download=False, progress=False).test.images)


def _scores(net: nn.Module, split: DeviceData, batch_size: int, precision: str, channels_last: bool) -> dict[str, np.ndarray]:
    from .metrics import combine_log_probs, ood_scores
    from .train import predict_logits

    net.eval()
    parts: dict[str, list[np.ndarray]] = {}
    for x, _ in split.eval_batches(batch_size):
        for key, value in ood_scores(combine_log_probs(predict_logits(net, x, precision, channels_last))).items():
            parts.setdefault(key, []).append(value.float().cpu().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def evaluate_ood(net: nn.Module, data: Dataset, names: list[str], env: "Environment", *, batch_size: int, precision: str,
                 channels_last: bool, progress: bool = True) -> dict[str, Any]:
    """AUROC, AUPR and FPR at 95% TPR of telling ``data``'s test set from each OOD set, scored by
    maximum probability and by predictive entropy. An absent OOD set is recorded as absent (and
    reported nowhere), never an error."""
    from .data import DataError
    from .metrics import ood_metrics

    device = env_device(net)
    scores_in = _scores(net, DeviceData(data.test, data.mean, data.std, device), batch_size, precision, channels_last)
    out: dict[str, Any] = {}
    for name in names:
        try:
            images = ood_images(name, env)
        except DataError as exc:
            out[name] = {"absent": str(exc)}
            continue
        split = DeviceData(Split(images, np.zeros(len(images), dtype=np.int64)), data.mean, data.std, device)
        scores_out = _scores(net, split, batch_size, precision, channels_last)
        out[name] = {score: ood_metrics(scores_in[score], scores_out[score]) for score in scores_in}
        out[name].update({"n_in": len(data.test), "n_out": len(images)})
    return out

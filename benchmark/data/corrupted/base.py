"""Corrupted test sets behind one interface.

A corrupted-set source is one registered :class:`CorruptedSource` (one module of this package, or a
plug-in): ``open(data, ev, folder, env, device)`` returns a :class:`CorruptedSet` whose
``cell(corruption, severity)`` gives one cell (a split with ``eval_batches(batch_size)`` and
``len()``, and the number of images in it). Every cell of every source is evaluated by the one loop
of :mod:`benchmark.evaluation.robustness`.

A dataset names the source of each ``eval.corruptions`` kind (``"official"``, also used for a
folder path, and ``"regenerated"``) in its :class:`benchmark.data.base.DatasetSpec`.

``eval.corruption_subset = N`` evaluates a fixed subset of N test images (a random sample drawn
with ``corruption_seed``, kept in test-set order: :func:`subset_indices`; the same images for
every corruption, severity and method); 0 means all. A random sample, not the first N: a test set
stored in class order (such as an ImageFolder copy) would otherwise give a subset of one class.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

import numpy as np

from ...core.registry import Registry, import_package
from ...corruptions import corruption_set

if TYPE_CHECKING:  # pragma: no cover
    from ...core.runtime import Environment
    from ..base import Dataset


class CorruptedDataError(ValueError):
    """A corrupted-set file or folder that is missing or not in the official format."""


def subset_indices(n_total: int, subset: int, seed: int) -> np.ndarray:
    """Sorted indices of the evaluated test images: all of them, or a seeded random sample of ``subset``."""
    if not subset or subset >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).permutation(n_total)[:subset])


class CorruptedSet(Protocol):
    """An opened corrupted test set. ``source``: ``"official"`` or ``"regenerated"`` (as records
    state it); ``folder``: where its files are (``None`` when made on the fly); ``seed``: the
    regeneration seed (``None`` for released files); ``desc``: the progress-bar label."""

    source: str
    folder: Path | None
    seed: int | None
    desc: str

    def cell(self, corruption: str, severity: int) -> tuple[Any, int]:
        """(split with ``eval_batches(batch_size)`` and ``len()``, images in it) of one cell."""
        ...


@dataclass(frozen=True)
class CorruptedSource:
    """A registered way to obtain corrupted test sets: ``open(data, ev, folder, env, device)``;
    ``folder`` is the folder named by ``eval.corruptions`` (the data root's official folder for
    ``"official"``, the path itself for a path; ``None`` for ``"regenerated"``)."""

    name: str
    open: Callable[["Dataset", dict[str, Any], "Path | None", "Environment", Any], CorruptedSet]
    description: str


CORRUPTED_SOURCES: Registry[CorruptedSource] = Registry("corrupted-set source")


def load_sources() -> None:
    """Import the source modules of this package (idempotent)."""
    import_package(__package__)


def corrupted_source(name: str) -> CorruptedSource:
    load_sources()
    return CORRUPTED_SOURCES.get(name)


def open_corrupted(data: "Dataset", ev: dict[str, Any], env: "Environment", device: Any) -> CorruptedSet:
    """The corrupted set ``eval.corruptions`` names for ``data`` (``"official"``, ``"regenerated"``
    or a folder path), opened through the source the dataset's spec names for that kind."""
    from ..base import resolve_data_dir

    spec = data.spec
    kind = ev["corruptions"]
    name = spec.corrupted_source(kind)
    if kind == "official":
        folder: Path | None = resolve_data_dir(env.data_dir) / str(spec.official_corrupted_folder)
    elif kind == "regenerated":
        folder = None
    else:
        folder = Path(kind)
    return corrupted_source(name).open(data, ev, folder, env, device)


def check_cell_folders(folder: Path, ev: dict[str, Any]) -> tuple[tuple[str, ...], list[int]]:
    """The corruptions and severities ``ev`` asks for, after checking that ``folder`` (a release's
    ``<corruption>/<severity>/<class>/`` layout) has every one of their severity folders: fail
    before evaluating anything when a cell is absent."""
    names = corruption_set(ev["corruption_set"])
    severities = [int(s) for s in ev["corruption_severities"]]
    missing = [f"{n}/{s}" for n in names for s in severities if not (folder / n / str(s)).is_dir()]
    if missing:
        raise CorruptedDataError(f"missing severity folder(s) {missing[:10]}{' ...' if len(missing) > 10 else ''} in {folder} "
                                 f"(corruption_set {ev['corruption_set']!r}, severities {severities}); expected "
                                 f"{folder}/<corruption>/<severity>/<wnid>/*.JPEG")
    return names, severities

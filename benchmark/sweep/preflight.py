"""Before anything is submitted (``--dry-run`` and the launch alike): what every task would fail on
at once, checked here instead of in each job. The data each run needs must be found where the job
looks for it, and its validation hold-out, training and test subsets and batch must fit that data.

The job looks where this process would: the data root is ``[paths] data_dir``, else the harness's
rule (``$PLURES_DATA_DIR``, else ``../shared/data`` when it exists, else ``./data``) in the job's
environment and folder, which a SLURM job inherits from the launch (sbatch's default
``--export=ALL`` and working folder; the local and debug clusters run here). The split sizes come
without decoding anything from the decoded-data cache the jobs read (``<cache>/<dataset>``: its label
files' headers), when that cache was read from a source inside the data root; otherwise the dataset is
loaded here once, as the job would load it: a missing source fails with the dataset's own message,
and a found one is decoded into the cache the jobs then reuse (so that they do not all decode it at once).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..core import config as C
from ..data.base import DATA_ENV, DataError, check_data_sizes, data_dir_source, load_dataset, resolve_cache_dir
from ..runner import member_config
from .plan import SweepTask
from .spec import Sweep


def _resolved(task: SweepTask) -> dict[str, Any]:
    """The resolved config the task's job runs (a member: the member run's own)."""
    resolved = C.resolve(task.config)
    return member_config(resolved, task.overrides) if task.kind == "member" else resolved


def data_root(sweep: Sweep) -> tuple[Path, str]:
    """The data root the sweep's jobs use and where it comes from: ``[paths] data_dir``, else the
    harness's rule (``benchmark.data.base.DATA_RULE``) in the launch's environment and folder."""
    root, why = data_dir_source(sweep.paths["data_dir"])
    return root, f"[paths] data_dir of {sweep.path}" if sweep.paths["data_dir"] is not None else why


def cached_split_sizes(cache: Path, root: Path) -> dict[str, int] | None:
    """Split name -> images, from a decoded-data cache folder (``meta.json`` and the label files'
    headers: nothing is decoded), when every source it was read from lies inside ``root`` (where the
    job's loader looks); None otherwise (no cache, a damaged one, or one read from elsewhere)."""
    try:
        meta = json.loads((cache / "meta.json").read_text())
        sources = meta["source"] if isinstance(meta["source"], list) else [meta["source"]]
        paths = [Path(s["path"]) for s in sources]
        root = root.resolve()
        if not paths or not all(p.exists() and p.resolve().is_relative_to(root) for p in paths):
            return None
        return {s: int(np.load(cache / f"{s}_labels.npy", mmap_mode="r").shape[0]) for s in meta["splits"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def split_sizes(sweep: Sweep, dataset: str, download: bool, log: Callable[[str], None] = print) -> dict[str, int]:
    """Split name -> images of ``dataset`` as the sweep's jobs will find it (see the module docstring);
    DataError, naming where the data root comes from, when the job could not find it."""
    root, why = data_root(sweep)
    cache = resolve_cache_dir(sweep.paths["cache_dir"], root) / dataset
    sizes = cached_split_sizes(cache, root)
    if sizes is not None:
        return sizes
    log(f"checking {dataset} under {root.absolute()} (no decoded copy of it from there in {cache}: it is read once here, and the jobs reuse it)")
    try:
        data = load_dataset(dataset, sweep.paths["data_dir"], sweep.paths["cache_dir"], download=download, progress=False)
    except DataError as exc:
        reason = str(exc).splitlines()[0]  # the dataset's own message (without the harness's note on the root: said here)
        raise DataError(f"{sweep.path}: the jobs would not find the data of {dataset}: they look under {root.absolute()} (from {why}): "
                        f"{reason} Nothing was submitted: set [paths] data_dir in the sweep file, or export {DATA_ENV} before launching.") from None
    return {"train": len(data.train), "test": len(data.test)}


def check_sizes(task: SweepTask, resolved: dict[str, Any], sizes: dict[str, int]) -> None:
    """ConfigError naming the run when its validation hold-out, training or test subset or its batch
    does not fit the data (``sizes``: split -> images), as the job's ``run_experiment`` would fail."""
    what = f"run {task.name} seed {task.seed} ({task.run_id})"
    try:
        check_data_sizes(resolved, sizes["train"], sizes["test"])
    except C.ConfigError as exc:
        raise C.ConfigError(f"{what}: {exc}; nothing was submitted") from None


def check_data(sweep: Sweep, tasks: list[SweepTask], log: Callable[[str], None] = print) -> None:
    """Fail (DataError, ConfigError) before any submission when a task's job would fail on its data
    at once: the data cannot be found from the job's environment, or a subset, hold-out or batch is
    larger than the data. Each dataset is looked up once."""
    sizes: dict[str, dict[str, int]] = {}
    for task in tasks:
        resolved = _resolved(task)
        dataset = resolved["run"]["dataset"]
        if dataset not in sizes:
            sizes[dataset] = split_sizes(sweep, dataset, bool(resolved["data"]["download"]), log)
        check_sizes(task, resolved, sizes[dataset])

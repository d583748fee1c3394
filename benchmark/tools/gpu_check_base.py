"""The GPU check's shared state (``python -m benchmark.tools.gpu_check``): its sizes, the check's
folders, log and results, which every group of stages (``gpu_check_device``, ``gpu_check_perf``,
``gpu_check_suite``) reads and writes; ``gpu_check`` runs the stages, packs and summarises."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Sizes:
    """What each stage runs: the GPU's sizes or the smoke mode's tiny ones."""

    device: str
    precision: str
    channels_last: bool
    total: float  # the whole check's wall-clock budget (s)
    budgets: dict[str, float]  # per stage (s)
    matmul_n: int
    matmul_repeats: int
    perf_backbones: list[tuple[str, str, dict[str, Any], int]]  # (label, backbone, options, batch)
    perf_methods: list[str] | None  # None: every registered method
    perf_repeats: int
    perf_large_batch: int
    corrupted_images: int
    peer_batch: int
    peer_repeats: int
    suite_backbones: list[tuple[str, dict[str, Any]]]
    suite_only: list[str] | None
    suite_set: list[str]  # extra --set overrides of every suite run
    suite_batch: int
    throughput_steps: int
    run_overhead: float  # seconds per evaluated variant beyond the images (build, cost, record)
    max_epochs: int
    paper_backbone: tuple[str, dict[str, Any]]
    paper_batch: int
    paper_methods: list[str] | None
    paper_max_steps: int | None
    prep_workers: int
    synthetic: tuple[int, int] | None  # (train, test) images per class of a synthetic JPEG copy; None: the real data


def fmt_s(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


@dataclass
class StageResult:
    name: str
    status: str  # ok, partial, skipped, failed
    seconds: float
    budget: float
    note: str


@dataclass
class CheckState:
    """The check's state: sizes, folders, the log, each stage's results and notes (the stages read and write it)."""

    sizes: Sizes
    out: Path  # what comes back: the archive, the summary, the log
    work: Path  # records, tables, logs (archived); scratch (a temporary folder, removed at the end): checkpoints, synthetic data, caches
    data_dir: str | None
    cache_dir: str | None
    wheels: Path
    smoke: bool
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="plures-gpu-check-scratch-")))
    t0: float = field(default_factory=time.monotonic)
    stages: list[StageResult] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)
    prep: subprocess.Popen | None = None  # the background data preparation (gpu_check_suite.start_prep)

    def __post_init__(self) -> None:
        for d in (self.out, self.work / "logs", self.scratch):
            d.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(self.sizes.device)
        self.deadline = self.t0 + self.sizes.total

    def log(self, message: str) -> None:
        line = f"[{time.monotonic() - self.t0:6.1f}s] {message}"
        print(line, flush=True)
        for path in {self.work / "logs" / "gpu-check.log", self.out / "gpu-check.log"}:
            with open(path, "a") as fh:
                fh.write(line + "\n")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def write_json(self, name: str, obj: Any) -> Path:
        from ..core.io import atomic_write_json

        return atomic_write_json(self.work / name, obj)

    def write_text(self, name: str, text: str) -> Path:
        from ..core.io import atomic_write_text

        return atomic_write_text(self.work / name, text)

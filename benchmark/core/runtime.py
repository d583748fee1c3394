"""Runtime foundations: derived seeds, autocast, stop requests, the device and where a run reads and writes.

Everything here is imported by the layers above (data, methods, training, evaluation, runner); it
imports nothing of plures but the other foundations.
"""

from __future__ import annotations

import hashlib
import signal
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

# A user's own runs: records, cost passes and leaderboards under results/{runs,cost,leaderboards} (not versioned).
DEFAULT_RESULTS = Path("results") / "runs"
DEFAULT_CHECKPOINTS = Path("results") / "checkpoints"
# The project's published records (versioned), written only on purpose (``--reference``): the same layout under results/reference.
REFERENCE_ROOT = Path("results") / "reference"
REFERENCE_RUNS = REFERENCE_ROOT / "runs"
# Kept final weights (read-only stores, <store>/<run id>/final.pt): the study's member runs' weights, committed beside its records
# (python -m benchmark.tools.keep_weights), searched by ``--reference``; a user's own store (not versioned) is results/weights.
REFERENCE_WEIGHTS = REFERENCE_ROOT / "weights"
DEFAULT_WEIGHTS = Path("results") / "weights"


class StopRequested(Exception):
    """Training stopped on request (signal); the checkpoint written just before is resumable."""


# ---------------------------------------------------------------------------------------------
# Seeds and precision


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed hashed from ``parts`` (blake2b of their repr; stable across processes and
    platforms): the seeds of every random draw of training and evaluation."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def make_generator(device: torch.device, *parts: Any) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(hash_seed(*parts))
    return g


def autocast(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


# ---------------------------------------------------------------------------------------------
# Stop requests (SIGINT, SIGTERM, SLURM preemption)


class StopFlag:
    """Set when a stop is requested (SIGINT, SIGTERM, SLURM preemption or time limit); the training
    loop polls ``is_set()`` between steps.

    A plain attribute, so it can be set from a signal handler without locks.
    """

    def __init__(self) -> None:
        self._set = False
        self.reason = ""
        self.signum: int | None = None
        # True while a CheckpointableCall's handlers own SIGTERM/SIGUSR2 (benchmark.sweep.slurm_job):
        # ``stop_on_signals`` then leaves them alone instead of replacing them.
        self.signals_installed = False

    def is_set(self) -> bool:
        """True once a stop was requested (cheap: poll it at every step)."""
        return self._set

    def set(self, reason: str = "stop requested", signum: int | None = None) -> None:
        """Request a stop (the first reason is kept, except that ``"requeue"`` wins)."""
        if not self._set or reason == "requeue":
            self.reason = reason
            self.signum = signum
        self._set = True

    def clear(self) -> None:
        self._set = False
        self.reason = ""
        self.signum = None

    def __bool__(self) -> bool:
        return self._set

    def __repr__(self) -> str:
        return f"StopFlag(set={self._set}, reason={self.reason!r})"


@contextmanager
def stop_on_signals(flag: StopFlag, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopFlag]:
    """Install handlers that set ``flag`` (main thread only); restore the old ones on exit.

    A second SIGINT while stopping raises KeyboardInterrupt at once.
    """
    # A flag whose signals are already handled (slurm_job.STOP_REQUESTED inside a CheckpointableCall,
    # which must see SIGTERM/SIGUSR2 itself to requeue) is used as is: no handler of ours replaces them.
    if threading.current_thread() is not threading.main_thread() or getattr(flag, "signals_installed", False):
        yield flag
        return
    old = {}

    def handler(signum, frame):  # noqa: ARG001
        if flag.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.set(f"signal {signal.Signals(signum).name}")

    for s in signals:
        old[s] = signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# ---------------------------------------------------------------------------------------------
# Device and environment


def select_device(name: str | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else the CPU; otherwise the named device."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class Environment:
    """Where a run reads and writes, and how it reports."""

    data_dir: str | None = None
    cache_dir: str | None = None
    results_dir: Path = DEFAULT_RESULTS
    checkpoint_dir: Path = DEFAULT_CHECKPOINTS
    # Read-only stores of kept final weights, in the checkpoint folder's layout (<store>/<run id>/final.pt), searched in
    # order after the checkpoint folder when a run needs another run's weights (a deep ensemble's members, a subnetwork
    # ensemble's parent: benchmark.runner.find_final_weights); nothing is ever written into them. A member found in one
    # is loaded from there, not trained again (python -m benchmark.tools.keep_weights fills a store; --weights-dir).
    weights_dirs: tuple[Path, ...] = ()
    device: str | None = None
    # False (the default): a run decides from disk when it starts (benchmark.runner.run_state): a completed
    # record of its identity means done, a stage checkpoint means resume, else start. True: train anew,
    # ignoring both; nothing finished is deleted (the new weights and record replace them when complete).
    restart: bool = False
    progress: bool = True
    log: Callable[[str], None] = print
    stop: StopFlag = field(default_factory=StopFlag)  # anything with is_set() and reason (e.g. benchmark.sweep.slurm_job.STOP_REQUESTED)
    # Data-parallel training over several processes (a benchmark.training.distributed.DistContext); None: one
    # process. Only its main rank writes checkpoints, final weights and records.
    dist: Any = None

    @property
    def is_main(self) -> bool:
        return self.dist is None or self.dist.is_main

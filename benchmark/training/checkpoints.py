"""Where a run's training stands on disk: the newest stage checkpoint it continues from.

A run's stage checkpoints are ``<checkpoint_dir>/<run id>/<stage>.pt`` (written atomically after every
epoch, and mid-epoch on a stop request); ``final.pt`` holds the trained weights and is not a point to
resume from. The runner decides from them, when a run starts, whether it resumes
(:func:`benchmark.runner.run_state`); the sweep's status shows the same point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["ResumePoint", "resume_point"]


@dataclass(frozen=True)
class ResumePoint:
    """Where a run's newest stage checkpoint (``<checkpoint_dir>/<run id>/<stage>.pt``) continues:
    ``epoch`` epochs of ``stage`` done (of ``epochs``) and ``step`` steps of the next one."""

    stage: str
    epoch: int
    step: int
    epochs: int | None
    path: Path

    def describe(self) -> str:
        """``resume from epoch E`` (E: the epoch the run continues in), with the step and stage when they matter."""
        if self.epochs is not None and self.epoch >= self.epochs:
            text = f"resume after epoch {self.epoch} (training done)"
        else:
            text = f"resume from epoch {self.epoch + 1}" + (f" after step {self.step}" if self.step else "")
        return text + (f" of stage {self.stage}" if self.stage != "train" else "")


def resume_point(checkpoint_dir: str | Path, run_id: str) -> ResumePoint | None:
    """The newest readable stage checkpoint of ``run_id`` (final weights do not count), or None:
    a run that starts continues from it instead of training from scratch."""
    folder = Path(checkpoint_dir) / run_id
    if not folder.is_dir():
        return None
    stages = sorted((p for p in folder.glob("*.pt") if p.name != "final.pt" and p.is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in stages:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
            epoch, step = int(state["epoch"]), int(state["step"])
        except Exception:  # noqa: BLE001 - a torn or foreign file: not a point to resume from
            continue
        epochs = (state.get("config") or {}).get("epochs")
        return ResumePoint(path.stem, epoch, step, int(epochs) if epochs is not None else None, path)
    return None

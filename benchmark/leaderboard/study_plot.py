"""The study's figure (:mod:`benchmark.leaderboard.study`): per block, one panel per metric with each
row's gap to the deterministic model against the axis (log2 scale), points at the mean over the
paired seeds and bars of the 95% t interval over seeds (filled: the interval excludes 0), and a
last panel with the DEE (a value, or a triangle at the bound: '< 1' at 1, '> M' at M)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .plots import RC, new_figure, save_figure, _style
from .study import STUDY_METRICS, Study, StudyBlock

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure as MplFigure


def _x(values: list) -> dict:
    return {v: float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0}


def _block_axes(fig: "MplFigure", axes: np.ndarray, block: StudyBlock, axis: str) -> None:
    xs = _x(block.axis_values)
    others = [r for r in block.rows if r != block.baseline]
    name = axis.split(".")[-1]
    for ax, (key, label, _) in zip(axes, STUDY_METRICS):
        ax.axhline(0.0, color="k", lw=0.8)
        for i, r in enumerate(others):
            style = _style(i)
            pts = [(xs[v], block.gaps[(r, v, key)]) for v in block.axis_values if v in xs and (r, v, key) in block.gaps
                   and block.gaps[(r, v, key)].interval is not None]
            if not pts:
                continue
            x = np.array([p[0] for p in pts]) * (1.0 + 0.025 * (i - len(others) / 2))  # a small offset keeps the bars apart
            mean = np.array([g.interval.mean for _, g in pts])
            ax.plot(x, mean, color=style["color"], lw=1.0, marker=style["marker"], ms=4, label=r)
            for xi, (_, g) in zip(x, pts):
                iv = g.interval
                if iv.n > 1:
                    ax.plot([xi, xi], [iv.low, iv.high], color=style["color"], lw=1.2)
                ax.plot([xi], [iv.mean], marker=style["marker"], ms=4, color=style["color"], mfc=style["color"] if iv.excludes_zero else "white")
        ax.set_title(label, fontsize=8)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(xs.values()))
        ax.set_xticklabels([f"{v:g}" for v in sorted(xs.values())], fontsize=7)
        ax.set_xlabel(name, fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
    ax = axes[len(STUDY_METRICS)]
    for i, r in enumerate(others):
        style = _style(i)
        shift = 1.0 + 0.025 * (i - len(others) / 2)
        for v in block.axis_values:
            d = block.dee.get((r, v))
            if d is None or v not in xs:
                continue
            if not math.isnan(d.value):
                ax.plot([xs[v] * shift], [d.value], marker=style["marker"], ms=4, color=style["color"])
            elif d.display.startswith("<"):
                ax.plot([xs[v] * shift], [1.0], marker="v", ms=5, color=style["color"], mfc="white")
            elif d.display.startswith(">"):
                ax.plot([xs[v] * shift], [float(d.display[1:].strip())], marker="^", ms=5, color=style["color"], mfc="white")
    ax.set_title("DEE (members)", fontsize=8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(xs.values()) or [1])
    ax.set_xticklabels([f"{v:g}" for v in sorted(xs.values())] or ["1"], fontsize=7)
    ax.set_xlabel(name, fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


def study_figure(study: Study) -> "MplFigure":
    """One row of panels per block (metrics, then DEE); the legend names the rows."""
    import matplotlib

    n_panels = len(STUDY_METRICS) + 1
    with matplotlib.rc_context(RC):
        fig = new_figure(2.3 * n_panels, 2.4 * len(study.blocks) + 0.9)
        grid = np.atleast_2d(fig.subplots(len(study.blocks), n_panels, squeeze=False))
        for row, block in zip(grid, study.blocks):
            _block_axes(fig, row, block, study.axis)
            row[0].set_ylabel(f"{block.dataset} / {block.backbone}\nrow − {block.baseline or 'baseline'}", fontsize=7)
        handles, labels = grid[0][0].get_legend_handles_labels()
        if handles:
            fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=7, frameon=False)
        w, h = fig.get_size_inches()
        fig.subplots_adjust(left=0.7 / w, right=1 - 0.15 / w, bottom=0.95 / h, top=1 - 0.35 / h, wspace=0.35, hspace=0.55)
    return fig


def write_study_figure(study: Study, stem: Path) -> tuple[Path, Path]:
    """``stem.png`` and ``stem.svg`` (deterministic bytes)."""
    import matplotlib

    fig = study_figure(study)
    with matplotlib.rc_context(RC):
        return save_figure(fig, stem)

"""Each ensemble beside its equal-cost single model.

Kondratyuk et al. 2020 ("When ensembling smaller models is more efficient than single large
models") and Lobacheva et al. 2020 ("On power laws in deep ensembles") compare an ensemble with a
single network of the same family made wider until it costs as much at test time. The suites
train such networks as deterministic runs with a ``backbone`` width override and a ``method.label``
("width x2, FLOPs matched to ..."), so they sit in the same leaderboard block as the ensembles.

This plot pairs every ensemble row of a block (2+ members) with the single-model row
(:data:`SINGLE_METHOD`, one member) whose measured FLOPs per example are nearest, when they lie
within :data:`TOLERANCE` of each other, and draws quality against FLOPs: the single models as one
width-scaling curve, each ensemble as a point joined to its equal-cost single model. Stored metrics
only (torch-free, like every leaderboard module).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..frame import corrupted_cells
from ..plots import PALETTE, Groups, PlotSpec, Skip, new_figure, register_plot

SINGLE_METHOD = "deterministic"  # the single-model rows: the plain run and its widened (or narrowed) versions
TOLERANCE = 1.15  # FLOPs ratio (either way) within which a single model counts as the ensemble's equal-cost model
METRICS = (("accuracy", "clean accuracy, % (higher is better)", 100.0), ("nll", "clean NLL (lower is better)", 1.0),
           ("cA", "cA, % (higher is better)", 100.0))


class Row(NamedTuple):
    """One leaderboard row: label, method, members, mean FLOPs per example, mean and std (over seeds) per metric."""

    label: str
    method: str
    members: int
    flops: float
    values: dict[str, tuple[float, float]]


def _metric(rec: dict[str, Any], key: str) -> float:
    if key == "cA":
        summary = ((rec.get("metrics") or {}).get("corrupted") or {}).get("summary") or {}
        if isinstance(summary.get("cA"), (int, float)):
            return float(summary["cA"])
        cells = corrupted_cells(rec)
        return float(np.mean([m["accuracy"] for m in cells.values()])) if cells else math.nan
    value = ((rec.get("metrics") or {}).get("clean") or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else math.nan


def _stats(values: list[float]) -> tuple[float, float]:
    a = np.array([v for v in values if not math.isnan(v)], dtype=float)
    if not len(a):
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def rows(groups: Groups) -> list[Row]:
    """The block's rows with their method, members, mean FLOPs per example and metric means."""
    out = []
    for label, recs in groups:
        if not recs:
            continue
        ident = recs[0].get("identity") or {}
        flops = [float(f) for r in recs if isinstance(f := (r.get("cost") or {}).get("flops_per_example"), (int, float))]
        out.append(Row(label, str(ident.get("method", "")), int(ident.get("members", 1) or 1), float(np.mean(flops)) if flops else math.nan,
                       {key: _stats([_metric(r, key) for r in recs]) for key, _, _ in METRICS}))
    return out


def equal_cost_pairs(groups: Groups, tolerance: float = TOLERANCE) -> list[tuple[Row, Row]]:
    """(ensemble row, its equal-cost single-model row) for every ensemble row (2+ members) that has a
    single-model row whose FLOPs per example are within ``tolerance`` of its own (the nearest on a
    log scale), in table order."""
    table = [r for r in rows(groups) if not math.isnan(r.flops) and r.flops > 0]
    singles = [r for r in table if r.method == SINGLE_METHOD and r.members == 1]
    pairs = []
    for ens in table:
        if ens.members < 2 or not singles:
            continue
        best = min(singles, key=lambda s: abs(math.log(s.flops / ens.flops)))
        if abs(math.log(best.flops / ens.flops)) <= math.log(tolerance):
            pairs.append((ens, best))
    return pairs


def equal_cost_figure(groups: Groups) -> Any:
    """Quality against FLOPs per example: single models as a curve, ensembles joined to their equal-cost single model."""
    pairs = equal_cost_pairs(groups)
    if not pairs:
        raise Skip(f"no ensemble row of this block has a single-model ({SINGLE_METHOD}) row within {TOLERANCE:g}x of its FLOPs per "
                   "example (the quick3 and paper suites train such widened models)")
    table = rows(groups)
    singles = sorted((r for r in table if r.method == SINGLE_METHOD and r.members == 1 and not math.isnan(r.flops)), key=lambda r: r.flops)
    metrics = [(k, name, scale) for k, name, scale in METRICS if any(not math.isnan(e.values[k][0]) for e, _ in pairs)]
    fig = new_figure(4.2 * len(metrics) + 0.6, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(metrics)))
    for ax, (key, name, scale) in zip(axes, metrics):
        xs = [s.flops for s in singles if not math.isnan(s.values[key][0])]
        ys = [scale * s.values[key][0] for s in singles if not math.isnan(s.values[key][0])]
        ax.plot(xs, ys, color="k", marker="s", ms=4, lw=1.0, label=f"single models ({SINGLE_METHOD}, widths)")
        for i, (ens, single) in enumerate(pairs):
            (m, sd), (ms, _) = ens.values[key], single.values[key]
            if math.isnan(m):
                continue
            colour = PALETTE[i % len(PALETTE)]
            ax.errorbar([ens.flops], [scale * m], yerr=[scale * sd], fmt="o", color=colour, ms=5, capsize=2, label=ens.label)
            if not math.isnan(ms):
                ax.plot([ens.flops, single.flops], [scale * m, scale * ms], ls="--", color=colour, lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs per example (test time)")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=6, loc="best")
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=0.6 / w, right=1 - 0.2 / w, bottom=0.5 / h, top=1 - 0.3 / h, wspace=0.3)
    return fig


register_plot(PlotSpec("equal_cost", "Ensembles beside their equal-cost single models",
                       f"Quality against FLOPs per test example: black, the {SINGLE_METHOD} rows (the plain network and its widened or "
                       f"narrowed versions); each ensemble (mean ± std over seeds) joined by a dashed line to the single model whose "
                       f"FLOPs are nearest within {TOLERANCE:g}x (Kondratyuk et al. 2020; Lobacheva et al. 2020). An ensemble better than its "
                       "partner (higher accuracy, lower NLL) is the better use of that test-time compute.", equal_cost_figure))

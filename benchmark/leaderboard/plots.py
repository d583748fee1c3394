"""Leaderboard plots from run records (matplotlib, Agg canvas, PNG and SVG, deterministic bytes).

Each plot function takes the measured rows of one leaderboard block as ``groups``: a list of
``(row label, records)`` in table order, draws from the stored metrics only (no metric is computed
from predictions here), and returns a :class:`Figure` or raises :class:`Skip` saying which data is
missing. Seeds are summarised as mean and spread (min..max band, or error bars of one std).

Adding a plot: a figure function registered with :func:`register_plot` (here, or in a module of
:mod:`benchmark.leaderboard.extra_plots`, or a plug-in module); every block's page then shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import numpy as np

from ..core.io import atomic_write
from ..core.registry import Registry, import_package
from .boards import SuiteBoard
from .costs import record_latency
from .frame import corrupted_cells
from .render import si as si_text

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure as MplFigure

Groups = list[tuple[str, list[dict[str, Any]]]]
RC = {"svg.hashsalt": "plures", "svg.fonttype": "none", "font.family": "DejaVu Sans", "font.size": 8, "axes.titlesize": 9,
      "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100}
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MARKERS = "osD^vP*Xh<>p"


class Skip(Exception):
    """A plot left out because its data is absent; the message says which."""


@dataclass(frozen=True)
class Figure:
    """A written plot: its name, caption, and file paths relative to the board folder."""

    name: str
    title: str
    caption: str
    png: str
    svg: str


@dataclass(frozen=True)
class Skipped:
    name: str
    title: str
    reason: str


# ------------------------------------------------------------------------------------------------
# record accessors (stored metrics only)
# ------------------------------------------------------------------------------------------------


def severity_curve(rec: dict[str, Any], metric: str) -> dict[int, float]:
    """``{0: clean, s: mean over the evaluated corruptions at severity s}`` of one record."""
    out = {0: float(rec["metrics"]["clean"][metric])}
    by_sev: dict[int, list[float]] = {}
    for (_, s), m in corrupted_cells(rec).items():
        by_sev.setdefault(s, []).append(float(m[metric]))
    out.update({s: float(np.mean(v)) for s, v in sorted(by_sev.items())})
    return out


def corruption_means(rec: dict[str, Any], metric: str = "accuracy", severity: int | None = None) -> dict[str, float]:
    """Per corruption: the metric at ``severity``, or averaged over the evaluated severities."""
    by_c: dict[str, list[float]] = {}
    for (c, s), m in corrupted_cells(rec).items():
        if severity is None or s == severity:
            by_c.setdefault(c, []).append(float(m[metric]))
    return {c: float(np.mean(v)) for c, v in sorted(by_c.items())}


def pooled_reliability(recs: list[dict[str, Any]], severity: int | None = None) -> dict[str, np.ndarray] | None:
    """Reliability bins summed over records (and over corruptions at ``severity``; ``None``: clean)."""
    total: dict[str, np.ndarray] | None = None
    for rec in recs:
        sources = [rec["metrics"]["clean"]] if severity is None else [m for (_, s), m in corrupted_cells(rec).items() if s == severity]
        for m in sources:
            rel = m.get("reliability") if isinstance(m, dict) else None
            if not rel or not rel.get("counts"):
                continue
            arrays = {k: np.asarray(rel[k], dtype=float) for k in ("counts", "confidence_sum", "correct")}
            if total is None:
                total = {**arrays, "bin_edges": np.asarray(rel["bin_edges"], dtype=float)}
            elif len(arrays["counts"]) == len(total["counts"]):
                for k in arrays:
                    total[k] = total[k] + arrays[k]
    return total


def ensemble_gain(rec: dict[str, Any], split: str = "clean") -> tuple[float, float, float] | None:
    """(disagreement, KL, member-mean NLL minus ensemble NLL) of a record with 2+ members, else None."""
    m = rec["metrics"].get(split)
    if not isinstance(m, dict) or len(m.get("members") or []) < 2 or "member_mean" not in m or "diversity" not in m:
        return None
    d = m["diversity"]
    return float(d["disagreement"]), float(d["kl"]), float(m["member_mean"]["nll"]) - float(m["nll"])


def _cost(rec: dict[str, Any], key: str) -> float:
    c = rec.get("cost") or {}
    v = (record_latency(rec).get("ms_per_example_b1") or {}).get("median") if key == "ms_b1" else c.get("flops_per_example")
    return float(v) if isinstance(v, (int, float)) else math.nan


def _quality(rec: dict[str, Any], key: str) -> float:
    if key == "nll":
        return float(rec["metrics"]["clean"]["nll"])
    v = ((rec["metrics"].get("corrupted") or {}).get("summary") or {}).get("cA")
    if v is None and corrupted_cells(rec):
        v = float(np.mean([m["accuracy"] for m in corrupted_cells(rec).values()]))
    return float(v) if v is not None else math.nan


# ------------------------------------------------------------------------------------------------
# figures
# ------------------------------------------------------------------------------------------------


def new_figure(width: float, height: float) -> "MplFigure":
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _margins(fig: "MplFigure", *, left: float, bottom: float, top: float, right: float = 0.2, wspace: float = 0.2, hspace: float = 0.2) -> None:
    """Fixed margins in inches (cheaper than a layout engine, which draws the figure once more)."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, wspace=wspace, hspace=hspace)


def _log_axis(ax: Any, si: bool) -> None:
    """A log x axis labelled at 1, 2, 5 x 10^k (SI suffixes for large counts), no minor labels."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: si_text(v) if si else f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _style(i: int) -> dict[str, Any]:
    return {"color": PALETTE[i % len(PALETTE)], "marker": MARKERS[i % len(MARKERS)]}


def severity_figure(groups: Groups) -> "MplFigure":
    """Accuracy, NLL and ECE against severity (0 = clean): one line per row, band = seed min..max."""
    with_c = [(label, recs, i) for i, (label, recs) in enumerate(groups) if any(corrupted_cells(r) for r in recs)]
    if not with_c:
        raise Skip("no record of this block has corrupted metrics")
    fig = new_figure(11, 3.4)
    axes = fig.subplots(1, 3)
    for ax, metric, name in zip(axes, ("accuracy", "nll", "ece"), ("accuracy (%)", "NLL", "ECE")):
        scale = 100.0 if metric == "accuracy" else 1.0
        for label, recs, i in with_c:
            curves = [severity_curve(r, metric) for r in recs if corrupted_cells(r)]
            sev = sorted(set.intersection(*(set(c) for c in curves)))
            vals = scale * np.array([[c[s] for s in sev] for c in curves])
            st = _style(i)
            ax.plot(sev, vals.mean(0), label=label, color=st["color"], marker=st["marker"], ms=3, lw=1.2)
            if len(curves) > 1:
                ax.fill_between(sev, vals.min(0), vals.max(0), color=st["color"], alpha=0.15, lw=0)
        ax.set_xlabel("corruption severity (0 = clean)")
        ax.set_ylabel(name)
        ax.set_title(f"{name.split(' ')[0]} vs severity")
        ax.set_xticks(range(0, 6))
    axes[0].legend(fontsize=6, loc="lower left")
    _margins(fig, left=0.6, bottom=0.5, top=0.3, wspace=0.3)
    return fig


def pareto_front(points: list[tuple[float, float]], maximize: bool) -> list[tuple[float, float]]:
    """Points not dominated by another (lower cost and better quality), sorted by cost."""
    front, best = [], -math.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if maximize else p[1])):
        q = y if maximize else -y
        if q > best:
            front.append((x, y))
            best = q
    return front


def cost_figure(groups: Groups) -> "MplFigure":
    """Quality (NLL; cA when measured) against cost (ms per example at batch 1; FLOPs), Pareto front drawn."""
    ys = [("nll", "clean NLL (lower is better)", False)]
    if any(corrupted_cells(r) for _, recs in groups for r in recs):
        ys.append(("cA", "cA, % (higher is better)", True))
    xs = [("ms_b1", "ms per example (batch 1)"), ("flops", "FLOPs per example")]
    if not any(not math.isnan(_cost(r, x)) for x, _ in xs for _, recs in groups for r in recs):
        raise Skip("no record of this block has cost measurements")
    fig = new_figure(9, 3.3 * len(ys))
    axes = np.atleast_2d(fig.subplots(len(ys), 2))
    for row, (yk, ylabel, maximize) in enumerate(ys):
        for col, (xk, xlabel) in enumerate(xs):
            ax, points = axes[row, col], []
            for i, (label, recs) in enumerate(groups):
                pts = np.array([(_cost(r, xk), _quality(r, yk) * (100 if yk == "cA" else 1)) for r in recs], dtype=float)
                pts = pts[~np.isnan(pts).any(axis=1)]
                if not len(pts):
                    continue
                mx, my = pts.mean(0)
                sx, sy = (pts.std(0, ddof=1) if len(pts) > 1 else (0.0, 0.0))
                st = _style(i)
                ax.errorbar([mx], [my], xerr=[sx], yerr=[sy], fmt=st["marker"], color=st["color"], ms=5, capsize=2, label=label)
                points.append((float(mx), float(my)))
            front = pareto_front(points, maximize)
            if len(front) > 1:
                fx, fy = zip(*front)
                ax.plot(fx, fy, ls="--", color="k", lw=0.8, drawstyle="steps-post", label="Pareto front")
            _log_axis(ax, si=xk == "flops")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=6)
    _margins(fig, left=0.7, bottom=0.5, top=0.15, wspace=0.25, hspace=0.35)
    return fig


def heatmap_figure(groups: Groups, severity: int | None = None, metric: str = "accuracy") -> "MplFigure":
    """Rows x corruptions: ``metric`` (mean over seeds) at ``severity``, or averaged over severities."""
    rows = [(label, [corruption_means(r, metric, severity) for r in recs if corrupted_cells(r)]) for label, recs in groups]
    rows = [(label, ms) for label, ms in rows if ms and any(ms)]
    if not rows:
        raise Skip("no record of this block has corrupted metrics" + (f" at severity {severity}" if severity else ""))
    corruptions = sorted(set.union(*(set(m) for _, ms in rows for m in ms)))
    data = np.array([[np.mean([m[c] for m in ms if c in m]) if any(c in m for m in ms) else np.nan for c in corruptions] for _, ms in rows])
    left = 0.2 + 0.075 * max(len(label) for label, _ in rows)
    fig = new_figure(max(6, 0.55 * len(corruptions) + 2.5) + left, 0.4 * len(rows) + 2.2)
    ax = fig.subplots()
    scale = 100 if metric == "accuracy" else 1
    im = ax.imshow(data * scale, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(corruptions)), [c.replace("_", " ") for c in corruptions], rotation=60, ha="right")
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.grid(False)
    for (i, j), v in np.ndenumerate(data):
        if not np.isnan(v):
            ax.text(j, i, f"{v * scale:.0f}" if scale == 100 else f"{v:.2f}", ha="center", va="center", fontsize=6,
                    color="white" if v * scale < np.nanmean(data * scale) else "black")
    where = f"severity {severity}" if severity else "mean over severities"
    ax.set_title(f"{metric} {'(%) ' if scale == 100 else ''}per corruption, {where}")
    # The colorbar sits in a fixed strip on the right (inches): gap, bar, then room for its tick
    # labels and its label, so neither is clipped whatever the figure's width.
    bottom, top, gap, bar, right = 1.2, 0.3, 0.15, 0.15, 0.75
    _margins(fig, left=left, bottom=bottom, top=top, right=gap + bar + right)
    w, h = fig.get_size_inches()
    cax = fig.add_axes((1 - (bar + right) / w, bottom / h, bar / w, 1 - (bottom + top) / h))
    cax.grid(False)
    cbar = fig.colorbar(im, cax=cax)
    cbar.set_label(f"{metric} (%)" if scale == 100 else metric)
    return fig


def reliability_figure(groups: Groups, severity: int = 5) -> "MplFigure":
    """Per row: accuracy per confidence bin (pooled over seeds), clean and at ``severity`` (pooled over corruptions)."""
    cols = [(label, pooled_reliability(recs), pooled_reliability(recs, severity)) for label, recs in groups]
    cols = [c for c in cols if c[1] is not None]
    if not cols:
        raise Skip("no record of this block stores reliability bins")
    has_c = any(c[2] is not None for c in cols)
    nrows = 2 if has_c else 1
    fig = new_figure(2.1 * len(cols) + 0.5, 2.3 * nrows + 0.3)
    axes = np.array(fig.subplots(nrows, len(cols), squeeze=False))
    for j, (label, clean, corrupted) in enumerate(cols):
        for i, (bins, name) in enumerate([(clean, "clean"), (corrupted, f"severity {severity}")][:nrows]):
            ax = axes[i, j]
            ax.plot([0, 1], [0, 1], ls=":", color="gray", lw=0.8)
            if bins is None:
                ax.text(0.5, 0.5, "not measured", ha="center", va="center", fontsize=7)
            else:
                edges, counts = bins["bin_edges"], bins["counts"]
                with np.errstate(invalid="ignore", divide="ignore"):
                    acc = np.where(counts > 0, bins["correct"] / counts, np.nan)
                    conf = np.where(counts > 0, bins["confidence_sum"] / counts, np.nan)
                width = np.diff(edges)
                ax.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color=PALETTE[j % len(PALETTE)], alpha=0.8, edgecolor="k", lw=0.3)
                ax.bar(edges[:-1], np.nan_to_num(conf - acc), bottom=np.nan_to_num(acc), width=width, align="edge", color="red", alpha=0.25, lw=0)
                ece = float(np.abs(bins["correct"] - bins["confidence_sum"]).sum() / counts.sum())
                ax.text(0.04, 0.9, f"ECE {ece:.3f}", fontsize=7)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1)
            ax.set_xticks([0, 0.5, 1])
            ax.set_yticks([0, 0.5, 1])
            ax.grid(False)
            ax.set_title(f"{label}\n{name}", fontsize=7)
            if j == 0:
                ax.set_ylabel("accuracy in bin")
            else:
                ax.tick_params(labelleft=False)
            if i == nrows - 1:
                ax.set_xlabel("confidence")
            else:
                ax.tick_params(labelbottom=False)
    _margins(fig, left=0.5, bottom=0.45, top=0.45, wspace=0.15, hspace=0.75)
    return fig


def diversity_figure(groups: Groups) -> "MplFigure":
    """Ensemble gain (member-mean NLL minus ensemble NLL) against disagreement and KL, one point per record."""
    pts = [(i, label, [g for g in (ensemble_gain(r) for r in recs) if g is not None]) for i, (label, recs) in enumerate(groups)]
    pts = [p for p in pts if p[2]]
    if not pts:
        raise Skip("no multi-member record of this block stores per-member metrics and diversity")
    fig = new_figure(8, 3.3)
    axes = fig.subplots(1, 2)
    for ax, k, name in zip(axes, (0, 1), ("disagreement (fraction of examples)", "mean pairwise KL (nats)")):
        for i, label, gains in pts:
            a = np.array(gains)
            st = _style(i)
            ax.scatter(a[:, k], a[:, 2], color=st["color"], marker=st["marker"], s=22, label=label)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("NLL gain over average member")
    axes[0].legend(fontsize=6)
    axes[0].set_title("diversity vs ensemble gain (clean)")
    _margins(fig, left=0.6, bottom=0.5, top=0.3, wspace=0.3)
    return fig


# name, title, caption, function
class PlotSpec(NamedTuple):
    """A leaderboard plot: file name stem, title, caption, and ``draw(groups) -> Figure`` (raising :class:`Skip`)."""

    name: str
    title: str
    caption: str
    draw: Callable[[Groups], "MplFigure"]


PLOTS: Registry[PlotSpec] = Registry("plot")


def register_plot(spec: PlotSpec) -> PlotSpec:
    """Add a plot to every block's figures (after the ones registered before it)."""
    return PLOTS.register(spec.name)(spec)


def load_plots() -> None:
    """Import the plot modules of :mod:`benchmark.leaderboard.extra_plots` (idempotent)."""
    import_package(f"{__package__}.extra_plots")


def plot_specs() -> list[PlotSpec]:
    """Every registered plot, in registration order (the built-ins first)."""
    load_plots()
    return PLOTS.ordered()


register_plot(PlotSpec("severity", "Accuracy, NLL and ECE against corruption severity",
                       "Mean over seeds (band: min..max over seeds) of the mean over the evaluated corruptions; severity 0 is the clean test set.",
                       severity_figure))
register_plot(PlotSpec("cost", "Cost against quality",
                       "Mean ± std over seeds; the dashed line is the Pareto front (no other row is both cheaper and better).", cost_figure))
register_plot(PlotSpec("heatmap", "Accuracy per corruption (mean over severities)",
                       "Mean over seeds of the accuracy per corruption, averaged over severities.", heatmap_figure))
register_plot(PlotSpec("reliability", "Reliability diagrams, clean and at severity 5",
                       "Accuracy per confidence bin from the stored bins, pooled over seeds (and over corruptions at severity 5); red: the gap to confidence.",
                       reliability_figure))
register_plot(PlotSpec("diversity", "Member diversity against the ensemble's gain",
                       "One point per record with 2+ members: clean member-mean NLL minus ensemble NLL against disagreement and mean pairwise KL.",
                       diversity_figure))


def save_figure(fig: "MplFigure", stem: Path) -> tuple[Path, Path]:
    """Write ``stem.png`` and ``stem.svg`` atomically with deterministic metadata."""
    import matplotlib

    with matplotlib.rc_context({"svg.hashsalt": "plures", "svg.fonttype": "none"}):
        png = atomic_write(stem.with_suffix(".png"), lambda fh: fig.savefig(fh, format="png", dpi=110, metadata={"Software": None}))
        svg = atomic_write(stem.with_suffix(".svg"), lambda fh: fig.savefig(fh, format="svg", metadata={"Date": None, "Creator": None}))
    return png, svg


def figure_png(fig: "MplFigure", dpi: int = 90) -> bytes:
    """A figure as PNG bytes (for notebooks: ``IPython.display.Image(figure_png(fig))``)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def render(fn: Callable[..., "MplFigure"], groups: Groups, **kwargs: Any) -> "MplFigure":
    """Call a figure function under the fixed plot style."""
    import matplotlib

    with matplotlib.rc_context(RC):
        return fn(groups, **kwargs)


def write_block_plots(board: SuiteBoard, folder: Path) -> list[Figure | Skipped]:
    """Every plot of every block of ``board`` under ``folder``; stale PNG/SVG files there are removed."""
    results: list[Figure | Skipped] = []
    written: set[Path] = set()
    for block in board.blocks:
        groups = block.groups()
        for name, title, caption, fn in plot_specs():
            full = f"{title} ({block.title})"
            try:
                fig = render(fn, groups)
            except Skip as why:
                results.append(Skipped(f"{block.slug}__{name}", full, str(why)))
                continue
            png, svg = save_figure(fig, folder / f"{block.slug}__{name}")
            written |= {png, svg}
            rel = folder.name
            results.append(Figure(f"{block.slug}__{name}", full, caption, f"{rel}/{png.name}", f"{rel}/{svg.name}"))
    if folder.exists():
        for old in sorted(folder.glob("*")):
            if old.suffix in (".png", ".svg") and old not in written:
                old.unlink()
    return results

"""Each row's paired difference against the block's deterministic row, with its 95% interval.

One panel per metric (accuracy in percentage points, NLL, calibrated NLL, Brier, ECE): a point and
a horizontal interval per row, the zero line, filled points where the interval excludes 0. The
values are the leaderboard's paired bootstrap (:mod:`benchmark.leaderboard.comparisons`, cached for
the build, so the plot shows exactly the table's numbers); rows without usable sidecars are left
out (the table says n/a and why).
"""

from __future__ import annotations

import numpy as np

from ..comparisons import PAIRED_LABELS, PAIRED_SCALE, cached_paired
from ..mce import BASELINE_METHOD
from ..plots import PALETTE, Groups, PlotSpec, Skip, new_figure, register_plot


def paired_differences_figure(groups: Groups):
    from matplotlib.ticker import MaxNLocator

    results = [(name, p.result) for name, p in cached_paired(groups) if p.result is not None]
    if not results:
        raise Skip(f"no row could be paired with a {BASELINE_METHOD} row from stored predictions (no such row, or no usable sidecars)")
    metrics = list(PAIRED_LABELS)
    n = len(results)
    fig = new_figure(2.3 * len(metrics) + 1.8, 0.32 * n + 1.1)
    axes = np.atleast_1d(fig.subplots(1, len(metrics), sharey=True))
    ys = np.arange(n)[::-1]
    for ax, m in zip(axes, metrics):
        scale = PAIRED_SCALE.get(m, 1.0)
        ax.axvline(0.0, color="k", lw=0.8)
        for i, ((_, res), y) in enumerate(zip(results, ys)):
            d = res.differences[m]
            colour = PALETTE[i % len(PALETTE)]
            ax.plot([scale * d.low, scale * d.high], [y, y], color=colour, lw=1.4)
            ax.plot([scale * d.diff], [y], marker="o", ms=4.5, color=colour, mfc=colour if d.excludes_zero else "white")
        better = "higher is better" if res.differences[m].higher_is_better else "lower is better"
        ax.set_title(f"{PAIRED_LABELS[m]}\n({better})", fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
        ax.xaxis.set_major_locator(MaxNLocator(4))
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([name for name, _ in results], fontsize=6)
    axes[0].set_ylim(-0.7, n - 0.3)
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=1.7 / w, right=1 - 0.15 / w, bottom=0.3 / h, top=1 - 0.45 / h, wspace=0.15)
    return fig


register_plot(PlotSpec("paired_differences", "Paired differences against the deterministic row",
                       f"Row minus the {BASELINE_METHOD} row on the same test examples: point estimate and 95% paired-bootstrap interval "
                       "(seed s paired with seed s over the seeds both rows have; with 2+ seeds the interval adds the seed-to-seed spread, "
                       "with one it covers test-set sampling only); filled: the interval excludes 0. "
                       "Accuracy in percentage points.", paired_differences_figure))

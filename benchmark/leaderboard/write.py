"""Writing leaderboards: ``<out>/<suite>/{leaderboard.md,csv,html,tex, index.html, plots/}`` (and
``reproduced.csv`` where the suite has reference records to compare with), every file written
atomically, and the command-line entry point."""

from __future__ import annotations

from pathlib import Path

from ..core.io import atomic_write_text
from ..records import load_records
from .boards import SuiteBoard, load_boards
from .comparisons import DEFAULT_RESAMPLES
from .page import write_page
from .plots import write_block_plots
from .render import render_csv, render_html, render_latex, render_markdown
from .reproduced import REPRODUCED_LINKS, Reproduced, render_reproduced_csv, reproduced_for, reproduced_html, reproduced_markdown


class LeaderboardArgumentError(ValueError):
    """A records folder that does not exist or holds no records, or a suite without records; the
    message names the value and the valid choices."""


def check_arguments(results_dir: Path | str, suites: list[str] | None = None) -> list[str]:
    """The suites that have records (completed or failed) under ``results_dir``; raise
    :class:`LeaderboardArgumentError` if the folder is missing or empty, or if a suite of
    ``suites`` has no records there (naming the suites that have)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        what = "is not a folder" if results_dir.exists() else "does not exist"
        raise LeaderboardArgumentError(f"--results-dir {results_dir} {what}; records are looked for there "
                                       f"(<results-dir>/<suite>/<run id>__<time>.json, default results/runs: your own runs, which "
                                       f"`make bench` writes; the published ones: --reference)")
    have = sorted({r["identity"]["suite"] for r in load_records(results_dir, include_failed=True).records})
    if not have:
        raise LeaderboardArgumentError(f"no run records under {results_dir} (looked for <suite>/<run id>__<time>.json); "
                                       f"run a suite first (python -m benchmark bench quick) or pass --results-dir")
    unknown = [s for s in suites or [] if s not in have]
    if unknown:
        raise LeaderboardArgumentError(f"no records of suite(s) {unknown} under {results_dir}; valid choices (suites with records): {', '.join(have)}")
    return have


def check_reference_dir(reference_dir: Path | None) -> Path | None:
    """``reference_dir`` when it is None or a folder; raise :class:`LeaderboardArgumentError` otherwise."""
    if reference_dir is not None and not Path(reference_dir).is_dir():
        what = "is not a folder" if Path(reference_dir).exists() else "does not exist"
        raise LeaderboardArgumentError(f"--reference-dir {reference_dir} {what}; the published records are looked for there "
                                       f"(<reference-dir>/<suite>/<run id>__<time>.json, default results/reference/runs)")
    return reference_dir


def write_tables(board: SuiteBoard, folder: Path, reproduced: Reproduced | None = None) -> list[Path]:
    """The four table files of ``board`` under ``folder``, and with ``reproduced`` its ``reproduced.csv``
    (an older one is removed without: it would describe another comparison); returns their paths."""
    written = [atomic_write_text(folder / "leaderboard.md", render_markdown(board, [reproduced_markdown(reproduced)] if reproduced else [])),
               atomic_write_text(folder / "leaderboard.csv", render_csv(board)),
               atomic_write_text(folder / "leaderboard.html", render_html(board, [reproduced_html(reproduced)] if reproduced else [])),
               atomic_write_text(folder / "leaderboard.tex", render_latex(board))]
    if reproduced is not None:
        written.append(atomic_write_text(folder / "reproduced.csv", render_reproduced_csv(reproduced)))
    else:
        (folder / "reproduced.csv").unlink(missing_ok=True)
    return written


def write_leaderboards(results_dir: Path, out_dir: Path, suites: list[str] | None = None, *, plots: bool = True,
                       cost_dir: Path | None = None, n_resamples: int = DEFAULT_RESAMPLES, reference_dir: Path | None = None) -> list[Path]:
    """Write ``<out>/<suite>/{leaderboard.md,csv,html,tex, index.html, plots/}``; returns the tables and pages.
    ``cost_dir``: where the interleaved cost passes are (default: ``cost`` beside ``results_dir``);
    ``n_resamples``: of the paired bootstrap (default 1,000); ``reference_dir``: the published records
    (``results/reference/runs``): a suite with records there gets the section "Against the reference
    records" (:mod:`.reproduced`) and ``reproduced.csv``; None (the reference boards themselves): none."""
    written = []
    for board in load_boards(results_dir, suites, cost_dir=cost_dir, n_resamples=n_resamples):
        folder = Path(out_dir) / board.suite
        reproduced = reproduced_for(board, reference_dir, results_dir)
        written += write_tables(board, folder, reproduced)
        figures = write_block_plots(board, folder / "plots") if plots else []
        sections = [reproduced_html(reproduced)] if reproduced else []
        written.append(write_page(board, folder, figures, sections, REPRODUCED_LINKS if reproduced else ()))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.leaderboard RESULTS_DIR OUT_DIR [SUITE ...] [--resamples=N]`` (paired bootstrap, default 1000)."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    resamples = [a for a in args if a.startswith("--resamples=")]
    args = [a for a in args if a not in resamples]
    try:
        n_resamples = int(resamples[-1].split("=", 1)[1]) if resamples else DEFAULT_RESAMPLES
        if n_resamples < 1:
            raise ValueError
    except ValueError:
        print(f"error: --resamples must be a positive integer, got {resamples[-1].split('=', 1)[1]!r}", file=sys.stderr)
        return 2
    if len(args) < 2:
        print(main.__doc__)
        return 2
    try:
        check_arguments(Path(args[0]), args[2:] or None)
    except LeaderboardArgumentError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in write_leaderboards(Path(args[0]), Path(args[1]), args[2:] or None, n_resamples=n_resamples):
        print(f"leaderboard: {path}")
    return 0

"""Writing leaderboards: ``<out>/<suite>/{leaderboard.md,csv,html,tex, index.html, plots/}``, every
file written atomically, and the command-line entry point."""

from __future__ import annotations

from pathlib import Path

from ..core.io import atomic_write_text
from .boards import SuiteBoard, load_boards
from .page import write_page
from .plots import write_block_plots
from .render import render_csv, render_html, render_latex, render_markdown


def write_tables(board: SuiteBoard, folder: Path) -> list[Path]:
    """The four table files of ``board`` under ``folder``; returns their paths."""
    return [atomic_write_text(folder / "leaderboard.md", render_markdown(board)),
            atomic_write_text(folder / "leaderboard.csv", render_csv(board)),
            atomic_write_text(folder / "leaderboard.html", render_html(board)),
            atomic_write_text(folder / "leaderboard.tex", render_latex(board))]


def write_leaderboards(results_dir: Path, out_dir: Path, suites: list[str] | None = None, *, plots: bool = True) -> list[Path]:
    """Write ``<out>/<suite>/{leaderboard.md,csv,html,tex, index.html, plots/}``; returns the tables and pages."""
    written = []
    for board in load_boards(results_dir, suites):
        folder = Path(out_dir) / board.suite
        written += write_tables(board, folder)
        figures = write_block_plots(board, folder / "plots") if plots else []
        written.append(write_page(board, folder, figures))
    return written


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmark.leaderboard RESULTS_DIR OUT_DIR [SUITE ...]``."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(main.__doc__)
        return 2
    for path in write_leaderboards(Path(args[0]), Path(args[1]), args[2:] or None):
        print(f"leaderboard: {path}")
    return 0

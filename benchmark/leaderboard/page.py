"""One offline HTML page per leaderboard: header facts, every table, every plot, what was left out.

The page (``<out>/<suite>/index.html``) has no external resources: inline CSS, images by relative
links to ``plots/``. It is a pure function of the board and the plots written beside it. The
document frame, the tables (with their column views: a compact overview by default, one view per
column group, plain HTML and CSS that work offline and without scripts), the note on how cost was
measured, and the left-out sections come from :mod:`.render`.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from ..core.io import atomic_write_text
from .boards import SuiteBoard
from .plots import Figure, Skipped
from .render import html_document, problems_html, render_html_tables


def plots_html(figures: Sequence[Figure | Skipped]) -> str:
    """The plots section: each figure with its caption and SVG link, or why it was not drawn."""
    e = html.escape
    out = ['<section id="plots"><h2>Plots</h2>']
    if not figures:
        out.append("<p>No plots.</p>")
    for f in figures:
        if isinstance(f, Figure):
            out.append(f'<figure id="plot-{e(f.name)}"><h3>{e(f.title)}</h3><img src="{e(f.png)}" alt="{e(f.title)}">'
                       f'<figcaption class="caption">{e(f.caption)} <a href="{e(f.svg)}">SVG</a></figcaption></figure>')
        else:
            out.append(f'<p class="skipped" id="plot-{e(f.name)}"><strong>{e(f.title)}</strong>: not drawn ({e(f.reason)}).</p>')
    out.append("</section>")
    return "\n".join(out)


def render_page(board: SuiteBoard, figures: Sequence[Figure | Skipped], sections: Sequence[str] = (),
                links: Sequence[tuple[str, str]] = ()) -> str:
    """``index.html``: links to the tables (and ``links``: (href, text)), the tables, the plots,
    ``sections`` (further HTML sections, e.g. :mod:`.reproduced`'s) and what was left out."""
    more = "".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for href, text in links)
    nav = ('<nav><a href="leaderboard.md">Markdown</a><a href="leaderboard.csv">CSV</a><a href="leaderboard.tex">LaTeX</a>'
           f'<a href="leaderboard.html">tables only</a><a href="#plots">plots</a>{more}<a href="#left-out">left out</a></nav>')
    body = "\n".join([nav, render_html_tables(board), plots_html(figures), *sections, problems_html(board)])
    return html_document(f"Leaderboard: {board.suite}", body)


def write_page(board: SuiteBoard, folder: Path, figures: Sequence[Figure | Skipped], sections: Sequence[str] = (),
               links: Sequence[tuple[str, str]] = ()) -> Path:
    """Write ``<folder>/index.html`` atomically; returns its path."""
    return atomic_write_text(Path(folder) / "index.html", render_page(board, figures, sections, links))

"""One offline HTML page per leaderboard: header facts, every table, every plot, what was left out.

The page (``<out>/<suite>/index.html``) has no external resources: inline CSS, images by relative
links to ``plots/``. It is a pure function of the board and the plots written beside it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..core.io import atomic_write_text

if TYPE_CHECKING:  # pragma: no cover
    from . import SuiteBoard
    from .plots import Figure, Skipped

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; font-size: .9em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
table.leaderboard { border-collapse: collapse; font-size: .82em; margin: .6em 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: .25em .5em; text-align: right; white-space: nowrap; }
table.leaderboard th { background: #f3f3f3; position: sticky; top: 0; }
table.leaderboard td:nth-child(-n+5), table.leaderboard th:nth-child(-n+5) { text-align: left; }
.scroll { overflow-x: auto; }
table.leaderboard tr.reported td { color: #666; font-style: italic; background: #fafafa; }
.legend, .caption { font-size: .85em; color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.skipped { color: #8a5a00; }
nav a { margin-right: 1em; }
"""


def html_document(title: str, body: str) -> str:
    e = html.escape
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(title)}</title>\n'
            f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{e(title)}</h1>\n{body}\n</body>\n</html>\n")


def problems_html(board: "SuiteBoard") -> str:
    """The records left out as malformed, and failed runs, as HTML sections (always present)."""
    e = html.escape
    out = ['<section id="left-out"><h2>Records left out (malformed)</h2>']
    if board.problems:
        out.append("<ul>" + "".join(f"<li><code>{e(p)}</code>: {e(why)}</li>" for p, why in board.problems) + "</ul>")
    else:
        out.append("<p>None: every record read was used.</p>")
    out.append("</section>")
    if board.failed:
        out.append('<section id="failed"><h2>Failed runs (not in the tables)</h2><ul>'
                   + "".join(f"<li><code>{e(p)}</code>: {e(why)}</li>" for p, why in board.failed) + "</ul></section>")
    return "\n".join(out)


def plots_html(figures: Sequence["Figure | Skipped"]) -> str:
    from .plots import Figure

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


def render_page(board: "SuiteBoard", figures: Sequence["Figure | Skipped"]) -> str:
    from . import render_html_tables

    nav = ('<nav><a href="leaderboard.md">Markdown</a><a href="leaderboard.csv">CSV</a><a href="leaderboard.tex">LaTeX</a>'
           '<a href="leaderboard.html">tables only</a><a href="#plots">plots</a><a href="#left-out">left out</a></nav>')
    body = "\n".join([nav, render_html_tables(board), plots_html(figures), problems_html(board)])
    return html_document(f"Leaderboard: {board.suite}", body)


def write_page(board: "SuiteBoard", folder: Path, figures: Sequence["Figure | Skipped"]) -> Path:
    return atomic_write_text(Path(folder) / "index.html", render_page(board, figures))

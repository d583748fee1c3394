"""Rendering, the only place values are rounded: number formats, table cells, and the Markdown,
CSV (full precision; the numbers computed from the sidecars at 7 decimals, the same on any CPU),
HTML and LaTeX tables of a board, plus the HTML document frame and the left-out sections that
the tables and the page (:mod:`.page`) share. A later step may add a section of its own
(``sections``: :mod:`.reproduced`, which formats with :data:`FORMATS`).

The HTML tables (only they) have column views, so that they fit the window: every metric column
belongs to a group (:func:`column_group`: accuracy and calibration, robustness, OOD, cost); a bar
of radio buttons chooses the compact overview (the default), one group, or all columns, and CSS
hides the other columns (no script). The HTML also says how cost was measured (:data:`COST_NOTE`).
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import pandas as pd

from ..evaluation.metric_specs import metric_specs
from .boards import Block, SuiteBoard
from .columns import COST_COLUMNS, MCE_COLUMNS, MI_OOD_PREFIX, OOD_PREFIX, Column
from .aggregate import SEED_INTERVAL_LEGEND
from .comparisons import (ONE_SEED_CSV, ONE_SEED_LEGEND, ONE_SEED_MARK, PAIRED_LABELS, PUBLISHED_DECIMALS, SEED_INTERVAL_CSV, PairedTable,
                          computed_columns, published)
from .frame import GROUP_KEYS, RUN_FACTS


def si(v: float) -> str:
    """A count with an SI suffix (k, M, G, T) and 3 significant digits."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{suffix}"
    return f"{v:.3g}"


def _duration(v: float, unit_of: float | None = None) -> str:
    """Seconds as s, min or h with 3 significant digits; with ``unit_of`` (an interval bound's mean)
    in the mean's unit and decimals, without the unit."""
    if unit_of is None:
        scale, unit = next(((s, u) for s, u in _UNITS if v >= s), (1, "s"))
        return f"{v / scale:.3g} {unit}"
    scale = {u: s for s, u in _UNITS}[_duration(unit_of).split(" ")[1]]
    return f"{v / scale:.{_decimals(unit_of / scale)}f}"


_UNITS = ((3600, "h"), (60, "min"), (1, "s"))


def _decimals(v: float, digits: int = 3) -> int:
    """Decimals that show ``v`` with ``digits`` significant digits (0 for large values)."""
    return max(0, digits - 1 - math.floor(math.log10(abs(v)))) if v else digits - 1


FORMATS: dict[str, Callable[[float], str]] = {
    "pct": lambda v: f"{100 * v:.2f}", "f1": lambda v: f"{v:.1f}", "f2": lambda v: f"{v:.2f}", "f3": lambda v: f"{v:.3f}", "f4": lambda v: f"{v:.4f}",
    "int": lambda v: f"{v:.0f}" if float(v).is_integer() else f"{v:.2f}", "si": si, "ms": lambda v: f"{v:.{_decimals(v)}f}", "duration": _duration,
}
# Interval bounds printed with the mean's decimals where the mean uses significant digits.
BOUND_FORMATS: dict[str, Callable[[float, float], str]] = {
    "ms": lambda s, v: f"{s:.{_decimals(v)}f}", "duration": lambda s, v: _duration(s, unit_of=v),
}


def _bound(kind: str, v: float, mean: float) -> str:
    """An interval bound as its mean is shown (:data:`BOUND_FORMATS`)."""
    return BOUND_FORMATS[kind](v, mean) if kind in BOUND_FORMATS else FORMATS[kind](v)


def format_value(row: pd.Series, col: Column) -> str:
    """``mean [low, high]`` (the 95% t interval over seeds, only with 2+ seeds:
    :func:`.aggregate.seed_interval`), ``(n=k)`` when fewer seeds than the row has, ``—`` when absent;
    a column with a ``<key>_display`` text in the row (DEE: ``< 1``, ``> M``, ``n/a``) shows that text."""
    shown = row.get(f"{col.key}_display")
    if isinstance(shown, str):
        return shown
    v = row.get(col.key)
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    fmt = FORMATS[col.kind]
    text = fmt(float(v))
    low, high = row.get(f"{col.key}_low"), row.get(f"{col.key}_high")
    if row["kind"] == "measured" and col.spread and low is not None and high is not None and not (math.isnan(low) or math.isnan(high)):
        text += f" [{_bound(col.kind, float(low), float(v))}, {_bound(col.kind, float(high), float(v))}]"
    n = row.get(f"{col.key}_n")
    if row["kind"] == "measured" and n is not None and not math.isnan(n) and int(n) < int(row["seeds"]):
        text += f" (n={int(n)})"
    if col.key == "train_seconds" and row.get("reused_members") is True:
        text += " ‡"
    return text


@dataclass(frozen=True)
class Cell:
    """One rendered table cell (bold: the best measured value of its column)."""

    text: str
    bold: bool = False


def table_cells(block: Block) -> tuple[list[str], list[list[Cell]], int]:
    """(header, rows of cells, number of measured rows) for one block."""
    header = ["#", "Method", "Variant", "Setting", "Source", "Seeds"] + [c.label for c in block.columns]
    drop_setting = not block.table["setting"].astype(bool).any()
    rows, rank = [], 0
    for _, row in block.table.iterrows():
        measured = row["kind"] == "measured"
        rank += measured
        cells = [Cell(str(rank) if measured else ""), Cell(str(row["method"])), Cell(str(row["variant"]) or "—"), Cell(str(row["setting"]) or "—"),
                 Cell("measured" if measured else str(row["source"])), Cell(seeds_text(row) if measured else "—")]
        cells += [Cell(format_value(row, c), bool(row.get(f"best_{c.key}", False))) for c in block.columns]
        rows.append(cells)
    if drop_setting:
        header.pop(3)
        rows = [r[:3] + r[4:] for r in rows]
    return header, rows, rank


def seeds_text(row: pd.Series) -> str:
    """A measured row's seed count, with :data:`.comparisons.ONE_SEED_MARK` for one seed."""
    n = int(row["seeds"])
    return f"{n} {ONE_SEED_MARK}" if n == 1 else str(n)


LEGEND = ("Acc, cA, AUROC in %; NLL in nats; ECE top-label, 15 bins; Brier summed over classes; "
          "cal. NLL: NLL after temperature scaling (T fitted on the validation split, else test-time cross-validation), T its temperature; "
          "DEE: deep-ensemble members of equal calibrated NLL; AURC: area under the risk-coverage curve (max probability); "
          "MI-AUROC: OOD detection scored by the ensemble's mutual information; mCE x100 (lower is better); "
          "FLOPs per test example; ms/ex: measured median test time per example at batch 1 and a large batch; "
          "train time: wall time of the run's training (‡: some members reused from other runs, not counted). "
          "(n=k): only k of the row's seeds have this metric. —: not measured. n/a: not computable for this row, the block's facts "
          "say why (no deep-ensemble row for DEE, or stored predictions the records lack).")


def seed_legend(blocks: Sequence[Block]) -> list[str]:
    """What the seed marks of ``blocks`` mean: :data:`SEED_INTERVAL_LEGEND` where a measured row has
    2+ seeds, :data:`ONE_SEED_LEGEND` where one has a single seed."""
    seeds = {int(n) for b in blocks for n, k in zip(b.table["seeds"], b.table["kind"]) if k == "measured"}
    return [*([SEED_INTERVAL_LEGEND] if any(n > 1 for n in seeds) else []), *([ONE_SEED_LEGEND] if 1 in seeds else [])]


def legend(board: SuiteBoard) -> str:
    """:data:`LEGEND`, then what the board's seed marks mean (:func:`seed_legend`)."""
    return " ".join([LEGEND, *seed_legend(board.blocks)])


def paired_cells(block: Block) -> tuple[str, list[str], list[list[str]]] | None:
    """(header line, column labels, rows) of the block's paired-difference table, or None."""
    p: PairedTable | None = block.paired
    if p is None or not p.rows:
        return None
    metrics = list(PAIRED_LABELS)
    labels = ["Method", "Seeds", *(PAIRED_LABELS[m] for m in metrics)]
    return (f"Paired differences vs {p.baseline} ({'; '.join(filter(None, ('row - baseline', '95% interval', p.marks)))}): {p.header}", labels,
            [[name, cells["seeds"], *(cells[m] for m in metrics)] for name, cells in p.rows])


def render_markdown(board: SuiteBoard, sections: Sequence[str] = ()) -> str:
    """``leaderboard.md``: suite facts, one table per block with its facts, the legend, ``sections``
    (further Markdown sections, e.g. :mod:`.reproduced`'s), what was left out."""
    out = [f"# Leaderboard: {board.suite}", "", "Generated from the run records by `python -m benchmark leaderboard`; do not edit.", ""]
    out += [f"- **{k}**: {v}" for k, v in board.facts]
    if not board.blocks:
        out += ["", "No completed records for this suite."]
    for block in board.blocks:
        header, rows, _ = table_cells(block)
        out += ["", f"## {block.title}", ""] + [f"- **{k}**: {v}" for k, v in block.facts] + [""]
        esc = lambda s: s.replace("|", "\\|")  # noqa: E731
        out.append("| " + " | ".join(esc(h) for h in header) + " |")
        out.append("|" + "|".join("---" if i < (len(header) - len(block.columns)) else "---:" for i in range(len(header))) + "|")
        out += ["| " + " | ".join(f"**{esc(c.text)}**" if c.bold else esc(c.text) for c in r) + " |" for r in rows]
        paired = paired_cells(block)
        if paired:
            line, labels, prow = paired
            out += ["", f"**{esc(line)}**", "", "| " + " | ".join(labels) + " |", "|---|" + "---:|" * (len(labels) - 1)]
            out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in prow]
    out += ["", f"_{legend(board)}_"]
    out += [line for text in sections for line in ["", *text.splitlines()]]
    out += _problems_markdown(board)
    return "\n".join(out) + "\n"


def _problems_markdown(board: SuiteBoard) -> list[str]:
    out = []
    if board.problems:
        out += ["", "## Records left out or with problems", ""] + [f"- `{p}`: {why}" for p, why in board.problems]
    if board.failed:
        out += ["", "## Failed runs (not in the tables)", ""] + [f"- `{p}`: {why}" for p, why in board.failed]
    return out


def render_csv(board: SuiteBoard) -> str:
    """Every row at full precision: what was run (data source, subsets, budget, corrupted data:
    :data:`.frame.RUN_FACTS`; seeds and ``seed_interval``, the interval over seeds), then mean,
    std, the interval over seeds (``<key>_low``, ``<key>_high``; with 2+ seeds), count and best
    flag per metric; the interval bounds and the numbers computed from the prediction sidecars
    (DEE, paired differences) rounded to :data:`.comparisons.PUBLISHED_DECIMALS` decimals
    (``sidecar_decimals``), so that they are the same on every CPU."""
    frames = []
    bounds = []  # the intervals over seeds (t quantile: math's lgamma/log/exp), published like the sidecar numbers
    for block in board.blocks:
        t = block.table.copy()
        t["seed_interval"] = [SEED_INTERVAL_CSV if k == "measured" and n > 1 else ONE_SEED_CSV if k == "measured" else None
                              for k, n in zip(t["kind"], t["seeds"])]
        keep = list(GROUP_KEYS) + ["kind", "source", "seeds", "seed_list", *RUN_FACTS, "seed_interval"]
        for c in block.columns:
            ci = [f"{c.key}_low", f"{c.key}_high"] if c.spread and f"{c.key}_low" in t else []
            bounds += [k for k in ci if k not in bounds]
            keep += [c.key] + [k for k in (f"{c.key}_std", *ci, f"{c.key}_n", f"{c.key}_display") if k in t] + [f"best_{c.key}"]
        keep += [k for k in t.columns if k.startswith("d_") and k not in keep]  # paired differences (scaled as shown) and intervals
        for k in keep:
            if k not in t:
                t[k] = math.nan
        frames.append(t[keep])
    if not frames:
        return ",".join([*GROUP_KEYS, "kind", "source", "seeds", "seed_list", *RUN_FACTS]) + "\n"
    out = pd.concat(frames, ignore_index=True)
    computed = computed_columns(out.columns)
    for k in computed + bounds:  # the same on every CPU (comparisons.py: why 7 decimals)
        out[k] = out[k].astype(float).map(published)
    if computed:
        out["sidecar_decimals"] = pd.array([PUBLISHED_DECIMALS if k == "measured" else None for k in out["kind"]], dtype="Int64")
    return out.to_csv(index=False, lineterminator="\n")


# ------------------------------------------------------------------------------------------------
# column views of the HTML tables (only the HTML; the Markdown, CSV and LaTeX show every column)
# ------------------------------------------------------------------------------------------------

# (group, button label, what its columns are): every metric column belongs to one group.
COLUMN_GROUPS = (
    ("acc", "Accuracy and calibration", "clean test set metrics"),
    ("rob", "Robustness", "corrupted-set summaries and mCE"),
    ("ood", "OOD", "out-of-distribution detection"),
    ("cost", "Cost", "size, FLOPs, passes, measured time"),
)
# The compact default view: a few headline columns of every group (OOD: its first set).
OVERVIEW_KEYS = ("accuracy", "nll", "ece", "cA", "mCE", "forward_passes", "ms_b1")
VIEWS = (("overview", "Overview", "headline columns of every group"), *COLUMN_GROUPS, ("all", "All columns", "every column (may scroll)"))

COST_NOTE = ("How cost was measured: ms/ex is the median over timed repeats (at least 10 at batch 1, eval.latency_repeats at the "
             "large batch, after one warm-up pass) of the evaluated network's forward pass, at batch 1 and at the large batch, in the "
             "run's precision on the run's own device. It is measured once, at the end of each run after its evaluation, not "
             "interleaved across methods: rows measured at different times see whatever else the machine was doing. Train time is "
             "the wall time of the run's training stages (checkpoint writes included, evaluation not). CPU timings on a shared "
             "machine vary by 10-25% between repeats of the same measurement, so smaller differences are noise; for a like-for-like "
             "comparison use python -m benchmark perf, which interleaves the methods in one process.")


def column_group(col: Column) -> str:
    """The view group of a metric column: ``acc``, ``rob``, ``ood`` or ``cost``."""
    if col.key in {c.key for c in COST_COLUMNS}:
        return "cost"
    if col.key.startswith((OOD_PREFIX, MI_OOD_PREFIX)):
        return "ood"
    if col.key in {c.key for c in MCE_COLUMNS} or col.key in {m.summary for m in metric_specs() if m.summary}:
        return "rob"
    return "acc"


def _column_classes(columns: list[Column]) -> list[str]:
    """``col g-<group>`` per metric column, plus ``key`` for the overview's columns."""
    first_ood = next((c.key for c in columns if column_group(c) == "ood"), None)
    return [f"col g-{column_group(c)}" + (" key" if c.key in OVERVIEW_KEYS or c.key == first_ood else "") for c in columns]


def views_css() -> str:
    """CSS of the column views: one radio input per view before the ``.boards`` container; the
    checked one hides the other columns (no script needed)."""
    rules = [".view-radio { position: absolute; opacity: 0; width: 1px; height: 1px; }",
             ".view-empty { display: none; color: #666; font-size: .85em; }"]
    for view, _, _ in VIEWS:
        sel = f"#cols-{view}:checked"
        rules.append(f'{sel} ~ .view-bar label[for="cols-{view}"] {{ background: #333; color: #fff; border-color: #333; }}')
        rules.append(f'{sel}:focus-visible ~ .view-bar label[for="cols-{view}"] {{ outline: 2px solid #1f77b4; outline-offset: 1px; }}')
        if view == "overview":
            rules.append(f"{sel} ~ .boards .col:not(.key) {{ display: none; }}")
        elif view != "all":
            rules.append(f"{sel} ~ .boards .col:not(.g-{view}) {{ display: none; }}")
            rules.append(f"{sel} ~ .boards .view-empty.e-{view} {{ display: block; }}")
    return "\n".join(rules)


def _view_controls(board: SuiteBoard) -> str:
    """The radio inputs (siblings before ``.boards``) and the bar of their labels; views of groups
    without a column in any block are left out."""
    present = {column_group(c) for b in board.blocks for c in b.columns}
    views = [v for v in VIEWS if v[0] in ("overview", "all") or v[0] in present]
    e = html.escape
    radios = "".join(f'<input type="radio" class="view-radio" name="columns" id="cols-{v}" value="{v}"{" checked" if v == "overview" else ""}>'
                      for v, _, _ in views)
    labels = "".join(f'<label for="cols-{v}" title="{e(what)}">{e(label)}</label>' for v, label, what in views)
    return radios + f'\n<div class="view-bar"><span>Columns:</span>{labels}</div>'


def _cell_html(cell: Cell, css: str) -> str:
    """A ``<td>`` whose text may wrap only before ``±``, ``[`` and ``(n=k)`` and after an interval's
    comma, so a narrow table puts the interval under the mean instead of overflowing; numbers and
    units never break."""
    text = html.escape(cell.text)
    if css.startswith("col "):  # a metric cell (identity cells wrap as text does)
        text = text.replace(" ", "&nbsp;").replace("&nbsp;±", " ±").replace("&nbsp;[", " [").replace(",&nbsp;", ", ").replace("&nbsp;(n=", " (n=")
    return f'<td class="{css}"><strong>{text}</strong></td>' if cell.bold else f'<td class="{css}">{text}</td>'


def render_html_tables(board: SuiteBoard) -> str:
    """The tables and their facts as an HTML fragment (used by leaderboard.html and the page).

    A bar of column views (``Overview``, the default, a few headline columns of every group; one
    view per group; ``All columns``) chooses the metric columns every table shows; the identity
    columns (rank, method, variant, source, seeds) are always shown.
    """
    e = html.escape
    out = [facts_html(board.facts), _view_controls(board), '<div class="boards">']
    if not board.blocks:
        out.append("<p>No completed records for this suite.</p>")
    for block in board.blocks:
        header, rows, measured = table_cells(block)
        first = len(header) - len(block.columns)
        classes = [f"id-{re.sub(r'[^a-z]', '', h.lower()) or 'rank'}" for h in header[:first]] + _column_classes(block.columns)
        present = {column_group(c) for c in block.columns}
        out.append(f'<section class="block" id="table-{e(block.slug)}"><h2>{e(block.title)}</h2>{facts_html(block.facts)}')
        out += [f'<p class="view-empty e-{g}">This block has no {e(label)} columns.</p>' for g, label, _ in COLUMN_GROUPS if g not in present]
        out.append(f'<div class="scroll"><table class="leaderboard" data-block="{e(block.slug)}"><thead><tr>'
                   + "".join(f'<th class="{k}">{e(h)}</th>' for k, h in zip(classes, header)) + "</tr></thead><tbody>")
        for i, r in enumerate(rows):
            cls = "measured" if i < measured else "reported"
            out.append(f'<tr class="{cls}">' + "".join(_cell_html(c, k) for k, c in zip(classes, r)) + "</tr>")
        out.append("</tbody></table></div>")
        paired = paired_cells(block)
        if paired:
            line, labels, prow = paired
            out.append(f'<h3>{e(line)}</h3><div class="scroll"><table class="paired" data-block="{e(block.slug)}"><thead><tr>'
                       + "".join(f"<th>{e(h)}</th>" for h in labels) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in prow]
            out.append("</tbody></table></div>")
        out.append("</section>")
    out.append(f'<p class="legend">{e(legend(board))}</p>')
    out.append(f'<p class="legend cost-note" id="cost-note">{e(COST_NOTE)}</p>')
    out.append("</div>")
    return "\n".join(out)


def facts_html(facts: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in facts) + "</dl>"


def render_html(board: SuiteBoard, sections: Sequence[str] = ()) -> str:
    """``leaderboard.html``: the tables, ``sections`` (further HTML sections, e.g. :mod:`.reproduced`'s)
    and what was left out, without plots."""
    return html_document(f"Leaderboard: {board.suite}", render_html_tables(board) + "".join(f"\n{h}\n" for h in sections) + problems_html(board))


# ------------------------------------------------------------------------------------------------
# the HTML document frame (shared with the page)
# ------------------------------------------------------------------------------------------------

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15em 1em; font-size: .9em; }
dl.facts dt { font-weight: 600; } dl.facts dd { margin: 0; }
table.leaderboard { border-collapse: collapse; font-size: .82em; margin: .6em 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ddd; padding: .25em .4em; text-align: right; }
table.leaderboard th { background: #f3f3f3; position: sticky; top: 0; white-space: normal; vertical-align: bottom; }
table.paired { border-collapse: collapse; font-size: .82em; margin: .6em 0; }
table.paired th, table.paired td { border-bottom: 1px solid #ddd; padding: .25em .4em; text-align: right; }
table.paired th { background: #f3f3f3; }
table.paired td:first-child, table.paired th:first-child { text-align: left; }
table.leaderboard td:nth-child(-n+5), table.leaderboard th:nth-child(-n+5) { text-align: left; }
table.leaderboard td.id-source { white-space: normal; min-width: 6em; max-width: 14em; }
.scroll { overflow-x: auto; }
.view-bar { display: flex; flex-wrap: wrap; align-items: center; gap: .4em; margin: 1em 0 .2em; font-size: .9em; }
.view-bar label { border: 1px solid #bbb; border-radius: 4px; padding: .2em .7em; cursor: pointer; background: #fff; user-select: none; }
.view-bar label:hover { border-color: #333; }
table.leaderboard tr.reported td { color: #666; font-style: italic; background: #fafafa; }
.legend, .caption { font-size: .85em; color: #555; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
.skipped { color: #8a5a00; }
nav a { margin-right: 1em; }
"""


def html_document(title: str, body: str) -> str:
    """A complete offline HTML document: inline CSS, ``title`` as heading, then ``body``."""
    e = html.escape
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{e(title)}</title>\n'
            f"<style>{CSS}{views_css()}\n</style>\n</head>\n<body>\n<h1>{e(title)}</h1>\n{body}\n</body>\n</html>\n")


def problems_html(board: SuiteBoard) -> str:
    """The records left out as malformed, and failed runs, as HTML sections (always present)."""
    e = html.escape
    out = ['<section id="left-out"><h2>Records left out or with problems</h2>']
    if board.problems:
        out.append("<ul>" + "".join(f"<li><code>{e(p)}</code>: {e(why)}</li>" for p, why in board.problems) + "</ul>")
    else:
        out.append("<p>None: every record read was used.</p>")
    out.append("</section>")
    if board.failed:
        out.append('<section id="failed"><h2>Failed runs (not in the tables)</h2><ul>'
                   + "".join(f"<li><code>{e(p)}</code>: {e(why)}</li>" for p, why in board.failed) + "</ul></section>")
    return "\n".join(out)


TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
               "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$", "—": "--", "‡": r"$\ddagger$",
               "Δ": r"$\Delta$", "<": r"$<$", ">": r"$>$", "†": r"$\dagger$", "§": r"\S{}", "√": r"$\surd$"}


def tex_escape(s: str) -> str:
    """``s`` with LaTeX specials escaped (and ±, —, ‡, Δ, <, > as math or dashes)."""
    return "".join(TEX_ESCAPES.get(ch, ch) for ch in s)


# The block facts a LaTeX caption carries: what was run (as the Markdown and HTML say it), so a
# table from a subset or a short budget never reads like a full-data run.
CAPTION_FACTS = ("Comparability", "Data", "Corrupted data", "Subsets", "Budget", "Seeds")


def render_latex(board: SuiteBoard) -> str:
    """One booktabs table per block; what was run (:data:`CAPTION_FACTS`) goes in the caption."""
    out = [f"% Leaderboard {board.suite}: generated from the run records by plures; do not edit.", "% Needs \\usepackage{booktabs}."]
    for k, v in board.facts:
        out.append(f"% {k}: {v}")
    for block in board.blocks:
        header, rows, measured = table_cells(block)
        caption = " ".join([f"{block.title}.", *(f"{k}: {v.rstrip('.')}." for k, v in block.facts if k in CAPTION_FACTS), *seed_legend([block])])
        label = re.sub(r"[^A-Za-z0-9]+", "-", f"{board.suite}-{block.slug}")
        out += ["", r"\begin{table}[t]", r"\centering", r"\scriptsize", f"\\caption{{{tex_escape(caption)}}}",
                f"\\label{{tab:{label}}}",
                r"\begin{tabular}{" + "l" * (len(header) - len(block.columns)) + "r" * len(block.columns) + "}", r"\toprule",
                " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
        for i, r in enumerate(rows):
            if i == measured and i > 0:
                out.append(r"\midrule")
            out.append(" & ".join(f"\\textbf{{{tex_escape(c.text)}}}" if c.bold else tex_escape(c.text) for c in r) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        paired = paired_cells(block)
        if paired:
            line, labels, prow = paired
            out += ["", r"\begin{table}[t]", r"\centering", r"\scriptsize", f"\\caption{{{tex_escape(block.title + '. ' + line)}}}",
                    f"\\label{{tab:{label}-paired}}", r"\begin{tabular}{l" + "r" * (len(labels) - 1) + "}", r"\toprule",
                    " & ".join(tex_escape(h) for h in labels) + r" \\", r"\midrule"]
            out += [" & ".join(tex_escape(c) for c in r) + r" \\" for r in prow]
            out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"

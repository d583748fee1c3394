"""Leaderboards: a pure function of the run records (tables, plots, one offline page per suite).

Pipeline, one module per step, each importing only the ones before it:

1. :mod:`.columns`: the columns, the metric ones read from the metric declarations
   (:func:`benchmark.evaluation.metric_specs.metric_specs`).
   :mod:`.costs`: the interleaved cost pass's latencies (``results/cost/<suite>.json``) for the
   records it measured, the block's latency facts and the ensemble-cheaper-than-its-member check.
2. :mod:`.frame`: one row per record at full precision (``load_records`` has checked the schema
   and kept the newest record per run id); a record whose content is unusable is reported and
   left out.
3. :mod:`.mce`: mCE and rel. mCE against the dataset's published reference, else the block's
   deterministic runs; :func:`records_frame` is the complete frame.
4. :mod:`.aggregate`: mean, sample std (ddof=1) and count over seeds per (suite, dataset,
   backbone, method, variant, setting); ``setting`` tells apart runs of one method whose configs differ.
   :mod:`.comparisons`: from the records' prediction sidecars (numpy only), each row's DEE against
   the block's deep ensemble and its paired-bootstrap difference against the deterministic row.
5. :mod:`.boards`: per suite, one block per (dataset, backbone) with the measured rows ranked by
   NLL, the best value per column marked, "reported" rows from :mod:`.reported` where dataset and
   backbone match (never ranked), and header facts (data, budget, seeds, provenance).
6. :mod:`.render` (Markdown, CSV, HTML, LaTeX), :mod:`.plots` and :mod:`.page`; :mod:`.write`
   writes them atomically under ``<out>/<suite>/``.
   :mod:`.reproduced`: on a user's board, each row beside the published reference records of the
   same suite (``results/reference/runs/<suite>``): the difference per main metric and whether it
   lies within the reference's seed spread, the rows of one side only, each side's CPU; a section
   of the Markdown and HTML and ``reproduced.csv`` (none on the reference boards themselves).

Rounding happens only in rendering. The same records give byte-identical tables. This package
imports no torch.
"""

from __future__ import annotations

from .aggregate import aggregate, metric_keys
from .boards import (RANK_BY, Block, SuiteBoard, block_columns, block_facts, build_block, build_boards, load_boards, mark_best, row_label,
                     suite_facts)
from .columns import COST_COLUMNS, MCE_COLUMNS, OOD_PREFIX, Column, metric_columns
from .frame import GROUP_KEYS, config_fingerprint, corrupted_cells, corruption_frame, flatten, record_row, settings
from .mce import BASELINE_METHOD, corruption_errors, mce_basis, mce_reference, records_frame
from .render import (LEGEND, Cell, format_value, render_csv, render_html, render_html_tables, render_latex, render_markdown, si,
                     table_cells, tex_escape)
from .reproduced import Reproduced, reproduced_for
from .write import main, write_leaderboards, write_tables

__all__ = [
    "BASELINE_METHOD", "COST_COLUMNS", "GROUP_KEYS", "LEGEND", "MCE_COLUMNS", "OOD_PREFIX", "RANK_BY",
    "Block", "Cell", "Column", "Reproduced", "SuiteBoard",
    "aggregate", "block_columns", "block_facts", "build_block", "build_boards", "config_fingerprint", "corrupted_cells",
    "corruption_errors", "corruption_frame", "flatten", "format_value", "load_boards", "main", "mark_best", "mce_basis",
    "mce_reference", "metric_columns", "metric_keys", "record_row", "records_frame", "render_csv", "render_html",
    "render_html_tables", "render_latex", "render_markdown", "reproduced_for", "row_label", "settings", "si", "suite_facts", "table_cells",
    "tex_escape", "write_leaderboards", "write_tables",
]

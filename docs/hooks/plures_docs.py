"""MkDocs hook of the plures site: the generated pages and the repository's result files.

- The method pages and the method catalogue come from :mod:`benchmark.tools.docs_pages` (the
  registry's own metadata, with each method's hand-written notes from ``docs/methods/notes/``),
  added as in-memory pages at every build; the ``Methods`` section of the navigation lists them
  after its hand-written pages. Nothing generated is written into ``docs/``.
- ``<!-- plures:metric-table -->`` and ``<!-- plures:column-table -->`` in a page are replaced by
  the metric and column definitions read from the metric declarations, ``<!-- plures:measurements -->``
  by the index of the committed measurement files (links relative to the docs root: use it in a
  top-level page).
- The repository's result files that pages link to are part of the site at their repository
  paths: the measured tables under ``results/perf/`` and ``results/corruptions/`` and the paper recipes'
  table ``results/recipes/recipes.md`` as pages, the
  published leaderboards under ``results/reference/leaderboards/`` as they are (the board's own
  offline page ``index.html``, its Markdown, CSV, LaTeX and plots). A link to a result file that
  is gone fails the strict build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from benchmark.tools import docs_pages

REPO = docs_pages.REPO
RENDERED = (*docs_pages.MEASUREMENTS, "results/recipes/*.md")  # Markdown tables shown as site pages
AS_IS = ("results/reference/leaderboards/**/*",)  # copied byte for byte (the boards' own pages and plots)
MARKERS = {"<!-- plures:metric-table -->": docs_pages.metric_table, "<!-- plures:column-table -->": docs_pages.column_table,
           "<!-- plures:measurements -->": docs_pages.measurements_index}

_pages: dict[str, str] = {}


class RepositoryFile(File):
    """A repository file copied into the site unchanged (a ``.md`` one too: not rendered as a page)."""

    def is_documentation_page(self) -> bool:
        return False

    def is_static_page(self) -> bool:
        return False


def on_config(config: Any) -> Any:
    """Generate the pages and list the method pages under the navigation's ``Methods`` entry."""
    _pages.clear()
    _pages.update(docs_pages.generated_pages())
    methods = [p for p in _pages if p.startswith("methods/") and p != "methods/index.md"]
    for entry in config.nav or []:
        if isinstance(entry, dict) and isinstance(entry.get("Methods"), list):
            listed = [e for e in entry["Methods"] if not (isinstance(e, dict) and set(e.values()) <= set(methods))]
            entry["Methods"][:] = [*listed, *({Path(p).stem: p} for p in methods)]  # idempotent: serve rebuilds
    return config


def on_files(files: Files, config: Any) -> Files:
    for rel, text in _pages.items():
        files.append(File.generated(config, rel, content=text))
    for pattern in RENDERED:
        for path in sorted(REPO.glob(pattern)):
            files.append(File.generated(config, path.relative_to(REPO).as_posix(), abs_src_path=str(path)))
    for pattern in AS_IS:
        for path in sorted(p for p in REPO.glob(pattern) if p.is_file()):
            rel = path.relative_to(REPO).as_posix()
            f = RepositoryFile(rel, src_dir=str(REPO), dest_dir=config.site_dir, use_directory_urls=config.use_directory_urls)
            files.append(f)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    for marker, make in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown

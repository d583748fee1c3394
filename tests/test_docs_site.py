"""The documentation site: its pages generated from the registries cover every method and metric;
every shell command in ``docs/`` and README.md is run by a test or marked illustrative; and (marker ``browser``)
the site builds with ``mkdocs build --strict`` and its index and a method page render in headless
Chromium at 1,400 and 800 px: title, navigation, images.

Code-block markers, on the line before a fenced block of shell commands (``bash``, ``sh``,
``shell``, ``console``):

- ``<!-- docs: run -->``: every line is a ``python -m benchmark ...`` command that this module runs
  (in-process, and quick: ``list``, ``describe``);
- ``<!-- docs: runs-in PATH -->``: every command appears verbatim in the repository file ``PATH``
  (a test, or ``.ci/run``), which runs it;
- ``<!-- docs: illustrative -->``: shown, not run (long runs, cluster or machine-specific commands).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark import cli
from benchmark.core import config as C
from benchmark.tools import docs_pages as D
from tests.test_page_browser import CHROMIUM, probe  # headless Chromium, and a page opened with a probe script

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SHELL = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"^<!-- docs: (run|illustrative|runs-in (\S+)) -->$")
FENCE = re.compile(r"^(\s*)```(\S*)")


@dataclasses.dataclass
class Block:
    page: str
    line: int
    language: str
    marker: str | None  # run, illustrative, runs-in
    where: str | None  # the file of runs-in
    commands: list[str]


def commands_of(text: str) -> list[str]:
    """The commands of a shell block: continuation lines joined, comments and blank lines dropped."""
    joined = re.sub(r"\s*\\\n\s*", " ", text)
    out = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            out.append(line)
    return out


def _shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def fenced_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown page, with the marker on the line before it (blank lines skipped)."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        found = FENCE.match(lines[i])
        if not found:
            i += 1
            continue
        start, language = i, found.group(2)
        end = next((j for j in range(i + 1, len(lines)) if re.match(r"^\s*```\s*$", lines[j])), None)
        assert end is not None, f"{_shown(path)}:{i + 1}: a code block that is never closed"
        before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.match(before)
        blocks.append(Block(_shown(path), start + 1, language, marker and marker.group(1).split()[0],
                            marker and marker.group(2), commands_of("\n".join(lines[start + 1:end]))))
        i = end + 1
    return blocks


def doc_pages() -> list[Path]:
    """README.md and the site's pages (and the hand-written notes the method pages include)."""
    return [REPO / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)]


ALL_BLOCKS = [b for page in doc_pages() for b in fenced_blocks(page)]


def test_every_code_block_names_its_language_and_every_shell_block_is_run_or_marked() -> None:
    assert ALL_BLOCKS, "no code block found in docs/"
    unnamed = [f"{b.page}:{b.line}" for b in ALL_BLOCKS if not b.language]
    assert not unnamed, f"code blocks without a language (a shell command could hide there): {unnamed}"
    unmarked = [f"{b.page}:{b.line}" for b in ALL_BLOCKS if b.language in SHELL and b.marker is None]
    assert not unmarked, ("shell blocks need <!-- docs: run -->, <!-- docs: runs-in PATH --> or <!-- docs: illustrative --> "
                          f"on the line before: {unmarked}")
    assert {b.marker for b in ALL_BLOCKS if b.language in SHELL} >= {"run", "illustrative", "runs-in"}


def test_runs_in_blocks_are_in_the_file_that_runs_them() -> None:
    for b in (b for b in ALL_BLOCKS if b.marker == "runs-in"):
        where = REPO / b.where
        assert where.is_file(), f"{b.page}:{b.line}: {b.where} does not exist"
        text = where.read_text()
        missing = [c for c in b.commands if c not in text]
        assert not missing, f"{b.page}:{b.line}: not run by {b.where}: {missing}"


RUN_COMMANDS = [(f"{b.page}:{b.line}", c) for b in ALL_BLOCKS if b.marker == "run" for c in b.commands]


@pytest.mark.parametrize("where,command", RUN_COMMANDS, ids=[c for _, c in RUN_COMMANDS])
def test_run_blocks_succeed(where: str, command: str, capsys: pytest.CaptureFixture) -> None:
    prefix = "python -m benchmark "
    assert command.startswith(prefix), f"{where}: a <!-- docs: run --> block runs only '{prefix}...' commands, got {command!r}"
    assert cli.main(shlex.split(command[len(prefix):])) == 0, where
    assert capsys.readouterr().out.strip(), f"{where}: {command!r} printed nothing"


def test_a_block_without_a_marker_is_found(tmp_path: Path) -> None:
    """The check itself: an unmarked shell block, a marked one and a language-less one, told apart."""
    page = tmp_path / "page.md"
    page.write_text("Text.\n\n```bash\nmake bench\n```\n\n<!-- docs: illustrative -->\n\n```bash\nmake sweep \\\n  SWEEP=x  # a sweep\n```\n\n```\nplain\n```\n")
    blocks = fenced_blocks(page)
    assert [(b.language, b.marker, b.commands) for b in blocks] == [("bash", None, ["make bench"]), ("bash", "illustrative", ["make sweep SWEEP=x"]),
                                                                    ("", None, ["plain"])]


# ---------------------------------------------------------------------------------------------
# generated pages


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    return D.generated_pages()


def test_one_generated_page_per_registered_method(pages: dict[str, str]) -> None:
    names = D.method_names()
    assert set(pages) == {"methods/index.md", *(f"methods/{n}.md" for n in names)}
    index = pages["methods/index.md"]
    assert all(f"[`{n}`]({n}.md)" in index for n in names)


@pytest.mark.parametrize("name", D.method_names())
def test_method_page_shows_the_registry_metadata(pages: dict[str, str], name: str) -> None:
    """Options with their defaults and help, as ``describe`` prints them; each eval variant's passes
    and members at the defaults; the class and module documentation; the published rows."""
    from benchmark.catalogue.methods import get_method

    page = pages[f"methods/{name}.md"]
    cls = get_method(name)
    assert page.startswith(f"# {name}\n") and f"`{cls.__module__}.{cls.__qualname__}`" in page
    for d in C.describe_options(cls.Options):
        assert f"| `{d.name}` | `{d.type}` | `{d.default!r}` |" in page, d.name
    costs = D.default_costs(name)
    for v in costs["variants"]:
        assert f"| {v['members']} | {v['forward_passes']} | {D.si(v['params'])} | {D.si(v['flops'])} |" in page
    module_doc = D.first_paragraph(sys.modules[cls.__module__].__doc__)
    assert module_doc.split()[0] in page and ":class:`" not in page and ":func:`" not in page
    published = [r for r in D.reference_records() if r["identity"]["method"] == name]
    if published:
        assert f"| {published[0]['identity']['dataset']} / {published[0]['identity']['backbone']} |" in page


def test_costs_follow_the_methods_declarations() -> None:
    """MIMO: one pass for M members; the deep ensemble: M passes at M times the FLOPs; MC dropout: a row per K."""
    mimo, deep, mc = D.default_costs("mimo"), D.default_costs("deep_ensemble"), D.default_costs("mc_dropout")
    det = D.default_costs("deterministic")["variants"][0]
    assert [(v["members"], v["forward_passes"]) for v in mimo["variants"]] == [(3, 1)] and mimo["rows_per_example"] == 4.0
    [d] = deep["variants"]
    assert (d["members"], d["forward_passes"]) == (4, 4) and d["flops"] == pytest.approx(4 * det["flops"], rel=0.02)
    assert [v["label"] for v in mc["variants"]] == ["K=1", "K=30"]


def test_metric_and_column_tables_list_every_declaration() -> None:
    from benchmark.evaluation.metric_specs import metric_specs
    from benchmark.leaderboard.columns import COST_COLUMNS, MCE_COLUMNS

    metrics = D.metric_table()
    for m in metric_specs():
        assert f"| `{m.key}` | {m.label}" in metrics and m.description in metrics, m.key
    columns = D.column_table()
    assert all(f"| `{c.key}` | {c.label} |" in columns for c in (*MCE_COLUMNS, *COST_COLUMNS))


def test_docstring_roles_become_code() -> None:
    assert D.roles_to_code("see :func:`..calibration.temperature_scale` and :class:`~benchmark.x.Y`") == \
        "see `calibration.temperature_scale` and `benchmark.x.Y`"


def test_measurement_index_links_every_committed_measurement() -> None:
    index = D.measurements_index()
    files = [p for pattern in D.MEASUREMENTS for p in REPO.glob(pattern)]
    assert files and all(f"]({p.relative_to(REPO).as_posix()})" in index for p in files)


# ---------------------------------------------------------------------------------------------
# the built site in headless Chromium

# After the load event: the title, the page heading, every image, the navigation links a reader can
# see; where the navigation is behind the menu button (narrow windows), the links after pressing it
# (transitions off: the layout is checked, not the animation).
PROBE = """<style>*, *::before, *::after { transition: none !important; animation: none !important; }</style>
<script>
window.addEventListener("load", function () {
  function visible(el) {  // on screen and not covered or clipped: the element at its centre is it
    if (!el) return false;
    var r = el.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
    if (r.width <= 0 || r.height <= 0 || x < 0 || y < 0 || x >= window.innerWidth || y >= window.innerHeight) return false;
    var hit = document.elementFromPoint(x, y);
    return hit !== null && (hit === el || el.contains(hit) || hit.contains(el));
  }
  function nav() {
    return Array.prototype.filter.call(document.querySelectorAll("nav.md-nav--primary a.md-nav__link"), visible)
      .map(function (a) { return a.textContent.trim(); });
  }
  var menu = document.querySelector('label.md-header__button[for="__drawer"]');
  var out = {title: document.title, h1: (document.querySelector("article h1") || {}).textContent, viewport: window.innerWidth,
             images: Array.prototype.map.call(document.images, function (im) {
               return {src: im.getAttribute("src"), ok: im.complete && im.naturalWidth > 0}; }),
             tables: document.querySelectorAll("article table").length, nav: nav(), menu: visible(menu)};
  if (out.menu) menu.click();
  setTimeout(function () {
    out.navAfterMenu = nav();
    var pre = document.createElement("pre");
    pre.id = "probe";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 1500);
});
</script>"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built by ``mkdocs build --strict`` into a temporary folder (no warning allowed)."""
    if CHROMIUM is None:
        reason = "needs headless Chromium (no chromium on PATH): apt-get install chromium (CI installs it)"
        print(reason)
        pytest.skip(reason)
    missing = [m for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python") if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        reason = f"needs the docs extra ({', '.join(missing)} not installed): pip install -e '.[docs]' (make docs installs it)"
        print(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900)
    log = build.stdout + build.stderr
    assert build.returncode == 0, log[-4000:]
    assert "WARNING" not in log, log[-4000:]
    return out



TOP_NAV = {"Getting started", "Concepts", "How-to guides", "Methods", "Metrics", "API reference", "Changelog"}
PAGES = [  # page, title, heading, the sidebar a wide window shows (the top level, with the page's own section open),
    # the navigation a narrow window's menu opens at (the top level; a method's section)
    ("index.html", "plures", "plures", TOP_NAV, {"Getting started", "Concepts", "Methods", "Metrics", "Changelog"}),
    ("methods/mimo.html", "mimo - plures", "mimo", TOP_NAV | {"Recipes and departures", "mimo", "packed"},
     {"batchensemble", "deep_ensemble", "packed", "subnetwork"}),
]


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 800])
@pytest.mark.parametrize("page,title,heading,wide_nav,narrow_nav", PAGES, ids=[p[0] for p in PAGES])
def test_site_pages_render(site: Path, page: str, title: str, heading: str, wide_nav: set[str], narrow_nav: set[str], width: int,
                           tmp_path: Path) -> None:
    result = probe(site / page, tmp_path / "profile", PROBE, width)
    assert abs(result["viewport"] - width) <= 20, result["viewport"]
    assert result["title"] == title and (result["h1"] or "").strip().rstrip("¶").strip() == heading, (result["title"], result["h1"])
    assert result["images"], "no image on the page"
    bad = [i for i in result["images"] if not i["ok"]]
    assert not bad, f"images that did not load: {bad}"
    if width >= 1400:  # the navigation is a sidebar (the page's own section open), the menu button hidden
        assert not result["menu"] and wide_nav <= set(result["nav"]), result["nav"]
    else:  # behind the menu button, shown when it is pressed
        assert result["menu"] and result["nav"] == [], result["nav"]
        assert narrow_nav <= set(result["navAfterMenu"]), result["navAfterMenu"]
    if page == "index.html":
        assert any("plots/" in i["src"] for i in result["images"]), result["images"]
    else:
        assert result["tables"] >= 3  # options, cost, published records


@pytest.mark.browser
def test_site_has_the_generated_and_repository_pages(site: Path) -> None:
    for name in D.method_names():
        assert (site / "methods" / f"{name}.html").is_file(), name
    for page in ("metrics.html", "api/methods.html", "changelog.html", "results/reference/leaderboards/quick/index.html",
                 "results/reference/leaderboards/quick/plots/cifar10-jpeg__resnet8__cost.png"):
        assert (site / page).is_file(), page
    metrics = (site / "metrics.html").read_text()
    assert "<!-- plures:" not in metrics and "cal_nll" in metrics
    api = (site / "api" / "methods.html").read_text()
    assert "training_batch" in api and "ensemble_loss" in api and ":class:`" not in api
    changelog = (site / "changelog.html").read_text()
    first_heading = re.search(r"^## (.+)$", (REPO / "CHANGELOG.md").read_text(), re.M).group(1)
    assert first_heading.split("(")[0].strip() in changelog

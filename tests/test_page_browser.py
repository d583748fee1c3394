"""The leaderboard page in headless Chromium: every image loads, every table is there, and the
column views keep every table within the page's width (marker ``browser``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark import leaderboard as lb
from benchmark.leaderboard.render import OVERVIEW_KEYS, VIEWS, column_group

pytestmark = pytest.mark.browser

_found = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM = Path(_found) if _found else None
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
# After the load event (all images settled), write what the page shows into the DOM for --dump-dom.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.map.call(document.images, function (im) {
    return {src: im.getAttribute("src"), ok: im.complete && im.naturalWidth > 0, width: im.naturalWidth};
  });
  var tables = Array.prototype.map.call(document.querySelectorAll("table.leaderboard"), function (t) {
    return {block: t.getAttribute("data-block"), rows: t.tBodies[0].rows.length, cols: t.tHead.rows[0].cells.length};
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({images: imgs, tables: tables});
  document.body.appendChild(out);
});
</script>"""


# After the load event: the checked view, then for each view (its radio clicked as a reader would
# click its label) every table's width against its container's and the headers it shows.
VIEWS_PROBE = """<script>
window.addEventListener("load", function () {
  var checked = document.querySelector("input.view-radio:checked");
  var views = {};
  Array.prototype.forEach.call(document.querySelectorAll("input.view-radio"), function (radio) {
    document.querySelector('label[for="' + radio.id + '"]').click();
    views[radio.value] = Array.prototype.map.call(document.querySelectorAll("table.leaderboard"), function (t) {
      var shown = Array.prototype.filter.call(t.tHead.rows[0].cells, function (c) { return getComputedStyle(c).display !== "none"; });
      return {block: t.getAttribute("data-block"), checked: radio.checked, scrollWidth: t.scrollWidth,
              container: t.parentElement.clientWidth, headers: shown.map(function (c) { return c.textContent; })};
    });
  });
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify({initial: checked ? checked.value : null, viewport: window.innerWidth, views: views});
  document.body.appendChild(out);
});
</script>"""


def probe(page: Path, profile: Path, script: str = PROBE, width: int | None = None) -> dict:
    """Open ``page`` with the probe ``script`` injected (a sibling copy, so relative links hold),
    in a window ``width`` pixels wide when given."""
    probed = page.with_name("index.probe.html")
    probed.write_text(page.read_text().replace("</body>", script + "\n</body>"))
    size = [f"--window-size={width},1000"] if width else []
    cmd = [str(CHROMIUM), *FLAGS, *size, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', out.stdout, re.S)
    assert found, f"no probe output from chromium (rc {out.returncode}): {out.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, lb.SuiteBoard]]:
    if CHROMIUM is None:
        reason = "needs headless Chromium (no chromium on PATH): apt-get install chromium (CI installs it)"
        print(reason)
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("site")
    lb.write_leaderboards(FIXTURES, out)
    return out, {b.suite: b for b in lb.load_boards(FIXTURES, warn=False)}


@pytest.mark.parametrize("suite", ["fixture-c10", "fixture-jpeg"])
def test_page_images_load_and_tables_render(site, suite, tmp_path):
    out, boards = site
    result = probe(out / suite / "index.html", tmp_path / "profile")
    page = (out / suite / "index.html").read_text()
    expected_imgs = re.findall(r'<img src="([^"]+)"', page)
    assert [i["src"] for i in result["images"]] == expected_imgs and expected_imgs
    bad = [i for i in result["images"] if not i["ok"]]
    assert not bad, f"images that did not load: {bad}"
    board = boards[suite]
    assert [t["block"] for t in result["tables"]] == [b.slug for b in board.blocks]
    for t, block in zip(result["tables"], board.blocks):
        assert t["rows"] == len(block.table) and t["cols"] == len(lb.table_cells(block)[0])


def view_headers(block: lb.Block, view: str) -> list[str]:
    """The headers a view of ``block`` shows: the identity columns, then its metric columns."""
    header = lb.table_cells(block)[0]
    first = len(header) - len(block.columns)
    first_ood = next((c.key for c in block.columns if column_group(c) == "ood"), None)
    keep = [view == "all" or (view == "overview" and (c.key in OVERVIEW_KEYS or c.key == first_ood)) or column_group(c) == view
            for c in block.columns]
    return header[:first] + [h for h, k in zip(header[first:], keep) if k]


@pytest.mark.parametrize("width", [1400, 1280, 1024])
@pytest.mark.parametrize("suite", ["fixture-c10", "fixture-jpeg"])
def test_column_views_fit_the_window_and_switch_groups(site, suite, width, tmp_path):
    """The overview is the default; every view but "All columns" fits without horizontal scrolling
    at common widths; choosing a group shows exactly its columns (beside the identity columns)."""
    out, boards = site
    result = probe(out / suite / "index.html", tmp_path / "profile", VIEWS_PROBE, width)
    board = boards[suite]
    assert result["initial"] == "overview"
    assert abs(result["viewport"] - width) <= 20, result["viewport"]
    present = {column_group(c) for b in board.blocks for c in b.columns}
    assert set(result["views"]) == {"overview", "all"} | present
    assert present >= {"acc", "cost"}
    for view, tables in result["views"].items():
        assert [t["block"] for t in tables] == [b.slug for b in board.blocks]
        for t, block in zip(tables, board.blocks):
            assert t["checked"], view
            assert t["headers"] == view_headers(block, view), (view, block.slug)
            if view != "all":
                assert t["scrollWidth"] <= t["container"], f"{view} at {width}px: table {t['scrollWidth']}px in {t['container']}px"
    if suite == "fixture-c10":  # the block with OOD, robustness and cost columns: each group shows its own
        [table] = result["views"]["ood"]
        assert [h for h in table["headers"] if h.startswith("AUROC")] == ["AUROC svhn (%)"]
        assert "Passes" in result["views"]["cost"][0]["headers"] and "Passes" not in result["views"]["acc"][0]["headers"]
        assert "mCE" in result["views"]["rob"][0]["headers"] and "NLL" not in result["views"]["rob"][0]["headers"]

"""The leaderboard page in headless Chromium: every image loads, every table is there (marker ``browser``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmark import leaderboard as lb

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


def probe(page: Path, profile: Path) -> dict:
    """Open ``page`` with the probe script injected (a sibling copy, so relative links hold)."""
    probed = page.with_name("index.probe.html")
    probed.write_text(page.read_text().replace("</body>", PROBE + "\n</body>"))
    cmd = [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()]
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

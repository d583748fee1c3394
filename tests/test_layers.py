"""The import structure: the import-linter contracts of pyproject.toml (layers, no tools in the
product, no cycles) hold, and they do catch a back-edge."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="needs import-linter (pip install -e '.[test]')")


def _lint(root: Path) -> subprocess.CompletedProcess:
    # grimp reads the packages from sys.path: the checkout under test first
    return subprocess.run([str(LINT), "--no-cache", str(root / "pyproject.toml")], cwd=root, capture_output=True, text=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})


def test_contracts_hold() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("benchmark/data/base.py", "from ..runner import run_id_of", "Layers"),  # data must not import the runner
    ("benchmark/core/io.py", "from ..tools import perf", "The product does not import the tools"),
    ("benchmark/data/base.py", "from .datasets import cifar", "No import cycles"),  # the dataset modules import base
    ("benchmark/runner.py", "import plures", "The Python API (plures) is a facade"),
])
def test_a_back_edge_breaks_a_contract(tmp_path: Path, module: str, line: str, contract: str) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    for pkg in ("plures", "benchmark", "baselines", "mimo"):
        shutil.copytree(ROOT / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n\ndef _planted() -> None:\n    {line}  # noqa\n")
    out = _lint(copy)
    assert out.returncode != 0, out.stdout[-3000:]
    assert f"{contract}" in out.stdout and "BROKEN" in out.stdout, out.stdout[-3000:]

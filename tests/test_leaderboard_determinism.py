"""The same records give byte-identical leaderboards on any CPU.

The numbers computed at leaderboard time from the prediction sidecars (DEE, paired differences)
differ in their last float64 digits between CPUs (numpy's exp/log take AVX-512 code paths, OpenBLAS
sums in a kernel-dependent order); the CSV publishes them at
:data:`benchmark.leaderboard.comparisons.PUBLISHED_DECIMALS` decimals. Fast: the rounding itself,
and a board whose bootstrap sums run in another order (as another CPU's kernel does) writing the
same CSV. Slow: rebuilding the committed reference boards reproduces every file, natively and with
this machine's AVX-512 kernels switched off (the AVX2 paths of the machine that made them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.special import log_softmax

from benchmark import cli
from benchmark import leaderboard as lb
from benchmark.evaluation import paired
from benchmark.evaluation.predictions import write_predictions
from benchmark.leaderboard.comparisons import PUBLISHED_DECIMALS, computed_columns, published

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "records"
REFERENCE = ROOT / "results" / "reference"
SUITE = "fixture-jpeg"


def test_published_rounds_to_fixed_decimals() -> None:
    assert PUBLISHED_DECIMALS == 7
    assert published(-2.2399999999999998) == -2.24 and published(-6.810249999999994) == -6.81025
    assert published(0.23807218327522328) == 0.2380722 and published(-4.1487192031107024e-05) == -4.15e-05
    assert str(published(-3e-17)) == "0.0" and str(published(-0.0)) == "0.0"  # no "-0.0" from noise around 0
    assert np.isnan(published(float("nan")))
    # the CPU noise (a few ulp; at most 2.6e-15 measured on the reference boards) does not reach the published value
    rng = np.random.default_rng(0)
    values = rng.normal(size=2000) * rng.choice([1e-4, 1e-2, 1.0, 10.0], size=2000)
    for v in values:
        assert published(v - 3e-15) == published(v) == published(v + 3e-15), v


def test_computed_columns() -> None:
    cols = ["accuracy", "dee", "dee_display", "d_nll", "d_nll_low", "d_nll_high", "d_nll_excl", "d_nll_display", "d_ece_high"]
    assert computed_columns(cols) == ["dee", "d_nll", "d_nll_low", "d_nll_high", "d_ece_high"]


def records_with_sidecars(folder: Path) -> Path:
    """``fixture-jpeg``'s records under ``folder``, each with a sidecar of 2,000 synthetic clean
    predictions (10 classes; MIMO better than the deterministic runs)."""
    (folder / SUITE).mkdir(parents=True)
    y = np.random.default_rng(0).integers(0, 10, 2000)
    for path in sorted((FIXTURES / SUITE).glob("*.json")):
        rec = json.loads(path.read_text())
        ident = rec["identity"]
        rng = np.random.default_rng(10 * ident["seed"] + (ident["method"] == "mimo"))
        logits = 2.0 * np.eye(10)[y] * (1.5 if ident["method"] == "mimo" else 1.0) + rng.normal(size=(2000, 10))
        rec["predictions"] = write_predictions(folder / SUITE, rec["run_id"], {"clean/targets": y, "clean/log_probs": log_softmax(logits, axis=1)})
        (folder / SUITE / path.name).write_text(json.dumps(rec))
    return folder


def test_another_summation_order_gives_the_same_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every resample's sums in another order of the examples (as another CPU's BLAS kernel sums):
    the float64 differences change in their last digits, the CSV does not."""
    runs = records_with_sidecars(tmp_path / "runs")
    [board] = lb.load_boards(runs, warn=False, n_resamples=200)
    stats = paired._Seed.stats

    def reordered(self, w):  # the same statistic, summed over the examples in reverse order
        columns = self.columns
        self.columns = columns[::-1].copy()
        try:
            return stats(self, np.ascontiguousarray(w[:, ::-1]))
        finally:
            self.columns = columns

    monkeypatch.setattr(paired._Seed, "stats", reordered)
    [other] = lb.load_boards(runs, warn=False, n_resamples=200)
    a, b = board.blocks[0].table, other.blocks[0].table
    cols = computed_columns(a.columns)
    raw_a, raw_b = a[cols].to_numpy(dtype=float), b[cols].to_numpy(dtype=float)
    measured = ~np.isnan(raw_a)
    assert measured.sum() >= 15  # MIMO's differences and intervals
    assert np.any(raw_a[measured] != raw_b[measured])  # the order changes the last digits ...
    assert np.allclose(raw_a[measured], raw_b[measured], rtol=0, atol=1e-13)  # ... and nothing else
    assert lb.render_csv(board) == lb.render_csv(other)  # the published file is the same
    assert lb.render_markdown(board) == lb.render_markdown(other)


def test_csv_states_its_decimals(tmp_path: Path) -> None:
    import pandas as pd

    runs = records_with_sidecars(tmp_path / "runs")
    [board] = lb.load_boards(runs, warn=False, n_resamples=50)
    t = pd.read_csv(pd.io.common.StringIO(lb.render_csv(board)))
    assert t.columns[-1] == "sidecar_decimals" and set(t["sidecar_decimals"]) == {PUBLISHED_DECIMALS}
    bounds = [c for c in t.columns if c.endswith(("_low", "_high")) and not c.startswith("d_")]  # the intervals over seeds
    assert "accuracy_low" in bounds and "train_seconds_high" in bounds and t["accuracy_low"].notna().all()
    assert set(t["seed_interval"]) == {f"95% Student t over seeds (bounds at {PUBLISHED_DECIMALS} decimals)"}
    for col in computed_columns(t.columns) + bounds:
        for v in t[col].dropna():
            assert v == round(v, PUBLISHED_DECIMALS)


def test_the_t_quantile_last_digits_do_not_reach_the_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intervals over seeds use a t quantile computed with math's lgamma, log and exp, whose last
    digits may differ between C libraries: perturbed far more than that (1e-12 relative, some 10,000
    ulp), the CSV is the same."""
    import importlib

    aggregate = importlib.import_module("benchmark.leaderboard.aggregate")  # the module (the package exports a function of that name)
    runs = records_with_sidecars(tmp_path / "runs")
    [board] = lb.load_boards(runs, warn=False, n_resamples=50)
    exact = aggregate.t_quantile
    for factor in (1 + 1e-12, 1 - 1e-12):
        monkeypatch.setattr(aggregate, "t_quantile", lambda level, df, f=factor: exact(level, df) * f)
        [other] = lb.load_boards(runs, warn=False, n_resamples=50)
        assert lb.render_csv(other) == lb.render_csv(board)
        a, b = board.blocks[0].table, other.blocks[0].table
        assert np.any(a["nll_low"].to_numpy() != b["nll_low"].to_numpy())  # the unrounded bounds did change


# ------------------------------------------------------------------------------------------------
# the committed reference boards
# ------------------------------------------------------------------------------------------------


def tree(folder: Path, studies: bool = False) -> dict[str, bytes]:
    """The files under ``folder``: the leaderboards' (``studies``: only the study pages, ``study.*``, which
    ``python -m benchmark study`` writes beside a suite's board)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name.startswith("study.") == studies}


def avx512_features() -> list[str]:
    """numpy's dispatch targets of this CPU beyond AVX2 (empty on a CPU without AVX-512)."""
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__

    return [f for f in __cpu_dispatch__ if __cpu_features__.get(f) and ("512" in f or f.endswith("_V4"))]


@pytest.mark.slow
def test_rebuilding_the_reference_boards_reproduces_them(tmp_path: Path) -> None:
    """``python -m benchmark leaderboard --reference`` into another folder gives every committed file (about 35 s)."""
    assert cli.main(["leaderboard", "--reference", "--out", str(tmp_path)]) == 0
    committed = tree(REFERENCE / "leaderboards")
    assert sorted(committed) == sorted(tree(tmp_path)) and len(committed) > 20
    rebuilt = tree(tmp_path)
    assert [k for k in committed if committed[k] != rebuilt[k]] == []
    # the committed study pages, rebuilt from their suites' records
    studies = tree(REFERENCE / "leaderboards", studies=True)
    for suite in sorted({Path(k).parts[0] for k in studies}):
        assert cli.main(["study", suite, "--reference", "--leaderboard-dir", str(tmp_path / "studies")]) == 0
    rebuilt = tree(tmp_path / "studies", studies=True)
    assert sorted(studies) == sorted(rebuilt) and [k for k in studies if studies[k] != rebuilt[k]] == []


@pytest.mark.slow
def test_rebuilding_with_avx2_kernels_reproduces_them(tmp_path: Path) -> None:
    """The same with numpy's AVX-512 paths off and OpenBLAS's Haswell (AVX2) kernels, as on an
    AVX2 CPU; fails without the published rounding on an AVX-512 machine (about 35 s)."""
    features = avx512_features()
    if not features:
        pytest.skip("this CPU has no AVX-512 paths to switch off: the native rebuild covers it")
    env = {**os.environ, "OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": ",".join(features)}
    check = "import numpy; from numpy._core._multiarray_umath import __cpu_features__ as f; print(sorted(k for k, v in f.items() if v))"
    assert not set(features) & set(eval(subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True,
                                                        check=True).stdout))  # the switch took effect
    subprocess.run([sys.executable, "-m", "benchmark", "leaderboard", "--reference", "--out", str(tmp_path)], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    committed, rebuilt = tree(REFERENCE / "leaderboards"), tree(tmp_path)
    assert sorted(committed) == sorted(rebuilt)
    assert [k for k in committed if committed[k] != rebuilt[k]] == []

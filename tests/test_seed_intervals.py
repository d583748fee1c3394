"""Intervals over seeds on the leaderboard, on synthetic records with 1, 2 and 3 seeds in the real
on-disk format (the fixture-jpeg records re-seeded, each with a sidecar of synthetic predictions):

* every metric of a row with 2+ seeds: mean and the 95% Student-t interval over its seeds, in
  Markdown, HTML, LaTeX and CSV (``<key>_low``, ``<key>_high``, ``seed_interval``);
* the paired differences against the deterministic row: seed s paired with seed s, a seed without a
  partner left out and named, the interval with the seed-to-seed spread (t) from 2 seeds on, marked
  † where it excludes 0; it widens when the seeds disagree;
* a one-seed row says so on the board (§ in its Seeds cell and in the paired table, a legend line);
* the t quantile, and the coverage of the intervals with 3 seeds by simulation.
"""

from __future__ import annotations

import json
import math
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import log_softmax

from benchmark import leaderboard as lb
from benchmark.evaluation import paired as pb
from benchmark.evaluation.predictions import write_predictions
from benchmark.leaderboard.comparisons import INTERVALS, ONE_SEED_LEGEND, ONE_SEED_MARK, SEED_MARK, cached_paired, published

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records" / "fixture-jpeg"
SUITE = "fixture-jpeg"
N, K = 2000, 10


def template(method: str) -> dict:
    path = next(p for p in sorted(FIXTURES.glob("*.json")) if json.loads(p.read_text())["identity"]["method"] == method)
    return json.loads(path.read_text())


def write_run(folder: Path, method: str, variant: str, seed: int, sharpness: float, accuracy: float) -> None:
    """One record of ``method``/``variant`` with ``seed``: clean accuracy ``accuracy`` in the record, a
    sidecar of N synthetic predictions whose logits favour the target by ``2 * sharpness``."""
    rec = template(method)
    old = rec["run_id"]
    run_id = old.replace("-s0-", f"-s{seed}-").replace("-s1-", f"-s{seed}-") + (f"-{variant}" if variant != rec["identity"]["variant"] else "")
    rec.update(run_id=run_id, training_run_id=run_id, created=f"2026-11-2{seed % 10}T00:00:00.000000Z")
    rec["identity"].update(seed=seed, variant=variant)
    rec["config"]["run"]["seed"] = seed
    rec["metrics"]["clean"]["accuracy"] = accuracy
    rec["cost"]["train_seconds"] *= 1 + 0.05 * seed  # a measured cost that varies between seeds
    y = np.random.default_rng(0).integers(0, K, N)  # one test set for every run
    rng = np.random.default_rng([seed, len(variant), int(1000 * sharpness)])
    logits = 2.0 * sharpness * np.eye(K)[y] + rng.normal(size=(N, K))
    rec["predictions"] = write_predictions(folder / SUITE, run_id, {"clean/targets": y, "clean/log_probs": log_softmax(logits, axis=1)})
    (folder / SUITE / f"{run_id}__{seed}.json").write_text(json.dumps(rec))


# rows: (method, variant) -> {seed: (sharpness, record accuracy)}
ROWS = {
    ("deterministic", ""): {0: (1.0, 0.70), 1: (1.0, 0.71), 2: (1.0, 0.69)},
    ("mimo", "M=3"): {0: (1.3, 0.74), 1: (1.32, 0.75), 2: (1.28, 0.77)},  # 3 seeds that agree: clearly better
    ("mimo", "M=2"): {0: (1.2, 0.72), 1: (1.25, 0.73)},  # 2 seeds
    ("mimo", "M=4"): {0: (1.1, 0.71)},  # 1 seed
    ("mimo", "M=5"): {1: (1.1, 0.70), 3: (1.2, 0.72)},  # seed 3 has no deterministic partner
}


def runs(folder: Path, rows: dict = ROWS) -> Path:
    (folder / SUITE).mkdir(parents=True)
    for (method, variant), seeds in rows.items():
        for seed, (sharp, acc) in seeds.items():
            write_run(folder, method, variant, seed, sharp, acc)
    return folder


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> lb.SuiteBoard:
    [b] = lb.load_boards(runs(tmp_path_factory.mktemp("seeds")), warn=False, n_resamples=300)
    return b


def row(block: lb.Block, variant: str) -> pd.Series:
    t = block.table
    [i] = t.index[(t["kind"] == "measured") & (t["variant"] == variant)]
    return t.loc[i]


# ------------------------------------------------------------------------------------------------
# the t quantile and the interval over seeds of every metric
# ------------------------------------------------------------------------------------------------


def test_t_quantile():
    stats = pytest.importorskip("scipy.stats")
    assert pb.t_quantile(0.95, 1) == pytest.approx(12.706204736, abs=1e-8)
    assert pb.t_quantile(0.95, 2) == pytest.approx(4.302652730, abs=1e-8)
    assert pb.t_quantile(0.95, math.inf) == pytest.approx(1.959963985, abs=1e-8)
    for df in (1, 1.7, 2, 3.4, 9, 50, 2e3, 9999, 1e4, 1e6):
        for level in (0.5, 0.9, 0.95, 0.99):
            assert pb.t_quantile(level, df) == pytest.approx(stats.t.ppf(0.5 + level / 2, df), rel=1e-10), (level, df)
    for bad in ({"level": 95, "df": 2}, {"level": 0.95, "df": 0}):
        with pytest.raises(ValueError, match="level|df"):
            pb.t_quantile(**bad)


@pytest.mark.parametrize("variant,seeds", [("M=3", 3), ("M=2", 2), ("M=4", 1)])
def test_every_metric_gets_a_t_interval_over_seeds(board, variant, seeds):
    r = row(board.blocks[0], variant)
    acc = np.array([a for _, a in ROWS[("mimo", variant)].values()])
    assert r["seeds"] == seeds
    if seeds == 1:
        assert math.isnan(r["accuracy_low"]) and math.isnan(r["accuracy_high"])
        return
    half = pb.t_quantile(0.95, seeds - 1) * acc.std(ddof=1) / math.sqrt(seeds)
    assert (r["accuracy_low"], r["accuracy_high"]) == pytest.approx((acc.mean() - half, acc.mean() + half), abs=1e-12)
    for key in ("nll", "ece", "brier", "ms_b1", "train_seconds"):  # every column that has a spread: metrics and measured costs
        assert r[f"{key}_low"] <= r[key] <= r[f"{key}_high"], key
        assert r[f"{key}_high"] - r[key] == pytest.approx(pb.t_quantile(0.95, seeds - 1) * r[f"{key}_std"] / math.sqrt(seeds)), key


def test_the_interval_in_every_format(board, tmp_path):
    block = board.blocks[0]
    header, rows, _ = lb.table_cells(block)
    cells = {r[2].text: dict(zip(header, (c.text for c in r))) for r in rows}
    m3 = row(block, "M=3")
    assert cells["M=3"]["Acc (%)"] == f"{100 * m3['accuracy']:.2f} [{100 * m3['accuracy_low']:.2f}, {100 * m3['accuracy_high']:.2f}]"
    assert cells["M=3"]["Seeds"] == "3" and cells["M=2"]["Seeds"] == "2" and cells["M=4"]["Seeds"] == f"1 {ONE_SEED_MARK}"
    assert "[" not in cells["M=4"]["Acc (%)"] and "±" not in cells["M=4"]["Acc (%)"]
    assert cells["M=3"]["Train time"].count("[") == 1 and cells["M=3"]["Train time"].split(" [")[0].endswith(("s", "min", "h"))
    md, html, tex = lb.render_markdown(board), lb.render_html(board), lb.render_latex(board)
    for text, esc in ((md, str), (html, escape)):
        assert esc("Student-t interval over the row's seeds") in text and esc(ONE_SEED_LEGEND) in text
    assert cells["M=3"]["Acc (%)"] in md and cells["M=3"]["Acc (%)"].replace(" ", "&nbsp;").replace("&nbsp;[", " [").replace(",&nbsp;", ", ") in html
    assert r"1 \S{}" in tex and "Student-t interval over the row" in tex and "covers test-set sampling only" in tex
    csv = pd.read_csv(pd.io.common.StringIO(lb.render_csv(board)))
    c = csv.set_index("variant").loc["M=3"]
    assert c["seed_interval"].startswith("95% Student t over seeds")
    assert csv.set_index("variant").loc["M=4", "seed_interval"] == "none: one seed"
    for key in ("accuracy", "nll", "ms_b1", "train_seconds"):
        assert c[f"{key}_low"] == published(m3[f"{key}_low"]) and c[f"{key}_high"] == published(m3[f"{key}_high"])
        assert list(csv.columns).index(f"{key}_low") == list(csv.columns).index(f"{key}_std") + 1
    assert "params_low" not in csv.columns  # structural counts have no spread


# ------------------------------------------------------------------------------------------------
# paired differences: pairing by seed, the seed spread in the interval, the marks
# ------------------------------------------------------------------------------------------------


def sidecar(board: lb.SuiteBoard, method: str, variant: str, seed: int) -> np.ndarray:
    from benchmark.evaluation.predictions import load_predictions

    [rec] = [r for r in board.blocks[0].records if (r["identity"]["method"], r["identity"]["variant"], r["identity"]["seed"]) == (method, variant, seed)]
    return load_predictions(rec)


def test_paired_differences_pair_seed_with_seed(board):
    block = board.blocks[0]
    for variant, seeds, mode in (("M=3", (0, 1, 2), "t"), ("M=2", (0, 1), "t"), ("M=4", (0,), "fixed"), ("M=5", (1,), "fixed")):
        pairs = []
        for s in seeds:
            base, other = sidecar(board, "deterministic", "", s), sidecar(board, "mimo", variant, s)
            pairs.append((base["clean/log_probs"], other["clean/log_probs"], base["clean/targets"]))
        ref = pb.paired_bootstrap(pairs, n_resamples=300, seed=0)
        assert ref.over_seeds == mode
        r = row(block, variant)
        assert r["d_seeds"] == " ".join(map(str, seeds)) and r["d_interval"] == INTERVALS[mode]
        for m, d in ref.differences.items():
            scale = 100.0 if m == "accuracy" else 1.0
            assert (r[f"d_{m}"], r[f"d_{m}_low"], r[f"d_{m}_high"]) == pytest.approx((scale * d.diff, scale * d.low, scale * d.high), abs=1e-12)
            if len(seeds) > 1:
                assert r[f"d_{m}_seed_std"] == pytest.approx(scale * np.std(d.per_seed, ddof=1), abs=1e-12)
            mark = (SEED_MARK if len(seeds) > 1 else "*") if d.excludes_zero else ""
            assert r[f"d_{m}_display"].endswith("]" + mark), (variant, m)
    # the 3 agreeing seeds of M=3 exceed the seed spread in accuracy and NLL
    assert row(block, "M=3")["d_nll_display"].endswith(SEED_MARK) and row(block, "M=3")["d_accuracy_display"].endswith(SEED_MARK)


def test_paired_table_and_facts_say_what_the_intervals_cover(board):
    block = board.blocks[0]
    line, labels, prow = lb.render.paired_cells(block)
    assert labels[:2] == ["Method", "Seeds"]
    seeds = {r[0]: r[1] for r in prow}
    assert seeds == {"mimo M=3": "3", "mimo M=2": "2", "mimo M=4": f"1 {ONE_SEED_MARK}", "mimo M=5": f"1 {ONE_SEED_MARK}", "deterministic": "3"}
    assert f"{SEED_MARK} = it excludes 0: the difference exceeds the seed spread" in line
    assert f"{ONE_SEED_MARK} 1 seed: percentile interval over the test examples, which covers test-set sampling only" in line
    facts = dict(block.facts)
    assert "seed s paired with seed s" in facts["Paired differences"]
    assert facts["Unpaired seeds"] == ("seeds are paired by number with the deterministic row; mimo M=2: seed 2 (deterministic only) left out, "
                                       "paired over seeds 0 1; mimo M=4: seeds 1 2 (deterministic only) left out, paired over seeds 0; "
                                       "mimo M=5: seed 3 (mimo M=5 only) and seeds 0 2 (deterministic only) left out, paired over seeds 1")


def test_a_one_seed_board_says_so(tmp_path):
    rows = {k: {0: v[0]} for k, v in ROWS.items() if 0 in v}
    [b] = lb.load_boards(runs(tmp_path, rows), warn=False, n_resamples=100)
    md = lb.render_markdown(b)
    assert ONE_SEED_LEGEND in md and "Student-t interval over the row's seeds" not in md  # no row has seeds to spread over
    assert SEED_MARK not in md and "95% intervals: § 1 seed: percentile interval over the test examples" in md
    assert all(r[4].text == f"1 {ONE_SEED_MARK}" for r in lb.table_cells(b.blocks[0])[1])


def test_pooled_interval_widens_when_the_seeds_disagree(tmp_path):
    """The same mean quality of MIMO over 3 seeds, once with seeds that agree and once that do not:
    the examples-only interval barely changes, the pooled (t) one widens by the seed spread."""
    det = {s: (1.0, 0.7) for s in range(3)}
    widths = {}
    for name, sharp in (("agree", (1.2, 1.2, 1.2)), ("disagree", (0.9, 1.2, 1.5))):
        rows = {("deterministic", ""): det, ("mimo", "M=3"): {s: (v, 0.7) for s, v in enumerate(sharp)}}
        [b] = lb.load_boards(runs(tmp_path / name, rows), warn=False, n_resamples=300)
        [(_, p)] = [x for x in cached_paired(b.blocks[0].groups()) if x[0] == "mimo M=3"]
        d = p.result.differences["nll"]
        fixed = pb.paired_bootstrap([(sidecar(b, "deterministic", "", s)["clean/log_probs"], sidecar(b, "mimo", "M=3", s)["clean/log_probs"],
                                      sidecar(b, "mimo", "M=3", s)["clean/targets"]) for s in range(3)], n_resamples=300, over_seeds="fixed")
        widths[name] = (d.high - d.low, fixed.differences["nll"].high - fixed.differences["nll"].low, d)
    (t_agree, ex_agree, d_agree), (t_dis, ex_dis, d_dis) = widths["agree"], widths["disagree"]
    assert ex_dis < 1.5 * ex_agree  # test-set sampling alone hardly changes ...
    assert t_dis > 3 * t_agree and t_dis > 3 * ex_dis  # ... the seed spread widens the pooled interval
    assert d_dis.seed_std > 5 * d_agree.seed_std and d_dis.df < d_agree.df
    assert d_agree.excludes_zero  # agreeing seeds: the gain exceeds the seed spread


def test_coverage_with_three_seeds_by_simulation():
    """A and B exchangeable (true difference 0), each trained model's quality drawn per seed (training
    randomness comparable to the test-set noise), 3 seeds on one shared test set: the t interval
    contains 0 in about 95% of 200 simulated comparisons; holding the seeds fixed does not (the
    simulation of ``python -m benchmark.tools.seed_coverage``, smaller)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from benchmark.tools.seed_coverage import simulate

    rng = np.random.default_rng(123)
    covered = {"t": np.zeros(2), "fixed": np.zeros(2)}
    with threadpoolctl.threadpool_limits(1):
        for i in range(200):
            pairs = simulate(rng, n=400, seeds=3, sigma=0.3)
            for mode in covered:
                res = pb.paired_bootstrap(pairs, n_resamples=200, n_splits=1, seed=i, over_seeds=mode)
                covered[mode] += [not res.differences[m].excludes_zero for m in ("accuracy", "nll")]
    assert np.all((0.9 <= covered["t"] / 200) & (covered["t"] / 200 <= 0.995)), covered
    assert covered["fixed"][1] / 200 < 0.8, covered  # NLL: the test-examples interval ignores the training variance

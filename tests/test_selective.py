"""benchmark.evaluation.selective: AURC, AUGRC and the working points against brute-force loops,
with ties and perfectly separated cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from benchmark.evaluation import selective as sel


def _brute_aurc(conf, ok):
    """Mean over examples of the selective risk when accepting every example at least as confident."""
    return float(np.mean([(~ok[conf >= c]).mean() for c in conf]))


def _brute_augrc(conf, ok):
    """Pairwise form: sum over errors of (#less confident + #tied / 2), over N^2."""
    n = len(conf)
    tot = 0.0
    for f in np.flatnonzero(~ok):
        tot += (conf < conf[f]).sum() + 0.5 * (conf == conf[f]).sum()
    return tot / n**2


def _brute_augrc_random_ties(conf, ok, reps=4000, seed=0):
    """Expected trapezoidal area over uniformly random orders within ties (one example per point)."""
    rng = np.random.default_rng(seed)
    n, vals = len(conf), []
    for _ in range(reps):
        order = np.lexsort((rng.random(n), -conf))
        g = np.r_[0.0, np.cumsum(~ok[order]) / n]
        vals.append(np.sum((g[1:] + g[:-1]) / 2) / n)
    return float(np.mean(vals))


def _brute_working_points(conf, ok, coverage, risk):
    thr = np.unique(conf)[::-1]
    covs = np.array([(conf >= t).mean() for t in thr])
    risks = np.array([(~ok[conf >= t]).mean() for t in thr])
    r_at_c = risks[np.flatnonzero(covs >= coverage)[0]]
    good = risks <= risk
    return r_at_c, (covs[good].max() if good.any() else 0.0)


@pytest.mark.parametrize("levels", [None, 5, 2])  # continuous confidences, then heavy ties
def test_against_brute_force(levels):
    rng = np.random.default_rng(levels or 0)
    n = 300
    conf = rng.random(n)
    if levels:
        conf = np.round(conf * (levels - 1)) / (levels - 1)
    ok = rng.random(n) < 0.3 + 0.6 * conf  # informative but imperfect
    assert sel.aurc(conf, ok) == pytest.approx(_brute_aurc(conf, ok), abs=1e-12)
    assert sel.augrc(conf, ok) == pytest.approx(_brute_augrc(conf, ok), abs=1e-12)
    for c, r in ((0.8, 0.05), (0.5, 0.3), (1.0, 0.5)):
        rc, cr = _brute_working_points(conf, ok, c, r)
        assert sel.risk_at_coverage(conf, ok, c) == pytest.approx(rc)
        assert sel.coverage_at_risk(conf, ok, r) == pytest.approx(cr)


def test_augrc_ties_equal_expected_random_tie_breaking():
    rng = np.random.default_rng(3)
    conf = rng.integers(0, 3, 40).astype(float)
    ok = rng.random(40) < 0.6
    assert sel.augrc(conf, ok) == pytest.approx(_brute_augrc_random_ties(conf, ok), abs=2e-4)


def test_without_ties_aurc_is_geifman_sum():
    rng = np.random.default_rng(4)
    conf, ok = rng.random(100), rng.random(100) < 0.7
    order = np.argsort(-conf)
    e = np.cumsum(~ok[order])
    assert sel.aurc(conf, ok) == pytest.approx(np.mean(e / np.arange(1, 101)))


def test_perfect_separation_and_constant_confidence():
    n_ok, n_err = 70, 30
    n = n_ok + n_err
    conf = np.r_[np.linspace(0.9, 1.0, n_ok), np.linspace(0.1, 0.5, n_err)]
    ok = np.r_[np.ones(n_ok, bool), np.zeros(n_err, bool)]
    i = np.arange(n_ok + 1, n + 1)
    assert sel.aurc(conf, ok) == pytest.approx(np.sum((i - n_ok) / i) / n)
    assert sel.augrc(conf, ok) == pytest.approx(n_err**2 / (2 * n**2))
    assert sel.risk_at_coverage(conf, ok, 0.7) == 0.0
    assert sel.risk_at_coverage(conf, ok, 0.8) == pytest.approx(10 / 80)
    assert sel.coverage_at_risk(conf, ok, 0.05) == pytest.approx(0.7 + 3 / 100)  # 3 errors in 73 < 5%
    # one tied group: accepted or rejected together, so every point is the full-coverage risk
    flat = np.full(n, 0.5)
    assert sel.aurc(flat, ok) == pytest.approx(0.3)
    assert sel.augrc(flat, ok) == pytest.approx(0.3 / 2)
    assert sel.coverage_at_risk(flat, ok, 0.05) == 0.0
    # inverted ranking: errors most confident
    assert sel.aurc(-conf, ok) > 0.5 > sel.aurc(conf, ok)


def test_selective_metrics_from_log_probs():
    rng = np.random.default_rng(5)
    lp = log_softmax(rng.normal(size=(200, 5)) * 2, axis=1)
    y = rng.integers(0, 5, 200)
    got = sel.selective_metrics(lp, y)
    conf, ok = np.exp(lp).max(1), lp.argmax(1) == y
    assert got["aurc"] == pytest.approx(_brute_aurc(conf, ok))
    assert got["augrc"] == pytest.approx(_brute_augrc(conf, ok))
    assert set(got) == {"aurc", "augrc", "risk_at_80_coverage", "coverage_at_5_risk", "risk"}
    assert got["risk"] == pytest.approx(1 - ok.mean())


def test_bad_inputs():
    with pytest.raises(ValueError, match="coverage must be in"):
        sel.risk_at_coverage([0.1], [True], 0.0)
    with pytest.raises(ValueError, match="shape of confidence"):
        sel.aurc([0.1, 0.2], [True])
    with pytest.raises(ValueError, match="boolean"):
        sel.aurc([0.1, 0.2], [2, 0])
    with pytest.raises(ValueError, match="non-finite"):
        sel.aurc([np.nan, 0.2], [1, 0])

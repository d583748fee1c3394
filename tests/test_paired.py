"""benchmark.evaluation.paired: point estimates against calibration.py, resample statistics against
a by-hand computation on the repeated examples, the bootstrap standard error against the analytic
one, seeds (pooled: t with the seed spread, hierarchical, fixed), and the interval's coverage by
simulation (several seeds: tests/test_seed_intervals.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax

from benchmark.evaluation import calibration as cal
from benchmark.evaluation import paired as pb


def _pair(rng, n=400, k=3, noise_a=0.5, noise_b=0.5):
    """Two models sharing each example's difficulty (correlated losses); exchangeable when the noises match."""
    y = rng.integers(0, k, n)
    shared = np.eye(k)[y] * 1.0 + rng.normal(size=(n, k))
    a = log_softmax(2.0 * (shared + noise_a * rng.normal(size=(n, k))), axis=1)
    b = log_softmax(2.0 * (shared + noise_b * rng.normal(size=(n, k))), axis=1)
    return a, b, y


def test_point_estimates_match_calibration_module():
    a, b, y = _pair(np.random.default_rng(0), noise_b=1.5)
    res = pb.paired_bootstrap((a, b, y), n_resamples=200, n_splits=3, seed=4)
    for lp, side in ((a, "a"), (b, "b")):
        ref = cal.calibration_metrics(lp, y)
        cref = cal.temperature_scale(lp, y, n_splits=3, seed=4)
        got = {m: getattr(res.differences[m], side) for m in pb.METRICS}
        assert got["calibrated_nll"] == pytest.approx(cref.nll)
        for m in ("accuracy", "nll", "brier", "ece"):
            assert got[m] == pytest.approx(ref[m], abs=1e-12)
    d = res.differences["accuracy"]
    assert d.diff == pytest.approx(d.b - d.a)
    assert res.calibration == "test-cv" and not res.hierarchical and res.n_seeds == 1
    assert res.differences["nll"].excludes_zero and res.differences["nll"].b_better is False  # B is noisier


def test_resample_statistics_by_hand():
    a, b, y = _pair(np.random.default_rng(1), n=150, k=4)
    s = pb._Seed(a, b, y, None, 15, 2, 0, 0)
    ca, cb = cal.temperature_scale(a, y, n_splits=2, seed=0), cal.temperature_scale(b, y, n_splits=2, seed=0)
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 150, size=(5, 150))
    w = np.stack([np.bincount(i, minlength=150) for i in idx]).astype(float)
    got = s.stats(w)
    for r in range(5):
        for off, lp, c in ((0, a, ca), (5, b, cb)):
            ref = cal.calibration_metrics(lp[idx[r]], y[idx[r]])
            assert got[r, off + 0] == pytest.approx(ref["accuracy"])
            assert got[r, off + 1] == pytest.approx(ref["nll"])
            assert got[r, off + 2] == pytest.approx(c.nll_per_example[idx[r]].mean())
            assert got[r, off + 3] == pytest.approx(ref["brier"])
            assert got[r, off + 4] == pytest.approx(ref["ece"])  # ECE recomputed on the resample


def test_standard_error_matches_analytic_and_identical_models():
    a, b, y = _pair(np.random.default_rng(2), n=1000)
    res = pb.paired_bootstrap((a, b, y), n_resamples=2000, n_splits=1)
    d = cal.nll_per_example(b, y) - cal.nll_per_example(a, y)
    assert res.differences["nll"].se == pytest.approx(d.std() / np.sqrt(1000), rel=0.1)
    assert res.samples["nll"].mean() == pytest.approx(res.differences["nll"].diff, abs=d.std() / np.sqrt(1000) / 5)
    same = pb.paired_bootstrap((a, a, y), n_resamples=100)
    for m in pb.METRICS:
        x = same.differences[m]
        assert max(abs(x.diff), abs(x.low), abs(x.high)) < 1e-15 and not x.excludes_zero and x.b_better is None


def test_clearly_better_model_excludes_zero():
    rng = np.random.default_rng(3)
    n, k = 500, 5
    y = rng.integers(0, k, n)
    good = log_softmax(3.0 * np.eye(k)[y] + rng.normal(size=(n, k)), axis=1)
    bad = log_softmax(rng.normal(size=(n, k)), axis=1)
    res = pb.paired_bootstrap((bad, good, y), n_resamples=300, n_splits=1)
    assert res.differences["accuracy"].excludes_zero and res.differences["accuracy"].b_better is True
    assert res.differences["nll"].low < res.differences["nll"].high < 0 and res.differences["nll"].b_better is True


def test_seeds_pooled_t_and_hierarchical():
    rng = np.random.default_rng(5)
    n, k = 300, 3
    y = rng.integers(0, k, n)
    pairs = []
    for s in range(4):  # B's quality varies a lot between seeds
        base = np.eye(k)[y] + rng.normal(size=(n, k))
        pairs.append((log_softmax(2 * (base + 0.5 * rng.normal(size=(n, k))), 1),
                      log_softmax(2 * (base + [0.1, 1.5, 0.2, 1.4][s] * rng.normal(size=(n, k))), 1), y))
    t = pb.paired_bootstrap(pairs, n_resamples=500, n_splits=1)
    h = pb.paired_bootstrap(pairs, n_resamples=500, n_splits=1, over_seeds="bootstrap")
    flat = pb.paired_bootstrap(pairs, n_resamples=500, n_splits=1, over_seeds="fixed")
    assert t.over_seeds == "t" and t.covers_seeds and not t.hierarchical  # the default with 2+ seeds
    assert h.hierarchical and h.covers_seeds and not flat.hierarchical and not flat.covers_seeds
    assert h.shared_examples and h.n_seeds == 4
    per_seed = [pb.paired_bootstrap(p, n_resamples=10, n_splits=1).differences["nll"].diff for p in pairs]
    for r in (t, h, flat):
        assert r.differences["nll"].diff == pytest.approx(np.mean(per_seed))
        assert r.differences["nll"].per_seed == pytest.approx(per_seed)
        assert r.differences["nll"].seed_std == pytest.approx(np.std(per_seed, ddof=1))
    width = lambda r: r.differences["nll"].high - r.differences["nll"].low  # noqa: E731
    assert width(h) > 1.5 * width(flat)  # seed-to-seed spread enters the hierarchical interval
    assert width(t) > width(h)  # and the t interval (3 df) more: 4 seeds say little about the spread
    # the t interval: the examples' standard error (seeds fixed) and the seeds' combined, Welch-Satterthwaite df
    d = t.differences["nll"]
    se_ex, se_seed2 = flat.differences["nll"].se, np.var(per_seed, ddof=1) / 4
    assert t.samples["nll"].std(ddof=1) == pytest.approx(se_ex)  # the same example draws as "fixed"
    assert d.se == pytest.approx(np.sqrt(se_ex ** 2 + se_seed2))
    assert d.df == pytest.approx((se_ex ** 2 + se_seed2) ** 2 / (se_seed2 ** 2 / 3)) and 3 < d.df < 30
    assert (d.low, d.high) == pytest.approx((d.diff - pb.t_quantile(0.95, d.df) * d.se, d.diff + pb.t_quantile(0.95, d.df) * d.se))
    one = pb.paired_bootstrap(pairs[0], n_resamples=50, n_splits=1)
    assert one.over_seeds == "fixed" and not one.covers_seeds and np.isnan(one.differences["nll"].seed_std)
    # different test sets per seed: each seed draws its own examples
    other = _pair(np.random.default_rng(6), n=200)
    assert not pb.paired_bootstrap([pairs[0], other], n_resamples=50, n_splits=1).shared_examples


def test_validation_temperatures():
    rng = np.random.default_rng(8)
    a, b, y = _pair(rng, n=600)
    val, test = slice(0, 200), slice(200, None)
    res = pb.paired_bootstrap((a[test], b[test], y[test]), val_pairs=(a[val], b[val], y[val]), n_resamples=100)
    assert res.calibration == "validation"
    ref = cal.temperature_scale(b[test], y[test], b[val], y[val]).nll
    assert res.differences["calibrated_nll"].b == pytest.approx(ref)


def test_bad_inputs():
    a, b, y = _pair(np.random.default_rng(9), n=50)
    with pytest.raises(ValueError, match="same shape"):
        pb.paired_bootstrap((a, b[:40], y))
    with pytest.raises(ValueError, match="pairs is empty"):
        pb.paired_bootstrap([])
    with pytest.raises(ValueError, match="one per seed"):
        pb.paired_bootstrap([(a, b, y)], val_pairs=[(a, b, y), (a, b, y)])
    with pytest.raises(ValueError, match="level"):
        pb.paired_bootstrap((a, b, y), level=95)
    with pytest.raises(ValueError, match=r"pairs\[0\]\[2\] \(targets\)"):
        pb.paired_bootstrap((a, b, y[:10]))
    with pytest.raises(ValueError, match="over_seeds must be one of t, bootstrap, fixed"):
        pb.paired_bootstrap([(a, b, y), (a, b, y)], over_seeds="hierarchical")
    with pytest.raises(ValueError, match="needs at least 2 seeds"):
        pb.paired_bootstrap((a, b, y), over_seeds="t")


def test_coverage_of_the_interval_by_simulation():
    """Two models drawn from the same distribution (per example, A's and B's predictions are
    exchangeable), so every population difference is 0: the 95% interval must contain 0 in about
    95% of 200 simulated pairs, for every metric. Band [0.88, 0.99] (binomial sd at 0.95: 0.015);
    resampling A and B with independent draws (losing the pairing) covers 100% here and fails."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    rng = np.random.default_rng(2024)
    covered = np.zeros(len(pb.METRICS))
    with threadpoolctl.threadpool_limits(1):  # small matrix products: threads only contend
        for i in range(200):
            res = pb.paired_bootstrap(_pair(rng), n_resamples=500, n_splits=1, seed=i)
            covered += [not res.differences[m].excludes_zero for m in pb.METRICS]
    rate = dict(zip(pb.METRICS, covered / 200))
    assert all(0.88 <= r <= 0.99 for r in rate.values()), rate

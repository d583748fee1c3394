"""benchmark.evaluation.dee: the subset curve against a by-hand loop, subset sampling, the
interpolation and its bounds, and the full ensemble's own DEE."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp

from benchmark.evaluation import dee as d
from benchmark.evaluation.calibration import temperature_scale


def _ensemble(m=4, n=400, k=5, seed=0):
    """Members = shared signal + independent noise, over-confident: ensembling helps."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    signal = np.eye(k)[y] * 1.5 + rng.normal(size=(n, k))
    return log_softmax(3.0 * (signal + rng.normal(size=(m, n, k)) * 1.2), axis=-1), y


def _curve(nll):
    m = len(nll)
    return d.DEECurve(tuple(range(1, m + 1)), tuple(nll), (0.0,) * m, (1,) * m, (True,) * m, "test-cv", 5, 0, 20)


def test_interpolation_and_bounds():
    c = _curve([1.0, 0.8, 0.7, 0.65])
    assert d.deep_ensemble_equivalent(0.75, c).value == pytest.approx(2.5)
    assert d.deep_ensemble_equivalent(0.66, c).value == pytest.approx(3.8)
    assert d.deep_ensemble_equivalent(1.0, c).value == 1.0
    assert d.deep_ensemble_equivalent(0.65, c).value == pytest.approx(4.0)
    worse = d.deep_ensemble_equivalent(1.2, c)
    assert worse.value is None and worse.bound == worse.display == "< 1"
    better = d.deep_ensemble_equivalent(0.6, c)
    assert better.value is None and better.bound == "> 4"
    assert d.deep_ensemble_equivalent(0.9, c).display == "1.50"
    # a non-monotone curve uses its first crossing
    assert d.deep_ensemble_equivalent(0.75, _curve([1.0, 0.7, 0.8, 0.6])).value == pytest.approx(1 + 0.25 / 0.3)
    with pytest.raises(ValueError, match="finite"):
        d.deep_ensemble_equivalent(float("nan"), c)


def test_curve_exhaustive_matches_by_hand_and_decreases():
    lp, y = _ensemble()
    curve = d.dee_curve(lp, y, max_subsets=10, n_splits=2, seed=3)
    assert curve.n_subsets == (4, 6, 4, 1) and all(curve.exhaustive) and curve.procedure == "test-cv"
    for m in (1, 2, 4):
        by_hand = [temperature_scale(logsumexp(lp[list(s)], axis=0) - math.log(m), y, n_splits=2, seed=3).nll
                   for s in combinations(range(4), m)]
        assert curve.nll[m - 1] == pytest.approx(np.mean(by_hand), rel=1e-12)
    assert all(a > b for a, b in zip(curve.nll, curve.nll[1:]))
    # the full ensemble is worth exactly M members; one member about 1
    full = d.dee(logsumexp(lp, axis=0) - math.log(4), y, curve)
    assert full.value == pytest.approx(4.0)
    one = d.dee(lp[0], y, curve)
    assert one.bound == "< 1" or one.value == pytest.approx(1.0, abs=0.6)


def test_curve_sampled_subsets_are_distinct_and_seeded():
    lp, y = _ensemble(m=5, n=200)
    curve = d.dee_curve(lp, y, max_subsets=3, n_splits=1, seed=1)
    assert curve.n_subsets == (3, 3, 3, 3, 1) and curve.exhaustive == (False, False, False, False, True)
    assert d.dee_curve(lp, y, max_subsets=3, n_splits=1, seed=1) == curve
    rng = np.random.default_rng(0)
    subsets, full = d._subsets(6, 3, 15, rng)
    assert not full and len(set(subsets)) == 15 and all(len(set(s)) == 3 for s in subsets)


def test_validation_procedure():
    lp, y = _ensemble(n=600)
    val, test = slice(0, 200), slice(200, None)
    curve = d.dee_curve(lp[:, test], y[test], lp[:, val], y[val])
    assert curve.procedure == "validation" and curve.n_splits == 0
    m1 = temperature_scale(lp[2, test], y[test], lp[2, val], y[val]).nll
    assert min(temperature_scale(lp[i, test], y[test], lp[i, val], y[val]).nll for i in range(4)) <= curve.nll[0]
    assert m1 > curve.nll[-1]
    res = d.dee(lp[2, test], y[test], curve, lp[2, val], y[val])
    assert res.method_nll == pytest.approx(m1)
    with pytest.raises(ValueError, match="validation prediction"):
        d.dee(lp[2, test], y[test], curve)
    with pytest.raises(ValueError, match="members and classes"):
        d.dee_curve(lp[:, test], y[test], lp[:2, val], y[val])

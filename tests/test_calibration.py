"""benchmark.evaluation.calibration: basic metrics against metrics.py / sklearn, the temperature fit
against a fine grid, edge cases, and the two calibration procedures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax as sp_log_softmax
from sklearn.metrics import log_loss

from benchmark.evaluation import calibration as cal


def _data(n=2000, k=10, seed=0, scale=1.0, sharpen=1.0):
    """Well-specified data: targets drawn from softmax(z); the model reports softmax(z * sharpen)
    (sharpen > 1: over-confident, so the best temperature is ``sharpen``)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    p = np.exp(sp_log_softmax(z, axis=1))
    y = (rng.random((n, 1)) > p.cumsum(axis=1)).sum(axis=1).clip(0, k - 1)
    return sp_log_softmax(z * sharpen, axis=1), y


def _grid_nll(lp, y, lo=-4.0, hi=4.0):
    """Brute-force minimum over log T: a grid of step 0.01, then a grid of step 1e-4 around its best."""
    def best(grid):
        return min((cal.temperature_nll(lp, y, math.exp(g)), g) for g in grid)

    _, g0 = best(np.arange(lo, hi + 1e-9, 0.01))
    return best(np.arange(g0 - 0.01, g0 + 0.01 + 1e-9, 1e-4))


def test_basic_metrics_match_metrics_py_and_sklearn():
    torch = pytest.importorskip("torch")
    from benchmark.evaluation import metrics as mt

    lp, y = _data(500, 7, seed=1, scale=3.0)
    got = cal.calibration_metrics(lp, y)
    assert got["nll"] == pytest.approx(log_loss(y, np.exp(lp), labels=range(7)), rel=1e-9)
    tlp, ty = torch.from_numpy(lp), torch.from_numpy(y)
    assert got["ece"] == pytest.approx(mt.ece(tlp.exp(), ty), abs=1e-12)
    assert got["brier"] == pytest.approx(mt.brier(tlp.exp(), ty), abs=1e-12)
    assert got["accuracy"] == pytest.approx(mt.accuracy(tlp, ty))


def test_ece_bin_edges_are_right_closed():
    # confidence exactly 0.6 with 5 bins falls in (0.4, 0.6], as in metrics.py
    lp = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    b, conf, hit = cal.ece_bins(lp, np.array([0, 1]), 5)
    assert list(b) == [2, 2]
    assert cal.ece(lp, np.array([0, 1]), 5) == pytest.approx(abs(1 - 1.2) / 2)
    # weighted ECE equals ECE of the repeated examples
    w = np.array([3.0, 1.0])
    rep_lp, rep_y = np.repeat(lp, [3, 1], axis=0), np.array([0, 0, 0, 1])
    assert cal.ece(lp, np.array([0, 1]), 5, weights=w) == pytest.approx(cal.ece(rep_lp, rep_y, 5))


@pytest.mark.parametrize("sharpen", [0.5, 1.0, 2.5])
def test_fit_matches_fine_grid(sharpen):
    lp, y = _data(1500, 10, seed=2, sharpen=sharpen)
    t = cal.fit_temperature(lp, y)
    v_grid, log_t_grid = _grid_nll(lp, y)
    assert cal.temperature_nll(lp, y, t) <= v_grid + 1e-9
    assert math.log(t) == pytest.approx(log_t_grid, abs=2e-3)
    ref = minimize_scalar(lambda u: cal.temperature_nll(lp, y, math.exp(u)), bounds=(-4, 4), method="bounded",
                          options={"xatol": 1e-8})
    assert math.log(t) == pytest.approx(ref.x, abs=1e-3)
    # well specified: the optimum is near the true sharpening factor
    assert t == pytest.approx(sharpen, rel=0.15)


def test_calibrated_gives_t_near_one_overconfident_gives_t_above_one():
    lp, y = _data(4000, 5, seed=3, scale=2.0)
    assert cal.fit_temperature(lp, y) == pytest.approx(1.0, abs=0.08)
    lp2, y2 = _data(4000, 5, seed=3, scale=2.0, sharpen=3.0)
    assert cal.fit_temperature(lp2, y2) > 2.0
    res = cal.temperature_scale(lp2, y2)
    assert res.nll < cal.calibration_metrics(lp2, y2)["nll"]
    assert res.ece < cal.calibration_metrics(lp2, y2)["ece"]


def test_one_class_dominating_and_boundaries():
    rng = np.random.default_rng(4)
    n, k = 1000, 4
    # class 0 is almost always right and predicted with moderate confidence: sharpen (T < 1)
    y = np.where(rng.random(n) < 0.99, 0, rng.integers(1, k, n))
    lp = np.tile(sp_log_softmax(np.array([2.0, 0.0, 0.0, 0.0])), (n, 1))
    t = cal.fit_temperature(lp, y)
    v_grid, log_t_grid = _grid_nll(lp, y)
    assert math.log(t) == pytest.approx(log_t_grid, abs=2e-3) and t < 1
    # perfectly separated: NLL keeps falling as T -> 0, the fit returns the lower bound
    y2 = rng.integers(0, k, 50)
    lp2 = sp_log_softmax(np.eye(k)[y2] * 3.0, axis=1)
    assert cal.fit_temperature(lp2, y2) == pytest.approx(cal.T_BOUNDS[0])
    # all wrong with confident predictions: flatten to the upper bound
    lp3 = sp_log_softmax(np.eye(k)[(y2 + 1) % k] * 3.0, axis=1)
    assert cal.fit_temperature(lp3, y2) == pytest.approx(cal.T_BOUNDS[1])
    # uniform predictions do not depend on T
    assert cal.fit_temperature(np.full((10, k), -math.log(k)), y2[:10]) == 1.0


def test_validation_procedure_uses_the_validation_temperature():
    lp, y = _data(3000, 6, seed=5, sharpen=2.0)
    val, test = slice(0, 1000), slice(1000, None)
    res = cal.temperature_scale(lp[test], y[test], lp[val], y[val])
    t = cal.fit_temperature(lp[val], y[val])
    assert res.procedure == "validation" and res.temperature == t
    ref = cal.calibration_metrics(cal.apply_temperature(lp[test], t), y[test])
    assert res.nll == pytest.approx(ref["nll"]) and res.ece == pytest.approx(ref["ece"])
    assert res.brier == pytest.approx(ref["brier"]) and res.accuracy == ref["accuracy"]
    assert res.nll_per_example.mean() == pytest.approx(res.nll)


def test_test_cv_procedure_by_hand():
    lp, y = _data(501, 4, seed=6, sharpen=1.7)
    res = cal.temperature_scale(lp, y, n_splits=3, seed=11)
    rng = np.random.default_rng(11)
    nlls, eces, temps = [], [], []
    for _ in range(3):
        perm = rng.permutation(501)
        a, b = perm[:250], perm[250:]
        ta, tb = cal.fit_temperature(lp[a], y[a]), cal.fit_temperature(lp[b], y[b])
        temps += [ta, tb]
        out = np.empty_like(lp)
        out[b], out[a] = cal.apply_temperature(lp[b], ta), cal.apply_temperature(lp[a], tb)
        m = cal.calibration_metrics(out, y)
        nlls.append(m["nll"]), eces.append(m["ece"])
    assert res.procedure == "test-cv" and res.n_splits == 3 and len(res.temperatures) == 6
    assert np.allclose(res.temperatures, temps)
    assert res.nll == pytest.approx(np.mean(nlls)) and res.ece == pytest.approx(np.mean(eces))
    assert res.nll_per_example.shape == (501,)
    # same seed, same splits: deterministic
    assert cal.temperature_scale(lp, y, n_splits=3, seed=11).nll == res.nll


def test_bad_inputs_are_named():
    lp, y = _data(20, 3)
    with pytest.raises(ValueError, match="log_probs must have shape"):
        cal.temperature_scale(lp[0], y)
    with pytest.raises(ValueError, match="targets has 1 value"):
        cal.temperature_scale(lp, np.r_[y[:-1], 3])
    with pytest.raises(ValueError, match="logsumexp"):
        cal.calibration_metrics(lp + 1.0, y)
    with pytest.raises(ValueError, match="non-finite"):
        cal.calibration_metrics(np.where(np.arange(3) == 0, np.nan, lp), y)
    with pytest.raises(ValueError, match="n_bins"):
        cal.ece(lp, y, 0)
    with pytest.raises(ValueError, match="both"):
        cal.temperature_scale(lp, y, lp)


def test_fit_matches_scipy_on_random_cases():
    """Random sizes, sharpness and label noise (including near-separable sets): the fitted T's NLL is
    never above the best of scipy's bounded optimum and the two bounds."""
    rng = np.random.default_rng(0)
    for _ in range(60):
        n, k = int(rng.integers(2, 200)), int(rng.integers(2, 12))
        lp = sp_log_softmax(rng.normal(size=(n, k)) * rng.choice([0.01, 0.3, 1.0, 5.0, 30.0]), axis=1)
        y = lp.argmax(1) if rng.random() < 0.3 else rng.integers(0, k, n)
        y = np.where(rng.random(n) < 0.1, rng.integers(0, k, n), y)
        f = lambda u: cal.temperature_nll(lp, y, math.exp(u))  # noqa: E731
        lo, hi = (math.log(b) for b in cal.T_BOUNDS)
        ref = minimize_scalar(f, bounds=(lo, hi), method="bounded", options={"xatol": 1e-10})
        assert f(math.log(cal.fit_temperature(lp, y))) <= min(ref.fun, f(lo), f(hi)) + 1e-9

"""benchmark.evaluation.uncertainty: the entropy decomposition against scipy, OOD detection against
sklearn (ROC AUC, average precision both ways, ROC curve for FPR at 95% TPR), ties, one member,
perfect separation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, logsumexp
from scipy.stats import entropy as sp_entropy
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from benchmark.evaluation import uncertainty as unc


def _members(m=4, n=300, k=6, seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    return log_softmax(rng.normal(size=(m, n, k)) * scale, axis=-1)


def test_decomposition_against_scipy():
    lp = _members()
    p = np.exp(lp)
    mean = p.mean(axis=0)
    total = sp_entropy(mean, axis=-1)
    aleatoric = sp_entropy(p, axis=-1).mean(axis=0)
    dec = unc.uncertainty_decomposition(lp)
    assert np.allclose(dec["total"], total, atol=1e-12)
    assert np.allclose(dec["aleatoric"], aleatoric, atol=1e-12)
    assert np.allclose(dec["epistemic"], total - aleatoric, atol=1e-12)
    assert (dec["epistemic"] > 0).all()
    summ = unc.uncertainty_summary(lp)
    assert summ["total"] == pytest.approx(total.mean()) and summ["epistemic"] == pytest.approx((total - aleatoric).mean())


def test_one_member_identical_members_and_zero_probabilities():
    lp = _members(m=1)
    dec = unc.uncertainty_decomposition(lp)
    assert (dec["epistemic"] == 0).all() and np.allclose(dec["total"], dec["aleatoric"])
    assert np.array_equal(unc.uncertainty_decomposition(lp[0])["total"], dec["total"])  # [N, K] = one member
    same = np.repeat(lp, 5, axis=0)
    dec5 = unc.uncertainty_decomposition(same)
    assert (dec5["epistemic"] >= 0).all() and dec5["epistemic"].max() < 1e-12  # rounding clipped at 0
    # probabilities that underflow to exactly 0 (0 log 0 = 0); two confident members disagreeing: MI = log 2
    one_hot = np.array([[[0.0, -1e4]], [[-1e4, 0.0]]])
    dec2 = unc.uncertainty_decomposition(one_hot)
    assert dec2["aleatoric"][0] == 0 and dec2["epistemic"][0] == pytest.approx(np.log(2))
    assert "mutual_information" not in unc.ood_scores(lp) and "mutual_information" in unc.ood_scores(same)


def _sk_fpr95(s_in, s_out):
    y = np.r_[np.ones(len(s_out)), np.zeros(len(s_in))]
    fpr, tpr, _ = roc_curve(y, np.r_[s_out, s_in], drop_intermediate=False)
    return fpr[np.flatnonzero(tpr >= 0.95)[0]]


@pytest.mark.parametrize("decimals", [None, 1])  # continuous, then many ties
def test_ood_metrics_against_sklearn(decimals):
    rng = np.random.default_rng(7)
    s_in, s_out = rng.normal(0, 1, 400), rng.normal(1, 1, 250)
    if decimals is not None:
        s_in, s_out = np.round(s_in, decimals), np.round(s_out, decimals)
    y = np.r_[np.ones(250), np.zeros(400)]
    s = np.r_[s_out, s_in]
    got = unc.ood_metrics(s_in, s_out)
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert got["aupr_out"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert got["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s), abs=1e-12)
    assert got["fpr_at_95_tpr"] == pytest.approx(_sk_fpr95(s_in, s_out), abs=1e-12)


def test_ood_metrics_agree_with_ood_py():
    pytest.importorskip("torch")
    from benchmark.evaluation import ood

    rng = np.random.default_rng(8)
    s_in, s_out = np.round(rng.normal(0, 1, 300), 1), np.round(rng.normal(0.7, 1, 200), 1)
    ref, got = ood.ood_metrics(s_in, s_out), unc.ood_metrics(s_in, s_out)
    assert got["auroc"] == pytest.approx(ref["auroc"]) and got["aupr_out"] == pytest.approx(ref["aupr"])
    assert got["fpr_at_95_tpr"] == pytest.approx(ref["fpr_at_95_tpr"])


def test_perfect_separation_and_all_tied():
    s_in, s_out = np.linspace(0, 1, 50), np.linspace(2, 3, 30)
    assert unc.ood_metrics(s_in, s_out) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr_at_95_tpr": 0.0}
    flat = unc.ood_metrics(np.zeros(50), np.zeros(30))
    assert flat["auroc"] == 0.5 and flat["fpr_at_95_tpr"] == 1.0
    assert flat["aupr_out"] == pytest.approx(30 / 80) and flat["aupr_in"] == pytest.approx(50 / 80)


def test_ood_detection_end_to_end():
    rng = np.random.default_rng(9)
    m, k = 3, 5
    lp_in = log_softmax(rng.normal(size=(1, 200, k)) * 4 + rng.normal(size=(m, 200, k)) * 0.3, axis=-1)  # members agree
    lp_out = log_softmax(rng.normal(size=(m, 150, k)) * 1.5, axis=-1)  # members disagree, flatter
    res = unc.ood_detection(lp_in, lp_out)
    assert set(res) == {"max_prob", "entropy", "mutual_information"}
    for name, metrics in res.items():
        s_in, s_out = unc.ood_scores(lp_in)[name], unc.ood_scores(lp_out)[name]
        y = np.r_[np.ones(150), np.zeros(200)]
        assert metrics["auroc"] == pytest.approx(roc_auc_score(y, np.r_[s_out, s_in]))
        assert metrics["auroc"] > 0.8
    with pytest.raises(ValueError, match="same members"):
        unc.ood_detection(lp_in, lp_out[:2])
    with pytest.raises(ValueError, match="non-finite"):
        unc.ood_metrics([np.inf], [0.0])


def test_new_metric_modules_import_neither_torch_nor_scipy():
    """The torch-free leaderboard calls these; scipy is not a declared dependency of the package."""
    import subprocess
    import sys

    code = ("import sys; import benchmark.evaluation.calibration, benchmark.evaluation.selective, "
            "benchmark.evaluation.uncertainty, benchmark.evaluation.dee, benchmark.evaluation.paired; "
            "bad = [m for m in ('torch', 'scipy') if m in sys.modules]; assert not bad, bad")
    from pathlib import Path

    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_from_stored_entropy_equals_from_members():
    lp = _members(m=3, n=120)
    mean = logsumexp(lp, axis=0) - np.log(3)
    ale = unc.uncertainty_decomposition(lp)["aleatoric"]
    full, short = unc.uncertainty_decomposition(lp), unc.decomposition_from_entropy(mean, ale, 3)
    for key in full:
        assert np.allclose(full[key], short[key], atol=1e-12)
    s_full, s_short = unc.ood_scores(lp), unc.ood_scores_from_entropy(mean, ale, 3)
    assert set(s_full) == set(s_short) and all(np.allclose(s_full[k], s_short[k]) for k in s_full)
    out = _members(m=3, n=80, seed=1, scale=0.7)
    a, b = unc.ood_detection(s_short, out), unc.ood_detection(lp, out)
    assert set(a) == set(b) and all(a[k] == pytest.approx(b[k]) for k in a)
    one = unc.decomposition_from_entropy(lp[0], unc.entropy(lp[0]), 1)
    assert (one["epistemic"] == 0).all()
    # float16-stored log-probabilities pass the normalisation check
    assert unc.uncertainty_summary(lp.astype(np.float16))["total"] == pytest.approx(unc.uncertainty_summary(lp)["total"], abs=2e-3)
    with pytest.raises(ValueError, match="member_entropy must have shape"):
        unc.decomposition_from_entropy(mean, ale[:5], 3)

"""Tests for benchmark.evaluation.metrics: each metric against an independent computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, average_precision_score, log_loss, roc_auc_score

from benchmark.evaluation import metrics as mt
from benchmark.evaluation import ood

N_BINS = 15


def _make(m: int, b: int, k: int, seed: int = 0, scale: float = 3.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(m, b, k, generator=g, dtype=torch.float64) * scale).to(dtype)
    targets = torch.randint(0, k, (b,), generator=g)
    return logits, targets


def _np_softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _np_mean_probs(logits: torch.Tensor) -> np.ndarray:
    return _np_softmax(logits.double().numpy()).mean(axis=0)


def _brute_ece(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Pure-Python top-label ECE: bins (lo, hi], loop over bins and examples."""
    n = len(y)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        confs, hits = [], []
        for i in range(n):
            row = [float(v) for v in probs[i]]
            c = max(row)
            if lo < c <= hi or (b == 0 and c == 0.0):
                confs.append(c)
                hits.append(1.0 if row.index(c) == int(y[i]) else 0.0)
        if confs:
            total += len(confs) / n * abs(sum(hits) / len(hits) - sum(confs) / len(confs))
    return total


def _brute_reliability(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS):
    counts, conf_sum, correct = [0] * n_bins, [0.0] * n_bins, [0] * n_bins
    for i in range(len(y)):
        row = [float(v) for v in probs[i]]
        c = max(row)
        for b in range(n_bins):
            if b / n_bins < c <= (b + 1) / n_bins:
                counts[b] += 1
                conf_sum[b] += c
                correct[b] += int(row.index(c) == int(y[i]))
    return counts, conf_sum, correct


def _np_brier(probs: np.ndarray, y: np.ndarray) -> float:
    onehot = np.eye(probs.shape[1])[y]
    return float(((probs - onehot) ** 2).sum(axis=1).mean())


def _brute_disagreement(logits: torch.Tensor) -> float:
    pred = logits.argmax(-1).numpy()
    m, b = pred.shape
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    if not pairs:
        return 0.0
    return sum(sum(pred[i, x] != pred[j, x] for x in range(b)) / b for i, j in pairs) / len(pairs)


def _brute_kl(logits: torch.Tensor) -> float:
    p = _np_softmax(logits.double().numpy())
    m, b, k = p.shape
    pairs = [(i, j) for i in range(m) for j in range(m) if i != j]
    if not pairs:
        return 0.0
    tot = 0.0
    for i, j in pairs:
        s = 0.0
        for x in range(b):
            s += sum(p[i, x, c] * (math.log(p[i, x, c]) - math.log(p[j, x, c])) for c in range(k))
        tot += s / b
    return tot / len(pairs)


def _brute_fpr95(s_in: np.ndarray, s_out: np.ndarray) -> float:
    best = 1.0
    for t in sorted(set(s_in.tolist()) | set(s_out.tolist())):
        tpr = sum(s >= t for s in s_out) / len(s_out)
        if tpr >= 0.95:
            best = min(best, sum(s >= t for s in s_in) / len(s_in))
    return best


# ------------------------------------------------------------------------------------------------
# combination
# ------------------------------------------------------------------------------------------------


def test_combine_log_probs_is_log_mean_of_softmaxes():
    logits, _ = _make(5, 64, 7)
    got = mt.combine_log_probs(logits)
    assert got.shape == (64, 7) and got.dtype == torch.float64
    np.testing.assert_allclose(got.exp().numpy(), _np_mean_probs(logits), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.exp().sum(-1).numpy(), 1.0, rtol=1e-12)


def test_combine_log_probs_float32_keeps_dtype():
    logits, _ = _make(3, 32, 5, dtype=torch.float32)
    got = mt.combine_log_probs(logits)
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.exp().numpy(), _np_mean_probs(logits), rtol=1e-5, atol=1e-7)


def test_combining_probs_differs_from_averaging_logits():
    # two confident members disagreeing: mean prob is 50/50, mean logit is 0 over 3 classes
    logits = torch.tensor([[[10.0, -10.0, 0.0]], [[-10.0, 10.0, 0.0]]], dtype=torch.float64)
    p = mt.combine_log_probs(logits).exp()[0]
    p_logit_avg = torch.softmax(logits.mean(0), -1)[0]
    np.testing.assert_allclose(p.numpy(), _np_mean_probs(logits)[0], rtol=1e-12)
    assert abs(float(p[0]) - 0.5) < 1e-4 and abs(float(p_logit_avg[0]) - 1 / 3) < 1e-12
    assert not torch.allclose(p, p_logit_avg, atol=0.1)


def test_combine_log_probs_extreme_logits_stay_finite():
    logits = torch.tensor([[[1e4, -1e4]], [[-1e4, 1e4]]], dtype=torch.float32)
    lp = mt.combine_log_probs(logits)
    assert torch.isfinite(lp).all()
    np.testing.assert_allclose(lp.exp().numpy(), [[0.5, 0.5]], rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# one-shot metrics vs independent computations
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accuracy_and_nll_match_sklearn(dtype):
    logits, y = _make(4, 300, 10, seed=1, dtype=dtype)
    lp = mt.combine_log_probs(logits)
    probs = _np_mean_probs(logits)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert mt.accuracy(lp, y) == pytest.approx(accuracy_score(y.numpy(), probs.argmax(1)), abs=0)
    assert mt.nll(lp, y) == pytest.approx(log_loss(y.numpy(), probs, labels=list(range(10))), rel=tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ece_matches_brute_force(dtype):
    logits, y = _make(3, 400, 6, seed=2, scale=2.0, dtype=dtype)
    probs = mt.combine_log_probs(logits).exp()
    # brute force on the same probabilities (float32 -> Python float is exact)
    assert mt.ece(probs, y) == pytest.approx(_brute_ece(probs.numpy(), y.numpy()), rel=1e-9, abs=1e-12)
    assert mt.ece(probs, y, n_bins=7) == pytest.approx(_brute_ece(probs.numpy(), y.numpy(), 7), rel=1e-9, abs=1e-12)


def test_reliability_bins_match_brute_force_and_edges():
    logits, y = _make(2, 500, 4, seed=3, scale=2.5)
    probs = mt.combine_log_probs(logits).exp()
    rel = mt.reliability_bins(probs, y)
    counts, conf_sum, correct = _brute_reliability(probs.numpy(), y.numpy())
    assert rel["bin_edges"] == [i / 15 for i in range(16)]
    assert rel["counts"] == counts and rel["correct"] == correct
    np.testing.assert_allclose(rel["confidence_sum"], conf_sum, rtol=1e-12, atol=1e-12)
    assert sum(rel["counts"]) == 500
    assert all(isinstance(c, int) for c in rel["counts"] + rel["correct"])


def test_ece_bins_are_right_closed():
    # confidence exactly on an edge (0.6 = 9/15) belongs to the lower bin (0.5333, 0.6]
    probs = torch.tensor([[9 / 15, 6 / 15], [1.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    rel = mt.reliability_bins(probs, y)
    assert rel["counts"][8] == 1 and rel["counts"][14] == 1 and sum(rel["counts"]) == 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_brier_matches_numpy_onehot(dtype):
    logits, y = _make(3, 250, 8, seed=4, dtype=dtype)
    probs = mt.combine_log_probs(logits).exp()
    want = _np_brier(probs.double().numpy(), y.numpy())
    assert mt.brier(probs, y) == pytest.approx(want, rel=1e-12 if dtype == torch.float64 else 1e-6)


def test_disagreement_and_kl_match_brute_force():
    logits, _ = _make(4, 40, 5, seed=5, scale=1.5)
    assert mt.disagreement(logits) == pytest.approx(_brute_disagreement(logits), rel=1e-12)
    assert mt.pairwise_kl(logits) == pytest.approx(_brute_kl(logits), rel=1e-9)
    assert mt.pairwise_kl(logits) > 0


def test_diversity_is_zero_for_one_member_and_identical_members():
    logits, _ = _make(1, 30, 4, seed=6)
    assert mt.disagreement(logits) == 0.0 and mt.pairwise_kl(logits) == 0.0
    same = logits.expand(3, -1, -1).clone()
    assert mt.disagreement(same) == 0.0
    assert mt.pairwise_kl(same) == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------
# accumulator
# ------------------------------------------------------------------------------------------------


def _one_shot(logits: torch.Tensor, y: torch.Tensor) -> dict:
    lp = mt.combine_log_probs(logits)
    p = lp.exp()
    return {"accuracy": mt.accuracy(lp, y), "nll": mt.nll(lp, y), "ece": mt.ece(p, y), "brier": mt.brier(p, y)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_accumulator_over_batches_equals_one_shot(dtype):
    logits, y = _make(4, 1000, 10, seed=7, dtype=dtype)
    acc = mt.MetricAccumulator()
    for lo, hi in [(0, 1), (1, 128), (128, 128), (128, 600), (600, 1000)]:  # includes an empty batch
        acc.update(logits[:, lo:hi], y[lo:hi])
    res = acc.compute()
    want = _one_shot(logits, y)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    for key, val in want.items():
        assert res[key] == pytest.approx(val, rel=tol, abs=tol), key
    assert res["n"] == 1000
    probs = mt.combine_log_probs(logits).exp()
    rel = mt.reliability_bins(probs, y)
    assert res["reliability"]["counts"] == rel["counts"]
    assert res["reliability"]["correct"] == rel["correct"]
    assert res["reliability"]["bin_edges"] == rel["bin_edges"]
    np.testing.assert_allclose(res["reliability"]["confidence_sum"], rel["confidence_sum"], rtol=tol)
    assert res["diversity"]["disagreement"] == pytest.approx(mt.disagreement(logits), rel=1e-12)
    assert res["diversity"]["kl"] == pytest.approx(mt.pairwise_kl(logits), rel=tol)


def test_accumulator_members_equal_single_member_computation():
    logits, y = _make(3, 200, 6, seed=8)
    acc = mt.MetricAccumulator()
    acc.update(logits[:, :90], y[:90])
    acc.update(logits[:, 90:], y[90:])
    res = acc.compute()
    assert len(res["members"]) == 3
    for m in range(3):
        single = mt.MetricAccumulator()
        single.update(logits[m : m + 1], y)
        one = single.compute()
        direct = _one_shot(logits[m : m + 1], y)
        for key in ("accuracy", "nll", "ece", "brier"):
            assert res["members"][m][key] == pytest.approx(one[key], rel=1e-12), key
            assert res["members"][m][key] == pytest.approx(direct[key], rel=1e-12), key
    for key in ("accuracy", "nll", "ece", "brier"):
        assert res["member_mean"][key] == pytest.approx(np.mean([r[key] for r in res["members"]]), rel=1e-12)
    # averaging probabilities never has higher NLL than the mean member (Jensen)
    assert res["nll"] <= res["member_mean"]["nll"] + 1e-12


def test_accumulator_single_member_and_plain_types():
    logits, y = _make(1, 50, 3, seed=9)
    acc = mt.MetricAccumulator()
    acc.update(logits, y)
    res = acc.compute()
    for key in ("accuracy", "nll", "ece", "brier"):
        assert res[key] == pytest.approx(res["members"][0][key], rel=1e-12)
        assert type(res[key]) is float
    assert res["diversity"] == {"disagreement": 0.0, "kl": 0.0}
    assert type(res["n"]) is int
    rel = res["reliability"]
    assert len(rel["bin_edges"]) == 16 and len(rel["counts"]) == 15
    assert all(type(v) is int for v in rel["counts"] + rel["correct"])
    assert all(type(v) is float for v in rel["bin_edges"] + rel["confidence_sum"])


def test_perfectly_confident_predictions():
    y = torch.tensor([0, 1, 2, 1])
    logits = torch.full((2, 4, 3), -1e4, dtype=torch.float32)
    logits[:, torch.arange(4), y] = 1e4
    acc = mt.MetricAccumulator()
    acc.update(logits, y)
    res = acc.compute()
    assert res["accuracy"] == 1.0
    assert res["nll"] == pytest.approx(0.0, abs=1e-6)
    assert res["ece"] == pytest.approx(0.0, abs=1e-6)
    assert res["brier"] == pytest.approx(0.0, abs=1e-6)
    assert res["reliability"]["counts"][14] == 4
    assert res["diversity"] == {"disagreement": 0.0, "kl": 0.0}
    # all wrong, still confident: NLL large but finite, Brier = 2, ECE = 1
    wrong = (y + 1) % 3
    acc2 = mt.MetricAccumulator()
    acc2.update(logits, wrong)
    res2 = acc2.compute()
    assert res2["accuracy"] == 0.0 and math.isfinite(res2["nll"]) and res2["nll"] > 1e3
    assert res2["brier"] == pytest.approx(2.0) and res2["ece"] == pytest.approx(1.0)


def test_accumulator_reset_and_n():
    logits, y = _make(2, 20, 3, seed=10)
    acc = mt.MetricAccumulator()
    acc.update(logits, y)
    assert acc.n == 20
    acc.reset()
    with pytest.raises(ValueError, match="n=0"):
        acc.compute()
    acc.update(logits[:1, :5], y[:5])  # different M after reset is fine
    assert acc.compute()["n"] == 5


# ------------------------------------------------------------------------------------------------
# guard rails
# ------------------------------------------------------------------------------------------------


def test_non_finite_logits_raise_with_count():
    logits, y = _make(2, 10, 3, seed=11)
    logits[0, 0, 0] = float("nan")
    logits[1, 3, 2] = float("inf")
    with pytest.raises(ValueError, match="2 non-finite"):
        mt.combine_log_probs(logits)
    with pytest.raises(ValueError, match="2 non-finite"):
        mt.disagreement(logits)
    acc = mt.MetricAccumulator()
    acc.update(logits, y)  # deferred: no host sync per batch
    acc.update(logits, y)
    with pytest.raises(ValueError, match="4 non-finite"):
        acc.compute()


def test_shape_mismatches_raise_with_shapes():
    logits, y = _make(2, 10, 3, seed=12)
    acc = mt.MetricAccumulator()
    with pytest.raises(ValueError, match=r"\[10\].*\(2, 10, 3\).*\(9,\)"):
        acc.update(logits, y[:9])
    with pytest.raises(ValueError, match=r"\(10, 3\)"):
        acc.update(logits[0], y)
    acc.update(logits, y)
    with pytest.raises(ValueError, match=r"\(3, 10, 3\).*M=2"):
        acc.update(torch.cat([logits, logits[:1]]), y)
    with pytest.raises(ValueError, match=r"\(2, 10, 4\).*K=3"):
        acc.update(torch.randn(2, 10, 4), y)
    lp = mt.combine_log_probs(logits)
    with pytest.raises(ValueError, match=r"\(10, 3\).*\(9,\)"):
        mt.nll(lp, y[:9])
    with pytest.raises(ValueError, match="integer"):
        mt.accuracy(lp, y.double())


def test_out_of_range_targets_raise():
    logits, y = _make(2, 10, 3, seed=13)
    bad = y.clone()
    bad[0] = 3
    with pytest.raises(ValueError, match="1 value"):
        mt.nll(mt.combine_log_probs(logits), bad)
    acc = mt.MetricAccumulator()
    acc.update(logits, bad)
    with pytest.raises(ValueError, match="1 value"):
        acc.compute()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_accumulator_update_does_not_sync_on_cuda():
    logits, y = _make(3, 256, 10, seed=14, dtype=torch.float32)
    logits, y = logits.cuda(), y.cuda()
    acc = mt.MetricAccumulator()
    acc.update(logits, y)  # warm-up (first call allocates)
    torch.cuda.set_sync_debug_mode("error")
    try:
        acc.update(logits, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    res = acc.compute()
    cpu = mt.MetricAccumulator()
    cpu.update(logits.cpu(), y.cpu())
    cpu.update(logits.cpu(), y.cpu())
    assert res["nll"] == pytest.approx(cpu.compute()["nll"], rel=1e-5)


# ------------------------------------------------------------------------------------------------
# OOD
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ood_metrics_match_sklearn_and_brute_force(seed):
    rng = np.random.default_rng(seed)
    s_in = rng.normal(0.0, 1.0, 120)
    s_out = rng.normal(1.0, 1.0, 80)
    if seed == 2:  # heavy ties
        s_in, s_out = np.round(s_in), np.round(s_out)
    got = ood.ood_metrics(s_in, s_out)
    labels = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
    scores = np.r_[s_in, s_out]
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores), rel=1e-12)
    assert got["aupr"] == pytest.approx(average_precision_score(labels, scores), rel=1e-12)
    assert got["fpr_at_95_tpr"] == pytest.approx(_brute_fpr95(s_in, s_out), abs=0)
    assert set(got) == {"auroc", "aupr", "fpr_at_95_tpr"}


def test_ood_metrics_perfect_separation_and_guards():
    got = ood.ood_metrics(np.array([0.1, 0.2, 0.3]), np.array([0.9, 1.0]))
    assert got == {"auroc": 1.0, "aupr": 1.0, "fpr_at_95_tpr": 0.0}
    with pytest.raises(ValueError, match="scores_out"):
        ood.ood_metrics(np.array([0.1]), np.array([]))
    with pytest.raises(ValueError, match="1 non-finite"):
        ood.ood_metrics(np.array([0.1, np.nan]), np.array([0.2]))


def test_ood_scores():
    logits, _ = _make(3, 20, 5, seed=15)
    lp = mt.combine_log_probs(logits)
    s = ood.ood_scores(lp)
    p = _np_mean_probs(logits)
    np.testing.assert_allclose(s["max_prob"].numpy(), -p.max(1), rtol=1e-12)
    np.testing.assert_allclose(s["entropy"].numpy(), -(p * np.log(p)).sum(1), rtol=1e-10)
    # uniform is maximally uncertain; one-hot (with -inf log-probs) has zero entropy
    uni = torch.full((1, 5), -math.log(5), dtype=torch.float64)
    onehot = torch.tensor([[0.0, -math.inf, -math.inf]], dtype=torch.float64)
    assert float(ood.ood_scores(uni)["entropy"][0]) == pytest.approx(math.log(5))
    assert float(ood.ood_scores(onehot)["entropy"][0]) == 0.0
    assert float(ood.ood_scores(onehot)["max_prob"][0]) == -1.0

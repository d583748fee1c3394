"""Calibrated metrics, selective prediction, uncertainty decomposition and OOD detection by every
score, once per evaluated model from its predictions (a :class:`PredictionMetrics` group: the
temperature needs the validation split beside the test set, OOD detection the test set beside each
OOD set). Pure numpy (:mod:`..calibration`, :mod:`..selective`, :mod:`..uncertainty`): the runner
applies it after evaluating a model, ``python -m benchmark rescore`` to a record's sidecar.

Written into ``metrics.clean``:

* ``cal_nll``, ``cal_ece``, ``cal_brier``, ``temperature``: the combined prediction after
  temperature scaling (:func:`..calibration.temperature_scale`: ``T`` fitted on the validation
  split when the run has one, else test-time cross-validation, 5 seeded halvings; ``temperature``
  is the validation ``T`` or the geometric mean of the 10 cross-validated ones), and
  ``calibration``: the procedure and every fitted temperature;
* ``aurc``, ``augrc``, ``risk_at_80_coverage``, ``coverage_at_5_risk``: selective prediction
  ranked by the maximum probability (:func:`..selective.selective_metrics`);
* ``entropy``, ``expected_member_entropy``, ``mutual_information``: means over the test examples
  of the total predictive entropy, the mean member entropy (aleatoric) and their difference
  (epistemic), in nats (:func:`..uncertainty.decomposition_from_entropy`; a one-member model has
  mutual information 0).

Into ``metrics.ood.<set>`` (each evaluated OOD set): ``aupr_in`` and ``aupr_out`` for the
``max_prob`` and ``entropy`` scores (beside the evaluation's ``auroc``, ``aupr``,
``fpr_at_95_tpr``), and ``mutual_information`` (ensembles of 2+ members) with ``auroc``,
``aupr_in``, ``aupr_out`` and ``fpr_at_95_tpr`` (:func:`..uncertainty.ood_metrics`).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ..calibration import temperature_scale
from ..metric_specs import MetricSpec, PredictionMetrics, register_prediction_metrics
from ..selective import selective_metrics
from .. import uncertainty
from ..uncertainty import entropy

CAL_SPLITS, CAL_SEED = 5, 0  # test-time cross-validation: halvings and their seed (the same halves for every model of one N)


def _split(pred: Mapping[str, Any], prefix: str) -> dict[str, np.ndarray]:
    head = prefix + "/"
    return {k[len(head):]: np.asarray(v) for k, v in pred.items() if k.startswith(head) and "/" not in k[len(head):]}


def _member_entropy(split: Mapping[str, np.ndarray], members: int) -> np.ndarray | None:
    """The mean member entropy per example: stored, or (one member) the entropy of the prediction
    itself; None when it cannot be known."""
    if "member_entropy" in split:
        return np.asarray(split["member_entropy"], dtype=np.float64)
    if members == 1:
        return entropy(split["log_probs"])
    return None


def _decomposition(split: Mapping[str, np.ndarray], members: int) -> dict[str, np.ndarray] | None:
    """Total, aleatoric and epistemic uncertainty per example: from the members when they were kept
    (float64 throughout: the mutual information of nearly identical members is a small difference of
    two entropies, which float32 entropies would round away), else from the stored mean member
    entropy; None when neither is there (members dropped from a sidecar without member entropies)."""
    if "members" in split:
        return uncertainty.uncertainty_decomposition(split["members"])
    ale = _member_entropy(split, members)
    return None if ale is None else uncertainty.decomposition_from_entropy(split["log_probs"], ale, members)


def _ood_scores(split: Mapping[str, np.ndarray], members: int, with_mi: bool) -> dict[str, np.ndarray]:
    if with_mi and "members" in split:
        return uncertainty.ood_scores(split["members"])
    if with_mi:
        return uncertainty.ood_scores_from_entropy(split["log_probs"], _member_entropy(split, members), members)
    return uncertainty.ood_scores(split["log_probs"])  # one "member": maximum probability and entropy only


def calibration_for(pred: Mapping[str, Any]):
    """The :class:`..calibration.TemperatureScaling` of the clean prediction (validation temperature
    when ``val/`` is there), as the record's ``cal_*`` metrics are computed; None without ``clean/``."""
    clean, val = _split(pred, "clean"), _split(pred, "val")
    if "log_probs" not in clean or "targets" not in clean:
        return None
    has_val = "log_probs" in val and "targets" in val
    return temperature_scale(clean["log_probs"], clean["targets"], val["log_probs"] if has_val else None,
                             val["targets"] if has_val else None, n_splits=CAL_SPLITS, seed=CAL_SEED)


def compute(pred: Mapping[str, Any], members: int) -> dict[str, Any]:
    clean = _split(pred, "clean")
    if "log_probs" not in clean or "targets" not in clean:
        return {}
    lp, y = clean["log_probs"], clean["targets"]
    cal = calibration_for(pred)
    out: dict[str, Any] = {"cal_nll": cal.nll, "cal_ece": cal.ece, "cal_brier": cal.brier, "temperature": cal.temperature,
                           "calibration": {k: v for k, v in cal.as_dict().items() if k not in ("nll", "ece", "brier", "accuracy")}}
    sel = selective_metrics(lp, y)
    out.update({k: sel[k] for k in ("aurc", "augrc", "risk_at_80_coverage", "coverage_at_5_risk")})
    dec = _decomposition(clean, members)
    if dec is not None:
        out.update({"entropy": float(dec["total"].mean()), "expected_member_entropy": float(dec["aleatoric"].mean()),
                    "mutual_information": float(dec["epistemic"].mean())})
    result: dict[str, Any] = {"clean": out}
    inside = _split(pred, "ood_in") or clean
    sets = sorted({k.split("/")[1] for k in pred if k.startswith("ood/") and k.endswith("/log_probs")})
    ood: dict[str, Any] = {}
    for name in sets:
        outside, here = _split(pred, f"ood/{name}"), inside
        # mutual information for 2+ members whose members, or mean member entropies, are stored on both sides
        with_mi = members >= 2 and all("members" in s or "member_entropy" in s for s in (here, outside))
        if with_mi and ("members" in here) != ("members" in outside):  # score both sides the same way
            here, outside = ({k: v for k, v in s.items() if k != "members"} for s in (here, outside))
        s_in, s_out = _ood_scores(here, members, with_mi), _ood_scores(outside, members, with_mi)
        entry: dict[str, Any] = {}
        for score in s_in:
            res = uncertainty.ood_metrics(s_in[score], s_out[score])
            entry[score] = res if score == "mutual_information" else {"aupr_in": res["aupr_in"], "aupr_out": res["aupr_out"]}
        ood[name] = entry
    if ood:
        result["ood"] = ood
    return result


register_prediction_metrics(PredictionMetrics(
    "predictive_uncertainty", compute,
    specs=(
        MetricSpec("cal_nll", "cal. NLL", "min", "f3", description="NLL after temperature scaling (validation T, else test-time cross-validation)"),
        MetricSpec("temperature", "T", None, "f3", description="the fitted temperature (test-cv: geometric mean of the 10 folds')"),
        MetricSpec("cal_ece", "cal. ECE", "min", "f4", shown=False, description="ECE after temperature scaling"),
        MetricSpec("cal_brier", "cal. Brier", "min", "f4", shown=False, description="Brier score after temperature scaling"),
        MetricSpec("aurc", "AURC", "min", "f4", description="area under the risk-coverage curve (max probability)"),
        MetricSpec("augrc", "AUGRC", "min", "f4", shown=False, description="area under the generalized risk-coverage curve"),
        MetricSpec("risk_at_80_coverage", "Risk@80% (%)", "min", "pct", shown=False, description="selective risk at 80% coverage"),
        MetricSpec("coverage_at_5_risk", "Cov@5% (%)", "max", "pct", shown=False, description="largest coverage with selective risk <= 5%"),
        MetricSpec("entropy", "Entropy", None, "f4", shown=False, description="mean predictive entropy (total uncertainty), nats"),
        MetricSpec("expected_member_entropy", "Member entropy", None, "f4", shown=False, description="mean member entropy (aleatoric), nats"),
        MetricSpec("mutual_information", "MI", None, "f4", shown=False, description="mean mutual information (epistemic), nats"),
    ),
    description="temperature-scaled metrics, selective prediction, uncertainty decomposition, OOD detection by every score",
))

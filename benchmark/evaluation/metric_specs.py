"""What each metric is called where it appears: one :class:`MetricSpec` per metric declares its key
in a record (``metrics.clean``, each corrupted cell), the name of its mean over the corrupted cells
(``metrics.corrupted.summary``) and the leaderboard columns of both. The corrupted summary
(:func:`benchmark.evaluation.robustness.summarise`) and the leaderboard's columns read these
declarations; nothing else names a metric.

The four built-in metrics are computed by :class:`benchmark.evaluation.metrics.MetricAccumulator`
from streaming sums. A metric added later (one module in :mod:`benchmark.evaluation.extra_metrics`,
or a plug-in module) registers a spec with ``compute``: a function of the whole split's combined
log-probabilities ``[N, K]`` and targets ``[N]`` (and, with ``needs_members``, the member
log-probabilities ``[M, N, K]``) returning a float; the accumulator keeps those predictions only
when such a metric is registered.

Metrics that need more than one split or more than the combined prediction of one split (the
temperature fitted on the validation split and applied to the test set; OOD detection by mutual
information, which pairs the test set with each OOD set) are registered as a *prediction-metric
group* (:class:`PredictionMetrics`, :func:`register_prediction_metrics`): one function of the
whole evaluated model's predictions, in the layout of the record's predictions sidecar
(:mod:`benchmark.evaluation.predictions`: ``clean/log_probs``, ``val/...``, ``ood/<set>/...``),
returning a nested dict merged into the record's ``metrics`` (e.g. ``{"clean": {...}, "ood":
{"svhn": {...}}}``). The runner applies every group after evaluating a model, from the predictions
it kept; ``python -m benchmark rescore`` applies them to the sidecar
(:func:`apply_prediction_metrics`), so old records gain them without training. The scalars a group
adds to ``metrics.clean`` are declared as :class:`MetricSpec` (``group`` set), so the leaderboard
shows them like any other metric (``shown=False``: in the record and the CSV frame, not a column).

This module imports no torch: the leaderboard reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ..core.registry import Registry, import_package


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the combined prediction.

    ``key``: its name in ``metrics.clean`` and in every corrupted cell; ``label``, ``better``
    (``"max"``/``"min"``) and ``kind`` (the leaderboard's number format: ``pct``, ``f3``, ``f4``...):
    its leaderboard column; ``summary``: the name of its mean over corrupted cells (``None``: not
    summarised); ``summary_label``: that summary's column label (``None``: kept in the CSV frame,
    not shown as a column); ``compute``: see the module docstring (``None``: a built-in of the
    accumulator); ``group``: the :class:`PredictionMetrics` group that computes it once per evaluated
    model (``None``: per split); ``shown``: whether the leaderboard shows it as a column.
    """

    key: str
    label: str
    better: str | None
    kind: str
    summary: str | None = None
    summary_label: str | None = None
    compute: Callable[..., float] | None = None
    needs_members: bool = False
    description: str = ""
    group: str | None = None
    shown: bool = True

    @property
    def builtin(self) -> bool:
        """Computed by the accumulator's sums (every record has it)."""
        return self.compute is None and self.group is None


@dataclass(frozen=True)
class PredictionMetrics:
    """A group of metrics computed once per evaluated model from all its predictions.

    ``compute(predictions, members)``: ``predictions`` maps sidecar array names (``clean/log_probs``,
    ``clean/targets``, ``clean/member_entropy``, ``val/...``, ``ood/<set>/...``, ``ood_in/...``) to
    numpy arrays, ``members`` is the model's member count; it returns a nested dict merged into the
    record's ``metrics`` ({} when its inputs are absent). ``specs``: the scalars it writes into
    ``metrics.clean`` (their ``group`` is set to ``name`` on registration).
    """

    name: str
    compute: Callable[[Mapping[str, Any], int], dict[str, Any]]
    specs: tuple[MetricSpec, ...] = ()
    description: str = ""


METRICS: Registry[MetricSpec] = Registry("metric")
PREDICTION_METRICS: Registry[PredictionMetrics] = Registry("prediction-metric group")


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Register ``spec`` under ``spec.key`` (a key registered twice is an error naming it)."""
    if spec.better not in ("max", "min") and not (spec.better is None and spec.group is not None):
        raise ValueError(f"metric {spec.key!r}: better must be 'max' or 'min' (None only for a group's descriptive value), got {spec.better!r}")
    return METRICS.register(spec.key)(spec)


register_metric(MetricSpec("accuracy", "Acc (%)", "max", "pct", "cA", "cA (%)", description="top-1 accuracy of the combined prediction"))
register_metric(MetricSpec("nll", "NLL", "min", "f3", "cNLL", "cNLL", description="negative log-likelihood in nats per example"))
register_metric(MetricSpec("ece", "ECE", "min", "f4", "cECE", "cECE", description="top-label expected calibration error, 15 bins"))
register_metric(MetricSpec("brier", "Brier", "min", "f4", "cBrier", None, description="Brier score summed over classes"))


def register_prediction_metrics(group: PredictionMetrics) -> PredictionMetrics:
    """Register a prediction-metric group and its scalar metrics (a name registered twice is an error naming it)."""
    PREDICTION_METRICS.register(group.name)(group)
    for spec in group.specs:
        if spec.compute is not None:
            raise ValueError(f"metric {spec.key!r} of group {group.name!r} is computed by the group: give it no compute")
        register_metric(MetricSpec(**{**spec.__dict__, "group": group.name}))
    return group


def prediction_metric_groups() -> list[PredictionMetrics]:
    """Every registered prediction-metric group, in registration order."""
    load_metrics()
    return PREDICTION_METRICS.ordered()


def merge_metrics(metrics: dict[str, Any], updates: Mapping[str, Any]) -> None:
    """Merge ``updates`` into ``metrics`` in place: nested dicts key by key, other values replaced."""
    for key, value in updates.items():
        if isinstance(value, Mapping) and isinstance(metrics.get(key), dict):
            merge_metrics(metrics[key], value)
        else:
            metrics[key] = dict(value) if isinstance(value, Mapping) else value


def apply_prediction_metrics(metrics: dict[str, Any], predictions: Mapping[str, Any], members: int) -> list[str]:
    """Compute every prediction-metric group from ``predictions`` (sidecar layout) and merge the
    results into ``metrics`` (in place); returns the names of the groups that produced something."""
    done = []
    for group in prediction_metric_groups():
        out = group.compute(predictions, int(members))
        if out:
            merge_metrics(metrics, out)
            done.append(group.name)
    return done


def load_metrics() -> None:
    """Import the metric modules of :mod:`benchmark.evaluation.extra_metrics` (idempotent)."""
    import_package(f"{__package__}.extra_metrics")


def metric_specs() -> list[MetricSpec]:
    """Every registered metric in registration order (the built-ins first)."""
    load_metrics()
    return METRICS.ordered()


def computed_metrics() -> list[MetricSpec]:
    """The metrics computed from the collected predictions (not by the accumulator's sums)."""
    return [m for m in metric_specs() if m.compute is not None and m.group is None]


def summary_names() -> dict[str, str]:
    """metric key -> the name of its mean over corrupted cells, for every summarised metric."""
    return {m.key: m.summary for m in metric_specs() if m.summary}


def describe(spec: MetricSpec) -> dict[str, Any]:
    return {"key": spec.key, "label": spec.label, "better": spec.better, "summary": spec.summary, "description": spec.description}

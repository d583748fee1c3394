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

This module imports no torch: the leaderboard reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.registry import Registry, import_package


@dataclass(frozen=True)
class MetricSpec:
    """A metric of the combined prediction.

    ``key``: its name in ``metrics.clean`` and in every corrupted cell; ``label``, ``better``
    (``"max"``/``"min"``) and ``kind`` (the leaderboard's number format: ``pct``, ``f3``, ``f4``...):
    its leaderboard column; ``summary``: the name of its mean over corrupted cells (``None``: not
    summarised); ``summary_label``: that summary's column label (``None``: kept in the CSV frame,
    not shown as a column); ``compute``: see the module docstring (``None``: a built-in of the
    accumulator).
    """

    key: str
    label: str
    better: str
    kind: str
    summary: str | None = None
    summary_label: str | None = None
    compute: Callable[..., float] | None = None
    needs_members: bool = False
    description: str = ""


METRICS: Registry[MetricSpec] = Registry("metric")


def register_metric(spec: MetricSpec) -> MetricSpec:
    """Register ``spec`` under ``spec.key`` (a key registered twice is an error naming it)."""
    if spec.better not in ("max", "min"):
        raise ValueError(f"metric {spec.key!r}: better must be 'max' or 'min', got {spec.better!r}")
    return METRICS.register(spec.key)(spec)


register_metric(MetricSpec("accuracy", "Acc (%)", "max", "pct", "cA", "cA (%)", description="top-1 accuracy of the combined prediction"))
register_metric(MetricSpec("nll", "NLL", "min", "f3", "cNLL", "cNLL", description="negative log-likelihood in nats per example"))
register_metric(MetricSpec("ece", "ECE", "min", "f4", "cECE", "cECE", description="top-label expected calibration error, 15 bins"))
register_metric(MetricSpec("brier", "Brier", "min", "f4", "cBrier", None, description="Brier score summed over classes"))


def load_metrics() -> None:
    """Import the metric modules of :mod:`benchmark.evaluation.extra_metrics` (idempotent)."""
    import_package(f"{__package__}.extra_metrics")


def metric_specs() -> list[MetricSpec]:
    """Every registered metric in registration order (the built-ins first)."""
    load_metrics()
    return METRICS.ordered()


def computed_metrics() -> list[MetricSpec]:
    """The metrics computed from the collected predictions (not by the accumulator's sums)."""
    return [m for m in metric_specs() if m.compute is not None]


def summary_names() -> dict[str, str]:
    """metric key -> the name of its mean over corrupted cells, for every summarised metric."""
    return {m.key: m.summary for m in metric_specs() if m.summary}


def describe(spec: MetricSpec) -> dict[str, Any]:
    return {"key": spec.key, "label": spec.label, "better": spec.better, "summary": spec.summary, "description": spec.description}

"""Metrics beyond the accumulator's built-ins, one module each: each registers a
:class:`benchmark.evaluation.metric_specs.MetricSpec` with a ``compute`` function (imported by
:func:`benchmark.evaluation.metric_specs.load_metrics`)."""

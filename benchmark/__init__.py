"""plures benchmark harness: data, backbones, the method contract, training,
evaluation, metrics, cost accounting, run records and leaderboards."""

__version__ = "0.1.0"

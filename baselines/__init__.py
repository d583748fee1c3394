"""Baseline methods: deterministic, BatchEnsemble, MC dropout, deep ensembles, and
non-overlapping subnetwork ensembles. Importing this package registers every method module in it."""

from benchmark.core.registry import import_submodules

import_submodules(__name__, __path__)

"""Evaluation: a network's metrics on a split (:mod:`.evaluate`, :mod:`.metrics`, declared in
:mod:`.metric_specs`), on every corrupted cell (:mod:`.robustness`), on OOD sets (:mod:`.ood`), and
its cost (:mod:`.cost`)."""

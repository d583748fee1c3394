"""Tools beside the product, not part of its layers: the perf harness (:mod:`.perf`), corruption
timing (:mod:`.perf_corruptions`) and a one-machine SLURM cluster for trying sweeps and for the
tests (:mod:`.slurm_local`). Nothing in the harness imports them."""

"""Training: the loop, checkpoints and resume (:mod:`.train`), data-parallel training (:mod:`.distributed`)."""

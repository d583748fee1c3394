"""Foundations: configs (:mod:`.config`), runtime (seeds, autocast, stop requests, device and
environment: :mod:`.runtime`), atomic files (:mod:`.io`), registries (:mod:`.registry`), progress
bars (:mod:`.progress`), the host allocator (:mod:`.allocator`). They import no other part of plures."""

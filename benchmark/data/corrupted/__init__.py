"""Corrupted test sets: the interface (:mod:`.base`) and one module per source: the CIFAR-C files
(released or regenerated, :mod:`.cifar_c`) and ImageNet-C (released folders or regenerated on the
fly, :mod:`.imagenet_c`). Adding a corrupted source is one module here that registers a
:class:`.base.CorruptedSource`."""

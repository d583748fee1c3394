"""The deterministic single model: the reference point (one member, one forward pass)."""

from __future__ import annotations

from benchmark.methods import Method, register_method


@register_method("deterministic")
class Deterministic(Method):
    """One backbone, trained once; its logits are member logits ``[1, B, K]``.

    Everything is the base class's default: build wraps the backbone, targets are the batch's.
    """

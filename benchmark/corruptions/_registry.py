"""The corruption registry: name -> ``fn(x, param, generator, profile)``.

``x`` is float [N, 3, H, W] in [0, 1] (float64 for ``FLOAT64_CORRUPTIONS``, else float32); ``param`` the severity's constant from
:mod:`benchmark.corruptions.params`; the result is float [N, 3, H, W], clipped to [0, 1]
and truncated to uint8 by :func:`benchmark.corruptions.corrupt`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from benchmark.core.registry import Registry

CorruptionFn = Callable[[torch.Tensor, Any, torch.Generator, str], torch.Tensor]

CORRUPTION_FNS: Registry[CorruptionFn] = Registry("corruption")

"""Noise corruptions: gaussian, shot (Poisson), impulse (salt and pepper), speckle.

Element-wise, so fully vectorised; the random draws use the caller's ``torch.Generator``.
"""

from __future__ import annotations

import torch

from benchmark.corruptions._registry import CORRUPTION_FNS


@CORRUPTION_FNS.register("gaussian_noise")
def gaussian_noise(x: torch.Tensor, sigma: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """x + N(0, sigma^2) per pixel and channel (x in [0, 1])."""
    return x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


@CORRUPTION_FNS.register("shot_noise")
def shot_noise(x: torch.Tensor, lam: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """Poisson(x * lam) / lam per pixel and channel."""
    return torch.poisson(x.to(torch.float64) * lam, generator=g).div_(lam).to(x.dtype)


@CORRUPTION_FNS.register("impulse_noise")
def impulse_noise(x: torch.Tensor, amount: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """skimage ``random_noise(mode="s&p")``: each value replaced with prob ``amount``, half 1, half 0."""
    hit = torch.rand(x.shape, generator=g) <= amount
    salt = torch.rand(x.shape, generator=g) <= 0.5
    out = torch.where(hit & salt, torch.ones_like(x), x)
    return torch.where(hit & ~salt, torch.zeros_like(x), out)


@CORRUPTION_FNS.register("speckle_noise")
def speckle_noise(x: torch.Tensor, sigma: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """x + x * N(0, sigma^2)."""
    return x + x * (sigma * torch.randn(x.shape, generator=g, dtype=x.dtype))

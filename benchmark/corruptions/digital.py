"""Digital corruptions: contrast, brightness, saturate, jpeg_compression, pixelate, elastic_transform.

Batched in torch except JPEG (PIL per image, as the original). Departures:

- pixelate: PIL's BOX resize (down to ``int(size*c)``, back up) is applied as two
  separable resampling matrices built with PIL's tap rule (a source pixel counts when its
  centre falls inside the box), with PIL's rounding to uint8 after each 1-D pass; PIL's
  22-bit fixed-point weights are not emulated, so exact .5 ties can differ by one level.
- elastic_transform: OpenCV's warpAffine (bilinear, reflect-101) and scipy's
  map_coordinates (order 1, reflect) become two ``grid_sample`` calls with matching
  border rules; OpenCV's 1/32-pixel quantisation of sample positions is not emulated.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.corruptions import _ops
from benchmark.corruptions._registry import CORRUPTION_FNS


@CORRUPTION_FNS.register("contrast")
def contrast(x: torch.Tensor, c: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """(x - mean) * c + mean with per-image, per-channel means."""
    means = x.to(torch.float64).mean((2, 3), keepdim=True)
    return ((x - means) * c + means).to(x.dtype)


@CORRUPTION_FNS.register("brightness")
def brightness(x: torch.Tensor, c: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """HSV value + c (clipped to 1), hue and saturation kept: skimage's rgb2hsv -> hsv2rgb round
    trip with the same arithmetic (so exact levels truncate as in the original)."""
    hsv = _ops.rgb_to_hsv(x.to(torch.float64))
    hsv[:, 2] = (hsv[:, 2] + c).clamp(0, 1)
    return _ops.hsv_to_rgb(hsv).to(x.dtype)


@CORRUPTION_FNS.register("saturate")
def saturate(x: torch.Tensor, p: tuple, g: torch.Generator, profile: str) -> torch.Tensor:
    """HSV saturation S * a + b (clipped to [0, 1])."""
    a, b = p
    hsv = _ops.rgb_to_hsv(x.to(torch.float64))
    hsv[:, 1] = (hsv[:, 1] * a + b).clamp(0, 1)
    return _ops.hsv_to_rgb(hsv).to(x.dtype)


@CORRUPTION_FNS.register("jpeg_compression")
def jpeg_compression(x: torch.Tensor, quality: int, g: torch.Generator, profile: str) -> torch.Tensor:
    """PIL JPEG encode/decode at ``quality`` (per image)."""
    arr = torch.round(x.clamp(0, 1) * 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(arr)
    for i, im in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, "JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as dec:
            out[i] = np.asarray(dec.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(x.dtype) / 255.0


def box_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """PIL BOX resampling along one axis as a float64 [out_size, in_size] matrix."""
    scale = in_size / out_size
    fscale = max(scale, 1.0)
    support = 0.5 * fscale
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    for o in range(out_size):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        for i in range(lo, hi):
            t = (i - center + 0.5) / fscale
            if -0.5 < t <= 0.5:
                mat[o, i] = 1.0
        total = mat[o].sum()
        if total > 0:
            mat[o] /= total
    return mat


def _pil_round(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5).clamp(0, 255)


@CORRUPTION_FNS.register("pixelate")
def pixelate(x: torch.Tensor, c: float, g: torch.Generator, profile: str) -> torch.Tensor:
    """BOX downsample to ``int(size * c)`` and BOX upsample back (PIL order: width, then height)."""
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    y = torch.round(x.to(torch.float64).clamp(0, 1) * 255)
    for (a_in, a_out) in (((h, w), (sh, sw)), ((sh, sw), (h, w))):
        mw = box_resize_matrix(a_in[1], a_out[1])
        mh = box_resize_matrix(a_in[0], a_out[0])
        if a_in[1] != a_out[1]:
            y = _pil_round(y @ mw.T)
        if a_in[0] != a_out[0]:
            y = _pil_round(mh @ y)
    return (y / 255.0).to(x.dtype)


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """Per-image 2x3 affine maps sending 3 points ``src`` [3, 2] onto ``dst`` [N, 3, 2] (x, y)."""
    n = dst.shape[0]
    a = torch.cat([src, torch.ones(3, 1, dtype=src.dtype)], 1)  # [3, 3]
    sol = torch.linalg.solve(a.expand(n, 3, 3), dst)  # [N, 3, 2]: a @ sol = dst
    return sol.transpose(1, 2)  # [N, 2, 3]


def _sample(x: torch.Tensor, px: torch.Tensor, py: torch.Tensor, align_corners: bool) -> torch.Tensor:
    """Bilinear sample ``x`` [N, C, H, W] at pixel coordinates px, py [N, H, W] with reflection."""
    h, w = x.shape[-2:]
    if align_corners:
        gx, gy = 2 * px / max(w - 1, 1) - 1, 2 * py / max(h - 1, 1) - 1
    else:
        gx, gy = (2 * px + 1) / w - 1, (2 * py + 1) / h - 1
    grid = torch.stack([gx, gy], -1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=align_corners)


@CORRUPTION_FNS.register("elastic_transform")
def elastic_transform(x: torch.Tensor, p: tuple, g: torch.Generator, profile: str) -> torch.Tensor:
    """Random affine (3 points jittered by U(-j, j) px) then a smooth displacement field.

    Field: U(-1, 1) noise blurred (Gaussian sigma, truncate 3, reflect) times alpha, in pixels.
    """
    alpha, sigma, jitter = p
    n, _, h, w = x.shape
    centre = torch.tensor([float(w // 2), float(h // 2)], dtype=torch.float64)
    sq = float(min(h, w) // 3)
    src = torch.stack([centre + sq, torch.stack([centre[0] + sq, centre[1] - sq]), centre - sq])
    dst = src + _ops.uniform((n, 3, 2), -jitter, jitter, g)
    m = _affine_from_points(src, dst)  # dst = M @ [src, 1]
    inv = torch.linalg.inv(torch.cat([m, torch.tensor([0.0, 0, 1], dtype=torch.float64).expand(n, 1, 3)], 1))
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    px = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None]
    py = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None]
    y = _sample(x, px, py, align_corners=True)  # reflect-101 border, as cv2.warpAffine
    noise = _ops.uniform((n, 2, h, w), -1.0, 1.0, g)
    field = _ops.gaussian_blur(noise, sigma, truncate=3.0, mode="symmetric") * alpha
    dx, dy = field[:, 0], field[:, 1]
    return _sample(y, xx + dx, yy + dy, align_corners=False)  # scipy "reflect" border

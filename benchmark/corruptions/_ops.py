"""Batched image operations shared by the corruptions (torch, CPU-friendly).

Layouts: ``x`` is float ``[N, C, H, W]`` with values in [0, 1] unless said otherwise.
Border modes follow the libraries the original script called:

- ``"symmetric"``: scipy/skimage ``mode="reflect"`` (edge pixel repeated: ``b a | a b``);
- ``"reflect101"``: OpenCV's default ``BORDER_REFLECT_101`` (``c b | a b c``);
- ``"edge"``: scipy ``"nearest"`` / ImageMagick's edge virtual pixels.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

BORDER_MODES = ("symmetric", "reflect101", "edge")


def border_index(n: int, pad: int, mode: str) -> torch.Tensor:
    """Indices into a length-``n`` axis padded by ``pad`` on each side: int64 ``[n + 2*pad]``.

    Handles pads wider than the axis (repeated reflections), as scipy does.
    """
    i = torch.arange(-pad, n + pad)
    if mode == "edge" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect101":
        period = 2 * n - 2
        i = i % period
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"unknown border mode {mode!r}; valid choices: {', '.join(BORDER_MODES)}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two axes of ``x`` [..., H, W] by index gathering (any pad width)."""
    h, w = x.shape[-2:]
    if pad_h:
        x = x.index_select(-2, border_index(h, pad_h, mode))
    if pad_w:
        x = x.index_select(-1, border_index(w, pad_w, mode))
    return x


def conv_matrix(n: int, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """1-D correlation with an odd ``kernel`` and border ``mode`` as a float64 [n, n] matrix."""
    k = kernel.numel()
    idx = border_index(n, k // 2, mode)  # padded position p -> source index
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)[:, None].expand(n, k)
    cols = idx[rows + torch.arange(k)[None, :]]  # [n, k]: the source of tap t for output row i
    # one accumulating scatter; the taps of each entry are added in tap order, as a loop over t would
    m.index_put_((rows.reshape(-1), cols.reshape(-1)), kernel.to(torch.float64).expand(n, k).reshape(-1), accumulate=True)
    return m


def use_conv_matrices(h: int, w: int, kh: int, kw: int, double: bool = False) -> bool:
    """Whether :func:`conv_separable` runs as two dense [n, n] matrix products (the same padded
    correlation; float sums in another order, equal to ~1e-15) rather than two 1-D ``conv2d`` passes.

    Small images (side <= 64), and kernels longer than about a sixteenth of the side: a product
    costs ``h*w*(h+w)`` multiply-adds per channel whatever the kernel, the convolution
    ``(h+2r)*w*kh + h*w*kw`` plus an im2col buffer of that size, and float64 takes the slow path of
    CPU ``conv2d``. Measured on one thread at 224 px (3 channels): 9 taps 26 ms as a convolution,
    32 ms as matrices; 25 taps 60 vs 31 ms (float64: 140 vs 59); 49 taps 103 vs 28 ms (float64: 612
    vs 77); the ImageNet elastic transform's severity-1 field (a 1025-tap Gaussian, float64) took
    about 90 s per image as a convolution. In float64 (``double``) products win from about 7 taps.
    """
    return max(h, w) <= 64 or kh + kw > max(h, w) / 8 or (double and kh + kw > 12)


def conv_separable(x: torch.Tensor, k_h: torch.Tensor, k_w: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` [N, C, H, W] with ``k_h`` (vertical) then ``k_w`` (horizontal).

    Kernels are odd-length 1-D tensors; borders padded with ``mode``.
    """
    n, c, h, w = x.shape
    if use_conv_matrices(h, w, k_h.numel(), k_w.numel(), x.dtype == torch.float64):
        mh = conv_matrix(h, k_h, mode).to(x.dtype)
        mw = conv_matrix(w, k_w, mode).to(x.dtype)
        return mh @ x @ mw.T
    rh, rw = k_h.numel() // 2, k_w.numel() // 2
    y = pad2d(x.reshape(n * c, 1, h, w), rh, rw, mode)
    y = F.conv2d(y, k_h.to(x.dtype).view(1, 1, -1, 1))
    y = F.conv2d(y, k_w.to(x.dtype).view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def conv2d_same(x: torch.Tensor, kernel: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of ``x`` [N, C, H, W] with one odd-sized 2-D ``kernel`` [kh, kw]."""
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    y = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, mode)
    if x.dtype == torch.float64 and max(h, w) > 64 and kh * kw > 9:
        # float64 conv2d takes CPU's slow im2col path (a 23x23 disk on 224 px: seconds per image);
        # correlate through the FFT of the padded image instead, as OpenCV's filter2D does for
        # large kernels: no wrap-around reaches the kept [h, w] corner
        ph, pw = y.shape[-2:]
        kp = torch.zeros(ph, pw, dtype=x.dtype)
        kp[:kh, :kw] = kernel.to(x.dtype)
        spec = torch.fft.rfft2(y) * torch.conj(torch.fft.rfft2(kp))
        return torch.fft.irfft2(spec, s=(ph, pw))[..., :h, :w].reshape(n, c, h, w)
    y = F.conv2d(y, kernel.to(x.dtype).view(1, 1, kh, kw))
    return y.reshape(n, c, h, w)


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> torch.Tensor:
    """scipy.ndimage's Gaussian: radius ``int(truncate*sigma + 0.5)``, normalised; float64 [2r+1]."""
    if sigma <= 1e-15:
        return torch.ones(1, dtype=torch.float64)
    r = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, *, truncate: float = 4.0, mode: str = "edge") -> torch.Tensor:
    """skimage.filters.gaussian per channel (its default border is scipy ``"nearest"`` = edge)."""
    k = gaussian_kernel1d(sigma, truncate)
    if k.numel() == 1:
        return x
    return conv_separable(x, k, k, mode)


def box_blur3(x: torch.Tensor) -> torch.Tensor:
    """cv2.blur(x, (3, 3)): 3x3 mean with BORDER_REFLECT_101."""
    k = torch.full((3,), 1.0 / 3.0, dtype=torch.float64)
    return conv_separable(x, k, k, "reflect101")


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """Anti-aliased disk (defocus) kernel as in Hendrycks' ``disk``: [k, k], sums to 1 up to float32.

    A binary disk on a 17x17 grid (or (2r+1)^2 when r > 8), then a 3x3 (5x5) Gaussian of
    sigma ``alias_blur`` applied with OpenCV's reflect-101 border. Computed in float32 as the
    original (``dtype=np.float32``, cv2.GaussianBlur) did, returned as float64: its weights then
    equal the original's to ~1e-13 (measured) and sum to 1 only up to float32 rounding (e.g.
    1 + 1.8e-8 for radius 1), which decides how exact levels truncate.
    """
    if radius <= 8:
        half, ksize = 8, 3
    else:
        half, ksize = int(radius), 5
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    d = ((xx**2 + yy**2) <= radius**2).to(torch.float32)
    d = d / d.sum()
    s = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(s**2) / (2 * alias_blur**2))
    g = (g / g.sum()).to(torch.float32)
    return conv_separable(d[None, None], g, g, "reflect101")[0, 0].to(torch.float64)


def to_chw(images: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [0, 1] (``k / 255`` computed in ``dtype``, as
    ``np.array(x) / 255.`` does in float64)."""
    return images.permute(0, 3, 1, 2).contiguous().to(dtype).div_(255.0)


def quantize_trunc(x: torch.Tensor) -> torch.Tensor:
    """Float in [0, 1] -> the levels ``np.uint8(np.clip(x, 0, 1) * 255)`` gives, as float [0, 255].

    Exactly the original conversion, in ``x``'s own dtype: clip, multiply by 255, truncate. A value
    a rounding error below a level (e.g. 50.99999999999999) drops to the level below, as it did in
    Hendrycks' scripts. (Until corruptions version 2 a 1e-3 tolerance was added before truncating;
    measured against the original recipes on 100 Tiny-ImageNet val images, it put 3-14% of the
    pixels of brightness, saturate and defocus blur at some severities one level above the
    original's values, and no pixel below.)
    """
    return torch.floor(x.clamp(0.0, 1.0) * 255.0)


def to_uint8_hwc(x: torch.Tensor) -> torch.Tensor:
    """float [N, 3, H, W] in [0, 1] -> uint8 [N, H, W, 3], truncating like ``np.uint8``."""
    return quantize_trunc(x).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV RGB2GRAY weights: [N, 3, H, W] -> [N, 1, H, W]."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """skimage.color.rgb2hsv on [N, 3, H, W] in [0, 1]; hue in [0, 1)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    delta = v - mn
    s = torch.where(v > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    # skimage assigns red, then green, then blue: on ties the last one (blue) wins
    h = torch.where(v == b, 4.0 + (r - g) / safe, torch.where(v == g, 2.0 + (b - r) / safe, (g - b) / safe))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb on [N, 3, H, W]."""
    h, s, v = hsv.unbind(1)
    h6 = h * 6.0
    i = torch.floor(h6)
    f = h6 - i
    i = i.to(torch.int64) % 6
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros(hsv.shape, dtype=hsv.dtype)
    for k, (rr, gg, bb) in enumerate(choices):
        m = i == k
        out[:, 0] = torch.where(m, rr, out[:, 0])
        out[:, 1] = torch.where(m, gg, out[:, 1])
        out[:, 2] = torch.where(m, bb, out[:, 2])
    return out


def zoom_axis_weights(size: int, zoom: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hendrycks' ``clipped_zoom`` along one axis as linear-interpolation taps.

    Centre crop of ``ceil(size/zoom)`` pixels, scipy.ndimage.zoom(order=1) to
    ``round(crop*zoom)`` pixels (corner-aligned), centre trim back to ``size``.
    Returns (i0, i1, frac): output pixel j = (1-frac[j]) * in[i0[j]] + frac[j] * in[i1[j]].
    """
    crop = int(math.ceil(size / zoom))
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    trim = (out - size) // 2
    j = torch.arange(trim, trim + size, dtype=torch.float64)
    pos = j * (crop - 1) / (out - 1) if out > 1 else torch.zeros_like(j)
    pos = pos.clamp(0, crop - 1)
    i0 = torch.floor(pos).to(torch.int64).clamp(max=crop - 1)
    frac = pos - i0
    i1 = (i0 + 1).clamp(max=crop - 1)
    return i0 + top, i1 + top, frac


def zoom_matrix(size: int, zoom: float) -> torch.Tensor:
    """``clipped_zoom`` along one axis as a float64 [size, size] interpolation matrix."""
    i0, i1, f = zoom_axis_weights(size, zoom)
    a = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size)
    a.index_put_((rows, i0), 1 - f, accumulate=True)
    a.index_put_((rows, i1), f, accumulate=True)
    return a


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """Zoom the centre of every image of ``x`` [N, C, H, W] (square) by ``zoom`` >= 1."""
    size = x.shape[-1]
    if size <= 64:  # small images: two small matmuls beat gathers
        a = zoom_matrix(size, zoom).to(x.dtype)
        return a @ x @ a.T
    i0, i1, f = zoom_axis_weights(size, zoom)
    f = f.to(x.dtype)
    y = x.index_select(-2, i0) * (1 - f).view(-1, 1) + x.index_select(-2, i1) * f.view(-1, 1)
    return y.index_select(-1, i0) * (1 - f) + y.index_select(-1, i1) * f


def plasma_fractal(n: int, mapsize: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """Batched diamond-square height maps in [0, 1]: float64 [n, mapsize, mapsize].

    Same recursion as Hendrycks' ``plasma_fractal`` (wibble starts at 100, offsets
    ``wibble * U(-wibble, wibble)``, wibble divided by ``decay`` per level); one map per image.
    """
    if mapsize & (mapsize - 1):
        raise ValueError(f"plasma mapsize must be a power of two, got {mapsize}")
    a = torch.zeros(n, mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(arr: torch.Tensor) -> torch.Tensor:
        u = torch.rand(arr.shape, generator=generator, dtype=torch.float64) * 2 - 1
        return arr / 4 + wibble * (u * wibble)

    while step >= 2:
        half = step // 2
        corners = a[:, 0::step, 0::step]
        sq = corners + torch.roll(corners, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        a[:, half::step, half::step] = wibbled(sq)
        dr = a[:, half::step, half::step]
        ul = a[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        a[:, 0::step, half::step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        a[:, half::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= decay
    a = a - a.amin((1, 2), keepdim=True)
    return a / a.amax((1, 2), keepdim=True)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angles_deg: torch.Tensor) -> torch.Tensor:
    """One-sided line blur like ImageMagick's ``-motion-blur radius x sigma + angle``.

    ``x`` [N, C, H, W]; ``angles_deg`` [N] (one angle per image). Kernel width 2*ceil(r)+1,
    tap i weighted exp(-i^2 / 2 sigma^2) (normalised) and sampled at the pixel
    i * (cos a, sin a) away, rounded half up; edge pixels repeat past the border.
    """
    n, c, h, w = x.shape
    width = 2 * int(math.ceil(radius)) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    a = torch.deg2rad(angles_deg.to(torch.float64))
    off_x = torch.ceil(i[None] * torch.cos(a)[:, None] - 0.5).to(torch.int64)  # [N, width]
    off_y = torch.ceil(i[None] * torch.sin(a)[:, None] - 0.5).to(torch.int64)
    rows = torch.arange(h)
    cols = torch.arange(w)
    flat = x.reshape(n, c, h * w)
    out = torch.zeros_like(x)
    for t in range(width):
        rr = (rows[None, :] + off_y[:, t : t + 1]).clamp(0, h - 1)  # [N, H]
        cc = (cols[None, :] + off_x[:, t : t + 1]).clamp(0, w - 1)  # [N, W]
        idx = (rr[:, :, None] * w + cc[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
        out += k[t] * flat.gather(2, idx).reshape(n, c, h, w)
    return out


def uniform(shape: tuple[int, ...], low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """U(low, high) float64 samples."""
    return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low


def numpy_seed(generator: torch.Generator) -> np.random.Generator:
    """A numpy Generator seeded from ``generator`` (for the few numpy-side loops)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    return np.random.default_rng(seed)

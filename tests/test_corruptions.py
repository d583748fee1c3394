"""Corruption functions: API, shapes, determinism, severity behaviour, fidelity to the originals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.corruptions import (
    ALL_CORRUPTIONS,
    BENCHMARK_CORRUPTIONS,
    CORRUPTION_SETS,
    DETERMINISTIC_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    _ops,
    blur,
    corrupt,
)
from benchmark.core.registry import UnknownNameError


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth-ish random uint8 [n, size, size, 3] (upsampled noise plus fine noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, size // 8, size // 8, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    x = (0.85 * x + 0.15 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


IMGS = _images(4)


def test_constants() -> None:
    assert len(BENCHMARK_CORRUPTIONS) == 15 and BENCHMARK_CORRUPTIONS[0] == "gaussian_noise"
    assert BENCHMARK_CORRUPTIONS[-1] == "jpeg_compression"
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert ALL_CORRUPTIONS == BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
    assert CORRUPTION_SETS["benchmark15"] == BENCHMARK_CORRUPTIONS
    ub17 = CORRUPTION_SETS["cifar100-ub17"]
    assert len(ub17) == 17 and "motion_blur" not in ub17 and "snow" not in ub17 and "saturate" in ub17
    assert CORRUPTION_SETS["all19"] == ALL_CORRUPTIONS


@pytest.mark.parametrize("name", ALL_CORRUPTIONS)
def test_every_severity_runs_and_is_reproducible(name: str) -> None:
    for s in range(1, 6):
        a = corrupt(IMGS, name, s, generator=_gen(7))
        assert a.shape == IMGS.shape and a.dtype == torch.uint8
        b = corrupt(IMGS, name, s, generator=_gen(7))
        assert torch.equal(a, b), f"{name} s{s} not reproducible"
        if name not in DETERMINISTIC_CORRUPTIONS:
            c = corrupt(IMGS, name, s, generator=_gen(8))
            assert not torch.equal(a, c), f"{name} s{s} ignores the generator"
    assert not torch.equal(corrupt(IMGS, name, 5, generator=_gen(7)), IMGS)


@pytest.mark.parametrize(
    "name",
    ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur", "zoom_blur",
     "gaussian_blur", "contrast", "brightness", "pixelate", "fog"],
)
def test_distortion_grows_with_severity(name: str) -> None:
    # motion_blur is left out: severities 3 and 4 (radius 6 vs 8, sigma 2) differ only in taps weighted < 1e-9.
    x = _images(16, seed=1)
    d = [(corrupt(x, name, s, generator=_gen(0)).float() - x.float()).abs().mean().item() for s in range(1, 6)]
    assert all(a < b for a, b in zip(d, d[1:])), (name, d)


def test_truncation_not_rounding() -> None:
    x = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    x[0, 0, :] = 255  # half 0, half 255: mean 127.5 per channel
    y = corrupt(x, "contrast", 1, generator=_gen())  # factor .75: 31.875 and 223.125
    assert set(y.unique().tolist()) == {31, 223}


def test_identity_levels_survive_the_round_trip() -> None:
    # k / 255 * 255 is exactly k in float32 and float64, so an unchanged image comes back unchanged.
    # (Blurs of a constant image need not: the originals themselves drop a level where their float
    # sums end a rounding error below it, and we truncate exactly as they did.)
    x = torch.arange(256, dtype=torch.uint8).view(256, 1, 1, 1).expand(256, 8, 8, 3).contiguous()
    for dtype in (torch.float32, torch.float64):
        assert torch.equal(_ops.to_uint8_hwc(_ops.to_chw(x, dtype)), x)
    for name in ("pixelate", "contrast"):
        assert torch.equal(corrupt(x[:1], name, 1, generator=_gen()), x[:1]), name  # level 0 stays 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_uint8_conversion_is_the_original_one(dtype) -> None:
    # the original's conversion: np.uint8(np.clip(x, 0, 1) * 255), no tolerance, in the array's dtype
    rng = np.random.default_rng(0)
    levels = np.arange(256, dtype=np.float64)
    x = np.concatenate([
        rng.uniform(-0.2, 1.2, 3000),
        levels / 255, (levels - 1e-9) / 255, (levels + 1e-9) / 255, np.nextafter(levels / 255, -1),
        (levels / 255 + 0.2), [0.0, 1.0, -0.0, 1.0 + 1e-12, 254.99998 / 255],
    ]).astype(dtype)
    x = x[: len(x) // 3 * 3].reshape(1, 3, 1, -1)
    ours = _ops.to_uint8_hwc(torch.from_numpy(x)).numpy().transpose(0, 3, 1, 2)
    ref = np.uint8(np.clip(x, 0, 1) * 255)
    assert ours.dtype == np.uint8 and np.array_equal(ours, ref)
    assert _ops.to_uint8_hwc(torch.tensor([[[[50.99999999 / 255]]] * 3], dtype=torch.float64).view(1, 3, 1, 1)).max() == 50


@pytest.mark.parametrize("profile,severity", [("cifar", 4), ("tinyimagenet", 2), ("tinyimagenet", 5)])
def test_brightness_largest_channel_truncates_as_the_original(profile: str, severity: int) -> None:
    # skimage's hsv2rgb returns V' = clip(V + c) itself for each pixel's largest channel, so the
    # original's value there is np.uint8(clip(max / 255. + c, 0, 1) * 255) in float64 (c = .2 at
    # cifar s4 and tiny s2: V + c lands on an exact level, where the old 1e-3 tolerance went one above)
    from benchmark.corruptions.params import PARAMS

    c = PARAMS[profile]["brightness"][severity - 1]
    x = _images(8, 32, seed=11)
    y = corrupt(x, "brightness", severity, generator=_gen(), profile=profile).numpy().astype(int)
    xn = x.numpy()
    k = xn.argmax(-1)[..., None]
    expected = np.uint8(np.clip(np.take_along_axis(xn, k, -1) / 255.0 + c, 0, 1) * 255)
    assert np.array_equal(np.take_along_axis(y, k, -1), expected.astype(int))


@pytest.mark.parametrize(
    "name,severity",
    [("gaussian_noise", 5), ("defocus_blur", 5), ("glass_blur", 2), ("motion_blur", 3), ("zoom_blur", 1),
     ("fog", 3), ("frost", 2), ("snow", 1), ("elastic_transform", 4), ("pixelate", 2), ("jpeg_compression", 1),
     ("spatter", 1), ("spatter", 5), ("saturate", 4)],
)
def test_imagenet_profile_224(name: str, severity: int) -> None:
    x = _images(1, 224, seed=2)
    y = corrupt(x, name, severity, generator=_gen(), profile="imagenet")
    assert y.shape == (1, 224, 224, 3) and y.dtype == torch.uint8
    assert not torch.equal(y, x)


def test_imagenet_constants_are_stronger() -> None:
    x = _images(2, 32, seed=3)
    c = corrupt(x, "gaussian_noise", 1, generator=_gen(), profile="cifar")
    i = corrupt(x, "gaussian_noise", 1, generator=_gen(), profile="imagenet")
    assert (i.float() - x.float()).abs().mean() > (c.float() - x.float()).abs().mean()


def test_bad_inputs_name_the_value_and_choices() -> None:
    with pytest.raises(UnknownNameError, match="gaussian_nosie.*valid choices: .*brightness"):
        corrupt(IMGS, "gaussian_nosie", 1, generator=_gen())
    for bad in (0, 6, "3", 2.0, True):
        with pytest.raises(ValueError, match="severity.*1, 2, 3, 4, 5"):
            corrupt(IMGS, "fog", bad, generator=_gen())  # type: ignore[arg-type]
    with pytest.raises(UnknownNameError, match="'tiny'.*cifar, imagenet"):
        corrupt(IMGS, "fog", 1, generator=_gen(), profile="tiny")
    with pytest.raises(ValueError, match="uint8"):
        corrupt(IMGS.float(), "fog", 1, generator=_gen())
    with pytest.raises(ValueError, match=r"\[N, H, W, 3\]"):
        corrupt(IMGS.permute(0, 3, 1, 2).contiguous(), "fog", 1, generator=_gen())


def test_glass_d1_gather_equals_sequential_scan() -> None:
    arr = _images(3, seed=4)
    g = _gen(5)
    fast = blur._glass_shuffle_d1(arr, g)
    d = torch.randint(-1, 1, (3, 30, 30, 2), generator=_gen(5)).numpy()
    ref = arr.numpy().copy()
    for h in range(31, 1, -1):  # the original scan order: copy x[h+dy, w+dx] into x[h, w]
        for w in range(31, 1, -1):
            for n in range(3):
                dx, dy = d[n, h - 2, w - 2]
                ref[n, h, w] = ref[n, h + dy, w + dx]
    assert np.array_equal(fast.numpy(), ref)


def test_pixelate_matches_pil_box() -> None:
    x = _images(3, seed=6).numpy()
    for s, c in enumerate([0.95, 0.9, 0.85, 0.75, 0.65], start=1):
        ref = np.stack([np.asarray(Image.fromarray(im).resize((int(32 * c),) * 2, Image.BOX).resize((32, 32), Image.BOX))
                        for im in x])
        assert np.array_equal(corrupt(torch.from_numpy(x), "pixelate", s, generator=_gen()).numpy(), ref)


def test_jpeg_matches_pil() -> None:
    import io

    x = _images(2, seed=7).numpy()
    buf = io.BytesIO()
    Image.fromarray(x[1]).save(buf, "JPEG", quality=58)
    ref = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert np.array_equal(corrupt(torch.from_numpy(x), "jpeg_compression", 3, generator=_gen()).numpy()[1], ref)


def test_blur_and_zoom_match_scipy() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    x = _images(2, seed=8)
    xf = x.numpy().astype(np.float64) / 255
    ref = np.stack([scipy_ndimage.gaussian_filter(im, sigma=(1.0, 1.0, 0), mode="nearest") for im in xf])
    ours = corrupt(x, "gaussian_blur", 5, generator=_gen()).numpy()
    assert np.abs(np.floor(np.clip(ref, 0, 1) * 255).astype(int) - ours).max() <= 1
    z = 1.15
    ch = int(np.ceil(32 / z))
    top = (32 - ch) // 2
    zz = scipy_ndimage.zoom(xf[0, top:top + ch, top:top + ch], (z, z, 1), order=1)
    t = (zz.shape[0] - 32) // 2
    ours_z = _ops.clipped_zoom(_ops.to_chw(x[:1]).double(), z)[0].permute(1, 2, 0).numpy()
    assert np.abs(zz[t:t + 32, t:t + 32] - ours_z).max() < 1e-6


def test_brightness_keeps_hue() -> None:
    x = _images(2, seed=9)
    y = corrupt(x, "brightness", 3, generator=_gen())
    h0 = _ops.rgb_to_hsv(_ops.to_chw(x).double())[:, 0]
    h1 = _ops.rgb_to_hsv(_ops.to_chw(y).double())[:, 0]
    dh = (h0 - h1).abs()
    assert torch.minimum(dh, 1 - dh).median() < 0.02


def test_a_set_made_by_older_corruption_code_is_regenerated(tmp_path) -> None:
    import json
    import warnings

    from benchmark.corruptions.generate import generate_cifar_c

    images = _images(3).numpy()
    labels = np.arange(3)
    out = generate_cifar_c(images, labels, tmp_path / "c", corruptions=("brightness",), progress=False)
    good = np.load(out / "brightness.npy")
    meta = json.loads((out / "regenerated.json").read_text())
    meta["code_version"]["corruptions"] = "1"  # as written before the exact truncation
    (out / "regenerated.json").write_text(json.dumps(meta))
    np.save(out / "brightness.npy", good + 1)  # stale bytes
    with pytest.warns(UserWarning, match="regenerating"):
        generate_cifar_c(images, labels, out, corruptions=("brightness",), progress=False)
    assert np.array_equal(np.load(out / "brightness.npy"), good)
    assert json.loads((out / "regenerated.json").read_text())["code_version"]["corruptions"] != "1"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="seed"):  # other inputs still refuse
            generate_cifar_c(images, labels, out, corruptions=("brightness",), seed=3, progress=False)


def test_conv_matrix_is_the_padded_correlation() -> None:
    # independent: np.pad with the matching mode, then a direct correlation
    rng = np.random.default_rng(1)
    for n, k, mode, np_mode in ((7, 5, "symmetric", "symmetric"), (9, 31, "reflect101", "reflect"), (6, 3, "edge", "edge"),
                                (5, 23, "symmetric", "symmetric")):
        kernel = torch.from_numpy(rng.random(k))
        v = rng.random(n)
        padded = np.pad(v, k // 2, mode=np_mode)
        ref = np.array([np.dot(padded[i : i + k], kernel.numpy()) for i in range(n)])
        assert np.allclose(_ops.conv_matrix(n, kernel, mode).numpy() @ v, ref, atol=1e-12, rtol=0), (n, k, mode)


def test_long_kernels_run_as_matrices_equal_to_the_convolution(monkeypatch) -> None:
    # the ImageNet elastic field (sigma up to 244 * 0.7 px, truncate 3) is a long kernel on 224 px: products, not conv2d
    assert _ops.use_conv_matrices(224, 224, 1025, 1025) and _ops.use_conv_matrices(224, 224, 49, 49)
    assert not _ops.use_conv_matrices(224, 224, 9, 9) and _ops.use_conv_matrices(32, 32, 3, 3)
    x = torch.from_numpy(np.random.default_rng(2).uniform(-1, 1, (2, 2, 96, 80)))
    k = _ops.gaussian_kernel1d(40.0, truncate=3.0)  # 241 taps, wider than the image: repeated reflections
    fast = _ops.conv_separable(x, k, k, "symmetric")
    monkeypatch.setattr(_ops, "use_conv_matrices", lambda *a: False)
    slow = _ops.conv_separable(x, k, k, "symmetric")
    assert torch.allclose(fast, slow, atol=1e-12, rtol=0)


def test_imagenet_elastic_equals_the_convolution_path(monkeypatch) -> None:
    # severity 2 at 224 px: a 119-tap field blur, now two matrix products (was conv2d); uint8 outputs
    # may differ only where a value sits within float error of a level
    x = _images(1, 224, seed=12)
    fast = corrupt(x, "elastic_transform", 2, generator=_gen(3), profile="imagenet")
    monkeypatch.setattr(_ops, "use_conv_matrices", lambda h, w, kh, kw, double=False: max(h, w) <= 64)
    slow = corrupt(x, "elastic_transform", 2, generator=_gen(3), profile="imagenet")
    d = (fast.int() - slow.int()).abs()
    assert d.max() <= 1 and (d > 0).float().mean() < 1e-3


def test_large_float64_2d_correlation_by_fft_equals_conv2d() -> None:
    x = torch.from_numpy(np.random.default_rng(3).random((2, 3, 96, 80)))
    k = _ops.disk_kernel(6, 0.5)
    fast = _ops.conv2d_same(x, k, "reflect101")
    ref = _ops.conv2d_same(x.float(), k.float(), "reflect101").double()  # the float32 conv2d path
    slow = torch.nn.functional.conv2d(_ops.pad2d(x.reshape(6, 1, 96, 80), 8, 8, "reflect101"), k.view(1, 1, 17, 17))
    assert torch.allclose(fast, slow.reshape(2, 3, 96, 80), atol=1e-12, rtol=0)
    assert torch.allclose(fast, ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("delta,size", [(2, 20), (3, 17), (4, 24), (2, 6)])
def test_glass_rows_equal_the_sequential_scan(delta: int, size: int) -> None:
    arr = _images(3, size=size if size % 8 == 0 else 16, seed=13)[:, :size, :size].contiguous()
    if arr.shape[1] < size:  # sizes that are not multiples of 8: pad with noise
        arr = torch.randint(0, 256, (3, size, size, 3), generator=_gen(2), dtype=torch.uint8)
    fast = blur._glass_shuffle_rows(arr, delta, _gen(9))
    slow = blur._glass_shuffle_seq(arr, delta, _gen(9))
    assert torch.equal(fast, slow)
    assert size <= 2 * delta + 1 or not torch.equal(fast, arr)

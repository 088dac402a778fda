"""Tests for lediff_backend.hdr.tonemap: ranges, exposure, monotonicity, robustness."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr.color import luminance, srgb_to_linear
from lediff_backend.hdr.tonemap import (
    MID_GREY,
    TONEMAPS,
    auto_exposure_ev,
    exposure_srgb,
    local_log_contrast,
    reinhard,
)

TOLERANCE = 1e-5  # float32 sRGB encoding round trips


@pytest.fixture(scope="module")
def hdr() -> np.ndarray:
    """A wide-range scene: log-normal radiance over ~20 stops plus a tiny sun."""
    rng = np.random.default_rng(3)
    image = np.exp2(rng.normal(-2.5, 3.0, size=(24, 48, 1)) + rng.normal(0, 0.3, size=(24, 48, 3)))
    image[5, 7] = 5e4
    return image.astype(np.float32)


@pytest.mark.parametrize("name", sorted(TONEMAPS))
class TestEveryOperator:
    def test_range_shape_dtype(self, hdr, name):
        out = TONEMAPS[name](hdr, ev=0.5)
        assert out.shape == hdr.shape and out.dtype == np.float32
        assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1

    @pytest.mark.parametrize("value", [0.0, 1e30, 3e38, np.inf, np.nan, -5.0])
    def test_no_nan_on_extremes(self, hdr, name, value):
        image = hdr.copy()
        image[:4] = value
        for ev in (-10.0, 0.0, 10.0):
            out = TONEMAPS[name](image, ev=ev)
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
        all_black = TONEMAPS[name](np.zeros((4, 8, 3), np.float32))
        np.testing.assert_array_equal(all_black, 0)

    def test_monotone_in_ev(self, hdr, name):
        outputs = [TONEMAPS[name](hdr, ev=ev) for ev in (-3.0, -1.0, 0.0, 1.0, 3.0)]
        for darker, brighter in zip(outputs, outputs[1:]):
            assert (brighter >= darker - TOLERANCE).all()
        assert outputs[-1].mean() > outputs[0].mean()

    def test_ev_scales_the_input(self, hdr, name):
        np.testing.assert_allclose(TONEMAPS[name](hdr, ev=1.0), TONEMAPS[name](2 * hdr), atol=TOLERANCE)


class TestExposure:
    def test_plus_one_ev_doubles_linear_exposure(self, hdr):
        dim = hdr * np.float32(2.0**-18)  # nothing clips at +1 EV
        doubled = srgb_to_linear(exposure_srgb(dim, ev=1.0))
        np.testing.assert_allclose(doubled, 2 * srgb_to_linear(exposure_srgb(dim)), rtol=1e-4, atol=1e-7)

    def test_is_srgb_of_clipped_linear(self):
        encoded = exposure_srgb(np.array([[[0.0, 0.18, 1.0], [2.0, 0.0031308, 0.5]]], np.float32))
        np.testing.assert_allclose(encoded, [[[0.0, 0.46135, 1.0], [1.0, 0.04045, 0.735357]]], atol=1e-5)


class TestReinhard:
    def test_peak_maps_to_white_and_dim_values_stay_linear(self):
        grey = np.array([[[1e-4] * 3, [0.5] * 3, [8.0] * 3]], np.float32)
        linear = srgb_to_linear(reinhard(grey))
        np.testing.assert_allclose(linear[0, 2], 1.0, atol=1e-5)
        np.testing.assert_allclose(linear[0, 0], 1e-4, rtol=1e-3)
        expected = 0.5 * (1 + 0.5 / 64) / 1.5  # eq. 4 with white = 8
        np.testing.assert_allclose(linear[0, 1], expected, rtol=1e-4)

    def test_keeps_colour_ratios(self, hdr):
        out = srgb_to_linear(reinhard(hdr, white=1e6))
        unclipped = out.max(axis=-1) < 0.99
        ratio = out[unclipped] / hdr[unclipped]
        np.testing.assert_allclose(ratio, ratio[:, :1].repeat(3, axis=1), rtol=1e-3)

    def test_larger_white_is_darker(self, hdr):
        assert reinhard(hdr, white=100.0).mean() < reinhard(hdr, white=2.0).mean()


class TestLocalLogContrast:
    def test_zero_strength_is_plain_exposure(self, hdr):
        np.testing.assert_allclose(
            local_log_contrast(hdr, ev=1.5, strength=0.0), exposure_srgb(hdr, ev=1.5), atol=TOLERANCE
        )

    def test_compresses_large_scale_contrast_and_keeps_detail(self):
        texture = 1 + 0.2 * np.sin(np.arange(64) * 2.0)[None, :, None]
        image = np.broadcast_to(texture * MID_GREY, (32, 64, 3)).astype(np.float32)
        image[:, 32:] *= 2.0**8  # a bright half, 8 stops up
        linear = srgb_to_linear(local_log_contrast(image, strength=0.8, radius=0.05))
        lum = luminance(linear)
        assert lum[16, 48] < 0.99  # the bright half no longer clips
        assert np.log2(lum[16, 48:56].mean() / lum[16, 0:8].mean()) < 3  # 8 stops -> under 3
        detail = lum[16, 2:8] / lum[16, 1:7]  # neighbouring pixels away from the edge
        np.testing.assert_allclose(detail, (texture[0, 2:8, 0] / texture[0, 1:7, 0]), rtol=0.05)

    def test_wrap_makes_it_shift_invariant_around_the_seam(self, hdr):
        shifted = np.roll(hdr, 17, axis=1)
        np.testing.assert_allclose(
            local_log_contrast(shifted, wrap=True), np.roll(local_log_contrast(hdr, wrap=True), 17, axis=1), atol=1e-4
        )


class TestAutoExposure:
    def test_maps_the_log_average_to_mid_grey(self):
        grey = np.full((4, 8, 3), MID_GREY / 4, np.float32)
        assert auto_exposure_ev(grey) == pytest.approx(2.0, abs=1e-5)
        two_levels = np.concatenate([grey / 2, grey * 2], axis=1)  # geometric mean is still grey
        assert auto_exposure_ev(two_levels) == pytest.approx(2.0, abs=1e-5)
        np.testing.assert_allclose(srgb_to_linear(exposure_srgb(grey, auto_exposure_ev(grey))), MID_GREY, rtol=1e-4)

    def test_black_image_gives_zero(self):
        assert auto_exposure_ev(np.zeros((2, 4, 3), np.float32)) == 0.0

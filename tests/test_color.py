"""Tests for lediff_backend.hdr.color: sRGB transfer, the LEDiff CRF family, luminance."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr.color import (
    CRF,
    REC709_LUMA,
    crf_lediff,
    inverse_crf_lediff,
    linear_to_srgb,
    luminance,
    sample_crf_params,
    srgb_to_linear,
)

# float32 arithmetic: a few ulps of values in [0, 1].
TOLERANCE = 1e-6
# Round trips through a power curve lose a little more in float32.
ROUND_TRIP_TOLERANCE = 2e-5

RAMP = np.linspace(0.0, 1.0, 257, dtype=np.float32)
CRFS = [CRF(0.6, 0.9), CRF(0.3, 0.6), CRF(0.9, 1.2), CRF(0.05, 0.3), CRF(1.5, 1.0)]


class TestSrgb:
    def test_known_values(self):
        # IEC 61966-2-1: 0.5 linear encodes to 0.7354; 0.18 (mid-grey) to 0.4614.
        np.testing.assert_allclose(linear_to_srgb(np.array([0.0, 0.18, 0.5, 1.0])), [0.0, 0.46135, 0.73536, 1.0], atol=1e-4)
        np.testing.assert_allclose(srgb_to_linear(np.array([0.0, 0.46135, 0.73536, 1.0])), [0.0, 0.18, 0.5, 1.0], atol=1e-4)

    def test_linear_segment(self):
        np.testing.assert_allclose(linear_to_srgb(np.array([0.001, 0.003])), [0.01292, 0.03876], atol=TOLERANCE)
        np.testing.assert_allclose(srgb_to_linear(np.array([0.01292, 0.03876])), [0.001, 0.003], atol=TOLERANCE)

    def test_knee_is_continuous(self):
        # Both branches meet at 0.04045 encoded = 0.0031308 linear.
        below = np.nextafter(np.float32(0.04045), np.float32(0))
        above = np.nextafter(np.float32(0.04045), np.float32(1))
        decoded = srgb_to_linear(np.array([below, 0.04045, above], dtype=np.float32))
        np.testing.assert_allclose(decoded, 0.0031308, atol=1e-7)
        encoded = linear_to_srgb(np.array([0.0031307, 0.0031308, 0.0031309], dtype=np.float32))
        np.testing.assert_allclose(encoded, 0.04045, atol=2e-6)

    def test_round_trip(self):
        np.testing.assert_allclose(srgb_to_linear(linear_to_srgb(RAMP)), RAMP, atol=ROUND_TRIP_TOLERANCE)
        np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(RAMP)), RAMP, atol=ROUND_TRIP_TOLERANCE)

    def test_encoding_clips_to_unit_range(self):
        np.testing.assert_allclose(linear_to_srgb(np.array([-1.0, 2.0, 1e9])), [0.0, 1.0, 1.0], atol=TOLERANCE)

    def test_float32_and_shape_kept(self):
        image = np.full((2, 3, 3), 0.5)
        assert linear_to_srgb(image).dtype == np.float32 and linear_to_srgb(image).shape == (2, 3, 3)
        assert srgb_to_linear(image).dtype == np.float32 and srgb_to_linear(image).shape == (2, 3, 3)


class TestCrfLediff:
    @pytest.mark.parametrize("crf", CRFS)
    def test_end_points(self, crf):
        np.testing.assert_allclose(crf_lediff(np.array([0.0, 1.0]), crf), [0.0, 1.0], atol=TOLERANCE)

    def test_known_value(self):
        # (1 + 0.6) · 0.5^0.9 / (0.6 + 0.5^0.9) with 0.5^0.9 = 0.535887
        np.testing.assert_allclose(crf_lediff(np.array([0.5]), CRF(0.6, 0.9)), [0.754845], atol=1e-5)

    @pytest.mark.parametrize("crf", CRFS)
    def test_monotone(self, crf):
        assert np.all(np.diff(crf_lediff(RAMP, crf)) > 0)

    def test_saturates_above_one(self):
        np.testing.assert_allclose(crf_lediff(np.array([1.0, 2.0, 1e6])), [1.0, 1.0, 1.0], atol=TOLERANCE)
        np.testing.assert_allclose(crf_lediff(np.array([-0.5])), [0.0], atol=TOLERANCE)

    @pytest.mark.parametrize("crf", CRFS)
    def test_inverse_round_trip(self, crf):
        np.testing.assert_allclose(inverse_crf_lediff(crf_lediff(RAMP, crf), crf), RAMP, atol=ROUND_TRIP_TOLERANCE)
        np.testing.assert_allclose(crf_lediff(inverse_crf_lediff(RAMP, crf), crf), RAMP, atol=ROUND_TRIP_TOLERANCE)

    def test_default_is_paper_mean(self):
        assert CRF() == CRF(0.6, 0.9)
        np.testing.assert_allclose(crf_lediff(RAMP), crf_lediff(RAMP, CRF(0.6, 0.9)), atol=0)


class TestSampleCrfParams:
    def test_statistics(self):
        rng = np.random.default_rng(1234)
        draws = np.array([sample_crf_params(rng) for _ in range(4000)])
        # Standard error of the mean is 0.1 / sqrt(4000) ≈ 0.0016.
        np.testing.assert_allclose(draws.mean(axis=0), [0.6, 0.9], atol=0.01)
        np.testing.assert_allclose(draws.std(axis=0), [0.1, 0.1], atol=0.01)
        assert draws.min() > 0

    def test_seeded(self):
        first = sample_crf_params(np.random.default_rng(7))
        assert isinstance(first, CRF)
        assert first == sample_crf_params(np.random.default_rng(7))
        assert first != sample_crf_params(np.random.default_rng(8))


class TestLuminance:
    def test_weights(self):
        np.testing.assert_allclose(REC709_LUMA, [0.2126, 0.7152, 0.0722], atol=0)
        primaries = np.eye(3, dtype=np.float32)
        np.testing.assert_allclose(luminance(primaries), [0.2126, 0.7152, 0.0722], atol=TOLERANCE)

    def test_grey_keeps_value_and_image_shape(self):
        image = np.array([[[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]], [[0.0, 0.0, 0.0], [4.0, 0.0, 1.0]]])
        np.testing.assert_allclose(luminance(image), [[1.0, 2.0], [0.0, 4 * 0.2126 + 0.0722]], atol=TOLERANCE)

    def test_alpha_ignored(self):
        rgba = np.array([[[1.0, 1.0, 1.0, 0.0]]])
        np.testing.assert_allclose(luminance(rgba), [[1.0]], atol=TOLERANCE)

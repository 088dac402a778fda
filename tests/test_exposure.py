"""Tests for lediff_backend.hdr.exposure: brackets and LDR photos simulated from HDR."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr.color import CRF, crf_lediff, linear_to_srgb
from lediff_backend.hdr.exposure import (
    Exposure,
    bracket_evs,
    expose,
    exposure_bounds,
    jpeg_roundtrip,
    metered_ev,
    quantize,
    simulate_brackets,
    simulate_ldr,
)
from lediff_backend.hdr.exr import read_exr

# float32 arithmetic on values in [0, 1] (and EVs computed from float32 luminance).
TOLERANCE = 1e-5
# np.percentile interpolates: pixels tied at the percentile value itself may add a few
# hundredths of a percent to a "clipped" fraction.
PERCENTILE_SLACK = 0.001


def grey(values) -> np.ndarray:
    """An Nx1x3 grey image with the given luminances."""
    values = np.asarray(values, dtype=np.float32)
    return np.repeat(values[:, None, None], 3, axis=2)


def scene(seed: int = 0) -> np.ndarray:
    """A 64x128 scene: log-uniform greys from 2^-6 to 2^4 and a 4x4 'sun' of 1000."""
    rng = np.random.default_rng(seed)
    lum = 2.0 ** rng.uniform(-6, 4, size=(64, 128))
    tint = rng.uniform(0.8, 1.2, size=(64, 128, 3))
    hdr = (lum[..., None] * tint).astype(np.float32)
    hdr[10:14, 40:44] = 1000.0
    return hdr


def clipped_fraction(hdr: np.ndarray, ev: float) -> float:
    """Fraction of pixels where some channel saturates at exposure ``ev``."""
    return float(((hdr[..., :3] * 2.0**ev).max(axis=-1) > 1.0).mean())


class TestExposureBounds:
    def test_extremes(self):
        hdr = grey([0.01] * 50 + [100.0] * 50)  # every percentile is 0.01 or 100
        low, high = exposure_bounds(hdr)
        np.testing.assert_allclose([low, high], [-np.log2(100.0), np.log2(0.5 / 0.01)], atol=TOLERANCE)
        # At ev_low the bright percentile maps to 1; at ev_high the dark one to dark_target.
        np.testing.assert_allclose(100.0 * 2.0**low, 1.0, atol=TOLERANCE)
        np.testing.assert_allclose(0.01 * 2.0**high, 0.5, atol=TOLERANCE)

    def test_percentiles_and_target(self):
        hdr = grey(np.geomspace(1 / 64, 64, 101))  # 101 values, percentile k is value index k
        low, high = exposure_bounds(hdr, dark_percentile=10, bright_percentile=90, dark_target=0.25)
        bright, dark = np.geomspace(1 / 64, 64, 101)[[90, 10]]
        np.testing.assert_allclose([low, high], [-np.log2(bright), np.log2(0.25 / dark)], atol=TOLERANCE)

    def test_black_pixels_ignored(self):
        hdr = grey([0.0] * 90 + [0.01] * 5 + [100.0] * 5)
        np.testing.assert_allclose(exposure_bounds(hdr), [-np.log2(100.0), np.log2(50.0)], atol=TOLERANCE)

    def test_narrow_scene_bounds_coincide(self):
        low, high = exposure_bounds(grey([0.5] * 10))
        np.testing.assert_allclose([low, high], [1.0, 1.0], atol=TOLERANCE)

    def test_black_image_raises(self):
        with pytest.raises(ValueError, match="black"):
            exposure_bounds(np.zeros((4, 8, 3), np.float32))


class TestBracketEvs:
    def test_even_spacing_middle_halfway(self):
        hdr = grey([0.01] * 50 + [100.0] * 50)
        low, high = exposure_bounds(hdr)
        evs = bracket_evs(hdr, 5)
        assert len(evs) == 5
        np.testing.assert_allclose(evs[[0, -1]], [low, high], atol=TOLERANCE)
        np.testing.assert_allclose(evs[2], (low + high) / 2, atol=TOLERANCE)
        np.testing.assert_allclose(np.diff(evs), (high - low) / 4, atol=TOLERANCE)

    def test_single_exposure_is_the_middle_one(self):
        hdr = grey([0.01] * 50 + [100.0] * 50)
        np.testing.assert_allclose(bracket_evs(hdr, 1), [sum(exposure_bounds(hdr)) / 2], atol=TOLERANCE)

    def test_count_must_be_positive(self):
        with pytest.raises(ValueError):
            bracket_evs(grey([1.0]), 0)


class TestMeteredEv:
    def test_median_to_mid_grey(self):
        hdr = grey(np.linspace(0.05, 0.5, 101))  # median 0.275, nothing near clipping
        np.testing.assert_allclose(metered_ev(hdr), np.log2(0.18 / 0.275), atol=TOLERANCE)
        np.testing.assert_allclose(metered_ev(hdr, key=0.25), np.log2(0.25 / 0.275), atol=TOLERANCE)

    def test_highlights_protected(self):
        hdr = grey([0.09] * 80 + [100.0] * 20)  # median metering would clip 20 %
        ev = metered_ev(hdr)
        np.testing.assert_allclose(ev, -np.log2(100.0), atol=TOLERANCE)
        assert clipped_fraction(hdr, ev) <= 0.05

    def test_a_saturated_colour_counts_as_clipped(self):
        # Red pixels of luminance 0.85 still clip their red channel at +1 EV.
        hdr = grey([0.09] * 80)
        hdr = np.concatenate([hdr, np.tile(np.float32([4.0, 0.0, 0.0]), (20, 1, 1))])
        ev = metered_ev(hdr)
        np.testing.assert_allclose(ev, -2.0, atol=TOLERANCE)
        assert clipped_fraction(hdr, ev) <= 0.05

    @pytest.mark.parametrize("max_clipped", [0.01, 0.05, 0.2])
    def test_clipped_fraction_on_synthetic_scene(self, max_clipped):
        hdr = scene()
        assert clipped_fraction(hdr, metered_ev(hdr, max_clipped=max_clipped)) <= max_clipped + PERCENTILE_SLACK

    def test_clipped_fraction_on_real_hdris(self, studiolights):
        for name, path in studiolights.items():
            hdr, _ = read_exr(path)
            ev = metered_ev(hdr)
            assert clipped_fraction(hdr, ev) <= 0.05 + PERCENTILE_SLACK, name
            assert ev <= np.log2(0.18 / np.median(hdr @ np.float32([0.2126, 0.7152, 0.0722]))) + TOLERANCE, name


class TestExpose:
    def test_one_stop_doubles_linear_before_the_curve(self):
        hdr = scene()[:8, :8]
        np.testing.assert_allclose(expose(hdr, 1.0), linear_to_srgb(2 * hdr), atol=TOLERANCE)
        np.testing.assert_allclose(expose(hdr, 1.0), expose(2 * hdr, 0.0), atol=TOLERANCE)
        crf = CRF(0.5, 1.1)
        np.testing.assert_allclose(expose(hdr, 1.0, crf), crf_lediff(2 * hdr, crf), atol=TOLERANCE)
        np.testing.assert_allclose(expose(hdr, -2.0, crf), crf_lediff(hdr / 4, crf), atol=TOLERANCE)

    def test_known_values(self):
        np.testing.assert_allclose(expose(grey([0.25, 0.0, 8.0]), 1.0)[:, 0, 0], [0.735357, 0.0, 1.0], atol=TOLERANCE)

    def test_output_range(self):
        for response in ("srgb", CRF()):
            out = expose(scene(), 3.0, response)
            assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 1.0

    def test_unknown_response(self):
        with pytest.raises(ValueError, match="unknown response"):
            expose(grey([1.0]), 0.0, "gamma22")


class TestQuantize:
    def test_eight_bit_grid(self):
        values = np.array([-0.1, 0.0, 0.31, 0.5, 0.999, 1.0, 1.5], dtype=np.float32)
        np.testing.assert_allclose(quantize(values), [0, 0, 79 / 255, 128 / 255, 1.0, 1.0, 1.0], atol=TOLERANCE)

    def test_on_grid_and_within_half_a_code(self):
        values = np.random.default_rng(0).uniform(0, 1, 1000).astype(np.float32)
        for bits in (8, 16):
            levels = 2**bits - 1
            out = quantize(values, bits)
            assert out.dtype == np.float32
            np.testing.assert_allclose(out * levels, np.round(out * levels), atol=1e-3)
            np.testing.assert_allclose(out, values, atol=0.5 / levels + 1e-7)


class TestJpegRoundtrip:
    def test_lossy_but_close(self):
        y, x = np.mgrid[0:48, 0:64] / 64.0
        smooth = quantize(np.stack([x, y, 0.5 * (x + y)], axis=-1).astype(np.float32))
        out = jpeg_roundtrip(smooth, quality=75)
        assert out.shape == smooth.shape and out.dtype == np.float32
        assert np.abs(out - smooth).max() > 0  # JPEG changed something
        np.testing.assert_allclose(out, smooth, atol=12 / 255)  # ... but a smooth image stays close
        assert np.abs(out - smooth).mean() < 2 / 255
        np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)  # decoded 8-bit codes

    def test_higher_quality_is_closer(self):
        noisy = quantize(np.random.default_rng(1).uniform(0, 1, (32, 32, 3)).astype(np.float32))
        low = np.abs(jpeg_roundtrip(noisy, quality=30) - noisy).mean()
        high = np.abs(jpeg_roundtrip(noisy, quality=95) - noisy).mean()
        assert high < low


class TestSimulateBrackets:
    def test_count_and_spacing(self):
        hdr = scene()
        bracket = simulate_brackets(hdr, 5)
        assert len(bracket) == 5 and all(isinstance(e, Exposure) for e in bracket)
        evs = np.array([e.ev for e in bracket])
        np.testing.assert_allclose(evs, bracket_evs(hdr, 5), atol=TOLERANCE)
        np.testing.assert_allclose(np.diff(evs), np.diff(evs)[0], atol=TOLERANCE)
        assert np.diff(evs)[0] > 0

    def test_srgb_without_rng(self):
        hdr = scene()
        bracket = simulate_brackets(hdr, 3)
        for exposure in bracket:
            assert exposure.response == "srgb"
            np.testing.assert_allclose(exposure.pixels, quantize(expose(hdr, exposure.ev)), atol=0)
        # The darkest exposure clips less than the brightest.
        assert (bracket[0].pixels == 1).mean() < (bracket[-1].pixels == 1).mean()

    def test_sampled_crf(self):
        hdr = scene()
        sampled = simulate_brackets(hdr, 3, rng=np.random.default_rng(3))
        plain = simulate_brackets(hdr, 3)
        assert isinstance(sampled[0].response, CRF)
        assert all(e.response == sampled[0].response for e in sampled)  # one CRF per bracket
        assert np.abs(sampled[1].pixels - plain[1].pixels).max() > 4 / 255
        for exposure in sampled:
            np.testing.assert_allclose(exposure.pixels * 255, np.round(exposure.pixels * 255), atol=1e-3)

    def test_deterministic_by_seed(self):
        hdr = scene()
        a = simulate_brackets(hdr, 3, rng=np.random.default_rng(11))
        b = simulate_brackets(hdr, 3, rng=np.random.default_rng(11))
        c = simulate_brackets(hdr, 3, rng=np.random.default_rng(12))
        assert a[0].response == b[0].response != c[0].response
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.pixels, y.pixels)

    def test_sixteen_bits(self):
        pixels = simulate_brackets(scene(), 3, bits=16)[1].pixels
        np.testing.assert_allclose(pixels * 65535, np.round(pixels * 65535), atol=1e-2)
        assert len(np.unique(pixels)) > 256


class TestSimulateLdr:
    def test_metered_srgb_photo(self):
        hdr = scene()
        photo = simulate_ldr(hdr)
        assert photo.response == "srgb"
        np.testing.assert_allclose(photo.ev, metered_ev(hdr), atol=TOLERANCE)
        assert photo.pixels.shape == hdr.shape and photo.pixels.dtype == np.float32
        np.testing.assert_allclose(photo.pixels * 255, np.round(photo.pixels * 255), atol=1e-3)
        saturated = (photo.pixels.max(axis=-1) == 1.0).mean()
        assert 0.001 < saturated <= 0.05 + 0.01  # the sun clips; values within half a code too

    def test_given_ev_and_response(self):
        hdr = scene()
        photo = simulate_ldr(hdr, ev=-1.0, response=CRF(0.6, 0.9))
        assert photo.ev == -1.0
        np.testing.assert_allclose(photo.pixels, quantize(crf_lediff(hdr / 2, CRF(0.6, 0.9))), atol=0)

    def test_response_from_rng(self):
        hdr = scene()
        a = simulate_ldr(hdr, rng=np.random.default_rng(5))
        b = simulate_ldr(hdr, rng=np.random.default_rng(5))
        assert isinstance(a.response, CRF) and a.response == b.response
        np.testing.assert_array_equal(a.pixels, b.pixels)

    def test_jpeg(self):
        hdr = scene()
        plain = simulate_ldr(hdr)
        compressed = simulate_ldr(hdr, jpeg_quality=80)
        assert compressed.ev == plain.ev
        assert np.abs(compressed.pixels - plain.pixels).max() > 0
        # Per-pixel noise in the scene is the worst case for JPEG; the mean error stays small.
        assert np.abs(compressed.pixels - plain.pixels).mean() < 0.05
        np.testing.assert_allclose(compressed.pixels * 255, np.round(compressed.pixels * 255), atol=1e-3)

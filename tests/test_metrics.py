"""Tests for lediff_backend.hdr.metrics: range, log errors, energy, SH irradiance, key light, seam."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr.metrics import (
    angle_between_deg,
    dominant_light_direction,
    dynamic_range_stops,
    fit_scale,
    log_luminance_rmse,
    sh_coefficients,
    sh_irradiance,
    sh_irradiance_error,
    total_energy,
    wrap_seam_score,
)
from lediff_backend.hdr.projection import equirect_directions

# float32 pixels, float64 sums.
TOLERANCE = 1e-5
# Order-2 SH projected by a 32x64 midpoint rule: the higher bands of a constant map are
# not exactly zero (about 5e-4 relative).
SH_QUADRATURE_TOLERANCE = 1e-3
# The key-light search refines on a 0.5° grid over an area-averaged map.
DIRECTION_TOLERANCE_DEG = 1.0


def constant_map(rgb, height: int = 32, width: int = 64) -> np.ndarray:
    return np.broadcast_to(np.asarray(rgb, np.float32), (height, width, 3)).copy()


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector in Blender world coordinates: azimuth from +X toward +Y, elevation up."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def spot_map(towards: np.ndarray, radius_deg: float = 1.5, height: int = 128, width: int = 256) -> np.ndarray:
    """A dim uniform sky (0.2) with a small disc of 5000 centred on ``towards``."""
    angles = np.degrees(np.arccos(np.clip(equirect_directions(height, width) @ towards, -1.0, 1.0)))
    image = constant_map([0.2, 0.2, 0.2], height, width)
    image[angles < radius_deg] = 5000.0
    return image


def triangle_panorama(height: int = 32, width: int = 128) -> np.ndarray:
    """Log luminance a periodic triangle wave in u with the seam mid-slope, plus a smooth
    variation in v: every pair of neighbouring columns, the seam included, differs alike."""
    u = (np.arange(width) + 0.5) / width
    v = 1 - (np.arange(height) + 0.5) / height
    stops = 4 * np.abs(2 * ((u + 0.25) % 1.0) - 1)[None, :] + np.cos(np.pi * v)[:, None]
    return np.repeat(np.exp2(stops)[..., None], 3, axis=2).astype(np.float32)


class TestDynamicRangeStops:
    def test_known_ratio(self):
        image = constant_map([1.0, 1.0, 1.0], 8, 16)
        image[:4] = 1024.0  # half the pixels 10 stops brighter
        np.testing.assert_allclose(dynamic_range_stops(image), 10.0, atol=TOLERANCE)

    def test_percentiles_and_black_pixels(self):
        lum = np.geomspace(1.0, 2.0**8, 101)  # 8 stops; percentile k is value index k
        image = np.repeat(np.concatenate([np.zeros(50), lum])[:, None, None], 3, axis=2)
        np.testing.assert_allclose(dynamic_range_stops(image, 10, 90), 8 * 0.8, atol=TOLERANCE)
        np.testing.assert_allclose(dynamic_range_stops(image, 0, 100), 8.0, atol=TOLERANCE)

    def test_constant_and_black(self):
        assert dynamic_range_stops(constant_map([3.0, 3.0, 3.0])) == 0.0
        assert dynamic_range_stops(constant_map([0.0, 0.0, 0.0])) == 0.0


class TestLogLuminanceRmse:
    def test_identical_is_zero(self):
        image = triangle_panorama()
        assert log_luminance_rmse(image, image) == 0.0

    def test_double_is_one_stop(self):
        image = triangle_panorama()
        np.testing.assert_allclose(log_luminance_rmse(2 * image, image), 1.0, atol=TOLERANCE)
        np.testing.assert_allclose(log_luminance_rmse(image / 8, image), 3.0, atol=TOLERANCE)

    def test_mask(self):
        truth = triangle_panorama()
        prediction = truth.copy()
        prediction[:8] *= 4  # two stops off in the top rows only
        mask = np.zeros(truth.shape[:2], bool)
        mask[8:] = True
        assert log_luminance_rmse(prediction, truth, mask) == 0.0
        np.testing.assert_allclose(log_luminance_rmse(prediction, truth, ~mask), 2.0, atol=TOLERANCE)
        np.testing.assert_allclose(log_luminance_rmse(prediction, truth), 2.0 * np.sqrt(8 / 32), atol=TOLERANCE)
        assert log_luminance_rmse(prediction, truth, np.zeros_like(mask)) == 0.0

    def test_darks_floored(self):
        # Below 1e-4 luminance differences do not count.
        assert log_luminance_rmse(constant_map([1e-6] * 3), constant_map([1e-8] * 3)) == 0.0


class TestTotalEnergy:
    def test_constant_map_is_four_pi_luminance(self):
        np.testing.assert_allclose(total_energy(constant_map([2.0, 2.0, 2.0])), 4 * np.pi * 2.0, rtol=TOLERANCE)
        luminance = 0.2126 * 1.0 + 0.7152 * 0.5 + 0.0722 * 0.25
        np.testing.assert_allclose(total_energy(constant_map([1.0, 0.5, 0.25], 50, 100)), 4 * np.pi * luminance, rtol=TOLERANCE)

    def test_upper_hemisphere(self):
        image = constant_map([1.0, 1.0, 1.0])
        image[16:] = 0.0
        np.testing.assert_allclose(total_energy(image), 2 * np.pi, rtol=TOLERANCE)


class TestFitScale:
    def test_recovers_factor(self):
        truth = triangle_panorama()
        np.testing.assert_allclose(fit_scale(truth / 3, truth), 3.0, rtol=TOLERANCE)
        np.testing.assert_allclose(fit_scale(truth * 5, truth), 0.2, rtol=TOLERANCE)

    def test_robust_to_a_few_outliers_and_masked(self):
        truth = triangle_panorama()
        prediction = truth / 3
        prediction[:2, :4] = 1000.0  # a few wrong pixels barely move a median
        np.testing.assert_allclose(fit_scale(prediction, truth), 3.0, rtol=TOLERANCE)
        prediction[:16] = truth[:16] * 7  # half the map at another scale: mask it out
        mask = np.zeros(truth.shape[:2], bool)
        mask[16:] = True
        np.testing.assert_allclose(fit_scale(prediction, truth, mask), 3.0, rtol=TOLERANCE)
        assert fit_scale(prediction, truth, np.zeros_like(mask)) == 1.0


class TestShIrradiance:
    NORMALS = np.array([[1, 0, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [0.6, 0.8, 0], [1, 1, 1] / np.sqrt(3)])

    def test_constant_environment_is_lambertian(self):
        # A uniform sky of radiance L gives irradiance π·L on every surface.
        rgb = np.array([0.5, 1.0, 2.0])
        irradiance = sh_irradiance(sh_coefficients(constant_map(rgb)), self.NORMALS)
        np.testing.assert_allclose(irradiance, np.pi * np.tile(rgb, (6, 1)), rtol=SH_QUADRATURE_TOLERANCE)

    def test_upper_hemisphere_sky(self):
        # Sky of 1 above the horizon only: π at the zenith, 0 at the nadir, π/2 sideways
        # (order 2 is exact here: the l = 2 band of a hemisphere step is zero).
        image = constant_map([1.0, 1.0, 1.0], 64, 128)
        image[32:] = 0.0
        normals = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
        irradiance = sh_irradiance(sh_coefficients(image), normals)[:, 0]
        np.testing.assert_allclose(irradiance / np.pi, [1.0, 0.0, 0.5], atol=SH_QUADRATURE_TOLERANCE)

    def test_error_zero_on_identical_and_scale_sensitive(self):
        truth = spot_map(direction(30, 40), radius_deg=10, height=32, width=64) + triangle_panorama(32, 64)
        assert sh_irradiance_error(truth, truth) == 0.0
        np.testing.assert_allclose(sh_irradiance_error(2 * truth, truth), 1.0, rtol=TOLERANCE)
        np.testing.assert_allclose(sh_irradiance_error(0.5 * truth, truth), 0.5, rtol=TOLERANCE)

    def test_error_sees_a_moved_light(self):
        truth = spot_map(direction(30, 40), radius_deg=10, height=32, width=64)
        moved = spot_map(direction(-150, 40), radius_deg=10, height=32, width=64)
        assert sh_irradiance_error(moved, truth) > 0.5


class TestDominantLightDirection:
    @pytest.mark.parametrize(
        "azimuth, elevation",
        [
            (0, 0),  # image centre
            (179.5, 10),  # just right of the seam (u ≈ 0.001)
            (-179.7, 5),  # just left of it (u ≈ 0.999)
            (100, 75),  # high elevation
            (-60, 85),  # near the zenith
            (10, -30),
        ],
    )
    def test_finds_small_bright_spot(self, azimuth, elevation):
        towards = direction(azimuth, elevation)
        found = dominant_light_direction(spot_map(towards))
        np.testing.assert_allclose(np.linalg.norm(found), 1.0, atol=TOLERANCE)
        assert angle_between_deg(found, towards) < DIRECTION_TOLERANCE_DEG


class TestAngleBetweenDeg:
    def test_known_angles(self):
        np.testing.assert_allclose(angle_between_deg([1, 0, 0], [1, 0, 0]), 0.0, atol=1e-6)
        np.testing.assert_allclose(angle_between_deg([1, 0, 0], [0, 1, 0]), 90.0, atol=1e-6)
        np.testing.assert_allclose(angle_between_deg([1, 0, 0], [-1, 0, 0]), 180.0, atol=1e-6)
        np.testing.assert_allclose(angle_between_deg([1, 0, 0], [1, 1, 0]), 45.0, atol=1e-6)
        np.testing.assert_allclose(angle_between_deg([0, 0, 2], [0, 3, 3]), 45.0, atol=1e-6)  # any length

    def test_rounding_beyond_one_is_safe(self):
        a = np.array([0.6, 0.8, 0.0]) * (1 + 1e-16)
        assert angle_between_deg(a, [0.6, 0.8, 0.0]) == pytest.approx(0.0, abs=1e-6)


class TestWrapSeamScore:
    def test_seamless_panorama_scores_about_one(self):
        panorama = triangle_panorama()
        np.testing.assert_allclose(wrap_seam_score(panorama), 1.0, atol=0.05)
        # Rolling by whole columns moves the seam to another column pair of the same kind.
        np.testing.assert_allclose(wrap_seam_score(np.roll(panorama, 37, axis=1)), 1.0, atol=0.05)

    def test_discontinuous_seam_scores_high(self):
        panorama = triangle_panorama()
        assert wrap_seam_score(panorama[:, :96]) > 20  # a cropped panorama no longer closes
        ramp = np.repeat(np.exp2(np.linspace(0, 4, 128))[None, :, None], 3, axis=2).repeat(8, axis=0)
        np.testing.assert_allclose(wrap_seam_score(ramp.astype(np.float32)), 127.0, rtol=1e-3)

    def test_constant_panorama(self):
        assert wrap_seam_score(constant_map([1.0, 1.0, 1.0])) == 0.0

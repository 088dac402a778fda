"""Tests for lediff_backend.hdr.sun: the sun (or brightest light) of an equirect map."""

from __future__ import annotations

import numpy as np
import pytest

from lediff_backend.hdr.color import luminance
from lediff_backend.hdr.exr import read_exr
from lediff_backend.hdr.metrics import angle_between_deg
from lediff_backend.hdr.projection import equirect_directions
from lediff_backend.hdr.sun import detect_sun

# A disc of a few hundred pixels: its pixel-grid centroid sits well within a degree of the
# true centre, and its pixel area within 10 % of the disc's.
DIRECTION_TOLERANCE_DEG = 1.0
DIAMETER_RTOL = 0.1
TOLERANCE = 1e-6

SUN_RGB = np.array([1.2, 1.0, 0.7])


def direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector in Blender world coordinates: azimuth from +X toward +Y, elevation up."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def sky_with_disc(towards, diameter_deg: float, radiance: float, height: int = 256, width: int = 512) -> np.ndarray:
    """A blue sky of luminance about 1 with a disc of ``radiance`` × SUN_RGB centred on ``towards``."""
    angles = np.degrees(np.arccos(np.clip(equirect_directions(height, width) @ towards, -1.0, 1.0)))
    image = np.broadcast_to(np.float32([0.7, 1.0, 1.4]), (height, width, 3)).copy()
    image[angles < diameter_deg / 2] = radiance * SUN_RGB
    return image


class TestDetectSun:
    @pytest.mark.parametrize(
        "azimuth, elevation",
        [(0, 30), (-120, 5), (180, 20), (178, 50), (60, 80)],  # 180 and 178: across the seam
    )
    def test_small_bright_disc(self, azimuth, elevation):
        towards = direction(azimuth, elevation)
        sun = detect_sun(sky_with_disc(towards, diameter_deg=4.0, radiance=20000.0))
        assert angle_between_deg(sun["direction"], towards) < DIRECTION_TOLERANCE_DEG
        np.testing.assert_allclose(np.linalg.norm(sun["direction"]), 1.0, atol=TOLERANCE)
        np.testing.assert_allclose(sun["angular_diameter"], 4.0, rtol=DIAMETER_RTOL)
        disc_sr = 2 * np.pi * (1 - np.cos(np.radians(2.0)))
        np.testing.assert_allclose(sun["solid_angle"], disc_sr, rtol=2 * DIAMETER_RTOL)
        np.testing.assert_allclose(sun["peak"], 20000.0 * luminance(SUN_RGB), rtol=TOLERANCE)
        np.testing.assert_allclose(sun["colour"], SUN_RGB / luminance(SUN_RGB), rtol=1e-5)
        # Disc: ~20000 × 0.0038 sr ≈ 60 facing it; the sky adds about π·1.
        assert 0.9 < sun["share"] < 1.0
        np.testing.assert_allclose(sun["irradiance"], 20000.0 * luminance(SUN_RGB) * disc_sr, rtol=2 * DIAMETER_RTOL)
        assert sun["is_sun"] is True

    def test_seam_disc_is_one_region(self):
        # Half the disc at u ≈ 0, half at u ≈ 1: the direction is not pulled to the image centre.
        towards = direction(180, 0)
        sun = detect_sun(sky_with_disc(towards, diameter_deg=6.0, radiance=5000.0))
        assert angle_between_deg(sun["direction"], towards) < DIRECTION_TOLERANCE_DEG
        np.testing.assert_allclose(sun["angular_diameter"], 6.0, rtol=DIAMETER_RTOL)

    def test_big_soft_light_is_not_a_sun(self):
        towards = direction(40, 30)
        light = detect_sun(sky_with_disc(towards, diameter_deg=50.0, radiance=30.0))
        assert angle_between_deg(light["direction"], towards) < DIRECTION_TOLERANCE_DEG
        np.testing.assert_allclose(light["angular_diameter"], 50.0, rtol=DIAMETER_RTOL)
        assert light["share"] > 0.3  # dominant, but too wide to cast sharp shadows
        assert light["is_sun"] is False

    def test_weak_small_light_is_not_a_sun(self):
        light = detect_sun(sky_with_disc(direction(0, 30), diameter_deg=2.0, radiance=100.0))
        assert light["angular_diameter"] < 10.0
        assert light["share"] < 0.3
        assert light["is_sun"] is False

    def test_black_map_raises(self):
        with pytest.raises(ValueError, match="black"):
            detect_sun(np.zeros((16, 32, 3), np.float32))

    def test_real_sunrise(self, studiolights):
        hdr, _ = read_exr(studiolights["sunrise"])
        sun = detect_sun(hdr)
        assert sun["is_sun"] is True
        elevation = np.degrees(np.arcsin(sun["direction"][2]))
        assert 0.0 < elevation < 20.0

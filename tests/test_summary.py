"""Tests for lediff_backend.hdr.summary: what ``lediff info`` prints and results carry."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lediff_backend.hdr.metrics import angle_between_deg
from lediff_backend.hdr.projection import equirect_directions
from lediff_backend.hdr.summary import is_panorama, summarize

TOLERANCE = 1e-6
SUN_DIRECTION = np.array([0.5, -0.5, np.sqrt(0.5)])  # azimuth -45°, elevation 45°


def panorama(height: int = 128, width: int = 256) -> np.ndarray:
    """Grey sky of 1 over a ground of 0.25, with a 4° sun of 10000 at SUN_DIRECTION."""
    directions = equirect_directions(height, width)
    image = np.where(directions[..., 2:] > 0, 1.0, 0.25).repeat(3, axis=2).astype(np.float32)
    image[np.degrees(np.arccos(np.clip(directions @ SUN_DIRECTION, -1, 1))) < 2.0] = 10000.0
    return image


class TestIsPanorama:
    @pytest.mark.parametrize("height, width", [(512, 1024), (1, 2), (2048, 4096), (507, 1024), (513, 1024)])
    def test_two_to_one(self, height, width):
        assert is_panorama(height, width)

    @pytest.mark.parametrize("height, width", [(512, 512), (1024, 512), (480, 1024), (540, 1024), (1080, 1920)])
    def test_other_aspects(self, height, width):
        assert not is_panorama(height, width)


class TestSummarize:
    def test_panorama(self):
        summary = summarize(panorama())
        assert set(summary) == {"width", "height", "panorama", "peak", "median", "stops", "sun"}
        assert (summary["width"], summary["height"], summary["panorama"]) == (256, 128, True)
        np.testing.assert_allclose(summary["peak"], 10000.0, rtol=TOLERANCE)
        np.testing.assert_allclose(summary["median"], 0.625, rtol=TOLERANCE)  # half sky, half ground
        # The sun covers less than 0.1 % of the pixels: the range is sky (1) over ground (0.25).
        np.testing.assert_allclose(summary["stops"], 2.0, atol=TOLERANCE)
        sun = summary["sun"]
        assert sun["is_sun"] is True
        assert angle_between_deg(sun["direction"], SUN_DIRECTION) < 1.5  # 1.4° pixels
        json.dumps(summary)  # plain Python types only

    def test_not_a_panorama_has_no_sun(self):
        summary = summarize(panorama()[:, :200])
        assert set(summary) == {"width", "height", "panorama", "peak", "median", "stops"}
        assert (summary["width"], summary["height"], summary["panorama"]) == (200, 128, False)
        json.dumps(summary)

    def test_panorama_flag_overrides_aspect(self):
        assert "sun" not in summarize(panorama(), panorama=False)
        forced = summarize(panorama()[:, :200], panorama=True)
        assert forced["panorama"] is True and "sun" in forced

    def test_black_panorama(self):
        summary = summarize(np.zeros((16, 32, 3), np.float32))
        assert summary["panorama"] is True and "sun" not in summary
        assert summary["peak"] == 0.0 and summary["stops"] == 0.0

    def test_sun_found_on_big_maps(self):
        # Maps wider than 1024 columns are area-averaged first; the sun survives it.
        summary = summarize(panorama(640, 1280))
        assert summary["width"] == 1280
        assert angle_between_deg(summary["sun"]["direction"], SUN_DIRECTION) < 1.0
        np.testing.assert_allclose(summary["sun"]["angular_diameter"], 4.0, rtol=0.15)

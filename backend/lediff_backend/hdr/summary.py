"""One-dictionary description of an HDR image: what ``lediff info`` prints and results carry."""

from __future__ import annotations

import numpy as np

from .color import luminance
from .metrics import dynamic_range_stops
from .projection import resize_equirect
from .sun import detect_sun

__all__ = ["is_panorama", "summarize"]

SUN_ANALYSIS_WIDTH = 1024  # the sun is found on an area-averaged copy at most this wide
STATS_PIXELS = 1 << 21  # median and range come from a regular subsample of about this many pixels


def is_panorama(height: int, width: int) -> bool:
    """True for a 2:1 image, which we treat as an equirect 360° panorama."""
    return abs(width / height - 2.0) < 0.02


def summarize(hdr: np.ndarray, *, panorama: bool | None = None) -> dict:
    """Size, peak and median luminance, dynamic range in stops and, for panoramas, the sun."""
    height, width = hdr.shape[:2]
    if panorama is None:
        panorama = is_panorama(height, width)
    stride = max(1, int(np.sqrt(height * width / STATS_PIXELS)))
    sample = hdr[::stride, ::stride]
    summary = {
        "width": int(width),
        "height": int(height),
        "panorama": bool(panorama),
        "peak": float(luminance(hdr).max()),
        "median": float(np.median(luminance(sample))),
        "stops": round(dynamic_range_stops(sample), 2),
    }
    if panorama and summary["peak"] > 0:
        summary["sun"] = detect_sun(resize_equirect(hdr, min(width, SUN_ANALYSIS_WIDTH)))
    return summary

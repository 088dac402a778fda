"""One-dictionary description of an HDR image: what ``lediff info`` prints and results carry."""

from __future__ import annotations

import numpy as np

from .color import luminance
from .metrics import dynamic_range_stops
from .sun import detect_sun

__all__ = ["is_panorama", "summarize"]

SUN_ANALYSIS_WIDTH = 1024  # the sun is found on a box-filtered copy at most this wide


def is_panorama(height: int, width: int) -> bool:
    """True for a 2:1 image, which we treat as an equirect 360° panorama."""
    return abs(width / height - 2.0) < 0.02


def _box_shrink(hdr: np.ndarray, max_width: int) -> np.ndarray:
    factor = max(1, hdr.shape[1] // max_width)
    if factor == 1:
        return hdr
    height, width = (hdr.shape[0] // factor) * factor, (hdr.shape[1] // factor) * factor
    return hdr[:height, :width].reshape(height // factor, factor, width // factor, factor, -1).mean(axis=(1, 3))


def summarize(hdr: np.ndarray, *, panorama: bool | None = None) -> dict:
    """Size, peak and median luminance, dynamic range in stops and, for panoramas, the sun."""
    height, width = hdr.shape[:2]
    if panorama is None:
        panorama = is_panorama(height, width)
    lum = luminance(hdr)
    summary = {
        "width": int(width),
        "height": int(height),
        "panorama": bool(panorama),
        "peak": float(lum.max()),
        "median": float(np.median(lum)),
        "stops": round(dynamic_range_stops(hdr), 2),
    }
    if panorama and summary["peak"] > 0:
        summary["sun"] = detect_sun(_box_shrink(hdr, SUN_ANALYSIS_WIDTH))
    return summary

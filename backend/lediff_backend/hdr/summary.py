"""One-dictionary description of an HDR image: what ``lediff info`` prints and results carry."""

from __future__ import annotations

import numpy as np

from .color import luminance
from .metrics import dynamic_range_stops
from .projection import resize_equirect
from .sun import detect_sun

__all__ = ["is_panorama", "summarize"]

SUN_ANALYSIS_WIDTH = 1024  # the sun is found on an area-averaged copy at most this wide


def is_panorama(height: int, width: int) -> bool:
    """True for a 2:1 image, which we treat as an equirect 360° panorama."""
    return abs(width / height - 2.0) < 0.02


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
        summary["sun"] = detect_sun(resize_equirect(hdr, min(width, SUN_ANALYSIS_WIDTH)))
    return summary

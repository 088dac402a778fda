"""Find the sun (or the one dominant small light) in an equirect HDR map.

``detect_sun`` grows the brightest region around the luminance peak (connected, wrapping
across the seam) down to a fraction of the peak, and reports in Blender world coordinates:

- ``direction``: energy-weighted centroid, unit [x, y, z] (+Z up, +X the image centre);
- ``colour``: mean linear RGB of the region, normalised to luminance 1;
- ``solid_angle`` (sr) and ``angular_diameter`` (degrees) of the region;
- ``irradiance``: ∫ L cosθ dω of the region on a surface facing it (relative units);
- ``share``: that irradiance over the whole map's irradiance on the same surface;
- ``is_sun``: a small, dominant light (share ≥ 0.3 and diameter ≤ 10°) — a real sun casts
  sharp shadows that a Sun lamp reproduces; a window or softbox does not.
"""

from __future__ import annotations

import numpy as np

from .color import luminance
from .projection import equirect_directions, solid_angle_weights
from .regions import wrapped_labels

__all__ = ["detect_sun", "SUN_PEAK_FRACTION"]

SUN_PEAK_FRACTION = 0.1  # the region holds pixels brighter than this fraction of the peak
SUN_MIN_SHARE = 0.3
SUN_MAX_DIAMETER_DEG = 10.0


def detect_sun(hdr: np.ndarray, peak_fraction: float = SUN_PEAK_FRACTION) -> dict:
    """Describe the brightest light of an equirect map (see the module docstring)."""
    height, width = hdr.shape[:2]
    lum = luminance(hdr)
    peak_index = np.unravel_index(np.argmax(lum), lum.shape)
    peak = float(lum[peak_index])
    if peak <= 0:
        raise ValueError("the map is black: there is no light to find")
    labels, _ = wrapped_labels(lum >= peak * peak_fraction)
    region = labels == labels[peak_index]

    omega = np.broadcast_to(solid_angle_weights(height, width), lum.shape)
    directions = equirect_directions(height, width).astype(np.float64)
    energy = lum * omega
    centroid = (directions[region] * energy[region][:, None]).sum(axis=0)
    direction = centroid / np.linalg.norm(centroid)

    cosine = np.clip(directions @ direction, 0.0, None)
    irradiance = float((energy[region] * cosine[region]).sum())
    total = float((energy * cosine).sum())
    solid_angle = float(omega[region].sum())
    diameter = float(np.degrees(2 * np.arccos(np.clip(1 - solid_angle / (2 * np.pi), -1.0, 1.0))))
    rgb = (hdr[region][:, :3] * omega[region][:, None]).sum(axis=0)
    colour = rgb / max(float(luminance(rgb)), 1e-12)
    share = irradiance / total if total > 0 else 0.0
    return {
        "direction": [float(c) for c in direction],
        "colour": [float(c) for c in colour],
        "solid_angle": solid_angle,
        "angular_diameter": diameter,
        "irradiance": irradiance,
        "share": share,
        "peak": peak,
        "is_sun": bool(share >= SUN_MIN_SHARE and diameter <= SUN_MAX_DIAMETER_DEG),
    }

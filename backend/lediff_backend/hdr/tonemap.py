"""Tone mapping for previews: scene-linear HDR in, display-encoded sRGB out.

Every operator takes an HxWx3 scene-linear float array and an exposure ``ev`` in stops
(the input is multiplied by ``2**ev`` first) and returns HxWx3 float32 sRGB-encoded values
in [0, 1]. Negative and NaN inputs count as black; infinities and values beyond 1e30 as 1e30.

Functions
---------
- ``exposure_srgb``: expose, clip at 1, encode. What Blender's "Standard" view shows.
- ``reinhard``: extended Reinhard on luminance, keeping each pixel's colour ratios.
- ``local_log_contrast``: base/detail split of log luminance in the manner of Durand and
  Dorsey; the blurred base is compressed toward mid-grey, the detail is kept.
- ``auto_exposure_ev``: the EV that maps the log-average luminance to mid-grey (0.18).
- ``TONEMAPS``: name -> operator, each callable as ``f(hdr, ev=...)``.

References
----------
- E. Reinhard, M. Stark, P. Shirley, J. Ferwerda, "Photographic Tone Reproduction for
  Digital Images", SIGGRAPH 2002 (eq. 4: ``L_d = L (1 + L / L_white²) / (1 + L)``).
- F. Durand, J. Dorsey, "Fast Bilateral Filtering for the Display of High-Dynamic-Range
  Images", SIGGRAPH 2002 (we blur the log luminance with a Gaussian, not a bilateral filter,
  so strong edges get a soft halo).
"""

from __future__ import annotations

import numpy as np

from .color import linear_to_srgb, luminance

__all__ = [
    "MID_GREY",
    "exposure_srgb",
    "reinhard",
    "local_log_contrast",
    "auto_exposure_ev",
    "TONEMAPS",
]

MID_GREY = 0.18
_HUGE = 1e30  # brighter inputs are clamped here, so that squares and sums stay finite
_BLACK = 2.0**-20  # luminance floor (in exposed units) before taking logs


def _exposed(hdr: np.ndarray, ev: float) -> np.ndarray:
    """``hdr · 2**ev`` as finite, non-negative float32 (NaN -> 0, at most 1e30)."""
    linear = np.nan_to_num(np.asarray(hdr, np.float32), nan=0.0, posinf=_HUGE, neginf=0.0)
    scale = 2.0**ev
    return np.clip(linear, 0.0, min(_HUGE, _HUGE / scale)) * np.float32(scale)


def exposure_srgb(hdr: np.ndarray, ev: float = 0.0) -> np.ndarray:
    """Expose by ``ev`` stops, clip at 1 and sRGB-encode: HxWx3 float32 in [0, 1]."""
    return linear_to_srgb(_exposed(hdr, ev))


def reinhard(hdr: np.ndarray, ev: float = 0.0, white: float | None = None) -> np.ndarray:
    """Extended Reinhard on luminance: ``L_d = L (1 + L / white²) / (1 + L)``.

    Parameters
    ----------
    hdr : HxWx3 scene-linear RGB.
    ev : exposure in stops, applied before the curve.
    white : the exposed luminance that maps to 1; default the image's peak luminance
        (so nothing but the peak reaches white).

    Returns
    -------
    HxWx3 float32 sRGB in [0, 1]. Each pixel's RGB is scaled by ``L_d / L``, which keeps its
    hue and saturation; a channel of a saturated colour that still exceeds 1 clips.
    """
    exposed = _exposed(hdr, ev)
    lum = luminance(exposed)
    if white is None:
        white = float(lum.max()) if lum.size else 1.0
    white = max(white, _BLACK)
    # L_d / L, written so that L = 0 needs no division and (L / white) / white cannot overflow.
    gain = (1 + lum / np.float32(white) / np.float32(white)) / (1 + lum)
    return linear_to_srgb(exposed * gain[..., None])


def _box_blur(values: np.ndarray, radius: int, axis: int, wrap: bool) -> np.ndarray:
    """Mean over a window of ``2·radius + 1`` samples along ``axis`` (wrapped or edge-padded)."""
    pad = [(0, 0)] * values.ndim
    pad[axis] = (radius + 1, radius)
    padded = np.pad(values, pad, mode="wrap" if wrap else "edge")
    sums = np.cumsum(padded, axis=axis, dtype=np.float64)
    size = values.shape[axis]
    window = np.take(sums, np.arange(2 * radius + 1, 2 * radius + 1 + size), axis=axis)
    window -= np.take(sums, np.arange(size), axis=axis)
    return (window / (2 * radius + 1)).astype(np.float32)


def _gaussian_blur(values: np.ndarray, sigma: float, wrap: bool) -> np.ndarray:
    """Approximate Gaussian blur of an HxW array: three box passes per axis.

    Columns wrap around when ``wrap`` (a panorama's seam); the edges repeat otherwise.
    """
    # Three boxes of width w have variance 3 (w² - 1) / 12 = sigma².
    radius = int(round((np.sqrt(4 * sigma**2 + 1) - 1) / 2))
    for _ in range(3):
        values = _box_blur(values, radius, axis=1, wrap=wrap)
        values = _box_blur(values, radius, axis=0, wrap=False)
    return values


def local_log_contrast(
    hdr: np.ndarray, ev: float = 0.0, strength: float = 0.6, radius: float = 0.02, wrap: bool = False
) -> np.ndarray:
    """Compress large-scale contrast, keep local detail (Durand and Dorsey style).

    The log2 luminance of the exposed image is split into a base (its Gaussian blur) and a
    detail layer (the rest). The base moves toward mid-grey (0.18) by ``strength`` of its
    distance in stops; the detail is kept. In effect each pixel is re-exposed by
    ``-strength · (base - log2 0.18)`` stops, so colours keep their ratios.

    Parameters
    ----------
    hdr : HxWx3 scene-linear RGB.
    ev : exposure in stops, applied first.
    strength : 0 leaves the exposure alone (equals ``exposure_srgb``); 1 flattens the base to
        mid-grey everywhere, leaving only the detail.
    radius : the blur's standard deviation as a fraction of the image width.
    wrap : blur across the left/right edges (for equirect panoramas).

    Returns
    -------
    HxWx3 float32 sRGB in [0, 1]; what stays brighter than 1 after compression clips.
    """
    exposed = _exposed(hdr, ev)
    log_lum = np.log2(np.maximum(luminance(exposed), np.float32(_BLACK)))
    base = _gaussian_blur(log_lum, sigma=max(radius * exposed.shape[1], 0.0), wrap=wrap)
    gain = np.exp2(np.float32(-strength) * (base - np.float32(np.log2(MID_GREY))))
    return linear_to_srgb(exposed * gain[..., None])


def auto_exposure_ev(hdr: np.ndarray, key: float = MID_GREY) -> float:
    """The EV that maps the log-average (geometric mean) luminance to ``key``.

    Luminances below 2**-20 count as 2**-20; an all-black image gives 0.
    """
    lum = luminance(_exposed(hdr, 0.0))
    if not lum.size or lum.max() <= 0:
        return 0.0
    log_average = float(np.mean(np.log2(np.maximum(lum, np.float32(_BLACK))), dtype=np.float64))
    return float(np.log2(key) - log_average)


TONEMAPS = {
    "exposure": exposure_srgb,
    "reinhard": reinhard,
    "local": local_log_contrast,
}

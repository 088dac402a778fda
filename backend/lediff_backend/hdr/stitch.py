"""Perspective views -> one equirectangular panorama, blended with smooth weights.

Views that share a centre (MVDiffusion's ring: 8 views, 90°, yaw step 45°) overlap; each pixel
of the panorama is the weighted mean of every view that sees it, with weights that fall off
smoothly from each view's centre to its borders, so no seam shows where one view ends.

Functions
---------
- ``view_weights``: a view's blending weights, a separable raised cosine (HxW float32).
- ``stitch_views``: paint views into an equirect image; returns the image and its coverage.

Orientation and cameras are ``projection``'s (yaw from +X toward +Y, pitch up, ``fov_deg``
horizontal). Images are HxWxC float32 (any C, any encoding: blending is linear in the values).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .projection import perspective_to_equirect

__all__ = ["view_weights", "stitch_views"]

WEIGHT_FLOOR = 1e-3  # a view's weight at its very border: small, never zero


def view_weights(height: int, width: int) -> np.ndarray:
    """``cos²`` of the normalised distance from the centre along each axis, multiplied; HxW float32.

    1 at the centre, ``WEIGHT_FLOOR`` toward the borders: where two views overlap, the one that
    sees a pixel nearer its centre dominates, and the blend changes smoothly.
    """

    def ramp(n: int) -> np.ndarray:
        t = (np.arange(n) + 0.5) / n * 2 - 1  # pixel centres in (-1, 1)
        return np.cos(np.pi / 2 * t) ** 2

    return np.maximum(ramp(height)[:, None] * ramp(width)[None, :], WEIGHT_FLOOR).astype(np.float32)


def stitch_views(
    views: Sequence[np.ndarray],
    yaws_deg: Sequence[float],
    fov_deg: float,
    out_height: int,
    out_width: int,
    pitches_deg: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend perspective views into an ``out_height`` x ``out_width`` equirect image.

    Parameters
    ----------
    views : HxWxC arrays, one per camera (all the same C).
    yaws_deg, pitches_deg : each view's camera (pitch 0 when not given); ``fov_deg`` horizontal.

    Returns
    -------
    image : out_height x out_width x C float32, the weighted mean of the views; 0 where none sees.
    coverage : out_height x out_width float32, 1 where at least one view sees the pixel, else 0.
    """
    if len(views) != len(yaws_deg):
        raise ValueError(f"{len(views)} views but {len(yaws_deg)} yaws")
    pitches = [0.0] * len(views) if pitches_deg is None else list(pitches_deg)
    channels = np.shape(views[0])[2]
    total = np.zeros((out_height, out_width, channels + 1), np.float32)
    coverage = np.zeros((out_height, out_width), np.float32)
    for view, yaw, pitch in zip(views, yaws_deg, pitches, strict=True):
        weight = view_weights(*np.shape(view)[:2])[..., None]
        premultiplied = np.concatenate([np.asarray(view, np.float32) * weight, weight], axis=-1)
        painted, mask = perspective_to_equirect(premultiplied, out_height, out_width, fov_deg, yaw, pitch)
        total += painted
        np.maximum(coverage, mask, out=coverage)
    weight_sum = total[..., channels:]
    image = np.divide(total[..., :channels], weight_sum, out=np.zeros_like(total[..., :channels]), where=weight_sum > 0)
    return image, coverage

"""Complete the zenith and nadir of a panorama that covers only a band of latitudes (no weights).

MVDiffusion's eight 90° views see about ±43° of latitude; the sky above and the ground below
are missing. Each missing cap is filled in a pinhole view looking straight up (or down) that
also sees the top (bottom) of the band:

1. a *trend*: per channel, the colour as a linear function of elevation over the known pixels
   of that view, continued past the band's edge with a slope that decays over ``trend_deg``
   (a sky that darkens toward the zenith keeps darkening a little, then settles);
2. the known pixels minus the trend are filled *harmonically* (Laplace's equation with the band
   as boundary: the smoothest surface that meets every known pixel), and the trend is added back.

The fill meets the band without a step, varies with it around the horizon (no constant caps,
no black holes) and is smooth toward the pole. Known pixels are never changed.

Functions
---------
- ``fill_poles(image, known)``: the completed HxWxC float32 equirect image.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve

from ..hdr.projection import equirect_to_perspective, perspective_directions, perspective_to_equirect

__all__ = ["fill_poles"]

CAP_FOV_DEG = 120.0  # the cap view reaches 30° of elevation at its edges: well into the band
TREND_DEG = 15.0  # the elevation over which the continued slope decays
TREND_LIMIT = 0.2  # most the trend may add beyond the band's edge, as a share of the value range


def _harmonic_fill(values: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Solve Laplace's equation for the pixels not ``fixed`` (4-neighbours; image borders are free)."""
    height, width = fixed.shape
    unknown = np.flatnonzero(~fixed.ravel())
    if unknown.size == 0:
        return values
    index = np.full(height * width, -1)
    index[unknown] = np.arange(unknown.size)
    rows, cols = np.divmod(unknown, width)
    flat = values.reshape(height * width, -1).astype(np.float64)
    rhs = np.zeros((unknown.size, flat.shape[1]))
    degree = np.zeros(unknown.size)
    entries_i, entries_j = [], []
    for dr, dc in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        degree += inside
        neighbour = r[inside] * width + c[inside]
        mine = np.flatnonzero(inside)
        free = index[neighbour] >= 0
        entries_i.append(mine[free])
        entries_j.append(index[neighbour[free]])
        np.add.at(rhs, mine[~free], flat[neighbour[~free]])
    # A tiny pull toward the boundary's mean keeps islands without any boundary solvable.
    eps = 1e-6
    rhs += eps * (flat[fixed.ravel()].mean(axis=0) if fixed.any() else 0.0)
    i, j = np.concatenate(entries_i), np.concatenate(entries_j)
    diagonal = np.arange(unknown.size)
    entries = np.concatenate([degree + eps, -np.ones(i.size)])
    positions = (np.concatenate([diagonal, i]), np.concatenate([diagonal, j]))
    matrix = coo_matrix((entries, positions), shape=(unknown.size, unknown.size)).tocsc()
    solution = spsolve(matrix, rhs).reshape(unknown.size, -1)
    out = flat.copy()
    out[unknown] = solution
    return out.reshape(values.shape).astype(np.float32)


def _trend(values: np.ndarray, toward_pole_deg: np.ndarray, fixed: np.ndarray, trend_deg: float) -> np.ndarray:
    """Per-channel linear fit of value against elevation over ``fixed``, continued with a decaying slope."""
    elevation = toward_pole_deg[fixed]
    design = np.stack([np.ones_like(elevation), elevation], axis=1)
    (offset, slope), *_ = np.linalg.lstsq(design, values[fixed].astype(np.float64), rcond=None)
    span = max(float(np.ptp(values[fixed])), 1e-6)
    slope = np.clip(slope, -TREND_LIMIT * span / trend_deg, TREND_LIMIT * span / trend_deg)
    edge = np.percentile(elevation, 95)
    beyond = np.maximum(toward_pole_deg - edge, 0.0)
    continued = np.minimum(toward_pole_deg, edge) + trend_deg * (1 - np.exp(-beyond / trend_deg))
    return (offset + continued[..., None] * slope).astype(np.float32)


def _fill_cap(image, known, pitch_deg, size, fov_deg, trend_deg):
    """The cap around one pole, as an equirect image and its coverage."""
    height, width = known.shape
    # Known values normalised by their coverage, so that cap pixels half over the band's edge
    # carry the band's value (not a blend with the unknown) and can serve as boundary.
    premultiplied = np.concatenate([image * known[..., None], known[..., None]], axis=-1)
    weighted = equirect_to_perspective(premultiplied, size, size, fov_deg, 0.0, pitch_deg)
    coverage = weighted[..., -1]
    fixed = coverage > 0.5
    view = weighted[..., :-1] / np.maximum(coverage, 1e-6)[..., None]
    if not fixed.any() or fixed.all():
        return None
    toward_pole = np.degrees(np.arcsin(perspective_directions(size, size, fov_deg, 0.0, pitch_deg)[..., 2]))
    toward_pole *= np.sign(pitch_deg)
    trend = _trend(view, toward_pole, fixed, trend_deg)
    filled = _harmonic_fill(np.where(fixed[..., None], view - trend, 0.0), fixed) + trend
    low, high = image[known > 0.5].min(), image[known > 0.5].max()
    return perspective_to_equirect(np.clip(filled, low, high), height, width, fov_deg, 0.0, pitch_deg)


def fill_poles(
    image: np.ndarray,
    known: np.ndarray,
    *,
    cap_size: int | None = None,
    fov_deg: float = CAP_FOV_DEG,
    trend_deg: float = TREND_DEG,
) -> np.ndarray:
    """Fill the unknown zenith and nadir of an HxWxC equirect ``image``.

    Parameters
    ----------
    image : HxWxC float32 (any encoding; display-encoded LDR in practice).
    known : HxW coverage in [0, 1]: 1 where ``image`` is valid (e.g. ``stitch_views``' coverage).
    cap_size : pixels of the square cap views (default: H/2 within 32..256; the fill is smooth,
        so a small view suffices).

    Returns
    -------
    HxWxC float32: ``image`` where known, blended by ``known`` into the fill elsewhere.
    """
    image = np.asarray(image, np.float32)
    known = np.clip(np.asarray(known, np.float32), 0.0, 1.0)
    size = cap_size or int(np.clip(image.shape[0] // 2, 32, 256))
    out = image.copy()
    for pitch in (90.0, -90.0):
        cap = _fill_cap(image, known, pitch, size, fov_deg, trend_deg)
        if cap is None:
            continue
        filled, seen = cap
        use = (seen > 0) & (known < 1)
        alpha = known[use][:, None]
        out[use] = alpha * image[use] + (1 - alpha) * filled[use]
    return out

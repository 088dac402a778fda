"""Ghost masks: where a bracket's image disagrees with the reference beyond its noise.

Each pixel of an exposure stands for an interval of radiances (its code ± noise, unbounded
above when clipped). Two images saw the same scene where their intervals overlap; where they
do not, something moved. The intervals are compared as means over small cells: the mean of
the true radiances lies between the means of the bounds, and noise averages out over a cell
while a moving thing does not.

Functions
---------
- ``block_mean``: means over ``block`` x ``block`` cells.
- ``ghost_mask``: cell intervals of an image and of the reference -> a smooth HxW mask.
- ``upsample``: a cell grid back to pixels, bilinearly (wrapping across a panorama's seam).

Masks are HxW float32 in [0, 1]; 1 means "take this pixel from the reference alone".
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["GHOST_RAMP_STOPS", "GHOST_GAIN", "block_mean", "ghost_mask", "upsample"]

GHOST_RAMP_STOPS = 0.5  # gap between intervals at which a cell's evidence reaches 1
GHOST_GAIN = 4.0  # blurred evidence is amplified so that covered areas reach 1
LONE_CELLS = 3  # a cell counts only with this much evidence in its 3x3 neighbourhood


def block_mean(a: np.ndarray, block: int) -> np.ndarray:
    """Means over ``block`` x ``block`` cells; rows and columns past the last whole cell are left out."""
    h, w = a.shape[0] // block, a.shape[1] // block
    total = np.zeros((h, w) + a.shape[2:], np.float32)
    for dy in range(block):
        for dx in range(block):
            total += a[dy : h * block : block, dx : w * block : block]
    return total / np.float32(block * block)


def _box_blur(a: np.ndarray, size: int, wrap: bool) -> np.ndarray:
    """Two box filters, nearly a Gaussian of σ ≈ size / 2.5; columns wrap when ``wrap``."""
    mode = ("nearest", "wrap" if wrap else "nearest")
    return ndimage.uniform_filter(ndimage.uniform_filter(a, size, mode=mode), size, mode=mode)


def _upsample_columns(cells: np.ndarray, block: int, width: int, wrap: bool) -> np.ndarray:
    """Columns of cells -> ``width`` columns of pixels, linear between cell centres.

    Each of the ``block`` pixel columns of a cell sits at a fixed offset from its centre, so
    every offset is one blend of two shifted views of the cells (no gathers).
    """
    padded = np.pad(cells, ((0, 0), (1, 1)), mode="wrap" if wrap else "edge")
    n = cells.shape[1]
    out = np.empty((cells.shape[0], n, block), np.float32)
    for j in range(block):
        offset = np.float32((j + 0.5) / block - 0.5)
        if offset < 0:  # left of the centre: between the cell on the left and this one
            out[:, :, j] = padded[:, :n] * -offset + padded[:, 1 : n + 1] * (1 + offset)
        else:
            out[:, :, j] = padded[:, 1 : n + 1] * (1 - offset) + padded[:, 2:] * offset
    out = out.reshape(cells.shape[0], n * block)
    return np.pad(out, ((0, 0), (0, width - n * block)), mode="edge") if width > n * block else out[:, :width]


def upsample(cells: np.ndarray, block: int, shape: tuple[int, int], wrap: bool = False) -> np.ndarray:
    """A grid of ``block``-pixel cells -> ``shape`` pixels by bilinear interpolation of the cell
    centres; columns wrap around when ``wrap``, edges are held otherwise."""
    rows = _upsample_columns(np.ascontiguousarray(cells.T), block, shape[0], False).T
    return _upsample_columns(np.ascontiguousarray(rows), block, shape[1], wrap)


def ghost_mask(
    image_cells: tuple[np.ndarray, np.ndarray],
    reference_cells: tuple[np.ndarray, np.ndarray],
    *,
    block: int,
    size: int,
    shape: tuple[int, int],
    wrap: bool = False,
) -> np.ndarray:
    """Where an image's radiance intervals miss the reference's: a smooth HxW mask in [0, 1].

    Parameters
    ----------
    image_cells, reference_cells
        (low, high) bounds of the radiance, each averaged over ``block``-pixel cells, in the
        same units for both images (high may be inf: clipped).
    block
        Cell size in pixels.
    size
        Box width of the mask's blur, in cells: how far a mask reaches past what moved.
    shape
        (height, width) of the image in pixels.
    wrap
        A 360° panorama: the mask wraps across the seam.

    Returns
    -------
    np.ndarray
        HxW float32: the gap between the intervals (0 to ``GHOST_RAMP_STOPS`` stops -> 0 to 1),
        lone cells dropped as noise, grown by one cell, box-blurred twice and amplified by
        ``GHOST_GAIN``, so a moving thing is covered whole and the mask fades out smoothly.
    """
    (low, high), (ref_low, ref_high) = image_cells, reference_cells
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(low / ref_high, ref_low / high)  # > 1: the intervals do not overlap
    evidence = np.clip((np.nan_to_num(ratio.max(axis=-1)) - 1) / (2**GHOST_RAMP_STOPS - 1), 0, 1)
    evidence = evidence.astype(np.float32)
    mode = ("nearest", "wrap" if wrap else "nearest")
    neighbourhood = ndimage.uniform_filter(evidence, 3, mode=mode) * 9
    evidence[neighbourhood < LONE_CELLS] = 0
    grown = ndimage.maximum_filter(evidence, 3, mode=mode)
    cells = np.clip(_box_blur(grown, size, wrap) * np.float32(GHOST_GAIN), 0, 1)
    return np.clip(upsample(cells, block, shape, wrap), 0, 1)

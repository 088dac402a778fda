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


def _linear_taps(cells: int, pixels: int, block: int, wrap: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each output pixel: the two cells around its centre and the second one's weight."""
    position = (np.arange(pixels, dtype=np.float32) + 0.5) / block - 0.5
    first = np.floor(position).astype(np.int64)
    weight = position - first
    second = first + 1
    if wrap:
        return first % cells, second % cells, weight
    return np.clip(first, 0, cells - 1), np.clip(second, 0, cells - 1), weight


def upsample(cells: np.ndarray, block: int, shape: tuple[int, int], wrap: bool = False) -> np.ndarray:
    """A grid of ``block``-pixel cells -> ``shape`` pixels by bilinear interpolation of the cell
    centres; columns wrap around when ``wrap``, edges are held otherwise."""
    r0, r1, rw = _linear_taps(cells.shape[0], shape[0], block, False)
    rows = cells[r0] + (cells[r1] - cells[r0]) * rw[:, None]
    c0, c1, cw = _linear_taps(cells.shape[1], shape[1], block, wrap)
    return rows[:, c0] + (rows[:, c1] - rows[:, c0]) * cw


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

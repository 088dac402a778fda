"""Connected regions and distances on equirect masks, where the left and right edges touch.

Functions
---------
- ``wrapped_labels``: 8-connected components of a mask; with ``wrap`` the seam joins them.
- ``inner_distance``: distance in pixels from each masked pixel to the nearest unmasked one,
  measured across the seam when ``wrap`` is set.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["wrapped_labels", "inner_distance"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def _find(parent: dict[int, int], label: int) -> int:
    while parent.get(label, label) != label:
        label = parent[label]
    return label


def wrapped_labels(mask: np.ndarray, wrap: bool = True) -> tuple[np.ndarray, int]:
    """Label 8-connected components of an HxW bool mask; returns (labels, count).

    Labels run from 1 to count with no gaps; 0 is background. With ``wrap``, components that
    touch across the vertical seam (column W-1 next to column 0, rows r-1..r+1) are one.
    """
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if not wrap or count == 0:
        return labels, count
    left, right = labels[:, 0], labels[:, -1]
    parent: dict[int, int] = {}
    for shift in (-1, 0, 1):
        pairs = np.stack([left, np.roll(right, shift)], axis=1)
        if shift == -1:
            pairs = pairs[:-1]
        elif shift == 1:
            pairs = pairs[1:]
        for a, b in pairs[(pairs[:, 0] > 0) & (pairs[:, 1] > 0)]:
            root_a, root_b = _find(parent, int(a)), _find(parent, int(b))
            if root_a != root_b:
                parent[max(root_a, root_b)] = min(root_a, root_b)
    if not parent:
        return labels, count
    roots = np.array([_find(parent, label) for label in range(count + 1)])
    unique_roots, compact = np.unique(roots, return_inverse=True)
    return compact[labels].astype(labels.dtype), len(unique_roots) - 1


def _majority_shrink(mask: np.ndarray, factor: int) -> np.ndarray:
    """True where at least half of each factor x factor block is (counted by strided slices)."""
    height, width = (mask.shape[0] // factor) * factor, (mask.shape[1] // factor) * factor
    cells = np.asarray(mask, bool)[:height, :width].view(np.uint8)
    count = np.zeros((height // factor, width // factor), np.uint16)
    for row in range(factor):
        for col in range(factor):
            count += cells[row::factor, col::factor]
    return count * 2 >= factor * factor


def inner_distance(mask: np.ndarray, wrap: bool = True, max_width: int = 2048) -> np.ndarray:
    """Euclidean distance (pixels) from each True pixel to the nearest False one; 0 outside.

    Only the rows that hold masked pixels are processed; with ``wrap`` the image is padded
    with a quarter of its width from the other side, so distances cross the seam. Masks wider
    than ``max_width`` are measured on a majority-vote copy shrunk by an integer factor and
    scaled back (distances then come in steps of that factor, which smooth uses tolerate).
    """
    factor = -(-mask.shape[1] // max_width)
    if factor > 1:
        small = inner_distance(_majority_shrink(mask, factor), wrap, max_width) * np.float32(factor)
        full = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
        distance = np.zeros(mask.shape, dtype=np.float32)
        distance[: full.shape[0], : full.shape[1]] = full
        return np.where(mask, np.maximum(distance, 1.0), 0.0).astype(np.float32)
    distance = np.zeros(mask.shape, dtype=np.float32)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return distance
    top, bottom = max(rows[0] - 1, 0), min(rows[-1] + 2, mask.shape[0])
    band = mask[top:bottom]
    pad = mask.shape[1] // 4 if wrap else 0
    if pad:
        band = np.pad(band, ((0, 0), (pad, pad)), mode="wrap")
    # The image border is not a boundary: pad with True so that a region touching the top or
    # bottom row keeps growing, as a clipped sky does towards the zenith.
    band = np.pad(band, ((1, 1), (0, 0)), mode="edge")
    inside = ndimage.distance_transform_edt(band).astype(np.float32)[1:-1]
    distance[top:bottom] = inside[:, pad : pad + mask.shape[1]] if pad else inside
    return distance

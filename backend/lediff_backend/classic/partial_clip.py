"""Recover channels that clipped while the other channels of the same pixel did not.

Warm light saturates red first: around a sun or a lamp, a wide band of pixels has red at
255 while green and blue still measure the light. Those channels, and the colour of nearby
unclipped pixels, give the clipped channel back: ``value_c = chroma_c · s`` where ``s`` is
the scale that the unclipped channels imply. Only pixels with every channel clipped stay
unknown; ``expand`` reconstructs those.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..hdr.color import luminance
from ..hdr.projection import sample_equirect

__all__ = ["ClipMasks", "recover_partial_clipping"]

CHROMA_WIDTH = 256  # the reference colour is averaged on a copy about this wide
MAX_RECOVERY = 4.0  # a recovered channel stays within 2 stops of white: ratios are noisy


class ClipMasks:
    """Which channels of an image reach ``clip_level``: per pixel any of them, or all (HxW bool)."""

    def __init__(self, encoded: np.ndarray, clip_level: float) -> None:
        self.clip_level = clip_level
        red, green, blue = (encoded[..., c] >= clip_level for c in range(3))
        self.any = red | green | blue
        self.all = red & green & blue


def _weighted_chroma_blocks(linear: np.ndarray, usable: np.ndarray, factor: int) -> np.ndarray:
    """Block means of (chroma·usable, usable), 4 channels, computed strip by strip.

    Strips keep the full-size temporaries small on 8K panoramas.
    """
    height, width = (linear.shape[0] // factor) * factor, (linear.shape[1] // factor) * factor
    out = np.empty((height // factor, width // factor, 4), dtype=np.float32)
    strip = factor * max(1, 64 // factor)
    for top in range(0, height, strip):
        rows = slice(top, min(top + strip, height))
        pixels = linear[rows, :width]
        weight = usable[rows, :width, None].astype(np.float32)
        chroma = pixels / np.maximum(luminance(pixels), 1e-6)[..., None]
        stacked = np.concatenate([chroma * weight, weight], axis=-1)
        # Rows first, then columns: two short sums are ~10x faster than one mean over (1, 3).
        row_sums = stacked.reshape(stacked.shape[0] // factor, factor, width, 4).sum(axis=1)
        block_sums = row_sums.reshape(row_sums.shape[0], width // factor, factor, 4).sum(axis=2)
        out[top // factor : (rows.stop + factor - 1) // factor] = block_sums * np.float32(1 / factor**2)
    return out


def _reference_chroma(linear: np.ndarray, usable: np.ndarray, wrap: bool) -> np.ndarray:
    """Colour (RGB over luminance) of the usable pixels around, on a small copy.

    A normalised Gaussian on a copy about ``CHROMA_WIDTH`` wide carries the colour of the
    unclipped surroundings a few degrees into clipped areas.
    """
    small = _weighted_chroma_blocks(linear, usable, max(1, linear.shape[1] // CHROMA_WIDTH))
    mode = ("nearest", "wrap" if wrap else "nearest", "constant")
    blurred = ndimage.gaussian_filter(small, sigma=(2.0, 2.0, 0.0), mode=mode)
    return blurred[..., :3] / np.maximum(blurred[..., 3:], 1e-6)


def recover_partial_clipping(linear: np.ndarray, encoded: np.ndarray, masks: ClipMasks, wrap: bool) -> np.ndarray:
    """``linear`` with the clipped channels of partially clipped pixels estimated (in place).

    ``encoded`` holds the display values (to see which channels clipped). Estimates never go
    below the clipped value nor above ``MAX_RECOVERY``.
    """
    rows, cols = np.nonzero(masks.any & ~masks.all)
    if rows.size == 0:
        return linear
    height, width = linear.shape[:2]
    reference = _reference_chroma(linear, ~masks.any, wrap)
    # Sample the small reference at the partial pixels' own (u, v): the sizes need not divide.
    chroma = np.maximum(sample_equirect(reference, (cols + 0.5) / width, 1.0 - (rows + 0.5) / height), 1e-6)
    pixels = linear[rows, cols]
    clipped = encoded[rows, cols] >= masks.clip_level
    # The scale each unclipped channel implies; the largest is the least affected by noise.
    scale = np.where(clipped, 0.0, pixels / chroma).max(axis=-1, keepdims=True)
    linear[rows, cols] = np.where(clipped, np.clip(chroma * scale, pixels, MAX_RECOVERY), pixels)
    return linear

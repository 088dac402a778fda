"""Translation alignment of exposure brackets with median threshold bitmaps (Ward 2003).

A median threshold bitmap marks the pixels brighter than the image's median: it hardly
changes with exposure, so bitmaps of different exposures can be compared directly. Pixels
close to the median flicker with noise and are left out of the comparison. The best shift is
found coarse to fine on an image pyramid, trying the nine one-pixel moves at each level.

Functions
---------
- ``median_threshold_bitmap``: the bitmap of an image and the mask of pixels it is sure of.
- ``mtb_shift``: the whole-pixel (dy, dx) that lays one image over another.
- ``shift_image``: move an image by (dy, dx); rows are padded with their edge, columns too,
  or they wrap around when ``wrap`` is set (a 360° panorama turning about its axis).
- ``align_brackets``: shift every image onto a reference.

Images are HxWx3 display-encoded float32 in [0, 1]; a shift (dy, dx) moves content down
and right, ``shifted[y, x] = image[y - dy, x - dx]``.

References: G. Ward, "Fast, Robust Image Registration for Compositing High Dynamic Range
Photographs from Hand-Held Exposures", Journal of Graphics Tools 8(2), 2003.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..hdr.color import luminance

__all__ = ["median_threshold_bitmap", "mtb_shift", "shift_image", "align_brackets"]

EXCLUSION = 4 / 255  # Ward's noise band around the median, in display values
MIN_LEVEL_SIZE = 16  # the coarsest pyramid level keeps at least this many pixels a side


def median_threshold_bitmap(grey: np.ndarray, exclusion: float = EXCLUSION) -> tuple[np.ndarray, np.ndarray]:
    """HxW ``grey`` -> (pixels above the median, pixels further than ``exclusion`` from it)."""
    median = np.median(grey)
    return grey > median, np.abs(grey - median) > exclusion


def _moved(a: np.ndarray, dy: int, dx: int, wrap: bool, fill) -> np.ndarray:
    """``a`` moved by (dy, dx); uncovered rows (and columns unless ``wrap``) get ``fill``."""
    out = np.roll(a, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = fill(out[dy : dy + 1])
    elif dy < 0:
        out[dy:] = fill(out[dy - 1 : dy])
    if not wrap:
        if dx > 0:
            out[:, :dx] = fill(out[:, dx : dx + 1])
        elif dx < 0:
            out[:, dx:] = fill(out[:, dx - 1 : dx])
    return out


def shift_image(image: np.ndarray, shift: tuple[int, int], *, wrap: bool = False) -> np.ndarray:
    """``image`` moved by ``shift`` = (dy, dx) pixels; uncovered borders repeat their edge."""
    dy, dx = shift
    if dy == 0 and dx == 0:
        return image
    return _moved(image, dy, dx, wrap, fill=lambda edge: edge)


def _pyramid(grey: np.ndarray, levels: int) -> list[np.ndarray]:
    """``levels + 1`` images, full size first, each the 2x2 mean of the one before."""
    out = [grey]
    for _ in range(levels):
        g = out[-1]
        h, w = g.shape[0] // 2 * 2, g.shape[1] // 2 * 2
        out.append(g[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return out


def mtb_shift(
    reference: np.ndarray, image: np.ndarray, *, levels: int | None = None, wrap: bool = False
) -> tuple[int, int]:
    """The (dy, dx) for ``shift_image(image, ...)`` that best lays ``image`` over ``reference``.

    ``levels`` pyramid levels above full size find shifts up to ``2**(levels + 1) - 1``
    pixels (default: as many as keep ``MIN_LEVEL_SIZE`` pixels a side, at most 6). With
    ``wrap`` the horizontal search wraps around, as a 360° panorama does, and the coarsest
    level tries every column, so a panorama may have turned by any angle.
    """
    if levels is None:
        levels = int(np.clip(np.floor(np.log2(min(reference.shape[:2]) / MIN_LEVEL_SIZE)), 0, 6))
    ref_levels = _pyramid(luminance(reference), levels)
    img_levels = _pyramid(luminance(image), levels)
    dy = dx = 0
    for level, (ref, img) in enumerate(zip(reversed(ref_levels), reversed(img_levels))):
        width = ref.shape[1]
        if level == 0 and wrap:  # a panorama may have turned by any angle: try every column
            columns = sorted(range(-(width // 2), width - width // 2), key=abs)
        else:
            columns = (2 * dx, 2 * dx - 1, 2 * dx + 1)
        dy, dx = _best_move(ref, img, (2 * dy, 2 * dy - 1, 2 * dy + 1), columns, wrap)
    return int(dy), int(dx)


def _best_move(ref: np.ndarray, img: np.ndarray, rows, columns, wrap: bool) -> tuple[int, int]:
    """The candidate move with the smallest share of disagreeing sure bits.

    Moves that keep fewer than half the sure pixels of the best-covered move are not
    trusted (a handful of sure pixels agree by chance); ties go to the first candidate.
    """
    ref_bits, ref_sure = median_threshold_bitmap(ref)
    img_bits, img_sure = median_threshold_bitmap(img)
    candidates = [(cy, cx) for cy in rows for cx in columns]
    errors, sure = np.zeros(len(candidates)), np.zeros(len(candidates))
    for k, (cy, cx) in enumerate(candidates):
        both = ref_sure & _moved(img_sure, cy, cx, wrap, fill=np.zeros_like)
        errors[k] = np.count_nonzero((ref_bits ^ _moved(img_bits, cy, cx, wrap, fill=np.zeros_like)) & both)
        sure[k] = np.count_nonzero(both)
    fraction = np.where(sure >= 0.5 * sure.max(), errors / np.maximum(sure, 1), np.inf)
    return candidates[int(np.argmin(fraction))]


def align_brackets(
    images: Sequence[np.ndarray], reference: int, *, wrap: bool = False
) -> tuple[list[np.ndarray], list[tuple[int, int]]]:
    """Every image shifted onto ``images[reference]``; returns the images and their shifts."""
    shifts = [(0, 0) if i == reference else mtb_shift(images[reference], im, wrap=wrap) for i, im in enumerate(images)]
    return [shift_image(im, s, wrap=wrap) for im, s in zip(images, shifts)], shifts

"""Overlapping tiles with feathered blending, optionally wrapping in longitude.

One mechanism serves two jobs: the denoisers run on latent *windows* of the UNet's native size
(averaged every step, MultiDiffusion-style), and the VAE encodes and decodes large images in
*tiles*. With ``wrap=True`` (2:1 equirectangular panoramas) tiles may cross the right edge and
continue at the left one, so column 0 and column W-1 are neighbours like any other pair and no
seam appears at the wrap; a wrapping axis always gets at least two tiles, so every column is
some tile's interior.

Tile outputs are blended with weights that fall off smoothly towards each tile's edges (never
to zero), normalised by the summed weights, so every output pixel is a convex combination.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

__all__ = ["tile_starts", "feather", "map_tiles"]


def tile_starts(length: int, tile: int, min_overlap: int, wrap: bool, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``length`` with at least ``min_overlap``.

    Without wrap the tiles stay inside [0, length) and the first and last touch the ends; with
    wrap they are spread evenly around the circle (at least two). Offsets are multiples of ``align``.
    """
    if tile > length:
        raise ValueError(f"tile {tile} is larger than the axis {length}")
    stride = max(tile - min_overlap, 1)
    if wrap:
        count = max(2, math.ceil(length / stride))
        starts = [round(i * length / count / align) * align % length for i in range(count)]
    else:
        count = 1 if tile == length else math.ceil((length - tile) / stride) + 1
        span = length - tile
        starts = [round(i * span / max(count - 1, 1) / align) * align for i in range(count)]
    return sorted(set(starts))


def feather(size: int, device=None) -> torch.Tensor:
    """1-D blending weights: a raised sine, largest in the middle, small but positive at the ends."""
    x = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    return 0.02 + torch.sin(math.pi * x)


def map_tiles(
    fn: Callable[..., torch.Tensor],
    inputs: Sequence[torch.Tensor],
    tile: tuple[int, int],
    min_overlap: int,
    wrap: bool,
    scale: float = 1.0,
    align: int = 1,
    batch: int = 1,
) -> torch.Tensor:
    """Apply ``fn`` tile by tile to same-sized (N, C, H, W) ``inputs`` and blend the results.

    ``fn(*tiles)`` gets the tiles of every input (at most ``batch`` tiles at a time, along dim 0)
    and returns outputs ``scale`` times their spatial size (8 for a VAE decoder, 1/8 for an
    encoder, 1 for a denoiser). ``tile`` is (height, width) in input pixels, clipped to the input;
    if one tile covers everything and nothing wraps, ``fn`` runs once on the whole input.
    The blend accumulates in float32; the result has the dtype of ``fn``'s output.
    """
    height, width = inputs[0].shape[-2:]
    th, tw = min(tile[0], height), min(tile[1], width)
    rows = tile_starts(height, th, min_overlap, wrap=False, align=align)
    cols = tile_starts(width, tw, min_overlap, wrap=wrap, align=align)
    if len(rows) == 1 and len(cols) == 1:
        return fn(*inputs)
    device = inputs[0].device
    oh, ow, oth, otw = (round(v * scale) for v in (height, width, th, tw))
    weight = (feather(oth, device)[:, None] * feather(otw, device)[None, :])[None, None]
    total = torch.zeros(1, 1, oh, ow, device=device)
    result: torch.Tensor | None = None
    boxes = [(r, c) for r in rows for c in cols]
    batch = math.ceil(len(boxes) / math.ceil(len(boxes) / batch))  # equal chunks: 9 tiles by 8 -> 5 + 4
    for first in range(0, len(boxes), batch):
        chunk = boxes[first : first + batch]
        tiles = [
            torch.cat([x[..., r : r + th, :].index_select(-1, _columns(c, tw, width, device)) for r, c in chunk])
            for x in inputs
        ]
        output = fn(*tiles)
        if result is None:
            result = torch.zeros(inputs[0].shape[0], output.shape[1], oh, ow, device=device)
        for (r, c), out in zip(chunk, output.float().split(inputs[0].shape[0]), strict=True):
            orow, ocols = round(r * scale), _columns(round(c * scale), otw, ow, device)
            result[..., orow : orow + oth, :].index_add_(-1, ocols, out * weight)
            total[..., orow : orow + oth, :].index_add_(-1, ocols, weight.expand(1, 1, oth, otw))
    return (result / total).to(output.dtype)


def _columns(start: int, size: int, width: int, device) -> torch.Tensor:
    """Column indices of a tile starting at ``start``, wrapping past the right edge."""
    return torch.arange(start, start + size, device=device) % width

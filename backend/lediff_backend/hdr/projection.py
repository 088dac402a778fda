"""Equirectangular panoramas in Blender's orientation, and projections to other views.

Direction ``d`` (Blender world: +Z up, image centre looking along +X) maps to
``u = -atan2(d.y, d.x)/(2π) + 0.5``, ``v = atan2(d.z, hypot(d.x, d.y))/π + 0.5``;
v = 1 is the top row (zenith). Pixel (row r, column c) of an HxW image has its centre at
``u = (c + 0.5)/W``, ``v = 1 - (r + 0.5)/H``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "direction_to_uv",
    "uv_to_direction",
    "equirect_directions",
    "solid_angle_weights",
]


def direction_to_uv(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ...x3 directions (need not be unit length) to equirect (u, v) in [0, 1]."""
    d = np.asarray(directions, dtype=np.float64)
    x, y, z = d[..., 0], d[..., 1], d[..., 2]
    u = -np.arctan2(y, x) / (2 * np.pi) + 0.5
    v = np.arctan2(z, np.hypot(x, y)) / np.pi + 0.5
    return u, v


def uv_to_direction(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of ``direction_to_uv``: unit directions, shape (...)x3, float32."""
    azimuth = (0.5 - np.asarray(u, dtype=np.float64)) * 2 * np.pi
    elevation = (np.asarray(v, dtype=np.float64) - 0.5) * np.pi
    cos_el = np.cos(elevation)
    out = np.stack([cos_el * np.cos(azimuth), cos_el * np.sin(azimuth), np.sin(elevation)], axis=-1)
    return out.astype(np.float32)


def equirect_directions(height: int, width: int) -> np.ndarray:
    """Unit direction of every pixel centre of an HxW equirect image, HxWx3 float32."""
    u = (np.arange(width) + 0.5) / width
    v = 1.0 - (np.arange(height) + 0.5) / height
    return uv_to_direction(u[None, :], v[:, None])


def solid_angle_weights(height: int, width: int) -> np.ndarray:
    """Solid angle in steradians of each pixel row, Hx1 float64; sums to 4π over HxW pixels."""
    edges = np.pi / 2 - np.arange(height + 1) * np.pi / height  # elevation of row edges, top first
    band = np.sin(edges[:-1]) - np.sin(edges[1:])  # exact area of each latitude band / 2π
    return (band * 2 * np.pi / width)[:, None]

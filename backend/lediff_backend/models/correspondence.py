"""Pinhole cameras of a view ring and the pixel correspondences between them (numpy only).

MVDiffusion (NeurIPS 2023) generates a panorama as ``num_views`` perspective views that share
one centre: square, 90° field of view, yaw step 45°. Views differ only by a rotation, so a
pixel of one view maps to another view through the homography ``K_b R_bᵀ R_a K_a⁻¹``; the
correspondence-aware attention (``models.caa``) gathers, for every feature cell of a view, a
small neighbourhood of features around the corresponding point in each of its two ring
neighbours, plus the offsets of those samples seen from the query view.

Conventions
-----------
- Image pixel coordinates ``(x, y)`` = (column, row), pixel centres at integers, x to the right,
  y down; ``K = [[f, 0, (W-1)/2], [0, f, (H-1)/2], [0, 0, 1]]`` with ``f = W / (2 tan(fov/2))``
  (``fov`` horizontal, square pixels), as in MVDiffusion's ``get_K_R``.
- ``R`` rotates camera coordinates (OpenCV: x right, y down, z forward) to Blender world
  coordinates (+Z up). Yaw and pitch are those of ``hdr.projection``'s cameras, so
  ``R @ inv(K) @ (x, y, 1)`` points along ``perspective_directions(...)[y, x]``.
- Ring view ``i`` has yaw ``-i * step``: each view lies to the *right* of the previous one, as
  MVDiffusion's views do (its view ``i`` turns ``45° · i`` clockwise seen from above), so the
  official weights see neighbours where they were trained to. View 0 looks along +X, the
  centre of the panorama.
- A feature map ``s`` times smaller than the image has cell ``(i, j)`` centred on image pixel
  ``((j + 0.5) s - 0.5, (i + 0.5) s - 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "RING_VIEWS",
    "RING_FOV_DEG",
    "RING_YAW_STEP_DEG",
    "ring_yaws",
    "intrinsics",
    "rotation",
    "homography",
    "apply_homography",
    "NeighbourSamples",
    "neighbour_samples",
]

RING_VIEWS = 8
RING_FOV_DEG = 90.0
RING_YAW_STEP_DEG = 45.0


def ring_yaws(num_views: int = RING_VIEWS, yaw_step_deg: float = RING_YAW_STEP_DEG) -> np.ndarray:
    """Yaw in degrees (``hdr.projection``'s convention) of each view of the ring: ``-i * step``."""
    return -yaw_step_deg * np.arange(num_views, dtype=np.float64)


def intrinsics(height: int, width: int, fov_deg: float) -> np.ndarray:
    """3x3 float64 pinhole matrix of a ``width`` x ``height`` view with horizontal ``fov_deg``."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    focal = width / (2 * np.tan(np.radians(fov_deg) / 2))
    return np.array([[focal, 0, (width - 1) / 2], [0, focal, (height - 1) / 2], [0, 0, 1]], np.float64)


def rotation(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """3x3 float64 camera (x right, y down, z forward) -> world rotation; columns right, down, forward."""
    yaw, pitch = np.radians([yaw_deg, pitch_deg])
    forward = np.array([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(forward, right)  # = -up
    return np.stack([right, down, forward], axis=1)


def homography(k_from: np.ndarray, r_from: np.ndarray, k_to: np.ndarray, r_to: np.ndarray) -> np.ndarray:
    """3x3 map from pixel coordinates of one view to those of another sharing its centre."""
    return k_to @ r_to.T @ r_from @ np.linalg.inv(k_from)


def apply_homography(matrix: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ...x2 pixel coordinates; returns the mapped ...x2 points and where they lie in front
    of the target camera (behind it the division flips them; those points are meaningless)."""
    points = xy @ matrix[:, :2].T + matrix[:, 2]
    depth = points[..., 2:]
    in_front = depth[..., 0] > 1e-9
    return points[..., :2] / np.where(in_front[..., None], depth, 1.0), in_front


@dataclass(frozen=True)
class NeighbourSamples:
    """Where one query view reads one key view, for a feature map of ``h`` x ``w`` cells.

    ``grid``: (h, w, k, 2) float32 continuous key-view feature coordinates (x, y) of the ``k``
    samples of each query cell (cell centres at integers). ``offsets``: (h, w, k, 2) float32 the
    same samples mapped back into the query view, relative to the query cell, in query cells
    (0 where invalid). ``valid``: (h, w, k) bool, the sample lies inside the key image and in
    front of both cameras.
    """

    grid: np.ndarray
    offsets: np.ndarray
    valid: np.ndarray


def neighbour_samples(
    query_to_key: np.ndarray, image_hw: tuple[int, int], feature_hw: tuple[int, int], radius: int = 1
) -> NeighbourSamples:
    """The (2 radius + 1)² feature samples around each query cell's corresponding point.

    ``query_to_key`` is the pixel homography from the query view to the key view (``homography``),
    both views ``image_hw`` pixels; the feature maps are ``feature_hw`` cells (the same scale in
    both directions). The neighbourhood steps whole key cells around the (continuous) projected
    cell centre, as MVDiffusion's 3x3 kernel does.
    """
    (height, width), (rows, cols) = image_hw, feature_hw
    scale = height / rows
    if abs(width / cols - scale) > 1e-9:
        raise ValueError(f"feature map {feature_hw} is not a uniform scale of the image {image_hw}")
    centres_x = (np.arange(cols) + 0.5) * scale - 0.5
    centres_y = (np.arange(rows) + 0.5) * scale - 0.5
    query = np.stack(np.meshgrid(centres_x, centres_y), axis=-1)  # (h, w, 2) image pixels
    projected, front = apply_homography(query_to_key, query)
    steps = np.arange(-radius, radius + 1)
    kernel = np.stack(np.meshgrid(steps, steps), axis=-1).reshape(-1, 2)  # (k, 2) cell steps (x, y)
    # Key samples in key image pixels: whole key cells around the projected point.
    samples = projected[:, :, None, :] + kernel * scale
    inside = (samples >= -0.5).all(-1) & (samples[..., 0] <= width - 0.5) & (samples[..., 1] <= height - 0.5)
    back, back_front = apply_homography(np.linalg.inv(query_to_key), samples)
    valid = inside & front[:, :, None] & back_front
    offsets = np.where(valid[..., None], (back - query[:, :, None, :]) / scale, 0.0)
    grid = np.where(valid[..., None], (samples + 0.5) / scale - 0.5, -2.0)  # invalid: outside, reads 0
    return NeighbourSamples(grid.astype(np.float32), offsets.astype(np.float32), valid)

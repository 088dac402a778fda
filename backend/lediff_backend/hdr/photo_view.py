"""A normal photo as one view of a panorama: its field of view, its square view, pasting it back.

Photo -> panorama (MVDiffusion's outpainting) treats the photo as the view looking along +X
(the panorama's centre), level. The photo becomes view 0 of the view ring (a square, usually
90°, view): where it covers that view its pixels are known, the rest is generated; at the end
the photo itself is pasted into the panorama with a feathered border, so the pixels the user
gave stay exactly theirs.

Functions
---------
- ``photo_fov_deg``: horizontal field of view from the 35 mm-equivalent focal length.
- ``photo_to_view``: the photo seen by a square view with the same axis; and where it is known.
- ``paste_photo``: blend the photo into an equirect panorama at its place.

Images are HxWxC float32 (display-encoded for photos); cameras as in ``projection``.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import map_coordinates

from .projection import perspective_to_equirect, resize_equirect

__all__ = ["FULL_FRAME_HALF_DIAGONAL_MM", "photo_fov_deg", "photo_to_view", "paste_photo"]

FULL_FRAME_HALF_DIAGONAL_MM = float(np.hypot(36.0, 24.0) / 2)  # 35 mm equivalents are by the diagonal
FEATHER = 0.08  # share of the photo's half-size over which its pasted border fades


def photo_fov_deg(width: int, height: int, focal_length_35mm: float) -> float:
    """Horizontal field of view in degrees of a ``width`` x ``height`` photo with the given
    35 mm-equivalent focal length (the image diagonal maps to the full-frame diagonal)."""
    if focal_length_35mm <= 0:
        raise ValueError(f"focal length must be positive, got {focal_length_35mm}")
    half_width_mm = FULL_FRAME_HALF_DIAGONAL_MM * width / np.hypot(width, height)
    return float(np.degrees(2 * np.arctan(half_width_mm / focal_length_35mm)))


def _shrunk(photo: np.ndarray, width: int) -> np.ndarray:
    """Area-average a photo down to ``width`` columns (aspect kept); never enlarges."""
    return resize_equirect(photo, width) if width < photo.shape[1] else np.asarray(photo, np.float32)


def photo_to_view(photo: np.ndarray, fov_deg: float, size: int, view_fov_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo (horizontal ``fov_deg``) as seen by a ``size``² view of ``view_fov_deg`` on the same axis.

    Returns
    -------
    view : size x size x C float32, edge pixels repeated outside the photo.
    known : size x size float32, 1 where the view sees the photo, else 0.
    """
    tan_view = np.tan(np.radians(view_fov_deg) / 2)
    tan_photo = np.tan(np.radians(fov_deg) / 2)
    photo = _shrunk(photo, int(np.ceil(size * tan_photo / tan_view)))  # about one photo pixel per view pixel
    height, width = photo.shape[:2]
    t = ((np.arange(size) + 0.5) / size * 2 - 1) * tan_view  # tan of each view pixel's angle
    cols = (t / tan_photo + 1) * (width / 2) - 0.5
    rows = (t / (tan_photo * height / width) + 1) * (height / 2) - 0.5
    grid_rows, grid_cols = np.meshgrid(rows, cols, indexing="ij")
    known = (grid_cols >= -0.5) & (grid_cols <= width - 0.5) & (grid_rows >= -0.5) & (grid_rows <= height - 0.5)
    channels = [photo[..., c] for c in range(photo.shape[2])]
    view = np.stack([map_coordinates(c, [grid_rows, grid_cols], order=1, mode="nearest") for c in channels], axis=-1)
    return view.astype(np.float32), known.astype(np.float32)


def _feather(n: int) -> np.ndarray:
    """1 inside, smoothly to 0 over the outer ``FEATHER`` of each half."""
    t = 1 - np.abs((np.arange(n) + 0.5) / n * 2 - 1)
    ramp = np.clip(t / FEATHER, 0.0, 1.0)
    return ramp * ramp * (3 - 2 * ramp)


def paste_photo(panorama: np.ndarray, photo: np.ndarray, fov_deg: float) -> np.ndarray:
    """``panorama`` (HxWxC equirect) with the photo blended in at yaw 0 with a feathered border."""
    out_height, out_width = panorama.shape[:2]
    photo = _shrunk(photo, int(np.ceil(out_width * fov_deg / 360.0)))
    alpha = (_feather(photo.shape[0])[:, None] * _feather(photo.shape[1])[None, :])[..., None].astype(np.float32)
    painted, _ = perspective_to_equirect(np.concatenate([photo * alpha, alpha], -1), out_height, out_width, fov_deg)
    weight = painted[..., -1:]
    return (panorama * (1 - weight) + painted[..., :-1]).astype(np.float32)

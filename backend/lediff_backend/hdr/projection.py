"""Equirectangular panoramas in Blender's orientation, and projections to other views.

Direction ``d`` (Blender world: +Z up, image centre looking along +X) maps to
``u = -atan2(d.y, d.x)/(2π) + 0.5``, ``v = atan2(d.z, hypot(d.x, d.y))/π + 0.5``;
v = 1 is the top row (zenith). Pixel (row r, column c) of an HxW image has its centre at
``u = (c + 0.5)/W``, ``v = 1 - (r + 0.5)/H``.

Functions
---------
- ``direction_to_uv`` / ``uv_to_direction``, ``equirect_directions``, ``solid_angle_weights``.
- ``sample_equirect``: bilinear lookup at any (u, v), periodic in u, clamped in v.
- ``perspective_directions``, ``equirect_to_perspective``, ``perspective_to_equirect``:
  a pinhole camera at the origin (see "Cameras" below).
- ``equirect_to_cubemap`` / ``cubemap_to_equirect``: six 90° views in ``CUBE_FACES`` order.
- ``resize_equirect``: exact area averaging when shrinking, bilinear when growing.
- ``fast_sampler``, ``clear_caches``: see "Speed" below.

Cameras
-------
``yaw_deg`` is the azimuth of the view axis about +Z, from +X toward +Y (yaw 90 looks along
+Y, at u = 0.25, left of the panorama centre); ``pitch_deg`` its elevation (positive looks
up); ``roll_deg`` turns the camera about its view axis, counter-clockwise as the viewer
behind it sees it, so the picture turns **clockwise** for positive roll. This equals a
Blender camera with ``rotation_euler = (90° + pitch, 0, yaw − 90°)`` in XYZ order followed by a
local rotation of ``roll`` about its own Z axis (a Blender camera looks down its local −Z).
``fov_deg`` is the horizontal field of view (Blender: ``sensor_fit='HORIZONTAL'``, square
pixels). Image row 0 is the top, column 0 the viewer's left; at yaw = pitch = roll = 0 the
image right is −Y and image up is +Z.

Cube faces (``CUBE_FACES``): each face is a 90° view with roll 0. The side faces ``+X``,
``-X``, ``+Y``, ``-Y`` (yaw 0, 180, 90, −90) have +Z as their up vector. ``+Z`` and ``-Z``
are the ``+X`` face pitched up and down by 90°: both have −Y at their right edge; ``+Z`` has
−X as its up vector (its bottom edge meets the top of ``+X``) and ``-Z`` has +X (its top edge
meets the bottom of ``+X``). This is py360convert's dice layout around its front face.

All images are HxWxC float32 (any C); outputs are float32.

Speed
-----
``equirect_to_perspective`` and ``equirect_to_cubemap`` keep the lookup positions of the last
few geometries (image shape and view; ``_CACHED_GEOMETRIES``, ``clear_caches``), so a repeated
view only gathers and blends. The default lookup is exact bilinear in float32 (what Blender
computes). ``fast=True`` hands the lookup to OpenCV's ``cv2.remap`` where OpenCV is installed
(``fast_sampler`` says which runs): half the CPU time on big views or less, and spread over
OpenCV's threads, but it rounds the sample positions to 1/32 pixel, so it differs from the
exact lookup by up to 1/32 of the largest difference between neighbouring pixels (py360convert
samples the same way when OpenCV is present). Without OpenCV ``fast=True`` is the exact lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache, partial
from typing import NamedTuple

import numpy as np

__all__ = [
    "direction_to_uv",
    "uv_to_direction",
    "equirect_directions",
    "solid_angle_weights",
    "sample_equirect",
    "perspective_directions",
    "equirect_to_perspective",
    "perspective_to_equirect",
    "CUBE_FACES",
    "CUBE_FACE_ANGLES",
    "equirect_to_cubemap",
    "cubemap_to_equirect",
    "resize_equirect",
    "fast_sampler",
    "clear_caches",
]

CUBE_FACES = ("+X", "-X", "+Y", "-Y", "+Z", "-Z")
CUBE_FACE_ANGLES = {  # face -> (yaw_deg, pitch_deg) of its 90° view; roll is 0
    "+X": (0.0, 0.0),
    "-X": (180.0, 0.0),
    "+Y": (90.0, 0.0),
    "-Y": (-90.0, 0.0),
    "+Z": (0.0, 90.0),
    "-Z": (0.0, -90.0),
}

_BLOCK = 1 << 14  # sample points per block of a bilinear lookup: keeps its temporaries in cache
# Geometries (image shape, view, fast) whose lookup positions stay cached, per kind of view: 16
# bytes per output pixel for the exact lookup (96 MB for a cube of 6 x 1024² faces), 6 for the fast one.
_CACHED_GEOMETRIES = 4


def _equirect_pixels(x: np.ndarray, y: np.ndarray, z: np.ndarray, height: int, width: int):
    """Continuous (col, row) in an HxW equirect image of directions given as component arrays.

    Pixel centres are at integers; col spans [-0.5, W - 0.5], row [-0.5, H - 0.5]. Computed in
    the inputs' float precision (float32 stays float32).
    """
    kind = np.result_type(x, np.float32).type
    col = np.arctan2(y, x)
    col *= kind(-width / (2 * np.pi))
    col += kind(width / 2 - 0.5)
    horizontal = x * x
    horizontal += y * y
    row = np.arctan2(z, np.sqrt(horizontal))
    row *= kind(-height / np.pi)
    row += kind(height / 2 - 0.5)
    return col, row


def direction_to_uv(directions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map ...x3 directions (need not be unit length) to equirect (u, v) in [0, 1].

    float32 input is computed in float32 (fast for big maps), anything else in float64;
    lengths beyond 1e18 (float32) overflow.
    """
    d = np.asarray(directions)
    d = d if d.dtype == np.float32 else d.astype(np.float64)
    col, row = _equirect_pixels(d[..., 0], d[..., 1], d[..., 2], 1, 1)
    return col + 0.5, 0.5 - row


def uv_to_direction(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inverse of ``direction_to_uv``: unit directions, shape (...)x3, float32."""
    u, v = np.broadcast_arrays(np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64))
    azimuth = (0.5 - u) * 2 * np.pi
    elevation = (v - 0.5) * np.pi
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


# --- bilinear lookup ---------------------------------------------------------------------


class _Taps(NamedTuple):
    """Where a bilinear lookup reads and how it blends: everything but the pixel values.

    ``left`` and ``right`` are the flat element indices of channel 0 of the upper-left and
    upper-right samples (``right`` has already wrapped across the seam or clamped at the edge);
    the lower samples sit one image row further on. The lower row and the right column get the
    weights ``row_weight`` and ``col_weight``. Indices are int32 where the image allows (half
    the memory of a cached geometry), weights float32.
    """

    left: np.ndarray
    right: np.ndarray
    col_weight: np.ndarray
    row_weight: np.ndarray

    def part(self, start: int, stop: int) -> _Taps:
        """The taps of sample points ``start`` to ``stop``."""
        return _Taps(*(field[start:stop] for field in self))


@lru_cache(8)
def _column_offsets(width: int, channels: int, wrap: bool, index_type: type) -> np.ndarray:
    """Flat element offsets of the columns at positions -width-1 .. 2·width of an image row.

    Position p is stored at index p + width + 1; positions outside [0, width) wrap around or
    clamp to the edge, so a lookup in this table wraps or clamps a column for the price of a
    gather. Looked up with ``mode="clip"``, positions further out get the outermost entries.
    """
    positions = np.arange(-width - 1, 2 * width + 1)
    positions = positions % width if wrap else np.clip(positions, 0, width - 1)
    return (positions * channels).astype(index_type)


def _block_taps(col: np.ndarray, row: np.ndarray, shape: tuple[int, int, int], wrap: bool, index_type: type) -> _Taps:
    """``_taps`` of one block of float32 coordinates, with indices of ``index_type``."""
    height, width, channels = shape
    row = np.clip(row, 0, height - 1)  # beyond the outer row centres the edge row repeats
    top = np.minimum(np.floor(row), max(height - 2, 0))  # the lower row always exists
    row_weight = row - top
    left = np.floor(col)
    col_weight = col - left
    columns = _column_offsets(width, channels, wrap, index_type)
    position = left.astype(np.intp)
    position += width + 1
    left = columns.take(position, mode="clip")
    position += 1
    right = columns.take(position, mode="clip")
    top = top.astype(index_type)
    top *= width * channels
    left += top
    right += top
    return _Taps(left, right, col_weight, row_weight)


def _taps(col, row, shape: tuple[int, int, int], wrap: bool) -> _Taps:
    """Bilinear taps in an HxWxC image at pixel coordinates (pixel centres at integers).

    Rows clamp: beyond the outer pixel centres the edge row repeats. With ``wrap`` the
    columns are periodic (for coordinates up to one image width outside), otherwise they clamp
    like the rows. The upper row is chosen so that the lower one always lies inside the image
    (its weight may reach 1), which lets ``_blend`` read it at a fixed offset. Computed in
    cache-sized blocks.
    """
    col = np.asarray(col, np.float32).ravel()
    row = np.asarray(row, np.float32).ravel()
    index_type = np.int32 if np.prod(shape) < 2**31 else np.intp  # int32: half the memory when cached
    taps = _Taps(*(np.empty(col.size, kind) for kind in (index_type, index_type, np.float32, np.float32)))
    for start in range(0, col.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        for field, values in zip(taps, _block_taps(col[block], row[block], shape, wrap, index_type)):
            field[block] = values
    for field in taps:
        field.flags.writeable = False  # cached taps are shared between calls
    return taps


def _lerp_into(a: np.ndarray, b: np.ndarray, t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a + (b - a)·t``, computed in place in ``b`` (or written to ``out``)."""
    b -= a
    b *= t
    return np.add(b, a, out=b if out is None else out)


def _lerp_pair(elements: np.ndarray, left: np.ndarray, right: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Blend of ``elements`` at ``left`` and ``right`` with ``weight`` on the right ones.

    ``mode="clip"`` only matters for NaN positions: they give NaN rather than an IndexError.
    """
    return _lerp_into(elements.take(left, mode="clip"), elements.take(right, mode="clip"), weight)


def _blend(image: np.ndarray, taps: _Taps, out: np.ndarray) -> None:
    """Fill ``out`` (n x C, any strides) with the bilinear lookups ``taps`` of an HxWxC image.

    Each channel is gathered as a plane through views of the flat image that start at that
    channel (upper samples) and one image row further on (lower samples), so the four reads
    of a sample share the same two index arrays.
    """
    height, width, channels = image.shape
    elements = image.reshape(-1)
    row_step = width * channels if height > 1 else 0
    upper = [elements[channel:] for channel in range(channels)]
    lower = [elements[row_step + channel :] for channel in range(channels)]
    for start in range(0, len(taps.left), _BLOCK):
        block = taps.part(start, start + _BLOCK)
        left, right = block.left.astype(np.intp, copy=False), block.right.astype(np.intp, copy=False)
        for channel in range(channels):
            above = _lerp_pair(upper[channel], left, right, block.col_weight)
            below = _lerp_pair(lower[channel], left, right, block.col_weight)
            _lerp_into(above, below, block.row_weight, out=out[start : start + _BLOCK, channel])


def _lookup(image: np.ndarray, taps: _Taps, shape: tuple[int, ...]) -> np.ndarray:
    """The lookups ``taps`` of a float32 HxWxC image, as a new ``shape + (C,)`` array."""
    out = np.empty((*shape, image.shape[2]), np.float32)
    _blend(image, taps, out.reshape(-1, image.shape[2]))
    return out


def _bilinear(image: np.ndarray, col, row, wrap: bool) -> np.ndarray:
    """Bilinear lookup of an HxWxC image at pixel coordinates (pixel centres at integers).

    Returns ``broadcast(col, row).shape + (C,)`` float32. See ``_taps`` for the edges. The
    taps are made and used block by block, so that big lookups need little memory beyond
    their result.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    col, row = np.broadcast_arrays(np.asarray(col, np.float32), np.asarray(row, np.float32))
    out = np.empty((*col.shape, image.shape[2]), np.float32)
    flat_out = out.reshape(-1, image.shape[2])
    col, row = col.ravel(), row.ravel()
    for start in range(0, col.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        _blend(image, _block_taps(col[block], row[block], image.shape, wrap, np.intp), flat_out[block])
    return out


def sample_equirect(image: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an HxWxC equirect image at (u, v) (any broadcastable shapes).

    Periodic in u (the seam at u = 0 = 1 blends the last and first columns), clamped in v
    (half a pixel around each pole repeats the first or last row). Pixel centres lie at
    ``u = (c + 0.5)/W``, ``v = 1 - (r + 0.5)/H``, where the lookup returns the pixel itself.
    This is Blender's Environment Texture with Linear interpolation, except that Cycles also
    wraps v: within half a pixel of a pole it blends in the opposite pole's row.

    Returns
    -------
    ``broadcast(u, v).shape + (C,)`` float32.
    """
    height, width = np.shape(image)[:2]
    u = np.asarray(u, np.float32)
    col = (u - np.floor(u)) * np.float32(width) - np.float32(0.5)
    row = (np.float32(1) - np.asarray(v, np.float32)) * np.float32(height) - np.float32(0.5)
    return _bilinear(image, col, row, wrap=True)


# --- cached lookups of whole views ------------------------------------------------------


@lru_cache(1)
def _opencv():
    """OpenCV's module, or None where it is not installed (it is an optional dependency)."""
    try:
        import cv2
    except ImportError:
        return None
    return cv2


def fast_sampler() -> str:
    """What ``fast=True`` samples with on this machine: ``"opencv"``, or ``"exact"`` without OpenCV."""
    return "exact" if _opencv() is None else "opencv"


def clear_caches() -> None:
    """Forget the lookup positions kept for repeated views and cube maps (frees their memory)."""
    _perspective_sampler.cache_clear()
    _cube_sampler.cache_clear()


def _remap(image: np.ndarray, maps: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """OpenCV's bilinear remap of an HxWxC float32 image with fixed-point ``maps``: ``shape + (C,)``."""
    cv2 = _opencv()
    out = cv2.remap(image, *maps, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    return out.reshape(*shape, image.shape[2])


def _sampler(col: np.ndarray, row: np.ndarray, shape: tuple[int, int, int], fast: bool):
    """A function from an image of ``shape`` to its lookups at the pixel coordinates (col, row).

    The result has the coordinates' shape plus the channels. Columns wrap, rows clamp. The
    exact lookup keeps its taps (16 bytes per point); the fast one keeps OpenCV's fixed-point
    maps (6 bytes per point) of the columns wrapped into the image, so that ``cv2.remap``
    takes its slower border path only at the seam.
    """
    height, width = shape[:2]
    points = col.shape
    if not (fast and _opencv() is not None and max(height, width) < 2**15):  # the maps hold int16
        return partial(_lookup, taps=_taps(col, row, shape, wrap=True), shape=points)
    planar = (-1, points[-1])  # cv2.remap takes 2-D maps
    col = col.reshape(planar) - np.floor(col.reshape(planar) / np.float32(width)) * np.float32(width)
    row = np.clip(row.reshape(planar), 0, height - 1)
    cv2 = _opencv()
    return partial(_remap, maps=cv2.convertMaps(col, row, cv2.CV_16SC2), shape=points)


# --- pinhole cameras ---------------------------------------------------------------------


def _camera_basis(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """3x3 float64, rows: the camera's right, up and forward vectors in world coordinates."""
    yaw, pitch, roll = np.radians([yaw_deg, pitch_deg, roll_deg])
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    forward = np.array([cp * cy, cp * sy, sp])
    level_right = np.array([sy, -cy, 0.0])  # horizontal, forward × +Z
    level_up = np.array([-sp * cy, -sp * sy, cp])
    cr, sr = np.cos(roll), np.sin(roll)
    # Counter-clockwise as seen from behind: up leans toward the left, right toward up.
    right = cr * level_right + sr * level_up
    up = cr * level_up - sr * level_right
    return np.stack([right, up, forward])


def _tan_half_fovs(width: int, height: int, fov_deg: float) -> tuple[float, float]:
    """tan of half the horizontal and vertical field of view (square pixels)."""
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    tan_x = float(np.tan(np.radians(fov_deg) / 2))
    return tan_x, tan_x * height / width


def _camera_rays(width: int, height: int, fov_deg: float, basis: np.ndarray) -> list[np.ndarray]:
    """World x, y, z (three HxW float32 arrays) of rays through the pixel centres.

    The rays are not normalised: their component along the view axis is 1.
    """
    tan_x, tan_y = _tan_half_fovs(width, height, fov_deg)
    x = (((np.arange(width) + 0.5) * (2 / width) - 1) * tan_x).astype(np.float32)[None, :]
    y = ((1 - (np.arange(height) + 0.5) * (2 / height)) * tan_y).astype(np.float32)[:, None]
    right, up, forward = basis.astype(np.float32)
    return [x * r + (y * u + f) for r, u, f in zip(right, up, forward)]


def _view_pixels(local: np.ndarray, width: int, height: int, fov_deg: float):
    """Continuous pixel (col, row) of camera-local rays (right, up, forward), forward > 0."""
    tan_x, tan_y = _tan_half_fovs(width, height, fov_deg)
    forward = local[..., 2]
    col = (local[..., 0] / (forward * tan_x) + 1) * (width / 2) - 0.5
    row = (1 - local[..., 1] / (forward * tan_y)) * (height / 2) - 0.5
    return col, row


def _world_to_camera(directions: np.ndarray, yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """...x3 world directions in camera coordinates (right, up, forward), float32."""
    return directions @ _camera_basis(yaw_deg, pitch_deg, roll_deg).T.astype(np.float32)


def perspective_directions(
    width: int, height: int, fov_deg: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0, roll_deg: float = 0.0
) -> np.ndarray:
    """Unit world directions of the pixel centres of a pinhole camera, HxWx3 float32.

    ``fov_deg`` is horizontal; yaw, pitch and roll as in the module docstring ("Cameras").
    """
    rays = np.stack(_camera_rays(width, height, fov_deg, _camera_basis(yaw_deg, pitch_deg, roll_deg)), axis=-1)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


@lru_cache(_CACHED_GEOMETRIES)
def _perspective_sampler(
    shape: tuple[int, int, int],
    width: int,
    height: int,
    fov_deg: float,
    yaw_deg: float,
    pitch_deg: float,
    roll_deg: float,
    fast: bool,
) -> Callable[[np.ndarray], np.ndarray]:
    """``equirect_to_perspective``'s lookup in an image of ``shape``, kept for repeated views."""
    rays = _camera_rays(width, height, fov_deg, _camera_basis(yaw_deg, pitch_deg, roll_deg))
    return _sampler(*_equirect_pixels(*rays, *shape[:2]), shape, fast)


def equirect_to_perspective(
    image: np.ndarray,
    width: int,
    height: int,
    fov_deg: float,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
    *,
    fast: bool = False,
) -> np.ndarray:
    """Render an HxWxC equirect image through a pinhole camera: height x width x C float32.

    What Blender renders with this camera in a world lit by the same image (Linear
    interpolation), see the module docstring for the angles. ``fast`` trades exactness for
    speed, see "Speed" in the module docstring.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    angles = (float(fov_deg), float(yaw_deg), float(pitch_deg), float(roll_deg))  # hashable, also from numpy
    return _perspective_sampler(image.shape, int(width), int(height), *angles, bool(fast))(image)


def perspective_to_equirect(
    view: np.ndarray,
    out_height: int,
    out_width: int,
    fov_deg: float,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint an HxWxC perspective view into an equirect image (the inverse of
    ``equirect_to_perspective`` with the same angles).

    Returns
    -------
    image : out_height x out_width x C float32, 0 outside the view.
    mask : out_height x out_width float32 coverage: 1 where the pixel centre's direction
        falls inside the view's image rectangle, else 0.
    """
    height, width = view.shape[:2]
    local = _world_to_camera(equirect_directions(out_height, out_width), yaw_deg, pitch_deg, roll_deg)
    front = local[..., 2] > 1e-6
    col, row = _view_pixels(local[front], width, height, fov_deg)
    inside = (col >= -0.5) & (col <= width - 0.5) & (row >= -0.5) & (row <= height - 0.5)
    covered = np.zeros((out_height, out_width), bool)
    covered[front] = inside
    image = np.zeros((out_height, out_width, view.shape[2]), np.float32)
    image[covered] = _bilinear(view, col[inside], row[inside], wrap=False)
    return image, covered.astype(np.float32)


# --- cube maps ---------------------------------------------------------------------------


@lru_cache(_CACHED_GEOMETRIES)
def _cube_sampler(shape: tuple[int, int, int], face_size: int, fast: bool) -> Callable[[np.ndarray], np.ndarray]:
    """``equirect_to_cubemap``'s lookup in an image of ``shape``, all six faces in order.

    The lookup coordinates are computed for ``+X`` and ``+Z`` only; the other faces follow by
    symmetry (their coordinates then differ from the direct ones in float32's last bits).
    """
    height, width = shape[:2]

    def lookup_coordinates(name: str):
        rays = _camera_rays(face_size, face_size, 90.0, _camera_basis(*CUBE_FACE_ANGLES[name], 0.0))
        return _equirect_pixels(*rays, height, width)

    side_col, side_row = lookup_coordinates("+X")
    top_col, top_row = lookup_coordinates("+Z")
    coordinates = {  # columns may leave [0, W): the lookup wraps them
        "+X": (side_col, side_row),
        "-X": (side_col - np.float32(width / 2), side_row),  # yaw 180°: u + 1/2
        "+Y": (side_col - np.float32(width / 4), side_row),  # yaw 90°: u - 1/4
        "-Y": (side_col + np.float32(width / 4), side_row),
        "+Z": (top_col, top_row),
        # -Z sees +Z's rays with x and z negated: azimuth π - a, elevation negated.
        "-Z": (np.float32(width / 2 - 1) - top_col, np.float32(height - 1) - top_row),
    }
    col, row = (np.stack([coordinates[name][axis] for name in CUBE_FACES]) for axis in (0, 1))
    return _sampler(col, row, shape, fast)


def equirect_to_cubemap(image: np.ndarray, face_size: int, *, fast: bool = False) -> np.ndarray:
    """Six 90° views of an HxWxC equirect image: (6, F, F, C) float32 in ``CUBE_FACES`` order.

    Face orientations are in the module docstring. Each face equals ``equirect_to_perspective``
    with its ``CUBE_FACE_ANGLES``. ``fast`` trades exactness for speed, see "Speed" in the
    module docstring.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    return _cube_sampler(image.shape, int(face_size), bool(fast))(image)


def cubemap_to_equirect(faces: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of ``equirect_to_cubemap``: HxWxC float32 from (6, F, F, C) faces.

    Each direction is looked up bilinearly in the face it points into; within half a texel
    of a face edge the lookup clamps to that face (no blending across faces).
    """
    count, size = faces.shape[:2]
    if count != 6:
        raise ValueError(f"expected 6 faces, got {count}")
    directions = equirect_directions(height, width)
    axes = np.stack([_camera_basis(*CUBE_FACE_ANGLES[name], 0.0)[2] for name in CUBE_FACES])
    owner = np.argmax(directions @ axes.T.astype(np.float32), axis=-1)  # the face each pixel looks into
    out = np.empty((height, width, faces.shape[3]), np.float32)
    for index, name in enumerate(CUBE_FACES):
        mine = owner == index
        local = _world_to_camera(directions[mine], *CUBE_FACE_ANGLES[name], 0.0)
        col, row = _view_pixels(local, size, size, 90.0)
        out[mine] = _bilinear(faces[index], col, row, wrap=False)
    return out


# --- resizing ----------------------------------------------------------------------------


def _area_average(image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """Shrink ``axis`` to ``size`` samples, each the exact mean over its footprint.

    A whole shrink factor adds the factor's strided slices in float32 (fast, little memory on
    8K panoramas: a reshaped ``mean`` over the short axis is several times slower); other
    factors integrate in float64.
    """
    n = image.shape[axis]
    if n % size == 0:
        factor = n // size
        index = [slice(None)] * image.ndim
        index[axis] = slice(0, None, factor)
        total = image[tuple(index)].astype(np.float32)
        for offset in range(1, factor):
            index[axis] = slice(offset, None, factor)
            total += image[tuple(index)]
        total *= np.float32(1 / factor)
        return total
    integral = np.cumsum(image, axis=axis, dtype=np.float64)
    integral = np.concatenate([np.zeros_like(integral.take([0], axis=axis)), integral], axis=axis)
    edges = np.arange(size + 1) * (n / size)
    lower = np.minimum(np.floor(edges).astype(np.intp), n - 1)
    frac = (edges - lower).reshape([-1 if a == axis else 1 for a in range(image.ndim)])
    at_edges = integral.take(lower, axis=axis)
    at_edges += frac * (integral.take(lower + 1, axis=axis) - at_edges)
    return (np.diff(at_edges, axis=axis) * (size / n)).astype(np.float32)


def resize_equirect(image: np.ndarray, width: int) -> np.ndarray:
    """Resize an HxWxC equirect image to ``width`` columns, keeping its aspect (2:1 stays 2:1).

    Shrinking averages exactly over each output pixel's footprint (no aliasing of small
    bright lights; the mean of every row band is kept); growing interpolates bilinearly
    (``sample_equirect`` at the new pixel centres: wrapping in u, clamped at the poles).
    Returns float32.
    """
    image = np.asarray(image, np.float32)
    height = max(1, round(width * image.shape[0] / image.shape[1]))
    if width > image.shape[1]:
        u = (np.arange(width) + 0.5) / width
        v = 1 - (np.arange(height) + 0.5) / height
        return sample_equirect(image, u[None, :], v[:, None])
    return _area_average(_area_average(image, width, axis=1), height, axis=0)

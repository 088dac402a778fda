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
"""

from __future__ import annotations

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

_BLOCK = 1 << 14  # sample points per block in _bilinear: keeps its temporaries in cache


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


def _edge_table(size: int, wrap: bool, step: int) -> np.ndarray:
    """Flat-array offsets of the samples at positions -size-1 .. 2·size along one image axis.

    Position p is stored at index p + size + 1; positions outside [0, size) wrap around or
    clamp to the edge, so the bilinear lookup needs no per-sample index checks, even for
    coordinates up to one image size outside. Looked up with ``mode="clip"``, positions
    further out get the outermost entries.
    """
    positions = np.arange(-size - 1, 2 * size + 1)
    positions = positions % size if wrap else np.clip(positions, 0, size - 1)
    return positions * step


def _lerp_into(a: np.ndarray, b: np.ndarray, t: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a + (b - a)·t``, computed in place in ``b`` (or written to ``out``)."""
    b -= a
    b *= t
    return np.add(b, a, out=b if out is None else out)


def _bilinear(image: np.ndarray, col, row, wrap: bool, out: np.ndarray | None = None) -> np.ndarray:
    """Bilinear lookup of an HxWxC image at pixel coordinates (pixel centres at integers).

    With ``wrap`` the columns are periodic (for coordinates up to one image width outside),
    otherwise they clamp like the rows: beyond the outer pixel centres the edge repeats.

    Returns (or fills ``out``, C-contiguous) ``broadcast(col, row).shape + (C,)`` float32,
    computed in cache-sized blocks, each channel gathered as a contiguous plane.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    height, width, channels = image.shape
    elements = image.reshape(-1)
    col_table = _edge_table(width, wrap, channels)
    row_table = _edge_table(height, False, width * channels)
    channel_offsets = np.arange(channels)[:, None]
    col, row = np.broadcast_arrays(np.asarray(col, np.float32), np.asarray(row, np.float32))
    shape = col.shape
    col, row = col.ravel(), row.ravel()
    out = np.empty((*shape, channels), np.float32) if out is None else out
    flat_out = out.reshape(col.size, channels)

    def gather(offsets: np.ndarray) -> np.ndarray:
        return elements.take(offsets + channel_offsets, mode="clip")  # C x n, one plane per channel

    for start in range(0, col.size, _BLOCK):
        block = slice(start, start + _BLOCK)
        c, r = col[block] + np.float32(width + 1), row[block] + np.float32(height + 1)  # table indices
        c0, r0 = np.floor(c), np.floor(r)
        fc, fr = c - c0, r - r0
        c0, r0 = c0.astype(np.intp), r0.astype(np.intp)
        left, top = col_table.take(c0, mode="clip"), row_table.take(r0, mode="clip")
        c0 += 1
        r0 += 1
        right, bottom = col_table.take(c0, mode="clip"), row_table.take(r0, mode="clip")
        upper = _lerp_into(gather(top + left), gather(top + right), fc)
        lower = _lerp_into(gather(bottom + left), gather(bottom + right), fc)
        _lerp_into(upper, lower, fr, out=flat_out[block].T)
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


def equirect_to_perspective(
    image: np.ndarray,
    width: int,
    height: int,
    fov_deg: float,
    yaw_deg: float = 0.0,
    pitch_deg: float = 0.0,
    roll_deg: float = 0.0,
) -> np.ndarray:
    """Render an HxWxC equirect image through a pinhole camera: height x width x C float32.

    What Blender renders with this camera in a world lit by the same image (Linear
    interpolation), see the module docstring for the angles.
    """
    rays = _camera_rays(width, height, fov_deg, _camera_basis(yaw_deg, pitch_deg, roll_deg))
    return _bilinear(image, *_equirect_pixels(*rays, *np.shape(image)[:2]), wrap=True)


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


def equirect_to_cubemap(image: np.ndarray, face_size: int) -> np.ndarray:
    """Six 90° views of an HxWxC equirect image: (6, F, F, C) float32 in ``CUBE_FACES`` order.

    Face orientations are in the module docstring. Each face equals ``equirect_to_perspective``
    with its ``CUBE_FACE_ANGLES``; the lookup coordinates are computed for ``+X`` and ``+Z``
    only and follow for the other faces by symmetry.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    height, width, channels = image.shape

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
    faces = np.empty((6, face_size, face_size, channels), np.float32)
    for face, name in zip(faces, CUBE_FACES):
        _bilinear(image, *coordinates[name], wrap=True, out=face)
    return faces


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

    A whole shrink factor reshapes and averages in float32 (fast, little memory on 8K
    panoramas); other factors integrate in float64.
    """
    n = image.shape[axis]
    if n % size == 0:
        shape = image.shape[:axis] + (size, n // size) + image.shape[axis + 1 :]
        return image.reshape(shape).mean(axis=axis + 1, dtype=np.float32)
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

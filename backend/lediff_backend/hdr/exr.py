"""OpenEXR input and output through the ``OpenEXR`` 3.x Python bindings.

Functions
---------
- ``read_exr``: scene-linear RGB (or RGBA) float32 and the string header attributes.
- ``read_exr_info``: size and bit depth from the header alone, without decoding pixels.
- ``write_exr``: RGB, RGBA or Y, float or half, ZIP compressed, Rec.709 chromaticities,
  optional ``envmap = latlong``, string metadata; written atomically.

Channels are read one by one (``separate_channels=True``), so files written with separate
``R``, ``G``, ``B`` channels and files written from the bindings' grouped ``RGB``/``RGBA``
arrays read alike; half, float and uint channels all come back as float32.

References
----------
- OpenEXR file layout and standard attributes: https://openexr.com/en/latest/
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import OpenEXR

from ..errors import BadInput
from .atomic import atomic_output

__all__ = ["HALF_MAX", "REC709_CHROMATICITIES", "ExrInfo", "read_exr", "read_exr_info", "write_exr"]

HALF_MAX = 65504.0
"""Largest finite half-float value."""

REC709_CHROMATICITIES = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)
"""CIE xy of the red, green, blue primaries and the D65 white point (Rec.709 / sRGB)."""

_HALF = 1  # Imath.PixelType.HALF in the classic API

# Attributes the writer sets or the library derives; metadata may not override them.
_RESERVED_ATTRIBUTES = frozenset(
    {
        "channels",
        "chromaticities",
        "chunkCount",
        "compression",
        "dataWindow",
        "displayWindow",
        "envmap",
        "lineOrder",
        "name",
        "pixelAspectRatio",
        "screenWindowCenter",
        "screenWindowWidth",
        "tiles",
        "type",
        "version",
    }
)


@dataclass(frozen=True)
class ExrInfo:
    """Size of an EXR's data window and its bit depth (16 when every channel is half, else 32)."""

    width: int
    height: int
    bit_depth: int


def read_exr(path: str | os.PathLike, *, keep_alpha: bool = False) -> tuple[np.ndarray, dict[str, str]]:
    """Read the first part of an OpenEXR file.

    Parameters
    ----------
    path
        The ``.exr`` file.
    keep_alpha
        Return HxWx4 with the ``A`` channel (1 where the file has none).

    Returns
    -------
    pixels, attributes
        HxWx3 (or HxWx4) float32 scene-linear pixels, row 0 at the top; a luminance file
        becomes grey RGB from its ``Y`` (subsampled ``RY``/``BY`` chroma is ignored).
        ``attributes`` holds the header attributes whose values are strings.

    Raises
    ------
    BadInput
        Not an EXR, truncated or corrupt, or without ``R``/``G``/``B`` or ``Y`` channels.
    """
    header, planes = _read_part(path)
    if all(name in planes for name in "RGB"):
        colour = [planes["R"], planes["G"], planes["B"]]
    elif "Y" in planes:
        colour = [planes["Y"]] * 3
    else:
        found = ", ".join(sorted(planes)) or "none"
        raise BadInput(f"EXR file has no R, G, B or Y channels (found: {found}): {path}")
    if keep_alpha:
        colour.append(planes.get("A", np.ones_like(colour[0])))
    pixels = np.stack(colour, axis=-1).astype(np.float32)
    return pixels, {key: value for key, value in header.items() if isinstance(value, str)}


def read_exr_info(path: str | os.PathLike) -> ExrInfo:
    """Width, height and bit depth of an EXR from its header; no pixel data is decoded.

    Uses the bindings' classic ``InputFile``: the 3.x ``File(header_only=True)`` lists the
    channels without their pixel types.
    """
    try:
        header = OpenEXR.InputFile(str(path)).header()
    except OSError as error:
        raise BadInput(f"not a readable OpenEXR file: {path}") from error
    window = header["dataWindow"]
    all_half = all(channel.type.v == _HALF for channel in header["channels"].values())
    return ExrInfo(window.max.x - window.min.x + 1, window.max.y - window.min.y + 1, 16 if all_half else 32)


def write_exr(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    half: bool = False,
    latlong: bool = False,
    metadata: Mapping[str, str | float | int] | None = None,
) -> None:
    """Write scene-linear pixels as a ZIP-compressed scanline EXR, atomically.

    Parameters
    ----------
    path
        Target ``.exr``; its folder must exist. A temporary file beside it is renamed into
        place, so no partial file is ever visible.
    rgb
        HxWx3 (RGB), HxWx4 (RGBA) or HxW (Y) finite values.
    half
        Store 16-bit half floats; values beyond ±65504 are clamped, with a warning.
    latlong
        Mark the image as an equirectangular environment map (``envmap = latlong``).
    metadata
        Extra header attributes, all stored as strings (numbers via ``str``).

    Raises
    ------
    ValueError
        Wrong shape, NaN or infinite values, or metadata naming a standard attribute.
    """
    pixels = _finite_float32(rgb)
    if half:
        pixels = _to_half(pixels)
    header = {
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
        "chromaticities": REC709_CHROMATICITIES,
    }
    if latlong:
        header["envmap"] = OpenEXR.ENVMAP_LATLONG
    header.update(_string_attributes(metadata or {}))
    _use_all_cores()
    with atomic_output(path) as tmp:
        OpenEXR.File(header, _channels(pixels)).write(str(tmp))


def _use_all_cores() -> None:
    """Let OpenEXR compress and decompress line blocks on every core.

    Its thread pool is empty by default (0 threads), which makes ZIP, the house compression,
    the slowest step of a 4K convert; a count someone has set already is left alone.
    """
    if OpenEXR.global_thread_count() == 0:
        OpenEXR.set_global_thread_count(os.cpu_count() or 1)


def _read_part(path: str | os.PathLike) -> tuple[dict, dict[str, np.ndarray]]:
    """Header and channel name -> 2-D pixel array of the first part, or BadInput."""
    _use_all_cores()
    try:
        exr = OpenEXR.File(str(path), separate_channels=True)
        header = exr.header()
        planes = {name: channel.pixels for name, channel in exr.channels().items()}
    except (RuntimeError, ValueError) as error:
        # The bindings open a truncated file, then fail with ValueError on its missing parts.
        raise BadInput(f"not a readable OpenEXR file (corrupt or truncated?): {path}") from error
    return header, planes


def _finite_float32(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as contiguous float32 after checking its shape and that every value is finite."""
    pixels = np.ascontiguousarray(rgb, dtype=np.float32)
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] in (3, 4))):
        raise ValueError(f"expected HxW, HxWx3 or HxWx4 pixels, got shape {pixels.shape}")
    bad = np.count_nonzero(~np.isfinite(pixels))
    if bad:
        raise ValueError(f"{bad} pixel values are NaN or infinite; an EXR must hold finite values")
    return pixels


def _to_half(pixels: np.ndarray) -> np.ndarray:
    """Clamp to the half range, warning how many values were clamped, and cast to float16."""
    clamped = np.count_nonzero(np.abs(pixels) > HALF_MAX)
    if clamped:
        warnings.warn(
            f"{clamped} values beyond the half-float range were clamped to ±{HALF_MAX:g}", stacklevel=3
        )
    return np.clip(pixels, -HALF_MAX, HALF_MAX).astype(np.float16)


def _channels(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """The bindings' channel dict: ``Y`` for HxW, grouped ``RGB``/``RGBA`` for HxWxC."""
    return {"Y": pixels} if pixels.ndim == 2 else {"RGBA"[: pixels.shape[2]]: pixels}


def _string_attributes(metadata: Mapping[str, str | float | int]) -> dict[str, str]:
    clash = sorted(_RESERVED_ATTRIBUTES.intersection(metadata))
    if clash:
        raise ValueError(f"metadata may not set standard EXR attributes: {', '.join(clash)}")
    return {str(key): str(value) for key, value in metadata.items()}

"""Read any supported image by its content, write one by its extension.

Functions
---------
- ``read_image``: EXR, Radiance HDR or a Pillow LDR format, chosen by the file's first bytes;
  HDR pixels are checked (no NaN or inf) and tiny negatives clamped to 0.
- ``write_image``: ``.exr``, ``.hdr``/``.pic`` or ``.png`` (clipped and sRGB-encoded).

Every reader refuses an image over ``max_pixels`` from its header, before decoding pixels.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import BadInput
from .atomic import check_writable_output
from .color import linear_to_srgb
from .exr import read_exr, read_exr_info, write_exr
from .ldr import DEFAULT_MAX_PIXELS, check_pixel_count, read_ldr, write_png
from .radiance import read_hdr, read_hdr_size, write_hdr

__all__ = ["HDR_EXTENSIONS", "LDR_EXTENSIONS", "WRITE_EXTENSIONS", "Image", "check_image_output",
           "check_output_extension", "read_image", "write_image"]

HDR_EXTENSIONS = (".exr", ".hdr", ".pic")
LDR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
WRITE_EXTENSIONS = (".exr", ".hdr", ".pic", ".png")

_EXR_MAGIC = b"\x76\x2f\x31\x01"
_RADIANCE_MAGIC = b"#?"


@dataclass(frozen=True)
class Image:
    """A decoded image.

    ``pixels`` is HxWx3 float32, row 0 at the top: scene-linear when ``is_hdr``, else
    display-encoded in [0, 1]. ``bit_depth`` is 8 or 16 for LDR; 16 (half EXR) or 32 (float
    EXR, RGBE) for HDR. ``format`` is "EXR", "HDR", or Pillow's name ("PNG", "JPEG", ...).
    ``focal_length_35mm`` comes from EXIF, in mm, when the file has it.
    """

    pixels: np.ndarray
    is_hdr: bool
    bit_depth: int
    format: str
    focal_length_35mm: float | None = None


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image:
    """Read an image file, whatever its extension says, by its first bytes.

    Raises
    ------
    BadInput
        Missing or unreadable file, unknown or corrupt content, more than ``max_pixels``
        pixels, or HDR pixels that are NaN or infinite.
    """
    magic = _read_magic(path)
    if magic.startswith(_EXR_MAGIC):
        info = read_exr_info(path)
        check_pixel_count(info.width, info.height, max_pixels, path)
        pixels, _ = read_exr(path)
        return Image(_checked_hdr(pixels, path), True, info.bit_depth, "EXR")
    if magic.startswith(_RADIANCE_MAGIC):
        check_pixel_count(*read_hdr_size(path), max_pixels, path)
        return Image(_checked_hdr(read_hdr(path), path), True, 32, "HDR")
    ldr = read_ldr(path, max_pixels=max_pixels)
    return Image(ldr.pixels, False, ldr.bit_depth, ldr.format, ldr.focal_length_35mm)


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    *,
    half: bool = False,
    latlong: bool = False,
    metadata: Mapping[str, str | float | int] | None = None,
) -> None:
    """Write HxWx3 scene-linear pixels in the format the extension names, atomically.

    ``half``, ``latlong`` and ``metadata`` apply to EXR only (see ``write_exr``); a PNG gets
    the values clipped to [0, 1] and sRGB-encoded, 8 bits (no tone mapping).

    Raises
    ------
    BadInput
        An extension other than those in ``WRITE_EXTENSIONS``, or an unusable output folder.
    """
    suffix = check_output_extension(path)
    if suffix == ".exr":
        write_exr(path, rgb, half=half, latlong=latlong, metadata=metadata)
    elif suffix in (".hdr", ".pic"):
        write_hdr(path, rgb)
    else:
        write_png(path, linear_to_srgb(rgb))


def check_output_extension(path: str | os.PathLike) -> str:
    """The lower-case extension of an image ``write_image`` can write, else BadInput."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_EXTENSIONS:
        supported = ", ".join(WRITE_EXTENSIONS)
        raise BadInput(f"cannot write {suffix or 'a file without extension'} (use {supported}): {path}")
    return suffix


def check_image_output(path: str | os.PathLike) -> Path:
    """``path`` as an absolute Path where ``write_image`` can write, else BadInput: checked
    before any work, so that a long conversion never ends in this error."""
    target = check_writable_output(path)
    check_output_extension(target)
    return target


def _read_magic(path: str | os.PathLike) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read(4)
    except OSError as error:
        raise BadInput(f"input file not found: {path} ({error.strerror})") from error


def _checked_hdr(pixels: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """BadInput when any pixel is NaN or infinite; negatives (codec noise) clamped to 0."""
    bad = np.count_nonzero(~np.isfinite(pixels).all(axis=-1))
    if bad:
        raise BadInput(f"{bad} pixels are NaN or infinite in {path}")
    return np.maximum(pixels, 0.0)

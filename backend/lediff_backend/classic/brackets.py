"""Reading an exposure bracket from files: pixels, and each shot's exposure from EXIF.

Functions
---------
- ``read_exif_exposure``: exposure time, f-number and ISO from a file's EXIF, if it has them.
- ``exposure_ev``: those three as an EV in this project's sense (see below).
- ``read_bracket``: one bracket image (PNG, JPEG, 8/16-bit TIFF; camera RAW through
  ``rawpy`` when it is installed) with its EXIF exposure.
- ``bracket_evs``: the EVs of a whole bracket, from the user or else from EXIF.

EVs here measure the light an exposure gathers: linear values scale as ``2**ev``, +1 is twice
the light (``hdr.exposure``'s convention). From EXIF, ``ev = log2(t · ISO/100 / N²)`` for
exposure time ``t`` in seconds and f-number ``N``: the photographer's EV100 with its sign
turned. Only differences between a bracket's EVs matter to a merge.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import ExifTags, Image

from ..errors import BadInput
from ..hdr.imageio import read_image
from ..hdr.ldr import DEFAULT_MAX_PIXELS

__all__ = ["RAW_SUFFIXES", "ExifExposure", "BracketImage", "read_exif_exposure", "exposure_ev", "read_bracket",
           "bracket_evs"]

RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".raf", ".orf", ".rw2", ".pef", ".srw")


@dataclass(frozen=True)
class ExifExposure:
    """A shot's exposure settings: time in seconds, f-number and ISO (None when not recorded)."""

    exposure_time: float
    f_number: float | None = None
    iso: float | None = None


@dataclass(frozen=True)
class BracketImage:
    """One image of a bracket: HxWx3 float32 display values in [0, 1] (``linear`` for RAW,
    else as the camera encoded them), and its EXIF exposure when the file has one."""

    pixels: np.ndarray
    exposure: ExifExposure | None
    linear: bool = False


def _positive(value) -> float | None:
    """A positive finite number from an EXIF value (rational, int, or a tuple of them)."""
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def read_exif_exposure(path: str | os.PathLike) -> ExifExposure | None:
    """Exposure time, f-number and ISO from the file's EXIF; None without an exposure time.

    Files Pillow cannot open (most RAW formats but DNG and TIFF-based ones) have none.
    """
    try:
        with Image.open(path) as image:
            exif = image.getexif()
    except Exception:  # not an image Pillow knows: no EXIF to read
        return None
    tags = {**exif, **exif.get_ifd(ExifTags.IFD.Exif)}  # TIFFs may keep them in the main IFD
    time = _positive(tags.get(ExifTags.Base.ExposureTime))
    if time is None:
        return None
    return ExifExposure(time, _positive(tags.get(ExifTags.Base.FNumber)),
                        _positive(tags.get(ExifTags.Base.ISOSpeedRatings)))


def exposure_ev(exposure: ExifExposure) -> float:
    """``log2(t · ISO/100 / N²)``; a missing f-number or ISO counts as f/1 or ISO 100."""
    gain = exposure.exposure_time * (exposure.iso or 100.0) / 100.0 / (exposure.f_number or 1.0) ** 2
    return math.log2(gain)


def _read_raw(path: Path) -> np.ndarray:
    try:
        import rawpy
    except ImportError:
        raise BadInput(f"{path} is a camera RAW file: install rawpy (pip install rawpy) to merge RAW "
                       "brackets, or export them as 16-bit TIFFs") from None
    try:
        with rawpy.imread(str(path)) as raw:
            codes = raw.postprocess(gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True)
    except Exception as error:  # rawpy raises LibRaw errors of many types
        raise BadInput(f"cannot read RAW file {path}: {error}") from error
    return codes.astype(np.float32) / np.float32(65535)


def read_bracket(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> BracketImage:
    """One image of a bracket with its EXIF exposure.

    RAW files (``RAW_SUFFIXES``) are developed linearly by rawpy (camera white balance, no
    brightening); other files are read as they are encoded.

    Raises
    ------
    BadInput
        Unreadable or HDR file, or a RAW file without rawpy installed.
    """
    path = Path(path)
    if path.suffix.lower() in RAW_SUFFIXES:
        return BracketImage(_read_raw(path), read_exif_exposure(path), linear=True)
    image = read_image(path, max_pixels=max_pixels)
    if image.is_hdr:
        raise BadInput(f"{path} is already HDR ({image.format}); a bracket is made of LDR photos")
    return BracketImage(image.pixels, read_exif_exposure(path))


def bracket_evs(images: Sequence[BracketImage], evs: Sequence[float] | None, names: Sequence[str]) -> list[float]:
    """The bracket's EVs: ``evs`` when given (``merge.check_bracket`` checks their count), else
    from every image's EXIF.

    Raises
    ------
    BadInput
        Without ``evs``: an image without an exposure time in its EXIF, or f-numbers or ISOs
        recorded for some images but not for others.
    """
    if evs is not None:
        return [float(ev) for ev in evs]
    missing = [name for image, name in zip(images, names) if image.exposure is None]
    if missing:
        raise BadInput(f"no exposure time in the EXIF of {', '.join(missing)}: give one EV per image "
                       "(--ev, e.g. --ev -2 0 2)")
    exposures = [image.exposure for image in images]
    for field in ("f_number", "iso"):
        if len({getattr(e, field) is None for e in exposures}) > 1:
            raise BadInput(f"the EXIF of some images records the {field.replace('_', '-')} and of others "
                           "not: give one EV per image (--ev)")
    return [exposure_ev(e) for e in exposures]

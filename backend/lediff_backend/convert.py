"""LDR image -> HDR EXR: the service behind ``lediff convert`` and the server's ``convert`` job.

Engines are plain functions registered in ``ENGINES``; ``auto`` takes LEDiff when its weights
are found (``model_dir`` or ``$LEDIFF_MODELS``), and the weight-free classic engine otherwise.
Neural code is imported only when a neural engine runs.
"""

from __future__ import annotations

import json
import os
from typing import Callable

import numpy as np

from .errors import BadInput, BadRequest
from .hdr.imageio import check_image_output, read_image, write_image
from .hdr.projection import resize_equirect
from .hdr.summary import is_panorama, summarize

__all__ = ["ENGINES", "convert_file", "convert_pixels", "resize_to_width", "resolve_engine", "write_result"]

MIN_WIDTH, MAX_WIDTH = 16, 16384  # the widths a result may be resampled to

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


def _classic(encoded: np.ndarray, *, panorama: bool, sun_ev: float | None, progress, should_cancel, **_) -> np.ndarray:
    from .classic.expand import expand_ldr

    return expand_ldr(encoded, panorama=panorama, sun_ev=sun_ev, progress=progress, should_cancel=should_cancel).hdr


def _lediff(encoded: np.ndarray, *, panorama: bool, sun_ev: float | None, progress, should_cancel, **options):
    from .pipelines.lediff_engine import lediff_itm

    return lediff_itm(encoded, panorama=panorama, progress=progress, should_cancel=should_cancel, **options)


ENGINES: dict[str, Callable[..., np.ndarray]] = {"classic": _classic, "lediff": _lediff}


def resolve_engine(engine: str, model_dir: str | os.PathLike | None = None) -> str:
    """The engine that runs: ``auto`` is ``lediff`` when its weights are found, else ``classic``."""
    if engine == "auto":
        from .weights import lediff_available

        return "lediff" if lediff_available(model_dir) else "classic"
    if engine not in ENGINES:
        raise BadRequest(f"unknown engine {engine!r}; choose from auto, {', '.join(ENGINES)}")
    return engine


def write_result(output: str | os.PathLike, hdr: np.ndarray, meta: dict, *, half: bool = False) -> None:
    """Write an HDR result with ``meta`` as ``lediff:*`` header attributes.

    Strings are stored as they are, everything else as JSON (numbers, booleans, the sun dict).
    """
    header = {f"lediff:{key}": value if isinstance(value, str) else json.dumps(value) for key, value in meta.items()}
    write_image(output, hdr, half=half, latlong=meta.get("panorama", False), metadata=header)


def resize_to_width(pixels: np.ndarray, width: int) -> np.ndarray:
    """Resample to ``width`` columns (16 to 16384, else BadInput), keeping the aspect ratio.

    Panoramas use the wrap-aware area average of ``projection``; other images Pillow's
    Lanczos filter per channel (float32 mode).
    """
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise BadInput(f"width must be between {MIN_WIDTH} and {MAX_WIDTH} pixels, not {width}")
    if is_panorama(*pixels.shape[:2]):
        return resize_equirect(pixels, width)
    from PIL import Image

    height = max(1, round(pixels.shape[0] * width / pixels.shape[1]))
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., c])).resize((width, height), Image.Resampling.LANCZOS))
        for c in range(3)
    ]
    return np.stack(channels, axis=-1).astype(np.float32)


def convert_pixels(
    encoded: np.ndarray,
    *,
    engine: str = "auto",
    width: int | None = None,
    sun_ev: float | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    **engine_options,
) -> np.ndarray:
    """Display-encoded LDR pixels (HxWx3, [0, 1]) -> scene-linear HDR with the chosen engine."""
    run = ENGINES[resolve_engine(engine, engine_options.get("model_dir"))]
    if width is not None:
        encoded = np.clip(resize_to_width(encoded, width), 0.0, 1.0)
    panorama = is_panorama(*encoded.shape[:2])
    return run(encoded, panorama=panorama, sun_ev=sun_ev, progress=progress, should_cancel=should_cancel, **engine_options)


def convert_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    engine: str = "auto",
    width: int | None = None,
    half: bool = False,
    sun_ev: float | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    **engine_options,
) -> dict:
    """Convert an LDR image file to an HDR EXR (written atomically); returns its metadata.

    The metadata (size, peak, median, stops, sun for panoramas, engine) is also written into
    the EXR header as ``lediff:*`` attributes (see ``write_result``). ``engine_options`` go to the
    engine (LEDiff: ``model_dir``, ``shadow_model_dir``, ``steps``, ``seed``, ``guidance``,
    ``device``, ``pipeline``).
    """
    output = check_image_output(output_path)
    engine = resolve_engine(engine, engine_options.get("model_dir"))
    image = read_image(input_path)
    if image.is_hdr:
        raise BadInput(f"{input_path} is already HDR ({image.format}); apply it directly instead of converting")
    hdr = convert_pixels(
        image.pixels, engine=engine, width=width, sun_ev=sun_ev, progress=progress,
        should_cancel=should_cancel, **engine_options,
    )
    meta = summarize(hdr)
    meta["engine"] = engine
    write_result(output, hdr, meta, half=half)
    meta["output"] = str(output)
    return meta

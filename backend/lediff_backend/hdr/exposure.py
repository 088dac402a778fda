"""Exposure brackets and LDR photos simulated from HDR images, as the LEDiff paper does.

Functions
---------
- ``exposure_bounds``: the lowest and highest exposure (EV) needed to cover a scene's range.
- ``bracket_evs``: evenly spaced exposures between those bounds; the middle one is halfway.
- ``metered_ev``: the exposure a camera's meter picks (median luminance -> mid-grey).
- ``expose``: scene-linear HDR at an EV through a camera response, clipped, display-encoded.
- ``quantize`` / ``jpeg_roundtrip``: 8/16-bit storage and JPEG compression losses.
- ``simulate_brackets`` / ``simulate_ldr``: whole brackets, or the one LDR photo a user has.

An exposure ``ev`` multiplies the scene-linear values by ``2**ev`` before the response.
A response is ``"srgb"`` or a ``color.CRF`` (the LEDiff family); both saturate at 1.

References: LEDiff (CVPR 2025) §3.2; the CRF family and β ~ N(0.6, 0.1), γ ~ N(0.9, 0.1).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Union

import numpy as np

from .color import CRF, crf_lediff, linear_to_srgb, luminance, sample_crf_params

__all__ = [
    "Response",
    "Exposure",
    "exposure_bounds",
    "bracket_evs",
    "metered_ev",
    "expose",
    "quantize",
    "jpeg_roundtrip",
    "simulate_brackets",
    "simulate_ldr",
]

Response = Union[str, CRF]

MID_GREY = 0.18


@dataclass(frozen=True)
class Exposure:
    """One simulated LDR exposure: display-encoded pixels in [0, 1], its EV and response."""

    pixels: np.ndarray
    ev: float
    response: Response


def _positive_luminance(hdr: np.ndarray) -> np.ndarray:
    lum = luminance(hdr).ravel()
    lum = lum[lum > 0]
    if lum.size == 0:
        raise ValueError("the image is black: no exposure can show it")
    return lum


def exposure_bounds(
    hdr: np.ndarray, *, dark_percentile: float = 1.0, bright_percentile: float = 99.99, dark_target: float = 0.5
) -> tuple[float, float]:
    """EVs of the darkest and brightest exposures that together cover the scene's range.

    The low bound maps the ``bright_percentile`` luminance to 1 (no clipping); the high
    bound lifts the ``dark_percentile`` luminance to ``dark_target``. For a scene with less
    range than one exposure, both bounds coincide.
    """
    lum = _positive_luminance(hdr)
    dark, bright = np.percentile(lum, [dark_percentile, bright_percentile])
    ev_low = float(-np.log2(bright))
    ev_high = float(np.log2(dark_target / dark))
    return ev_low, max(ev_low, ev_high)


def bracket_evs(hdr: np.ndarray, count: int = 3) -> np.ndarray:
    """``count`` EVs evenly spaced between ``exposure_bounds``; the middle one is halfway."""
    if count < 1:
        raise ValueError("a bracket needs at least one exposure")
    low, high = exposure_bounds(hdr)
    if count == 1:
        return np.array([(low + high) / 2])
    return np.linspace(low, high, count)


def metered_ev(hdr: np.ndarray, key: float = MID_GREY, max_clipped: float = 0.05) -> float:
    """The EV a phone camera picks: median luminance to ``key``, protecting highlights.

    Average metering alone blows out most of a sunny sky; phones lower the exposure until at
    most ``max_clipped`` of the pixels saturate (the sun and its glow still do).
    """
    median = np.percentile(_positive_luminance(hdr), 50.0)
    # A pixel saturates when any of its channels does, not only when its luminance does.
    brightest = np.asarray(hdr, dtype=np.float32)[..., :3].max(axis=-1).ravel()
    protected = np.percentile(brightest[brightest > 0], 100.0 * (1.0 - max_clipped))
    return float(min(np.log2(key / median), -np.log2(protected)))


def expose(hdr: np.ndarray, ev: float, response: Response = "srgb") -> np.ndarray:
    """Scene-linear ``hdr`` exposed at ``ev`` through ``response``: display values in [0, 1]."""
    exposed = np.asarray(hdr, dtype=np.float32) * np.float32(2.0**ev)
    if isinstance(response, CRF):
        return crf_lediff(exposed, response)
    if response == "srgb":
        return linear_to_srgb(exposed)
    raise ValueError(f"unknown response {response!r}: use 'srgb' or a CRF")


def quantize(encoded: np.ndarray, bits: int = 8) -> np.ndarray:
    """Round display values to ``bits``-bit code values; float32 in [0, 1] on that grid."""
    levels = float(2**bits - 1)
    return (np.round(np.clip(encoded, 0.0, 1.0) * levels) / levels).astype(np.float32)


def jpeg_roundtrip(encoded: np.ndarray, quality: int = 90) -> np.ndarray:
    """Compress 8-bit display values as JPEG in memory and decode them again."""
    from PIL import Image  # Pillow is only needed when JPEG losses are simulated

    codes = np.round(np.clip(encoded, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(codes).save(buffer, format="JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    buffer.seek(0)
    return (np.asarray(Image.open(buffer).convert("RGB"), dtype=np.float32) / 255.0).astype(np.float32)


def simulate_brackets(
    hdr: np.ndarray, count: int = 3, *, rng: np.random.Generator | None = None, bits: int = 8
) -> list[Exposure]:
    """An exposure bracket as the LEDiff paper simulates it: one sampled CRF, ``count`` EVs.

    Without ``rng`` the response is plain sRGB (deterministic); with one, a CRF is drawn.
    """
    response: Response = sample_crf_params(rng) if rng is not None else "srgb"
    return [
        Exposure(quantize(expose(hdr, float(ev), response), bits), float(ev), response)
        for ev in bracket_evs(hdr, count)
    ]


def simulate_ldr(
    hdr: np.ndarray,
    *,
    ev: float | None = None,
    response: Response | None = None,
    rng: np.random.Generator | None = None,
    jpeg_quality: int | None = None,
) -> Exposure:
    """The 8-bit photo a user has of this scene: metered exposure, a response, optional JPEG.

    ``ev`` defaults to ``metered_ev``; ``response`` defaults to a CRF drawn from ``rng``
    when given, else sRGB.
    """
    if ev is None:
        ev = metered_ev(hdr)
    if response is None:
        response = sample_crf_params(rng) if rng is not None else "srgb"
    pixels = quantize(expose(hdr, ev, response), 8)
    if jpeg_quality is not None:
        pixels = jpeg_roundtrip(pixels, jpeg_quality)
    return Exposure(pixels, float(ev), response)

"""Colour transfer functions.

Functions
---------
- ``srgb_to_linear`` / ``linear_to_srgb``: the IEC 61966-2-1 sRGB transfer, both ways.
- ``crf_lediff`` / ``inverse_crf_lediff``: the camera response family used by LEDiff to
  simulate LDR photos, ``I = (1+β)·x^γ / (β + x^γ)`` with ``x = min(E·H, 1)``.
- ``sample_crf_params``: β ~ N(0.6, 0.1), γ ~ N(0.9, 0.1), as in the LEDiff paper.
- ``luminance``: Rec.709 relative luminance of scene-linear RGB.

All take and return float32 arrays; values are scene-linear unless a name says otherwise.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "CRF",
    "REC709_LUMA",
    "srgb_to_linear",
    "linear_to_srgb",
    "crf_lediff",
    "inverse_crf_lediff",
    "sample_crf_params",
    "luminance",
]

REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


class CRF(NamedTuple):
    """Parameters of the LEDiff camera response ``(1+β)x^γ/(β+x^γ)``."""

    beta: float = 0.6
    gamma: float = 0.9


def srgb_to_linear(encoded: np.ndarray) -> np.ndarray:
    """Decode sRGB-encoded values in [0, 1] to scene-linear."""
    x = np.asarray(encoded, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((np.maximum(x, 0.04045) + 0.055) / 1.055) ** 2.4).astype(
        np.float32
    )


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """Encode scene-linear values with the sRGB curve; input is clipped to [0, 1] first."""
    x = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.maximum(x, 0.0031308) ** (1 / 2.4) - 0.055).astype(
        np.float32
    )


def crf_lediff(exposure: np.ndarray, crf: CRF = CRF()) -> np.ndarray:
    """Apply the LEDiff CRF to exposed linear values ``E·H``; clips at 1 (sensor saturation).

    The curve maps 0 -> 0 and 1 -> 1 for any β > 0, γ > 0.
    """
    x = np.clip(np.asarray(exposure, dtype=np.float32), 0.0, 1.0) ** np.float32(crf.gamma)
    return ((1 + crf.beta) * x / (crf.beta + x)).astype(np.float32)


def inverse_crf_lediff(encoded: np.ndarray, crf: CRF = CRF()) -> np.ndarray:
    """Invert ``crf_lediff`` on [0, 1]: ``x^γ = β·I / (1 + β − I)``."""
    i = np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)
    x_gamma = crf.beta * i / (1 + crf.beta - i)
    return (x_gamma ** np.float32(1 / crf.gamma)).astype(np.float32)


def sample_crf_params(rng: np.random.Generator) -> CRF:
    """Draw β ~ N(0.6, 0.1), γ ~ N(0.9, 0.1) (the paper's distributions), kept positive."""
    beta = float(np.clip(rng.normal(0.6, 0.1), 0.05, None))
    gamma = float(np.clip(rng.normal(0.9, 0.1), 0.3, None))
    return CRF(beta, gamma)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Rec.709 relative luminance, HxW from HxWx3 scene-linear RGB."""
    return np.asarray(rgb, dtype=np.float32)[..., :3] @ REC709_LUMA

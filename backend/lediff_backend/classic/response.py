"""Camera responses for merging brackets: known curves, tabulated curves, Debevec–Malik recovery.

An *inverse response* maps display-encoded values in [0, 1] (HxWx3 float32) to relative
scene-linear exposure; every one here maps 0 to 0 and 1 to 1, so a merge's absolute scale
does not depend on which response linearised it.

Functions
---------
- ``inverse_response``: ``"srgb"``, ``"linear"`` (RAW, linear TIFF) or a LEDiff ``CRF`` ->
  its inverse as a function.
- ``tabulated_response``: a table of linear values at evenly spaced codes -> an inverse
  response interpolating it per channel (how a recovered curve is used).
- ``recover_response``: the inverse response per channel from an aligned bracket of known
  EVs, by Debevec & Malik's least squares with a smoothness term.

References: P. Debevec, J. Malik, "Recovering High Dynamic Range Radiance Maps from
Photographs", SIGGRAPH 1997.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from ..hdr.color import CRF, inverse_crf_lediff, luminance, srgb_to_linear

__all__ = ["InverseResponse", "inverse_response", "tabulated_response", "recover_response"]

InverseResponse = Callable[[np.ndarray], np.ndarray]


def _linear(encoded: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(encoded, dtype=np.float32), 0.0, 1.0)


def inverse_response(response: str | CRF) -> InverseResponse:
    """The inverse of a named response: ``"srgb"``, ``"linear"``, or a LEDiff-family ``CRF``."""
    if isinstance(response, CRF):
        return functools.partial(inverse_crf_lediff, crf=response)
    if response == "srgb":
        return srgb_to_linear
    if response == "linear":
        return _linear
    raise ValueError(f"unknown response {response!r}: use 'srgb', 'linear' or a CRF")


def tabulated_response(table: np.ndarray) -> InverseResponse:
    """An inverse response from linear values at codes ``i / (levels - 1)``.

    ``table`` is ``levels`` long, or ``levels`` x 3 for one curve per channel; values between
    codes are interpolated linearly.
    """
    table = np.asarray(table, dtype=np.float32)
    columns = table.reshape(len(table), -1)
    codes = np.linspace(0.0, 1.0, len(table), dtype=np.float32)

    def inverse(encoded: np.ndarray) -> np.ndarray:
        x = np.asarray(encoded, dtype=np.float32)
        if columns.shape[1] == 1:
            return np.interp(x, codes, columns[:, 0]).astype(np.float32)
        return np.stack([np.interp(x[..., c], codes, columns[:, c]) for c in range(3)], axis=-1).astype(np.float32)

    return inverse


def _sample_pixels(images: Sequence[np.ndarray], reference: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """Flat indices of pixels spread evenly over the reference's brightness, in smooth areas.

    Pixels whose 3x3 neighbourhood varies little are preferred: they survive the last pixel
    of misalignment and JPEG ringing.
    """
    from scipy import ndimage

    grey = luminance(images[reference])
    rough = ndimage.maximum_filter(grey, 3) - ndimage.minimum_filter(grey, 3)
    smooth = rough <= np.percentile(rough, 50)
    bins = 32
    which = np.minimum((grey * bins).astype(np.int32), bins - 1).ravel()
    candidates = np.flatnonzero(smooth.ravel())
    chosen = []
    per_bin = max(1, samples // bins)
    for b in range(bins):
        in_bin = candidates[which[candidates] == b]
        if in_bin.size:
            chosen.append(rng.choice(in_bin, size=min(per_bin, in_bin.size), replace=False))
    return np.concatenate(chosen)


def recover_response(
    images: Sequence[np.ndarray],
    evs: Sequence[float],
    *,
    reference: int | None = None,
    levels: int = 256,
    samples: int = 640,
    smoothness: float = 10.0,
    seed: int = 0,
) -> np.ndarray:
    """Recover the inverse response per channel from an aligned bracket (Debevec & Malik).

    Parameters
    ----------
    images
        Display-encoded HxWx3 float32 brackets in [0, 1], aligned, same size.
    evs
        Exposure of each image in EV (linear values scale as ``2**ev``).
    reference
        Image whose brightness spreads the samples (default: the middle exposure).
    levels
        Codes per channel of the recovered curve (inputs are rounded to them).
    samples, smoothness, seed
        Pixels sampled, weight of the second-difference penalty (λ), sampling seed.

    Returns
    -------
    np.ndarray
        ``levels`` x 3 float32 table of linear values at codes ``i / (levels - 1)``:
        increasing, 0 at code 0, and scaled so that the channels' mean at code 1 is 1.
        Channels share the anchor ``g(middle code) = 0``, i.e. grey codes are neutral.
    """
    if reference is None:
        reference = int(np.argsort(evs)[(len(evs) - 1) // 2])
    rng = np.random.default_rng(seed)
    picked = _sample_pixels(images, reference, samples, rng)
    codes = np.stack([np.round(np.clip(im.reshape(-1, 3)[picked], 0, 1) * (levels - 1)).astype(np.int32)
                      for im in images])  # images x samples x 3
    log_times = np.asarray(evs, dtype=np.float64) * np.log(2.0)
    z = np.arange(levels)
    hat = np.minimum(z, levels - 1 - z).astype(np.float64)  # Debevec's hat: clipped codes say nothing
    log_curves = np.stack([_solve_debevec(codes[..., c], log_times, hat, smoothness) for c in range(3)], axis=-1)
    curves = np.exp(log_curves - np.log(np.exp(log_curves[-1]).mean()))
    curves = np.maximum.accumulate(curves, axis=0)
    curves[0] = 0.0
    return curves.astype(np.float32)


def _solve_debevec(codes: np.ndarray, log_times: np.ndarray, hat: np.ndarray, smoothness: float) -> np.ndarray:
    """Least squares for ``g(z) = ln E + ln Δt`` over the samples; ``codes`` is images x samples.

    Samples clipped or black in every image say nothing and are dropped.
    """
    codes = codes[:, (hat[codes] > 0).any(axis=0)]
    n_images, n_samples = codes.shape
    levels = len(hat)
    rows = n_images * n_samples + 1 + (levels - 2)
    a = np.zeros((rows, levels + n_samples))
    b = np.zeros(rows)
    sample = np.tile(np.arange(n_samples), n_images)
    z = codes.ravel()
    w = hat[z]
    k = np.arange(n_images * n_samples)
    a[k, z] = w
    a[k, levels + sample] = -w
    b[k] = w * np.repeat(log_times, n_samples)
    row = n_images * n_samples
    a[row, levels // 2] = 1.0  # anchor: the middle code has ln E = 0
    inner = np.arange(1, levels - 1)
    r = row + 1 + np.arange(levels - 2)
    weight = smoothness * hat[inner]
    a[r, inner - 1] = weight
    a[r, inner] = -2 * weight
    a[r, inner + 1] = weight
    solution = np.linalg.solve(a.T @ a, a.T @ b)  # normal equations: a few hundred unknowns
    return solution[:levels]

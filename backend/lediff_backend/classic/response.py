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
- ``recover_response``: the inverse response per channel from a bracket of known EVs, by
  Debevec & Malik's least squares with a smoothness term, on pixels of equal brightness rank.

References: P. Debevec, J. Malik, "Recovering High Dynamic Range Radiance Maps from
Photographs", SIGGRAPH 1997; M. D. Grossberg, S. K. Nayar, IEEE TPAMI 25(11), 2003.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np

from ..hdr.color import CRF, inverse_crf_lediff, srgb_to_linear

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


def _rank_samples(images: Sequence[np.ndarray], levels: int, samples: int) -> np.ndarray:
    """Codes at the same brightness ranks of every image: images x samples x 3 integers.

    A monotonic response keeps the order of a static scene's pixels, so the pixel at rank r of
    one exposure and the pixel at rank r of another saw the same radiance (Grossberg & Nayar's
    histogram specification). Unlike pixel pairs, ranks need no alignment and hardly move when
    a small object does.
    """
    ranks = (np.arange(samples) + 0.5) / samples
    out = np.empty((len(images), samples, 3), np.int64)
    for i, image in enumerate(images):
        codes = np.round(np.clip(image, 0, 1) * (levels - 1)).astype(np.int64).reshape(-1, 3)
        for c in range(3):
            cumulative = np.cumsum(np.bincount(codes[:, c], minlength=levels)) / len(codes)
            out[i, :, c] = np.minimum(np.searchsorted(cumulative, ranks), levels - 1)
    return out


def recover_response(
    images: Sequence[np.ndarray],
    evs: Sequence[float],
    *,
    levels: int = 256,
    samples: int = 1024,
    smoothness: float = 20.0,
) -> np.ndarray:
    """Recover the inverse response per channel from a bracket (Debevec & Malik on ranks).

    Parameters
    ----------
    images
        Display-encoded HxWx3 float32 brackets in [0, 1] of one scene (alignment is not
        needed: samples are brightness ranks, not pixels).
    evs
        Exposure of each image in EV (linear values scale as ``2**ev``).
    levels
        Codes per channel of the recovered curve (inputs are rounded to them).
    samples, smoothness
        Brightness ranks sampled and the weight of the second-difference penalty (λ).

    Returns
    -------
    np.ndarray
        ``levels`` x 3 float32 table of linear values at codes ``i / (levels - 1)``:
        increasing, 0 at code 0, and scaled so that the channels' mean at code 1 is 1.
        Channels share the anchor ``g(middle code) = 0``, i.e. grey codes are neutral.

    References: M. D. Grossberg, S. K. Nayar, "Determining the Camera Response from Images:
    What Is Knowable?", IEEE TPAMI 25(11), 2003 (response from histograms).
    """
    codes = _rank_samples(images, levels, samples)
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

    Samples clipped or black in every image say nothing and are dropped. The system is
    sparse (two unknowns per data row, three per smoothness row) and solved as such.
    """
    from scipy import sparse
    from scipy.sparse.linalg import spsolve

    codes = codes[:, (hat[codes] > 0).any(axis=0)]
    n_images, n_samples = codes.shape
    levels = len(hat)
    data = np.arange(n_images * n_samples)
    z = codes.ravel()
    w = hat[z]
    sample = levels + np.tile(np.arange(n_samples), n_images)
    inner = np.arange(1, levels - 1)
    smooth_rows = data.size + 1 + np.arange(levels - 2)
    weight = smoothness * hat[inner]
    rows = np.concatenate([data, data, [data.size], np.repeat(smooth_rows, 3)])
    columns = np.concatenate([z, sample, [levels // 2], np.stack([inner - 1, inner, inner + 1], axis=1).ravel()])
    values = np.concatenate([w, -w, [1.0], (weight[:, None] * [1.0, -2.0, 1.0]).ravel()])
    a = sparse.csr_matrix((values, (rows, columns)), shape=(smooth_rows[-1] + 1, levels + n_samples))
    b = np.zeros(a.shape[0])
    b[data] = w * np.repeat(log_times, n_samples)  # the anchor row (the middle code has ln E = 0) stays 0
    return spsolve((a.T @ a).tocsc(), a.T @ b)[:levels]

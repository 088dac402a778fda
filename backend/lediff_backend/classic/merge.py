"""Exposure brackets -> scene-linear HDR with ghost removal: the weight-free merge engine.

``merge_brackets`` runs the whole merge; ``fuse`` is its last step, on aligned images:

1. **Align** every image onto the reference with median threshold bitmaps (``align``);
   panoramas wrap around their seam.
2. **Linearise** each image with the inverse response (sRGB, linear, a LEDiff CRF, or one
   recovered from the brackets, ``response``) and divide by ``2**ev``. Each code also stands
   for an *interval* of radiances: ± ``tolerance`` code values (quantisation, JPEG), ±
   ``relative_tolerance`` (response error), unbounded above when the code is clipped.
3. **Find ghosts** (``ghosts``): where an image's intervals and the reference's do not
   overlap, the scene moved between the shots. They are compared as means over 4-pixel
   cells, so noise averages out; lone cells are dropped, the rest grown, blurred (wrapping
   across a panorama's seam) and amplified into a smooth mask, so moving things are covered
   whole and no seam appears where the mask ends.
4. **Weight** each image by ``weighting`` of the code it would have recorded for the
   reference's radiance (its own radiance where the reference is nearly clipped or black),
   times one minus its ghost mask. The reference keeps a small floor weight, so a pixel
   that every other image contradicts is the reference's: moving things appear once, where
   the reference saw them, rather than averaged into translucent copies.
5. **Bound clipped pixels**: a clipped code says "at least this bright"; the result is
   raised to the brightest such bound of the images that agree with the reference.

Scale: an image's radiance is its linear value over ``2**(ev - ev_reference)``, so the
result is in the reference exposure's units (its white is 1), like the LDR convert engine's.
EVs follow ``hdr.exposure``: linear values scale as ``2**ev`` (more light, higher EV).

Functions
---------
- ``weight_triangle`` / ``weight_hat``: weighting functions of display values.
- ``default_reference``: the middle exposure.
- ``check_bracket``: the errors a user can make (``BadInput``).
- ``fuse``: steps 2-5 on aligned images.
- ``merge_brackets``: steps 1-5, with the response chosen by name.

References: P. Debevec, J. Malik, SIGGRAPH 1997 (weighted merge, response recovery);
G. Ward, JGT 2003 (bitmap alignment); N. K. Kalantari, R. Ramamoorthi, SIGGRAPH 2017
(weights of the exposures computed from the reference image); O. Gallo et al., ICCP 2009
(ghosts as disagreement with a reference exposure).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInput, Cancelled
from ..hdr.color import CRF
from .align import align_brackets
from .ghosts import block_mean, ghost_mask
from .response import InverseResponse, inverse_response, recover_response, tabulated_response

__all__ = [
    "Weighting",
    "Merged",
    "weight_triangle",
    "weight_hat",
    "default_reference",
    "check_bracket",
    "fuse",
    "merge_brackets",
]

Weighting = Callable[[np.ndarray], np.ndarray]
ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]

CODES = 65536  # inputs are looked up on a 16-bit grid: exact for 8- and 16-bit files
EXPOSURES = 4096  # resolution of the weight-of-exposure tables over [0, 1]
TRUST_MARGIN = 0.1  # display values this close to 0 or 1 make the reference a poor guide
REFERENCE_FLOOR = 1e-3  # the reference's least weight: the fallback where others disagree
MIN_EV_SPREAD = 0.05  # exposures closer than this in EV count as identical


def weight_triangle(encoded: np.ndarray) -> np.ndarray:
    """Debevec & Malik's hat: ``1 - |2z - 1|``, 0 at black and at white, 1 at mid-code."""
    z = np.asarray(encoded, dtype=np.float32)
    return np.clip(1.0 - np.abs(2.0 * z - 1.0), 0.0, 1.0)


def weight_hat(encoded: np.ndarray) -> np.ndarray:
    """A flat-topped hat, ``1 - (2z - 1)**12``: near 1 everywhere but at the two ends."""
    z = np.asarray(encoded, dtype=np.float32)
    return np.clip(1.0 - (2.0 * z - 1.0) ** 12, 0.0, 1.0)


@dataclass(frozen=True)
class Merged:
    """A merge: ``hdr`` HxWx3 float32 scene-linear in the reference's units, ``ghost`` HxW in
    [0, 1] (how much of each pixel came from the reference alone), the ``reference`` index,
    and each image's alignment ``shifts`` (dy, dx)."""

    hdr: np.ndarray
    ghost: np.ndarray
    reference: int
    shifts: list[tuple[int, int]]


def default_reference(evs: Sequence[float]) -> int:
    """Index of the middle exposure; of an even count, the darker of the two middle ones."""
    return int(np.argsort(evs, kind="stable")[(len(evs) - 1) // 2])


def check_bracket(images: Sequence[np.ndarray], evs: Sequence[float], reference: int | None = None) -> None:
    """BadInput unless the images make a bracket: two or more, one size, one EV each, not all
    the same exposure, and ``reference`` one of them."""
    if len(images) < 2:
        raise BadInput(f"a bracket needs at least two images, got {len(images)}")
    if len(evs) != len(images):
        raise BadInput(f"got {len(evs)} EVs for {len(images)} images: give one EV per image")
    sizes = {im.shape[:2] for im in images}
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for h, w in (im.shape[:2] for im in images))
        raise BadInput(f"the bracket's images differ in size ({listed}): they must all be the same size")
    if max(evs) - min(evs) < MIN_EV_SPREAD:
        raise BadInput(f"all images have the same exposure (EV {min(evs):g}): a bracket needs different exposures")
    if reference is not None and not 0 <= reference < len(images):
        raise BadInput(f"reference {reference} is not an image of the bracket (0 to {len(images) - 1})")


class _Tables:
    """An inverse response tabulated on the 16-bit code grid: the linear value, the low and high
    ends of the interval a code stands for, whether it is clipped, the reference's trust in it,
    ``weighting`` of each code, and ``weighting`` of the code recorded at each exposure in
    [0, 1] (one more entry, 0, for exposures above 1). Per channel (3 x N) when the channels'
    curves differ, else N long."""

    def __init__(self, inverse: InverseResponse, weighting: Weighting, tolerance: float, relative: float):
        codes = np.linspace(0.0, 1.0, CODES, dtype=np.float32)
        grid = np.repeat(codes[:, None], 3, axis=1)
        high = inverse(np.clip(grid + tolerance, 0, 1)).T * (1 + relative)
        self.linear = _per_channel(inverse(grid).T)
        self.low = _per_channel(inverse(np.clip(grid - tolerance, 0, 1)).T * (1 - relative))
        self.high = _per_channel(np.where(codes >= 1 - tolerance, np.inf, np.maximum(high, 1e-12)))
        self.clipped = codes >= 1 - tolerance
        self.trust = np.clip(np.minimum(codes, 1 - codes) / TRUST_MARGIN, 0, 1).astype(np.float32)
        self.code_weight = _per_channel(np.broadcast_to(weighting(codes), (3, CODES)))
        exposures = np.linspace(0.0, 1.0, EXPOSURES, dtype=np.float32)
        linear = np.broadcast_to(self.linear, (3, CODES))
        recorded = np.stack([np.interp(exposures, linear[c], codes) for c in range(3)])
        self.weight = _per_channel(np.concatenate([weighting(recorded), np.zeros((3, 1))], axis=1))

    def scaled(self, gain: np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The linear, low and high tables times ``gain`` (an image's value in reference units)."""
        return self.linear * gain, self.low * gain, self.high * gain


def _per_channel(table: np.ndarray) -> np.ndarray:
    """A 3 x N float32 table, or its first row when all three rows are the same."""
    table = np.asarray(table, dtype=np.float32)
    return table[0].copy() if (table == table[:1]).all() else np.ascontiguousarray(table)


def _lookup(table: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Table lookup for HxWx3 integer ``index``: one table (N) or one per channel (3 x N)."""
    if table.ndim == 1:
        return table[index]
    out = np.empty(index.shape, dtype=table.dtype)
    for c in range(3):
        out[..., c] = table[c][index[..., c]]
    return out


def _cell_intervals(low: np.ndarray, high: np.ndarray, codes: np.ndarray, block: int) -> tuple[np.ndarray, ...]:
    """The low and high radiance bounds of an image, averaged over ``block``-pixel cells."""
    return block_mean(_lookup(low, codes), block), block_mean(_lookup(high, codes), block)


def _codes(image: np.ndarray) -> np.ndarray:
    scaled = np.asarray(image, dtype=np.float32) * np.float32(CODES - 1) + np.float32(0.5)
    return np.clip(scaled, 0, CODES - 1, out=scaled).astype(np.uint16)


@dataclass(frozen=True)
class _Plan:
    """What every strip of a merge shares."""

    tables: _Tables
    gains: list[np.float32]  # linear value -> reference units, per image
    reference: int
    deghost: bool
    block: int
    size: int
    wrap: bool


def _fuse_rows(images: Sequence[np.ndarray], plan: _Plan) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2-5 of the module docstring on whole images or on strips of rows (in place where
    it can: these arrays are large)."""
    tables, reference = plan.tables, plan.reference
    height, width = images[0].shape[:2]
    codes = [_codes(im) for im in images]
    scaled = [tables.scaled(gain) for gain in plan.gains]
    ref_codes = codes[reference]
    ref_radiance = _lookup(scaled[reference][0], ref_codes)
    ref_trust = _lookup(tables.trust, ref_codes)
    ref_cells = _cell_intervals(*scaled[reference][1:], ref_codes, plan.block)

    weight_sum = _lookup(tables.code_weight, ref_codes) + np.float32(REFERENCE_FLOOR)
    total = weight_sum * ref_radiance
    bound = np.where(tables.clipped[ref_codes], ref_radiance, np.float32(0))
    ghost = np.zeros((height, width), np.float32)
    for i, (q, gain, (linear, low, high)) in enumerate(zip(codes, plan.gains, scaled)):
        if i == reference:
            continue
        radiance = _lookup(linear, q)
        guide = ref_radiance - radiance  # becomes the reference's radiance where it is trusted ...
        guide *= ref_trust
        guide += radiance
        guide *= np.float32((EXPOSURES - 1) / gain)  # ... then this image's exposure of it
        np.minimum(guide, EXPOSURES, out=guide)
        weight = _lookup(tables.weight, guide.astype(np.int32))
        if plan.deghost:
            mask = ghost_mask(_cell_intervals(low, high, q, plan.block), ref_cells, block=plan.block,
                              size=plan.size, shape=(height, width), wrap=plan.wrap)
            np.maximum(ghost, mask, out=ghost)
            keep = (1 - mask)[..., None]
            weight *= keep
        weight_sum += weight
        total += np.multiply(weight, radiance, out=weight)
        if plan.deghost:
            radiance *= keep
        np.maximum(bound, radiance, out=bound, where=tables.clipped[q])
    total /= np.maximum(weight_sum, np.float32(1e-12), out=weight_sum)
    return np.maximum(total, bound, out=total), ghost


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _strips(height: int, count: int, block: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(start, stop) of ``count`` strips of rows, cut at cell boundaries, and the rows around
    each, ``halo`` more on both sides, that it needs to see: (read_start, read_stop, start, stop)."""
    cuts = sorted({round(height * k / count / block) * block for k in range(count)} | {height})
    return [(max(0, a - halo), min(height, b + halo), a, b) for a, b in zip(cuts, cuts[1:])]


def fuse(
    images: Sequence[np.ndarray],
    evs: Sequence[float],
    *,
    inverse_response: InverseResponse,
    weighting: Weighting = weight_triangle,
    reference: int | None = None,
    deghost: bool = True,
    tolerance: float = 2 / 255,
    relative_tolerance: float = 0.05,
    ghost_block: int = 4,
    ghost_size: int | None = None,
    wrap: bool = False,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge aligned brackets into HDR, taking moving things from the reference alone.

    Parameters
    ----------
    images
        Display-encoded HxWx3 float32 in [0, 1], aligned, same size.
    evs
        Exposure of each image in EV (linear values scale as ``2**ev``).
    inverse_response
        Display values -> linear values in [0, 1] (see ``response``).
    weighting
        Weight of a display value (``weight_triangle``, ``weight_hat``, ...).
    reference
        Index of the image that moving things are taken from (default: the middle exposure).
    deghost
        False: a plain weighted average of every image (Debevec & Malik).
    tolerance, relative_tolerance
        Noise a code carries (display values) and a response's error (relative radiance).
    ghost_block, ghost_size
        Images are compared as means over ``ghost_block``-pixel cells; the box width of the
        ghost mask's blur in cells (default: width / 1200, at least 3).
    wrap
        The image is a 360° panorama: the ghost mask wraps across its seam.
    threads
        Strips of rows merged at once (default: the CPUs this process may use, at most 8).
        Every operation is local, so the strips give the same result as the whole image.

    Returns
    -------
    tuple
        HxWx3 float32 scene-linear HDR in the reference's units, and the HxW ghost mask
        (the largest of the images' masks; zeros without ``deghost``).
    """
    if reference is None:
        reference = default_reference(evs)
    check_bracket(images, evs, reference)
    height, width = images[0].shape[:2]
    size = ghost_size or max(3, width // (300 * ghost_block))
    plan = _Plan(
        tables=_Tables(inverse_response, weighting, tolerance, relative_tolerance),
        gains=[np.float32(2.0 ** -(ev - evs[reference])) for ev in evs],
        reference=reference, deghost=deghost, block=ghost_block, size=size, wrap=wrap,
    )
    threads = threads or min(8, _usable_cpus())
    halo = ghost_block * (size + 4)  # reach of the ghost mask: neighbourhood, growth, two blurs, upsampling
    strips = _strips(height, max(1, min(threads, height // (4 * halo))), ghost_block, halo)

    def run(strip: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        read_start, read_stop, start, stop = strip
        hdr, ghost = _fuse_rows([im[read_start:read_stop] for im in images], plan)
        return hdr[start - read_start : stop - read_start], ghost[start - read_start : stop - read_start]

    if len(strips) == 1:
        return run(strips[0])
    with ThreadPoolExecutor(len(strips)) as pool:  # numpy releases the GIL in these loops
        parts = list(pool.map(run, strips))
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _resolve_response(
    response: str | CRF | InverseResponse, images: Sequence[np.ndarray], evs: Sequence[float], reference: int
) -> InverseResponse:
    if callable(response) and not isinstance(response, CRF):
        return response
    if response == "recover":
        return tabulated_response(recover_response(images, evs))
    try:
        return inverse_response(response)
    except ValueError as error:
        raise BadInput(f"{error}, or 'recover'") from None


def merge_brackets(
    images: Sequence[np.ndarray],
    evs: Sequence[float],
    *,
    response: str | CRF | InverseResponse = "srgb",
    reference: int | None = None,
    align: bool = True,
    wrap: bool = False,
    weighting: Weighting = weight_triangle,
    deghost: bool = True,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> Merged:
    """Align, linearise and merge an exposure bracket with ghost removal.

    ``response`` is ``"srgb"`` (the default), ``"linear"``, ``"recover"`` (Debevec & Malik
    from the aligned brackets), a LEDiff ``CRF`` or an inverse response function. ``wrap``
    marks a 360° panorama (alignment and ghost masks wrap across the seam). ``progress`` is
    called as ``progress(stage, step, total)`` and ``should_cancel`` polled between stages.
    Other arguments as in ``fuse``.

    Raises
    ------
    BadInput
        Not a bracket (see ``check_bracket``) or an unknown response.
    Cancelled
        ``should_cancel`` returned True.
    """
    if reference is None:
        reference = default_reference(evs)
    check_bracket(images, evs, reference)
    stages = ("align", "response", "merge")

    def step(index: int) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("merge cancelled")
        if progress is not None:
            progress(stages[index], index, len(stages))

    step(0)
    shifts = [(0, 0)] * len(images)
    if align:
        images, shifts = align_brackets(images, reference, wrap=wrap)
    step(1)
    inverse = _resolve_response(response, images, evs, reference)
    step(2)
    hdr, ghost = fuse(images, evs, inverse_response=inverse, weighting=weighting, reference=reference,
                      deghost=deghost, wrap=wrap)
    return Merged(hdr, ghost, reference, shifts)

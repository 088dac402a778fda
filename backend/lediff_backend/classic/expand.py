"""Classic LDR -> HDR expansion: no weights, fast, seamless on panoramas.

An 8-bit photo loses everything above its white point: a clipped sun keeps a fraction of a
percent of its energy. The engine restores what the photo still tells, in five steps:

1. **Linearise** with the photo's response (sRGB, or a LEDiff-family CRF).
2. **Recover partially clipped pixels** from their unclipped channels (``partial_clip``).
3. **Find clipped regions**: pixels whose brightest channel reaches ``clip_level``, grouped
   into connected regions (joined across the panorama's seam).
4. **Expand highlights smoothly**: over each region's fully clipped core the gain in stops
   rises from 0 at the core's edge towards a dome height, ``1 - exp(-d/d0)``. Light sources
   (small, round regions whose rim glows and then darkens within a few degrees: lamps,
   softboxes) rise to ``source_stops``; sky and bright walls (large or ragged regions, a dark
   rim) and glows (a rim that stays bright: haze, an underexposed aureole) to ``sky_stops``.
5. **Reconstruct the sun**: when a large, round, glowing region sits in the sky, a 0.53° disc
   at its centre receives the energy that the circumsolar aureole implies. The aureole falls
   off about as ``E_sun/θ²``, so the glow's clipped solid angle Ω grows in proportion to the
   sun's irradiance: ``E_sun = sun_energy_per_sr · Ω``. ``sun_ev`` overrides it with the
   sun's radiance in stops over the photo's white.

Output is scene-linear, relative to the photo's exposure (white = 1). The settings' defaults
were calibrated on the eight CC0 HDRIs in Blender's bpy wheel (``bench/fidelity.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from ..errors import Cancelled
from ..hdr.color import CRF, inverse_crf_lediff, luminance, srgb_to_linear
from ..hdr.projection import solid_angle_weights, uv_to_direction
from ..hdr.regions import inner_distance, wrapped_labels
from .partial_clip import ClipMasks, recover_partial_clipping

__all__ = ["ExpandSettings", "Expansion", "expand_ldr", "linearise", "SUN_DIAMETER_DEG"]

SUN_DIAMETER_DEG = 0.53
SUN_DISC_SR = 2 * np.pi * (1 - np.cos(np.radians(SUN_DIAMETER_DEG / 2)))

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class ExpandSettings:
    """Tuning of the classic expansion (see the module docstring)."""

    clip_level: float = 0.99  # display value at which a channel counts as clipped
    sky_stops: float = 1.25  # dome height of sky-like regions
    source_stops: float = 9.5  # dome height of light sources
    source_max_solid_angle: float = 0.1  # sr; larger regions are sky-like
    source_min_radius_deg: float = 1.0  # thinner regions are glints or sky between leaves
    round_below: float = 1.5  # region area over the disc of its inner radius: lamps are round
    ragged_above: float = 3.0  # sky seen through leaves or around objects is ragged
    halo_from: float = 0.1  # linear luminance just outside a region: lamps glow, so ...
    halo_full: float = 0.35  # ... a bright rim marks a light source, a dark one a bright object
    rim_near_deg: float = 1.0  # width of the rim that ``halo_*`` measure
    rim_far_deg: float = 3.5  # width of the wider rim whose luminance, over the near rim's, ...
    sharp_below: float = 0.75  # ... falls off fast around a light source (an emitter's edge) ...
    soft_above: float = 0.95  # ... and hardly at all around a glow (an aureole, clipped haze)
    sky_rise: float = 0.25  # d0 of sky domes as a fraction of the region's inner radius
    source_rise: float = 0.1  # light sources are flat emitters with a sharp edge
    sun_energy_per_sr: float = 1.0  # sun irradiance per steradian of clipped aureole
    sun_min_solid_angle: float = 0.2  # sr; a sun clips a wide glow around itself
    sun_min_rim: float = 0.45  # luminance just outside the glow: the aureole fades smoothly
    sun_max_ragged: float = 3.0  # the aureole is round


@dataclass(frozen=True)
class Expansion:
    """Result of ``expand_ldr``: the HDR image and where the sun was put (None if nowhere)."""

    hdr: np.ndarray
    sun_direction: np.ndarray | None
    clipped_fraction: float


@dataclass(frozen=True)
class Regions:
    """Clipped regions: labels (HxW, 0 = unclipped) and per-label measures (index 0 unused)."""

    labels: np.ndarray
    solid_angle: np.ndarray  # sr
    ragged: np.ndarray  # area over the disc of the inner radius, in pixels (1 = a disc)
    rim: np.ndarray  # mean luminance just outside


def linearise(encoded: np.ndarray, response: str | CRF = "srgb") -> np.ndarray:
    """Display values in [0, 1] -> scene-linear through the inverse response.

    Evaluated through a 16-bit lookup table: exact for 8- and 16-bit inputs, and several
    times faster than the power functions on large panoramas.
    """
    codes = np.linspace(0.0, 1.0, 65536, dtype=np.float32)
    if isinstance(response, CRF):
        table = inverse_crf_lediff(codes, response)
    elif response == "srgb":
        table = srgb_to_linear(codes)
    else:
        raise ValueError(f"unknown response {response!r}: use 'srgb' or a CRF")
    index = np.empty(encoded.shape, dtype=np.uint16)
    np.rint(np.clip(encoded, 0.0, 1.0) * 65535.0, out=index, casting="unsafe")
    return table[index]


def _pixel_solid_angles(height: int, width: int, panorama: bool, degrees_per_pixel: float) -> np.ndarray:
    if panorama:
        return np.broadcast_to(solid_angle_weights(height, width).astype(np.float32), (height, width))
    return np.full((height, width), np.radians(degrees_per_pixel) ** 2, dtype=np.float32)


def _per_region(values: np.ndarray, labels: np.ndarray, count: int, reduce: str = "sum") -> np.ndarray:
    """Sum (or max) of ``values`` over each label 1..count; index 0 is 0."""
    if reduce == "sum":
        return np.bincount(labels, weights=values, minlength=count + 1)
    out = np.zeros(count + 1)
    np.maximum.at(out, labels, values)
    return out


def _rim_luminance(linear: np.ndarray, labels: np.ndarray, count: int, wrap: bool, width_px: int = 3) -> np.ndarray:
    """Mean luminance of the pixels within ``width_px`` outside each region (index 0 unused).

    With ``wrap`` the rim continues across the panorama's seam (never from top to bottom).
    """
    rows = np.flatnonzero(labels.any(axis=1))
    top, bottom = max(rows[0] - width_px, 0), min(rows[-1] + width_px + 1, labels.shape[0])
    band = labels[top:bottom]
    pad = width_px if wrap else 0
    padded = np.pad(band, ((0, 0), (pad, pad)), mode="wrap")
    size = (2 * width_px + 1, 2 * width_px + 1)
    grown = ndimage.grey_dilation(padded, size=size, mode="nearest")[:, pad : pad + band.shape[1]]
    rim = (band == 0) & (grown > 0)
    rim_labels = grown[rim]
    total = np.bincount(rim_labels, weights=luminance(linear[top:bottom][rim]), minlength=count + 1)
    counts = np.bincount(rim_labels, minlength=count + 1)
    return np.where(counts > 0, total / np.maximum(counts, 1), 1.0)


def exposure_offset(linear: np.ndarray, masks: ClipMasks, key: float = 0.3) -> float:
    """Stops by which a photo is darker than a metered one (0 for metered or brighter photos).

    Measured on the bright surfaces: the 90th percentile of the unclipped luminance reaches
    ``key`` or more in a metered photo (0.33-0.73 on the eight bpy HDRIs' lit scenes). Light sources are about as bright relative
    to the surfaces they light whatever the exposure, so a darker photo shows them fewer stops
    over its white: the source domes and the sun's energy follow this offset.
    """
    lum = luminance(linear[::4, ::4])[~masks.any[::4, ::4]]
    if lum.size == 0:
        return 0.0
    return float(min(0.0, np.log2(max(float(np.percentile(lum, 90)), 1e-6) / key)))


def _pixels(degrees: float, degrees_per_pixel: float) -> int:
    return max(1, round(degrees / degrees_per_pixel))


def _classify_and_gain(linear, masks, labels, count, solid_angles, degrees_per_pixel, wrap, settings, offset=0.0):
    """Gain in stops of every pixel, and the regions' measures.

    Roundness is measured in pixels (area over the disc of the inner radius), so that the
    equirect stretch near the poles does not matter; regions touching a pole row are sky.
    """
    inside = np.flatnonzero(labels)
    region_of = labels.ravel()[inside]
    distance_px = inner_distance(labels > 0, wrap=wrap)
    core_distance_px = inner_distance(masks.all, wrap=wrap)

    region_sr = _per_region(solid_angles.ravel()[inside], region_of, count)
    region_px = np.bincount(region_of, minlength=count + 1)
    radius_px = _per_region(distance_px.ravel()[inside], region_of, count, reduce="max")
    ragged = region_px / (np.pi * np.maximum(radius_px, 0.5) ** 2)
    rim = _rim_luminance(linear, labels, count, wrap, _pixels(settings.rim_near_deg, degrees_per_pixel))
    far_rim = _rim_luminance(linear, labels, count, wrap, _pixels(settings.rim_far_deg, degrees_per_pixel))

    at_pole = np.zeros(count + 1, dtype=bool)
    at_pole[np.unique(labels[[0, -1]])] = True
    is_source = (
        (region_sr <= settings.source_max_solid_angle)
        & (radius_px * degrees_per_pixel >= settings.source_min_radius_deg)
        & ~at_pole
    )
    roundness = np.clip((settings.ragged_above - ragged) / (settings.ragged_above - settings.round_below), 0, 1)
    halo = np.clip((rim - settings.halo_from) / (settings.halo_full - settings.halo_from), 0, 1)
    falloff = far_rim / np.maximum(rim, 1e-6)
    sharpness = np.clip((settings.soft_above - falloff) / (settings.soft_above - settings.sharp_below), 0, 1)
    source_weight = roundness * halo * sharpness * is_source
    source_stops = max(settings.source_stops + offset, settings.sky_stops)
    heights = settings.sky_stops + (source_stops - settings.sky_stops) * source_weight
    rise_fraction = settings.sky_rise + (settings.source_rise - settings.sky_rise) * source_weight
    rise = np.maximum(radius_px * rise_fraction, 0.5)

    # Sky domes start at the fully clipped core (partial pixels were recovered); a light
    # source's glow is as bright as its core, so its dome covers the whole region.
    weight = source_weight[region_of]
    distance = weight * distance_px.ravel()[inside] + (1 - weight) * core_distance_px.ravel()[inside]
    gain = np.zeros(labels.size, dtype=np.float32)
    gain[inside] = heights[region_of] * -np.expm1(-distance / rise[region_of])
    return gain.reshape(labels.shape), Regions(labels, region_sr, ragged, rim)


def _sun_region(regions: Regions, solid_angles: np.ndarray, settings: ExpandSettings):
    """The largest round, glowing region centred above the horizon, and its centre direction.

    The circumsolar aureole is large (a sun clips a wide glow around itself), round, and
    fades smoothly, so its rim is bright; sky seen through leaves or past a roof is ragged
    and has a dark rim. The centre is the solid-angle-weighted mean direction of the glow.
    """
    labels = regions.labels
    height, width = labels.shape
    for region in np.argsort(regions.solid_angle[1:])[::-1] + 1:
        if regions.solid_angle[region] < settings.sun_min_solid_angle:
            break
        if regions.ragged[region] > settings.sun_max_ragged or regions.rim[region] < settings.sun_min_rim:
            continue
        rows, cols = np.nonzero(labels == region)
        directions = uv_to_direction((cols + 0.5) / width, 1.0 - (rows + 0.5) / height)
        centre = (directions * solid_angles[rows, cols][:, None]).sum(axis=0)
        centre /= np.linalg.norm(centre)
        if centre[2] > 0:
            return int(region), centre
    return None, None


def _paint_sun(hdr: np.ndarray, direction: np.ndarray, energy: float, colour: np.ndarray) -> None:
    """Add a 0.53° disc of total ∫L dω = ``energy`` around ``direction``, in place.

    Only the rows the disc can touch are computed; coverage ramps over one pixel so that a
    sub-pixel disc still lands on its nearest pixels.
    """
    height, width = hdr.shape[:2]
    radius = np.radians(SUN_DIAMETER_DEG / 2)
    pixel = np.pi / height
    row = (0.5 - np.arcsin(np.clip(direction[2], -1, 1)) / np.pi) * height
    reach = int(np.ceil((radius + pixel) / pixel)) + 1
    top, bottom = max(int(row) - reach, 0), min(int(row) + reach + 1, height)
    u = (np.arange(width) + 0.5) / width
    v = 1.0 - (np.arange(top, bottom) + 0.5) / height
    band_directions = uv_to_direction(u[None, :], v[:, None])
    angle = np.arccos(np.clip(band_directions @ direction.astype(np.float32), -1.0, 1.0))
    coverage = np.clip((radius + pixel - angle) / pixel, 0.0, 1.0)
    weights = coverage * solid_angle_weights(height, width)[top:bottom]
    hdr[top:bottom] += ((energy / weights.sum()) * coverage[..., None] * colour).astype(np.float32)


def expand_ldr(
    encoded: np.ndarray,
    *,
    response: str | CRF = "srgb",
    panorama: bool = True,
    sun_ev: float | None = None,
    degrees_per_pixel: float | None = None,
    settings: ExpandSettings = ExpandSettings(),
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> Expansion:
    """Expand a display-encoded LDR image (HxWx3 float in [0, 1]) to scene-linear HDR.

    ``panorama`` means a 2:1 equirect image: regions and distances wrap across the seam and
    a sun may be reconstructed. For a normal photo, ``degrees_per_pixel`` (default 60° over
    the longer side) sets the scale of distances and solid angles. ``should_cancel`` is
    checked between steps and raises ``Cancelled``.
    """
    steps = ("linearise", "recover channels", "regions", "expand", "sun")

    def step(index: int) -> None:
        if should_cancel is not None and should_cancel():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(steps[index], index, len(steps))

    height, width = encoded.shape[:2]
    if degrees_per_pixel is None:
        degrees_per_pixel = 180.0 / height if panorama else 60.0 / max(height, width)

    step(0)
    hdr = linearise(encoded, response)
    step(1)
    masks = ClipMasks(encoded, settings.clip_level)
    hdr = recover_partial_clipping(hdr, encoded, masks, wrap=panorama)
    step(2)
    labels, count = wrapped_labels(masks.any, wrap=panorama)
    if count == 0:
        return Expansion(hdr, None, 0.0)
    solid_angles = _pixel_solid_angles(height, width, panorama, degrees_per_pixel)
    step(3)
    offset = exposure_offset(hdr, masks)
    gain, regions = _classify_and_gain(
        hdr, masks, labels, count, solid_angles, degrees_per_pixel, panorama, settings, offset
    )
    hdr *= np.exp2(gain)[..., None]
    step(4)
    sun_direction = None
    if panorama:
        region, sun_direction = _sun_region(regions, solid_angles, settings)
        if region is not None:
            energy = (
                2.0**sun_ev * SUN_DISC_SR
                if sun_ev is not None
                else settings.sun_energy_per_sr * regions.solid_angle[region] * 2.0**offset
            )
            colour = hdr[labels == region].mean(axis=0)
            _paint_sun(hdr, sun_direction, float(energy), colour / max(float(luminance(colour)), 1e-6))
    return Expansion(hdr, sun_direction, float(masks.any.mean()))

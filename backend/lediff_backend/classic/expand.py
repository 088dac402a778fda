"""Classic LDR -> HDR expansion: no weights, fast, seamless on panoramas.

An 8-bit photo loses everything above its white point: a clipped sun keeps a fraction of a
percent of its energy. The engine restores it in four steps:

1. **Linearise** with the photo's response (sRGB, or a LEDiff-family CRF).
2. **Find clipped regions**: pixels whose brightest channel reaches ``clip_level``, grouped
   into connected regions (joined across the panorama's seam).
3. **Expand highlights smoothly**: inside each region the gain in stops rises from 0 at its
   edge towards a dome height, ``1 - exp(-d/d0)`` with ``d`` the distance from the edge. Small
   regions are light sources (lamps, softboxes, windows lit by the sun), many stops over
   white; large ones are bright sky or walls, a few stops over.
4. **Reconstruct the sun**: when the largest bright region sits in the sky, a 0.53° disc at its
   core receives the energy that the circumsolar aureole implies. The aureole falls off about
   as ``E_sun/θ²``, so the glow's clipped solid angle Ω grows in proportion to the sun's
   irradiance: ``E_sun = sun_energy_per_sr · Ω``. ``sun_ev`` overrides it with the sun's
   radiance in stops over the photo's white.

Output is scene-linear, relative to the photo's exposure (white = 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import ndimage

from ..errors import Cancelled
from ..hdr.color import CRF, inverse_crf_lediff, luminance, srgb_to_linear
from ..hdr.projection import equirect_directions, solid_angle_weights, uv_to_direction
from ..hdr.regions import inner_distance, wrapped_labels

__all__ = ["ExpandSettings", "Expansion", "expand_ldr", "linearise", "SUN_DIAMETER_DEG"]

SUN_DIAMETER_DEG = 0.53

ProgressFn = Callable[[str, int, int], None]
CancelFn = Callable[[], bool]


@dataclass(frozen=True)
class ExpandSettings:
    """Tuning of the classic expansion; defaults were calibrated on real CC0 HDRIs (README)."""

    clip_level: float = 0.99  # display value of the brightest channel counted as clipped
    sky_stops: float = 1.0  # dome height of large bright regions (sky, walls)
    source_stops: float = 9.0  # dome height of small bright regions (light sources)
    source_max_solid_angle: float = 0.1  # sr; larger regions are sky-like
    source_min_radius_deg: float = 1.0  # thinner regions are glints or sky between leaves
    round_below: float = 1.5  # region area over the disc of its inner radius: lamps are round
    ragged_above: float = 3.0  # sky seen through leaves or around objects is ragged
    halo_from: float = 0.1  # linear luminance just outside a region: lamps glow, so ...
    halo_full: float = 0.35  # ... a bright rim marks a light source, a dark one a bright object
    sky_rise: float = 0.25  # d0 of sky domes as a fraction of the region's inner radius
    source_rise: float = 0.1  # light sources are flat emitters with a sharp edge
    sun_energy_per_sr: float = 1.0  # sun irradiance per steradian of clipped aureole
    sun_min_solid_angle: float = 0.02  # sr; smaller glows hold no sun worth a disc
    sun_max_ragged: float = 3.0  # the aureole is round


@dataclass(frozen=True)
class Expansion:
    """Result of ``expand_ldr``: the HDR image and where the sun was put (None if nowhere)."""

    hdr: np.ndarray
    sun_direction: np.ndarray | None
    clipped_fraction: float


def linearise(encoded: np.ndarray, response: str | CRF = "srgb") -> np.ndarray:
    """Display values in [0, 1] -> scene-linear through the inverse response."""
    if isinstance(response, CRF):
        return inverse_crf_lediff(encoded, response)
    if response == "srgb":
        return srgb_to_linear(encoded)
    raise ValueError(f"unknown response {response!r}: use 'srgb' or a CRF")


def _pixel_solid_angles(height: int, width: int, panorama: bool, degrees_per_pixel: float) -> np.ndarray:
    if panorama:
        return np.broadcast_to(solid_angle_weights(height, width), (height, width))
    return np.full((height, width), np.radians(degrees_per_pixel) ** 2)


def _rim_luminance(linear: np.ndarray, labels: np.ndarray, count: int, width_px: int = 3) -> np.ndarray:
    """Mean luminance of the unclipped pixels within ``width_px`` outside each region."""
    grown = ndimage.grey_dilation(labels, size=(2 * width_px + 1, 2 * width_px + 1))
    rim = (labels == 0) & (grown > 0)
    return ndimage.mean(luminance(linear), np.where(rim, grown, 0), np.arange(count + 1))


def _region_gain_stops(distance_px: np.ndarray, labels: np.ndarray, count: int, solid_angles: np.ndarray,
                       rim: np.ndarray, degrees_per_pixel: float, settings: ExpandSettings):
    """Gain in stops of every pixel, and each region's solid angle (index 0 unused).

    Roundness is measured in pixels (area over the disc of the inner radius), so that the
    equirect stretch near the poles does not matter; regions touching a pole row are sky.
    """
    index = np.arange(count + 1)
    region_sr = ndimage.sum_labels(solid_angles, labels, index)
    region_px = ndimage.sum_labels(np.ones_like(distance_px), labels, index)
    radius_px = ndimage.maximum(distance_px, labels, index)
    at_pole = np.zeros(count + 1, dtype=bool)
    at_pole[np.unique(labels[[0, -1]])] = True
    ragged = region_px / (np.pi * np.maximum(radius_px, 0.5) ** 2)
    roundness = np.clip((settings.ragged_above - ragged) / (settings.ragged_above - settings.round_below), 0, 1)
    is_source = (
        (region_sr <= settings.source_max_solid_angle)
        & (radius_px * degrees_per_pixel >= settings.source_min_radius_deg)
        & ~at_pole
    )
    halo = np.clip((rim - settings.halo_from) / (settings.halo_full - settings.halo_from), 0, 1)
    source_weight = roundness * halo * is_source
    heights = settings.sky_stops + (settings.source_stops - settings.sky_stops) * source_weight
    rise_fraction = settings.sky_rise + (settings.source_rise - settings.sky_rise) * source_weight
    rise = np.maximum(radius_px * rise_fraction, 0.5)
    gain = heights[labels] * (1.0 - np.exp(-distance_px / rise[labels]))
    gain[labels == 0] = 0.0
    return gain.astype(np.float32), region_sr, ragged


def _sun_region(labels: np.ndarray, region_sr: np.ndarray, ragged: np.ndarray, solid_angles: np.ndarray,
                settings: ExpandSettings) -> tuple[int | None, np.ndarray | None]:
    """The largest round glow centred above the horizon, and its centre direction.

    The circumsolar aureole is round; sky seen through leaves or past a roof is ragged. The
    centre is the solid-angle-weighted mean direction of the glow.
    """
    height, width = labels.shape
    for region in np.argsort(region_sr[1:])[::-1] + 1:
        if region_sr[region] < settings.sun_min_solid_angle:
            break
        if ragged[region] > settings.sun_max_ragged:
            continue
        rows, cols = np.nonzero(labels == region)
        directions = uv_to_direction((cols + 0.5) / width, 1.0 - (rows + 0.5) / height)
        centre = (directions * solid_angles[rows, cols][:, None]).sum(axis=0)
        centre /= np.linalg.norm(centre)
        if centre[2] > 0:
            return int(region), centre
    return None, None


def _paint_sun(hdr: np.ndarray, direction: np.ndarray, energy: float, colour: np.ndarray) -> None:
    """Add a 0.53° disc of total ∫L dω = ``energy`` around ``direction``, in place."""
    height, width = hdr.shape[:2]
    radius = np.radians(SUN_DIAMETER_DEG / 2)
    pixel = np.pi / height
    cosine = equirect_directions(height, width) @ direction.astype(np.float32)
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    # Coverage ramps over one pixel so that a sub-pixel disc still lands on its nearest pixels.
    coverage = np.clip((radius + pixel - angle) / pixel, 0.0, 1.0)
    weights = coverage * solid_angle_weights(height, width)
    hdr += (energy / weights.sum()) * coverage[..., None] * colour


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
    the longer side) sets the scale of distances and solid angles.
    """
    steps = ("linearise", "regions", "expand", "sun")

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
    clipped = encoded.max(axis=-1) >= settings.clip_level
    labels, count = wrapped_labels(clipped, wrap=panorama)
    distance_px = inner_distance(clipped, wrap=panorama)
    solid_angles = _pixel_solid_angles(height, width, panorama, degrees_per_pixel)

    step(2)
    rim = _rim_luminance(hdr, labels, count)
    gain, region_sr, ragged = _region_gain_stops(
        distance_px, labels, count, solid_angles, np.nan_to_num(rim), degrees_per_pixel, settings
    )
    hdr *= np.exp2(gain)[..., None]

    step(3)
    sun_direction = None
    if panorama and count:
        region, sun_direction = _sun_region(labels, region_sr, ragged, solid_angles, settings)
        if region is not None:
            if sun_ev is not None:
                disc_sr = 2 * np.pi * (1 - np.cos(np.radians(SUN_DIAMETER_DEG / 2)))
                energy = 2.0**sun_ev * disc_sr
            else:
                energy = settings.sun_energy_per_sr * float(region_sr[region])
            colour = hdr[labels == region].mean(axis=0)
            _paint_sun(hdr, sun_direction, energy, colour / max(float(colour @ [0.2126, 0.7152, 0.0722]), 1e-6))
    return Expansion(hdr.astype(np.float32, copy=False), sun_direction, float(clipped.mean()))

"""Find the sun in an equirectangular HDR map: plain Python over Blender's pixel buffer, no bpy.

The add-on cannot use numpy, so this is a pure-Python reading of the same idea as the backend's
``hdr/sun.py`` (whose numbers come with ``done`` events): the sun is the connected region of
pixels around the brightest one that are brighter than ``peak_fraction`` of it.

Here the sun is what stands *above the sky around it*: ``threshold`` is the brightest channel of
the pixels that ring the region, and the sun's light is the excess over it. That is exactly what
a Sun lamp must add back when the map is clamped to ``threshold`` inside the sun's cap
(``sun_lamp``), so the sun's light is never counted twice, nor lost.

Pixels come as Blender stores them: a flat sequence of ``channels`` floats per pixel (RGBA),
rows from the bottom (v = 0, the nadir) to the top; directions follow DESIGN.md (the image
centre looks along +X, +Z is up). Results are in the map's own units, at world strength 1:
``rgb`` is the irradiance the sun gives a surface facing it, as a Blender Sun lamp's
``color * energy``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Sun", "find_sun", "pixel_direction"]

PEAK_FRACTION = 0.1
MAX_DIAMETER_DEG = 10.0
SKY_STRIDE = 4  # the sky's share is summed over every 4th pixel of every 4th row


@dataclass(frozen=True)
class Sun:
    """The sun of a map, in image space (before the world's rotation)."""

    direction: tuple[float, float, float]  # unit vector towards the sun
    rgb: tuple[float, float, float]  # irradiance on a surface facing the sun, per channel
    share: float  # of all the irradiance on that surface (sun + sky)
    solid_angle: float  # steradians of the region
    radius_deg: float  # angular radius of the region around ``direction``
    threshold: float  # the sky level around the sun: the map keeps min(value, threshold) there

    @property
    def elevation_deg(self) -> float:
        return math.degrees(math.asin(max(-1.0, min(1.0, self.direction[2]))))

    @property
    def azimuth_deg(self) -> float:
        """Counter-clockwise from +X, seen from above."""
        return math.degrees(math.atan2(self.direction[1], self.direction[0]))


def pixel_direction(column: float, row: float, width: int, height: int) -> tuple[float, float, float]:
    """Unit direction of a pixel centre (row 0 at the bottom, Blender's order)."""
    azimuth = (0.5 - (column + 0.5) / width) * 2.0 * math.pi
    elevation = ((row + 0.5) / height - 0.5) * math.pi
    c = math.cos(elevation)
    return (c * math.cos(azimuth), c * math.sin(azimuth), math.sin(elevation))


def _luminance(r: float, g: float, b: float) -> float:
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _neighbours(index: int, width: int, height: int):
    row, column = divmod(index, width)
    yield row * width + (column + 1) % width  # longitude wraps
    yield row * width + (column - 1) % width
    if row > 0:
        yield index - width
    if row < height - 1:
        yield index + width


def _grow(green: Sequence[float], start: int, level: float, width: int, height: int, limit: int):
    """(region, ring): pixels connected to ``start`` above ``level``, and those around them.

    None when the region passes ``limit`` pixels: then it is a bright sky, not a sun.
    """
    region, ring = {start}, set()
    todo = deque([start])
    while todo:
        for other in _neighbours(todo.popleft(), width, height):
            if other in region or other in ring:
                continue
            if green[other] > level:
                region.add(other)
                if len(region) > limit:
                    return None
                todo.append(other)
            else:
                ring.add(other)
    return region, ring


def find_sun(
    pixels: Sequence[float],
    width: int,
    height: int,
    channels: int = 4,
    *,
    peak_fraction: float = PEAK_FRACTION,
    max_diameter_deg: float = MAX_DIAMETER_DEG,
) -> Sun | None:
    """The sun of the map, or None when its brightest light is no compact source.

    Regions wider than ``max_diameter_deg`` (an overcast sky, a window) are no sun.
    """
    green = pixels[1::channels]
    peak = max(green)
    if not peak > 0:
        return None
    start = green.index(peak)
    pixel_solid_angle = (2.0 * math.pi / width) * (math.pi / height)
    cap = 2.0 * math.pi * (1.0 - math.cos(math.radians(max_diameter_deg) / 2))
    row_of_peak = start // width
    limit = int(cap / (pixel_solid_angle * max(math.cos(((row_of_peak + 0.5) / height - 0.5) * math.pi), 1e-3))) + 1
    grown = _grow(green, start, peak * peak_fraction, width, height, limit)
    if grown is None:
        return None
    region, ring = grown

    def rgb(index: int) -> tuple[float, float, float]:
        at = index * channels
        return pixels[at], pixels[at + 1], pixels[at + 2]

    threshold = max((max(rgb(i)) for i in ring), default=0.0)
    # Direction: centroid of the region's excess light over the sky around it.
    cells = []
    for index in region:
        row, column = divmod(index, width)
        direction = pixel_direction(column, row, width, height)
        omega = pixel_solid_angle * math.cos(math.asin(direction[2]))
        cells.append((direction, omega, [max(0.0, c - threshold) for c in rgb(index)]))
    centroid = [sum(d[k] * omega * _luminance(*excess) for d, omega, excess in cells) for k in range(3)]
    norm = math.sqrt(sum(c * c for c in centroid))
    if norm == 0:
        return None
    direction = tuple(c / norm for c in centroid)

    def cosine(d) -> float:
        return max(0.0, d[0] * direction[0] + d[1] * direction[1] + d[2] * direction[2])

    sun_rgb = tuple(sum(excess[k] * omega * cosine(d) for d, omega, excess in cells) for k in range(3))
    radius = max(math.degrees(math.acos(min(1.0, cosine(d)))) for d, _, _ in cells)
    sky = _sky_irradiance(pixels, width, height, channels, threshold, cosine)
    sun_irradiance = _luminance(*sun_rgb)
    return Sun(
        direction=direction,
        rgb=sun_rgb,
        share=sun_irradiance / (sun_irradiance + sky) if sun_irradiance + sky > 0 else 0.0,
        solid_angle=sum(omega for _, omega, _ in cells),
        radius_deg=radius + math.degrees(math.pi / height),  # plus a pixel, so the whole disc is inside
        threshold=threshold,
    )


def _sky_irradiance(pixels, width: int, height: int, channels: int, threshold: float, cosine) -> float:
    """Irradiance of the map clamped to ``threshold`` (the sky without the sun), sampled sparsely."""
    total = 0.0
    omega_step = (2.0 * math.pi / width) * (math.pi / height) * SKY_STRIDE * SKY_STRIDE
    for row in range(SKY_STRIDE // 2, height, SKY_STRIDE):
        for column in range(SKY_STRIDE // 2, width, SKY_STRIDE):
            direction = pixel_direction(column, row, width, height)
            weight = cosine(direction)
            if weight > 0:
                at = (row * width + column) * channels
                value = _luminance(*(min(c, threshold) for c in pixels[at:at + 3]))
                total += value * weight * omega_step * math.sqrt(1.0 - direction[2] ** 2)
    return total

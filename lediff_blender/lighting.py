"""Put a map on a World, safely, and remember it in the Scene's history.

The one path every operator and the generation pump use: the file is checked first (it exists
and Blender can read its pixels), so a bad file leaves the World as it was; the World's own
controls (``World.lediff``) give EV, rotation and background; a Sun lamp made from the previous
map is removed with it, since it would light the scene twice.
"""

from __future__ import annotations

import os
import time

import bpy

from . import sun_lamp
from . import world as world_nodes
from .properties import world_settings

__all__ = ["apply_file", "ensure_world", "remember"]


def ensure_world(scene: bpy.types.Scene) -> bpy.types.World:
    """The scene's World, created when it has none."""
    if scene.world is None:
        scene.world = bpy.data.worlds.new("LEDiff World")
    return scene.world


def apply_file(world: bpy.types.World, filepath: str) -> bpy.types.Image:
    """Light ``world`` with the map at ``filepath`` (``//`` paths allowed); ValueError leaves it untouched."""
    path = os.path.abspath(bpy.path.abspath(filepath))
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path}")
    known = {image.as_pointer() for image in bpy.data.images}
    try:
        image = bpy.data.images.load(path, check_existing=True)
    except RuntimeError as exc:
        raise ValueError(f"Blender cannot open {path}: {exc}") from None
    if image.size[0] == 0:  # reading the size loads the pixels
        if image.as_pointer() not in known:
            bpy.data.images.remove(image)
        raise ValueError(f"Blender cannot read the pixels of {path}")
    previous = world_nodes.environment_image(world)
    if previous is not None and previous != image:
        sun_lamp.remove_sun(world)
    world_nodes.apply_environment(world, path, **world_settings(world.lediff))
    return image


def remember(scene: bpy.types.Scene, filepath: str, *, mode: str, source: str, seconds: float = 0.0,
             stops: float = 0.0) -> None:
    """Add a result to the Scene's history (once per file) and make it the active entry."""
    history = scene.lediff.history
    for index, item in enumerate(history):
        if item.filepath == filepath:
            scene.lediff.history_index = index
            return
    item = history.add()
    item.name = f"{os.path.splitext(os.path.basename(filepath))[0]} ({time.strftime('%H:%M')})"
    item.filepath = filepath
    item.mode = mode
    item.source = source
    item.seconds = seconds
    item.stops = stops
    scene.lediff.history_index = len(history) - 1

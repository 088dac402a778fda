"""A Sun lamp from the world's map, and the map's sun taken out of the lighting so it counts once.

Pure bpy plus ``sun`` (the estimate). The lamp is the object ``LEDiff Sun``; it remembers, as
custom properties, the sun's image-space direction and light, so ``follow_world`` can keep it in
step when the world's EV or rotation change (the properties' update callbacks call it).

Removing the sun from the map adds four named nodes between the lighting Environment Texture and
its Background (the camera's branch keeps the sun visible)::

    Mapping.Vector -> dot(sun direction) -> > cos(radius) -------------------.
    Environment.Color -> min(threshold) -> Mix(Factor, A = colour, B = clamped) -> Light Background

Inside the sun's cap the map is clamped to the sky level around it (``Sun.threshold``), which
takes away exactly the light the lamp adds. The cap is tested on the Mapping output, i.e. in
image space, so it turns with the world's rotation by itself.
"""

from __future__ import annotations

import array
import math

import bpy
from mathutils import Matrix, Vector

from . import world as world_nodes
from .sun import Sun, find_sun

__all__ = ["SUN_OBJECT", "MASK_NODES", "read_pixels", "add_sun", "follow_world", "remove_sun", "has_mask"]

SUN_OBJECT = "LEDiff Sun"
SUN_ANGLE_DEG = 0.53  # the real sun's angular diameter
ANALYSIS_WIDTH = 1024  # larger maps are area-averaged to this width first (the backend does the same)

COSINE = "LEDiff Sun Cosine"
INSIDE = "LEDiff Sun Inside"
CLAMP = "LEDiff Sun Clamp"
REMOVAL = "LEDiff Sun Removal"
MASK_NODES = (COSINE, INSIDE, CLAMP, REMOVAL)

# Custom properties on the lamp object.
_DIRECTION, _RGB, _WORLD = "lediff_direction", "lediff_rgb", "lediff_world"


def read_pixels(image: bpy.types.Image, max_width: int = ANALYSIS_WIDTH) -> tuple[array.array, int, int, int]:
    """(flat float pixels, width, height, channels) of ``image``, area-averaged to ``max_width``."""
    width, height = image.size
    if width == 0:
        raise ValueError(f"image {image.name!r} could not be read ({image.filepath})")
    source = image
    if width > max_width:
        source = image.copy()  # Image.scale works in place; the world's image stays as it is
        height = max(1, round(height * max_width / width))
        width = max_width
        source.scale(width, height)
    try:
        pixels = array.array("f", bytes(4 * width * height * source.channels))
        source.pixels.foreach_get(pixels)
        return pixels, width, height, source.channels
    finally:
        if source is not image:
            bpy.data.images.remove(source)


def add_sun(scene: bpy.types.Scene, world: bpy.types.World, *, remove_from_map: bool) -> Sun | None:
    """Create or update the Sun lamp for ``world``'s map; None when the map has no compact sun."""
    image = world_nodes.environment_image(world)
    if image is None:
        raise LookupError(f"world {world.name!r} has no LEDiff environment; apply one first")
    sun = find_sun(*read_pixels(image))
    if sun is None:
        return None
    lamp = bpy.data.objects.get(SUN_OBJECT)
    if lamp is None or lamp.type != "LIGHT" or lamp.data.type != "SUN":
        lamp = bpy.data.objects.new(SUN_OBJECT, bpy.data.lights.new(SUN_OBJECT, "SUN"))
    if lamp.name not in scene.collection.objects:
        scene.collection.objects.link(lamp)
    lamp[_DIRECTION] = list(sun.direction)
    lamp[_RGB] = list(sun.rgb)
    lamp[_WORLD] = world.name
    lamp.data.angle = math.radians(SUN_ANGLE_DEG)
    _remove_mask(world)
    if remove_from_map:
        _add_mask(world, sun)
    follow_world(world)
    return sun


def follow_world(world: bpy.types.World) -> None:
    """Point and scale the world's Sun lamp (if any) for the world's current rotation and EV."""
    lamp = bpy.data.objects.get(SUN_OBJECT)
    settings = world_nodes.read_world_settings(world)
    if lamp is None or lamp.get(_WORLD) != world.name or settings is None:
        return
    # The Mapping node rotates the lookup direction: image = R @ world, so world = R^T @ image.
    rotation = Matrix.Rotation(math.radians(settings.rotation_deg), 3, "Z")
    direction = rotation.transposed() @ Vector(lamp[_DIRECTION])
    lamp.rotation_euler = direction.to_track_quat("Z", "Y").to_euler()  # a sun shines along its -Z
    rgb = [max(0.0, c) for c in lamp[_RGB]]
    brightest = max(rgb) or 1.0
    lamp.data.color = [c / brightest for c in rgb]
    lamp.data.energy = brightest * 2.0**settings.ev


def remove_sun(world: bpy.types.World) -> bool:
    """Delete the world's Sun lamp and put the sun back into the map; whether there was a lamp."""
    _remove_mask(world)
    lamp = bpy.data.objects.get(SUN_OBJECT)
    if lamp is None or lamp.get(_WORLD) != world.name:
        return False
    light = lamp.data
    bpy.data.objects.remove(lamp)
    if light is not None and light.users == 0:
        bpy.data.lights.remove(light)
    return True


def has_mask(world: bpy.types.World) -> bool:
    return world.node_tree is not None and REMOVAL in world.node_tree.nodes


def _socket(sockets, identifier: str):
    return next(s for s in sockets if s.identifier == identifier)


def _add_mask(world: bpy.types.World, sun: Sun) -> None:
    tree = world.node_tree
    nodes = tree.nodes
    environment = nodes[world_nodes.ENVIRONMENT]
    made = {}
    for name, (node_type, location) in {
        COSINE: ("ShaderNodeVectorMath", (-800, 450)),
        INSIDE: ("ShaderNodeMath", (-600, 450)),
        CLAMP: ("ShaderNodeVectorMath", (-400, 350)),
        REMOVAL: ("ShaderNodeMix", (-250, 400)),
    }.items():
        node = made[name] = nodes.new(node_type)
        node.name = node.label = name
        node.location = location
    made[COSINE].operation = "DOT_PRODUCT"
    made[COSINE].inputs[1].default_value = sun.direction
    made[INSIDE].operation = "GREATER_THAN"
    made[INSIDE].inputs[1].default_value = math.cos(math.radians(sun.radius_deg))
    made[CLAMP].operation = "MINIMUM"
    made[CLAMP].inputs[1].default_value = (sun.threshold,) * 3
    removal = made[REMOVAL]
    removal.data_type = "RGBA"
    tree.links.new(nodes[world_nodes.MAPPING].outputs["Vector"], made[COSINE].inputs[0])
    tree.links.new(made[COSINE].outputs["Value"], made[INSIDE].inputs[0])
    tree.links.new(made[INSIDE].outputs["Value"], _socket(removal.inputs, "Factor_Float"))
    tree.links.new(environment.outputs["Color"], made[CLAMP].inputs[0])
    tree.links.new(environment.outputs["Color"], _socket(removal.inputs, "A_Color"))
    tree.links.new(made[CLAMP].outputs["Vector"], _socket(removal.inputs, "B_Color"))
    tree.links.new(_socket(removal.outputs, "Result_Color"), nodes[world_nodes.LIGHT].inputs["Color"])


def _remove_mask(world: bpy.types.World) -> None:
    tree = world.node_tree
    if tree is None or not any(name in tree.nodes for name in MASK_NODES):
        return
    for name in MASK_NODES:
        if name in tree.nodes:
            tree.nodes.remove(tree.nodes[name])
    if world_nodes.ENVIRONMENT in tree.nodes and world_nodes.LIGHT in tree.nodes:
        tree.links.new(tree.nodes[world_nodes.ENVIRONMENT].outputs["Color"],
                       tree.nodes[world_nodes.LIGHT].inputs["Color"])

"""World lighting from an equirectangular image: named, reused nodes with Gaffer-like controls.

Pure bpy; knows nothing of the backend. Every node sits at the top level of
``world.node_tree`` under a fixed name (the constants below), so applying again, or changing a
setting, finds and reuses the same nodes instead of adding new ones::

    Texture Coordinate.Generated -> Mapping (rotation Z) -> Environment -> Background "light" ---------.
                                       |                                                          Mix "camera ray"
                                       '-> + jitter (White Noise) -> Environment -> Background    -> World Output
                                                                     "camera" -> Mix "visible" --'

The camera sees the lower branch, everything else (diffuse, glossy, shadows) the upper one, so the
visible background has its own EV, blur and visibility while lighting stays untouched.

Background blur is a stochastic box blur: the lookup direction is offset by a White Noise
texture of the direction itself. White Noise hashes the exact float coordinates, so the many
camera samples inside one pixel each get an independent offset, and their average converges to
the map averaged over a square patch of half-width ``atan(blur)`` (0.1 -> about ±6°). It costs
no image copy and updates instantly; at low sample counts the blurred background shows grain.

Settings (see ``EnvironmentSettings``): ``ev`` -> lighting Strength ``2 ** ev``; ``rotation_deg``
-> Mapping rotation Z; ``background_ev`` (None: follow ``ev``), ``background_blur`` and
``background_visible`` (False: the camera sees black) affect camera rays only.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

import bpy

__all__ = [
    "NODE_NAMES",
    "EnvironmentSettings",
    "apply_environment",
    "update_world_settings",
    "read_world_settings",
    "environment_image",
    "clear_environment",
]

COORDINATES = "LEDiff Texture Coordinate"
MAPPING = "LEDiff Mapping"
ENVIRONMENT = "LEDiff Environment"
LIGHT = "LEDiff Light"
BLUR_NOISE = "LEDiff Blur Noise"
BLUR_OFFSET = "LEDiff Blur Offset"
BLUR_LOOKUP = "LEDiff Blur Lookup"
BACKGROUND_ENVIRONMENT = "LEDiff Background Environment"
BACKGROUND = "LEDiff Background"
VISIBILITY = "LEDiff Background Visibility"
LIGHT_PATH = "LEDiff Light Path"
CAMERA_MIX = "LEDiff Camera Mix"
OUTPUT = "LEDiff World Output"

# name -> (node type, location in the editor)
_NODES = {
    COORDINATES: ("ShaderNodeTexCoord", (-1200, 0)),
    MAPPING: ("ShaderNodeMapping", (-1000, 0)),
    ENVIRONMENT: ("ShaderNodeTexEnvironment", (-600, 200)),
    LIGHT: ("ShaderNodeBackground", (-250, 200)),
    BLUR_NOISE: ("ShaderNodeTexWhiteNoise", (-800, -300)),
    BLUR_OFFSET: ("ShaderNodeVectorMath", (-600, -300)),
    BLUR_LOOKUP: ("ShaderNodeVectorMath", (-600, -100)),
    BACKGROUND_ENVIRONMENT: ("ShaderNodeTexEnvironment", (-400, -150)),
    BACKGROUND: ("ShaderNodeBackground", (-100, -150)),
    VISIBILITY: ("ShaderNodeMixShader", (100, -100)),
    LIGHT_PATH: ("ShaderNodeLightPath", (100, 350)),
    CAMERA_MIX: ("ShaderNodeMixShader", (300, 100)),
    OUTPUT: ("ShaderNodeOutputWorld", (500, 100)),
}
NODE_NAMES = tuple(_NODES)

# (from node, output socket, to node, input socket index); indices where names repeat
_LINKS = (
    (COORDINATES, "Generated", MAPPING, 0),
    (MAPPING, "Vector", ENVIRONMENT, 0),
    (ENVIRONMENT, "Color", LIGHT, 0),
    (MAPPING, "Vector", BLUR_NOISE, 0),
    (BLUR_NOISE, "Color", BLUR_OFFSET, 0),
    (MAPPING, "Vector", BLUR_LOOKUP, 0),
    (BLUR_OFFSET, "Vector", BLUR_LOOKUP, 1),
    (BLUR_LOOKUP, "Vector", BACKGROUND_ENVIRONMENT, 0),
    (BACKGROUND_ENVIRONMENT, "Color", BACKGROUND, 0),
    (BACKGROUND, "Background", VISIBILITY, 2),  # input 1 stays empty: black
    (LIGHT_PATH, "Is Camera Ray", CAMERA_MIX, 0),
    (LIGHT, "Background", CAMERA_MIX, 1),
    (VISIBILITY, "Shader", CAMERA_MIX, 2),
    (CAMERA_MIX, "Shader", OUTPUT, 0),
)

# Custom property on the BACKGROUND node: its EV follows the lighting EV.
_FOLLOWS_EV = "lediff_background_follows_ev"


@dataclass(frozen=True)
class EnvironmentSettings:
    """The world controls; EVs in stops, rotation in degrees about +Z, blur as tan(half-width)."""

    ev: float = 0.0
    rotation_deg: float = 0.0
    background_visible: bool = True
    background_ev: float | None = None  # None: the background follows ``ev``
    background_blur: float = 0.0


def apply_environment(
    world: bpy.types.World,
    image_path: str | os.PathLike,
    *,
    ev: float = 0.0,
    rotation_deg: float = 0.0,
    background_visible: bool = True,
    background_ev: float | None = None,
    background_blur: float = 0.0,
) -> None:
    """Light ``world`` with the equirectangular image at ``image_path`` (EXR, HDR, PNG, JPEG...).

    The Environment Textures reference the file itself (loaded once, reused by path). Nodes are
    created on first use and reused afterwards; the LEDiff World Output becomes the active one.
    """
    path = os.path.abspath(os.fspath(image_path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"environment image not found: {path}")
    image = bpy.data.images.load(path, check_existing=True)
    nodes = _ensure_graph(world)
    nodes[ENVIRONMENT].image = image
    nodes[BACKGROUND_ENVIRONMENT].image = image
    settings = EnvironmentSettings(ev, rotation_deg, background_visible, background_ev, background_blur)
    _write_settings(nodes, settings)


def update_world_settings(world: bpy.types.World, **changes) -> EnvironmentSettings:
    """Change some settings in place (keywords: the ``EnvironmentSettings`` fields).

    Returns the settings the nodes now hold (float32 node values, so 0.05 reads 0.0500000007).

    Meant for property update callbacks: it touches node values only, never the graph.
    Raises LookupError when ``apply_environment`` has not built the nodes yet.
    """
    current = read_world_settings(world)
    if current is None:
        raise LookupError(f"world {world.name!r} has no LEDiff environment; apply one first")
    _write_settings(world.node_tree.nodes, dataclasses.replace(current, **changes))
    return read_world_settings(world)


def read_world_settings(world: bpy.types.World) -> EnvironmentSettings | None:
    """The settings the nodes hold now, or None when the world has no LEDiff environment."""
    if not _has_graph(world):
        return None
    nodes = world.node_tree.nodes
    follows = bool(nodes[BACKGROUND].get(_FOLLOWS_EV, True))
    return EnvironmentSettings(
        ev=_ev_of(nodes[LIGHT]),
        rotation_deg=math.degrees(nodes[MAPPING].inputs["Rotation"].default_value[2]),
        background_visible=nodes[VISIBILITY].inputs["Fac"].default_value > 0.5,
        background_ev=None if follows else _ev_of(nodes[BACKGROUND]),
        background_blur=-nodes[BLUR_OFFSET].inputs[2].default_value[0],
    )


def environment_image(world: bpy.types.World) -> bpy.types.Image | None:
    """The image lighting ``world``, or None when it has no LEDiff environment."""
    return world.node_tree.nodes[ENVIRONMENT].image if _has_graph(world) else None


def clear_environment(world: bpy.types.World) -> None:
    """Remove the LEDiff nodes; any other World Output in the tree becomes the active one."""
    if world.node_tree is None:
        return
    nodes = world.node_tree.nodes
    for name in NODE_NAMES:
        if name in nodes:
            nodes.remove(nodes[name])
    remaining_outputs = [n for n in nodes if n.bl_idname == "ShaderNodeOutputWorld"]
    if remaining_outputs:
        remaining_outputs[0].is_active_output = True


def _has_graph(world: bpy.types.World) -> bool:
    tree = world.node_tree
    return tree is not None and all(name in tree.nodes for name in NODE_NAMES)


def _ensure_graph(world: bpy.types.World) -> bpy.types.Nodes:
    """Create missing LEDiff nodes and links (existing ones are kept) and activate the output."""
    world.use_nodes = True
    tree = world.node_tree
    nodes = tree.nodes
    for name, (node_type, location) in _NODES.items():
        if name not in nodes or nodes[name].bl_idname != node_type:
            if name in nodes:
                nodes.remove(nodes[name])
            node = nodes.new(node_type)
            node.name = node.label = name
            node.location = location
    nodes[BLUR_OFFSET].operation = "MULTIPLY_ADD"
    nodes[BLUR_LOOKUP].operation = "ADD"
    nodes[BLUR_NOISE].noise_dimensions = "3D"
    for from_name, output, to_name, input_index in _LINKS:
        source = nodes[from_name].outputs[output]
        target = nodes[to_name].inputs[input_index]
        if not any(link.from_socket == source for link in target.links):
            tree.links.new(source, target)
    nodes[OUTPUT].target = "ALL"
    nodes[OUTPUT].is_active_output = True
    return nodes


def _write_settings(nodes: bpy.types.Nodes, settings: EnvironmentSettings) -> None:
    nodes[LIGHT].inputs["Strength"].default_value = 2.0**settings.ev
    background_ev = settings.ev if settings.background_ev is None else settings.background_ev
    nodes[BACKGROUND].inputs["Strength"].default_value = 2.0**background_ev
    nodes[BACKGROUND][_FOLLOWS_EV] = settings.background_ev is None
    nodes[MAPPING].inputs["Rotation"].default_value[2] = math.radians(settings.rotation_deg)
    nodes[VISIBILITY].inputs["Fac"].default_value = 1.0 if settings.background_visible else 0.0
    # offset = noise * 2 blur - blur: uniform in [-blur, blur] per axis
    blur = max(0.0, float(settings.background_blur))
    nodes[BLUR_OFFSET].inputs[1].default_value = (2.0 * blur,) * 3
    nodes[BLUR_OFFSET].inputs[2].default_value = (-blur,) * 3


def _ev_of(background_node: bpy.types.Node) -> float:
    return math.log2(max(background_node.inputs["Strength"].default_value, 1e-12))

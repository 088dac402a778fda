"""The add-on's data: ``World.lediff`` (lighting controls), ``Scene.lediff`` (what to generate,
lookdev settings, the history of results) and ``WindowManager.lediff_job`` /
``WindowManager.lediff_backend`` (runtime state: progress of the job, what "Test Backend" found;
window-manager properties are not saved with the file).

The world controls work like Gaffer's: every one has an ``update`` callback that writes the
nodes at once through ``world.update_world_settings`` (values only, never the graph) and keeps
the Sun lamp in step. Before a map is applied there are no nodes; the values then wait for it.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, CollectionProperty, EnumProperty, FloatProperty, IntProperty,
                       PointerProperty, StringProperty)

from . import sun_lamp
from . import world as world_nodes

__all__ = ["classes", "register_pointers", "unregister_pointers", "world_settings", "MODES", "MERGE_ENGINES",
           "RESPONSES"]

MODES = (
    ("TEXT", "Text", "Describe the environment; the LEDiff and MVDiffusion models make it", "FONT_DATA", 0),
    ("PHOTO", "Photo", "Expand a photo to HDR: a 360° photo directly, a normal photo outpainted to 360°",
     "IMAGE_DATA", 1),
    ("BRACKETS", "Brackets", "Merge photographed exposure brackets into one HDR", "RENDERLAYERS", 2),
    ("HDR_FILE", "HDR File", "Use an existing HDR panorama (EXR or Radiance .hdr)", "FILE_IMAGE", 3),
)

# Brackets mode: the backend's merge engines (``lediff_backend.merge.MERGE_ENGINES``; auto = classic)
MERGE_ENGINES = (
    ("auto", "Auto", "The Classic engine (the neural engines run only when chosen)"),
    ("classic", "Classic", "Weight-free merge with alignment and ghost removal: two or more photos, "
                           "no GPU or models needed"),
    ("gmodiff", "GMODiff", "Gain-map diffusion merge: needs 3+ exposures, a GPU and the "
                           "gmodiff and sd21-base models"),
    ("lfdiff", "LF-Diff", "Low-frequency-prior diffusion merge: needs 3+ exposures, a GPU and "
                          "the lfdiff model (trained with lediff train lfdiff-*)"),
)
# The Classic merge's camera response (``lediff_backend.merge.RESPONSES``; auto: not sent)
RESPONSES = (
    ("auto", "Auto", "sRGB for ordinary photos, linear for camera RAW files"),
    ("srgb", "sRGB", "The photos are sRGB-encoded (JPEG, PNG, 8-bit TIFF)"),
    ("recover", "Recover", "Estimate the camera's response curve from the brackets"),
    ("linear", "Linear", "The photos are linear (RAW, linear TIFF)"),
)


def world_settings(controls: LEDIFF_PG_world) -> dict:
    """The keyword arguments of ``world.apply_environment`` / ``update_world_settings``."""
    return {
        "ev": controls.ev,
        "rotation_deg": controls.rotation,
        "background_visible": controls.background_visible,
        "background_ev": controls.background_ev if controls.background_separate else None,
        "background_blur": controls.background_blur,
    }


def _update_world(controls: LEDIFF_PG_world, context) -> None:
    world = controls.id_data
    if world_nodes.read_world_settings(world) is None:
        return  # no map yet: the values are used when one is applied
    world_nodes.update_world_settings(world, **world_settings(controls))
    sun_lamp.follow_world(world)


class LEDIFF_PG_world(bpy.types.PropertyGroup):
    """Lighting controls of one World (``World.lediff``)."""

    ev: FloatProperty(name="Exposure", description="Lighting brightness in stops (Strength = 2^EV)",
                      default=0.0, soft_min=-10.0, soft_max=10.0, step=10, update=_update_world)
    rotation: FloatProperty(name="Rotation", description="Turn the environment about the Z axis, in degrees",
                            default=0.0, soft_min=-180.0, soft_max=180.0, step=100, update=_update_world)
    background_visible: BoolProperty(name="Visible Background",
                                     description="The camera sees the environment (off: black, lighting unchanged)",
                                     default=True, update=_update_world)
    background_separate: BoolProperty(name="Separate Background Exposure",
                                      description="Give the camera-visible background its own exposure",
                                      default=False, update=_update_world)
    background_ev: FloatProperty(name="Background Exposure", description="Brightness of the visible background in stops",
                                 default=0.0, soft_min=-10.0, soft_max=10.0, step=10, update=_update_world)
    background_blur: FloatProperty(name="Background Blur",
                                   description="Blur the visible background (0.1 is about ±6°); lighting stays sharp",
                                   default=0.0, min=0.0, soft_max=0.5, step=1, update=_update_world)


def _update_reference(bracket: LEDIFF_PG_bracket, context) -> None:
    """One reference at most: pinning a photo unpins the others."""
    if not bracket.reference:
        return
    for other in bracket.id_data.lediff.brackets:
        if other.reference and other.as_pointer() != bracket.as_pointer():
            other.reference = False


class LEDIFF_PG_bracket(bpy.types.PropertyGroup):
    """One photographed exposure of a bracket."""

    filepath: StringProperty(name="Photo", subtype="FILE_PATH")
    ev: FloatProperty(name="EV", description="Exposure of this photo relative to the others, in stops",
                      default=0.0, soft_min=-8.0, soft_max=8.0)
    reference: BoolProperty(name="Reference",
                            description="Take moving things (people, clouds, leaves) from this photo; "
                                        "none pinned: the middle exposure", default=False, update=_update_reference)


class LEDIFF_PG_result(bpy.types.PropertyGroup):
    """One result in the history; ``name`` is its label."""

    filepath: StringProperty(name="File", subtype="FILE_PATH")
    mode: StringProperty(name="Mode")
    source: StringProperty(name="Source", description="The prompt or the input file")
    seconds: FloatProperty(name="Seconds")
    stops: FloatProperty(name="Dynamic Range", description="Stops between the darkest and brightest pixels")


class LEDIFF_PG_scene(bpy.types.PropertyGroup):
    """What to generate, lookdev settings and the results so far (``Scene.lediff``)."""

    mode: EnumProperty(name="Mode", items=MODES, default="PHOTO")
    prompt: StringProperty(name="Prompt", description="What the environment shows",
                           default="a sunny beach with palm trees, late afternoon")
    photo: StringProperty(name="Photo", description="An LDR photo (PNG, JPEG, TIFF)", subtype="FILE_PATH")
    photo_is_panorama: BoolProperty(name="360° Photo",
                                    description="The photo is an equirectangular 360° panorama (2:1); "
                                                "otherwise it is outpainted to 360°", default=True)
    # A 360° photo's sun (the Classic engine's): an 8-bit photo clips it, so its strength is only
    # estimated from the glow around it and can be off by several stops
    sun_override: BoolProperty(name="Sun Strength",
                               description="Set the sun's brightness yourself; off: estimated from the glow "
                                           "around it, which can be several stops off", default=False)
    sun_ev: FloatProperty(name="Sun EV",
                          description="The sun's brightness in stops over the photo's white: a clear sun is "
                                      "about 14 to 16, a hazy one less (used when the photo shows the sun)",
                          default=14.0, soft_min=6.0, soft_max=20.0, step=50, precision=1)
    brackets: CollectionProperty(type=LEDIFF_PG_bracket)
    bracket_index: IntProperty(name="Bracket")
    hdr_file: StringProperty(name="HDR File", description="An EXR or Radiance .hdr panorama", subtype="FILE_PATH")
    seed: IntProperty(name="Seed", description="Random seed of the diffusion models", default=0, min=0)
    steps: IntProperty(name="Steps", description="Denoising steps", default=30, min=1, soft_max=100)
    guidance: FloatProperty(name="Guidance", description="Classifier-free guidance scale", default=7.5,
                            min=0.0, soft_max=15.0)
    width: IntProperty(name="Width", description="Width of the result in pixels (panoramas are 2:1)",
                       default=2048, min=256, soft_max=8192, step=256)
    engine: EnumProperty(name="Engine", items=(
        ("auto", "Auto", "The best engine whose models are installed"),
        ("classic", "Classic", "Weight-free engine: photos only, no GPU needed"),
        ("lediff", "LEDiff", "The LEDiff diffusion models (GPU recommended)"),
    ), default="auto")
    merge_engine: EnumProperty(name="Merge Engine", description="How the bracketed photos become one HDR",
                               items=MERGE_ENGINES, default="auto")
    response: EnumProperty(name="Response", description="How the photos encode light (the Classic merge engine's)",
                           items=RESPONSES, default="auto")

    fstop: FloatProperty(name="F-Stop", description="Aperture of the lookdev camera", default=2.8,
                         min=0.1, soft_max=22.0)
    use_dof: BoolProperty(name="Depth of Field", default=True)
    focus: EnumProperty(name="Focus", items=(
        ("ACTIVE", "Active Object", "Focus on the active object"),
        ("CURSOR", "3D Cursor", "Focus at the 3D cursor's distance"),
    ), default="ACTIVE")
    spheres: BoolProperty(name="Lookdev Spheres", description="Add a grey and a chrome sphere", default=True)
    render_engine: EnumProperty(name="Render Engine", items=(
        ("CYCLES", "Cycles", "Path tracing"),
        ("EEVEE", "EEVEE", "Real-time"),
    ), default="CYCLES")
    samples: IntProperty(name="Samples", default=32, min=1, soft_max=1024)
    resolution: IntProperty(name="Resolution", description="Width of the lookdev render (16:9)",
                            default=640, min=16, soft_max=3840)

    history: CollectionProperty(type=LEDIFF_PG_result)
    history_index: IntProperty(name="Result")


class LEDIFF_PG_job(bpy.types.PropertyGroup):
    """Progress of the generation in flight (``WindowManager.lediff_job``)."""

    state: EnumProperty(name="State", items=(
        ("IDLE", "Idle", ""),
        ("STARTING", "Starting", "Waiting for the backend"),
        ("RUNNING", "Running", ""),
        ("DONE", "Done", ""),
        ("FAILED", "Failed", ""),
        ("CANCELLED", "Cancelled", ""),
    ), default="IDLE")
    stage: StringProperty(name="Stage")
    fraction: FloatProperty(name="Progress", min=0.0, max=1.0, subtype="FACTOR")
    preview: StringProperty(name="Preview", subtype="FILE_PATH")
    message: StringProperty(name="Message")


class LEDIFF_PG_backend(bpy.types.PropertyGroup):
    """What the last "Test Backend" found (``WindowManager.lediff_backend``)."""

    checked: BoolProperty(name="Checked")
    ok: BoolProperty(name="Working")
    version: StringProperty(name="Version")
    devices: StringProperty(name="Devices")
    models: StringProperty(name="Models Found", description="Comma-separated names")
    message: StringProperty(name="Message")


classes = (LEDIFF_PG_world, LEDIFF_PG_bracket, LEDIFF_PG_result, LEDIFF_PG_scene, LEDIFF_PG_job, LEDIFF_PG_backend)

_POINTERS = (
    (bpy.types.World, "lediff", LEDIFF_PG_world),
    (bpy.types.Scene, "lediff", LEDIFF_PG_scene),
    (bpy.types.WindowManager, "lediff_job", LEDIFF_PG_job),
    (bpy.types.WindowManager, "lediff_backend", LEDIFF_PG_backend),
)


def register_pointers() -> None:
    for owner, name, group in _POINTERS:
        setattr(owner, name, PointerProperty(type=group))


def unregister_pointers() -> None:
    for owner, name, _ in reversed(_POINTERS):
        delattr(owner, name)

"""The UI: one panel in World Properties and one in the 3D View sidebar ("LEDiff" tab).

Both draw the same sections through module-level functions that take a layout and the context,
so tests run them against a recording layout (bpy's module mode never calls ``draw``):
Generate (mode, inputs, settings, Generate/Cancel, progress with the latest preview), Lighting
(the World's controls), Sun & Lookdev, and History (results with thumbnails, re-applicable).

A control that cannot work says why next to it: the Generate button is greyed out by its poll
and a label repeats the reason (a tooltip alone is easy to miss).
"""

from __future__ import annotations

import os

import bpy
import bpy.utils.previews

from . import generation, sun_lamp
from . import world as world_nodes

__all__ = ["classes", "draw_sections", "draw_generate", "draw_lighting", "draw_sun_and_lookdev", "draw_history",
           "icon", "free_icons"]

_icons = None  # bpy.utils.previews collection of thumbnails, keyed by file path


def icon(path: str) -> int:
    """Icon id of a thumbnail of the image at ``path`` (made by Blender, tone mapped for EXRs).

    Keyed by path and modification time: the backend rewrites one preview file as a job goes on.
    """
    global _icons
    if _icons is None:
        _icons = bpy.utils.previews.new()
    key = f"{path}@{os.stat(path).st_mtime_ns}"
    if key not in _icons:
        _icons.load(key, path, "IMAGE")
    return _icons[key].icon_id


def free_icons() -> None:
    global _icons
    if _icons is not None:
        bpy.utils.previews.remove(_icons)
        _icons = None


def _world(context):
    return getattr(context, "world", None) or context.scene.world


# Sections ---------------------------------------------------------------------------------------


def draw_generate(layout, context) -> None:
    settings = context.scene.lediff
    layout.row().prop(settings, "mode", expand=True)
    column = layout.column()
    if settings.mode == "TEXT":
        column.prop(settings, "prompt", text="")
    elif settings.mode == "PHOTO":
        column.prop(settings, "photo")
        column.prop(settings, "photo_is_panorama")
        if not settings.photo_is_panorama:
            column.prop(settings, "prompt", text="Rest of Scene")
    elif settings.mode == "BRACKETS":
        row = column.row()
        row.template_list("LEDIFF_UL_brackets", "", settings, "brackets", settings, "bracket_index", rows=3)
        buttons = row.column(align=True)
        buttons.operator("lediff.bracket_add", icon="ADD", text="")
        buttons.operator("lediff.bracket_remove", icon="REMOVE", text="")
        column.label(text=_reference_text(settings), icon="PINNED")
    else:
        column.prop(settings, "hdr_file")
        apply = column.operator("lediff.open_hdri", text="Apply HDR File", icon="WORLD")
        apply.filepath = settings.hdr_file
    if settings.mode == "BRACKETS":
        _draw_merge_settings(layout.column(), settings)
    elif settings.mode != "HDR_FILE":
        _draw_generation_settings(layout.column(), settings)
    _draw_job(layout, context, offer_generate=settings.mode != "HDR_FILE")


def _draw_generation_settings(column, settings) -> None:
    column.use_property_split = True
    column.prop(settings, "engine")
    column.prop(settings, "width")
    if settings.mode == "PHOTO" and settings.photo_is_panorama:  # a convert job
        _draw_sun_strength(column, settings)
    neural = column.column()
    neural.active = settings.engine != "classic"  # the classic engine has no seed, steps or guidance
    neural.prop(settings, "seed")
    neural.prop(settings, "steps")
    neural.prop(settings, "guidance")


def _draw_sun_strength(column, settings) -> None:
    """The sun of a 360° photo: estimated unless the override is on (the LEDiff engine ignores it)."""
    row = column.row(heading="Sun Strength")
    row.active = settings.engine != "lediff"
    row.prop(settings, "sun_override", text="")
    strength = row.row()
    strength.active = settings.sun_override
    strength.prop(settings, "sun_ev", text="")


def _reference_text(settings) -> str:
    reference = generation.reference_index(settings)
    if reference is None:
        return "Reference: the middle exposure (pin a photo to choose)"
    return f"Reference: {os.path.basename(settings.brackets[reference].filepath) or f'photo {reference + 1}'}"


def _draw_merge_settings(column, settings) -> None:
    """A merge keeps the photos' size and has no steps or guidance; the neural engines have a
    seed, the classic one a camera response."""
    column.use_property_split = True
    column.prop(settings, "merge_engine")
    if settings.merge_engine in generation.MERGE_MODELS:
        column.prop(settings, "seed")
    else:
        column.prop(settings, "response")


def _draw_job(layout, context, offer_generate: bool) -> None:
    """The job in flight (progress, preview, Cancel), else Generate and the last job's outcome."""
    state = context.window_manager.lediff_job
    if generation.running_job() is not None:
        layout.progress(factor=state.fraction, type="BAR", text=state.stage or "Working")
        if state.preview and os.path.isfile(state.preview):
            layout.template_icon(icon_value=icon(state.preview), scale=6.0)
        layout.operator("lediff.cancel", icon="CANCEL")
        return
    if offer_generate:
        layout.operator("lediff.generate", icon="SHADERFX")
        reason = generation.blocker(context)
        if reason:
            layout.label(text=reason, icon="INFO")
    if state.message:
        row = layout.row()
        row.alert = state.state == "FAILED"
        row.label(text=state.message, icon="ERROR" if state.state == "FAILED" else "CHECKMARK")


def draw_lighting(layout, context) -> None:
    world = _world(context)
    if world is None:
        layout.label(text="The scene has no World; applying a map makes one", icon="INFO")
        return
    image = world_nodes.environment_image(world)
    layout.label(text=image.name if image else "No map applied yet", icon="IMAGE_DATA" if image else "INFO")
    controls = world.lediff
    column = layout.column()
    column.use_property_split = True
    column.prop(controls, "ev")
    column.prop(controls, "rotation")
    column.prop(controls, "background_visible")
    background = column.column()
    background.active = controls.background_visible
    background.prop(controls, "background_separate")
    exposure = background.column()
    exposure.active = controls.background_separate
    exposure.prop(controls, "background_ev")
    background.prop(controls, "background_blur")


def draw_sun_and_lookdev(layout, context) -> None:
    settings = context.scene.lediff
    row = layout.row(align=True)
    row.operator("lediff.add_sun", icon="LIGHT_SUN")
    row.operator("lediff.remove_sun", icon="X", text="")
    world = _world(context)
    if world is not None and sun_lamp.has_mask(world):
        layout.label(text="The sun is lit by the lamp, not the map", icon="LIGHT_SUN")
    column = layout.column()
    column.use_property_split = True
    column.prop(settings, "use_dof")
    focus = column.column()
    focus.active = settings.use_dof
    focus.prop(settings, "fstop")
    focus.prop(settings, "focus")
    column.prop(settings, "spheres")
    column.prop(settings, "render_engine")
    column.prop(settings, "samples")
    column.prop(settings, "resolution")
    layout.operator("lediff.lookdev_render", icon="RENDER_STILL")


def draw_history(layout, context) -> None:
    settings = context.scene.lediff
    layout.template_list("LEDIFF_UL_history", "", settings, "history", settings, "history_index", rows=3)
    if not settings.history:
        return
    active = settings.history[min(settings.history_index, len(settings.history) - 1)]
    if os.path.isfile(active.filepath):
        layout.template_icon(icon_value=icon(active.filepath), scale=5.0)
    layout.operator("lediff.apply_world", icon="WORLD").index = -1


SECTIONS = (
    ("generate", "Generate", draw_generate, False),
    ("lighting", "Lighting", draw_lighting, False),
    ("sun_lookdev", "Sun & Lookdev", draw_sun_and_lookdev, True),
    ("history", "History", draw_history, True),
)


def draw_sections(layout, context, prefix: str) -> None:
    """Every section in a collapsible sub-panel; ``prefix`` keeps each panel's open state apart."""
    for key, title, draw, closed in SECTIONS:
        header, body = layout.panel(f"{prefix}_{key}", default_closed=closed)
        header.label(text=title)
        if body is not None:
            draw(body, context)


# Classes --------------------------------------------------------------------------------------


class LEDIFF_UL_history(bpy.types.UIList):
    """Results with a thumbnail, their dynamic range and how they were made."""

    def draw_item(self, context, layout, data, item, icon_id, active_data, active_property, index=0, flt_flag=0):
        exists = os.path.isfile(item.filepath)
        row = layout.row()
        row.active = exists
        if exists:
            row.label(text=item.name, icon_value=icon(item.filepath))
        else:
            row.label(text=f"{item.name} (file missing)", icon="ERROR")
        if item.stops:
            row.label(text=f"{item.stops:.1f} stops")


class LEDIFF_UL_brackets(bpy.types.UIList):
    """Bracketed photos with their exposures and a pin for the reference photo."""

    def draw_item(self, context, layout, data, item, icon_id, active_data, active_property, index=0, flt_flag=0):
        row = layout.row()
        row.label(text=os.path.basename(item.filepath) or "(no file)", icon="IMAGE_DATA")
        row.prop(item, "ev", text="EV")
        row.prop(item, "reference", text="", icon="PINNED" if item.reference else "UNPINNED", emboss=False)


class LEDIFF_PT_world(bpy.types.Panel):
    bl_label = "LEDiff Environment"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "world"

    def draw(self, context):
        draw_sections(self.layout, context, "LEDIFF_PT_world")


class LEDIFF_PT_sidebar(bpy.types.Panel):
    bl_label = "LEDiff Environment"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "LEDiff"

    def draw(self, context):
        draw_sections(self.layout, context, "LEDIFF_PT_sidebar")


classes = (LEDIFF_UL_history, LEDIFF_UL_brackets, LEDIFF_PT_world, LEDIFF_PT_sidebar)

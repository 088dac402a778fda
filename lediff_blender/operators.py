"""The add-on's operators (``lediff.*``): thin shells over ``generation``, ``lighting``,
``sun_lamp`` and ``lookdev`` that check, call and report.

Operators that change Blender data are undo steps (``UNDO``); ``generate`` changes nothing
itself: the pump applies its result later (see ``generation``). A greyed-out button says why
through ``poll_message_set``; failures go to ``self.report({'ERROR'}, ...)``.
"""

from __future__ import annotations

import os
import time

import bpy
from bpy.props import BoolProperty, CollectionProperty, IntProperty, StringProperty

from . import generation, lighting, lookdev, preferences, sun_lamp
from . import world as world_nodes
from .client import BackendUnavailable

__all__ = ["classes"]

HDR_EXTENSIONS = (".exr", ".hdr")


def _environment_image(context):
    world = context.scene.world
    return world_nodes.environment_image(world) if world is not None else None


def _needs_environment(cls, context) -> bool:
    """Poll helper: the scene's World must be lit by a LEDiff map."""
    if _environment_image(context) is None:
        cls.poll_message_set("Apply an environment to the World first")
        return False
    return True


class LEDIFF_OT_generate(bpy.types.Operator):
    """Generate an HDR environment with the backend; the World gets it when it is done"""

    bl_idname = "lediff.generate"
    bl_label = "Generate"

    @classmethod
    def poll(cls, context):
        reason = generation.blocker(context)
        if reason:
            cls.poll_message_set(reason)
        return reason is None

    def execute(self, context):
        try:
            generation.start(context)
        except (ValueError, BackendUnavailable) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, "Generating: the World changes when the result is ready")
        return {"FINISHED"}


class LEDIFF_OT_cancel(bpy.types.Operator):
    """Stop the generation in flight"""

    bl_idname = "lediff.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        if generation.running_job() is None:
            cls.poll_message_set("Nothing is being generated")
            return False
        return True

    def execute(self, context):
        generation.cancel()
        return {"FINISHED"}


class LEDIFF_OT_release(bpy.types.Operator):
    """Free the models the backend keeps loaded, and their GPU memory"""

    bl_idname = "lediff.release"
    bl_label = "Free Backend Memory"

    def execute(self, context):
        if not generation.release():
            self.report({"INFO"}, "The backend is not running")
            return {"CANCELLED"}
        self.report({"INFO"}, "Asked the backend to free its memory")
        return {"FINISHED"}


class LEDIFF_OT_test_backend(bpy.types.Operator):
    """Start the backend and report its version, devices and the models it finds"""

    bl_idname = "lediff.test_backend"
    bl_label = "Test Backend"

    @classmethod
    def poll(cls, context):
        if generation.running_job() is not None:
            cls.poll_message_set("A generation is running")
            return False
        return True

    def execute(self, context):
        try:
            summary = generation.check_backend(context)
        except BackendUnavailable as exc:
            self.report({"ERROR"}, f"Backend test failed: {exc}")
            return {"CANCELLED"}
        self.report({"INFO"}, summary)
        return {"FINISHED"}


class LEDIFF_OT_apply_world(bpy.types.Operator):
    """Light the scene's World with a result from the history"""

    bl_idname = "lediff.apply_world"
    bl_label = "Apply to World"
    bl_options = {"REGISTER", "UNDO"}

    index: IntProperty(name="Result", description="History entry (-1: the active one)", default=-1, min=-1)

    @classmethod
    def poll(cls, context):
        if not context.scene.lediff.history:
            cls.poll_message_set("No results yet")
            return False
        return True

    def execute(self, context):
        settings = context.scene.lediff
        index = settings.history_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.history):
            self.report({"ERROR"}, f"No result number {index}")
            return {"CANCELLED"}
        item = settings.history[index]
        try:
            lighting.apply_file(lighting.ensure_world(context.scene), item.filepath)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        settings.history_index = index
        self.report({"INFO"}, f"Applied {item.name}")
        return {"FINISHED"}


class LEDIFF_OT_open_hdri(bpy.types.Operator):
    """Light the scene's World with an existing HDR panorama (EXR or Radiance .hdr)"""

    bl_idname = "lediff.open_hdri"
    bl_label = "Open HDRI"
    bl_options = {"REGISTER", "UNDO"}

    filepath: StringProperty(name="File", subtype="FILE_PATH")
    filter_glob: StringProperty(default="*.exr;*.hdr", options={"HIDDEN"})

    def invoke(self, context, event):
        if self.filepath:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        path = os.path.abspath(bpy.path.abspath(self.filepath))
        if not path.lower().endswith(HDR_EXTENSIONS):
            self.report({"ERROR"}, f"Not an HDR file (EXR or .hdr): {path}")
            return {"CANCELLED"}
        try:
            lighting.apply_file(lighting.ensure_world(context.scene), path)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        lighting.remember(context.scene, path, mode="HDR_FILE", source=path)
        self.report({"INFO"}, f"Applied {os.path.basename(path)}")
        return {"FINISHED"}


class LEDIFF_OT_add_sun(bpy.types.Operator):
    """Add a Sun lamp for the map's sun: its direction, colour and strength, 0.53° wide"""

    bl_idname = "lediff.add_sun"
    bl_label = "Add Sun Lamp"
    bl_options = {"REGISTER", "UNDO"}

    remove_from_map: BoolProperty(name="Remove Sun from Map", default=True,
                                  description="Take the sun out of the map's lighting so it is not counted twice "
                                              "(the camera still sees it)")

    @classmethod
    def poll(cls, context):
        return _needs_environment(cls, context)

    def execute(self, context):
        world = context.scene.world
        try:
            sun = sun_lamp.add_sun(context.scene, world, remove_from_map=self.remove_from_map)
        except ValueError as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        if sun is None:
            self.report({"WARNING"}, "No sun in this map: its brightest light is wider than 10°")
            return {"CANCELLED"}
        azimuth = (sun.azimuth_deg - world.lediff.rotation + 180.0) % 360.0 - 180.0
        self.report({"INFO"}, f"Sun at {sun.elevation_deg:.0f}° elevation, {azimuth:.0f}° azimuth: "
                              f"{sun.share:.0%} of the light")
        return {"FINISHED"}


class LEDIFF_OT_remove_sun(bpy.types.Operator):
    """Delete the LEDiff Sun lamp and put the sun back into the map"""

    bl_idname = "lediff.remove_sun"
    bl_label = "Remove Sun Lamp"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene.world is not None and sun_lamp.SUN_OBJECT in bpy.data.objects

    def execute(self, context):
        sun_lamp.remove_sun(context.scene.world)
        return {"FINISHED"}


def _render_engine(choice: str) -> str:
    """The engine id for CYCLES or EEVEE (EEVEE's id changed across Blender versions)."""
    if choice == "CYCLES":
        return "CYCLES"
    engines = bpy.types.RenderSettings.bl_rna.properties["engine"].enum_items.keys()
    return next(e for e in engines if "EEVEE" in e)


def _show_image(context, image: bpy.types.Image) -> None:
    """Show ``image`` in an Image Editor: an open one, else the render window."""
    screen = context.screen
    editors = [a for a in screen.areas if a.type == "IMAGE_EDITOR"] if screen is not None else []
    if not editors and context.window is not None:
        bpy.ops.render.view_show("INVOKE_DEFAULT")
        editors = [a for w in context.window_manager.windows for a in w.screen.areas if a.type == "IMAGE_EDITOR"]
    for area in editors[:1]:
        area.spaces.active.image = image


class LEDIFF_OT_lookdev_render(bpy.types.Operator):
    """Render a lookdev still with depth of field, save it and show it in an Image Editor"""

    bl_idname = "lediff.lookdev_render"
    bl_label = "Lookdev Render"

    @classmethod
    def poll(cls, context):
        return _needs_environment(cls, context)

    def execute(self, context):
        scene = context.scene
        settings = scene.lediff
        if settings.spheres:
            lookdev.build_lookdev_scene(scene, ground=False, spheres=True, colour_cube=False)
        camera = scene.camera or lookdev.ensure_camera(scene)
        if not settings.use_dof:
            lookdev.set_depth_of_field(camera, fstop=None)
        elif settings.focus == "CURSOR":
            context.view_layer.update()
            distance = lookdev.focus_distance_to(camera, scene.cursor.location)
            lookdev.set_depth_of_field(camera, fstop=settings.fstop, focus_distance=distance)
        else:
            target = context.active_object if context.active_object is not camera else None
            lookdev.set_depth_of_field(camera, fstop=settings.fstop, focus_object=target)
        path = os.path.join(preferences.results_folder(preferences.get(context)),
                            f"lookdev_{time.strftime('%Y%m%d-%H%M%S')}.png")
        # A copy of the scene takes the render settings, so the user's own stay as they were.
        copy = scene.copy()
        try:
            lookdev.render_still(copy, path, width=settings.resolution, height=max(1, settings.resolution * 9 // 16),
                                 samples=settings.samples, engine=_render_engine(settings.render_engine))
        except (RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, f"Lookdev render failed: {exc}")
            return {"CANCELLED"}
        finally:
            bpy.data.scenes.remove(copy)
        image = bpy.data.images.load(path, check_existing=True)
        image.reload()
        _show_image(context, image)
        self.report({"INFO"}, f"Saved {path}")
        return {"FINISHED"}


class LEDIFF_OT_bracket_add(bpy.types.Operator):
    """Add bracketed photos"""

    bl_idname = "lediff.bracket_add"
    bl_label = "Add Photos"
    bl_options = {"REGISTER", "UNDO"}

    files: CollectionProperty(type=bpy.types.OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH")
    filter_image: BoolProperty(default=True, options={"HIDDEN"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        brackets = context.scene.lediff.brackets
        for entry in self.files:
            if entry.name:
                brackets.add().filepath = os.path.join(self.directory, entry.name)
        context.scene.lediff.bracket_index = len(brackets) - 1
        return {"FINISHED"}


class LEDIFF_OT_bracket_remove(bpy.types.Operator):
    """Remove the selected bracketed photo"""

    bl_idname = "lediff.bracket_remove"
    bl_label = "Remove Photo"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(context.scene.lediff.brackets) > 0

    def execute(self, context):
        settings = context.scene.lediff
        settings.brackets.remove(settings.bracket_index)
        settings.bracket_index = min(settings.bracket_index, len(settings.brackets) - 1)
        return {"FINISHED"}


classes = (
    LEDIFF_OT_generate, LEDIFF_OT_cancel, LEDIFF_OT_release, LEDIFF_OT_test_backend, LEDIFF_OT_apply_world,
    LEDIFF_OT_open_hdri, LEDIFF_OT_add_sun, LEDIFF_OT_remove_sun, LEDIFF_OT_lookdev_render,
    LEDIFF_OT_bracket_add, LEDIFF_OT_bracket_remove,
)

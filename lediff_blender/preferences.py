"""Add-on preferences: where the backend is, the models folder and device, and its two buttons.

The backend is a local interpreter (a venv holding ``lediff-backend``), which "Create Backend
Environment" can make and fill (only while Blender allows online access; progress and log
shown here), or a remote ``lediff serve --http`` reached by URL and token. The "Test Backend"
button (``operators.LEDIFF_OT_test_backend``) starts it and shows its version, devices and the
models it finds.
"""

from __future__ import annotations

import os

import bpy
from bpy.props import EnumProperty, FloatProperty, StringProperty

from . import backend_env
from .client import BackendConfig

__all__ = ["classes", "get", "backend_config", "data_folder", "results_folder", "env_folder", "stop_env_builder"]

ENV_WATCH_INTERVAL = 0.5

# The environment being created, if any (one per Blender session).
_builder: backend_env.Builder | None = None


def get(context=None) -> LEDIFF_AddonPreferences:
    """This add-on's preferences."""
    return (context or bpy.context).preferences.addons[__package__].preferences


def backend_config(prefs: LEDIFF_AddonPreferences) -> BackendConfig:
    """The client settings the preferences describe."""
    remote = prefs.backend == "REMOTE"
    return BackendConfig(
        python="" if remote else bpy.path.abspath(prefs.python_path),
        url=prefs.remote_url.strip() if remote else "",
        token=prefs.remote_token.strip() if remote else "",
        model_dir=bpy.path.abspath(prefs.models_dir) if prefs.models_dir else "",
        device=prefs.device,
        ready_timeout=prefs.ready_timeout,
        reply_timeout=prefs.ready_timeout,
    )


def data_folder(name: str) -> str:
    """A folder of this add-on's user data (the extension's user folder when installed as one)."""
    try:
        return bpy.utils.extension_path_user(__package__, path=name, create=True)
    except ValueError:  # not installed as an extension (a checkout, tests)
        folder = os.path.join(bpy.utils.user_resource("DATAFILES"), "lediff_blender", name)
        os.makedirs(folder, exist_ok=True)
        return folder


def results_folder(prefs: LEDIFF_AddonPreferences) -> str:
    """Where generated maps and lookdev renders go."""
    if prefs.output_dir:
        folder = bpy.path.abspath(prefs.output_dir)
        os.makedirs(folder, exist_ok=True)
        return folder
    return data_folder("results")


def env_folder(prefs: LEDIFF_AddonPreferences) -> str:
    """Where "Create Backend Environment" puts the venv."""
    return bpy.path.abspath(prefs.env_folder) if prefs.env_folder else data_folder("backend-env")


def stop_env_builder() -> None:
    """Cancel an environment being created and stop watching it (unregister)."""
    if _builder is not None:
        _builder.cancel()
    if bpy.app.timers.is_registered(_watch_env_builder):
        bpy.app.timers.unregister(_watch_env_builder)


def _watch_env_builder() -> float | None:
    """Timer: redraw the preferences while the environment is made; use it when it is done."""
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    if _builder is None or not _builder.finished.is_set():
        return ENV_WATCH_INTERVAL
    if _builder.error is None:
        prefs = get()
        prefs.python_path = backend_env.venv_python(env_folder(prefs))
        prefs.backend = "LOCAL"
    return None


class LEDIFF_OT_create_backend_env(bpy.types.Operator):
    """Create a Python environment with PyTorch and the LEDiff backend (downloads several GB)"""

    bl_idname = "lediff.create_backend_env"
    bl_label = "Create Backend Environment"

    @classmethod
    def poll(cls, context):
        if not bpy.app.online_access:
            cls.poll_message_set("Blender is offline: allow Online Access in Preferences > System")
            return False
        if _builder is not None and not _builder.finished.is_set():
            cls.poll_message_set("The backend environment is being created")
            return False
        return True

    def execute(self, context):
        global _builder
        prefs = get(context)
        folder = env_folder(prefs)
        try:
            steps = backend_env.plan(folder, prefs.torch_build, backend_env.bundled_backend())
        except (FileNotFoundError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _builder = backend_env.Builder(steps, os.path.join(folder + "-log", "create.log")).start()
        bpy.app.timers.register(_watch_env_builder, first_interval=ENV_WATCH_INTERVAL)
        self.report({"INFO"}, f"Creating the backend environment in {folder}")
        return {"FINISHED"}


class LEDIFF_OT_cancel_backend_env(bpy.types.Operator):
    """Stop creating the backend environment"""

    bl_idname = "lediff.cancel_backend_env"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        return _builder is not None and not _builder.finished.is_set()

    def execute(self, context):
        _builder.cancel()
        return {"FINISHED"}


class LEDIFF_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend: EnumProperty(name="Backend", items=(
        ("LOCAL", "This Computer", "Run the backend with a local Python interpreter"),
        ("REMOTE", "Remote", "Use a backend started with 'lediff serve --http' on another machine"),
    ), default="LOCAL")
    python_path: StringProperty(name="Backend Python",
                                description="Python interpreter of the environment where lediff-backend is installed",
                                subtype="FILE_PATH")
    env_folder: StringProperty(name="Environment Folder",
                               description="Where Create Backend Environment puts it (empty: the add-on's user folder)",
                               subtype="DIR_PATH")
    torch_build: EnumProperty(name="PyTorch Build",
                              items=[(key, label, index_url) for key, (label, index_url) in backend_env.TORCH_BUILDS.items()],
                              default="cpu")
    remote_url: StringProperty(name="URL", description="Address of the remote backend", default="http://127.0.0.1:8765")
    remote_token: StringProperty(name="Token", description="The token in the remote backend's --token-file",
                                 subtype="PASSWORD")
    models_dir: StringProperty(name="Models Folder", description="One subfolder per model (empty: $LEDIFF_MODELS "
                               "or ~/lediff-models)", subtype="DIR_PATH")
    device: EnumProperty(name="Device", items=(
        ("auto", "Auto", "CUDA, then Apple MPS, then CPU"),
        ("cuda", "CUDA", "NVIDIA GPU"),
        ("mps", "MPS", "Apple silicon GPU"),
        ("cpu", "CPU", "No GPU (the classic engine needs none)"),
    ), default="auto")
    output_dir: StringProperty(name="Results Folder",
                               description="Where generated maps and renders go (empty: the add-on's user folder)",
                               subtype="DIR_PATH")
    ready_timeout: FloatProperty(name="Timeout", description="Seconds the backend gets to start and to answer",
                                 default=30.0, min=1.0, soft_max=300.0)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend", expand=True)
        box = layout.box()
        if self.backend == "LOCAL":
            box.prop(self, "python_path")
            _draw_env_builder(box, self)
        else:
            box.prop(self, "remote_url")
            box.prop(self, "remote_token")
        layout.prop(self, "models_dir")
        layout.prop(self, "device")
        layout.prop(self, "output_dir")
        layout.prop(self, "ready_timeout")
        _draw_backend_check(layout, context.window_manager.lediff_backend)


def _draw_env_builder(layout, prefs: LEDIFF_AddonPreferences) -> None:
    column = layout.column()
    column.prop(prefs, "env_folder")
    column.prop(prefs, "torch_build")
    if _builder is not None and not _builder.finished.is_set():
        column.progress(factor=_builder.fraction, type="BAR", text=_builder.title)
        column.operator("lediff.cancel_backend_env", icon="CANCEL")
    else:
        column.operator("lediff.create_backend_env", icon="CONSOLE")
        if not bpy.app.online_access:
            column.label(text="Needs Online Access (Preferences > System)", icon="INFO")
        if _builder is not None:
            column.label(text=_builder.title, icon="ERROR" if _builder.error else "CHECKMARK")
    if _builder is not None:
        log = column.box().column(align=True)
        for line in _builder.log_tail():
            log.label(text=line)


def _draw_backend_check(layout, info) -> None:
    row = layout.row()
    row.operator("lediff.test_backend", icon="PLAY")
    if not info.checked:
        return
    box = layout.box()
    if not info.ok:
        box.alert = True
        box.label(text=info.message, icon="ERROR")
        return
    box.label(text=f"Backend {info.version} on {info.devices}", icon="CHECKMARK")
    box.label(text=f"Models: {info.models or 'none found'}")


classes = (LEDIFF_OT_create_backend_env, LEDIFF_OT_cancel_backend_env, LEDIFF_AddonPreferences)

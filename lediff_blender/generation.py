"""Generation: protocol jobs from the Scene's settings, the job in flight, and the timer pump.

One ``BackendClient`` per Blender session (module state, replaced when the backend preferences
change) and one job at a time. ``start`` submits a job and registers ``pump`` with
``bpy.app.timers``; ``pump`` takes the client's events without waiting and applies them:
progress to ``WindowManager.lediff_job``, ``done`` to the World the job was started for (the
World is touched only then, and only through ``lighting.apply_file``), errors to the job's
message. It returns its next interval while the job is in flight and None afterwards, which
ends the timer. Tests call ``pump`` themselves: timers never fire in bpy's module mode.

Errors that arrive in a timer cannot go through an operator's ``self.report``; they are shown
in the panels (``lediff_job.message``) and printed to the console.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import bpy

from . import client as client_module
from . import lighting, preferences, properties, protocol
from .client import BackendClient, BackendConfig

__all__ = ["PUMP_INTERVAL", "NEURAL_MODELS", "MERGE_MODELS", "build_job", "reference_index", "needed_models",
           "blocker", "start", "pump", "cancel", "release", "running_job", "check_backend", "shutdown"]

PUMP_INTERVAL = 0.1  # seconds between timer calls while a job is in flight
PREVIEW_EVERY = 5  # denoising steps between preview images (neural engines)
NEURAL_MODELS = ("lediff-highlight", "lediff-shadow", "sd-base")
LEDIFF_MODELS = ("lediff-highlight", "lediff-shadow")
# The neural merge engines (Brackets mode) and their models; classic (and auto) needs none
MERGE_MODELS = {"gmodiff": ("gmodiff", "sd21-base"), "lfdiff": ("lfdiff",)}
MERGE_NAMES = {key: name for key, name, _ in properties.MERGE_ENGINES if key in MERGE_MODELS}  # as the panel shows them


@dataclass(frozen=True)
class RunningJob:
    id: protocol.RequestId
    scene: str  # names: the job outlives any Python reference to Blender data
    world: str | None
    mode: str
    source: str
    output: str


class _Session:
    client: BackendClient | None = None
    job: RunningJob | None = None


_session = _Session()


# Jobs from settings ---------------------------------------------------------------------------


def _file(path: str, what: str) -> str:
    absolute = os.path.abspath(bpy.path.abspath(path)) if path else ""
    if not absolute or not os.path.isfile(absolute):
        raise ValueError(f"choose the {what} first" if not path else f"the {what} does not exist: {absolute}")
    return absolute


def _kind_and_params(settings) -> tuple[str, dict, str]:
    """(job kind, own params, source text for the history); ValueError when inputs are missing."""
    if settings.mode == "TEXT":
        if not settings.prompt.strip():
            raise ValueError("type a prompt first")
        return "panorama", {"prompt": settings.prompt, "width": settings.width}, settings.prompt
    if settings.mode == "PHOTO":
        photo = _file(settings.photo, "photo")
        if settings.photo_is_panorama:
            params = {"input": photo, "width": settings.width}
            if settings.sun_override:  # off: the backend estimates the sun's strength
                params["sun_ev"] = settings.sun_ev
            return "convert", params, photo
        return "panorama", {"prompt": settings.prompt, "image": photo, "width": settings.width}, photo
    if settings.mode == "BRACKETS":
        return _merge_params(settings)
    raise ValueError("an HDR file needs no generation: apply it")


def reference_index(settings) -> int | None:
    """Index of the pinned reference bracket, or None (the backend takes the middle exposure)."""
    return next((i for i, bracket in enumerate(settings.brackets) if bracket.reference), None)


def _merge_params(settings) -> tuple[str, dict, str]:
    """A merge job's params: only what is set (the backend's defaults otherwise), no steps,
    guidance or width (a merge keeps the photos' size)."""
    engine = settings.merge_engine
    neural = MERGE_NAMES.get(engine)
    if len(settings.brackets) < 2:
        raise ValueError("add at least two bracketed photos")
    if neural and len(settings.brackets) < 3:
        raise ValueError(f"add at least three bracketed photos: {neural} merges the darkest, the reference and "
                         "the brightest (or choose the Classic merge engine)")
    inputs = [_file(b.filepath, f"bracket photo {i + 1}") for i, b in enumerate(settings.brackets)]
    evs = [b.ev for b in settings.brackets]
    params = {"engine": engine, "inputs": inputs}
    if any(evs):  # no EVs given: the backend reads them from EXIF
        params["ev"] = evs
    reference = reference_index(settings)
    if reference is not None:
        if neural and any(evs) and evs[reference] in (min(evs), max(evs)):
            raise ValueError(f"pin a reference photo between a darker and a brighter one: {neural} merges the "
                             "darkest, the reference and the brightest")
        params["reference"] = reference
    if neural:
        params["seed"] = settings.seed
    elif settings.response != "auto":
        params["response"] = settings.response
    return "merge", params, inputs[0]


def build_job(settings, output: str) -> protocol.Job:
    """The protocol job for ``Scene.lediff`` settings, writing ``output``; ValueError for missing inputs.

    Models folder and device are the backend's start-up options (preferences), not job params.
    """
    kind, params, _ = _kind_and_params(settings)
    if kind == "merge":  # its own engine, seed and options
        return protocol.Job(kind, params, output)
    common = {"engine": settings.engine, "seed": settings.seed, "steps": settings.steps,
              "guidance": settings.guidance, "preview_every": PREVIEW_EVERY}
    return protocol.Job(kind, {**common, **params}, output)


def needed_models(settings) -> tuple[str, ...]:
    """The models the chosen mode and engine need (names of ``lediff models list``)."""
    if settings.mode == "BRACKETS":
        return MERGE_MODELS.get(settings.merge_engine, ())
    neural = settings.mode == "TEXT" or (settings.mode == "PHOTO" and not settings.photo_is_panorama)
    if neural:
        return NEURAL_MODELS
    return LEDIFF_MODELS if settings.engine == "lediff" and settings.mode == "PHOTO" else ()


def blocker(context) -> str | None:
    """Why Generate cannot run now (the greyed-out button says so), or None."""
    if _session.job is not None:
        return "A generation is running"
    problem = preferences.backend_config(preferences.get(context)).problem()
    if problem:
        return problem[0].upper() + problem[1:]
    settings = context.scene.lediff
    if settings.engine == "classic" and needed_models(settings) == NEURAL_MODELS:
        return "The classic engine takes 360° photos only; choose Auto or LEDiff"
    info = context.window_manager.lediff_backend
    if info.checked and info.ok:
        found = set(filter(None, info.models.split(", ")))
        missing = [name for name in needed_models(settings) if name not in found]
        if missing:
            return f"Missing models: {', '.join(missing)} (see Test Backend)"
    try:
        _kind_and_params(settings)
    except ValueError as exc:
        return str(exc)[0].upper() + str(exc)[1:]
    return None


def _output_path(folder: str, mode: str) -> str:
    stem = f"lediff_{mode.lower()}_{time.strftime('%Y%m%d-%H%M%S')}"
    path, counter = os.path.join(folder, f"{stem}.exr"), 1
    while os.path.exists(path):
        counter += 1
        path = os.path.join(folder, f"{stem}_{counter}.exr")
    return path


# The job in flight ----------------------------------------------------------------------------


def _client(config: BackendConfig) -> BackendClient:
    """The session's client, replaced when the backend settings changed."""
    if _session.client is not None and _session.client.config != config:
        _session.client.close()
        _session.client = None
    if _session.client is None:
        _session.client = BackendClient(config)
    return _session.client


def running_job() -> RunningJob | None:
    return _session.job


def start(context) -> protocol.RequestId:
    """Submit the Scene's generation and start the pump; ValueError or BackendUnavailable at once."""
    reason = blocker(context)
    if reason:
        raise ValueError(reason)
    prefs = preferences.get(context)
    scene = context.scene
    settings = scene.lediff
    output = _output_path(preferences.results_folder(prefs), settings.mode)
    job = build_job(settings, output)
    client = _client(preferences.backend_config(prefs))
    job_id = client.submit(job)
    world = scene.world.name if scene.world is not None else None
    _session.job = RunningJob(job_id, scene.name, world, settings.mode, _kind_and_params(settings)[2], output)
    _set_state(context.window_manager.lediff_job, "STARTING" if client.ready is None else "RUNNING",
               stage="Starting the backend" if client.ready is None else "Queued")
    if not bpy.app.timers.is_registered(pump):
        bpy.app.timers.register(pump, first_interval=PUMP_INTERVAL, persistent=True)
    return job_id


def pump() -> float | None:
    """Apply the backend's events; the timer's callback (returns its next interval, or None to stop)."""
    if _session.client is None:
        return None
    for event in _session.client.poll():
        _apply(event)
    _redraw()
    return PUMP_INTERVAL if _session.job is not None else None


def cancel() -> bool:
    """Ask the job in flight to stop (its ``cancelled`` error ends it); whether there was one."""
    if _session.job is None or _session.client is None:
        return False
    _session.client.cancel(_session.job.id)
    bpy.context.window_manager.lediff_job.stage = "Cancelling"
    return True


def release() -> bool:
    """Ask a running backend to free its cached models and GPU memory; whether one was running."""
    return _session.client is not None and _session.client.release() is not None


def check_backend(context) -> str:
    """Start the backend, record what it reports in ``WindowManager.lediff_backend``; a summary.

    Blocks for at most the configured timeouts; BackendUnavailable with the reason on failure.
    """
    info = context.window_manager.lediff_backend
    info.checked, info.ok = True, False
    config = preferences.backend_config(preferences.get(context))
    try:
        handshake = _client(config).handshake()
        models = client_module.list_models(config)
    except client_module.BackendUnavailable as exc:
        info.message = str(exc).splitlines()[0]
        raise
    info.ok = True
    info.version = handshake.ready.version
    info.devices = ", ".join(handshake.ready.devices)
    info.models = "" if models is None else ", ".join(models)
    info.message = ""
    found = "the server's own" if models is None else (", ".join(models) or "none")
    return f"LEDiff backend {info.version}; devices {info.devices}; models: {found}"


def shutdown() -> None:
    """Stop the pump and the backend (unregister)."""
    if bpy.app.timers.is_registered(pump):
        bpy.app.timers.unregister(pump)
    if _session.client is not None:
        _session.client.close()
    _session.client = None
    _session.job = None


# Events -------------------------------------------------------------------------------------


def _set_state(state, value: str, *, stage: str = "", fraction: float = 0.0, message: str = "",
               preview: str = "") -> None:
    state.state, state.stage, state.fraction, state.message, state.preview = value, stage, fraction, message, preview


def _apply(event: protocol.Event) -> None:
    job = _session.job
    state = bpy.context.window_manager.lediff_job
    if job is None or getattr(event, "job", None) != job.id:
        if isinstance(event, protocol.Error):
            print(f"LEDiff backend: {event.message}")
        return
    if isinstance(event, protocol.Accepted):
        state.state, state.stage = "RUNNING", "Accepted"
    elif isinstance(event, protocol.Progress):
        state.state, state.stage, state.fraction = "RUNNING", event.stage, event.fraction
        if event.preview:
            state.preview = event.preview
    elif isinstance(event, protocol.Done):
        _session.job = None
        _finish(job, event, state)
    elif isinstance(event, protocol.Error):
        _session.job = None
        cancelled = event.code == "cancelled"
        _set_state(state, "CANCELLED" if cancelled else "FAILED", message=event.message)
        if not cancelled:
            print(f"LEDiff: generation failed ({event.code}): {event.message}")


def _finish(job: RunningJob, done: protocol.Done, state) -> None:
    """Apply a finished job's map to its World and remember it: the only place a job changes data."""
    scene = bpy.data.scenes.get(job.scene)
    if scene is None:
        _set_state(state, "DONE", message=f"Saved {done.output} (its scene is gone)")
        return
    world = bpy.data.worlds.get(job.world) if job.world else None
    try:
        lighting.apply_file(world or lighting.ensure_world(scene), done.output)
    except ValueError as exc:
        _set_state(state, "FAILED", message=str(exc))
        print(f"LEDiff: {exc}")
        return
    lighting.remember(scene, done.output, mode=job.mode, source=job.source, seconds=done.seconds,
                      stops=float(done.meta.get("stops", 0.0) or 0.0))
    _set_state(state, "DONE", fraction=1.0, message=f"Applied {os.path.basename(done.output)} "
                                                     f"({done.seconds:.1f} s)")
    try:
        bpy.ops.ed.undo_push(message="LEDiff: apply generated environment")
    except RuntimeError:
        pass  # no window to hold an undo stack (background mode)


def _redraw() -> None:
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in {"PROPERTIES", "VIEW_3D"}:
                area.tag_redraw()

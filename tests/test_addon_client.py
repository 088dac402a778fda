"""Generation through real backend subprocesses (stdio and HTTP, classic engine) and fake ones.

The tests press Generate (``bpy.ops.lediff.generate``) and then call the pump, as the timer
would, until the job ends. Fake backends are tiny Python scripts written here, standing in for
the backend's interpreter: one writes garbage, one says nothing, one says ``ready`` and then
nothing, one speaks another protocol version, one crashes. Each must end in a clear error
within its timeout, and leave no process behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from lediff_backend.hdr.exr import read_exr
from tests.addon_support import addon_session, configure, fresh_addon, pump_until

pytestmark = pytest.mark.blender

ENDED = ("DONE", "FAILED", "CANCELLED")


@pytest.fixture(scope="module", autouse=True)
def _session():
    with addon_session():
        yield


def _write_photo(path, width: int, height: int):
    """An LDR 360° photo: a sky gradient over grey ground with a clipped sun."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    pixels = np.where(y[..., None] < 0.5, [0.5, 0.7, 1.0] * (1.2 - y[..., None]), 0.35)
    pixels[((x - 0.3) ** 2 * 4 + (y - 0.3) ** 2) < 0.002] = 1.0
    Image.fromarray((np.clip(pixels, 0, 1) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return {"small": _write_photo(folder / "small.png", 128, 64), "large": _write_photo(folder / "large.png", 1024, 512)}


@pytest.fixture
def bpy(tmp_path, photos):
    bpy = fresh_addon()
    configure(bpy, python_path=sys.executable, output_dir=str(tmp_path / "results"), models_dir=str(tmp_path / "models"))
    settings = bpy.context.scene.lediff
    settings.mode, settings.photo, settings.width, settings.engine = "PHOTO", str(photos["small"]), 256, "classic"
    return bpy


def _state(bpy):
    return bpy.context.window_manager.lediff_job


def _generate(bpy, timeout: float = 60.0) -> float:
    """Press Generate and pump until the job ends; the seconds it took."""
    assert bpy.ops.lediff.generate() == {"FINISHED"}
    return pump_until(lambda: _state(bpy).state in ENDED, timeout)


def _environment(bpy):
    from lediff_blender import world as lw

    image = lw.environment_image(bpy.context.scene.world)
    return image.filepath if image is not None else None


def _pid(bpy) -> int:
    from lediff_blender import generation

    return generation._session.client.pid


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# A real backend ---------------------------------------------------------------------------------


def test_generate_applies_the_result_only_when_done(bpy):
    from lediff_blender import generation

    assert bpy.ops.lediff.generate() == {"FINISHED"}
    assert bpy.app.timers.is_registered(generation.pump)
    seen = []

    def ended() -> bool:
        seen.append((_state(bpy).state, _environment(bpy)))
        return _state(bpy).state in ENDED

    pump_until(ended, 60)
    state = _state(bpy)
    assert state.state == "DONE", state.message
    assert {"STARTING", "RUNNING"} & {s for s, _ in seen}
    assert all(environment is None for s, environment in seen if s != "DONE")  # untouched until done
    (result,) = bpy.context.scene.lediff.history
    assert _environment(bpy) == result.filepath and result.filepath.endswith(".exr")
    pixels, _ = read_exr(result.filepath)
    assert pixels.shape == (128, 256, 3) and pixels.max() > 1.0  # expanded beyond the photo's white
    assert generation.pump() is None  # nothing in flight: the timer stops

    assert bpy.ops.lediff.release() == {"FINISHED"}  # the warm backend frees its models
    answers = []
    deadline = time.monotonic() + 10
    while not answers and time.monotonic() < deadline:
        answers = [e for e in generation._session.client.poll() if e.event == "released"]
        time.sleep(0.02)
    assert answers


def test_backend_killed_mid_job_reports_and_restarts(bpy, photos, studiolights):
    bpy.ops.lediff.open_hdri(filepath=str(studiolights["forest"]))
    before = _environment(bpy)
    settings = bpy.context.scene.lediff
    settings.photo, settings.width = str(photos["large"]), 1024
    assert bpy.ops.lediff.generate() == {"FINISHED"}
    pump_until(lambda: _state(bpy).state != "STARTING", 30)
    assert _state(bpy).state == "RUNNING"
    killed = _pid(bpy)
    os.kill(killed, signal.SIGKILL)
    pump_until(lambda: _state(bpy).state in ENDED, 15)
    state = _state(bpy)
    assert state.state == "FAILED" and "exited with status -9" in state.message
    assert _environment(bpy) == before and len(settings.history) == 1

    settings.photo, settings.width = str(photos["small"]), 256
    _generate(bpy)
    assert _state(bpy).state == "DONE", _state(bpy).message
    assert _pid(bpy) != killed and _environment(bpy) != before


def test_cancel_ends_the_job_and_keeps_the_world(bpy, photos, tmp_path):
    settings = bpy.context.scene.lediff
    settings.photo, settings.width = str(photos["large"]), 1024
    assert bpy.ops.lediff.generate() == {"FINISHED"}
    pump_until(lambda: _state(bpy).state != "STARTING", 30)
    assert bpy.ops.lediff.cancel() == {"FINISHED"}
    pump_until(lambda: _state(bpy).state in ENDED, 15)
    assert _state(bpy).state == "CANCELLED"
    assert _environment(bpy) is None and not settings.history
    assert not list((tmp_path / "results").glob("*.exr"))


def test_test_backend_reports_version_devices_and_models(bpy):
    assert bpy.ops.lediff.test_backend() == {"FINISHED"}
    info = bpy.context.window_manager.lediff_backend
    assert info.ok and info.version == "0.1.0" and "cpu" in info.devices.split(", ")
    assert info.models == ""  # the models folder is empty
    bpy.context.scene.lediff.mode = "TEXT"
    assert not bpy.ops.lediff.generate.poll()


# Fake backends ----------------------------------------------------------------------------------

READY = json.dumps({"event": "ready", "protocol": 1, "version": "fake", "devices": ["cpu"]})
FAKES = {
    "garbage": ("print('Hello! I am not a LEDiff backend.', flush=True)\ntime.sleep(60)",
                "not the LEDiff protocol: 'Hello! I am not a LEDiff backend.'"),
    "silent": ("time.sleep(60)", "did not say 'ready' within 1.5 s"),
    "ready_then_silent": (f"print({READY!r}, flush=True)\ntime.sleep(60)", "did not answer a request within 1.5 s"),
    "other_protocol": (f"print({READY.replace('1', '99', 1)!r}, flush=True)\ntime.sleep(60)",
                       "speaks protocol 99 and this add-on protocol 1"),
    "crash": ("sys.stderr.write('ModuleNotFoundError: no lediff_backend here\\n')\nsys.exit(3)",
              "exited with status 3; its last words:\nModuleNotFoundError: no lediff_backend here"),
}


@pytest.mark.parametrize("name", sorted(FAKES))
def test_fake_backend_fails_clearly_within_its_timeout(bpy, tmp_path, name):
    body, message = FAKES[name]
    fake = tmp_path / f"fake_{name}"
    fake.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    fake.chmod(0o755)
    configure(bpy, python_path=str(fake), ready_timeout=1.5)
    assert bpy.ops.lediff.generate() == {"FINISHED"}
    pid = _pid(bpy)
    seconds = pump_until(lambda: _state(bpy).state in ENDED, 10)
    state = _state(bpy)
    assert state.state == "FAILED" and message in state.message
    assert seconds < 1.5 + 2.0
    assert _gone(pid)
    assert _environment(bpy) is None


# A remote backend over HTTP ---------------------------------------------------------------------


@pytest.fixture
def http_backend(tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = subprocess.Popen([sys.executable, "-m", "lediff_backend.cli", "serve", "--http", "127.0.0.1:0",
                               "--token-file", str(token), "--work-dir", str(tmp_path / "server")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert select.select([server.stdout], [], [], 30)[0], "the HTTP backend did not start"
        yield json.loads(server.stdout.readline())["url"]
    finally:
        server.terminate()
        server.wait(10)


def test_generate_through_a_remote_backend(bpy, http_backend, tmp_path):
    configure(bpy, backend="REMOTE", remote_url=http_backend, remote_token="s3cret")
    _generate(bpy)
    assert _state(bpy).state == "DONE", _state(bpy).message
    (result,) = bpy.context.scene.lediff.history
    assert result.filepath.startswith(str(tmp_path / "results"))  # downloaded to the local results folder
    assert _environment(bpy) == result.filepath
    assert read_exr(result.filepath)[0].shape == (128, 256, 3)


def test_remote_backend_with_a_wrong_token(bpy, http_backend):
    configure(bpy, backend="REMOTE", remote_url=http_backend, remote_token="guess", ready_timeout=5.0)
    start = time.monotonic()
    _generate(bpy, timeout=10)
    assert _state(bpy).state == "FAILED" and "refused the token" in _state(bpy).message
    assert time.monotonic() - start < 5


# What goes to the backend -----------------------------------------------------------------------


def test_jobs_built_from_each_mode(bpy, photos):
    from lediff_blender import generation, protocol

    def build(output: str) -> protocol.Job:
        job = generation.build_job(settings, output)
        protocol.Job.from_dict(job.to_dict())  # every job passes the protocol's own checks
        return job

    settings = bpy.context.scene.lediff
    settings.engine, settings.seed, settings.steps = "auto", 7, 12
    settings.mode = "TEXT"
    job = build("/out/a.exr")
    assert (job.kind, job.params["prompt"], job.params["width"], job.output) == ("panorama", settings.prompt, 256, "/out/a.exr")
    assert {"seed": 7, "steps": 12, "engine": "auto"}.items() <= job.params.items()
    settings.mode, settings.photo_is_panorama = "PHOTO", False  # a normal photo is outpainted
    assert build("/out/b.exr").params["image"] == str(photos["small"])
    settings.mode = "BRACKETS"
    with pytest.raises(ValueError, match="at least two"):
        build("/out/c.exr")
    for _ in range(2):
        settings.brackets.add().filepath = str(photos["small"])
    assert "ev" not in build("/out/c.exr").params  # no EVs given: the backend reads EXIF
    settings.brackets[1].ev = 2.0
    job = build("/out/c.exr")
    assert job.kind == "merge" and job.params["ev"] == [0.0, 2.0]
    settings.brackets[1].filepath = "/nowhere/photo.jpg"
    with pytest.raises(ValueError, match="does not exist"):
        build("/out/c.exr")


def test_sun_strength_is_sent_only_when_set_for_a_360_photo(bpy, photos):
    from lediff_blender import generation

    settings = bpy.context.scene.lediff
    for _ in range(2):
        settings.brackets.add().filepath = str(photos["small"])
    cases = [("TEXT", True), ("PHOTO", True), ("PHOTO", False), ("BRACKETS", True)]
    for mode, panorama in cases:  # off: the backend estimates it
        settings.mode, settings.photo_is_panorama = mode, panorama
        assert "sun_ev" not in generation.build_job(settings, "/out/s.exr").params
    settings.sun_override, settings.sun_ev = True, 16.5
    for mode, panorama in cases:
        settings.mode, settings.photo_is_panorama = mode, panorama
        job = generation.build_job(settings, "/out/s.exr")
        assert job.params.get("sun_ev") == (16.5 if job.kind == "convert" else None), (mode, panorama)


def test_sun_strength_reaches_the_backend(bpy, tmp_path, studiolights):
    """A real sunny panorama's photo: a strong sun set by hand makes a brighter peak than the estimate."""
    from lediff_backend.hdr.exposure import simulate_ldr

    photo = tmp_path / "city.png"
    Image.fromarray(np.round(simulate_ldr(read_exr(studiolights["city"])[0]).pixels * 255).astype(np.uint8)).save(photo)
    settings = bpy.context.scene.lediff
    settings.photo = str(photo)
    peaks = []
    for override in (False, True):
        settings.sun_override, settings.sun_ev = override, 18.0
        _generate(bpy)
        assert _state(bpy).state == "DONE", _state(bpy).message
        peaks.append(read_exr(_environment(bpy))[0].max())
    assert peaks[1] > 8 * peaks[0]  # the estimate is about 13 stops (5 under the 18 set)


@pytest.mark.parametrize("engine, models", [("auto", ()), ("classic", ()), ("gmodiff", ("gmodiff", "sd21-base")),
                                            ("lfdiff", ("lfdiff",))])
def test_merge_jobs_for_each_merge_engine(bpy, photos, engine, models):
    from lediff_blender import generation, protocol

    settings = bpy.context.scene.lediff
    settings.mode, settings.merge_engine, settings.seed, settings.steps = "BRACKETS", engine, 5, 12
    settings.engine = "lediff"  # the Text and Photo modes' engine: never a merge's
    for ev in (-2.0, 0.0, 2.0):
        bracket = settings.brackets.add()
        bracket.filepath, bracket.ev = str(photos["small"]), ev
    neural = engine in ("gmodiff", "lfdiff")
    assert generation.needed_models(settings) == models
    job = generation.build_job(settings, "/out/m.exr")
    assert protocol.Job.from_dict(job.to_dict()).params == job.params  # the protocol's own checks
    expected = {"engine": engine, "inputs": [str(photos["small"])] * 3, "ev": [-2.0, 0.0, 2.0]}
    assert job.kind == "merge" and job.params == {**expected, **({"seed": 5} if neural else {})}  # nothing unset
    settings.response, settings.brackets[1].reference = "recover", True
    job = generation.build_job(settings, "/out/m.exr")
    assert job.params["reference"] == 1
    assert job.params.get("response") == (None if neural else "recover")  # the classic engine's only
    if neural:
        settings.brackets[2].reference = True  # the brightest: nothing brighter to merge
        with pytest.raises(ValueError, match="between a darker and a brighter"):
            generation.build_job(settings, "/out/m.exr")
        settings.brackets.remove(2)
        with pytest.raises(ValueError, match="add at least three bracketed photos"):
            generation.build_job(settings, "/out/m.exr")
    else:
        settings.brackets.remove(2)
        assert len(generation.build_job(settings, "/out/m.exr").params["inputs"]) == 2


def test_no_merge_job_asks_for_the_lediff_engine(bpy, photos):
    from lediff_blender import generation, properties
    from lediff_backend.merge import MERGE_ENGINES

    settings = bpy.context.scene.lediff
    settings.mode = "BRACKETS"
    for _ in range(3):
        settings.brackets.add().filepath = str(photos["small"])
    for text_engine in ("auto", "classic", "lediff"):
        for merge_engine, *_ in properties.MERGE_ENGINES:
            settings.engine, settings.merge_engine = text_engine, merge_engine
            assert generation.build_job(settings, "/out/m.exr").params["engine"] in ("auto", *MERGE_ENGINES)


def test_bracket_merges_through_the_backend(bpy, tmp_path):
    """The classic merge takes the pinned reference and the response; a neural merge without its
    models fails clearly (the backend checks its weights before reading the photos)."""
    settings = bpy.context.scene.lediff
    settings.mode, settings.merge_engine, settings.response = "BRACKETS", "classic", "srgb"
    base = np.linspace(0.05, 0.6, 64 * 128 * 3).reshape(64, 128, 3)
    for index, ev in enumerate((-2.0, 0.0, 2.0)):
        path = tmp_path / f"bracket{index}.png"
        Image.fromarray((np.clip(base * 2.0 ** ev, 0, 1) * 255).astype(np.uint8)).save(path)
        bracket = settings.brackets.add()
        bracket.filepath, bracket.ev = str(path), ev
    settings.brackets[0].reference = True
    _generate(bpy)
    assert _state(bpy).state == "DONE", _state(bpy).message
    (result,) = settings.history
    pixels, header = read_exr(result.filepath)
    assert pixels.shape == (64, 128, 3)
    assert (header["lediff:reference"], header["lediff:response"]) == ("0", "srgb")  # the settings reached it
    settings.merge_engine = "gmodiff"
    settings.brackets[1].reference = True
    _generate(bpy)
    assert _state(bpy).state == "FAILED" and "GMODiff" in _state(bpy).message, _state(bpy).message

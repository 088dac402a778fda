"""Neural jobs through the real stdio server: LEDiff convert and text2hdr on tiny random-init models.

One server and one tiny models root serve the whole module (loading torch and the models once is
most of the cost). The tests share that server, so each one leaves it with no queued job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lediff_backend.hdr.exr import read_exr
from test_server_stdio import SERVER, Backend, convert, write_png

pytest.importorskip("diffusers")

NEURAL = {"steps": 2, "seed": 0}
LONG = 90.0  # seconds a neural job may take on a busy 2-core machine


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A models root of tiny random-init models (what ``lediff tiny-models DIR`` writes)."""
    from lediff_backend.testing.tiny import write_tiny_models

    root = tmp_path_factory.mktemp("models")
    write_tiny_models(root)
    return root


@pytest.fixture(scope="module")
def backend(tmp_path_factory, models):
    """A server whose default models folder is the tiny root."""
    server = Backend(tmp_path_factory.mktemp("server"), [*SERVER, "--model-dir", str(models), "--device", "cpu"])
    assert server.next()["event"] == "ready"
    yield server
    server.close()


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    return write_png(tmp_path_factory.mktemp("photo") / "photo.png", 96, 64)


def finished(backend: Backend, job) -> list[dict]:
    return backend.until(lambda e: e.get("job") == job and e["event"] in ("done", "error"), timeout=LONG)


def ask(backend: Backend, op: str) -> dict:
    backend.send({"op": op, "id": op})
    return backend.until(lambda e: e.get("id") == op)[-1]


def stages(events: list[dict]) -> list[str]:
    return [e["stage"] for e in events if e["event"] == "progress"]


def text2hdr(job_id, output: Path, **params) -> dict:
    job = {"kind": "text2hdr", "params": {"prompt": "a sunset beach", **params}, "output": str(output)}
    return {"op": "submit", "id": job_id, "job": job}


def exr_pixels(path: Path) -> np.ndarray:
    pixels, _ = read_exr(path)
    assert np.isfinite(pixels).all() and pixels.min() >= 0 and pixels.max() > 0
    return pixels


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".exr", ".png") or ".part" in p.name)


def test_convert_reuses_the_warm_pipeline_until_release(backend, models, photo, tmp_path):
    assert ask(backend, "status")["loaded"] == []

    backend.send(convert("first", photo, tmp_path / "first.exr", engine="lediff", **NEURAL))
    events = finished(backend, "first")
    done = events[-1]
    assert done["event"] == "done", done
    assert done["meta"]["engine"] == "lediff" and stages(events)[:2] == ["load", "load"]
    assert "highlight" in stages(events) and "shadow" in stages(events)  # both denoisers of the root
    assert not any("preview" in e for e in events)  # no preview_every, no previews
    assert exr_pixels(tmp_path / "first.exr").shape == (64, 96, 3)

    loaded = ask(backend, "status")["loaded"]
    expected = {"models": [str(models / "lediff-highlight"), str(models / "lediff-shadow")],
                "device": "cpu", "dtype": "float32"}
    assert loaded == [expected]

    # engine auto and no model_dir: the server's default folder, the same warm pipeline, no load
    backend.send(convert("second", photo, tmp_path / "second.exr", **NEURAL))
    events = finished(backend, "second")
    assert events[-1]["event"] == "done" and events[-1]["meta"]["engine"] == "lediff", events[-1]
    assert "load" not in stages(events)
    assert ask(backend, "status")["loaded"] == [expected]

    assert ask(backend, "release") == {"event": "released", "id": "release"}
    assert ask(backend, "status")["loaded"] == []


def test_auto_takes_classic_where_the_models_folder_is_empty(backend, photo, tmp_path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    backend.send(convert("auto", photo, tmp_path / "auto.exr", model_dir=str(empty)))
    done = finished(backend, "auto")[-1]
    assert done["event"] == "done" and done["meta"]["engine"] == "classic", done
    assert exr_pixels(tmp_path / "auto.exr").shape == (64, 96, 3)


def test_previews_exist_when_announced_and_go_when_the_job_ends(backend, photo, tmp_path):
    output = tmp_path / "previewed.exr"
    preview = tmp_path / "previewed.preview.png"
    backend.send(convert("p", photo, output, engine="lediff", steps=3, preview_every=2))
    first = backend.until(lambda e: "preview" in e, timeout=LONG)[-1]
    assert first["preview"] == str(preview) and preview.is_file()  # checked as the event arrives
    with Image.open(preview) as image:
        assert image.size == (12, 8) and image.mode == "RGB"  # the latent's size: 1/8 of the output
    events = [first, *finished(backend, "p")]
    assert events[-1]["event"] == "done", events[-1]
    announced = [e for e in events if "preview" in e]
    assert len(announced) >= 2 and all(e["step"] % 2 == 0 for e in announced)
    assert leftovers(tmp_path) == ["previewed.exr"]


def test_text2hdr_end_to_end(backend, models, tmp_path):
    backend.send(text2hdr("t", tmp_path / "t.exr", width=96, height=64, guidance=3.0, **NEURAL))
    events = finished(backend, "t")
    done = events[-1]
    assert done["event"] == "done", done
    assert done["meta"]["engine"] == "lediff" and done["meta"]["prompt"] == "a sunset beach"
    assert stages(events)[:3] == ["load", "load", "generate"]
    assert exr_pixels(tmp_path / "t.exr").shape == (64, 96, 3)
    folders = [str(models / name) for name in ("lediff-highlight", "lediff-shadow", "sd-base")]
    assert {"models": folders, "device": "cpu", "dtype": "float32"} in ask(backend, "status")["loaded"]


def test_cancel_mid_job_leaves_no_output_and_no_preview(backend, photo, tmp_path):
    backend.send(convert("long", photo, tmp_path / "long.exr", engine="lediff", steps=50, preview_every=1))
    step = backend.until(lambda e: e.get("preview") is not None, timeout=LONG)[-1]
    backend.send({"op": "cancel", "id": "c", "job": "long"})
    events = finished(backend, "long")
    assert events[-1]["code"] == "cancelled", events[-1]
    steps = [e["step"] for e in events if e["event"] == "progress"]
    assert max(steps, default=step["step"]) < step["total"]
    assert leftovers(tmp_path) == []


def test_missing_weights_name_the_folder(backend, photo, tmp_path):
    requests = {"c": convert("c", photo, tmp_path / "c.exr", engine="lediff", model_dir=str(tmp_path)),
                "t": text2hdr("t", tmp_path / "t.exr", model_dir=str(tmp_path))}
    for job_id, request in requests.items():
        backend.send(request)
        error = finished(backend, job_id)[-1]
        assert error["code"] == "missing_weights", error
        assert str(tmp_path) in error["message"] and "lediff-highlight" in error["message"]
    assert leftovers(tmp_path) == []


def test_unknown_device_is_bad_input(backend, photo, tmp_path):
    backend.send(convert("d", photo, tmp_path / "d.exr", engine="lediff", device="no-such-device"))
    error = finished(backend, "d")[-1]
    assert error["code"] == "bad_input" and "no-such-device" in error["message"], error


def test_panorama_runs_mvdiffusion_then_lediff(backend, tmp_path):
    output = tmp_path / "pano.exr"
    job = {"kind": "panorama", "params": {"prompt": "a beach", "width": 256, **NEURAL}, "output": str(output)}
    backend.send({"op": "submit", "id": "pano", "job": job})
    events = finished(backend, "pano")
    assert events[-1]["event"] == "done", events[-1]
    assert events[-1]["meta"]["engine"] == "mvdiffusion+lediff" and events[-1]["meta"]["panorama"] is True
    assert "views" in stages(events)
    assert exr_pixels(output).shape == (128, 256, 3)


def test_panorama_without_mvdiffusion_names_what_to_install(backend, tmp_path):
    empty = tmp_path / "models"
    empty.mkdir()
    job = {"kind": "panorama", "params": {"prompt": "a beach", "model_dir": str(empty)},
           "output": str(tmp_path / "pano.exr")}
    backend.send({"op": "submit", "id": "pano-missing", "job": job})
    error = finished(backend, "pano-missing")[-1]
    assert error["code"] == "missing_weights", error
    assert str(empty) in error["message"]
    assert not (tmp_path / "pano.exr").exists()


def test_a_neural_merge_keeps_its_pipeline_warm(backend, models, tmp_path):
    shots = [write_png(tmp_path / f"shot{i}.png", 96, 64) for i in range(3)]

    def merge(job_id: str) -> list[dict]:
        job = {"kind": "merge", "params": {"inputs": [str(s) for s in shots], "ev": [-2, 0, 2], "engine": "lfdiff"},
               "output": str(tmp_path / f"{job_id}.exr")}
        backend.send({"op": "submit", "id": job_id, "job": job})
        events = finished(backend, job_id)
        assert events[-1]["event"] == "done", events[-1]
        assert exr_pixels(tmp_path / f"{job_id}.exr").shape == (64, 96, 3)
        return events

    assert "load" in stages(merge("merge-1"))
    warm = {"models": [f"lfdiff:{models}"], "device": "cpu", "dtype": "default"}
    assert warm in ask(backend, "status")["loaded"]
    assert "load" not in stages(merge("merge-2"))
    assert ask(backend, "release")["event"] == "released"
    assert warm not in ask(backend, "status")["loaded"]


def test_release_also_forgets_projection_lookups():
    from lediff_backend.hdr import projection
    from lediff_backend.jobs import PipelineCache

    projection.equirect_to_perspective(np.zeros((32, 64, 3), np.float32), 16, 16, 90.0)
    assert projection._perspective_sampler.cache_info().currsize > 0
    cache = PipelineCache()
    cache.get((("m",), "cpu", "float32"), lambda: object())
    cache.release()
    assert cache.loaded() == [] and projection._perspective_sampler.cache_info().currsize == 0

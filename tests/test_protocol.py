"""protocol.py: requests and events round-trip; malformed input is InvalidRequest with the id."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from lediff_backend import protocol as p
from lediff_backend.errors import BadRequest

OUT = "/tmp/out.exr"
IMG = "/tmp/in.png"


def submit(kind="convert", params=None, output=OUT, **extra):
    job = {"kind": kind, "params": {"input": IMG} if params is None else params, "output": output}
    return {"op": "submit", "id": "j1", "job": job, **extra}


class TestRequests:
    @pytest.mark.parametrize("request_dict", [
        {"op": "ping", "id": 7},
        {"op": "status", "id": "s"},
        {"op": "release", "id": "r"},
        {"op": "shutdown", "id": "x"},
        {"op": "cancel", "id": "c", "job": "j1"},
        submit(),
        submit("sun", {"input": IMG}, output=None),
        submit("merge", {"inputs": [IMG, IMG], "ev": [-2, 0.5]}),
        submit("merge", {"inputs": [IMG, IMG, IMG], "reference": 0, "response": "recover", "half": True}),
        submit("panorama", {"prompt": "a beach", "image": IMG, "width": 2048, "seed": 3}),
        submit("text2hdr", {"prompt": "a forest", "width": 1024, "height": 512, "guidance": 7.5}),
    ])
    def test_round_trip(self, request_dict):
        request = p.parse_request(request_dict)
        expected = dict(request_dict)
        if "job" in expected and isinstance(expected["job"], dict) and expected["job"]["output"] is None:
            expected["job"] = {k: v for k, v in expected["job"].items() if k != "output"}
        assert request.to_dict() == expected
        assert p.decode_request(p.encode_line(request)) == request

    def test_unknown_fields_are_ignored(self):
        request = p.parse_request(submit(params={"input": IMG, "colour": "red"}, extra_field=1))
        assert request.job.params == {"input": IMG}

    def test_null_optional_param_is_absent(self):
        assert p.parse_request(submit(params={"input": IMG, "width": None})).job.params == {"input": IMG}

    def test_sun_ignores_output(self):
        assert p.parse_request(submit("sun", {"input": IMG}, output="whatever")).job.output is None

    @pytest.mark.parametrize("line, request_id, words", [
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'"text"', None, "JSON object"),
        (b"\xff\xfe\x00garbage", None, "not UTF-8"),
        (b'{"op": "ping"}', None, "'id'"),
        (b'{"op": "ping", "id": true}', None, "'id'"),
        (b'{"op": "ping", "id": ""}', None, "'id'"),
        (b'{"op": "dance", "id": 3}', 3, "unknown op"),
        (b'{"id": 3}', 3, "unknown op"),
        (b'{"op": "cancel", "id": "c"}', "c", "'job'"),
        (b"[" * 100_000, None, "not JSON"),
    ])
    def test_malformed(self, line, request_id, words):
        with pytest.raises(p.InvalidRequest, match=words) as info:
            p.decode_request(line)
        assert info.value.request_id == request_id
        assert isinstance(info.value, BadRequest) and info.value.code == "bad_request"

    @pytest.mark.parametrize("job, words", [
        ("nope", "'job' must be an object"),
        ({"kind": "teleport", "params": {}, "output": OUT}, "unknown job kind"),
        ({"kind": "convert", "params": [], "output": OUT}, "'params' must be an object"),
        ({"kind": "convert", "params": {}, "output": OUT}, "missing param 'input'"),
        ({"kind": "convert", "params": {"input": "rel/in.png"}, "output": OUT}, "absolute path"),
        ({"kind": "convert", "params": {"input": IMG + "\0"}, "output": OUT}, "absolute path"),
        ({"kind": "convert", "params": {"input": IMG}}, "'output'"),
        ({"kind": "convert", "params": {"input": IMG}, "output": "out.exr"}, "'output'"),
        ({"kind": "convert", "params": {"input": IMG, "width": 0}, "output": OUT}, "positive integer"),
        ({"kind": "convert", "params": {"input": IMG, "width": True}, "output": OUT}, "positive integer"),
        ({"kind": "convert", "params": {"input": IMG, "half": 1}, "output": OUT}, "true or false"),
        ({"kind": "convert", "params": {"input": IMG, "guidance": math.nan}, "output": OUT}, "finite"),
        ({"kind": "merge", "params": {"inputs": []}, "output": OUT}, "non-empty list"),
        ({"kind": "merge", "params": {"inputs": [IMG], "ev": [0, 1]}, "output": OUT}, "one value per input"),
        ({"kind": "panorama", "params": {}, "output": OUT}, "missing param 'prompt'"),
    ])
    def test_bad_job(self, job, words):
        with pytest.raises(p.InvalidRequest, match=words) as info:
            p.parse_request({"op": "submit", "id": 5, "job": job})
        assert info.value.request_id == 5

    def test_job_paths(self):
        job = p.parse_request(submit("merge", {"inputs": ["/a", "/b"], "model_dir": "/m"})).job
        assert job.paths(p.FILE, p.FILES) == [("inputs", "/a"), ("inputs", "/b")]
        assert job.paths(p.FOLDER) == [("model_dir", "/m")]


class TestEvents:
    @pytest.mark.parametrize("event", [
        p.Ready(1, "0.1.0", ["cuda", "cpu"]),
        p.Pong(3),
        p.Accepted("j"),
        p.Progress("j", "expand", 2, 8, 0.25),
        p.Progress("j", "denoise", 5, 50, 0.1, preview="/tmp/p.png"),
        p.Done("j", OUT, {"peak": 12.5, "stops": 9.0}, 1.25),
        p.Error(None, "bad_request", "not JSON"),
        p.StatusReport("s", [{"job": "j", "kind": "convert", "state": "running"}], "cpu", []),
        p.Released("r"),
    ])
    def test_round_trip(self, event):
        line = p.encode_line(event)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert p.parse_event(json.loads(line)) == event

    def test_wire_names(self):
        assert json.loads(p.encode_line(p.Progress("j", "s", 1, 2, 0.5))) == {
            "event": "progress", "job": "j", "stage": "s", "step": 1, "total": 2, "fraction": 0.5}
        assert set(p.ERROR_CODES) == {"bad_request", "bad_input", "missing_weights", "out_of_memory",
                                      "cancelled", "internal"}

    def test_meta_from_numpy_is_plain_json(self):
        meta = {"peak": np.float32(4.0), "sun": {"direction": np.array([0.0, 0.0, 1.0])},
                "bad": float("inf"), "pair": (1, 2)}
        data = json.loads(p.encode_line(p.Done("j", OUT, meta, 0.5)))
        assert data["meta"] == {"peak": 4.0, "sun": {"direction": [0.0, 0.0, 1.0]}, "bad": None, "pair": [1, 2]}

    def test_unknown_event(self):
        with pytest.raises(ValueError):
            p.parse_event({"event": "party"})


def test_imports_only_the_stdlib():
    """protocol.py is imported inside Blender: no numpy, no torch."""
    code = ("import sys, lediff_backend.protocol; "
            "print(sorted(m for m in ('numpy', 'torch', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "[]"

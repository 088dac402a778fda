"""``lediff serve --http``: a real subprocess on a loopback port, driven with urllib."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from lediff_backend.hdr.exr import read_exr

from test_server_stdio import TIMEOUT, write_png

TOKEN = "s3cret-token"


class HttpBackend:
    def __init__(self, tmp: Path, *extra: str) -> None:
        token_file = tmp / "token"
        token_file.write_text(TOKEN + "\n")
        self.work = tmp / "work"
        self.stderr = open(tmp / "http-stderr.txt", "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lediff_backend.server", "--http", "127.0.0.1:0",
             "--token-file", str(token_file), "--work-dir", str(self.work), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr)
        self.ready = json.loads(self.proc.stdout.readline())
        assert self.ready["event"] == "ready", self.ready
        self.url = self.ready["url"]
        self.seen = 0

    def call(self, method: str, path: str, body: bytes | dict | None = None, token: str | None = TOKEN):
        """(status, parsed JSON or raw bytes) of one HTTP request."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                status, raw, kind = response.status, response.read(), response.headers["Content-Type"]
        except urllib.error.HTTPError as exc:
            status, raw, kind = exc.code, exc.read(), exc.headers["Content-Type"]
        return status, json.loads(raw) if kind == "application/json" else raw

    def request(self, request: dict) -> list[dict]:
        status, body = self.call("POST", "/requests", request)
        assert status == 200, body
        return body["events"]

    def upload(self, path: Path, name: str | None = None) -> str:
        query = urllib.parse.urlencode({"name": name or path.name})
        status, body = self.call("POST", f"/uploads?{query}", path.read_bytes())
        assert status == 201, body
        return body["path"]

    def until_finished(self, job) -> list[dict]:
        events: list[dict] = []
        deadline = time.monotonic() + TIMEOUT
        while not any(e.get("job") == job and e["event"] in ("done", "error") for e in events):
            assert time.monotonic() < deadline, events
            status, body = self.call("GET", f"/events?after={self.seen}&wait=5")
            assert status == 200, body
            events += body["events"]
            self.seen = body["next"]
        return events

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture
def http(tmp_path):
    backend = HttpBackend(tmp_path)
    yield backend
    backend.close()


@pytest.mark.parametrize("method, path", [("GET", "/events?wait=0"), ("POST", "/requests"),
                                          ("POST", "/uploads?name=a.png"), ("GET", "/jobs/x/result")])
@pytest.mark.parametrize("token", [None, "wrong", TOKEN + "x", ""])
def test_every_route_needs_the_token(http, method, path, token):
    status, body = http.call(method, path, b'{"op": "ping", "id": 1}' if method == "POST" else None, token)
    assert status == 401 and body["event"] == "error"


def test_ping_with_token_and_event_log(http):
    assert http.request({"op": "ping", "id": "p"}) == [{"event": "pong", "id": "p"}]
    status, body = http.call("GET", "/events?after=0&wait=0")
    assert [e["event"] for e in body["events"]] == ["ready", "pong"] and body["next"] == 2
    assert http.request({"op": "status", "id": "s"})[0]["jobs"] == []
    [error] = http.request({"op": "nope", "id": 4})
    assert error["event"] == "error" and error["code"] == "bad_request" and error["job"] == 4


def test_upload_convert_download(http, tmp_path):
    png = write_png(tmp_path / "photo.png", 256, 128)
    uploaded = http.upload(png, name="../../../etc/passwd photo.png")
    assert Path(uploaded).parent == http.work.resolve() / "uploads"
    assert Path(uploaded).name.endswith("passwd_photo.png")
    job = {"kind": "convert", "params": {"input": uploaded}, "output": "/etc/../../evil/out.exr"}
    assert http.request({"op": "submit", "id": "c", "job": job}) == [{"event": "accepted", "job": "c"}]
    events = http.until_finished("c")
    done = events[-1]
    assert done["event"] == "done", done
    assert Path(done["output"]).name == "out.exr"
    assert Path(done["output"]).is_relative_to(http.work.resolve() / "outputs")
    assert any(e["event"] == "progress" for e in events)
    status, exr = http.call("GET", "/jobs/c/result")
    assert status == 200
    local = tmp_path / "downloaded.exr"
    local.write_bytes(exr)
    pixels, _ = read_exr(local)
    assert pixels.shape == (128, 256, 3) and np.isfinite(pixels).all()


def test_client_paths_are_never_trusted(http, tmp_path):
    png = write_png(tmp_path / "local.png", 64, 32)
    uploaded = http.upload(png)
    cases = [
        {"input": str(png)},  # a real file, but not an upload
        {"input": str(Path(uploaded).parent / ".." / ".." / ".." / "local.png")},  # traversal
        {"input": uploaded, "model_dir": str(tmp_path)},
    ]
    for i, params in enumerate(cases):
        job = {"kind": "convert", "params": params, "output": "/tmp/x.exr"}
        [error] = http.request({"op": "submit", "id": i, "job": job})
        assert error["event"] == "error" and error["code"] == "bad_request" and error["job"] == i, error
    assert http.call("GET", "/jobs/..%2F..%2Fetc/result")[0] == 404
    assert http.call("GET", "/jobs/never/result")[0] == 404


def test_size_caps(tmp_path):
    backend = HttpBackend(tmp_path, "--max-upload-mb", "1")
    try:
        status, body = backend.call("POST", "/uploads?name=big.png", b"x" * (2 << 20))
        assert status == 413 and body["code"] == "bad_request"
        status, body = backend.call("POST", "/requests", b" " * (2 << 20))
        assert status == 413
        assert backend.request({"op": "ping", "id": 1}) == [{"event": "pong", "id": 1}]
        assert not list((backend.work / "uploads").iterdir())
    finally:
        backend.close()


def test_shutdown_request_exits_0(http):
    assert http.request({"op": "shutdown", "id": "bye"}) == []
    assert http.proc.wait(TIMEOUT) == 0


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.168.1.20:8080", "example.com:80"])
def test_non_loopback_bind_is_refused_without_the_flag(tmp_path, address):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    result = subprocess.run(
        [sys.executable, "-m", "lediff_backend.server", "--http", address, "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    assert result.returncode == 2 and "--allow-remote" in result.stderr and result.stdout == ""


def test_allow_remote_binds_any_address(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lediff_backend.server", "--http", "0.0.0.0:0", "--allow-remote",
         "--token-file", str(token_file)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert json.loads(proc.stdout.readline())["url"].startswith("http://0.0.0.0:")
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
        proc.stdout.close()


def test_missing_token_file_is_a_usage_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lediff_backend.server", "--http", "127.0.0.1:0", "--token-file",
         str(tmp_path / "absent")], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 2 and "token file" in result.stderr

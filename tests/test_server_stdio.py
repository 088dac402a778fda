"""The stdio server as the add-on runs it: a real subprocess driven line by line.

Every read has a timeout, so a hang fails the test instead of blocking the run.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lediff_backend import protocol
from lediff_backend.hdr.exr import read_exr
from lediff_backend.jobs import JobRunner
from lediff_backend.server import Session

TIMEOUT = 30.0
SERVER = [sys.executable, "-m", "lediff_backend.server"]

# The real server with convert_file wrapped, for behaviours no real input triggers on demand:
# a job that prints to stdout (Python, C level and a child process), raises, or runs out of memory.
PATCHED_SERVER = """
import os, subprocess, sys
import lediff_backend.convert as convert
from lediff_backend.cli import main

mode, real = sys.argv[1], convert.convert_file

def patched(*args, **kwargs):
    if mode == "noisy":
        print("noise from print()")
        sys.stdout.flush()
        os.write(1, b"noise on fd 1\\n")
        subprocess.run([sys.executable, "-c", "print('noise from a child process')"], check=True)
        return real(*args, **kwargs)
    raise {"raise": RuntimeError("boom"), "oom": MemoryError()}[mode]

convert.convert_file = patched
sys.exit(main(["serve"]))
"""


class Backend:
    """A server subprocess; ``events`` yields its stdout lines parsed as JSON, with timeouts."""

    def __init__(self, tmp: Path, command: list[str] = SERVER) -> None:
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}.txt"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self._lines: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def send(self, request: dict | bytes) -> None:
        data = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def next(self, timeout: float = TIMEOUT) -> dict | None:
        """The next event (every stdout line must be one JSON object), or None at end of output."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no event within {timeout} s; stderr:\n{self.stderr()}")
        if line is None:
            return None
        event = json.loads(line)
        assert isinstance(event, dict) and event.get("event") in protocol.EVENTS, line
        return event

    def until(self, done, timeout: float = TIMEOUT) -> list[dict]:
        """Events up to and including the first for which ``done(event)`` is true."""
        events: list[dict] = []
        deadline = time.monotonic() + timeout
        while not events or not done(events[-1]):
            event = self.next(max(0.1, deadline - time.monotonic()))
            assert event is not None, f"server ended early after {events}; stderr:\n{self.stderr()}"
            events.append(event)
        return events

    def finished(self, job) -> list[dict]:
        return self.until(lambda e: e.get("job") == job and e["event"] in ("done", "error"))

    def wait(self, timeout: float = TIMEOUT) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        self._stderr.close()


@pytest.fixture
def start(tmp_path):
    started: list[Backend] = []

    def start_backend(command: list[str] = SERVER) -> Backend:
        backend = Backend(tmp_path, command)
        started.append(backend)
        ready = backend.next()
        assert ready["event"] == "ready" and ready["protocol"] == protocol.PROTOCOL_VERSION, ready
        assert "cpu" in ready["devices"] and ready["version"]
        return backend

    yield start_backend
    for backend in started:
        backend.close()


@pytest.fixture
def backend(start):
    return start()


def write_png(path: Path, width: int, height: int) -> Path:
    """An LDR photo-like image: smooth sky-to-ground gradient, a bright sun disc, some noise."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    sky = np.stack([0.4 + 0.4 * (1 - y), 0.5 + 0.3 * (1 - y), 0.9 - 0.5 * y], axis=-1)
    sun = ((x - 0.3) ** 2 * 4 + (y - 0.25) ** 2) < 0.002
    sky[sun] = 1.0
    pixels = np.clip(sky + rng.normal(0, 0.02, sky.shape), 0, 1)
    Image.fromarray((pixels * 255).astype(np.uint8)).save(path, compress_level=1)
    return path


def convert(job_id, image: Path, output: Path, **params) -> dict:
    job = {"kind": "convert", "params": {"input": str(image), **params}, "output": str(output)}
    return {"op": "submit", "id": job_id, "job": job}


@pytest.fixture
def small_png(tmp_path):
    return write_png(tmp_path / "small.png", 256, 128)


@pytest.fixture(scope="module")
def large_png(tmp_path_factory):
    """Large enough that a convert still has steps to go (~0.5 s each) after its first progress event."""
    return write_png(tmp_path_factory.mktemp("large") / "large.png", 2048, 1024)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".exr" or ".part" in p.name)


# Requests and malformed input ---------------------------------------------------------------


def test_ping_status_release(backend):
    backend.send({"op": "ping", "id": 1})
    assert backend.next() == {"event": "pong", "id": 1}
    backend.send({"op": "status", "id": "s"})
    assert backend.next() == {"event": "status", "id": "s", "jobs": [], "device": "cpu", "loaded": []}
    backend.send({"op": "release", "id": "r"})
    assert backend.next() == {"event": "released", "id": "r"}


@pytest.mark.parametrize("line, job", [
    (b"this is not json\n", None),
    (b"[1, 2, 3]\n", None),
    (b'{"op": "ping"}\n', None),
    (b"\x00\x01\x02\xff\xfe binary garbage \x89PNG\r\n", None),
    (b'{"op": "ping", "id": "\xc3\x28"}\n', None),
    (b'{"op": "dance", "id": 9}\n', 9),
    (b'{"op": "submit", "id": "k", "job": {"kind": "teleport", "params": {}, "output": "/tmp/x.exr"}}\n', "k"),
    (b'{"op": "cancel", "id": "c", "job": "never-submitted"}\n', "c"),
])
def test_malformed_line_gets_bad_request_and_serving_goes_on(backend, line, job):
    backend.send(line)
    error = backend.next()
    assert error["event"] == "error" and error["code"] == "bad_request" and error["job"] == job, error
    backend.send({"op": "ping", "id": 2})
    assert backend.next() == {"event": "pong", "id": 2}


def peak_memory_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def test_10_mb_line_is_refused_without_buffering_it(backend):
    backend.send({"op": "ping", "id": 0})
    backend.next()
    before = peak_memory_kib(backend.proc.pid) if sys.platform == "linux" else None
    big = b'{"op": "ping", "id": "' + b"x" * (10 << 20) + b'"}\n'
    for start in range(0, len(big), 1 << 20):  # a slow sender: 1 MiB at a time
        backend.send(big[start:start + (1 << 20)])
    error = backend.next()
    assert error["code"] == "bad_request" and error["job"] is None and "longer" in error["message"]
    backend.send({"op": "ping", "id": 3})
    assert backend.next() == {"event": "pong", "id": 3}
    if before is not None:  # the line never sat in memory whole (limit 1 MiB + one read chunk)
        assert peak_memory_kib(backend.proc.pid) - before < 6 * 1024


def test_params_are_checked_before_accepted(backend, tmp_path, small_png):
    cases = [
        (convert("a", tmp_path / "missing.png", tmp_path / "a.exr"), "bad_input"),
        (convert("b", small_png, tmp_path / "no-such-folder" / "b.exr"), "bad_input"),
        (convert("c", small_png, tmp_path), "bad_input"),  # the output is a folder
        (convert("d", small_png, tmp_path / "d.exr", width=-5), "bad_request"),
        (convert("e", small_png, tmp_path / "e.txt"), "bad_input"),  # not an image format
    ]
    for request, code in cases:
        backend.send(request)
        error = backend.next()
        assert error["event"] == "error" and error["job"] == request["id"] and error["code"] == code, error
    backend.send({"op": "ping", "id": "after"})
    assert backend.next()["event"] == "pong"


@pytest.mark.skipif(sys.platform != "linux", reason="needs a folder nobody can write: sysfs, or a 0500 one")
def test_unwritable_output_folder_is_bad_input(backend, tmp_path, small_png):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() == 0:  # root writes into 0500 folders, not into sysfs
        locked = Path("/sys/kernel")
    backend.send(convert("w", small_png, locked / "w.exr"))
    error = backend.next()
    assert error["code"] == "bad_input" and "writable" in error["message"]


def test_neural_kinds_say_what_to_install(backend, tmp_path):
    for kind, params in (("panorama", {"prompt": "a beach"}), ("text2hdr", {"prompt": "a forest"})):
        params["model_dir"] = str(tmp_path / "models")
        job = {"kind": kind, "params": params, "output": str(tmp_path / f"{kind}.exr")}
        backend.send({"op": "submit", "id": kind, "job": job})
        events = backend.finished(kind)
        assert [e["event"] for e in events] == ["accepted", "error"]
        assert events[-1]["code"] == "missing_weights"
        assert "lediff-highlight" in events[-1]["message"] and "download" in events[-1]["message"]


# Jobs ---------------------------------------------------------------------------------------


def test_convert_end_to_end(backend, tmp_path, small_png):
    from lediff_backend.convert import convert_file

    output = tmp_path / "out.exr"
    backend.send(convert("job-1", small_png, output))
    events = backend.finished("job-1")
    assert events[0] == {"event": "accepted", "job": "job-1"}
    done = events[-1]
    assert done["event"] == "done", done
    assert done["output"] == str(output) and done["seconds"] > 0
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and all(e["job"] == "job-1" and 0 <= e["step"] <= e["total"] for e in progress)
    assert all(e["fraction"] == pytest.approx(e["step"] / e["total"], abs=1e-4) for e in progress)
    assert all(isinstance(e["stage"], str) and e["stage"] for e in progress)

    pixels, _ = read_exr(output)
    assert pixels.shape == (128, 256, 3) and np.isfinite(pixels).all() and pixels.max() > 1
    direct = convert_file(small_png, tmp_path / "direct.exr")
    direct["output"] = str(output)
    assert done["meta"] == json.loads(protocol.encode_line(protocol.Done("x", None, direct, 0)))["meta"]
    assert leftovers(tmp_path) == ["direct.exr", "out.exr"]


def test_sun_job(backend, tmp_path, small_png):
    hdr = tmp_path / "hdr.exr"
    backend.send(convert("c", small_png, hdr))
    assert backend.finished("c")[-1]["event"] == "done"
    backend.send({"op": "submit", "id": "s", "job": {"kind": "sun", "params": {"input": str(hdr)}}})
    done = backend.finished("s")[-1]
    assert done["event"] == "done" and done["output"] is None, done
    assert len(done["meta"]["sun"]["direction"]) == 3


def test_two_queued_jobs_run_in_order(backend, tmp_path, small_png):
    backend.send(convert("first", small_png, tmp_path / "first.exr"))
    backend.send(convert("second", small_png, tmp_path / "second.exr"))
    backend.send({"op": "status", "id": "s"})
    events = backend.until(lambda e: e.get("job") == "second" and e["event"] == "done")
    order = [(e["event"], e.get("job")) for e in events if e["event"] != "progress"]
    assert order.index(("accepted", "second")) < order.index(("done", "first"))
    first_done = next(i for i, e in enumerate(events) if e["event"] == "done")
    assert events[first_done]["job"] == "first"
    assert all(e["job"] == "first" for e in events[:first_done] if e["event"] == "progress")
    assert all(e["job"] == "second" for e in events[first_done:] if e["event"] == "progress")
    status = next(e for e in events if e["event"] == "status")
    assert [j["job"] for j in status["jobs"]] in (["first", "second"], ["second"])
    assert (tmp_path / "first.exr").is_file() and (tmp_path / "second.exr").is_file()


def test_cancel_mid_job_leaves_no_file(backend, tmp_path, large_png):
    backend.send(convert("long", large_png, tmp_path / "long.exr"))
    backend.send(convert("queued", large_png, tmp_path / "queued.exr"))
    backend.until(lambda e: e["event"] == "progress" and e["job"] == "long")
    backend.send({"op": "cancel", "id": "c1", "job": "queued"})
    backend.send({"op": "cancel", "id": "c2", "job": "long"})
    ends = [e for e in backend.finished("long") if e["event"] in ("done", "error")]
    assert {(e["job"], e["code"]) for e in ends} == {("queued", "cancelled"), ("long", "cancelled")}
    backend.send({"op": "status", "id": "s"})
    assert backend.until(lambda e: e["event"] == "status")[-1]["jobs"] == []
    assert leftovers(tmp_path) == []


def test_sigkill_mid_job_leaves_no_exr_at_the_output(backend, tmp_path, large_png):
    output = tmp_path / "killed.exr"
    backend.send(convert("k", large_png, output))
    backend.until(lambda e: e["event"] == "progress")
    backend.proc.send_signal(signal.SIGKILL)
    assert backend.wait() == -signal.SIGKILL
    assert not output.exists()


def test_shutdown_mid_job_exits_0_without_reply_or_output(backend, tmp_path, large_png):
    backend.send(convert("k", large_png, tmp_path / "k.exr"))
    backend.until(lambda e: e["event"] == "progress")
    backend.send({"op": "shutdown", "id": "bye"})
    assert backend.wait() == 0
    while (event := backend.next()) is not None:  # only the job's last progress may still arrive
        assert event["event"] == "progress", event
    assert leftovers(tmp_path) == []


def test_end_of_input_runs_queued_jobs_then_exits_0(backend, tmp_path, small_png):
    backend.send(convert("last", small_png, tmp_path / "last.exr"))
    backend.proc.stdin.close()
    assert backend.finished("last")[-1]["event"] == "done"
    assert backend.next() is None
    assert backend.wait() == 0


def test_sigterm_exits_0(backend):
    backend.proc.send_signal(signal.SIGTERM)
    assert backend.wait() == 0


# Robustness of the stream and of the worker ----------------------------------------------------


def test_job_printing_to_stdout_does_not_corrupt_the_stream(start, tmp_path, small_png):
    backend = start([sys.executable, "-c", PATCHED_SERVER, "noisy"])
    backend.send(convert("n", small_png, tmp_path / "n.exr"))
    assert backend.finished("n")[-1]["event"] == "done"  # every line in between parsed as JSON
    backend.send({"op": "shutdown", "id": 0})
    assert backend.next() is None and backend.wait() == 0
    stderr = backend.stderr()
    for noise in ("noise from print()", "noise on fd 1", "noise from a child process"):
        assert noise in stderr


@pytest.mark.parametrize("mode, code, words", [("raise", "internal", "RuntimeError: boom"),
                                               ("oom", "out_of_memory", "smaller width")])
def test_failing_job_is_reported_and_serving_goes_on(start, tmp_path, small_png, mode, code, words):
    backend = start([sys.executable, "-c", PATCHED_SERVER, mode])
    backend.send(convert("f", small_png, tmp_path / "f.exr"))
    error = backend.finished("f")[-1]
    assert error["event"] == "error" and error["code"] == code and words in error["message"]
    backend.send({"op": "ping", "id": "alive"})
    assert backend.next() == {"event": "pong", "id": "alive"}


def test_start_up_imports_nothing_heavy():
    code = ("import sys, lediff_backend.server, lediff_backend.http_server, lediff_backend.cli; "
            "print(sorted(m for m in ('numpy', 'torch', 'diffusers', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert out.stdout.strip() == "[]", out.stderr


def test_ready_is_fast(tmp_path):
    started = time.perf_counter()
    backend = Backend(tmp_path)
    try:
        assert backend.next()["event"] == "ready"
        assert time.perf_counter() - started < 2.0  # bench/server.py measures it (target < 1 s)
    finally:
        backend.close()


# The shared core, in process ----------------------------------------------------------------


def test_cuda_out_of_memory_maps_to_out_of_memory():
    torch = pytest.importorskip("torch")
    runner = JobRunner()
    runner.cache.get((("/models/x",), "cpu", "float32"), lambda: object())
    assert runner.cache.loaded() == [{"models": ["/models/x"], "device": "cpu", "dtype": "float32"}]
    code, message = runner.failure(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert code == "out_of_memory" and "smaller width" in message and "offload" in message
    assert runner.cache.loaded() == []


def test_pipeline_cache_loads_once_and_release_empties_it():
    cache = JobRunner().cache
    calls = []
    key = (("/m/highlight", "/m/shadow"), "cuda", "float16")
    for _ in range(3):
        pipeline = cache.get(key, lambda: calls.append(1) or object())
    assert len(calls) == 1 and cache.get(key, lambda: None) is pipeline
    cache.release()
    assert cache.loaded() == []


def test_session_status_lists_running_and_queued(tmp_path, small_png):
    events: list[protocol.Event] = []
    gate = threading.Event()

    class SlowRunner(JobRunner):
        def run(self, job, progress, should_cancel):
            gate.wait(TIMEOUT)
            return {}

    session = Session(events.append, SlowRunner())
    for job_id in ("a", "b"):
        session.handle(protocol.parse_request(convert(job_id, small_png, tmp_path / f"{job_id}.exr")))
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:  # until the worker has picked up "a"
        session.handle(protocol.Status("s"))
        if events[-1].jobs[0]["state"] == "running":
            break
    gate.set()
    session.finish()
    session.close()
    assert events[-3].jobs == [{"job": "a", "kind": "convert", "state": "running"},
                               {"job": "b", "kind": "convert", "state": "queued"}]
    assert [type(e).__name__ for e in events if not isinstance(e, protocol.StatusReport)] == [
        "Accepted", "Accepted", "Done", "Done"]

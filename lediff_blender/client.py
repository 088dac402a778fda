"""Backend client: starts or reaches the backend, speaks protocol v1, and never blocks Blender.

Stdlib only; knows nothing of panels or worlds. Two transports with one face:

- ``_ProcessTransport`` runs ``<python> -m lediff_backend.server`` as a child process: requests
  go to its stdin through a writer thread, its stdout lines come back through a reader thread,
  and a third thread keeps the last lines of its stderr for error messages;
- ``_HttpTransport`` talks to ``lediff serve --http`` on another machine (token required):
  input files are uploaded, events long-polled, results downloaded to the job's local output.

Both feed one queue from background threads, so ``BackendClient.poll()`` (called by the
add-on's timer pump) only drains that queue, at most ``MAX_ITEMS_PER_POLL`` items, and checks
deadlines: it never waits. Requests made before ``ready`` wait in the client and go out once
the handshake has passed.

Whatever goes wrong with the backend itself comes out of ``poll()`` as protocol ``Error``
events with code ``CLIENT_ERROR``, one per job in flight (or one with ``job`` None), so callers
handle it like any other job error:

- no ``ready`` within ``ready_timeout`` seconds of starting (a silent or hung backend);
- a line that is not a protocol event (a garbage-writing process, the wrong interpreter);
- ``ready`` with another protocol version (the message says what to update);
- the process exits or the connection fails (the message ends with the stderr tail);
- a request with no reply within ``reply_timeout`` seconds (a submit never ``accepted``), or a
  cancelled job still running ``reply_timeout`` seconds after the cancel.

After such a failure the transport is stopped; the next request starts a fresh one, so a dead
backend is restarted by the next job. Settings that cannot work at all (no interpreter, a
malformed URL) raise ``BackendUnavailable`` at once instead.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass

from . import protocol

__all__ = ["CLIENT_ERROR", "BackendConfig", "BackendUnavailable", "BackendClient", "Handshake", "list_models",
           "child_environment"]

CLIENT_ERROR = "backend"  # the code of errors the client reports itself (not one of protocol.ERROR_CODES)
MAX_LINE = 1 << 20  # bytes; a longer stdout line is not protocol
MAX_ITEMS_PER_POLL = 200  # bounds the time one poll() can take, whatever the backend floods us with
STDERR_TAIL_LINES = 12
STOP_TIMEOUT = 2.0  # seconds a backend gets to exit after ``shutdown`` before it is killed
HTTP_POLL_WAIT = 5.0  # seconds one long-poll of /events waits


class BackendUnavailable(Exception):
    """No backend can be started or reached with these settings; the message says why."""


@dataclass(frozen=True)
class BackendConfig:
    """How to reach the backend: a local interpreter, or a remote URL with its token."""

    python: str = ""
    url: str = ""
    token: str = ""
    model_dir: str = ""
    device: str = "auto"
    ready_timeout: float = 30.0
    reply_timeout: float = 15.0

    @property
    def remote(self) -> bool:
        return bool(self.url)

    def problem(self) -> str | None:
        """Why these settings cannot give a backend, or None."""
        if self.remote:
            if urllib.parse.urlsplit(self.url).scheme not in ("http", "https"):
                return f"the remote backend URL must start with http:// or https://, not {self.url!r}"
            if not self.token:
                return "the remote backend needs its token (add-on preferences)"
            return None
        if not self.python:
            return "set the backend's Python interpreter in the add-on preferences"
        if not os.path.isfile(self.python):
            return f"the backend's Python interpreter does not exist: {self.python}"
        return None


@dataclass(frozen=True)
class Handshake:
    """What ``BackendClient.handshake`` learnt: the backend's ``ready`` and ``status`` answers."""

    ready: protocol.Ready
    status: protocol.StatusReport


# Transports ------------------------------------------------------------------------------------
# Each has ``items`` (a queue of ("line", bytes), ("event", dict) or ("closed", message)),
# ``send(request)``, ``stderr_tail()`` and ``close(graceful)``; none of them blocks the caller.


def child_environment() -> dict[str, str]:
    """This process's environment without Blender's Python settings, for the backend's interpreter."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}


def _child_options() -> dict:
    """Popen options that keep the backend out of Blender's console and its Ctrl-C."""
    if sys.platform == "win32":
        return {"creationflags": subprocess.CREATE_NO_WINDOW | subprocess.CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


class _ProcessTransport:
    """A backend child process speaking JSON lines on stdin/stdout."""

    def __init__(self, config: BackendConfig) -> None:
        command = [config.python, "-m", "lediff_backend.server", "--device", config.device]
        if config.model_dir:
            command += ["--model-dir", config.model_dir]
        try:
            self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, env=child_environment(), **_child_options())
        except OSError as exc:
            raise BackendUnavailable(f"cannot start the backend with {config.python}: {exc}") from None
        self.items: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        self._stderr_done = threading.Event()
        for target in (self._read_stderr, self._read_stdout, self._write_stdin):
            threading.Thread(target=target, name=f"lediff-client{target.__name__}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, request: protocol.Request) -> None:
        self._outbox.put(protocol.encode_line(request))

    def stderr_tail(self) -> str:
        return "\n".join(self._stderr)

    def close(self, graceful: bool) -> None:
        """Stop the process: ``shutdown`` and a short wait when graceful, then kill."""
        if graceful and self._process.poll() is None:
            self.send(protocol.Shutdown("shutdown"))
            self._outbox.put(None)  # then close stdin
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        if self._process.poll() is None:
            self._process.kill()
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        self._outbox.put(None)

    def _write_stdin(self) -> None:
        stream = self._process.stdin
        try:
            while (data := self._outbox.get()) is not None:
                stream.write(data)
                stream.flush()
        except (OSError, ValueError):
            pass  # the process is gone; the stdout reader reports its exit
        finally:
            try:
                stream.close()
            except (OSError, ValueError):
                pass

    def _read_stdout(self) -> None:
        try:
            while line := self._process.stdout.readline(MAX_LINE):
                self.items.put(("line", line))
        except (OSError, ValueError):
            pass
        self._stderr_done.wait(STOP_TIMEOUT)
        try:
            code = self._process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        said = "closed its output" if code is None else f"exited with status {code}"
        self.items.put(("closed", f"the backend {said}"))

    def _read_stderr(self) -> None:
        try:
            for raw in self._process.stderr:
                self._stderr.append(raw.decode("utf-8", "replace").rstrip())
        except (OSError, ValueError):
            pass
        finally:
            self._stderr_done.set()


class _HttpTransport:
    """``lediff serve --http``: POST /requests, long-polled GET /events, uploads and results."""

    def __init__(self, config: BackendConfig) -> None:
        self._base = config.url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {config.token}"}
        self._outputs: dict[str, str] = {}  # job id -> the local output path the caller asked for
        self._closed = threading.Event()
        self.items: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        for target in (self._send_loop, self._poll_loop):
            threading.Thread(target=target, name=f"lediff-http{target.__name__}", daemon=True).start()

    def send(self, request: protocol.Request) -> None:
        self._outbox.put(request)

    def stderr_tail(self) -> str:
        return ""

    def close(self, graceful: bool) -> None:
        self._closed.set()
        self._outbox.put(None)

    def _call(self, method: str, path: str, body: bytes | None = None, timeout: float = 30.0):
        request = urllib.request.Request(self._base + path, data=body, method=method, headers=self._headers)
        return urllib.request.urlopen(request, timeout=timeout)

    def _fail(self, exc: Exception) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if isinstance(exc, urllib.error.HTTPError) and exc.code == 401:
            message = f"the remote backend at {self._base} refused the token"
        elif isinstance(exc, urllib.error.HTTPError):
            message = f"the remote backend at {self._base} answered HTTP {exc.code}: {exc.read(300)!r}"
        elif isinstance(exc, urllib.error.URLError):
            message = f"cannot reach the remote backend at {self._base}: {exc.reason}"
        else:
            message = f"lost the remote backend at {self._base}: {type(exc).__name__}: {exc}"
        self.items.put(("closed", message))

    def _send_loop(self) -> None:
        while (request := self._outbox.get()) is not None:
            try:
                if isinstance(request, protocol.Submit):
                    request = protocol.Submit(request.id, self._remote_job(request.id, request.job))
                self._call("POST", "/requests", protocol.encode_line(request)).close()
            except Exception as exc:  # any failure ends this transport; the client reports it
                self._fail(exc)
                return

    def _remote_job(self, job_id: protocol.RequestId, job: protocol.Job) -> protocol.Job:
        """The job with its input files uploaded; the server keeps only the output's file name."""
        params = dict(job.params)
        types = job.param_types()
        for name, value in job.params.items():
            if types.get(name) == protocol.FILE:
                params[name] = self._upload(value)
            elif types.get(name) == protocol.FILES:
                params[name] = [self._upload(path) for path in value]
        if job.output is not None:
            self._outputs[str(job_id)] = job.output
        return protocol.Job(job.kind, params, job.output)

    def _upload(self, path: str) -> str:
        name = urllib.parse.quote(os.path.basename(path))
        with open(path, "rb") as f, self._call("POST", f"/uploads?name={name}", f.read()) as response:
            return json.loads(response.read())["path"]

    def _poll_loop(self) -> None:
        after = 0
        while not self._closed.is_set():
            try:
                with self._call("GET", f"/events?after={after}&wait={HTTP_POLL_WAIT:g}",
                                timeout=HTTP_POLL_WAIT + 30) as response:
                    answer = json.loads(response.read())
                for event in answer["events"]:
                    self.items.put(("event", self._localise(event)))
                after = answer["next"]
            except Exception as exc:  # any failure ends this transport; the client reports it
                self._fail(exc)
                return

    def _localise(self, event: dict) -> dict:
        """A ``done`` of ours with its result downloaded to the local output path."""
        local = self._outputs.pop(str(event.get("job")), None) if event.get("event") == "done" else None
        if local is None:
            return event
        try:
            folder = os.path.dirname(local) or "."
            fd, partial = tempfile.mkstemp(prefix=".lediff-", suffix=".part", dir=folder)
            with os.fdopen(fd, "wb") as out, self._call("GET", f"/jobs/{event['job']}/result") as response:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, local)
        except Exception as exc:
            return {"event": "error", "job": event["job"], "code": CLIENT_ERROR,
                    "message": f"the result could not be downloaded from {self._base}: {exc}"}
        return {**event, "output": local}


# Client ----------------------------------------------------------------------------------------


class BackendClient:
    """One backend at a time for the add-on; see the module docstring for the failure rules."""

    def __init__(self, config: BackendConfig) -> None:
        self.config = config
        self._transport: _ProcessTransport | _HttpTransport | None = None
        self._ready: protocol.Ready | None = None
        self._ready_deadline = 0.0
        self._pending: list[protocol.Request] = []  # waiting for ``ready``
        self._deadlines: dict[protocol.RequestId, float] = {}  # requests sent, not yet answered
        self._stop_deadlines: dict[protocol.RequestId, float] = {}  # cancelled jobs, not yet ended
        self._jobs: set[protocol.RequestId] = set()  # submitted, not yet done or failed
        self._sent: set[protocol.RequestId] = set()
        self._later: list[protocol.Event] = []  # events made here, handed out by the next poll
        self._prefix = uuid.uuid4().hex[:8]
        self._counter = itertools.count(1)

    @property
    def ready(self) -> protocol.Ready | None:
        """The backend's ``ready`` once the handshake has passed, else None."""
        return self._ready

    @property
    def pid(self) -> int | None:
        """The local backend's process id while it runs (None when remote or stopped)."""
        return self._transport.pid if isinstance(self._transport, _ProcessTransport) else None

    def start(self) -> None:
        """Start (or reach) the backend unless it is up; BackendUnavailable if it cannot be."""
        if self._transport is not None:
            return
        problem = self.config.problem()
        if problem:
            raise BackendUnavailable(problem)
        transport = _HttpTransport if self.config.remote else _ProcessTransport
        self._transport = transport(self.config)
        self._ready = None
        self._ready_deadline = time.monotonic() + self.config.ready_timeout

    def submit(self, job: protocol.Job) -> protocol.RequestId:
        """Submit ``job`` (starting the backend if needed); returns the job id at once."""
        self.start()
        request = protocol.Submit(self._new_id(), job)
        self._jobs.add(request.id)
        self._send(request)
        return request.id

    def cancel(self, job_id: protocol.RequestId) -> None:
        """Ask for ``job_id`` to end; its ``error`` with code ``cancelled`` comes through ``poll``."""
        if job_id not in self._jobs:
            return
        waiting = [r for r in self._pending if isinstance(r, protocol.Submit) and r.id == job_id]
        if waiting:  # never reached the backend
            self._pending.remove(waiting[0])
            self._jobs.discard(job_id)
            self._deadlines.pop(job_id, None)
            self._later.append(protocol.Error(job_id, "cancelled", "cancelled before the backend started it"))
        else:
            self._send(protocol.Cancel(self._new_id(), job_id))
            self._stop_deadlines[job_id] = time.monotonic() + self.config.reply_timeout

    def release(self) -> protocol.RequestId | None:
        """Ask a running backend to free its cached pipelines and GPU memory (``released`` follows)."""
        if self._transport is None:
            return None
        request = protocol.Release(self._new_id())
        self._send(request)
        return request.id

    def status(self) -> protocol.RequestId:
        """Ask for the backend's status (starting it if needed); ``status`` follows."""
        self.start()
        request = protocol.Status(self._new_id())
        self._send(request)
        return request.id

    def poll(self) -> list[protocol.Event]:
        """The events that arrived since the last call, about this client's requests; never waits."""
        events, self._later = self._later, []
        if self._transport is None:
            return events
        for _ in range(MAX_ITEMS_PER_POLL):
            try:
                kind, payload = self._transport.items.get_nowait()
            except queue.Empty:
                break
            if kind == "closed":
                return events + self._fail(payload)
            failure = self._receive(payload, events)
            if failure:
                return events + self._fail(failure)
        now = time.monotonic()
        if self._ready is None and now > self._ready_deadline:
            return events + self._fail(f"the backend did not say 'ready' within {self.config.ready_timeout:g} s "
                                       "of starting (is the interpreter in the preferences the backend's?)")
        if any(now > deadline for deadline in self._deadlines.values()):
            return events + self._fail(f"the backend did not answer a request within {self.config.reply_timeout:g} s")
        if any(now > deadline for deadline in self._stop_deadlines.values()):
            return events + self._fail(f"the backend did not stop a cancelled job within "
                                       f"{self.config.reply_timeout:g} s, so it was stopped itself")
        return events

    def handshake(self, timeout: float | None = None) -> Handshake:
        """Block until the backend is ready and has answered ``status``: the "Test Backend" button.

        Waits at most ``timeout`` seconds (default: both timeouts); BackendUnavailable on failure.
        Only for when no job is in flight: events about other requests are dropped.
        """
        request_id = self.status()
        timeout = timeout or self.config.ready_timeout + self.config.reply_timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.poll():
                if isinstance(event, protocol.StatusReport) and event.id == request_id:
                    return Handshake(self._ready, event)
                if isinstance(event, protocol.Error):
                    raise BackendUnavailable(event.message)
            time.sleep(0.02)
        self._fail("no status answer in time")
        raise BackendUnavailable(f"the backend did not answer within {timeout:g} s")

    def close(self) -> None:
        """Stop the backend (``shutdown``, then kill if it lingers); the next request starts another."""
        if self._transport is not None:
            self._transport.close(graceful=True)
        self._reset()

    # Internals --------------------------------------------------------------------------------

    def _new_id(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"

    def _send(self, request: protocol.Request) -> None:
        self._sent.add(request.id)
        if self._ready is None:
            self._pending.append(request)
            return
        self._transport.send(request)
        if not isinstance(request, protocol.Cancel):  # a cancel's answer is the job's own error
            self._deadlines[request.id] = time.monotonic() + self.config.reply_timeout

    def _receive(self, payload: bytes | dict, events: list[protocol.Event]) -> str | None:
        """Handle one line or decoded event; a failure message when the backend misbehaved."""
        try:
            data = json.loads(payload) if isinstance(payload, bytes) else payload
            if isinstance(data, dict) and data.get("event") == "ready" and data.get("protocol") != protocol.PROTOCOL_VERSION:
                return (f"the backend speaks protocol {data.get('protocol')!r} and this add-on protocol "
                        f"{protocol.PROTOCOL_VERSION}: install matching versions of the add-on and the backend "
                        "(Create Backend Environment does)")
            event = protocol.parse_event(data)
        except (ValueError, TypeError):
            return f"the backend wrote something that is not the LEDiff protocol: {_preview(payload)}"
        if isinstance(event, protocol.Ready):
            self._ready = event
            pending, self._pending = self._pending, []
            for request in pending:
                self._send(request)
            return None
        if self._ready is None:
            return f"the backend sent {event.event!r} before 'ready'"
        if self._track(event):
            events.append(event)
        return None

    def _track(self, event: protocol.Event) -> bool:
        """Bookkeeping for one event; False for events about requests this client did not send."""
        about = getattr(event, "job", None) if isinstance(event, (protocol.Accepted, protocol.Progress,
                                                                   protocol.Done, protocol.Error)) else event.id
        if about is None:
            return isinstance(event, protocol.Error)  # a bad_request whose id could not be read
        if about not in self._sent:
            return False
        self._deadlines.pop(about, None)
        if isinstance(event, (protocol.Done, protocol.Error)):
            self._jobs.discard(about)
            self._stop_deadlines.pop(about, None)
        return True

    def _fail(self, message: str) -> list[protocol.Error]:
        """Stop the transport after a failure; one Error per job in flight (or one without a job)."""
        tail = self._transport.stderr_tail() if self._transport is not None else ""
        if self._transport is not None:
            self._transport.close(graceful=False)
        if tail:
            message = f"{message}; its last words:\n{tail}"
        jobs = sorted(self._jobs, key=str)
        self._reset()
        return [protocol.Error(job, CLIENT_ERROR, message) for job in jobs] or [protocol.Error(None, CLIENT_ERROR, message)]

    def _reset(self) -> None:
        self._transport = None
        self._ready = None
        self._pending.clear()
        self._deadlines.clear()
        self._stop_deadlines.clear()
        self._jobs.clear()


def list_models(config: BackendConfig, timeout: float = 60.0) -> list[str] | None:
    """Names of the complete models a local backend finds (``lediff models list``); None if remote."""
    if config.remote:
        return None
    command = [config.python, "-m", "lediff_backend.cli", "models", "list"]
    if config.model_dir:
        command += ["--model-dir", config.model_dir]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=child_environment(),
                                **_child_options())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BackendUnavailable(f"listing the models failed: {exc}") from None
    if result.returncode != 0:
        raise BackendUnavailable(f"listing the models failed: {result.stderr.strip()[-300:]}")
    return re.findall(r"(?m)^(\S+) {2,}ok\b", result.stdout)


def _preview(payload: bytes | dict, limit: int = 80) -> str:
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else json.dumps(payload)
    text = text.strip()
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


"""The backend server: protocol v1 (DESIGN.md) over stdin/stdout, ``lediff serve``.

``Session`` is the core both transports share (``http_server`` is the other): requests in,
events out through one thread-safe ``emit``. Jobs are checked before ``accepted``, then queued
for one worker thread that runs them in order; ``cancel`` sets the job's flag (the engine checks
it between chunks or steps) or drops a queued job.

``serve_stdio`` keeps the real stdout for protocol lines and points fd 1, ``sys.stdout`` and
logging at stderr before anything else runs (tqdm and the diffusers/transformers loggers write
to stderr already), so a library's ``print`` cannot corrupt the stream. ``ready`` is the first
line and comes at once: torch and numpy are imported only by the job that needs them. A reader
thread takes stdin in bounded chunks (an over-long line is discarded as it streams in). The
process exits 0 on ``shutdown``, a closed stdout or SIGTERM, cancelling the running job (its
atomic output leaves nothing behind), and on end of stdin once the queued jobs have run.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterator

from . import __version__
from .errors import LediffError
from .jobs import JobRunner, available_devices
from .protocol import (
    PROTOCOL_VERSION, Accepted, Cancel, Done, Error, Event, InvalidRequest, Job, Ping, Pong,
    Progress, Ready, Release, Released, Request, RequestId, Shutdown, Status, StatusReport, Submit,
    decode_request, encode_line,
)

__all__ = ["Session", "serve_stdio", "take_stdout", "stop_on_sigterm", "wait_for_stop", "MAX_LINE"]

log = logging.getLogger(__name__)

MAX_LINE = 1 << 20  # bytes in one request line
CHUNK = 1 << 16
CLOSE_TIMEOUT = 10.0  # seconds a cancelled job gets to unwind (and delete its temporary file)


@dataclass
class _Entry:
    id: RequestId
    job: Job
    cancel: threading.Event = field(default_factory=threading.Event)


class Session:
    """Requests -> events, with one worker thread running jobs in order.

    ``admit`` lets a transport rewrite or refuse a submitted job before the runner checks it
    (HTTP confines paths to its work folder); it raises LediffError to refuse.
    """

    def __init__(self, emit: Callable[[Event], None], runner: JobRunner,
                 admit: Callable[[Job], Job] = lambda job: job) -> None:
        self._emit = emit
        self._runner = runner
        self._admit = admit
        self._cond = threading.Condition()
        self._queue: deque[_Entry] = deque()
        self._running: _Entry | None = None
        self._closed = False
        self._worker = threading.Thread(target=self._work, name="lediff-worker", daemon=True)
        self._worker.start()

    def ready(self) -> Ready:
        return Ready(PROTOCOL_VERSION, __version__, available_devices())

    def handle_line(self, line: bytes) -> bool:
        """Handle one raw request line; False once the server should stop."""
        try:
            request = decode_request(line)
        except InvalidRequest as exc:
            self.reject(exc)
            return True
        try:
            return self.handle(request)
        except Exception as exc:  # a bug (or a full disk) answers this request, not the whole server
            log.error("request %r failed", request.id, exc_info=exc)
            self._send(Error(request.id, "internal", f"{type(exc).__name__}: {exc}"))
            return True

    def handle(self, request: Request) -> bool:
        """Handle one request; False for ``shutdown`` (which has no reply)."""
        if isinstance(request, Shutdown):
            return False
        handlers = {Ping: self._ping, Submit: self._submit, Cancel: self._cancel,
                    Status: self._status, Release: self._release}
        handlers[type(request)](request)
        return True

    def reject(self, exc: InvalidRequest) -> None:
        self._send(Error(exc.request_id, exc.code, str(exc)))

    def finish(self) -> None:
        """Block until every queued job has run (or the session is closed)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or (not self._queue and self._running is None))

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Run nothing more: drop queued jobs, cancel the running one, wait for it to unwind."""
        with self._cond:
            self._closed = True
            self._queue.clear()
            if self._running is not None:
                self._running.cancel.set()
            self._cond.notify_all()
        self._worker.join(timeout)

    def _send(self, event: Event) -> None:
        if not self._closed:
            self._emit(event)

    # Requests ---------------------------------------------------------------------------------

    def _ping(self, request: Ping) -> None:
        self._send(Pong(request.id))

    def _submit(self, request: Submit) -> None:
        try:
            job = self._runner.check(self._admit(request.job))
        except LediffError as exc:
            self._send(Error(request.id, exc.code, str(exc)))
            return
        with self._cond:
            if self._find(request.id) is not None:
                message = f"a job with id {request.id!r} is already queued or running"
                self._send(Error(request.id, "bad_request", message))
                return
            self._send(Accepted(request.id))  # before the worker can see the job
            self._queue.append(_Entry(request.id, job))
            self._cond.notify()

    def _cancel(self, request: Cancel) -> None:
        with self._cond:
            entry = self._find(request.job)
            if entry is None:
                self._send(Error(request.id, "bad_request", f"no queued or running job {request.job!r}"))
            elif entry is self._running:
                entry.cancel.set()
            else:
                self._queue.remove(entry)
                self._send(Error(entry.id, "cancelled", "cancelled before it started"))

    def _status(self, request: Status) -> None:
        with self._cond:
            jobs = [{"job": e.id, "kind": e.job.kind, "state": "queued"} for e in self._queue]
            if self._running is not None:
                jobs.insert(0, {"job": self._running.id, "kind": self._running.job.kind, "state": "running"})
        device, loaded = self._runner.resolved_device(), self._runner.cache.loaded()
        self._send(StatusReport(request.id, jobs, device, loaded))

    def _release(self, request: Release) -> None:
        self._runner.cache.release()
        self._send(Released(request.id))

    def _find(self, job_id: RequestId) -> _Entry | None:
        running = [self._running] if self._running is not None else []
        return next((e for e in [*running, *self._queue] if e.id == job_id), None)

    # Worker -----------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                entry = self._running = self._queue.popleft()
            outcome = self._run(entry)
            with self._cond:  # a status after the job's last event no longer lists it
                self._running = None
                self._send(outcome)
                self._cond.notify_all()

    def _run(self, entry: _Entry) -> Done | Error:
        def progress(stage: str, step: int, total: int, preview: str | None = None) -> None:
            fraction = round(step / total, 4) if total > 0 else 0.0
            self._send(Progress(entry.id, stage, step, total, fraction, preview))

        start = time.perf_counter()
        try:
            meta = self._runner.run(entry.job, progress, entry.cancel.is_set)
        except Exception as exc:  # every failure becomes an error event; the server keeps serving
            return Error(entry.id, *self._runner.failure(exc))
        return Done(entry.id, entry.job.output, meta, round(time.perf_counter() - start, 3))


# stdio transport --------------------------------------------------------------------------------


def take_stdout() -> int:
    """Keep the real stdout (returned as a new fd) for protocol lines; send everything else to stderr."""
    sys.stdout.flush()
    fd = os.dup(1)
    os.dup2(2, 1)  # C extensions and child processes writing to fd 1 land on stderr too
    sys.stdout = sys.stderr
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return fd


class LineWriter:
    """Thread-safe writer of protocol lines to a raw fd; calls ``on_broken`` once the reader is gone."""

    def __init__(self, fd: int, on_broken: Callable[[], None]) -> None:
        self._fd = fd
        self._on_broken = on_broken
        self._lock = threading.Lock()
        self._broken = False

    def __call__(self, message: Event) -> None:
        data = memoryview(encode_line(message))
        with self._lock:
            if self._broken:
                return
            try:
                while data:
                    data = data[os.write(self._fd, data):]
            except OSError:
                self._broken = True
                self._on_broken()


def read_lines(fd: int, limit: int = MAX_LINE) -> Iterator[bytes | None]:
    """Lines from ``fd`` without their newline, read ``CHUNK`` bytes at a time.

    A line longer than ``limit`` yields None; it is discarded as it streams in, so memory stays
    bounded by ``limit + CHUNK`` whatever the peer sends.
    """
    pending = bytearray()
    discarding = False
    while chunk := os.read(fd, CHUNK):
        *complete, rest = chunk.split(b"\n")
        for piece in complete:
            if discarding or len(pending) + len(piece) > limit:
                yield None
            else:
                yield bytes(pending + piece)
            pending.clear()
            discarding = False
        if not discarding:
            pending += rest
            if len(pending) > limit:
                discarding = True
                pending.clear()
    if discarding:
        yield None
    elif pending:
        yield bytes(pending)


def stop_on_sigterm(stop: threading.Event) -> None:
    """Let SIGTERM set ``stop`` (call from the main thread before saying ``ready``)."""
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())


def wait_for_stop(stop: threading.Event) -> None:
    """Block until ``stop`` is set, by another thread, SIGTERM or Ctrl-C."""
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass


def _read_requests(fd: int, session: Session, stop: threading.Event) -> None:
    try:
        for line in read_lines(fd):
            if line is None:
                session.reject(InvalidRequest(f"request line longer than {MAX_LINE} bytes; discarded"))
            elif line.strip() and not session.handle_line(line):
                return
        session.finish()
    finally:
        stop.set()


def serve_stdio(runner: JobRunner, stdin_fd: int = 0) -> int:
    """Serve requests from ``stdin_fd`` until shutdown or end of input; returns the exit code 0."""
    out_fd = take_stdout()
    stop = threading.Event()
    stop_on_sigterm(stop)
    write = LineWriter(out_fd, on_broken=stop.set)
    session = Session(write, runner)
    write(session.ready())
    threading.Thread(target=_read_requests, args=(stdin_fd, session, stop), name="lediff-reader",
                     daemon=True).start()
    wait_for_stop(stop)
    session.close()
    return 0


if __name__ == "__main__":
    from .cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))

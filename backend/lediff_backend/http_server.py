"""``lediff serve --http HOST:PORT --token-file F``: protocol v1 over HTTP, for a remote GPU box.

The same requests and events as stdio, through the same ``server.Session``. Every request
needs ``Authorization: Bearer <token>`` (compared in constant time, else 401)::

    POST /requests               body: one request -> {"events": [this request's replies]}
    GET  /events?after=N&wait=S  long-poll -> {"events": [...], "next": M}; events count from 1
    POST /uploads?name=F         body: the file (at most --max-upload-mb) -> {"path": ...}
    GET  /jobs/<id>/result       the job's output file, once its ``done`` event is out

Client paths are never trusted: a job's input files must be uploads (files inside this server's
work folder), its output is put in the work folder under the client's file name (sanitised),
and the model folders are the server's own (``--model-dir``). The first stdout line is ``ready`` with
an extra ``url``. Binds a loopback address unless ``--allow-remote``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import tempfile
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import BadInput, BadRequest
from .jobs import JobRunner
from .protocol import FILE, FILES, FOLDER, Done, Error, Event, Job, encode_line
from .server import CHUNK, MAX_LINE, Session, stop_on_sigterm, take_stdout, wait_for_stop

__all__ = ["serve_http", "parse_address"]

log = logging.getLogger(__name__)

MAX_WAIT = 60.0  # seconds one long-poll may wait
DRAIN_LIMIT = 64 << 20  # refused bodies up to this size are read before the answer


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` (host 127.0.0.1) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise BadInput(f"--http wants HOST:PORT, not {text!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_name(name: str, default: str) -> str:
    """The last component of a client's file name, reduced to ``[A-Za-z0-9._-]``, never hidden."""
    base = re.split(r"[/\\]", name)[-1]
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base).lstrip(".")[:100]
    return base or default


class EventLog:
    """Every event, numbered from 1, kept for long-polling clients; the session's ``emit``.

    ``capture()`` also collects the events emitted by the calling thread, which are the
    synchronous replies to the request it is handling.
    """

    def __init__(self, keep: int = 10_000) -> None:
        self._cond = threading.Condition()
        self._events: deque[tuple[int, dict]] = deque(maxlen=keep)
        self._next = 1
        self._outputs: dict[str, str] = {}
        self._local = threading.local()

    def __call__(self, event: Event) -> None:
        data = json.loads(encode_line(event))
        with self._cond:
            self._events.append((self._next, data))
            self._next += 1
            if isinstance(event, Done) and event.output is not None:
                self._outputs[str(event.job)] = event.output
            self._cond.notify_all()
        replies = getattr(self._local, "replies", None)
        if replies is not None:
            replies.append(data)

    @contextlib.contextmanager
    def capture(self) -> Iterator[list[dict]]:
        self._local.replies = []
        try:
            yield self._local.replies
        finally:
            self._local.replies = None

    def since(self, after: int, wait: float) -> tuple[list[dict], int]:
        """Events numbered above ``after``, waiting up to ``wait`` seconds for the first."""
        with self._cond:
            self._cond.wait_for(lambda: self._next - 1 > after, timeout=wait)
            return [e for n, e in self._events if n > after], self._next - 1

    def output(self, job_id: str) -> str | None:
        with self._cond:
            return self._outputs.get(job_id)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str, work: Path, max_upload: int,
                 runner: JobRunner) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.token = token.encode("utf-8")
        self.uploads = work / "uploads"
        self.outputs = work / "outputs"
        self.uploads.mkdir(exist_ok=True)
        self.outputs.mkdir(exist_ok=True)
        self.max_upload = max_upload
        self.stop = threading.Event()
        self.events = EventLog()
        self.session = Session(self.events, runner, admit=self.confine)

    def confine(self, job: Job) -> Job:
        """The job with its paths held to the work folder; BadRequest for any other path."""
        if job.paths(FOLDER):
            raise BadRequest("over HTTP the model folders are the server's own (lediff serve --model-dir)")
        root = os.path.realpath(self.uploads)
        for name, path in job.paths(FILE, FILES):
            if os.path.commonpath([os.path.realpath(path), root]) != root:
                raise BadRequest(f"{job.kind}: '{name}' must be a file uploaded with POST /uploads")
        if job.output is None:
            return job
        folder = self.outputs / secrets.token_hex(8)
        folder.mkdir()
        return dataclasses.replace(job, output=str(folder / safe_name(job.output, f"{job.kind}.exr")))


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        if not self._authorized():
            return self._fail(401, "missing or wrong token (Authorization: Bearer ...)")
        result = re.fullmatch(r"/jobs/([^/]+)/result", url.path)
        if method == "POST" and url.path == "/requests":
            self._request()
        elif method == "POST" and url.path == "/uploads":
            self._upload(query.get("name", ""))
        elif method == "GET" and url.path == "/events":
            self._events(query)
        elif method == "GET" and result:
            self._result(unquote(result.group(1)))
        else:
            self._fail(404, f"no {method} {url.path}")

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.server.token)

    def _request(self) -> None:
        length = self._length(MAX_LINE)
        if length is None:
            return
        with self.server.events.capture() as replies:
            keep_serving = self.server.session.handle_line(self.rfile.read(length))
        self._json(200, {"events": replies})
        if not keep_serving:
            self.server.stop.set()

    def _upload(self, name: str) -> None:
        length = self._length(self.server.max_upload)
        if length is None:
            return
        path = self.server.uploads / f"{secrets.token_hex(8)}-{safe_name(name, 'upload')}"
        remaining = length
        with open(path, "xb") as f:
            while remaining and (chunk := self.rfile.read(min(CHUNK, remaining))):
                f.write(chunk)
                remaining -= len(chunk)
        if remaining:
            path.unlink()
            return self._fail(400, "upload ended before Content-Length bytes")
        self._json(201, {"path": str(path), "bytes": length})

    def _events(self, query: dict[str, str]) -> None:
        try:
            after = int(query.get("after", "0"))
            wait = min(max(float(query.get("wait", "25")), 0.0), MAX_WAIT)
        except ValueError:
            return self._fail(400, "'after' must be an integer and 'wait' a number of seconds")
        events, last = self.server.events.since(after, wait)
        self._json(200, {"events": events, "next": last})

    def _result(self, job_id: str) -> None:
        output = self.server.events.output(job_id)
        if output is None or not os.path.isfile(output):
            return self._fail(404, f"no result for job {job_id!r} (not done, or it writes no file)")
        with open(output, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", f'attachment; filename="{os.path.basename(output)}"')
            self.end_headers()
            while chunk := f.read(CHUNK):
                self.wfile.write(chunk)

    def _length(self, limit: int) -> int | None:
        """The body's declared length if it is present and within ``limit``; else answers and None."""
        text = self.headers.get("Content-Length", "")
        if not text.isdigit():
            self._fail(411, "Content-Length is required")
        elif int(text) > limit:
            self._discard(int(text))
            self._fail(413, f"body of {text} bytes is over the limit of {limit}")
        else:
            return int(text)
        return None

    def _discard(self, length: int) -> None:
        """Read and drop a refused body of up to ``DRAIN_LIMIT`` bytes.

        A client still sending when the answer comes and the socket closes sees a broken pipe
        instead of the 413; draining a moderate body lets it read the answer. Larger bodies
        are not read (the connection closes), so nobody can make the server read gigabytes.
        """
        if length > DRAIN_LIMIT:
            return
        while length > 0:
            chunk = self.rfile.read(min(CHUNK, length))
            if not chunk:
                return
            length -= len(chunk)

    def _fail(self, status: int, message: str) -> None:
        """An error answer; the connection closes, since an unread body may follow."""
        self.close_connection = True
        self._json(status, Error(None, "bad_request", message).to_dict(), {"Connection": "close"})

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status == 401:
            self.send_header("WWW-Authenticate", "Bearer")
        self.end_headers()
        self.wfile.write(data)


def _read_token(token_file: str) -> str:
    try:
        token = Path(token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise BadInput(f"cannot read the token file: {exc}") from None
    if not token:
        raise BadInput(f"the token file is empty: {token_file}")
    return token


@contextlib.contextmanager
def _work_folder(path: str | None) -> Iterator[Path]:
    """``path`` (created if needed), or a temporary folder removed at exit."""
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path).resolve()
        return
    with tempfile.TemporaryDirectory(prefix="lediff-serve-") as tmp:
        yield Path(tmp).resolve()


def serve_http(runner: JobRunner, address: str, token_file: str, *, allow_remote: bool = False,
               work_dir: str | None = None, max_upload: int = 512 << 20) -> int:
    """Serve protocol v1 over HTTP until a ``shutdown`` request or SIGTERM; returns 0."""
    host, port = parse_address(address)
    if not allow_remote and not is_loopback(host):
        raise BadInput(f"refusing to listen on {host}, which other machines can reach; "
                       "pass --allow-remote to mean it (the token is then all that guards the GPU)")
    token = _read_token(token_file)
    out_fd = take_stdout()
    with _work_folder(work_dir) as work:
        try:
            httpd = _Server((host, port), token, work, max_upload, runner)
        except OSError as exc:
            raise BadInput(f"cannot listen on {host}:{port}: {exc}") from None
        stop_on_sigterm(httpd.stop)
        ready = httpd.session.ready()
        httpd.events(ready)
        bound_host, bound_port = httpd.server_address[:2]
        url = f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}"
        os.write(out_fd, json.dumps({**ready.to_dict(), "url": url}).encode("utf-8") + b"\n")
        log.info("serving protocol v1 on %s, work folder %s", url, work)
        threading.Thread(target=httpd.serve_forever, name="lediff-http", daemon=True).start()
        wait_for_stop(httpd.stop)
        httpd.shutdown()
        httpd.session.close()
        httpd.server_close()
    return 0

"""The backend protocol, version 1: one JSON object per line, UTF-8 (see DESIGN.md).

Stdlib only and imported by both processes (the Blender add-on and the backend), so the message
schema has one source. Requests (``Ping``, ``Submit``, ``Cancel``, ``Status``, ``Release``,
``Shutdown``) and events (``Ready``, ``Pong``, ``Accepted``, ``Progress``, ``Done``, ``Error``,
``StatusReport``, ``Released``) are dataclasses with ``from_dict``/``to_dict``.
``decode_request`` turns one raw line into a request or raises ``InvalidRequest`` (a
``BadRequest`` that remembers the request's id when it could be read); ``encode_line`` turns any
message into one line. Unknown fields are ignored; unknown ops and job kinds are errors.

Job kinds and their params are a table (``JOB_KINDS``, ``COMMON_PARAMS``) of typed fields; path
fields must be absolute. Whether the files exist is the backend's check (``jobs.py``), not ours.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Union

from .errors import BadRequest

__all__ = [
    "PROTOCOL_VERSION", "ERROR_CODES", "JOB_KINDS", "COMMON_PARAMS", "KindSpec", "InvalidRequest",
    "Job", "Request", "Ping", "Submit", "Cancel", "Status", "Release", "Shutdown", "REQUESTS",
    "Event", "Ready", "Pong", "Accepted", "Progress", "Done", "Error", "StatusReport", "Released",
    "EVENTS", "decode_request", "parse_request", "parse_event", "encode_line",
]

PROTOCOL_VERSION = 1
ERROR_CODES = ("bad_request", "bad_input", "missing_weights", "out_of_memory", "cancelled", "internal")

RequestId = Union[str, int]

# Param types. FILE(S): absolute paths of input files; FOLDER: an absolute folder path.
TEXT, COUNT, INT, NUMBER, NUMBERS, BOOL = "text", "count", "int", "number", "numbers", "bool"
FILE, FILES, FOLDER = "file", "files", "folder"


@dataclass(frozen=True)
class KindSpec:
    """One job kind's own params: name -> type, and whether it writes ``output``."""

    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    writes_output: bool = True


COMMON_PARAMS = {
    "engine": TEXT, "model_dir": FOLDER, "steps": COUNT, "seed": INT,
    "guidance": NUMBER, "device": TEXT, "preview_every": INT,
}

JOB_KINDS = {
    "convert": KindSpec({"input": FILE}, {"width": COUNT, "half": BOOL, "sun_ev": NUMBER,
                                          "shadow_model_dir": FOLDER}),
    "panorama": KindSpec({"prompt": TEXT}, {"image": FILE, "width": COUNT}),
    "text2hdr": KindSpec({"prompt": TEXT}, {"width": COUNT, "height": COUNT, "shadow_model_dir": FOLDER}),
    "merge": KindSpec({"inputs": FILES}, {"ev": NUMBERS, "reference": INT, "response": TEXT, "half": BOOL}),
    "sun": KindSpec({"input": FILE}, writes_output=False),
}


class InvalidRequest(BadRequest):
    """A malformed request; ``request_id`` is its id when one could be read, else None."""

    def __init__(self, message: str, request_id: RequestId | None = None):
        super().__init__(message)
        self.request_id = request_id


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_path(value: Any) -> bool:
    return isinstance(value, str) and "\0" not in value and os.path.isabs(value)


_CHECKS = {
    TEXT: (lambda v: isinstance(v, str), "a string"),
    COUNT: (lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
    INT: (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    NUMBER: (_is_number, "a finite number"),
    NUMBERS: (lambda v: isinstance(v, list) and all(map(_is_number, v)), "a list of numbers"),
    BOOL: (lambda v: isinstance(v, bool), "true or false"),
    FILE: (_is_path, "an absolute path"),
    FILES: (lambda v: isinstance(v, list) and len(v) > 0 and all(map(_is_path, v)),
            "a non-empty list of absolute paths"),
    FOLDER: (_is_path, "an absolute path"),
}


def _valid_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= 200)


def _require_id(data: dict, name: str, request_id: RequestId | None) -> RequestId:
    value = data.get(name)
    if not _valid_id(value):
        raise InvalidRequest(f"'{name}' must be a non-empty string (at most 200 characters) or an integer",
                             request_id)
    return value


@dataclass
class Job:
    """What ``submit`` asks for: a kind, its params and (except for ``sun``) an output path."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    output: str | None = None

    @property
    def spec(self) -> KindSpec:
        return JOB_KINDS[self.kind]

    def param_types(self) -> dict[str, str]:
        return {**COMMON_PARAMS, **self.spec.required, **self.spec.optional}

    def paths(self, *types: str) -> list[tuple[str, str]]:
        """(param name, path) for every param of the given path types, in order."""
        found = []
        for name, kind in self.param_types().items():
            value = self.params.get(name)
            if kind in types and value is not None:
                found.extend((name, p) for p in (value if kind == FILES else [value]))
        return found

    @classmethod
    def from_dict(cls, data: Any, request_id: RequestId | None = None) -> Job:
        if not isinstance(data, dict):
            raise InvalidRequest("'job' must be an object with 'kind', 'params' and 'output'", request_id)
        kind = data.get("kind")
        if kind not in JOB_KINDS:
            raise InvalidRequest(f"unknown job kind {kind!r}; known: {', '.join(JOB_KINDS)}", request_id)
        spec = JOB_KINDS[kind]
        raw = data.get("params", {})
        if not isinstance(raw, dict):
            raise InvalidRequest("'params' must be an object", request_id)
        job = cls(kind)
        for name, kind_of in job.param_types().items():
            if name not in raw or (raw[name] is None and name not in spec.required):
                if name in spec.required:
                    raise InvalidRequest(f"{kind}: missing param '{name}'", request_id)
                continue
            check, expected = _CHECKS[kind_of]
            if not check(raw[name]):
                raise InvalidRequest(f"{kind}: param '{name}' must be {expected}", request_id)
            job.params[name] = raw[name]
        if kind == "merge" and "ev" in job.params and len(job.params["ev"]) != len(job.params["inputs"]):
            raise InvalidRequest("merge: 'ev' needs one value per input", request_id)
        if spec.writes_output:
            if not _is_path(data.get("output")):
                raise InvalidRequest(f"{kind}: 'output' must be an absolute path", request_id)
            job.output = data["output"]
        return job

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "params": dict(self.params)}
        if self.output is not None:
            out["output"] = self.output
        return out


# Requests ------------------------------------------------------------------------------------


@dataclass
class Request:
    """A request; subclasses add their own fields. ``op`` names the class on the wire."""

    id: RequestId
    op: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: dict) -> Request:
        return cls(id=_require_id(data, "id", None))

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "id": self.id}


@dataclass
class Ping(Request):
    op: ClassVar[str] = "ping"


@dataclass
class Submit(Request):
    job: Job
    op: ClassVar[str] = "submit"

    @classmethod
    def from_dict(cls, data: dict) -> Submit:
        request_id = _require_id(data, "id", None)
        return cls(id=request_id, job=Job.from_dict(data.get("job"), request_id))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "job": self.job.to_dict()}


@dataclass
class Cancel(Request):
    job: RequestId
    op: ClassVar[str] = "cancel"

    @classmethod
    def from_dict(cls, data: dict) -> Cancel:
        request_id = _require_id(data, "id", None)
        return cls(id=request_id, job=_require_id(data, "job", request_id))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "job": self.job}


@dataclass
class Status(Request):
    op: ClassVar[str] = "status"


@dataclass
class Release(Request):
    op: ClassVar[str] = "release"


@dataclass
class Shutdown(Request):
    op: ClassVar[str] = "shutdown"


REQUESTS: dict[str, type[Request]] = {c.op: c for c in (Ping, Submit, Cancel, Status, Release, Shutdown)}


def parse_request(data: Any) -> Request:
    """A request from a decoded JSON value, or InvalidRequest."""
    if not isinstance(data, dict):
        raise InvalidRequest(f"a request must be a JSON object, not {type(data).__name__}")
    request_id = data.get("id") if _valid_id(data.get("id")) else None
    op = data.get("op")
    if op not in REQUESTS:
        raise InvalidRequest(f"unknown op {op!r}; known: {', '.join(REQUESTS)}", request_id)
    return REQUESTS[op].from_dict(data)


def decode_request(line: bytes | str) -> Request:
    """A request from one raw line (UTF-8 JSON), or InvalidRequest."""
    if isinstance(line, bytes):
        try:
            line = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidRequest(f"request is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        data = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise InvalidRequest(f"request is not JSON: {exc}") from None
    return parse_request(data)


# Events --------------------------------------------------------------------------------------


@dataclass
class Event:
    """An event; ``event`` names the class on the wire."""

    event: ClassVar[str] = ""

    @classmethod
    def from_dict(cls, data: dict) -> Event:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.event, **asdict(self)}


@dataclass
class Ready(Event):
    protocol: int
    version: str
    devices: list[str]
    event: ClassVar[str] = "ready"


@dataclass
class Pong(Event):
    id: RequestId
    event: ClassVar[str] = "pong"


@dataclass
class Accepted(Event):
    job: RequestId
    event: ClassVar[str] = "accepted"


@dataclass
class Progress(Event):
    job: RequestId
    stage: str
    step: int
    total: int
    fraction: float
    preview: str | None = None
    event: ClassVar[str] = "progress"

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.preview is None:
            del out["preview"]
        return out


@dataclass
class Done(Event):
    job: RequestId
    output: str | None
    meta: dict[str, Any]
    seconds: float
    event: ClassVar[str] = "done"


@dataclass
class Error(Event):
    job: RequestId | None
    code: str
    message: str
    event: ClassVar[str] = "error"


@dataclass
class StatusReport(Event):
    id: RequestId
    jobs: list[dict[str, Any]]
    device: str
    loaded: list[Any]
    event: ClassVar[str] = "status"


@dataclass
class Released(Event):
    id: RequestId
    event: ClassVar[str] = "released"


EVENTS: dict[str, type[Event]] = {
    c.event: c for c in (Ready, Pong, Accepted, Progress, Done, Error, StatusReport, Released)
}


def parse_event(data: dict) -> Event:
    """An event from a decoded JSON object (the client side); unknown events are ValueError."""
    cls = EVENTS.get(data.get("event")) if isinstance(data, dict) else None
    if cls is None:
        raise ValueError(f"not a protocol {PROTOCOL_VERSION} event: {data!r:.200}")
    return cls.from_dict(data)


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars/arrays via ``tolist``, tuples as lists, NaN/inf as None."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def encode_line(message: Request | Event) -> bytes:
    """One protocol line, UTF-8, newline-terminated; values JSON cannot hold become strings."""
    text = json.dumps(_plain(message.to_dict()), ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, default=str)
    return text.encode("utf-8") + b"\n"

"""Property-based fuzzing of every read endpoint against a real server process.

One ``addonreg serve`` process (SQLite under a temporary directory, seeded
with ``addonreg import``) is started for the module; hypothesis throws
requests at it with the standard library's ``http.client``, synchronously.

Safety properties, for *every* request (:func:`check_safe`):

* never a 5xx, never a redirect other than ``304``, and an answer always
  comes (no hang, no connection closed without a response);
* every 4xx carries the contract's error body
  ``{"code": <status>, "errno": int, "error": str, "message": str, "details"?: {}}``
  (MessagePack when the response says ``application/msgpack``, JSON
  otherwise), with an errno of the documented table for that status
  (``docs/errors.md``), and ``405`` carries ``Allow``;
* no traceback text anywhere in a response;
* 2xx bodies parse (strict JSON: no ``NaN``), ``304``/``HEAD`` have none.

Correctness properties, for structured *nearly valid* requests (valid and
almost-valid add-on ids and hashes, percent-encodings, lists of 0..1100
items, wrong types, huge numbers): the answer is the one an independent model
of the contract (``api-v1.md`` plus the choices recorded in ``docs/api.md``)
predicts, against the registrations seeded at start.

Bugs the fuzzers found are pinned in test_known_bugs.py, each by its minimal
reproduction: regression tests for the fixed ones, strict ``xfail`` tests for
the open ones (they XPASS, and so fail, once fixed: then drop the marker).
The open ones sit below the application (malformed HTTP framing refused by
Tornado, a shutdown counter): the generators send only well-formed HTTP, so
the fuzzers themselves stay strict.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import msgpack
from hypothesis import HealthCheck, currently_in_test_context, event, settings

from tests.conftest import ServerProcess

TIMEOUT = 10.0  # seconds without an answer = the server hangs: a failure

FUZZ = settings(
    max_examples=250,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
FUZZ_SMALL = settings(FUZZ, max_examples=150)


# Seed data -------------------------------------------------------------------------


def _h(n: int) -> str:
    return hashlib.sha256(b"addonreg-fuzz-%d" % n).hexdigest()


# (addon_id, sha256 as written to the import file, version)
SEEDS: List[Tuple[str, str, Optional[str]]] = [
    ("fx@example.com", _h(1), "1.0"),
    ("fx@example.com", "sha256:" + _h(2).upper(), "2.0b1 \u00fc\u2603"),
    ("{d9f5c8a2-0b3e-4c1d-9e7f-123456789abc}", _h(3), None),
    ("{D9F5C8A2-0B3E-4C1D-9E7F-123456789ABD}", "sha256:" + _h(4), "3"),
    ("@empty-local.example", _h(5), "0"),
    ("a.b_c-d@x-y.z_", _h(6), None),
    ("Mixed.Case@Example.COM", _h(7), "7"),
    ("p" * 240 + "@long.example", _h(8), "x" * 255),
]
SEED_IDS = sorted({a for a, _, _ in SEEDS})
SEED_SHAS = sorted({s.split(":")[-1].lower() for _, s, _ in SEEDS})


# An independent model of the identifier rules ---------------------------------------

_GUID = re.compile(
    r"\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}"
)
_EMAIL = re.compile(r"[a-zA-Z0-9._-]*@[a-zA-Z0-9._-]+")
_SHA = re.compile(r"(?:[sS][hH][aA]256:)?([0-9a-fA-F]{64})")


def valid_id(value: Any) -> bool:
    return (
        type(value) is str
        and 1 <= len(value) <= 255
        and (_GUID.fullmatch(value) is not None or _EMAIL.fullmatch(value) is not None)
    )


def norm_sha(value: Any) -> Optional[str]:
    if type(value) is not str:
        return None
    m = _SHA.fullmatch(value)
    return m.group(1).lower() if m else None


# HTTP ------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    url: str
    headers: Sequence[Tuple[str, str]] = ()
    body: Optional[bytes] = None
    chunks: Optional[Sequence[bytes]] = None  # send the body chunked, in these pieces

    @property
    def path(self) -> str:
        return self.url.split("?", 1)[0]

    def header(self, name: str) -> Optional[str]:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None

    def describe(self) -> str:
        body = self.body if self.chunks is None else b"".join(self.chunks)
        text = (
            f"{self.method} {self.url!r}\n  headers={list(self.headers)!r}"
            + (f"\n  chunks={[len(c) for c in self.chunks]}" if self.chunks is not None else "")
            + (
                ""
                if body is None
                else f"\n  body={body[:1500]!r}" + ("..." if len(body) > 1500 else "")
            )
        )
        return text


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name)


class Http:
    """One keep-alive connection; a fresh one when the server closed it."""

    def __init__(self, port: int, proc: ServerProcess) -> None:
        self.port = port
        self.proc = proc
        self.conn: Optional[http.client.HTTPConnection] = None
        self.count = 0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _send(self, req: Request) -> Response:
        conn = self.conn
        names = {k.lower() for k, _ in req.headers}
        conn.putrequest(
            req.method,
            req.url,
            skip_host="host" in names,
            skip_accept_encoding="accept-encoding" in names,
        )
        for name, value in req.headers:
            conn.putheader(name, value)
        body = req.body
        if req.chunks is not None:
            conn.putheader("Transfer-Encoding", "chunked")
            body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in req.chunks) + b"0\r\n\r\n"
        elif body is not None:
            conn.putheader("Content-Length", str(len(body)))
        elif req.method in ("POST", "PUT", "PATCH"):
            conn.putheader("Content-Length", "0")
        try:
            conn.endheaders(body)  # headers and body in one write
        except OSError as exc:
            # The server may answer and close before it has read a body it does not want
            # (an oversized one, or a bad URL on a streaming handler): read that answer.
            if body is None:
                raise
            try:
                resp = conn.getresponse()
                data = resp.read()
            except (http.client.HTTPException, OSError):
                raise EarlyClose(exc) from None
            self.close()
            return Response(resp.status, resp.headers, data)
        resp = conn.getresponse()
        data = resp.read()
        if resp.will_close:
            self.close()
        return Response(resp.status, resp.headers, data)

    def send(self, req: Request) -> Response:
        """The answer; status 0 when the server hung up while a request body was being sent
        and is otherwise fine (see :func:`check_safe`)."""
        self.count += 1
        for attempt in (1, 2):
            reused = self.conn is not None
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
            try:
                return self._send(req)
            except (http.client.HTTPException, OSError, EarlyClose) as exc:
                self.close()
                if reused and attempt == 1 and not isinstance(exc, TimeoutError):
                    continue  # the server closed a kept-alive connection: retry on a new one
                if isinstance(exc, EarlyClose) and self._alive():
                    return Response(0, http.client.HTTPMessage(), b"")
                alive = self.proc.proc.poll() is None
                raise AssertionError(
                    f"no answer ({exc!r}; server {'alive' if alive else 'DEAD'}) to\n"
                    f"{req.describe()}\nserver log tail:\n" + "".join(self.proc.output[-30:])
                ) from None
        raise AssertionError("unreachable")

    def _alive(self) -> bool:
        """The server still answers (on a new connection)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.request("GET", "/__lbheartbeat__")
            return conn.getresponse().status == 200
        except (http.client.HTTPException, OSError):
            return False
        finally:
            conn.close()


class EarlyClose(Exception):
    """The connection broke while the request body was being sent, and no answer came."""


# Checks ----------------------------------------------------------------------------

# errno by status, from docs/errors.md
ERRNOS = {
    400: {106, 107, 108},
    401: {104, 105},
    404: {111},
    405: {115},
    406: {116},
    410: {114},
    413: {113, 117},
    415: {109},
    500: {999},
    503: {201, 202},
}
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


def media_type(value: Optional[str]) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def decode_body(resp: Response) -> Any:
    """The body by its Content-Type: MessagePack, otherwise strict JSON (no NaN)."""
    if media_type(resp.header("Content-Type")) == "application/msgpack":
        return msgpack.unpackb(resp.body, raw=False, strict_map_key=False)
    return json.loads(resp.body.decode("utf-8"), parse_constant=_reject_constant)


def _unencodable(value: Any) -> bool:
    """A value strict UTF-8 JSON cannot write: a non-finite float, a lone surrogate,
    bytes, a MessagePack extension, or a map key that is not a string or scalar."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, (bytes, bytearray, msgpack.ExtType, msgpack.Timestamp)):
        return True
    if isinstance(value, (list, tuple)):
        return any(_unencodable(v) for v in value)
    if isinstance(value, dict):
        return any(
            not isinstance(k, (str, int, float, bool, type(None)))
            or _unencodable(k)
            or _unencodable(v)
            for k, v in value.items()
        )
    return False


def _non_finite(value: Any) -> bool:
    """A NaN or an infinity somewhere in ``value``."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    if isinstance(value, dict):
        return any(_non_finite(k) or _non_finite(v) for k, v in value.items())
    return False


def check_error_body(req: Request, resp: Response) -> Dict[str, Any]:
    where = f"\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    try:
        body = decode_body(resp)
    except Exception as exc:  # any decoder error: the body is not the contract's
        raise AssertionError(f"{resp.status} without a parseable error body ({exc!r}){where}")
    assert isinstance(body, dict), f"error body is not an object{where}"
    assert body.get("code") == resp.status, f"'code' is not the status{where}"
    assert type(body.get("errno")) is int, f"'errno' is not an int{where}"
    assert body["errno"] in ERRNOS.get(resp.status, {body["errno"]}), (
        f"errno {body['errno']} is not documented for {resp.status}{where}"
    )
    assert type(body.get("error")) is str and body["error"], f"bad 'error'{where}"
    assert type(body.get("message")) is str and body["message"], f"bad 'message'{where}"
    assert "details" not in body or isinstance(body["details"], dict), f"bad 'details'{where}"
    if resp.status == 405:
        assert resp.header("Allow") is not None, f"405 without Allow{where}"
    if resp.status == 503:
        assert resp.header("Retry-After"), f"503 without Retry-After{where}"
    return body


def check_safe(req: Request, resp: Response) -> Any:
    """The properties every answer has; the decoded body (None when there is none)."""
    if currently_in_test_context():
        event(f"status {resp.status}")  # shown by --hypothesis-show-statistics
    where = f"\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    if resp.status == 0:
        # Hung up while the body was being sent, server alive: HTTP allows a server to
        # refuse a body early; only acceptable when there is a body.
        assert req.body is not None or req.chunks is not None, f"no answer{where}"
        return None
    raw = resp.body + str(resp.headers).encode("latin-1", "replace")
    for leak in (b"Traceback (most recent call last)", b'File "/', b"sqlite3.", b"aiosqlite"):
        assert leak not in raw, f"{leak!r} leaked into the response{where}"
    if resp.status >= 500:
        check_error_body(req, resp)
        raise AssertionError(f"server error{where}")
    assert resp.status in (200, 304) or 400 <= resp.status < 500, f"unexpected status{where}"
    if req.method == "HEAD" or resp.status == 304:
        assert resp.body == b"", f"a body on a HEAD/304 answer{where}"
        return None
    if resp.status >= 400:
        return check_error_body(req, resp)
    try:
        return decode_body(resp)
    except Exception as exc:
        raise AssertionError(f"2xx body does not parse ({exc!r}){where}")


def expect_error(
    req: Request, resp: Response, statuses: Iterable[int], errnos: Optional[Iterable[int]] = None
) -> Dict[str, Any]:
    statuses = set(statuses)
    body = check_safe(req, resp)
    assert resp.status in statuses, (
        f"expected {sorted(statuses)}, got\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    )
    if errnos is not None and req.method != "HEAD":
        assert body["errno"] in set(errnos), (req.describe(), body)
    return body or {}


# The server --------------------------------------------------------------------------


class Server:
    """The running server and what the tests know about its data."""

    def __init__(
        self, proc: ServerProcess, http: Http, feed: List[Dict[str, Any]], facts: Dict[str, Any]
    ) -> None:
        self.proc = proc
        self.http = http
        self.feed = feed  # every record, by serial
        self.records = {(r["addon_id"], r["sha256"]): r for r in feed}
        self.max_lookup = facts["settings"]["max_lookup"]
        self.max_body_size = facts["settings"]["max_body_size"]

    def too_large(self, req: Request, resp: Response) -> bool:
        """The body is over max_body_size, and the answer is the contract's 413 for it."""
        if req.body is None or len(req.body) <= self.max_body_size:
            return False
        if resp.status != 0:  # 0: the server hung up on the rest of the body (check_safe)
            expect_error(req, resp, {413}, {113})
        return True

    def send(self, req: Request) -> Response:
        return self.http.send(req)

    def __repr__(self) -> str:
        return f"<addonreg server on port {self.proc.port}>"


def check_negotiated(req: Request, resp: Response, accept: Optional[str]) -> None:
    """A body in MessagePack exactly when Accept asks for it."""
    wanted = codec_wants_msgpack(accept)
    got = media_type(resp.header("Content-Type")) == "application/msgpack"
    assert got == wanted, (
        f"Accept {accept!r} answered in {resp.header('Content-Type')}\n{req.describe()}"
    )


def codec_wants_msgpack(accept: Optional[str]) -> bool:
    """Accept asks for msgpack before (or without) JSON (media types ignore case)."""
    for part in (accept or "").split(","):
        kind = part.split(";", 1)[0].strip().lower()
        if kind in MSGPACK_TYPES:
            return True
        if kind in ("application/json", "application/*", "*/*"):
            return False
    return False

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

Bugs this file found are pinned at the end, each by its minimal
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
import os
import re
import signal
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

import msgpack
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st

from .conftest import ROOT, ServerProcess

pytestmark = pytest.mark.subprocess

TIMEOUT = 10.0  # seconds without an answer = the server hangs: a failure

FUZZ = settings(
    max_examples=250, deadline=None, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much])
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

_GUID = re.compile(r"\{[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\}")
_EMAIL = re.compile(r"[a-zA-Z0-9._-]*@[a-zA-Z0-9._-]+")
_SHA = re.compile(r"(?:[sS][hH][aA]256:)?([0-9a-fA-F]{64})")


def valid_id(value: Any) -> bool:
    return (type(value) is str and 1 <= len(value) <= 255
            and (_GUID.fullmatch(value) is not None or _EMAIL.fullmatch(value) is not None))


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
        text = (f"{self.method} {self.url!r}\n  headers={list(self.headers)!r}"
                + (f"\n  chunks={[len(c) for c in self.chunks]}" if self.chunks is not None else "")
                + ("" if body is None else f"\n  body={body[:1500]!r}"
                   + ("..." if len(body) > 1500 else "")))
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
        conn.putrequest(req.method, req.url, skip_host="host" in names,
                        skip_accept_encoding="accept-encoding" in names)
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
                    f"{req.describe()}\nserver log tail:\n"
                    + "".join(self.proc.output[-30:])) from None
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
ERRNOS = {400: {106, 107, 108}, 401: {104, 105}, 404: {111}, 405: {115}, 406: {116},
          410: {114}, 413: {113, 117}, 415: {109}, 500: {999}, 503: {201, 202}}
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
        return any(not isinstance(k, (str, int, float, bool, type(None))) or _unencodable(k)
                   or _unencodable(v) for k, v in value.items())
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
    assert body["errno"] in ERRNOS.get(resp.status, {body["errno"]}), \
        f"errno {body['errno']} is not documented for {resp.status}{where}"
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


def expect_error(req: Request, resp: Response, statuses: Iterable[int],
                 errnos: Optional[Iterable[int]] = None) -> Dict[str, Any]:
    statuses = set(statuses)
    body = check_safe(req, resp)
    assert resp.status in statuses, \
        f"expected {sorted(statuses)}, got\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    if errnos is not None and req.method != "HEAD":
        assert body["errno"] in set(errnos), (req.describe(), body)
    return body or {}


# The server --------------------------------------------------------------------------

class Server:
    """The running server and what the tests know about its data."""

    def __init__(self, proc: ServerProcess, http: Http, feed: List[Dict[str, Any]],
                 facts: Dict[str, Any]) -> None:
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


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterable[Server]:
    """One real ``addonreg serve`` over SQLite, seeded with ``addonreg import``."""
    tmp = tmp_path_factory.mktemp("fuzz")
    storage = f"sqlite:///{tmp}/fuzz.sqlite3"
    seed = tmp / "seed.jsonl"
    with open(seed, "w", encoding="utf-8") as fh:
        for i, (addon_id, sha, version) in enumerate(SEEDS):
            row: Dict[str, Any] = {"addon_id": addon_id, "sha256": sha}
            if version is not None or i % 2:
                row["version"] = version
            fh.write(json.dumps(row) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    env["ADDONREG_STORAGE"] = storage
    done = subprocess.run([sys.executable, "-m", "addonreg", "import", "--quiet", str(seed)],
                          env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr

    # A short shutdown_timeout: BUG-6 would otherwise hold the teardown for 10 s.
    proc = ServerProcess({"ADDONREG_STORAGE": storage, "ADDONREG_PUBSUB": "local://",
                          "ADDONREG_SHUTDOWN_TIMEOUT": "1"})
    # Keep reading the server's output: a full pipe would block its logging (a hang).
    drain = threading.Thread(target=lambda: proc.output.extend(iter(proc.proc.stdout.readline, "")),
                             daemon=True)
    drain.start()
    client = Http(proc.port, proc)
    try:
        facts = json.loads(client.send(Request("GET", "/v1/")).body)
        feed = json.loads(client.send(Request("GET", "/v1/changes?since=0&limit=10000")).body)["changes"]
        records = {(r["addon_id"], r["sha256"]): r for r in feed}
        expected = {(a, s.split(":")[-1].lower()): v for a, s, v in SEEDS}
        assert {k: r["version"] for k, r in records.items()} == expected
        assert all(r["status"] == "registered" for r in feed)
        serials = [r["serial"] for r in feed]
        assert serials == sorted(set(serials)) and serials[0] >= 1
        yield Server(proc, client, feed, facts)
    finally:
        client.close()
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
        try:
            code = proc.proc.wait(15)
        except subprocess.TimeoutExpired:
            code = None
        drain.join(5)
        proc.stop()
    assert code == 0, "server did not exit cleanly after the fuzzing:\n" + "".join(proc.output[-40:])


# Strategies: identifiers --------------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "._-"
HEX_MIXED = "0123456789abcdefABCDEF"
ODD_CHARS = (" \t\n\r\x00\x7f+/\\%{}@#?&=:;,~!$*()[]<>\"'`^|\u00e9\u212a\u017f\u0130\u00df"
             "\uff10\u0660\u00a0\u200b\ufeff\ud800\U0001f600")


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text(HEX_MIXED, min_size=n, max_size=n)


guids = st.tuples(*(hexes(n) for n in (8, 4, 4, 4, 12))).map(lambda p: "{" + "-".join(p) + "}")
emails = st.builds(lambda local, domain: f"{local}@{domain}",
                   st.text(ID_CHARS, max_size=12), st.text(ID_CHARS, min_size=1, max_size=16))
seed_ids = st.sampled_from(SEED_IDS)
long_ids = st.sampled_from([254, 255, 256, 300, 5000]).map(lambda n: "a" * (n - 2) + "@b")
valid_ids = st.one_of(seed_ids, seed_ids, seed_ids.map(str.swapcase), guids, emails,
                      long_ids.filter(valid_id))


@st.composite
def mutated(draw, base: st.SearchStrategy[str]) -> str:
    """A valid-looking string with one small defect (or, sometimes, none)."""
    s = draw(base)
    op = draw(st.sampled_from(["insert", "replace", "delete", "unbrace", "at", "pad", "same"]))
    odd = draw(st.sampled_from(ODD_CHARS) | st.characters())
    i = draw(st.integers(0, len(s)))
    if op == "insert":
        return s[:i] + odd + s[i:]
    if op == "replace" and s:
        i = min(i, len(s) - 1)
        return s[:i] + odd + s[i + 1:]
    if op == "delete" and s:
        i = min(i, len(s) - 1)
        return s[:i] + s[i + 1:]
    if op == "unbrace":
        return s.strip("{}")
    if op == "at":
        return s + "@" + s
    if op == "pad":
        return draw(st.sampled_from([" ", "\n", "\t", "\x00"])) + s + draw(st.sampled_from(["", " ", "\n"]))
    return s


SPECIAL_IDS = ["", "@", "@x", "x@", "a@b@c", "{}", "{00000000-0000-0000-0000-000000000000}",
               "00000000-0000-0000-0000-000000000000", "{00000000-0000-0000-0000-00000000000g}",
               "{0000000-0000-0000-0000-0000000000000}", "{00000000-0000-0000-0000-000000000000",
               "x@example.com\n", " x@example.com", "x@exam ple.com", "x@\u212aelvin",
               "\u017f@x", "\u0130@x", "x@ex%41mple.com", "x%40example.com", "%7Bx%7D",
               "..@..", "-@-", "x@\x00", "\ud800@x", "null", "fx@example.com/files"]
id_texts = st.one_of(valid_ids, mutated(valid_ids), st.sampled_from(SPECIAL_IDS),
                     st.text(max_size=20))

sha_prefixes = st.sampled_from(["", "", "sha256:", "SHA256:", "Sha256:"])
seed_shas = st.builds(lambda s, case, p: p + {"l": s, "u": s.upper(),
                                                "m": s[:32].upper() + s[32:]}[case],
                      st.sampled_from(SEED_SHAS), st.sampled_from("lum"), sha_prefixes)
valid_shas = st.one_of(seed_shas, seed_shas, st.builds(str.__add__, sha_prefixes, hexes(64)))
SPECIAL_SHAS = ["", "sha256:", "sha256:sha256:" + "a" * 64, "sha1:" + "a" * 40, "a" * 63,
                "a" * 65, "sha256:" + "a" * 63, "a" * 128, "\uff10" * 64, "\u0660" * 64,
                "0x" + "a" * 62, "sha256: " + "a" * 64, "sha-256:" + "a" * 64]
sha_texts = st.one_of(valid_shas, mutated(valid_shas), st.sampled_from(SPECIAL_SHAS),
                      st.text(HEX_MIXED + "sha:", max_size=80), st.text(max_size=10))

HUGE_NUMBERS = [2 ** 63 - 1, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 30, -10 ** 300, 1e308,
                -1e308, 5e-324, -0.0]
wrong_types = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_NUMBERS),
                        st.floats(allow_nan=False, allow_infinity=False),
                        st.lists(st.text(max_size=3), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
body_ids = st.one_of(id_texts, id_texts, wrong_types)
body_shas = st.one_of(sha_texts, sha_texts, wrong_types)


# Strategies: paths and queries ----------------------------------------------------------

_RAW_OK = frozenset(chr(c) for c in range(0x21, 0x7F)) - set("/?#%")
JUNK_PIECES = ["%", "%2", "%zz", "%C3", "%ff", "%00", "%2F", "%2f", "%252F", "{", "}", "@",
               "%7B", "%7d", "%40", ";", ";x=1", ".", "..", "%20", "+", "%E2%82", "%ED%A0%80"]


@st.composite
def path_segment(draw, texts: st.SearchStrategy[str]) -> str:
    """``texts`` as it may appear in a URL path: raw, percent-encoded, or a mix."""
    text = draw(texts)
    mode = draw(st.sampled_from(["minimal", "minimal", "all", "lowerhex", "some", "rawpercent"]))
    some = draw(st.sets(st.sampled_from("{}@:.-_"))) if mode == "some" else set()
    out = []
    for ch in text:
        data = ch.encode("utf-8", "surrogatepass")
        raw_ok = ch in _RAW_OK or (mode == "rawpercent" and ch == "%")
        if mode in ("all", "lowerhex") or not raw_ok or ch in some:
            out.append("".join(("%%%02x" if mode == "lowerhex" else "%%%02X") % b for b in data))
        else:
            out.append(ch)
    if draw(st.integers(0, 4)) == 0:
        out.insert(draw(st.integers(0, len(out))), draw(st.sampled_from(JUNK_PIECES)))
    return "".join(out)


def server_decoded(segment: str) -> Optional[str]:
    """What the server sees for a path segment (Tornado: unquote, then strict UTF-8)."""
    try:
        return unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return None


def qs_encode(value: str) -> str:
    return quote_from_bytes(value.encode("utf-8", "surrogatepass"), safe="")


junk_query = st.one_of(
    st.just(""),
    st.text(st.sampled_from(sorted(_RAW_OK | {"%", "?", "#", "/"})), max_size=30).map(lambda q: "?" + q),
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=10)), max_size=4).map(
        lambda kv: "?" + "&".join(qs_encode(k) + "=" + qs_encode(v) for k, v in kv)),
)

header_names = st.text(st.sampled_from("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits),
                       min_size=1, max_size=20).filter(
    lambda n: n.lower() not in ("host", "content-length", "transfer-encoding", "expect"))
header_values = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                      exclude_characters="\x7f"), max_size=40).map(
    lambda v: v.strip(" \t"))
ACCEPTS = [None, "application/msgpack", "application/json", "application/x-msgpack",
           "application/vnd.msgpack", "*/*", "application/json, application/msgpack",
           "application/msgpack;q=0.1, application/json", "text/html", "application/*",
           "APPLICATION/MSGPACK", "msgpack", ""]
CONTENT_TYPES = [None, "application/json", "application/json; charset=utf-8", "application/msgpack",
                 "application/x-msgpack", "application/vnd.msgpack",
                 "Application/MsgPack; charset=binary", "text/plain", "application/x-www-form-urlencoded",
                 "multipart/form-data; boundary=x", ""]
SPECIAL_HEADERS = st.one_of(
    st.tuples(st.just("Accept"), st.sampled_from([a for a in ACCEPTS if a is not None])),
    st.tuples(st.just("Content-Type"), st.sampled_from([c for c in CONTENT_TYPES if c is not None])),
    st.tuples(st.just("If-None-Match"), st.sampled_from(['*', '"1"', 'W/"1"', '"1", "2"', '""',
                                                        '"1-2"', "junk", '"' + "9" * 100 + '"'])),
    st.tuples(st.sampled_from(["X-Forwarded-For", "X-Real-Ip", "X-Scheme", "X-Forwarded-Proto"]),
              st.sampled_from(["", "1.2.3.4", "::1", "junk", "https", "a" * 300])),
    st.tuples(st.just("Authorization"), st.sampled_from(["Hawk id=x", "Hawk", "Basic Zm9vOmJhcg==",
                                                        'Hawk id="a", ts="1", nonce="n", mac="m"'])),
    st.tuples(st.sampled_from(["Connection", "Accept-Encoding", "Range", "Cookie", "Origin",
                               "Upgrade", "TE", "Accept-Charset"]),
              st.sampled_from(["close", "keep-alive", "gzip", "bytes=0-1", "a=b; c", "x" * 200,
                               "websocket", "trailers", "utf-8"])),
)
headers_lists = st.lists(st.one_of(SPECIAL_HEADERS, st.tuples(header_names, header_values)),
                         max_size=5)


# Strategies: bodies ------------------------------------------------------------------------

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.one_of(st.characters(), _surrogates), max_size=12)
json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.sampled_from(HUGE_NUMBERS),
                        st.floats(), any_text, id_texts, sha_texts)
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(any_text, st.sampled_from(["files", "addons", "id", "sha256",
                                                            "addon_id", "version"])),
                      inner, max_size=4), max_leaves=14)
msgpack_leaves = st.one_of(
    json_leaves.filter(lambda v: not isinstance(v, int) or -2 ** 63 <= v < 2 ** 64),
    st.binary(max_size=16),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2 ** 32), st.integers(0, 999_999_999)))
msgpack_keys = st.one_of(st.text(max_size=6), st.integers(-5, 5), st.binary(max_size=4), st.none(),
                         st.booleans(), st.floats(allow_nan=False),
                         st.tuples(st.integers(0, 3)),  # packed as an array: unhashable key
                         st.sampled_from(["files", "addons", "id", "sha256", "addon_id"]))
msgpack_values = st.recursive(
    msgpack_leaves, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(msgpack_keys, inner, max_size=4), max_leaves=14)

SPECIAL_LITERALS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e400", "1" * 4400, "-" + "9" * 5000,
                    "1.0e-99999", '"\\ud800"', '"\\udfff\\ud800"', '"\\u0000"', "[" * 50 + "]" * 50,
                    "{}", "[]", "null", "true", str(2 ** 64), "0.1e1", '"' + "x" * 3000 + '"']
special_json = st.builds(
    lambda template, a, b: (template % (a, b)).encode(),
    st.sampled_from(['{"id": %s, "sha256": %s}', '{"files": [{"addon_id": %s, "sha256": %s}]}',
                     '{"addons": [{"id": %s, "sha256": %s}]}', '{"files": %s, "addons": %s}',
                     '[%s, %s]', '{"addon_id": %s, "sha256": %s}']),
    st.sampled_from(SPECIAL_LITERALS + ['"fx@example.com"']),
    st.sampled_from(SPECIAL_LITERALS + ['"%s"' % _h(1)]))


def to_json(value: Any, ensure_ascii: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True).encode("utf-8", "surrogatepass")


def _packable(value: Any) -> Any:
    """``value`` with the ints MessagePack cannot carry (beyond 64 bits) made floats or text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -2 ** 63 <= value < 2 ** 64:
        return float(value) if abs(value) < 10 ** 300 else str(value)
    if isinstance(value, list):
        return [_packable(v) for v in value]
    if isinstance(value, dict):
        return {_packable(k): _packable(v) for k, v in value.items()}
    return value


def to_msgpack(value: Any) -> bytes:
    """MessagePack; lone surrogates are written as such (invalid UTF-8: a bad body)."""
    return msgpack.packb(_packable(value), use_bin_type=True, unicode_errors="surrogatepass")


# Nearly valid lookup and original-API bodies.

@st.composite
def sized_list(draw, items: st.SearchStrategy[Any]) -> List[Any]:
    """0..1100 items (boundaries favoured), built from a small pool so it stays cheap."""
    n = draw(st.one_of(st.sampled_from([0, 1, 2, 999, 1000, 1001, 1100]), st.integers(0, 6),
                       st.integers(0, 1100)))
    pool = draw(st.lists(items, min_size=1, max_size=6))
    out = [pool[i % len(pool)] for i in range(n)]
    if n and draw(st.booleans()):
        out[draw(st.integers(0, n - 1))] = draw(items)
    return out


def file_items(valid_only: bool) -> st.SearchStrategy[Any]:
    good = st.fixed_dictionaries({"addon_id": valid_ids, "sha256": valid_shas},
                                 optional={"version": json_leaves, "extra": json_leaves})
    hits = st.builds(lambda key, p: {"addon_id": key[0], "sha256": p + key[1]},
                     st.sampled_from([(a, s.split(":")[-1]) for a, s, _ in SEEDS]), sha_prefixes)
    if valid_only:
        return st.one_of(good, hits, hits)
    return st.one_of(
        good, hits,
        st.fixed_dictionaries({"addon_id": body_ids, "sha256": body_shas}),
        st.fixed_dictionaries({}, optional={"addon_id": body_ids, "sha256": body_shas,
                                            "id": body_ids}),
        wrong_types)


@st.composite
def lookup_bodies(draw) -> Any:
    files = draw(sized_list(file_items(draw(st.booleans()))))
    shape = draw(st.sampled_from(["files"] * 6 + ["extra", "not-list", "missing", "top-list",
                                                   "scalar"]))
    if shape == "files":
        return {"files": files}
    if shape == "extra":
        return {"files": files, draw(st.text(max_size=5)): draw(json_leaves)}
    if shape == "not-list":
        return {"files": draw(st.one_of(wrong_types.filter(lambda v: not isinstance(v, list)),
                                        st.just({"addon_id": "fx@example.com", "sha256": _h(1)})))}
    if shape == "missing":
        return {"file": files}
    if shape == "top-list":
        return files
    return draw(json_leaves)


def old_items(valid_only: bool) -> st.SearchStrategy[Any]:
    good = st.builds(lambda a, s: {"id": a, "sha256": s}, valid_ids, valid_shas)
    hits = st.sampled_from([{"id": a, "sha256": s} for a, s, _ in SEEDS])
    if valid_only:
        return st.one_of(good, hits, st.builds(lambda a, s: {"id": a, "sha256": s}, body_ids, body_shas))
    return st.one_of(
        good, hits, st.builds(lambda a, s: {"id": a, "sha256": s}, body_ids, body_shas),
        st.fixed_dictionaries({}, optional={"id": body_ids, "sha256": body_shas,
                                            "addon_id": body_ids, "registered": st.booleans()}),
        wrong_types)


@st.composite
def old_bodies(draw, path: str) -> Any:
    if path == "/addon":
        return draw(st.one_of(old_items(True), old_items(False), wrong_types))
    items = draw(sized_list(old_items(draw(st.booleans()))))
    return draw(st.sampled_from([{"addons": items}, {"addons": items}, {"addons": items, "x": 1},
                                 {"addon": items}, items, {"addons": {"id": "x@y"}}]))


# Generic fuzzing: every endpoint, any method, path, query, header and body ---------------------

READ_PATHS = ["/v1/addons/{id}/files/{sha}", "/v1/addons/{id}/files", "/v1/lookup", "/v1/changes",
              "/v1/", "/v1", "/addon", "/addons", "/__heartbeat__", "/__lbheartbeat__",
              "/__version__"]
OTHER_PATHS = ["/", "", "*", "/v2/", "/v1/addons", "/v1/addons/{id}", "/v1/addons/{id}/",
               "/v1/addons/{id}/files/", "/v1/addons/{id}/files/{sha}/", "/v1/addons/{id}/files/{sha}/x",
               "/v1/addons/{id}/{sha}", "/v1/jobs/{id}", "/v1/registrations", "/hash",
               "//v1//", "/v1//lookup", "/v1/lookup/", "/V1/", "/__version__/x", "/addon/",
               "http://127.0.0.1/v1/", "/%76%31/", "/v1/%6cookup", "/{id}", "/.%2e/v1/", "/v1/changes/",
               "/favicon.ico", "/v1/addons/{id}/files/{sha}%00", "/{junk}"]
METHODS = ["GET"] * 6 + ["HEAD"] * 2 + ["POST"] * 5 + ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE",
           "CONNECT", "get", "Post", "PROPFIND", "BREW", "M-SEARCH"]
tokens = st.text(st.sampled_from("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits),
                 min_size=1, max_size=12)
junk_segments = st.text(st.sampled_from(sorted(_RAW_OK | {"%"})), max_size=20)


@st.composite
def any_body(draw, path: str) -> Tuple[Optional[bytes], Optional[str]]:
    """A body and its Content-Type (None: no header)."""
    kind = draw(st.sampled_from(["none", "raw", "json", "msgpack", "special", "lookup", "old",
                                 "mutated"]))
    ctype = draw(st.sampled_from(CONTENT_TYPES))
    if kind == "none":
        return None, ctype
    if kind == "raw":
        return draw(st.binary(max_size=300)), ctype
    if kind == "special":
        return draw(special_json), ctype
    if kind == "msgpack":
        data = draw(msgpack_values)
        return to_msgpack(data), draw(st.sampled_from(MSGPACK_TYPES + (ctype,)))
    if kind == "lookup":
        data = draw(lookup_bodies())
    elif kind == "old":
        data = draw(old_bodies(draw(st.sampled_from(["/addon", "/addons"]))))
    else:
        data = draw(json_values)
    if kind in ("lookup", "old") and draw(st.booleans()):
        return to_msgpack(data), draw(st.sampled_from(MSGPACK_TYPES))
    encoded = to_json(data, draw(st.booleans()))
    if kind == "mutated" and encoded:
        cut = draw(st.integers(0, len(encoded)))
        encoded = encoded[:cut] + draw(st.binary(max_size=3)) + encoded[cut + 1:]
    return encoded, ctype


@st.composite
def any_request(draw) -> Request:
    template = draw(st.sampled_from(READ_PATHS + READ_PATHS + OTHER_PATHS))
    path = template
    for name, texts in (("{id}", id_texts), ("{sha}", sha_texts), ("{junk}", junk_segments)):
        if name in path:
            seg = draw(st.one_of(path_segment(texts), junk_segments))
            path = path.replace(name, seg)
    if template == "/v1/changes" and draw(st.booleans()):
        query = "?" + "&".join(f"{k}={qs_encode(v)}" for k, v in draw(
            st.lists(st.tuples(st.sampled_from(["since", "limit", "x"]), st.one_of(number_texts, any_text)),
                     max_size=3)))
    else:
        query = draw(junk_query)
    method = draw(tokens if draw(st.integers(0, 7)) == 0 else st.sampled_from(METHODS))
    headers = list(draw(headers_lists))
    body, ctype = draw(any_body(template))
    if ctype is not None:
        headers.append(("Content-Type", ctype))
    accept = draw(st.sampled_from(ACCEPTS))
    if accept is not None:
        headers.append(("Accept", accept))
    chunks = None
    if body is not None and draw(st.integers(0, 5)) == 0:
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        bounds = [0] + cuts + [len(body)]
        chunks = [body[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]
        body = None
    return Request(method, path + query, headers, body, chunks)


number_texts = st.one_of(
    st.integers(0, 2 ** 63 - 1).map(str), st.integers(-10, 20).map(str), st.integers(0, 12000).map(str),
    st.sampled_from(["", "0", "00", "007", "1", str(2 ** 63 - 1), str(2 ** 63), str(2 ** 64),
                     "9" * 20, "9" * 5000, "0" * 30 + "5", "+1", "-0", " 1", "1 ", "1_000", "1e3",
                     "0x10", "1.0", "\u0661", "\u0663\u0662", "\u00b2", "\uff11", "NaN", "inf",
                     "true", "null", "[]", "%", "\x00", "10000", "10001"]),
    st.text(max_size=8))

GET_200 = {"/v1/", "/v1", "/__version__", "/__lbheartbeat__", "/__heartbeat__"}


@FUZZ
@given(req=any_request())
def test_any_request_is_answered_safely(server: Server, req: Request) -> None:
    """Anything at any path: a well-formed answer, never a 5xx or a traceback."""
    resp = server.send(req)
    body = check_safe(req, resp)
    if resp.status == 0:
        return
    if req.method == "GET" and req.path in GET_200:
        if resp.status == 400 and "multipart/form-data" in (req.header("Content-Type") or "").lower():
            return  # Tornado parses form bodies of non-streaming handlers: a bad one is a 400
        assert resp.status == 200 and isinstance(body, dict), (req.describe(), resp.status, resp.body)
        if req.path == "/__version__":
            assert set(body) >= {"source", "version", "commit", "build"}, body
        if req.path == "/__heartbeat__":
            assert body.get("storage") == "ok", body
        if req.path.startswith("/v1"):
            assert body["http_api_version"] == "1" and "max_lookup" in body["settings"], body


@FUZZ_SMALL
@given(path=st.sampled_from(["/v1/lookup", "/addon", "/addons"]), data=st.data())
def test_bodies_of_every_post_endpoint(server: Server, path: str, data: st.DataObject) -> None:
    """Arbitrary JSON, MessagePack and raw bodies at the three POST reads."""
    body, ctype = data.draw(any_body(path))
    headers = [] if ctype is None else [("Content-Type", ctype)]
    accept = data.draw(st.sampled_from(ACCEPTS))
    if accept is not None:
        headers.append(("Accept", accept))
    req = Request("POST", path, headers, body)
    resp = server.send(req)
    check_safe(req, resp)
    if resp.status >= 400:
        check_negotiated(req, resp, accept)


def check_negotiated(req: Request, resp: Response, accept: Optional[str]) -> None:
    """A body in MessagePack exactly when Accept asks for it."""
    wanted = codec_wants_msgpack(accept)
    got = media_type(resp.header("Content-Type")) == "application/msgpack"
    assert got == wanted, f"Accept {accept!r} answered in {resp.header('Content-Type')}\n{req.describe()}"


def codec_wants_msgpack(accept: Optional[str]) -> bool:
    """Accept asks for msgpack before (or without) JSON (media types ignore case)."""
    for part in (accept or "").split(","):
        kind = part.split(";", 1)[0].strip().lower()
        if kind in MSGPACK_TYPES:
            return True
        if kind in ("application/json", "application/*", "*/*"):
            return False
    return False


@FUZZ_SMALL
@given(host=st.one_of(
    st.text(st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+;=[]:"),
            min_size=1, max_size=40),
    st.builds(lambda h, p: f"{h}:{p}", st.sampled_from(["example.com", "[::1]", "127.0.0.1", "a"]),
              st.text(string.digits, max_size=100))))
def test_host_header(server: Server, host: str) -> None:
    """Any Host that HTTP allows: GET /v1/ answers 200 and names itself under that host."""
    req = Request("GET", "/v1/", [("Host", host)])
    resp = server.send(req)
    body = check_safe(req, resp)
    assert resp.status == 200, (req.describe(), resp.status, resp.body)
    assert body["url"] == f"http://{host}/v1/", body


# Structured, nearly valid requests: answers checked against the model -------------------------

def _check_record(record: Any, expected: Dict[str, Any], req: Request) -> None:
    assert record == expected, f"{req.describe()}\n-> {record!r}\n   expected {expected!r}"


seeded_keys = st.builds(lambda key, p, upper: (key[0], p + (key[1].upper() if upper else key[1])),
                        st.sampled_from([(a, s.split(":")[-1].lower()) for a, s, _ in SEEDS]),
                        sha_prefixes, st.booleans())


@st.composite
def file_segments(draw) -> Tuple[str, str]:
    """The two path segments of a file URL: often a seeded file, else near-valid junk."""
    addon_id, sha = draw(st.one_of(seeded_keys, st.tuples(id_texts, sha_texts)))
    return draw(path_segment(st.just(addon_id))), draw(path_segment(st.just(sha)))


@FUZZ
@given(segments=file_segments(),
       method=st.sampled_from(["GET", "GET", "HEAD"]), query=junk_query,
       accept=st.sampled_from(ACCEPTS))
def test_file_resource(server: Server, segments: Tuple[str, str], method: str, query: str,
                       accept: Optional[str]) -> None:
    """``GET``/``HEAD /v1/addons/{addon_id}/files/{sha256}``: 200, 404 or 400 as the model says."""
    id_seg, sha_seg = segments
    headers = [] if accept is None else [("Accept", accept)]
    req = Request(method, f"/v1/addons/{id_seg}/files/{sha_seg}{query}", headers)
    resp = server.send(req)
    addon_id, sha = server_decoded(id_seg), server_decoded(sha_seg)
    if not id_seg or not sha_seg:
        expect_error(req, resp, {404}, {111})
        return
    if addon_id is None or sha is None:
        expect_error(req, resp, {400})
        return
    key = (addon_id, norm_sha(sha))
    if not valid_id(addon_id) or key[1] is None:
        body = expect_error(req, resp, {400}, {107})
        if method == "GET":
            bad = {f for f, ok in (("addon_id", valid_id(addon_id)), ("sha256", key[1])) if not ok}
            assert body.get("details", {}).get("field") in bad, (req.describe(), body)
        return
    if key not in server.records:
        expect_error(req, resp, {404}, {111})
        negative = resp.header("Cache-Control")
        assert negative and negative.startswith("public, max-age="), (req.describe(), negative)
        return
    record = check_safe(req, resp)
    assert resp.status == 200, (req.describe(), resp.status, resp.body)
    etag, cache = resp.header("Etag"), resp.header("Cache-Control")
    assert etag and cache and re.fullmatch(r"public, max-age=[1-9][0-9]*", cache), (etag, cache)
    if method == "GET":
        _check_record(record, server.records[key], req)
    again = Request(method, req.url, list(headers) + [("If-None-Match", etag)])
    resp2 = server.send(again)
    check_safe(again, resp2)
    assert resp2.status == 304 and resp2.header("Etag") == etag, (again.describe(), resp2.status)


@FUZZ_SMALL
@given(id_seg=path_segment(id_texts), query=junk_query, method=st.sampled_from(["GET", "HEAD"]))
def test_addon_files_resource(server: Server, id_seg: str, query: str, method: str) -> None:
    """``GET /v1/addons/{addon_id}/files``: the add-on's records sorted by sha256, 404 or 400."""
    req = Request(method, f"/v1/addons/{id_seg}/files{query}")
    resp = server.send(req)
    addon_id = server_decoded(id_seg)
    if not id_seg:
        expect_error(req, resp, {404}, {111})
        return
    if addon_id is None:
        expect_error(req, resp, {400})
        return
    if not valid_id(addon_id):
        expect_error(req, resp, {400}, {107})
        return
    files = sorted((r for r in server.feed if r["addon_id"] == addon_id), key=lambda r: r["sha256"])
    if not files:
        expect_error(req, resp, {404}, {111})
        return
    body = check_safe(req, resp)
    assert resp.status == 200 and resp.header("Etag"), (req.describe(), resp.status, resp.body)
    if method == "GET":
        _check_record(body, {"addon_id": addon_id, "files": files}, req)


def lookup_model(body: Any, records: Dict, max_lookup: int) -> Tuple[set, Any]:
    """(acceptable statuses, expected results or the bad indexes) for a lookup body."""
    if not isinstance(body, dict) or not isinstance(body.get("files"), list):
        return {400}, None
    files = body["files"]
    if not files:
        return {400}, None
    bad = [i for i, item in enumerate(files)
           if not (isinstance(item, dict) and valid_id(item.get("addon_id"))
                   and norm_sha(item.get("sha256")) is not None)]
    if len(files) > max_lookup:
        return ({413, 400} if bad else {413}), None
    if bad:
        return {400}, set(bad)
    results = []
    for item in files:
        key = (item["addon_id"], norm_sha(item["sha256"]))
        record = records.get(key)
        results.append({"addon_id": key[0], "sha256": key[1],
                        "status": record["status"] if record else "unknown",
                        "version": record["version"] if record else None})
    return {200}, results


def _lookup(server: Server, body: Any, as_msgpack: bool, accept: Optional[str]) -> None:
    headers = [("Accept", accept)] if accept is not None else []
    if as_msgpack:
        headers.append(("Content-Type", "application/msgpack"))
        req = Request("POST", "/v1/lookup", headers, to_msgpack(body))
    else:
        headers.append(("Content-Type", "application/json"))
        req = Request("POST", "/v1/lookup", headers, to_json(body))
    if as_msgpack:
        body = _packable(body)  # what the server decodes (huge ints were made floats)
    statuses, expected = lookup_model(body, server.records, server.max_lookup)
    if as_msgpack and _unencodable(body):  # a lone surrogate: invalid UTF-8 in MessagePack
        statuses, expected = {400}, None
    if not as_msgpack and _non_finite(body):  # NaN/Infinity are not JSON
        statuses, expected = {400}, None
    note(f"model: {sorted(statuses)}")
    resp = server.send(req)
    if server.too_large(req, resp):
        return
    got = check_safe(req, resp)
    assert resp.status in statuses, \
        f"expected {sorted(statuses)}\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    check_negotiated(req, resp, accept)
    if resp.status == 400 and isinstance(expected, set):
        index = got.get("details", {}).get("index")
        assert index in expected, (req.describe(), got, sorted(expected)[:10])
    if resp.status == 200:
        assert "Accept" in (resp.header("Vary") or ""), req.describe()
        assert isinstance(got, dict) and isinstance(got.get("results"), list), got
        results = [{k: r.get(k) for k in ("addon_id", "sha256", "status", "version")}
                   for r in got["results"]]
        assert results == expected, \
            f"{req.describe()}\n-> {got['results'][:5]!r}...\n   expected {expected[:5]!r}..."


@FUZZ
@given(body=lookup_bodies(), accept=st.sampled_from(ACCEPTS))
def test_lookup_json(server: Server, body: Any, accept: Optional[str]) -> None:
    """``POST /v1/lookup`` with a JSON body: 200 in order, 400 naming the bad index, 413 above max."""
    _lookup(server, body, False, accept)


@FUZZ_SMALL
@given(body=lookup_bodies(), accept=st.sampled_from(ACCEPTS))
def test_lookup_msgpack(server: Server, body: Any, accept: Optional[str]) -> None:
    """``POST /v1/lookup`` with a MessagePack body: the same answers as with JSON."""
    _lookup(server, body, True, accept)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _registered(records: Dict, addon_id: Any, sha: Any) -> bool:
    key = (addon_id, norm_sha(sha))
    return valid_id(addon_id) and key in records and records[key]["status"] == "registered"


@FUZZ
@given(data=st.data(), path=st.sampled_from(["/addon", "/addons"]))
def test_original_api(server: Server, data: st.DataObject, path: str) -> None:
    """``POST /addon`` and ``/addons``: id and sha256 echoed exactly, registered per the model."""
    body = data.draw(old_bodies(path))
    req = Request("POST", path, [("Content-Type", "application/json")], to_json(body))
    resp = server.send(req)
    if server.too_large(req, resp):
        return
    got = check_safe(req, resp)
    where = f"\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    if not isinstance(body, dict) or _non_finite(body):
        assert resp.status == 400, where
        return

    def item_ok(item: Any) -> bool:
        return isinstance(item, dict) and "id" in item and "sha256" in item

    def answer(item: Dict) -> Dict:
        return {"id": item["id"], "sha256": item["sha256"],
                "registered": _registered(server.records, item["id"], item["sha256"])}

    if path == "/addon":
        if not item_ok(body):
            assert resp.status == 400, where
            return
        assert resp.status == 200, where
        assert _canonical(got) == _canonical(answer(body)), where
        return
    items = body.get("addons")
    if not isinstance(items, list) or not all(item_ok(i) for i in items):
        allowed = {400, 413} if isinstance(items, list) and len(items) > server.max_lookup else {400}
        assert resp.status in allowed, where
        return
    if len(items) > server.max_lookup:
        assert resp.status == 413, where
        return
    assert resp.status == 200, where
    assert _canonical(got) == _canonical({"addons": [answer(i) for i in items]}), where


def number_kind(value: Optional[str], lowest: int, highest: int) -> Any:
    """An int in range, or 'default', 'bad', 'out' (out of range), 'unclear' (contract silent).

    docs/api.md: ``since`` a non-negative integer, ``limit`` 1-10000, anything else 400:
    no sign, no spaces around, no digits of other scripts.
    """
    if value is None:
        return "default"
    if value == "":
        return "unclear"  # the contract is silent on an empty value
    if not re.fullmatch(r"[0-9]+", value):
        return "bad"
    digits = value.lstrip("0") or "0"
    if len(digits) > 19:
        return "out"
    number = int(digits)
    return number if lowest <= number <= highest else "out"


@FUZZ
@given(since=st.none() | number_texts, limit=st.none() | number_texts,
       extra=st.lists(st.tuples(st.sampled_from(["SINCE", "x", "since[]", "limit "]), any_text),
                      max_size=2),
       order=st.booleans())
def test_changes_feed(server: Server, since: Optional[str], limit: Optional[str],
                      extra: List[Tuple[str, str]], order: bool) -> None:
    """``GET /v1/changes?since=&limit=``: the feed after ``since``, at most ``limit``, or 400."""
    params = [(k, v) for k, v in (("since", since), ("limit", limit)) if v is not None] + extra
    if order:
        params.reverse()
    query = "&".join(f"{qs_encode(k)}={qs_encode(v)}" for k, v in params)
    req = Request("GET", "/v1/changes" + ("?" + query if query else ""))
    resp = server.send(req)
    got = check_safe(req, resp)
    where = f"\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    try:
        for v in (since or "", limit or ""):
            v.encode("utf-8")  # the others are never decoded by the server
    except UnicodeEncodeError:
        assert resp.status == 400, where  # not UTF-8 once decoded
        return
    s = number_kind(since, 0, 2 ** 63 - 1)
    n = number_kind(limit, 1, 10000)
    if "bad" in (s, n) or "out" in (s, n):
        assert resp.status == 400, where
        assert got["errno"] == 107 and got.get("details", {}).get("field") in ("since", "limit"), where
        return
    if "unclear" in (s, n):
        assert resp.status in (200, 400), where
        if resp.status == 400:
            return
    assert resp.status == 200, where
    changes = got["changes"]
    serials = [c["serial"] for c in changes]
    assert serials == sorted(set(serials)), where
    assert all(c == server.records[(c["addon_id"], c["sha256"])] for c in changes), where
    since_value = 0 if s == "default" else s
    limit_value = 1000 if n == "default" else n
    if isinstance(since_value, int) and isinstance(limit_value, int):
        wanted = [r for r in server.feed if r["serial"] > since_value][:limit_value]
        assert changes == wanted, where
        assert got["next_since"] == (wanted[-1]["serial"] if wanted else since_value), where


# Bugs found: minimal reproductions (fixed: regression tests; open: strict xfail) -------------

# BUG-1 (fixed): the original API echoed id/sha256 through the strict JSON encoder,
# so NaN, Infinity, 1e999, lone surrogates (and MessagePack bin/ext values) gave a 500.
@pytest.mark.parametrize("path,ctype,body", [
    ("/addon", "application/json", b'{"id": NaN, "sha256": "x"}'),
    ("/addon", "application/json", b'{"id": "x@example.com", "sha256": 1e999}'),
    ("/addon", "application/json", b'{"id": "\\ud800", "sha256": "x"}'),
    ("/addons", "application/json", b'{"addons": [{"id": -Infinity, "sha256": "x"}]}'),
    ("/addons", "application/json", b'{"addons": [{"id": "x", "sha256": "\\udfff"}]}'),
    ("/addon", "application/msgpack", b"\x82\xa2id\xc4\x01x\xa6sha256\x01"),  # {"id": b"x", "sha256": 1}
    ("/addon", "application/msgpack", b"\x82\xa2id\xd4\x01x\xa6sha256\x01"),  # {"id": ExtType(1, b"x"), ...}
    ("/addons", "application/msgpack", b"\x81\xa6addons\x91\x82\xa2id\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"
                                       b"\xa6sha256\xa0"),  # {"addons": [{"id": NaN, "sha256": ""}]}
])
def test_bug1_original_api_echo_of_unencodable_values(server: Server, path: str, ctype: str,
                                                      body: bytes) -> None:
    req = Request("POST", path, [("Content-Type", ctype)], body)
    resp = server.send(req)
    check_safe(req, resp)  # was: 500 errno 999


@pytest.mark.xfail(strict=True, reason="BUG-2: malformed HTTP framing/headers are refused by "
                                       "Tornado's HTTP1Connection with a bare 400 and no body")
@pytest.mark.parametrize("method,url,headers", [
    ("POST", "/v1/lookup", [("Content-Length", "abc")]),
    ("GET", "/v1/", [("Bad Name", "x")]),
    ("GET", "/v1/", [("X", "a\x01b")]),
    ("GET", "/v1/", [("Host", "a b")]),
    ("GET", "/v1/", [("Host", "a"), ("Host", "b")]),
    ("GET", "/v1/", [("Host", "a,b")]),
    ("POST", "/v1/lookup", [("Transfer-Encoding", "gzip")]),
    ("G(T", "/v1/", []),
])
def test_bug2_malformed_http_gets_a_bare_400(server: Server, method: str, url: str,
                                             headers: List[Tuple[str, str]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.proc.port, timeout=TIMEOUT)
    try:
        names = {k.lower() for k, _ in headers}
        conn.putrequest(method, url, skip_host="host" in names)
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        resp = conn.getresponse()
        result = Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()
    req = Request(method, url, headers)
    expect_error(req, result, {400})  # today: "HTTP/1.1 400 Bad Request" and an empty body


@pytest.mark.xfail(strict=True, reason="BUG-3: a Host port of more than 4300 digits makes "
                                       "Tornado's split_host_and_port raise ValueError: the "
                                       "connection is closed with no answer at all")
def test_bug3_host_with_huge_port_gets_no_answer(server: Server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.proc.port, timeout=TIMEOUT)
    try:
        conn.putrequest("GET", "/v1/", skip_host=True)
        conn.putheader("Host", "a:" + "9" * 4301)
        conn.endheaders()
        resp = conn.getresponse()  # today: RemoteDisconnected
        status = resp.status
        resp.read()
    finally:
        conn.close()
    assert status in (200, 400)


# BUG-4 (fixed): media.wants_msgpack looked for "msgpack" case-sensitively.
@pytest.mark.parametrize("path", ["/v1/lookup", "/nowhere"])
def test_bug4_accept_media_type_ignores_case(server: Server, path: str) -> None:
    body = to_json({"files": [{"addon_id": "fx@example.com", "sha256": _h(1)}]})
    req = Request("POST", path, [("Accept", "Application/MsgPack"),
                                 ("Content-Type", "application/json")], body)
    resp = server.send(req)
    check_safe(req, resp)
    check_negotiated(req, resp, "application/msgpack")  # was: JSON


# BUG-5 (fixed): get_query_argument(strip=True) let since/limit with spaces or control
# characters around pass, and str.isdigit() let non-ASCII digits pass, unlike docs/api.md.
@pytest.mark.parametrize("query", ["since=%201&limit=1", "since=1%0C", "limit=%0B5%20",
                                   "since=%01", "limit=%D9%A1", "since=%C2%B2"])
def test_bug5_changes_refuses_padded_or_foreign_digits(server: Server, query: str) -> None:
    req = Request("GET", "/v1/changes?" + query)
    resp = server.send(req)
    check_safe(req, resp)
    assert resp.status == 400, resp.body  # was: 200


def test_bug6_an_abandoned_body_does_not_hold_shutdown(server_process) -> None:
    """Was BUG-6: a body that never completed kept its request counted as in flight."""
    proc = server_process({"ADDONREG_PUBSUB": "local://", "ADDONREG_SHUTDOWN_TIMEOUT": "0.3"})
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
    try:  # a client that goes away in the middle of its lookup body
        conn.putrequest("POST", "/v1/lookup")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", "100")
        conn.endheaders(b'{"files": [')
        probe = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=TIMEOUT)
        probe.request("GET", "/__lbheartbeat__")  # the server has seen the headers by now
        assert probe.getresponse().status == 200
        probe.close()
        time.sleep(0.2)
    finally:
        conn.close()
    assert proc.stop() == 0
    log = "".join(proc.output)
    assert "still in flight" not in log, log[-600:]

"""A hostile look-alike of the addonreg service, on loopback, for the client's tests.

It speaks HTTP well enough for httpx and answers each request by the
*scenario* named in the first segment of its path: a client pointed at
``http://127.0.0.1:PORT/<scenario>`` gets that scenario's answers to
``GET /v1/``, ``GET /v1/addons/{id}/files/{sha256}`` and ``POST /v1/lookup``.
``valid`` answers as the service would (so the tests also show that a true
answer is believed); every other scenario lies in one way, named after it.

The server knows one registered file, :data:`FILE`; every other file is
unknown. It records each request it receives (``requests``) and, per
connection, how many body bytes it managed to send before the client went
away (``sent``): a client that stops reading at its cap leaves that number
near the cap, not at the 400 MB on offer.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from typing import Any
from urllib.parse import unquote

import msgpack

ADDON = "fx@example.com"
SHA = "a" * 64
OTHER_SHA = "b" * 64
FILE = (ADDON, SHA)
DRIP_EVERY = 2.0  # seconds between the drip's bytes
HUGE = 400 << 20


def record(addon_id: str = ADDON, digest: str = SHA, **changes: Any) -> dict:
    """A record; a field changed to ``...`` is left out."""
    body = {
        "addon_id": addon_id,
        "sha256": digest,
        "version": "1.0",
        "status": "registered",
        "serial": 7,
        "updated_at": "2026-11-27T18:00:00.000000Z",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not ...}


def not_found(addon_id: str, sha256: str) -> dict:
    return {
        "code": 404,
        "errno": 111,
        "error": "Not Found",
        "message": "this file is not registered",
        "details": {"addon_id": addon_id, "sha256": sha256},
    }


class _Handler(socketserver.StreamRequestHandler):
    server: LookAlike

    def handle(self) -> None:
        try:
            line = self.rfile.readline(65536).decode("latin-1")
            if not line:
                return
            method, target, _ = line.split(" ", 2)
            headers = {}
            while (header := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", "0") or 0))
            scenario, _, path = target.lstrip("/").partition("/")
            self.server.requests.append((scenario, method, "/" + path))
            self.answer(scenario, method, "/" + path, headers, body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- writing -------------------------------------------------------------

    def send(
        self,
        status: int,
        body: bytes | Any,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            if content_type == "application/msgpack":
                body = msgpack.packb(body)
            else:
                body = json.dumps(body).encode()
        head = {
            "Content-Type": content_type,
            "Content-Length": str(len(body) if length is None else length),
            "Connection": "close",
            **(extra or {}),
        }
        lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in head.items() if v]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        self.wfile.flush()

    def stream(self, head: bytes, chunks: int, chunk: bytes, every: float = 0.0) -> None:
        """Headers, then ``chunk`` ``chunks`` times: counts what the client took."""
        sent = 0
        try:
            self.wfile.write(head)
            for _ in range(chunks):
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if every:
                    time.sleep(every)
        except OSError:
            pass
        finally:
            self.server.sent.append(sent)

    # -- the scenarios ------------------------------------------------------

    def answer(
        self, scenario: str, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> None:
        parts = path.split("/")
        if path == "/v1/":
            settings: dict[str, Any] = {"max_lookup": 1000, "max_write": 5000}
            if scenario.startswith("max-lookup-"):
                settings["max_lookup"] = json.loads(unquote(scenario[len("max-lookup-") :]))
            return self.send(200, {"project_version": "9", "settings": settings})
        if path in ("/v1/lookup", "/v1/registrations") and method == "POST":
            decode = json.loads if "json" in headers.get("content-type", "") else msgpack.unpackb
            asked = decode(body)
            if path == "/v1/lookup":
                return self.lookup(scenario, asked["files"], headers.get("accept", ""))
            return self.registrations(scenario, asked["operations"], headers.get("accept", ""))
        if len(parts) == 6 and parts[:3] == ["", "v1", "addons"] and parts[4] == "files":
            addon_id, sha256 = unquote(parts[3]), parts[5]
            if method == "PUT" and scenario == "valid":
                return self.send(201, record(addon_id, sha256))
            if method == "DELETE" and scenario == "valid":
                return self.send(200, record(addon_id, sha256, status="revoked"))
            return self.file(scenario, addon_id, sha256)
        return self.send(
            404,
            {"code": 404, "errno": 111, "error": "Not Found", "message": "no such resource"},
        )

    def file(self, scenario: str, addon_id: str, sha256: str) -> None:
        known = (addon_id, sha256) == FILE
        truth = (200, record(addon_id, sha256)) if known else (404, not_found(addon_id, sha256))
        if scenario == "valid":
            return self.send(*truth)
        if scenario == "other-file":  # the record of another file, for any file asked
            return self.send(200, record(ADDON, OTHER_SHA if sha256 == SHA else SHA))
        if scenario == "other-addon":
            return self.send(200, record("evil@attacker.example", sha256))
        if scenario == "revoked-in-200":
            return self.send(200, record(addon_id, sha256, status="revoked"))
        if scenario == "registered-in-410":
            return self.send(410, record(addon_id, sha256))
        if scenario == "no-sha256":
            return self.send(200, record(addon_id, sha256, sha256=...))
        if scenario == "serial-text":
            return self.send(200, record(addon_id, sha256, serial="7"))
        if scenario == "version-escape":  # a terminal escape for the command to print
            return self.send(200, record(addon_id, sha256, version="1.0\x1b[2J\nregistered"))
        if scenario == "serial-bool":
            return self.send(200, record(addon_id, sha256, serial=True))
        if scenario == "html":  # a captive portal
            return self.send(200, b"<html><body>Sign in to the Wi-Fi</body></html>", "text/html")
        if scenario == "not-json":
            return self.send(200, b'{"addon_id": "fx@example.com", "sha2', "application/json")
        if scenario == "deep-json":
            return self.send(200, b"[" * 100_000 + b"]" * 100_000)
        if scenario == "truncated":  # Content-Length larger than the body
            return self.send(200, json.dumps(record(addon_id, sha256)).encode()[:40], length=500)
        if scenario == "huge-length":  # says 400 MB, and sends them
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n"
            return self.stream(head.encode(), HUGE >> 20, b" " * (1 << 20))
        if scenario == "huge-stream":  # no length: read until the connection closes
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n"
            return self.stream(head, HUGE >> 20, b" " * (1 << 20))
        if scenario == "drip":
            payload = json.dumps(record(addon_id, sha256)).encode()
            head = (
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n"
            )
            return self.stream(head.encode(), len(payload), b" ", every=DRIP_EVERY)
        if scenario in (
            "retry-after-once",
            "retry-after-always",
        ):  # a 503 asking for 11 days, then the truth
            if len(self.server.asked(scenario)) == 1 or scenario.endswith("-always"):
                error = {"code": 503, "errno": 201, "error": "Service Unavailable", "message": "x"}
                return self.send(503, error, extra={"Retry-After": "999999"})
            return self.send(*truth)
        if scenario == "redirect-away":
            away = f"http://127.0.0.1:{self.server.other_port}/valid/v1/addons/{addon_id}/files/{sha256}"
            return self.send(302, b"", extra={"Location": away})
        if scenario == "redirect-home":  # the same origin: followed
            return self.send(
                301, b"", extra={"Location": f"/valid/v1/addons/{addon_id}/files/{sha256}"}
            )
        if scenario == "route-404":  # "no such resource" for everything
            return self.send(
                404,
                {"code": 404, "errno": 111, "error": "Not Found", "message": "no such resource"},
            )
        if scenario == "other-404":  # a 404 naming another file
            return self.send(404, not_found(addon_id, OTHER_SHA))
        if scenario == "plain-404":  # a proxy's page
            return self.send(404, b"<h1>Not Found</h1>", "text/html")
        if scenario == "message-lines":  # a 400 whose message would spill over lines
            error = {
                "code": 400,
                "errno": 107,
                "error": "Bad Request",
                "message": "a\nb\r\nc" * 500,
            }
            return self.send(400, error)
        if scenario == "header-drip":  # the head itself, a byte every 2 s
            return self.stream(b"HTTP/1.1 200 OK\r\nX-Slow: ", 1000, b"x", every=DRIP_EVERY)
        return self.send(500, {"code": 500, "errno": 999, "message": f"no scenario {scenario}"})

    def lookup(self, scenario: str, files: list[dict], accept: str) -> None:
        kind = "application/msgpack" if "msgpack" in accept else "application/json"
        results = [
            {
                "addon_id": f["addon_id"],
                "sha256": f["sha256"],
                "status": "registered" if (f["addon_id"], f["sha256"]) == FILE else "unknown",
                "version": "1.0" if (f["addon_id"], f["sha256"]) == FILE else None,
            }
            for f in files
        ]
        if scenario == "reordered":
            results.reverse()
        elif scenario == "short":
            results = results[:-1]
        elif scenario == "long":
            results = results + results[:1]
        elif scenario == "bad-status":
            results[0]["status"] = "yes"
        elif scenario == "other-file":
            results[0]["sha256"] = OTHER_SHA if results[0]["sha256"] != OTHER_SHA else SHA
        elif scenario == "version-number":
            results[0]["version"] = 1
        elif scenario == "results-not-list":
            return self.send(200, {"results": "all good"}, kind)
        elif scenario == "html":
            return self.send(200, b"<html>portal</html>", "text/html")
        self.send(200, {"results": results}, kind)

    def registrations(self, scenario: str, ops: list[dict], accept: str) -> None:
        kind = "application/msgpack" if "msgpack" in accept else "application/json"
        after = {"register": "registered", "revoke": "revoked"}
        results = [
            {
                "addon_id": o["addon_id"],
                "sha256": o["sha256"],
                "status": after[o["op"]],
                "serial": n + 1,
            }
            for n, o in enumerate(ops)
        ]
        if scenario == "reordered":
            results.reverse()
        elif scenario == "short":
            results = results[:-1]
        elif scenario == "bad-status":  # a register answered as a revoke
            results[0]["status"] = "revoked"
        elif scenario == "serial-text":
            results[0]["serial"] = "1"
        self.send(200, {"results": results}, kind)


class LookAlike(socketserver.ThreadingTCPServer):
    """The server; ``base`` is its URL, ``url(scenario)`` a client's server URL."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, str, str]] = []
        self.sent: list[int] = []
        with socket.socket() as other:  # a port of another origin, for the redirects
            other.bind(("127.0.0.1", 0))
            self.other_port = other.getsockname()[1]
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, scenario: str) -> str:
        return f"{self.base}/{scenario}"

    def start(self) -> LookAlike:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def asked(self, scenario: str) -> list[tuple[str, str]]:
        return [(m, p) for s, m, p in self.requests if s == scenario]

"""config/nginx.conf in front of a real service: metrics only for the allowed, and
nginx's own errors with the contract's error body (issue F10, first-hour 5)."""

from __future__ import annotations

import asyncio
import json
import socket

import pytest

from addonreg.server import Service
from tests.conftest import make_settings
from tests.nginx import Nginx, need_nginx


@pytest.fixture
async def service():
    svc = await Service(make_settings("memory://")).start()
    yield svc
    await svc.stop()


async def raw(port: int, request: bytes) -> bytes:
    """``request`` as it is, the whole answer (in a thread: the service runs on this loop)."""
    return await asyncio.to_thread(_raw, port, request)


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def error_of(answer: bytes):
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body.startswith(b"{"), answer[:400]
    data = json.loads(body)
    assert int(head.split(b" ", 2)[1]) == data["code"]
    assert set(data) >= {"code", "errno", "error", "message"}
    return data["code"], data["errno"]


async def test_metrics_only_for_the_allowed(service, tmp_path):
    need_nginx()
    upstream = f"127.0.0.1:{service.port}"
    for allow, expected in (("allow 10.255.0.1;", (403, 121)), ("allow 127.0.0.1;", 200)):
        nginx = Nginx(tmp_path / allow.split()[1].strip(";"), read=upstream, metrics_allow=allow)
        try:
            answer = await raw(nginx.port, b"GET /__metrics__ HTTP/1.0\r\nHost: x\r\n\r\n")
            if expected == 200:
                assert answer.startswith(b"HTTP/1.1 200") and b"addonreg_requests" in answer
            else:
                assert error_of(answer) == expected
            assert (await raw(nginx.port, b"GET /v1/ HTTP/1.0\r\nHost: x\r\n\r\n")).startswith(
                b"HTTP/1.1 200"
            )  # the API itself stays public
        finally:
            nginx.stop()


@pytest.mark.parametrize(
    "request_bytes, expected",
    [
        (b"GET /v1/ HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", (400, 106)),
        (b"GET /v1/" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", (414, 107)),
        (b"GET /v1/ HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n", (431, 118)),
        (
            b"POST /v1/lookup HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            (501, 106),
        ),
    ],
)
async def test_nginx_errors_have_the_error_body(service, tmp_path, request_bytes, expected):
    need_nginx()
    nginx = Nginx(tmp_path / "nginx", read=f"127.0.0.1:{service.port}")
    try:
        assert error_of(await raw(nginx.port, request_bytes)) == expected
    finally:
        nginx.stop()

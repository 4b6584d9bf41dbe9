"""Any request, any body, any Host: always a safe answer."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.harness import (
    FUZZ,
    FUZZ_SMALL,
    Request,
    Server,
    check_negotiated,
    check_safe,
)
from tests.fuzz.strategies import ACCEPTS, GET_200, any_body, any_request

pytestmark = pytest.mark.subprocess


@FUZZ
@given(req=any_request())
def test_any_request_is_answered_safely(server: Server, req: Request) -> None:
    """Anything at any path: a well-formed answer, never a 5xx or a traceback."""
    resp = server.send(req)
    body = check_safe(req, resp)
    if resp.status == 0:
        return
    if req.method == "GET" and req.path in GET_200:
        if (
            resp.status == 400
            and "multipart/form-data" in (req.header("Content-Type") or "").lower()
        ):
            return  # Tornado parses form bodies of non-streaming handlers: a bad one is a 400
        assert resp.status == 200 and isinstance(body, dict), (
            req.describe(),
            resp.status,
            resp.body,
        )
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


@FUZZ_SMALL
@given(
    host=st.one_of(
        st.text(
            st.sampled_from(string.ascii_letters + string.digits + "-._~!$&'()*+;=[]:"),
            min_size=1,
            max_size=40,
        ),
        st.builds(
            lambda h, p: f"{h}:{p}",
            st.sampled_from(["example.com", "[::1]", "127.0.0.1", "a"]),
            st.text(string.digits, max_size=100),
        ),
    )
)
def test_host_header(server: Server, host: str) -> None:
    """Any Host that HTTP allows: GET /v1/ answers 200 and names itself under that host."""
    req = Request("GET", "/v1/", [("Host", host)])
    resp = server.send(req)
    body = check_safe(req, resp)
    assert resp.status == 200, (req.describe(), resp.status, resp.body)
    assert body["url"] == f"http://{host}/v1/", body

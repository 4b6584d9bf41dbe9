"""Each resource against an independent model of the contract."""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.fuzz.harness import (
    FUZZ,
    FUZZ_SMALL,
    SEEDS,
    Request,
    Server,
    _non_finite,
    check_negotiated,
    check_safe,
    expect_error,
    norm_sha,
    valid_id,
)
from tests.fuzz.strategies import (
    ACCEPTS,
    _packable,
    any_text,
    id_texts,
    junk_query,
    lookup_bodies,
    number_texts,
    old_bodies,
    path_segment,
    qs_encode,
    server_decoded,
    sha_prefixes,
    sha_texts,
    to_json,
    to_msgpack,
)

pytestmark = pytest.mark.subprocess


# Structured, nearly valid requests: answers checked against the model -------------------------
def _check_record(record: Any, expected: Dict[str, Any], req: Request) -> None:
    assert record == expected, f"{req.describe()}\n-> {record!r}\n   expected {expected!r}"


seeded_keys = st.builds(
    lambda key, p, upper: (key[0], p + (key[1].upper() if upper else key[1])),
    st.sampled_from([(a, s.split(":")[-1].lower()) for a, s, _ in SEEDS]),
    sha_prefixes,
    st.booleans(),
)


@st.composite
def file_segments(draw) -> Tuple[str, str]:
    """The two path segments of a file URL: often a seeded file, else near-valid junk."""
    addon_id, sha = draw(st.one_of(seeded_keys, st.tuples(id_texts, sha_texts)))
    return draw(path_segment(st.just(addon_id))), draw(path_segment(st.just(sha)))


@FUZZ
@given(
    segments=file_segments(),
    method=st.sampled_from(["GET", "GET", "HEAD"]),
    query=junk_query,
    accept=st.sampled_from(ACCEPTS),
)
def test_file_resource(
    server: Server, segments: Tuple[str, str], method: str, query: str, accept: Optional[str]
) -> None:
    """``GET``/``HEAD /v1/addons/{addon_id}/files/{sha256}``: 200, 404 or 400 as the model says."""
    id_seg, sha_seg = segments
    headers = [] if accept is None else [("Accept", accept)]
    req = Request(method, f"/v1/addons/{id_seg}/files/{sha_seg}{query}", headers)
    resp = server.send(req)
    addon_id, sha = server_decoded(id_seg), server_decoded(sha_seg)
    # An empty segment is an identifier breaking the rules like any other: 400 below.
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
    if addon_id is None:  # an empty segment decodes to "": a 400 below
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
    bad = [
        i
        for i, item in enumerate(files)
        if not (
            isinstance(item, dict)
            and valid_id(item.get("addon_id"))
            and norm_sha(item.get("sha256")) is not None
        )
    ]
    if len(files) > max_lookup:
        return ({413, 400} if bad else {413}), None
    if bad:
        return {400}, set(bad)
    results = []
    for item in files:
        key = (item["addon_id"], norm_sha(item["sha256"]))
        record = records.get(key)
        results.append(
            {
                "addon_id": key[0],
                "sha256": key[1],
                "status": record["status"] if record else "unknown",
                "version": record["version"] if record else None,
            }
        )
    return {200}, results


def _lone_surrogate(value: Any) -> bool:
    """A string (value or key) MessagePack can only carry as invalid UTF-8. Not every
    value JSON cannot write: an infinity, bytes or an extension in a field the lookup
    ignores is valid MessagePack, and ignored."""
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, (list, tuple)):
        return any(map(_lone_surrogate, value))
    if isinstance(value, dict):
        return any(_lone_surrogate(k) or _lone_surrogate(v) for k, v in value.items())
    return False


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
    if as_msgpack and _lone_surrogate(body):  # invalid UTF-8 in MessagePack
        statuses, expected = {400}, None
    if not as_msgpack and _non_finite(body):  # NaN/Infinity are not JSON
        statuses, expected = {400}, None
    note(f"model: {sorted(statuses)}")
    resp = server.send(req)
    if server.too_large(req, resp):
        return
    got = check_safe(req, resp)
    assert resp.status in statuses, (
        f"expected {sorted(statuses)}\n{req.describe()}\n-> {resp.status} {resp.body[:600]!r}"
    )
    check_negotiated(req, resp, accept)
    if resp.status == 400 and isinstance(expected, set):
        index = got.get("details", {}).get("index")
        assert index in expected, (req.describe(), got, sorted(expected)[:10])
    if resp.status == 200:
        assert "Accept" in (resp.header("Vary") or ""), req.describe()
        assert isinstance(got, dict) and isinstance(got.get("results"), list), got
        results = [
            {k: r.get(k) for k in ("addon_id", "sha256", "status", "version")}
            for r in got["results"]
        ]
        assert results == expected, (
            f"{req.describe()}\n-> {got['results'][:5]!r}...\n   expected {expected[:5]!r}..."
        )


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
        return {
            "id": item["id"],
            "sha256": item["sha256"],
            "registered": _registered(server.records, item["id"], item["sha256"]),
        }

    if path == "/addon":
        if not item_ok(body):
            assert resp.status == 400, where
            return
        assert resp.status == 200, where
        assert _canonical(got) == _canonical(answer(body)), where
        return
    items = body.get("addons")
    if not isinstance(items, list) or not all(item_ok(i) for i in items):
        allowed = (
            {400, 413} if isinstance(items, list) and len(items) > server.max_lookup else {400}
        )
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
@given(
    since=st.none() | number_texts,
    limit=st.none() | number_texts,
    extra=st.lists(
        st.tuples(st.sampled_from(["SINCE", "x", "since[]", "limit "]), any_text), max_size=2
    ),
    order=st.booleans(),
)
def test_changes_feed(
    server: Server,
    since: Optional[str],
    limit: Optional[str],
    extra: List[Tuple[str, str]],
    order: bool,
) -> None:
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
    s = number_kind(since, 0, 2**63 - 1)
    n = number_kind(limit, 1, 10000)
    if "bad" in (s, n) or "out" in (s, n):
        assert resp.status == 400, where
        assert got["errno"] == 107 and got.get("details", {}).get("field") in ("since", "limit"), (
            where
        )
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

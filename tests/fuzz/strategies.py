"""Hypothesis strategies: nearly valid ids, hashes, bodies and requests."""

from __future__ import annotations

import json
import string
from typing import Any, List, Optional, Tuple
from urllib.parse import quote_from_bytes, unquote_to_bytes

import msgpack
from hypothesis import strategies as st

from tests.fuzz.harness import MSGPACK_TYPES, SEED_IDS, SEED_SHAS, SEEDS, Request, _h, valid_id

ID_CHARS = string.ascii_letters + string.digits + "._-"
HEX_MIXED = "0123456789abcdefABCDEF"
ODD_CHARS = (
    " \t\n\r\x00\x7f+/\\%{}@#?&=:;,~!$*()[]<>\"'`^|\u00e9\u212a\u017f\u0130\u00df"
    "\uff10\u0660\u00a0\u200b\ufeff\ud800\U0001f600"
)


def hexes(n: int) -> st.SearchStrategy[str]:
    return st.text(HEX_MIXED, min_size=n, max_size=n)


guids = st.tuples(*(hexes(n) for n in (8, 4, 4, 4, 12))).map(lambda p: "{" + "-".join(p) + "}")
emails = st.builds(
    lambda local, domain: f"{local}@{domain}",
    st.text(ID_CHARS, max_size=12),
    st.text(ID_CHARS, min_size=1, max_size=16),
)
seed_ids = st.sampled_from(SEED_IDS)
long_ids = st.sampled_from([254, 255, 256, 300, 5000]).map(lambda n: "a" * (n - 2) + "@b")
valid_ids = st.one_of(
    seed_ids, seed_ids, seed_ids.map(str.swapcase), guids, emails, long_ids.filter(valid_id)
)


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
        return s[:i] + odd + s[i + 1 :]
    if op == "delete" and s:
        i = min(i, len(s) - 1)
        return s[:i] + s[i + 1 :]
    if op == "unbrace":
        return s.strip("{}")
    if op == "at":
        return s + "@" + s
    if op == "pad":
        return (
            draw(st.sampled_from([" ", "\n", "\t", "\x00"]))
            + s
            + draw(st.sampled_from(["", " ", "\n"]))
        )
    return s


SPECIAL_IDS = [
    "",
    "@",
    "@x",
    "x@",
    "a@b@c",
    "{}",
    "{00000000-0000-0000-0000-000000000000}",
    "00000000-0000-0000-0000-000000000000",
    "{00000000-0000-0000-0000-00000000000g}",
    "{0000000-0000-0000-0000-0000000000000}",
    "{00000000-0000-0000-0000-000000000000",
    "x@example.com\n",
    " x@example.com",
    "x@exam ple.com",
    "x@\u212aelvin",
    "\u017f@x",
    "\u0130@x",
    "x@ex%41mple.com",
    "x%40example.com",
    "%7Bx%7D",
    "..@..",
    "-@-",
    "x@\x00",
    "\ud800@x",
    "null",
    "fx@example.com/files",
]
id_texts = st.one_of(
    valid_ids, mutated(valid_ids), st.sampled_from(SPECIAL_IDS), st.text(max_size=20)
)

sha_prefixes = st.sampled_from(["", "", "sha256:", "SHA256:", "Sha256:"])
seed_shas = st.builds(
    lambda s, case, p: p + {"l": s, "u": s.upper(), "m": s[:32].upper() + s[32:]}[case],
    st.sampled_from(SEED_SHAS),
    st.sampled_from("lum"),
    sha_prefixes,
)
valid_shas = st.one_of(seed_shas, seed_shas, st.builds(str.__add__, sha_prefixes, hexes(64)))
SPECIAL_SHAS = [
    "",
    "sha256:",
    "sha256:sha256:" + "a" * 64,
    "sha1:" + "a" * 40,
    "a" * 63,
    "a" * 65,
    "sha256:" + "a" * 63,
    "a" * 128,
    "\uff10" * 64,
    "\u0660" * 64,
    "0x" + "a" * 62,
    "sha256: " + "a" * 64,
    "sha-256:" + "a" * 64,
]
sha_texts = st.one_of(
    valid_shas,
    mutated(valid_shas),
    st.sampled_from(SPECIAL_SHAS),
    st.text(HEX_MIXED + "sha:", max_size=80),
    st.text(max_size=10),
)

HUGE_NUMBERS = [
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    -(10**300),
    1e308,
    -1e308,
    5e-324,
    -0.0,
]
wrong_types = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
body_ids = st.one_of(id_texts, id_texts, wrong_types)
body_shas = st.one_of(sha_texts, sha_texts, wrong_types)


# Strategies: paths and queries ----------------------------------------------------------

_RAW_OK = frozenset(chr(c) for c in range(0x21, 0x7F)) - set("/?#%")
JUNK_PIECES = [
    "%",
    "%2",
    "%zz",
    "%C3",
    "%ff",
    "%00",
    "%2F",
    "%2f",
    "%252F",
    "{",
    "}",
    "@",
    "%7B",
    "%7d",
    "%40",
    ";",
    ";x=1",
    ".",
    "..",
    "%20",
    "+",
    "%E2%82",
    "%ED%A0%80",
]


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
    st.text(st.sampled_from(sorted(_RAW_OK | {"%", "?", "#", "/"})), max_size=30).map(
        lambda q: "?" + q
    ),
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=10)), max_size=4).map(
        lambda kv: "?" + "&".join(qs_encode(k) + "=" + qs_encode(v) for k, v in kv)
    ),
)

header_names = st.text(
    st.sampled_from("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits),
    min_size=1,
    max_size=20,
).filter(lambda n: n.lower() not in ("host", "content-length", "transfer-encoding", "expect"))
header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40
).map(lambda v: v.strip(" \t"))
ACCEPTS = [
    None,
    "application/msgpack",
    "application/json",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "*/*",
    "application/json, application/msgpack",
    "application/msgpack;q=0.1, application/json",
    "text/html",
    "application/*",
    "APPLICATION/MSGPACK",
    "msgpack",
    "",
]
CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.msgpack",
    "Application/MsgPack; charset=binary",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "",
]
SPECIAL_HEADERS = st.one_of(
    st.tuples(st.just("Accept"), st.sampled_from([a for a in ACCEPTS if a is not None])),
    st.tuples(
        st.just("Content-Type"), st.sampled_from([c for c in CONTENT_TYPES if c is not None])
    ),
    st.tuples(
        st.just("If-None-Match"),
        st.sampled_from(
            ["*", '"1"', 'W/"1"', '"1", "2"', '""', '"1-2"', "junk", '"' + "9" * 100 + '"']
        ),
    ),
    st.tuples(
        st.sampled_from(["X-Forwarded-For", "X-Real-Ip", "X-Scheme", "X-Forwarded-Proto"]),
        st.sampled_from(["", "1.2.3.4", "::1", "junk", "https", "a" * 300]),
    ),
    st.tuples(
        st.just("Authorization"),
        st.sampled_from(
            ["Hawk id=x", "Hawk", "Basic Zm9vOmJhcg==", 'Hawk id="a", ts="1", nonce="n", mac="m"']
        ),
    ),
    st.tuples(
        st.sampled_from(
            [
                "Connection",
                "Accept-Encoding",
                "Range",
                "Cookie",
                "Origin",
                "Upgrade",
                "TE",
                "Accept-Charset",
            ]
        ),
        st.sampled_from(
            [
                "close",
                "keep-alive",
                "gzip",
                "bytes=0-1",
                "a=b; c",
                "x" * 200,
                "websocket",
                "trailers",
                "utf-8",
            ]
        ),
    ),
)
headers_lists = st.lists(
    st.one_of(SPECIAL_HEADERS, st.tuples(header_names, header_values)), max_size=5
)


# Strategies: bodies ------------------------------------------------------------------------

_surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
any_text = st.text(st.one_of(st.characters(), _surrogates), max_size=12)
json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_NUMBERS),
    st.floats(),
    any_text,
    id_texts,
    sha_texts,
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(
                any_text,
                st.sampled_from(["files", "addons", "id", "sha256", "addon_id", "version"]),
            ),
            inner,
            max_size=4,
        )
    ),
    max_leaves=14,
)
msgpack_leaves = st.one_of(
    json_leaves.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**64),
    st.binary(max_size=16),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=8)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**32), st.integers(0, 999_999_999)),
)
msgpack_keys = st.one_of(
    st.text(max_size=6),
    st.integers(-5, 5),
    st.binary(max_size=4),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=False),
    st.tuples(st.integers(0, 3)),  # packed as an array: unhashable key
    st.sampled_from(["files", "addons", "id", "sha256", "addon_id"]),
)
msgpack_values = st.recursive(
    msgpack_leaves,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(msgpack_keys, inner, max_size=4),
    max_leaves=14,
)

SPECIAL_LITERALS = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e999",
    "-1e400",
    "1" * 4400,
    "-" + "9" * 5000,
    "1.0e-99999",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    "[" * 50 + "]" * 50,
    "{}",
    "[]",
    "null",
    "true",
    str(2**64),
    "0.1e1",
    '"' + "x" * 3000 + '"',
]
special_json = st.builds(
    lambda template, a, b: (template % (a, b)).encode(),
    st.sampled_from(
        [
            '{"id": %s, "sha256": %s}',
            '{"files": [{"addon_id": %s, "sha256": %s}]}',
            '{"addons": [{"id": %s, "sha256": %s}]}',
            '{"files": %s, "addons": %s}',
            "[%s, %s]",
            '{"addon_id": %s, "sha256": %s}',
        ]
    ),
    st.sampled_from(SPECIAL_LITERALS + ['"fx@example.com"']),
    st.sampled_from(SPECIAL_LITERALS + ['"%s"' % _h(1)]),
)


def to_json(value: Any, ensure_ascii: bool = True) -> bytes:
    return json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True).encode(
        "utf-8", "surrogatepass"
    )


def _packable(value: Any) -> Any:
    """``value`` with the ints MessagePack cannot carry (beyond 64 bits) made floats or text."""
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        return float(value) if abs(value) < 10**300 else str(value)
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
    n = draw(
        st.one_of(
            st.sampled_from([0, 1, 2, 999, 1000, 1001, 1100]),
            st.integers(0, 6),
            st.integers(0, 1100),
        )
    )
    pool = draw(st.lists(items, min_size=1, max_size=6))
    out = [pool[i % len(pool)] for i in range(n)]
    if n and draw(st.booleans()):
        out[draw(st.integers(0, n - 1))] = draw(items)
    return out


def file_items(valid_only: bool) -> st.SearchStrategy[Any]:
    good = st.fixed_dictionaries(
        {"addon_id": valid_ids, "sha256": valid_shas},
        optional={"version": json_leaves, "extra": json_leaves},
    )
    hits = st.builds(
        lambda key, p: {"addon_id": key[0], "sha256": p + key[1]},
        st.sampled_from([(a, s.split(":")[-1]) for a, s, _ in SEEDS]),
        sha_prefixes,
    )
    if valid_only:
        return st.one_of(good, hits, hits)
    return st.one_of(
        good,
        hits,
        st.fixed_dictionaries({"addon_id": body_ids, "sha256": body_shas}),
        st.fixed_dictionaries(
            {}, optional={"addon_id": body_ids, "sha256": body_shas, "id": body_ids}
        ),
        wrong_types,
    )


@st.composite
def lookup_bodies(draw) -> Any:
    files = draw(sized_list(file_items(draw(st.booleans()))))
    shape = draw(
        st.sampled_from(["files"] * 6 + ["extra", "not-list", "missing", "top-list", "scalar"])
    )
    if shape == "files":
        return {"files": files}
    if shape == "extra":
        return {"files": files, draw(st.text(max_size=5)): draw(json_leaves)}
    if shape == "not-list":
        return {
            "files": draw(
                st.one_of(
                    wrong_types.filter(lambda v: not isinstance(v, list)),
                    st.just({"addon_id": "fx@example.com", "sha256": _h(1)}),
                )
            )
        }
    if shape == "missing":
        return {"file": files}
    if shape == "top-list":
        return files
    return draw(json_leaves)


def old_items(valid_only: bool) -> st.SearchStrategy[Any]:
    good = st.builds(lambda a, s: {"id": a, "sha256": s}, valid_ids, valid_shas)
    hits = st.sampled_from([{"id": a, "sha256": s} for a, s, _ in SEEDS])
    if valid_only:
        return st.one_of(
            good, hits, st.builds(lambda a, s: {"id": a, "sha256": s}, body_ids, body_shas)
        )
    return st.one_of(
        good,
        hits,
        st.builds(lambda a, s: {"id": a, "sha256": s}, body_ids, body_shas),
        st.fixed_dictionaries(
            {},
            optional={
                "id": body_ids,
                "sha256": body_shas,
                "addon_id": body_ids,
                "registered": st.booleans(),
            },
        ),
        wrong_types,
    )


@st.composite
def old_bodies(draw, path: str) -> Any:
    if path == "/addon":
        return draw(st.one_of(old_items(True), old_items(False), wrong_types))
    items = draw(sized_list(old_items(draw(st.booleans()))))
    return draw(
        st.sampled_from(
            [
                {"addons": items},
                {"addons": items},
                {"addons": items, "x": 1},
                {"addon": items},
                items,
                {"addons": {"id": "x@y"}},
            ]
        )
    )


# Generic fuzzing: every endpoint, any method, path, query, header and body ---------------------

READ_PATHS = [
    "/v1/addons/{id}/files/{sha}",
    "/v1/addons/{id}/files",
    "/v1/lookup",
    "/v1/changes",
    "/v1/",
    "/v1",
    "/addon",
    "/addons",
    "/__heartbeat__",
    "/__lbheartbeat__",
    "/__version__",
]
OTHER_PATHS = [
    "/",
    "",
    "*",
    "/v2/",
    "/v1/addons",
    "/v1/addons/{id}",
    "/v1/addons/{id}/",
    "/v1/addons/{id}/files/",
    "/v1/addons/{id}/files/{sha}/",
    "/v1/addons/{id}/files/{sha}/x",
    "/v1/addons/{id}/{sha}",
    "/v1/jobs/{id}",
    "/v1/registrations",
    "/hash",
    "//v1//",
    "/v1//lookup",
    "/v1/lookup/",
    "/V1/",
    "/__version__/x",
    "/addon/",
    "http://127.0.0.1/v1/",
    "/%76%31/",
    "/v1/%6cookup",
    "/{id}",
    "/.%2e/v1/",
    "/v1/changes/",
    "/favicon.ico",
    "/v1/addons/{id}/files/{sha}%00",
    "/{junk}",
]
METHODS = (
    ["GET"] * 6
    + ["HEAD"] * 2
    + ["POST"] * 5
    + [
        "PUT",
        "DELETE",
        "PATCH",
        "OPTIONS",
        "TRACE",
        "CONNECT",
        "get",
        "Post",
        "PROPFIND",
        "BREW",
        "M-SEARCH",
    ]
)
tokens = st.text(
    st.sampled_from("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits),
    min_size=1,
    max_size=12,
)
junk_segments = st.text(st.sampled_from(sorted(_RAW_OK | {"%"})), max_size=20)


@st.composite
def any_body(draw, path: str) -> Tuple[Optional[bytes], Optional[str]]:
    """A body and its Content-Type (None: no header)."""
    kind = draw(
        st.sampled_from(["none", "raw", "json", "msgpack", "special", "lookup", "old", "mutated"])
    )
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
        encoded = encoded[:cut] + draw(st.binary(max_size=3)) + encoded[cut + 1 :]
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
        query = "?" + "&".join(
            f"{k}={qs_encode(v)}"
            for k, v in draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["since", "limit", "x"]), st.one_of(number_texts, any_text)
                    ),
                    max_size=3,
                )
            )
        )
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
    st.integers(0, 2**63 - 1).map(str),
    st.integers(-10, 20).map(str),
    st.integers(0, 12000).map(str),
    st.sampled_from(
        [
            "",
            "0",
            "00",
            "007",
            "1",
            str(2**63 - 1),
            str(2**63),
            str(2**64),
            "9" * 20,
            "9" * 5000,
            "0" * 30 + "5",
            "+1",
            "-0",
            " 1",
            "1 ",
            "1_000",
            "1e3",
            "0x10",
            "1.0",
            "\u0661",
            "\u0663\u0662",
            "\u00b2",
            "\uff11",
            "NaN",
            "inf",
            "true",
            "null",
            "[]",
            "%",
            "\x00",
            "10000",
            "10001",
        ]
    ),
    st.text(max_size=8),
)

GET_200 = {"/v1/", "/v1", "/__version__", "/__lbheartbeat__", "/__heartbeat__"}

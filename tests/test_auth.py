"""Hawk authentication (addonreg.hawk, addonreg.nonces): what is accepted, what is refused and
with which errno, nonces (in memory, and shared through a real Redis), and a
Redis that is down.

Redis tests use ``$ADDONREG_TEST_REDIS`` (default ``redis://127.0.0.1:6379/0``)
under a key prefix of their own, deleted afterwards. When Redis is not
reachable they skip with the reason, unless ``ADDONREG_REQUIRE_SERVICES=1``,
where they fail.
"""

import base64
import hashlib
import hmac
import logging
import time
import uuid

import mohawk
import mohawk.exc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addonreg.hawk import (
    AuthError,
    HawkAuthenticator,
    MacMismatch,
    PayloadMismatch,
    StaleTimestamp,
    parse_header,
    sign,
    www_authenticate,
)
from addonreg.nonces import MemoryNonceStore, NonceStoreError, RedisNonceStore
from tests.conftest import REDIS_URL, need_redis

KEY = "s3cret-key-that-must-never-show"
OTHER_KEY = "another-secret-key-never-shown"
CREDENTIALS = {"amo": KEY, "tools": OTHER_KEY}
URL = "https://addonreg.example:8443/v1/registrations?x=1"
BODY = b'{"operations": [{"op": "register", "addon_id": "a@b", "sha256": "' + b"a" * 64 + b'"}]}'
JSON = "application/json"


@pytest.fixture
async def redis_stores():
    """Factory of RedisNonceStores (think: one per process) sharing one fresh key prefix."""
    need_redis()
    prefix = f"addonreg-test:{uuid.uuid4().hex}:"
    stores = []

    def make() -> RedisNonceStore:
        store = RedisNonceStore.from_url(REDIS_URL, prefix=prefix)
        stores.append(store)
        return store

    yield make
    cleaner = make()
    keys = [k async for k in cleaner.client.scan_iter(match=prefix + "*")]
    if keys:
        await cleaner.client.delete(*keys)
    for store in stores:
        await store.close()


def authenticator(nonces=None, **kw) -> HawkAuthenticator:
    return HawkAuthenticator(CREDENTIALS, nonces or MemoryNonceStore(), **kw)


async def check(
    auth: HawkAuthenticator, header, *, method="POST", url=URL, content=BODY, content_type=JSON
) -> str:
    return await auth.authenticate(
        method=method, url=url, authorization=header, content=content, content_type=content_type
    )


async def refused(auth: HawkAuthenticator, header, errno: int = 105, **kw) -> AuthError:
    with pytest.raises(AuthError) as info:
        await check(auth, header, **kw)
    error = info.value
    assert error.errno == errno, error.log_message
    assert error.message and error.log_message
    for text in (
        str(error),
        repr(error),
        error.message,
        error.log_message,
        www_authenticate(error),
    ):
        assert KEY not in text and OTHER_KEY not in text
    return error


# What is accepted.


async def test_valid_request_returns_the_credential_id():
    auth = authenticator()
    assert await check(auth, sign("amo", KEY, "POST", URL, BODY)) == "amo"
    assert await check(auth, sign("tools", OTHER_KEY, "POST", URL, BODY)) == "tools"


async def test_timestamp_within_the_skew_is_accepted():
    auth = authenticator()
    assert (
        await check(auth, sign("amo", KEY, "POST", URL, BODY, timestamp=int(time.time()) - 50))
        == "amo"
    )
    assert (
        await check(auth, sign("amo", KEY, "POST", URL, BODY, timestamp=int(time.time()) + 50))
        == "amo"
    )


async def test_content_type_parameters_do_not_matter():
    auth = authenticator()
    header = sign("amo", KEY, "POST", URL, BODY, content_type="application/json")
    assert await check(auth, header, content_type="Application/JSON; charset=utf-8") == "amo"


@pytest.mark.parametrize("content_type", [None, JSON])
async def test_empty_body_without_hash_is_accepted(content_type):
    auth = authenticator()
    header = sign("amo", KEY, "DELETE", URL)
    assert "hash=" not in header
    assert (
        await check(auth, header, method="DELETE", content=b"", content_type=content_type) == "amo"
    )


async def test_empty_body_with_a_hash_is_verified():
    auth = authenticator()
    header = sign("amo", KEY, "DELETE", URL, hash_content=True)
    assert "hash=" in header
    assert await check(auth, header, method="DELETE", content=b"", content_type=JSON) == "amo"
    # The hash covers the Content-Type: a different one does not match.
    header = sign("amo", KEY, "DELETE", URL, hash_content=True)
    error = await refused(auth, header, method="DELETE", content=b"", content_type=None)
    assert "hash" in error.message


async def test_url_without_port_uses_the_scheme_default():
    auth = authenticator()
    header = sign("amo", KEY, "PUT", "https://addonreg.example:443/v1/x", BODY)
    assert await check(auth, header, method="PUT", url="https://addonreg.example/v1/x") == "amo"


async def test_mohawk_logs_no_replay_warning(caplog):
    # mohawk warns on every request when it is not given a nonce callback.
    caplog.set_level(logging.DEBUG, logger="mohawk")
    await check(authenticator(), sign("amo", KEY, "POST", URL, BODY))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert all(KEY not in r.getMessage() for r in caplog.records)


# What is refused.


@pytest.mark.parametrize("header", [None, "", "   "])
async def test_missing_header_is_104(header):
    auth = authenticator()
    error = await refused(auth, header, 104)
    assert www_authenticate(error) == "Hawk"


@pytest.mark.parametrize(
    "header", ["Bearer abc", "Basic YW1vOnNlY3JldA==", 'Hawkish id="a"', 'Digest username="amo"']
)
async def test_other_scheme_is_104(header):
    await refused(authenticator(), header, 104)


async def test_unknown_id_is_105():
    error = await refused(authenticator(), sign("stranger", KEY, "POST", URL, BODY))
    assert "stranger" in error.log_message


async def test_wrong_key_is_105():
    error = await refused(authenticator(), sign("amo", OTHER_KEY, "POST", URL, BODY))
    assert error.message == "Invalid Hawk signature"


async def test_unknown_id_and_bad_mac_get_the_same_answer():
    # Otherwise a caller could probe which credential ids exist.
    unknown = await refused(authenticator(), sign("stranger", KEY, "POST", URL, BODY))
    bad_mac = await refused(authenticator(), sign("amo", OTHER_KEY, "POST", URL, BODY))
    assert (
        (unknown.errno, unknown.message, unknown.challenge)
        == (bad_mac.errno, bad_mac.message, bad_mac.challenge)
        == (105, "Invalid Hawk signature", None)
    )
    assert unknown.log_message != bad_mac.log_message


async def test_tampered_body_is_105():
    header = sign("amo", KEY, "POST", URL, BODY)
    await refused(authenticator(), header, content=BODY.replace(b"register", b"revoke"))
    await refused(authenticator(), header, content=b"")


async def test_tampered_content_type_is_105():
    header = sign("amo", KEY, "POST", URL, BODY)
    await refused(authenticator(), header, content_type="application/msgpack")


@pytest.mark.parametrize(
    "method, url",
    [
        ("PUT", URL),  # method
        ("POST", "https://addonreg.example:8443/v1/registrations?x=2"),  # query
        ("POST", "https://addonreg.example:8443/v1/registrationz?x=1"),  # path
        ("POST", "https://other.example:8443/v1/registrations?x=1"),  # host
        ("POST", "https://addonreg.example:8444/v1/registrations?x=1"),  # port
        ("POST", "https://addonreg.example/v1/registrations?x=1"),  # default port
        ("POST", "https://addonreg.example:80/v1/registrations?x=1"),
    ],
)
async def test_tampered_request_line_is_105(method, url):
    await refused(authenticator(), sign("amo", KEY, "POST", URL, BODY), method=method, url=url)


async def test_scheme_changes_the_default_port():
    header = sign("amo", KEY, "PUT", "https://addonreg.example/v1/x", BODY)
    await refused(authenticator(), header, method="PUT", url="http://addonreg.example/v1/x")


async def test_bad_port_in_host_is_105():
    header = sign("amo", KEY, "POST", URL, BODY)
    await refused(authenticator(), header, url="https://addonreg.example:99999/v1/x")
    await refused(authenticator(), header, url="https://addonreg.example:port/v1/x")


async def test_missing_payload_hash_with_a_body_is_105():
    header = sign("amo", KEY, "POST", URL, BODY, hash_content=False)
    assert "hash=" not in header
    error = await refused(authenticator(), header)
    assert error.message == "Payload hash missing"


async def test_stale_timestamp_is_105_with_the_server_time():
    auth = authenticator()
    error = await refused(
        auth, sign("amo", KEY, "POST", URL, BODY, timestamp=int(time.time()) - 61)
    )
    assert error.message == "Stale timestamp"
    challenge = www_authenticate(error)
    assert challenge.startswith("Hawk ts=")
    attrs = dict(part.split("=", 1) for part in challenge[len("Hawk ") :].split(", "))
    ts, tsm = attrs["ts"].strip('"'), attrs["tsm"].strip('"')
    assert abs(int(ts) - time.time()) < 5
    # tsm is the server time MAC'd with the client's key: the client can trust it.
    expected = hmac.new(KEY.encode(), f"hawk.1.ts\n{ts}\n".encode(), hashlib.sha256).digest()
    assert tsm == base64.b64encode(expected).decode()


async def test_future_timestamp_is_105():
    error = await refused(
        authenticator(), sign("amo", KEY, "POST", URL, BODY, timestamp=int(time.time()) + 120)
    )
    assert error.message == "Stale timestamp"


async def test_stale_timestamp_with_a_wrong_key_is_a_mac_error():
    # The MAC is checked first: no server time MAC'd for someone without the key.
    auth = authenticator()
    error = await refused(auth, sign("amo", OTHER_KEY, "POST", URL, BODY, timestamp=1000))
    assert error.message == "Invalid Hawk signature"
    assert www_authenticate(error) == "Hawk"


def _valid_attrs() -> dict:
    header = sign("amo", KEY, "POST", URL, BODY)
    return dict(
        (k, v.strip('"'))
        for k, v in (part.split("=", 1) for part in header[len("Hawk ") :].split(", "))
    )


def _header(attrs: dict) -> str:
    return "Hawk " + ", ".join(f'{k}="{v}"' for k, v in attrs.items())


@pytest.mark.parametrize(
    "header",
    [
        "Hawk",
        "Hawk ",
        "Hawk garbage",
        'Hawk id="amo"',
        'Hawk id="amo", ts="1", nonce="n"',  # no mac
        'Hawk id="amo", ts="abc", nonce="n", mac="bWFj"',  # ts not a number
        'Hawk id="amo", ts="1e9", nonce="n", mac="bWFj"',
        'Hawk id="amo", ts="' + "9" * 400 + '", nonce="n", mac="bWFj"',
        'Hawk id="amo", id="tools", ts="1", nonce="n", mac="bWFj"',  # duplicate attribute
        'Hawk id="amo", ts="1", nonce="n", mac="bWFj", evil="x"',  # unknown attribute
        'Hawk id="amo", ts="1", nonce="n\\"", mac="bWFj"',
        'Hawk id="amé", ts="1", nonce="n", mac="bWFj"',
        'Hawk\tid="amo"',
        "Hawk " + "x" * 5000,
    ],
)
async def test_malformed_header_is_105(header):
    error = await refused(authenticator(), header)
    assert error.message == "Malformed Hawk header"


async def test_valid_header_with_an_empty_attribute_is_105():
    attrs = _valid_attrs()
    attrs["nonce"] = ""
    await refused(authenticator(), _header(attrs))


# Nonces.


async def test_replayed_nonce_is_refused():
    auth = authenticator()
    header = sign("amo", KEY, "POST", URL, BODY)
    assert await check(auth, header) == "amo"
    error = await refused(auth, header)
    assert error.message == "Replayed nonce"
    # Signed anew (another timestamp, another request) but with the same nonce.
    other = sign(
        "amo", KEY, "PUT", URL, BODY, nonce=_valid_nonce(header), timestamp=int(time.time()) - 10
    )
    await refused(auth, other, method="PUT")


def _valid_nonce(header: str) -> str:
    return header.split('nonce="', 1)[1].split('"', 1)[0]


async def test_same_nonce_with_another_id_is_accepted():
    auth = authenticator()
    assert await check(auth, sign("amo", KEY, "POST", URL, BODY, nonce="n1")) == "amo"
    assert await check(auth, sign("tools", OTHER_KEY, "POST", URL, BODY, nonce="n1")) == "tools"


async def test_refused_requests_do_not_use_up_their_nonce():
    auth = authenticator()
    # Bad MAC, tampered body, stale timestamp: all carry nonce n2, none records it.
    await refused(auth, sign("amo", OTHER_KEY, "POST", URL, BODY, nonce="n2"))
    await refused(auth, sign("amo", KEY, "POST", URL, BODY, nonce="n2"), content=b"{}")
    await refused(auth, sign("amo", KEY, "POST", URL, BODY, nonce="n2", timestamp=1000))
    assert len(auth.nonces) == 0
    assert await check(auth, sign("amo", KEY, "POST", URL, BODY, nonce="n2")) == "amo"


async def test_replay_refused_by_another_process_sharing_redis(redis_stores):
    first, second = authenticator(redis_stores()), authenticator(redis_stores())
    header = sign("amo", KEY, "POST", URL, BODY)
    assert await check(first, header) == "amo"
    error = await refused(second, header)
    assert error.message == "Replayed nonce"
    await refused(first, header)
    # Per credential id, in Redis too.
    other = sign("tools", OTHER_KEY, "POST", URL, BODY, nonce=_valid_nonce(header))
    assert await check(second, other) == "tools"


async def test_redis_refused_request_does_not_use_up_its_nonce(redis_stores):
    first, second = authenticator(redis_stores()), authenticator(redis_stores())
    await refused(first, sign("amo", OTHER_KEY, "POST", URL, BODY, nonce="n3"))
    assert await check(second, sign("amo", KEY, "POST", URL, BODY, nonce="n3")) == "amo"


async def test_redis_down_raises_nonce_store_error_quickly():
    store = RedisNonceStore.from_url("redis://127.0.0.1:1/0", timeout=0.5)
    auth = authenticator(store)
    started = time.monotonic()
    with pytest.raises(NonceStoreError) as info:
        await store.check_and_remember("amo", "n", 0)
    assert info.value.original is not None
    with pytest.raises(NonceStoreError):
        await store.heartbeat()
    # A valid request cannot be let in unchecked: the store's error goes up
    # (the caller answers 503), it is not an authentication failure.
    with pytest.raises(NonceStoreError):
        await check(auth, sign("amo", KEY, "POST", URL, BODY))
    # An invalid one is refused before the store is asked.
    await refused(auth, sign("amo", OTHER_KEY, "POST", URL, BODY))
    assert time.monotonic() - started < 2
    await store.close()


# Construction, and keys kept out of sight.


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError):
        HawkAuthenticator(CREDENTIALS, MemoryNonceStore(), algorithm="md5")
    with pytest.raises(ValueError) as info:
        HawkAuthenticator({"amo": ""}, MemoryNonceStore())
    with pytest.raises(ValueError) as info:
        HawkAuthenticator({'a"b': KEY}, MemoryNonceStore())
    assert KEY not in str(info.value)


def test_repr_shows_no_key():
    auth = authenticator()
    assert "amo" in repr(auth)
    assert KEY not in repr(auth) and KEY not in str(auth)


async def test_sign_uses_long_random_nonces():
    nonces = {_valid_nonce(sign("amo", KEY, "POST", URL, BODY)) for _ in range(50)}
    assert len(nonces) == 50 and all(len(n) >= 20 for n in nonces)


async def test_verification_never_pretty_prints_the_body(monkeypatch):
    """mohawk formats its debug lines eagerly (40 % of a bulk write's CPU): not used here."""
    import pprint

    calls = []
    real = pprint.pformat
    monkeypatch.setattr(pprint, "pformat", lambda value, *a, **kw: calls.append(1) or real(value))
    big = b'{"operations": [' + b'{"op": "register"},' * 2000 + b"{}]}"
    assert await check(authenticator(), sign("amo", KEY, "POST", URL, big), content=big) == "amo"
    assert calls == []


# The verifier against mohawk's own Receiver -----------------------------------

_URLS = [
    "https://addonreg.example:8443/v1/registrations?x=1",
    "http://addonreg.example/v1/",
    "https://ADDONREG.example/v1/addons/a@b/files/" + "a" * 64,
    "http://127.0.0.1:8080/hash",
    "http://[::1]:9000/v1/jobs/abc?y=%20z",
    "https://addonreg.example:443/p;params?q",
    "http://h?x/p",
    "http://u@H:81/p",
    "http://h/p#frag",
    "http://h/p?",
    "http://h:8a/p",
    "http://h",
    "http://h/a b",
    "http://h\\x/p",
]


# Our verifier's exceptions, named as mohawk's for the same failure.
_SAME_AS_MOHAWK = {
    "MacMismatch": "MacMismatch",
    "PayloadMismatch": "MisComputedContentHash",
    "StaleTimestamp": "TokenExpired",
}


def _outcome(call):
    try:
        call()
    except mohawk.exc.HawkFail as exc:
        return type(exc).__name__
    except (MacMismatch, PayloadMismatch, StaleTimestamp) as exc:
        return _SAME_AS_MOHAWK[type(exc).__name__]
    except (ValueError, TypeError):
        return "malformed"
    return "ok"


def _credentials(ident):
    return {"id": ident, "key": KEY.encode(), "algorithm": "sha256"}


@settings(max_examples=300, deadline=None)
@given(
    sent_url=st.sampled_from(_URLS),
    url=st.sampled_from(_URLS),
    sent_method=st.sampled_from(["PUT", "POST", "delete"]),
    method=st.sampled_from(["PUT", "POST", "DELETE"]),
    sent_content=st.sampled_from([b"", BODY, b"x"]),
    content=st.sampled_from([b"", BODY, b"x"]),
    sent_type=st.sampled_from(["", JSON, "application/JSON; charset=utf-8", "text/plain"]),
    content_type=st.sampled_from(["", JSON, "application/json;q=1", "text/plain"]),
    hash_content=st.sampled_from([None, True, False]),
    key=st.sampled_from([KEY, OTHER_KEY]),
    offset=st.sampled_from([0, 59, -60, 61, -3600]),
    ext=st.sampled_from([None, "some ext", ""]),
    app=st.sampled_from([None, "app1"]),
)
def test_the_verifier_decides_as_mohawk_receiver(
    sent_url,
    url,
    sent_method,
    method,
    sent_content,
    content,
    sent_type,
    content_type,
    hash_content,
    key,
    offset,
    ext,
    app,
):
    """HawkAuthenticator.verify (one parse, no Receiver) against mohawk.Receiver."""
    if hash_content is None:
        hash_content = bool(sent_content)
    if "8a" in sent_url:
        sent_url = url if "8a" not in url else _URLS[0]  # mohawk cannot sign it
    sender = mohawk.Sender(
        {"id": "amo", "key": key.encode(), "algorithm": "sha256"},
        sent_url,
        sent_method,
        content=sent_content if hash_content else mohawk.base.EmptyValue,
        content_type=sent_type if hash_content else mohawk.base.EmptyValue,
        always_hash_content=hash_content,
        ext=ext,
        app=app,
        dlg="d" if app else None,
        _timestamp=int(time.time()) + offset,
    )
    header = sender.request_header
    auth = authenticator()
    attributes = auth._parse(header)
    ours = _outcome(
        lambda: auth.verify(attributes, KEY.encode(), method, url, content, content_type)
    )
    theirs = _outcome(
        lambda: mohawk.Receiver(
            _credentials,
            header,
            url,
            method,
            content=content,
            content_type=content_type,
            seen_nonce=lambda *a: False,
            accept_untrusted_content=not content,
            timestamp_skew_in_seconds=auth.skew,
        )
    )
    assert ours == theirs


@settings(max_examples=200, deadline=None)
@given(
    url=st.sampled_from([u for u in _URLS if "8a" not in u and "\\" not in u and " " not in u]),
    method=st.sampled_from(["PUT", "POST", "delete"]),
    content=st.sampled_from([b"", BODY, b"x"]),
    content_type=st.sampled_from(["", JSON, "application/JSON; charset=utf-8"]),
    hash_content=st.sampled_from([None, True]),
)
def test_mohawk_receiver_accepts_what_sign_signs(url, method, content, content_type, hash_content):
    header = sign("amo", KEY, method, url, content, content_type, hash_content=hash_content)
    mohawk.Receiver(
        _credentials,
        header,
        url,
        method,
        content=content,
        content_type=content_type,
        seen_nonce=lambda *a: False,
        accept_untrusted_content=not content,
    )


_KEYS = ["id", "ts", "nonce", "mac", "hash", "ext", "app", "dlg", "tsm", "error", "bogus", "ID"]
_VALUES = [
    "amo",
    "1700000000",
    "",
    "a b",
    'x="y',
    "back\\slash",
    "é",
    "abc\n",
    "+/=",
    "q'q",
    "a,b",
    "tab\t",
]
_SEPARATORS = [", ", ",", " ", "", " , ", ",  "]


@settings(max_examples=500, deadline=None)
@given(
    scheme=st.sampled_from(["Hawk", "hawk", "HAWK", "Basic", "Hawk\t"]),
    items=st.lists(
        st.tuples(st.sampled_from(_KEYS), st.sampled_from(_VALUES), st.sampled_from(_SEPARATORS)),
        max_size=7,
    ),
    tail=st.sampled_from(["", " ", ",", "junk", '"', 'x="1"']),
)
def test_the_header_parser_agrees_with_mohawk(scheme, items, tail):
    header = scheme + " " + "".join(f'{k}="{v}"{sep}' for k, v, sep in items) + tail
    try:
        theirs = mohawk.util.parse_authorization_header(header)
    except (mohawk.exc.HawkFail, ValueError):
        theirs = None
    try:
        ours = parse_header(header)
    except ValueError:
        ours = None
    if ours is not None:
        assert ours == theirs
    elif theirs is not None:
        # Stricter on one point only: mohawk's value check ends in `$`, which
        # lets a value end with a newline (impossible in a real HTTP header).
        assert any(v.endswith("\n") for v in theirs.values())

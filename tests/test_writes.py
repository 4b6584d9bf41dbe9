"""The write endpoints over a real server, on every backend: Hawk, PUT/DELETE, bulk, jobs."""

import msgpack
import pytest

from addonreg.hawk import sign
from addonreg.server import Service
from addonreg.storage.testing import sha
from tests.conftest import (
    BACKENDS,
    CREDS,
    Writer,
    assert_error,
    body,
    make_settings,
    wait_until,
)

pytestmark = pytest.mark.parametrize("storage_url", BACKENDS, indirect=True)


@pytest.fixture
async def service(storage_url):
    svc = await Service(make_settings(storage_url, hawk_credentials=CREDS)).start()
    yield svc
    await svc.stop()


@pytest.fixture
async def writer(service):
    w = Writer(f"http://127.0.0.1:{service.port}")
    yield w
    w.close()


def path(addon_id="fx@example.com", n=1):
    return f"/v1/addons/{addon_id}/files/{sha(n)}"


async def test_put_registers_then_is_idempotent(service, writer):
    r = await writer.signed("PUT", path(), {"version": "1.0"})
    assert r.code == 201
    record = body(r)
    assert (record["status"], record["version"], record["sha256"]) == ("registered", "1.0", sha(1))
    # the writing process answers the new state at once
    assert body(await writer.get(path())) == record
    again = await writer.signed("PUT", path(), {"version": "1.0"})
    assert again.code == 200 and body(again) == record
    empty = await writer.signed("PUT", path())  # no body: keeps the version
    assert empty.code == 200 and body(empty)["version"] == "1.0"
    stored = await service.store.get("fx@example.com", sha(1))
    assert stored.serial == record["serial"] and stored.version == "1.0"


async def test_put_after_cached_miss_and_delete_after_cached_hit(service, writer):
    assert (await writer.get(path())).code == 404  # cached "unknown"
    assert (await writer.signed("PUT", path())).code == 201
    assert (await writer.get(path())).code == 200
    lookup = await writer.post(
        "/v1/lookup", {"files": [{"addon_id": "fx@example.com", "sha256": sha(1)}]}
    )
    assert body(lookup)["results"][0]["status"] == "registered"
    r = await writer.signed("DELETE", path())
    assert r.code == 200 and body(r)["status"] == "revoked"
    gone = await writer.get(path())
    assert gone.code == 410 and body(gone)["serial"] == body(r)["serial"]
    listing = body(await writer.get("/v1/addons/fx@example.com/files"))
    assert [f["status"] for f in listing["files"]] == ["revoked"]
    again = await writer.signed("PUT", path())
    assert again.code == 200 and body(again)["status"] == "registered"
    assert (await writer.get(path())).code == 200


async def test_delete_unknown_is_404(service, writer):
    assert_error(await writer.signed("DELETE", path(n=9)), 404, 111)
    assert await service.store.last_serial() == 0


async def test_bad_input_on_writes(service, writer):
    assert_error(await writer.signed("PUT", "/v1/addons/nope/files/" + sha(1)), 400, 107)
    assert_error(await writer.signed("PUT", path(), {"version": ""}), 400, 107)
    assert_error(await writer.signed("PUT", path(), raw=b"[1]"), 400, 106)
    assert_error(await writer.signed("PUT", path(), raw=b"{oops"), 400, 106)
    assert await service.store.last_serial() == 0


async def test_registrations_bulk(service, writer):
    ops = [
        {"op": "register", "addon_id": "a@b", "sha256": sha(n), "version": str(n)}
        for n in range(10)
    ]
    ops += [
        {"op": "revoke", "addon_id": "a@b", "sha256": "SHA256:" + sha(3).upper()},
        {"op": "revoke", "addon_id": "x@y", "sha256": sha(1)},
    ]
    r = await writer.signed("POST", "/v1/registrations", {"operations": ops})
    assert r.code == 200
    results = body(r)["results"]
    assert len(results) == 12
    assert results[3] == {
        "addon_id": "a@b",
        "sha256": sha(3),
        "status": "registered",
        "serial": results[3]["serial"],
    }
    assert results[10]["status"] == "revoked" and results[10]["serial"] > results[9]["serial"]
    assert results[11] == {"addon_id": "x@y", "sha256": sha(1), "status": "unknown", "serial": None}
    serials = [x["serial"] for x in results[:11]]
    assert serials == sorted(serials) and len(set(serials)) == 11
    assert (await writer.get(f"/v1/addons/a@b/files/{sha(3)}")).code == 410
    assert len(await service.store.changes(0, 100)) == 10


async def test_a_revoke_may_carry_a_version_which_is_checked_and_not_used(service, writer):
    """The contract lets any operation carry a version (the OpenAPI document too); a
    revocation keeps the stored version. Once a 400 "a revoke takes no version"."""
    ops = [{"op": "register", "addon_id": "a@b", "sha256": sha(1), "version": "1.0"}]
    assert (await writer.signed("POST", "/v1/registrations", {"operations": ops})).code == 200
    revoke = {"op": "revoke", "addon_id": "a@b", "sha256": sha(1), "version": "2.0"}
    r = await writer.signed("POST", "/v1/registrations", {"operations": [revoke]})
    assert r.code == 200 and body(r)["results"][0]["status"] == "revoked"
    gone = body(await writer.get(f"/v1/addons/a@b/files/{sha(1)}"))
    assert gone["status"] == "revoked" and gone["version"] == "1.0"
    bad = dict(revoke, version="\x00")  # still checked by the identifier rules
    r = await writer.signed("POST", "/v1/registrations", {"operations": [bad]})
    assert assert_error(r, 400, 107)["details"] == {"index": 0, "field": "version"}


async def test_an_empty_id_or_hash_in_the_path_is_a_400_not_no_such_resource(service, writer):
    """An empty segment breaks the identifier rules like any bad id: 400 naming the
    field (once 404 errno 111 "no such resource", which the document did not list)."""
    for method in ("PUT", "DELETE"):
        r = await writer.signed(method, f"/v1/addons//files/{sha(1)}")
        assert assert_error(r, 400, 107)["details"] == {"field": "addon_id"}
        r = await writer.signed(method, "/v1/addons/a@b/files/")
        assert assert_error(r, 400, 107)["details"] == {"field": "sha256"}
    r = await writer.get(f"/v1/addons//files/{sha(1)}")
    assert assert_error(r, 400, 107)["details"] == {"field": "addon_id"}
    assert assert_error(await writer.get("/v1/addons//files"), 400, 107)
    assert await service.store.last_serial() == 0


async def test_registrations_msgpack(service, writer):
    payload = msgpack.packb(
        {"operations": [{"op": "register", "addon_id": "a@b", "sha256": sha(1)}]}
    )
    r = await writer.signed(
        "POST",
        "/v1/registrations",
        raw=payload,
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert r.code == 200 and r.headers["Content-Type"] == "application/msgpack"
    assert msgpack.unpackb(r.body)["results"][0]["status"] == "registered"


async def test_an_invalid_operation_rejects_the_whole_request(service, writer):
    ops = [{"op": "register", "addon_id": "a@b", "sha256": sha(n)} for n in range(5)]
    for bad, field in (
        (dict(ops[0], sha256="nothex"), "sha256"),
        (dict(ops[0], addon_id="nope"), "addon_id"),
        (dict(ops[0], version="\x00"), "version"),
    ):
        r = await writer.signed("POST", "/v1/registrations", {"operations": ops + [bad]})
        assert assert_error(r, 400, 107)["details"] == {"index": 5, "field": field}
    r = await writer.signed(
        "POST", "/v1/registrations", {"operations": ops + [dict(ops[0], op="delete")]}
    )
    assert assert_error(r, 400, 106)["details"] == {"index": 5}
    assert_error(await writer.signed("POST", "/v1/registrations", {"operations": []}), 400, 108)
    assert_error(await writer.signed("POST", "/v1/registrations", {"ops": ops}), 400, 106)
    r = await writer.signed("POST", "/v1/registrations", {"operations": ops * 1001})
    assert assert_error(r, 413, 117)["details"] == {"max_write": 5000}
    assert await service.store.last_serial() == 0


async def test_async_registrations_and_jobs(service, writer):
    ops = [{"op": "register", "addon_id": "a@b", "sha256": sha(n)} for n in range(50)]
    r = await writer.signed(
        "POST", "/v1/registrations", {"operations": ops}, headers={"Prefer": "respond-async"}
    )
    assert r.code == 202
    job = body(r)
    assert job["status"] == "queued" and r.headers["Location"] == f"/v1/jobs/{job['job']}"

    async def done():
        nonlocal state
        state = await writer.signed("GET", f"/v1/jobs/{job['job']}")
        return body(state)["status"] == "done"

    state = r
    await wait_until(done, "the job done", timeout=5, every=0.01)
    data = body(state)
    assert state.code == 200 and data["status"] == "done" and data["job"] == job["job"]
    assert [x["sha256"] for x in data["results"]] == [sha(n) for n in range(50)]
    assert (await writer.get(f"/v1/addons/a@b/files/{sha(7)}")).code == 200
    # another credential cannot see it; unknown jobs are 404; reading needs Hawk
    assert_error(await writer.signed("GET", f"/v1/jobs/{job['job']}", ident="other"), 404)
    assert_error(await writer.signed("GET", "/v1/jobs/nope"), 404)
    assert_error(await writer.get(f"/v1/jobs/{job['job']}"), 401, 104)


async def test_original_hash_endpoint(service, writer):
    r = await writer.signed("POST", "/hash", {"id": "a@b", "sha256": sha(1)})
    assert r.code == 202
    assert body(await writer.post("/addon", {"id": "a@b", "sha256": sha(1)}))["registered"] is True
    assert_error(await writer.signed("POST", "/hash", {"id": "bad", "sha256": sha(1)}), 400)
    assert_error(await writer.post("/hash", {"id": "a@b", "sha256": sha(2)}), 401)


async def test_authentication_failures_write_nothing(service, writer):
    r = await writer.fetch("PUT", path(), raw=b"{}")
    assert_error(r, 401, 104)
    assert r.headers["WWW-Authenticate"].startswith("Hawk")
    assert_error(await writer.signed("PUT", path(), key="wrong-key"), 401, 105)
    assert_error(await writer.signed("PUT", path(), ident="nobody", key="k"), 401, 105)
    # a tampered body: signed for one version, sent with another
    headers = {
        "Content-Type": "application/json",
        "Authorization": sign(
            "amo",
            CREDS["amo"],
            "PUT",
            writer.base + path(),
            b'{"version": "1"}',
            "application/json",
        ),
    }
    r = await writer.fetch("PUT", path(), raw=b'{"version": "2"}', headers=headers)
    assert_error(r, 401, 105)
    stale = await writer.signed("PUT", path(), timestamp=int(__import__("time").time()) - 120)
    assert_error(stale, 401, 105)
    assert "ts=" in stale.headers["WWW-Authenticate"]
    # signed for another host/port
    headers = {
        "Authorization": sign(
            "amo", CREDS["amo"], "DELETE", "http://other.example:80" + path(), b"", None
        )
    }
    assert_error(await writer.fetch("DELETE", path(), headers=headers), 401, 105)
    assert await service.store.last_serial() == 0


async def test_a_replayed_request_is_refused(service, writer):
    headers = {"Authorization": sign("amo", CREDS["amo"], "PUT", writer.base + path(), b"", None)}
    assert (await writer.fetch("PUT", path(), headers=headers)).code == 201
    assert_error(await writer.fetch("PUT", path(), headers=headers), 401, 105)


async def test_host_header_is_what_is_signed(service, writer):
    """Behind a load balancer the client signs the public host, which arrives as Host."""
    public = "http://registry.example.com"
    headers = {
        "Host": "registry.example.com",
        "Authorization": sign("amo", CREDS["amo"], "PUT", public + path(), b"", None),
    }
    assert (await writer.fetch("PUT", path(), headers=headers)).code == 201


async def test_a_version_no_utf8_can_hold_is_a_400_and_the_writer_goes_on(service, writer):
    # A lone surrogate is valid JSON (an escape) but not text storage can hold.
    raw = b'{"version": "1.0\\ud800"}'
    r = await writer.signed("PUT", path(n=5), raw=raw)
    assert assert_error(r, 400, 107)["details"] == {"field": "version"}
    assert await service.store.get("fx@example.com", sha(5)) is None
    assert (await writer.signed("PUT", path(n=6), {"version": "1.0 é ✓"})).code == 201


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
async def test_a_write_body_that_is_not_json_or_msgpack_is_a_415(service, writer, content_type):
    headers = {"Content-Type": content_type}  # "": sent empty
    put = await writer.signed("PUT", path(n=7), raw=b'{"version": "1.0"}', headers=headers)
    assert_error(put, 415, 109)
    ops = {"operations": [{"op": "register", "addon_id": "fx@example.com", "sha256": sha(8)}]}
    bulk = await writer.signed("POST", "/v1/registrations", ops, headers=headers)
    assert_error(bulk, 415, 109)
    for n in (7, 8):
        assert await service.store.get("fx@example.com", sha(n)) is None
    ok = await writer.signed(
        "PUT",
        path(n=7),
        raw=b'{"version": "1.0"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.code == 201

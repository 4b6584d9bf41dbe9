"""Every read endpoint of the contract, over a real server, on every backend."""

import asyncio
import json

import msgpack
import pytest

from addonreg.storage import Operation
from addonreg.storage.testing import sha
from tests.conftest import BACKENDS, assert_error, body

pytestmark = pytest.mark.parametrize("storage_url", BACKENDS, indirect=True)

GUID = "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"


async def seed(service, *ops):
    results = await service.store.apply(list(ops))
    for applied in results:
        if applied.changed:
            service.registry.apply_change(applied.record)
    return results


def reg(addon_id, n, version=None):
    return Operation("register", addon_id, sha(n), version)


def rev(addon_id, n):
    return Operation("revoke", addon_id, sha(n))


async def test_get_registered_file(service, client):
    [applied] = await seed(service, reg("fx@example.com", 1, "1.0"))
    r = await client.get(f"/v1/addons/fx@example.com/files/{sha(1)}")
    assert r.code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    data = body(r)
    assert data == {
        "addon_id": "fx@example.com",
        "sha256": sha(1),
        "version": "1.0",
        "status": "registered",
        "serial": applied.record.serial,
        "updated_at": data["updated_at"],
    }
    assert data["updated_at"].endswith("Z") and len(data["updated_at"]) == 27
    assert r.headers["Cache-Control"] == "public, max-age=300"
    assert r.headers["ETag"] == f'"{applied.record.serial}"'


async def test_hash_in_any_case_and_prefixed_and_percent_encoded_id(service, client):
    await seed(service, reg(GUID, 1))
    for addon_id in (GUID, "%7B6ba7b810-9dad-11d1-80b4-00c04fd430c8%7D"):
        for digest in (sha(1).upper(), "sha256:" + sha(1)):
            r = await client.get(f"/v1/addons/{addon_id}/files/{digest}")
            assert r.code == 200, (addon_id, digest)
            assert body(r)["addon_id"] == GUID and body(r)["sha256"] == sha(1)
    r = await client.get(f"/v1/addons/fx%40example.com/files/{sha(1)}")
    assert_error(r, 404)


async def test_head(service, client):
    await seed(service, reg("a@b", 1))
    get = await client.get(f"/v1/addons/a@b/files/{sha(1)}")
    head = await client.fetch("HEAD", f"/v1/addons/a@b/files/{sha(1)}")
    assert head.code == 200 and head.body == b""
    assert head.headers["Content-Length"] == str(len(get.body))
    assert head.headers["ETag"] == get.headers["ETag"]
    missing = await client.fetch("HEAD", f"/v1/addons/a@b/files/{sha(2)}")
    assert missing.code == 404 and missing.body == b""


async def test_unknown_file_is_404_with_short_cache(service, client):
    r = await client.get(f"/v1/addons/a@b/files/{sha(1)}")
    data = assert_error(r, 404, 111)
    assert data["details"] == {"addon_id": "a@b", "sha256": sha(1)}
    assert r.headers["Cache-Control"] == "public, max-age=30"
    assert "ETag" not in r.headers


async def test_revoked_file_is_410_with_record(service, client):
    await seed(service, reg("a@b", 1, "2"), rev("a@b", 1))
    r = await client.get(f"/v1/addons/a@b/files/{sha(1)}")
    data = assert_error(r, 410, 114)
    assert data["status"] == "revoked" and data["version"] == "2"
    assert data["addon_id"] == "a@b" and data["sha256"] == sha(1)
    assert data["serial"] == 2
    assert r.headers["ETag"] == '"2"'
    assert r.headers["Cache-Control"] == "public, max-age=300"


async def test_conditional_get(service, client):
    await seed(service, reg("a@b", 1))
    path = f"/v1/addons/a@b/files/{sha(1)}"
    etag = (await client.get(path)).headers["ETag"]
    r = await client.get(path, headers={"If-None-Match": etag})
    assert r.code == 304 and r.body == b""
    assert r.headers["ETag"] == etag and r.headers["Cache-Control"] == "public, max-age=300"
    r = await client.get(path, headers={"If-None-Match": f'"x", {etag}'})
    assert r.code == 304
    r = await client.get(path, headers={"If-None-Match": '"999"'})
    assert r.code == 200
    await seed(service, reg("a@b", 1, "new"))
    r = await client.get(path, headers={"If-None-Match": etag})
    assert r.code == 200 and body(r)["version"] == "new" and r.headers["ETag"] != etag


@pytest.mark.parametrize(
    "addon_id, digest",
    [
        ("not-an-id", sha(1)),
        ("a@b", "abc"),
        ("a@b", sha(1) + "0"),
        ("a%20b@c", sha(1)),
        ("{6ba7b810-9dad-11d1-80b4}", sha(1)),
        ("a@", sha(1)),
        ("a@b", "sha256:" + "g" * 64),
        ("%FF@b", sha(1)),
        ("x" * 250 + "@b.com", sha(1)),
    ],
)
async def test_bad_identifiers_are_400(service, client, addon_id, digest):
    r = await client.get(f"/v1/addons/{addon_id}/files/{digest}")
    data = assert_error(r, 400)
    assert data["errno"] in (106, 107)


async def test_addon_files(service, client):
    await seed(service, *[reg(GUID, n, str(n)) for n in range(5)], rev(GUID, 2), reg("x@y", 9))
    r = await client.get(f"/v1/addons/{GUID}/files")
    assert r.code == 200
    data = body(r)
    assert data["addon_id"] == GUID
    assert [f["sha256"] for f in data["files"]] == sorted(sha(n) for n in range(5))
    assert {f["sha256"]: f["status"] for f in data["files"]}[sha(2)] == "revoked"
    etag = r.headers["ETag"]
    assert r.headers["Cache-Control"] == "public, max-age=300"
    assert (
        await client.get(f"/v1/addons/{GUID}/files", headers={"If-None-Match": etag})
    ).code == 304
    await seed(service, reg(GUID, 7))
    r = await client.get(f"/v1/addons/{GUID}/files", headers={"If-None-Match": etag})
    assert r.code == 200 and len(body(r)["files"]) == 6


async def test_addon_files_unknown_and_invalid(service, client):
    r = await client.get("/v1/addons/nobody@example.com/files")
    assert_error(r, 404, 111)
    assert r.headers["Cache-Control"] == "public, max-age=30"
    assert_error(await client.get("/v1/addons/nobody/files"), 400, 107)


async def test_lookup_json(service, client):
    await seed(service, reg("a@b", 1, "1"), reg("a@b", 2), rev("a@b", 2))
    files = [
        {"addon_id": "a@b", "sha256": sha(1).upper()},
        {"addon_id": "a@b", "sha256": "sha256:" + sha(2)},
        {"addon_id": "c@d", "sha256": sha(3)},
        {"addon_id": "a@b", "sha256": sha(1)},
    ]
    r = await client.post("/v1/lookup", {"files": files})
    assert r.code == 200
    assert body(r) == {
        "results": [
            {"addon_id": "a@b", "sha256": sha(1), "status": "registered", "version": "1"},
            {"addon_id": "a@b", "sha256": sha(2), "status": "revoked", "version": None},
            {"addon_id": "c@d", "sha256": sha(3), "status": "unknown", "version": None},
            {"addon_id": "a@b", "sha256": sha(1), "status": "registered", "version": "1"},
        ]
    }


async def test_lookup_msgpack(service, client):
    await seed(service, reg("a@b", 1, "1"))
    payload = msgpack.packb(
        {"files": [{"addon_id": "a@b", "sha256": sha(1)}, {"addon_id": "a@b", "sha256": sha(5)}]}
    )
    r = await client.post(
        "/v1/lookup",
        raw=payload,
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert r.code == 200 and r.headers["Content-Type"] == "application/msgpack"
    assert [x["status"] for x in msgpack.unpackb(r.body)["results"]] == ["registered", "unknown"]
    # msgpack in, JSON out when msgpack is not accepted
    r = await client.post(
        "/v1/lookup", raw=payload, headers={"Content-Type": "application/msgpack"}
    )
    assert r.code == 200 and body(r)["results"][0]["status"] == "registered"
    # errors follow Accept too
    r = await client.post(
        "/v1/lookup",
        raw=b"\xc1",
        headers={"Content-Type": "application/msgpack", "Accept": "application/msgpack"},
    )
    assert r.code == 400 and msgpack.unpackb(r.body)["errno"] == 106


async def test_lookup_limits_and_validation(service, client):
    assert_error(await client.post("/v1/lookup", {"files": []}), 400)
    assert_error(await client.post("/v1/lookup", {"nope": 1}), 400)
    assert_error(await client.post("/v1/lookup", raw=b"{not json"), 400, 106)
    assert_error(await client.post("/v1/lookup", [1, 2]), 400, 106)
    many = [{"addon_id": "a@b", "sha256": sha(1)}] * 1001
    assert_error(await client.post("/v1/lookup", {"files": many}), 413, 117)
    ok = await client.post("/v1/lookup", {"files": many[:1000]})
    assert ok.code == 200 and len(body(ok)["results"]) == 1000
    bad = [{"addon_id": "a@b", "sha256": sha(1)}, {"addon_id": "a@b", "sha256": "xyz"}]
    data = assert_error(await client.post("/v1/lookup", {"files": bad}), 400, 107)
    assert data["details"] == {"index": 1, "field": "sha256"}
    data = assert_error(await client.post("/v1/lookup", {"files": [{"addon_id": "a@b"}]}), 400)
    assert data["details"]["index"] == 0


async def test_memoised_lookups_answer_as_the_general_path(service, client):
    """Once its files are memoised, a lookup is answered in one pass over the memo; the
    answer is byte for byte the one the general path gives, in both formats and in the
    2013 API, and what is not a checked key still goes the general way (its 400 too)."""
    await seed(service, reg("a@b", 1, "1"), reg("a@b", 2), rev("a@b", 2))
    keys = [("a@b", sha(1)), ("a@b", sha(2)), ("c@d", sha(3)), ("a@b", sha(1))]
    files = [{"addon_id": a, "sha256": s} for a, s in keys]
    legacy = [{"id": a, "sha256": s} for a, s in keys]
    packed = {"Content-Type": "application/msgpack", "Accept": "application/msgpack"}
    hits = service.registry.files.hits

    async def answers():
        return (
            (await client.post("/v1/lookup", {"files": files})).body,
            (
                await client.post("/v1/lookup", raw=msgpack.packb({"files": files}), headers=packed)
            ).body,
            (await client.post("/addons", {"addons": legacy})).body,
        )

    first = await answers()  # from storage, then memoised from the cache entries
    assert await answers() == first == await answers()
    assert service.registry.files.hits - hits >= 2 * 3 * 4
    assert json.loads(first[2]) == {
        "addons": [dict(i, registered=r) for i, r in zip(legacy, [True, False, False, True])]
    }
    # Not normalised, or not the canonical shape: the general path, the same answers.
    upper = [dict(f, sha256=f["sha256"].upper()) for f in files]
    assert (await client.post("/v1/lookup", {"files": upper})).body == first[0]
    extra = [dict(f, note="x") for f in files]
    assert (await client.post("/v1/lookup", {"files": extra, "more": 1})).body == first[0]
    echoed = body(
        await client.post("/addons", {"addons": [{"id": "a@b", "sha256": sha(1).upper()}]})
    )
    assert echoed == {"addons": [{"id": "a@b", "sha256": sha(1).upper(), "registered": True}]}
    # A bad item among memoised ones is still named.
    bad = files[:2] + [{"addon_id": "no id", "sha256": sha(1)}]
    data = assert_error(await client.post("/v1/lookup", {"files": bad}), 400, 107)
    assert data["details"] == {"index": 2, "field": "addon_id"}
    assert_error(await client.post("/v1/lookup", {"files": files * 251}), 413, 117)
    # A change reaches the memoised answer.
    await seed(service, rev("a@b", 1))
    results = body(await client.post("/v1/lookup", {"files": files}))["results"]
    assert [r["status"] for r in results] == ["revoked", "revoked", "unknown", "revoked"]


async def test_oversized_body_is_413(service, client):
    big = b'{"files": [' + b" " * (4 * 1024 * 1024) + b"]}"
    r = await client.post("/v1/lookup", raw=big)
    assert_error(r, 413, 113)


async def test_changes(service, client):
    await seed(service, *[reg("a@b", n) for n in range(5)])
    await seed(service, rev("a@b", 0))
    r = await client.get("/v1/changes")
    data = body(r)
    assert r.code == 200
    serials = [c["serial"] for c in data["changes"]]
    assert serials == sorted(serials) and len(serials) == 5
    assert data["next_since"] == serials[-1]
    assert data["changes"][-1]["status"] == "revoked"
    page = body(await client.get(f"/v1/changes?since={serials[0]}&limit=2"))
    assert [c["serial"] for c in page["changes"]] == serials[1:3]
    assert page["next_since"] == serials[2]
    end = body(await client.get(f"/v1/changes?since={serials[-1]}"))
    assert end == {"changes": [], "next_since": serials[-1]}
    for query in (
        "since=-1",
        "since=x",
        "limit=0",
        "limit=10001",
        "limit=1.5",
        "since=%D9%A1",
        "limit=1e3",
    ):
        assert_error(await client.get(f"/v1/changes?{query}"), 400, 107)
    assert (await client.get("/v1/changes?limit=10000")).code == 200


async def test_service_info(service, client):
    r = await client.get("/v1/")
    data = body(r)
    assert r.code == 200
    assert data["project_name"] == "addonreg" and data["http_api_version"] == "1"
    assert data["project_version"]
    assert data["settings"]["max_lookup"] == 1000 and data["settings"]["max_write"] == 5000
    assert "password" not in json.dumps(data) and "root@" not in json.dumps(data)


async def test_original_api(service, client):
    await seed(service, reg("a@b", 1), reg("a@b", 2), rev("a@b", 2))
    r = await client.post("/addon", {"id": "a@b", "sha256": sha(1).upper()})
    assert r.code == 200
    assert body(r) == {"id": "a@b", "sha256": sha(1).upper(), "registered": True}
    assert body(await client.post("/addon", {"id": "a@b", "sha256": sha(2)}))["registered"] is False
    assert body(await client.post("/addon", {"id": "junk", "sha256": 12})) == {
        "id": "junk",
        "sha256": 12,
        "registered": False,
    }
    assert_error(await client.post("/addon", {"id": "a@b"}), 400)
    assert_error(await client.post("/addon", raw=b"nope"), 400)
    items = [
        {"id": "a@b", "sha256": sha(1)},
        {"id": "a@b", "sha256": sha(2)},
        {"id": None, "sha256": "x"},
        {"id": "a@b", "sha256": "sha256:" + sha(1)},
    ]
    r = await client.post("/addons", {"addons": items})
    assert r.code == 200
    assert body(r) == {
        "addons": [dict(i, registered=reg_) for i, reg_ in zip(items, [True, False, False, True])]
    }
    # All valid: the bulk check; twice: the second from the rendered items.
    items = [
        {"id": "a@b", "sha256": sha(1).upper()},
        {"id": "a@b", "sha256": sha(2)},
        {"id": "c@d", "sha256": sha(3)},
        {"id": "a@b", "sha256": sha(1)},
    ]
    for _ in range(2):
        assert body(await client.post("/addons", {"addons": items})) == {
            "addons": [
                dict(i, registered=reg_) for i, reg_ in zip(items, [True, False, False, True])
            ]
        }
    assert body(await client.post("/addons", {"addons": []})) == {"addons": []}
    assert_error(await client.post("/addons", {"addons": [{"id": "a@b"}]}), 400)
    assert_error(await client.post("/addons", {"nope": []}), 400)


async def test_operations_endpoints(service, client):
    assert (await client.get("/__lbheartbeat__")).code == 200
    r = await client.get("/__heartbeat__")
    assert r.code == 200 and body(r) == {"storage": "ok", "pubsub": "ok", "nonces": "ok"}
    version = body(await client.get("/__version__"))
    assert set(version) == {"source", "version", "commit", "build"}


async def test_unknown_path_and_method(service, client):
    assert_error(await client.get("/nope"), 404, 111)
    r = await client.fetch("DELETE", "/v1/")
    assert_error(r, 405, 115)
    assert r.headers["Allow"] == "GET"


async def test_concurrent_misses_share_storage_queries(service, client):
    await seed(service, *[reg(f"a{i}@b", i, str(i)) for i in range(30)])
    before = service.registry.files.fills
    answers = await asyncio.gather(
        *(client.get(f"/v1/addons/a{i}@b/files/{sha(i)}") for i in range(30)),
        client.get(f"/v1/addons/a0@b/files/{sha(99)}"),
    )
    assert [r.code for r in answers] == [200] * 30 + [404]
    assert [body(r)["version"] for r in answers[:30]] == [str(i) for i in range(30)]
    calls = service.registry.files.fills - before
    assert 1 <= calls < 31

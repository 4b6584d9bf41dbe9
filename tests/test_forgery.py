"""F7, against a real service on Redis pub/sub: a forged invalidation (any MAC, or
even the right one) cannot make a process answer a file storage does not hold,
and a rejected message is counted in the metrics."""

from __future__ import annotations

import redis.asyncio

from addonreg.bus.redis import encode
from addonreg.server import Service
from addonreg.storage import Record
from addonreg.storage.testing import sha
from tests.conftest import (
    BUS_KEY,
    CREDS,
    REDIS_URL,
    Writer,
    make_settings,
    need_redis,
    redis_pubsub_url,
    wait_until,
)


async def test_forged_invalidations_pin_nothing_and_are_counted(tmp_path):
    need_redis()
    pubsub = redis_pubsub_url()
    service = await Service(
        make_settings(f"sqlite:///{tmp_path}/db.sqlite3", pubsub=pubsub, hawk_credentials=CREDS)
    ).start()
    client = Writer(f"http://127.0.0.1:{service.port}")
    raw = redis.asyncio.Redis.from_url(REDIS_URL)
    path = f"/v1/addons/evil@example.com/files/{sha(1)}"
    try:
        assert (await client.get(path)).code == 404  # cached: unknown
        forged = Record("evil@example.com", sha(1), "6.6.6", "registered", 2**62, 0)
        channel = pubsub.split("channel=", 1)[1]
        for key in (b"a key somebody guessed, 32 bytes", BUS_KEY.encode()):
            await raw.publish(channel, encode(key, b"attacker-origin!", 1, [forged]))

        async def metrics():
            return (await client.get("/__metrics__")).body.decode()

        async def rejected_counted():
            return 'addonreg_bus_events_total{event="rejected"} 1.0' in await metrics()

        await wait_until(rejected_counted, "the bad MAC counted")
        assert (await client.get(path)).code == 404  # storage holds no such file
        # A real write afterwards is seen, and a revoke too: nothing was pinned.
        assert (await client.signed("PUT", path)).code == 201
        assert (await client.get(path)).code == 200
        assert (await client.signed("DELETE", path)).code == 200
        assert (await client.get(path)).code == 410
    finally:
        await raw.aclose()
        client.close()
        await service.stop()

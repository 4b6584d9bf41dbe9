"""The Redis bus beyond the shared contract: the authenticated wire format, the
URL, forged and malformed messages, and Redis down, killed or frozen while the
storage feed carries changes on.
"""

from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from addonreg.bus import load_bus
from addonreg.bus.feed import FeedBus
from addonreg.bus.local import LocalBus
from addonreg.bus.redis import MessageError, RedisBus, decode, encode, parse_url
from addonreg.bus.testing import commit, sha
from addonreg.storage import Operation, Record
from tests.bus.conftest import with_channel
from tests.conftest import BUS_KEY, make_settings, need_redis, wait_until

KEY = BUS_KEY.encode()


def record(n: int) -> Record:
    return Record(f"addon{n}@example.com", sha(n), "1.0", "registered", n, 1_700_000_000_000_000)


def test_encode_decode_round_trip():
    payload = encode(KEY, b"o" * 16, 7, [record(1), record(2)._replace(status="revoked")])
    assert decode(KEY, payload) == (b"o" * 16, [record(1).key, record(2).key], 2)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"o": b"x", "s": 1}),
        msgpack.packb({"o": b"x", "s": 1, "r": [["a@b", b"short", None, 1, 1, 1]], "m": b""}),
    ],
)
def test_decode_refuses_malformed(payload):
    with pytest.raises(MessageError):
        decode(KEY, payload)


def test_decode_refuses_a_wrong_or_missing_mac():
    with pytest.raises(MessageError, match="MAC"):
        decode(KEY, encode(b"another key of the same length..", b"o", 1, [record(1)]))
    unsigned = msgpack.unpackb(encode(KEY, b"o", 1, [record(1)]))
    del unsigned["m"]  # what a process from before the MAC sends
    with pytest.raises(MessageError, match="MAC"):
        decode(KEY, msgpack.packb(unsigned))


def test_parse_url():
    assert parse_url("redis://h:1/2?channel=c&timeout=0.5") == (
        "redis://h:1/2",
        {"channel": "c", "timeout": 0.5},
    )
    for bad in (
        "redis://h:1/0?chanel=x",
        "redis://h:1/0?timeout=0",
        "redis://h:1/db",
        "redis://h:port/0",
        "redis://h:1/0?channel=",
    ):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_load_bus_picks_the_bus():
    store = object()
    assert isinstance(load_bus(make_settings(pubsub="local://"), store), LocalBus)
    assert isinstance(load_bus(make_settings(pubsub="feed://"), store), FeedBus)
    assert isinstance(load_bus(make_settings(pubsub="feed://"), store, subscribe=False), LocalBus)
    bus = load_bus(make_settings(pubsub="redis://127.0.0.1:1/3?channel=c1&timeout=0.5"), store)
    assert isinstance(bus, RedisBus) and (bus.channel, bus.timeout) == ("c1", 0.5)
    with pytest.raises(ValueError):
        load_bus(make_settings().replace(pubsub="kafka://broker:9092"), store)


async def test_forged_and_malformed_messages_change_nothing(processes):
    """F7: a message that fails its MAC is ignored and counted (metrics)."""
    bus, rec, _ = await processes("redis", backstop=30)
    raw = bus._commands
    forged = encode(
        b"guessed-key-guessed-key-guessed!", b"evil", 1, [record(1)._replace(serial=2**62)]
    )
    for payload in (forged, b"\x00garbage"):
        await raw.publish(bus.channel, payload)
    await commit(
        await processes("redis", backstop=30), [Operation("register", "z@y.example", sha(9))]
    )
    await rec.wait(lambda: ("z@y.example", sha(9)) in rec.forgotten, "a real change heard")
    assert rec.applied == [] and rec.forgotten == [("z@y.example", sha(9))]
    assert bus.stats()["rejected"] == 1 and bus.stats()["malformed"] == 1


async def test_redis_down_at_start_the_feed_carries_changes(processes, private_redis):
    url = with_channel(private_redis.base_url)  # never started
    started = time.perf_counter()
    a = await processes("redis", url=url, backstop=0.05)
    _, rec_b, _ = await processes("redis", url=url, backstop=0.05)
    assert time.perf_counter() - started < 10  # liveness: start() does not wait for Redis
    assert not a[0].subscribed and a[0].connected  # no Redis, but the feed is followed
    key = ("down@example.com", sha(1))
    await commit(a, [Operation("register", *key)])  # never raises for want of Redis
    await rec_b.wait(lambda: rec_b.heard(key), "the change carried by the feed")


async def test_redis_killed_and_back(processes, private_redis):
    private_redis.start()
    url = with_channel(private_redis.base_url)
    a = await processes("redis", url=url, backstop=30)
    b, rec_b, _ = await processes("redis", url=url, backstop=30)
    private_redis.kill9()
    await wait_until(lambda: not b.subscribed, "B sees the subscription drop")
    private_redis.start()
    await wait_until(lambda: b.subscribed and a[0].subscribed, "both subscribed again")
    key = ("back@example.com", sha(2))
    await commit(a, [Operation("register", *key)])
    await rec_b.wait(lambda: key in rec_b.forgotten, "delivery through Redis after restart")
    assert b.stats()["reconnects"] >= 1


async def test_a_frozen_redis_costs_at_most_the_backstop(processes, private_redis):
    """F6: Redis frozen (SIGSTOP, the link silently stalled): the feed still carries changes."""
    private_redis.start()
    url = with_channel(private_redis.base_url)
    a = await processes("redis", url=url, backstop=0.25)
    _, rec_b, _ = await processes("redis", url=url, backstop=0.25)
    private_redis.pause()
    try:
        key = ("frozen@example.com", sha(3))
        await commit(a, [Operation("register", *key)])
        await rec_b.wait(
            lambda: rec_b.heard(key), "the change through the feed", timeout=5
        )  # liveness; the contract's 1 s is measured in bench/
        assert key not in rec_b.forgotten  # it came from storage, not from Redis
    finally:
        private_redis.resume()


async def test_close_while_reconnecting_returns_promptly(processes, private_redis):
    url = with_channel(private_redis.base_url)  # never started: every attempt is refused
    for n in range(5):
        bus, _, _ = await processes("redis", url=url, backstop=30)
        await bus.publish([record(n + 1)])
        await asyncio.wait_for(bus.close(), 5)  # liveness: close never hangs


async def test_close_sends_what_is_queued(processes):
    need_redis()
    a, _, _ = await processes("redis", backstop=30)
    _, rec_b, _ = await processes("redis", backstop=30)
    for n in range(1, 51):
        await a.publish([record(n)])
    await a.close()  # at once: the 50 messages are still queued
    await rec_b.wait(lambda: len(rec_b.forgotten) == 50, "everything sent before closing")
    assert a.stats()["published"] == 50 and a.stats()["publish_errors"] == 0


async def test_a_message_tells_the_store_the_serial_it_carries(processes):
    """Reads must not answer older than a change heard of: the bus hands the message's
    highest serial to storage (``observe``) before the files are forgotten."""
    need_redis()
    a, _, _ = await processes("redis", backstop=30)
    _, rec_b, store_b = await processes("redis", backstop=30)
    observed: list = []
    store_b.observe = observed.append  # the hook a multi-node MySQL store implements
    await a.publish([record(5), record(9)])
    await rec_b.wait(lambda: len(rec_b.forgotten) == 2, "both files forgotten")
    assert observed == [9]

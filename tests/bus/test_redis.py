"""RedisBus against a real Redis: delivery, latency, gaps, garbage, outages.

Every test uses a channel of its own on the shared Redis; the tests that
kill Redis use a private ``redis-server`` (see ``conftest.py``).
"""

import asyncio
import signal
import statistics
import time
from urllib.parse import urlsplit

import msgpack
import pytest

from addonreg.bus import BusError, load_bus
from addonreg.bus.redis import (DEFAULT_CHANNEL, DEFAULT_TIMEOUT, MessageError, RedisBus, decode,
                                encode, parse_url)
from addonreg.storage import Record
from tests.bus.conftest import Recorder, record, wait_until, with_channel
from tests.conftest import make_settings
from tests.faults import TCPProxy

# The wire format -------------------------------------------------------------


def test_encode_decode_round_trip():
    records = [
        Record("{6f9d2d1a-4d36-4d9e-8d3b-1f0c7a1e5b2c}", "0" * 63 + "1", "1.0 β – 版 🦊", "registered",
               1, 0),
        Record("fx@example.com", "ff" * 32, None, "revoked", 2 ** 62, 1_764_266_400_123_456),
        Record("@empty-local.part", "a1" * 32, "", "registered", 7, 1),
    ]
    origin = bytes(range(16))
    payload = encode(origin, 42, records)
    assert decode(payload) == (origin, 42, records)
    raw = msgpack.unpackb(payload, raw=False)
    assert set(raw) == {"o", "s", "r"}
    assert raw["r"][0][1] == bytes.fromhex(records[0].sha256) and len(raw["r"][0][1]) == 32
    assert [row[3] for row in raw["r"]] == [1, 2, 1]
    assert raw["r"][1][2] is None
    assert decode(encode(origin, 1, [])) == (origin, 1, [])


GOOD_ROW = ["a@b", b"\x01" * 32, "1.0", 1, 5, 10]


def _message(**changes):
    message = {"o": b"origin", "s": 1, "r": [list(GOOD_ROW)]}
    message.update(changes)
    return msgpack.packb(message, use_bin_type=True)


def _row(index, value):
    row = list(GOOD_ROW)
    row[index] = value
    return _message(r=[row])


@pytest.mark.parametrize("payload", [
    b"", b"\xc1", b"not msgpack at all \xff\xfe", msgpack.packb([1, 2, 3]),
    msgpack.packb({"o": b"x", "s": 1}), _message(o="text"), _message(o=b""), _message(s=0),
    _message(s="1"), _message(s=True), _message(r={"a": 1}), _message(r=[GOOD_ROW[:5]]),
    _row(0, ""), _row(0, 5), _row(1, b"\x01" * 31), _row(1, "01" * 32), _row(2, 1.0),
    _row(3, 3), _row(3, True), _row(4, 0), _row(4, "5"), _row(5, 1.5),
    msgpack.packb({"o": b"x", "s": 1, "r": []}) + b"trailing",
], ids=lambda p: repr(p[:24]))
def test_decode_rejects_malformed(payload):
    with pytest.raises(MessageError):
        decode(payload)


# The URL and the loader --------------------------------------------------------


def test_parse_url():
    assert parse_url("redis://h:6379/2") == (
        "redis://h:6379/2", {"channel": DEFAULT_CHANNEL, "timeout": DEFAULT_TIMEOUT})
    assert parse_url("redis://:s3cret@h:7000/1?channel=x:y&timeout=0.25") == (
        "redis://:s3cret@h:7000/1", {"channel": "x:y", "timeout": 0.25})
    for bad in ("redis://h/0?chanel=x", "redis://h/0?channel=", "redis://h/0?timeout=0",
                "redis://h/0?timeout=soon", "redis://h/0?timeout=inf", "redis://h/0?db=3"):
        with pytest.raises(ValueError):
            parse_url(bad)


async def test_load_bus_redis():
    bus = load_bus(make_settings(pubsub="redis://127.0.0.1:1/3?channel=c1&timeout=0.5"))
    try:
        assert isinstance(bus, RedisBus)
        assert (bus.channel, bus.timeout) == ("c1", 0.5)
        assert "s3cret" not in repr(bus)
    finally:
        await bus.close()  # never started, never connected: still closes cleanly
    other = RedisBus("redis://127.0.0.1:1/0")
    assert other.origin != bus.origin and len(other.origin) == 16
    await other.close()


# Delivery ----------------------------------------------------------------------


async def test_a_change_reaches_the_other_process_within_100_ms(buses, redis_url, record_property):
    a, rec_a = await buses(redis_url)
    b, rec_b = await buses(redis_url)
    assert a.origin != b.origin and a.connected and b.connected
    assert rec_a.states == [True] and rec_b.states == [True]
    sent = []
    latencies = []
    for n in range(1, 21):
        batch = [record(n), record(1000 + n, version="ü-" + str(n), status="revoked"),
                 record(2000 + n, version=None)]
        before = time.perf_counter()
        await a.publish(batch)
        # Applied locally before publish() returned, not again later.
        assert rec_a.changes == sent + [batch]
        sent.append(batch)
        await rec_b.wait(lambda: len(rec_b.changes) == n, f"message {n} at B")
        latencies.append(rec_b.events[-1][2] - before)
    assert rec_b.changes == sent  # equal field by field (frozen dataclasses), in order
    assert all(isinstance(r, Record) for batch in rec_b.changes for r in batch)
    record_property("delivery_latency_ms_median", round(statistics.median(latencies) * 1000, 3))
    record_property("delivery_latency_ms_max", round(max(latencies) * 1000, 3))
    print(f"\nA -> B delivery over Redis: median {statistics.median(latencies) * 1000:.2f} ms, "
          f"max {max(latencies) * 1000:.2f} ms ({len(latencies)} messages)")
    assert max(latencies) < 0.1
    # B's message to A comes after A's own echoes on the channel: once A has
    # it, A has seen (and ignored) all of its own.
    reply = [record(99)]
    await b.publish(reply)
    await rec_a.wait(lambda: len(rec_a.changes) == len(sent) + 1, "B's message at A")
    assert rec_a.changes == sent + [reply]
    assert rec_a.resets == rec_b.resets == 0
    assert a.stats()["published"] == 20 and a.stats()["received"] == 1
    assert b.stats()["received"] == 20 and b.stats()["published"] == 1
    await a.heartbeat()
    await b.heartbeat()


async def test_a_burst_arrives_complete_and_in_order(buses, redis_url):
    a, _ = await buses(redis_url)
    b, rec_b = await buses(redis_url)
    batches = [[record(n)] for n in range(1, 501)]
    for batch in batches:  # publish() does not wait for Redis: these queue up
        await a.publish(batch)
    await rec_b.wait(lambda: len(rec_b.changes) == len(batches), "the whole burst", timeout=5)
    assert rec_b.changes == batches and rec_b.resets == 0


async def test_a_gap_in_the_sequence_drops_the_cache(buses, redis_url, raw_redis):
    a, rec_a = await buses(redis_url)
    b, rec_b = await buses(redis_url)
    channel = parse_url(redis_url)[1]["channel"]
    await a.publish([record(1)])
    await rec_b.wait(lambda: len(rec_b.changes) == 1, "first message")
    assert rec_b.resets == 0
    # A message from A's origin that skips one number: one was lost.
    await raw_redis.publish(channel, encode(a.origin, a.sequence + 2, [record(2)]))
    await rec_b.wait(lambda: len(rec_b.changes) == 2, "the message after the gap")
    assert rec_b.kinds()[-2:] == ["reset", "changes"]  # reset first, then its records
    assert rec_b.changes[-1] == [record(2)]
    # The next number in line: no reset.
    await raw_redis.publish(channel, encode(a.origin, a.sequence + 3, [record(3)]))
    await rec_b.wait(lambda: len(rec_b.changes) == 3, "the message after that")
    assert rec_b.resets == 1 and b.stats()["resets"] == 1
    # The same number again (a retried PUBLISH that had arrived): applied, no reset.
    await raw_redis.publish(channel, encode(a.origin, a.sequence + 3, [record(3)]))
    await rec_b.wait(lambda: len(rec_b.changes) == 4, "the repeated message")
    assert rec_b.resets == 1
    # A new origin's first message is taken as it is, whatever its number.
    await raw_redis.publish(channel, encode(b"newcomer", 500, [record(4)]))
    await rec_b.wait(lambda: len(rec_b.changes) == 5, "a newcomer's message")
    assert rec_b.resets == 1
    assert rec_a.resets == 0  # A ignores its own origin, even from elsewhere


async def test_malformed_messages_are_ignored(buses, redis_url, raw_redis):
    a, rec_a = await buses(redis_url)
    b, rec_b = await buses(redis_url)
    channel = parse_url(redis_url)[1]["channel"]
    garbage = [b"", b"\xc1\xc1", b"hello", msgpack.packb({"o": b"x"}), _row(1, b"short"),
               _row(3, 9), msgpack.packb({"o": b"x", "s": 1, "r": [[None] * 6]})]
    for payload in garbage:
        await raw_redis.publish(channel, payload)
    await wait_until(lambda: b.stats()["malformed"] == len(garbage), "garbage counted")
    await a.publish([record(1)])
    await rec_b.wait(lambda: rec_b.changes == [[record(1)]], "a good message after garbage")
    assert rec_b.resets == 0 and b.connected and rec_b.states == [True]
    assert a.stats()["malformed"] == len(garbage)


async def test_publish_with_redis_unreachable_never_raises(buses, redis_url):
    """A cannot reach Redis (its link goes through a proxy we cut); B can."""
    parts = urlsplit(redis_url)
    proxy = await TCPProxy(parts.hostname, parts.port or 6379).start()
    try:
        via_proxy = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        a, rec_a = await buses(via_proxy)
        b, rec_b = await buses(redis_url)
        await a.publish([record(1)])
        await rec_b.wait(lambda: len(rec_b.changes) == 1, "first message")

        await proxy.stop()
        await a.publish([record(2)])  # does not raise ...
        assert rec_a.changes[-1] == [record(2)]  # ... and A itself has the change
        await wait_until(lambda: a.stats()["publish_errors"] >= 1, "the failure counted")
        await rec_a.wait(lambda: rec_a.states[-1] is False, "A's subscription down")
        with pytest.raises(BusError):
            await a.heartbeat()

        await proxy.start()  # same port
        await a.publish([record(3)])
        await rec_b.wait(lambda: [record(3)] in rec_b.changes, "the next message", timeout=5)
        assert [record(2)] not in rec_b.changes
        kinds = rec_b.kinds()
        third = rec_b.changes.index([record(3)]) + 1  # its index among the "changes" events
        at = [i for i, kind in enumerate(kinds) if kind == "changes"][third - 1]
        assert "reset" in kinds[2:at], kinds  # B dropped its cache before applying record 3
        assert b.connected and rec_b.states == [True]
        await rec_a.wait(lambda: a.connected, "A subscribed again", timeout=5)
    finally:
        await proxy.stop()


async def test_a_lost_publish_is_announced_without_waiting_for_the_next_write(buses, redis_url):
    parts = urlsplit(redis_url)
    proxy = await TCPProxy(parts.hostname, parts.port or 6379).start()
    try:
        via_proxy = parts._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        a, _ = await buses(via_proxy)
        b, rec_b = await buses(redis_url)
        await a.publish([record(1)])
        await rec_b.wait(lambda: len(rec_b.changes) == 1, "first message")
        await proxy.stop()
        await a.publish([record(2)])
        await wait_until(lambda: a.stats()["publish_errors"] >= 1, "the failure counted")
        await proxy.start()
        # No further write: A's empty announcement shows B the gap.
        await rec_b.wait(lambda: rec_b.resets == 1, "B told of the lost message", timeout=5)
        assert rec_b.changes == [[record(1)]]
    finally:
        await proxy.stop()


async def test_a_dropped_subscription_resets_and_recovers(buses, private_redis):
    await private_redis.start()
    url = with_channel(private_redis.url)
    a, rec_a = await buses(url)
    b, rec_b = await buses(url)
    await a.publish([record(1)])
    await rec_b.wait(lambda: rec_b.changes == [[record(1)]], "delivery before the crash")

    private_redis.kill()
    down_at = time.perf_counter()
    await rec_b.wait(lambda: rec_b.states[-1] is False, "B sees the subscription drop", 2)
    assert not b.connected
    with pytest.raises(BusError):
        await b.heartbeat()

    await private_redis.start()
    await rec_b.wait(lambda: rec_b.states[-1] is True, "B subscribed again", timeout=5)
    assert rec_b.kinds()[-3:] == ["state:False", "reset", "state:True"]
    await rec_a.wait(lambda: a.connected, "A subscribed again", timeout=5)
    print(f"\nsubscription back {time.perf_counter() - down_at:.2f} s after the crash")
    await b.heartbeat()
    await a.publish([record(2)])
    await rec_b.wait(lambda: rec_b.changes[-1] == [record(2)], "delivery after the restart")
    assert b.stats()["reconnects"] == 1 and b.stats()["resets"] == rec_b.resets == 1


async def test_a_silent_redis_is_noticed_by_the_keepalive(buses, private_redis):
    """Redis frozen (SIGSTOP): the connection stays open but nothing answers."""
    await private_redis.start()
    url = with_channel(private_redis.url)
    bus, rec = await buses(url, keepalive=0.3, timeout=0.3)
    await asyncio.sleep(1.0)  # idle past keepalive + timeout: PINGed, and the PONG came
    assert rec.kinds() == ["state:True"]
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        await rec.wait(lambda: not bus.connected, "the silence noticed", timeout=3)
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    await rec.wait(lambda: bus.connected, "subscribed again", timeout=5)
    assert rec.kinds() == ["state:True", "state:False", "reset", "state:True"]


async def test_redis_down_at_start_then_up(buses, private_redis):
    """start() returns though Redis is down; the bus connects when it comes up."""
    url = with_channel(private_redis.url)
    started = time.perf_counter()
    bus, rec = await buses(url)
    assert time.perf_counter() - started < 2
    assert rec.states == [False] and not bus.connected
    with pytest.raises(BusError):
        await bus.heartbeat()
    await bus.publish([record(1)])  # applied here; not sent, and no exception
    assert rec.changes == [[record(1)]]
    await private_redis.start()
    await rec.wait(lambda: bus.connected, "connected once Redis is up", timeout=5)
    assert rec.kinds()[-2:] == ["reset", "state:True"]
    await bus.heartbeat()


async def test_close_while_reconnecting_returns_promptly(private_redis):
    """Closing must not hang whatever the receiving loop is doing (here: failing to connect)."""
    url = with_channel(private_redis.url)  # never started: every attempt is refused
    for n in range(15):
        bus = RedisBus.from_url(url, timeout=0.5)
        await bus.start(*Recorder().callbacks)
        await bus.publish([record(n + 1)])
        await asyncio.sleep(n * 0.007)
        started = time.perf_counter()
        await bus.close()
        assert time.perf_counter() - started < 1.5


async def test_close_sends_what_is_queued(buses, redis_url):
    a, _ = await buses(redis_url)
    b, rec_b = await buses(redis_url)
    for n in range(1, 51):
        await a.publish([record(n)])
    await a.close()  # at once: the 50 messages are still queued
    await rec_b.wait(lambda: len(rec_b.changes) == 50, "everything sent before closing")
    assert a.stats()["published"] == 50 and a.stats()["publish_errors"] == 0


async def test_close_then_publish(buses, redis_url):
    bus, rec = await buses(redis_url)
    await bus.close()
    await bus.close()
    await bus.publish([record(1)])  # a late write still reaches this process's cache
    assert rec.changes == [[record(1)]] and bus.stats()["publish_errors"] == 1

"""The nonce stores (addonreg.nonces): the contract suite (addonreg/nonces/testing.py)
on both, then what each adds: expiry in memory; sharing, hashed keys, one round
trip per loop pass, a Redis that is down, and one that restarted (F12), for Redis.

Redis tests use ``$ADDONREG_TEST_REDIS`` under a key prefix of their own,
deleted afterwards (private ``redis-server``s for restarts).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, AsyncIterator, Callable, List

import pytest
import redis.asyncio.connection

from addonreg.bus.redis import parse_url
from addonreg.nonces import (
    MemoryNonceStore,
    NonceStoreError,
    RedisNonceStore,
    load_nonce_store,
)
from addonreg.nonces.testing import NonceStoreContract
from tests.conftest import REDIS_URL, need_redis


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class TestMemoryNonceStore(NonceStoreContract):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryNonceStore]:
        store = MemoryNonceStore()
        yield store
        await store.close()

    async def test_forgets_after_twice_the_skew(self) -> None:
        clock = Clock()
        store = MemoryNonceStore(skew=60, clock=clock)
        assert await store.check_and_remember("amo", "n", 0)
        clock.now += 119
        assert not await store.check_and_remember("amo", "n", 0)
        clock.now += 1
        assert await store.check_and_remember("amo", "n", 0)
        assert not await store.check_and_remember("amo", "n", 0)

    async def test_prunes_expired_entries(self) -> None:
        clock = Clock()
        store = MemoryNonceStore(skew=60, clock=clock)
        for i in range(1000):
            assert await store.check_and_remember("amo", f"old{i}", 0)
        clock.now += 60
        for i in range(10):
            assert await store.check_and_remember("amo", f"new{i}", 0)
        assert len(store) == 1010
        clock.now += 61  # the old ones expire, the new ones not yet
        assert await store.check_and_remember("amo", "newest", 0)
        assert len(store) == 11
        clock.now += 1000
        store.prune()
        assert len(store) == 0


class TestRedisNonceStore(NonceStoreContract):
    @pytest.fixture
    async def stores(self) -> AsyncIterator[Callable[..., RedisNonceStore]]:
        """Factory of stores (think: one per process) sharing one fresh key prefix."""
        prefix = f"addonreg-test:{uuid.uuid4().hex}:"
        made: List[RedisNonceStore] = []

        def make(url: str = REDIS_URL, **kw: Any) -> RedisNonceStore:
            if url == REDIS_URL:
                need_redis()
            made.append(RedisNonceStore.from_url(url, prefix=prefix, **kw))
            return made[-1]

        yield make
        if made and made[0].client.connection_pool.connection_kwargs["port"] == 6379:
            keys = [k async for k in made[0].client.scan_iter(match=prefix + "*")]
            if keys:
                await made[0].client.delete(*keys)
        for store in made:
            await store.close()

    @pytest.fixture
    def store(self, stores: Callable[..., RedisNonceStore]) -> RedisNonceStore:
        return stores()

    async def test_shared_by_every_process(self, stores: Callable[..., RedisNonceStore]) -> None:
        first, second = stores(), stores()
        assert await first.check_and_remember("amo", "n", 0)
        assert not await second.check_and_remember("amo", "n", 0)
        assert await second.check_and_remember("tools", "n", 0)

    async def test_one_round_trip_per_loop_pass(self, store: RedisNonceStore) -> None:
        nonces = [f"n{i}" for i in range(40)] + ["n3", "n7"]  # two replays in the same pass
        answers = await asyncio.gather(*(store.check_and_remember("amo", n, 0) for n in nonces))
        assert answers == [True] * 40 + [False, False]
        assert store.round_trips == 1

    async def test_keys_are_hashed_and_expire(self, store: RedisNonceStore) -> None:
        key = store.key("amo", "a b:c*?[x]")
        assert key.startswith(store.prefix + "amo:") and len(key) == len(store.prefix) + 4 + 64
        assert await store.check_and_remember("amo", "a b:c*?[x]", 0)
        assert 110 <= await store.client.ttl(key) <= 120

    async def test_down_raises_nonce_store_error(
        self, stores: Callable[..., RedisNonceStore]
    ) -> None:
        store = stores("redis://127.0.0.1:1/0", timeout=0.5)
        with pytest.raises(NonceStoreError) as info:
            await asyncio.wait_for(store.check_and_remember("amo", "n", 0), 5)  # liveness
        assert info.value.original is not None
        with pytest.raises(NonceStoreError):
            await store.heartbeat()

    async def test_a_redis_restart_costs_no_write(
        self, stores: Callable[..., RedisNonceStore], private_redis: Any
    ) -> None:
        """F12: the pooled connection is dead after a restart; the call is retried on a new one."""
        private_redis.start()
        store = stores(private_redis.base_url)
        assert await store.check_and_remember("amo", "before", 0)
        private_redis.kill9()
        private_redis.start()
        assert await store.check_and_remember("amo", "after", 0) is True
        assert await store.check_and_remember("amo", "after", 0) is False

    async def test_a_call_sent_again_recognises_its_own_nonces(
        self, store: RedisNonceStore
    ) -> None:
        """What makes the retry safe: a reply lost after Redis stored the nonce."""
        keys = [store.key("amo", "x"), store.key("amo", "y")]
        assert await store._set_all(keys=keys, args=[store.ttl, "token-1"]) == [1, 1]
        assert await store._set_all(keys=keys, args=[store.ttl, "token-1"]) == [1, 1]
        assert await store._set_all(keys=keys, args=[store.ttl, "token-2"]) == [0, 0]


async def test_load_nonce_store_picks_the_backend() -> None:
    assert isinstance(load_nonce_store("local://"), MemoryNonceStore)
    assert isinstance(load_nonce_store("feed://"), MemoryNonceStore)
    remote = load_nonce_store("redis://127.0.0.1:6379/3?channel=c")
    assert isinstance(remote, RedisNonceStore) and remote.ttl == 120
    assert remote.client.connection_pool.connection_kwargs["db"] == 3
    await remote.close()
    with pytest.raises(ValueError):
        load_nonce_store("memcached://127.0.0.1")


async def test_load_nonce_store_reads_the_url_as_the_bus_does() -> None:
    """One parser of Redis URLs (bus.redis.parse_url): TLS, the database and the
    bus's options read the same way, and what the bus refuses is refused here."""
    tls = load_nonce_store("rediss://:pw@redis.example:6380/2?channel=c&timeout=5")
    assert isinstance(tls, RedisNonceStore) and tls.timeout == 5.0
    pool = tls.client.connection_pool
    assert pool.connection_class is redis.asyncio.connection.SSLConnection
    assert (pool.connection_kwargs["port"], pool.connection_kwargs["db"]) == (6380, 2)
    assert "channel" not in pool.connection_kwargs and "timeout" not in pool.connection_kwargs
    await tls.close()
    for bad in ("redis://h:1/0?chanel=x", "rediss://h:1/zero", "redis://h:1/0?timeout=0"):
        with pytest.raises(ValueError):
            parse_url(bad)
        with pytest.raises(ValueError):
            load_nonce_store(bad)

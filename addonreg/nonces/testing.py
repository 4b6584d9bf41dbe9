"""The shared nonce-store test suite: every store must pass all of it.

Subclass :class:`NonceStoreContract` and provide a ``store`` fixture: an
empty store (``tests/test_nonces.py`` runs it on the memory and the Redis
store). What a store adds (expiry, sharing between processes) is tested
beside it.
"""

from __future__ import annotations

import asyncio

from . import NonceStore

__all__ = ["NonceStoreContract"]


class NonceStoreContract:
    """What every store guarantees. Fixture ``store``: an empty store."""

    async def test_first_use_is_accepted_and_a_replay_refused(self, store: NonceStore) -> None:
        assert await store.check_and_remember("amo", "n1", 0) is True
        assert await store.check_and_remember("amo", "n1", 0) is False
        assert await store.check_and_remember("amo", "n2", 0) is True

    async def test_nonces_are_per_credential(self, store: NonceStore) -> None:
        assert await store.check_and_remember("amo", "n", 0)
        assert await store.check_and_remember("tools", "n", 0)
        assert not await store.check_and_remember("tools", "n", 0)

    async def test_the_same_nonce_twice_at_once_is_accepted_once(self, store: NonceStore) -> None:
        answers = await asyncio.gather(
            *(store.check_and_remember("amo", n, 0) for n in ["a", "b", "a", "c", "b", "a"])
        )
        assert answers == [True, True, False, True, False, False]

    async def test_odd_nonces_are_just_nonces(self, store: NonceStore) -> None:
        for odd in ("a b:c*?[x]\n\u00e9", "", "\ud800", "x" * 10_000):
            assert await store.check_and_remember("amo", odd, 0)
            assert not await store.check_and_remember("amo", odd, 0)

    async def test_heartbeat(self, store: NonceStore) -> None:
        await store.heartbeat()

"""What the RegistrationStore base class guarantees of every backend's operations."""

import asyncio
import sqlite3

import pytest

from addonreg.storage import BackendError
from addonreg.storage.memory import MemoryStore
from addonreg.storage.testing import reg, sha


class FlakyStore(MemoryStore):
    """The memory store with a driver, whose reads fail or stall on demand."""

    driver_errors = (sqlite3.Error,)
    unavailable = "Flaky unavailable"

    def __init__(self, timeout=None):
        super().__init__()
        self.timeout = timeout
        self.fail_with = None
        self.stall = 0.0

    async def _get(self, addon_id, sha256):
        await asyncio.sleep(self.stall)
        if self.fail_with is not None:
            raise self.fail_with
        return await super()._get(addon_id, sha256)


async def test_a_driver_error_becomes_a_backend_error_keeping_the_original():
    store = FlakyStore()
    store.fail_with = sqlite3.OperationalError("disk I/O error")
    with pytest.raises(BackendError, match="^Flaky unavailable: OperationalError") as info:
        await store.get("a@b", sha(1))
    assert info.value.original is store.fail_with and info.value.__cause__ is store.fail_with


async def test_other_exceptions_pass_as_they_are():
    store = FlakyStore()
    for error in (KeyError("a bug"), BackendError("the backend's own")):
        store.fail_with = error
        with pytest.raises(type(error)) as info:
            await store.get("a@b", sha(1))
        assert info.value is error


async def test_an_operation_past_the_timeout_is_a_backend_error():
    store = FlakyStore(timeout=0.01)
    await store.apply([reg("a@b", 1)])
    assert (await store.get("a@b", sha(1))).serial == 1
    store.stall = 10  # a liveness bound: the timeout ends it
    with pytest.raises(BackendError, match="^Flaky unavailable: TimeoutError") as info:
        await asyncio.wait_for(store.get("a@b", sha(1)), 5)
    assert isinstance(info.value.original, TimeoutError)


async def test_a_cancelled_caller_is_cancelled_not_a_backend_error():
    store = FlakyStore(timeout=5)
    store.stall = 10
    task = asyncio.ensure_future(store.get("a@b", sha(1)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

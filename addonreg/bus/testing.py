"""The shared bus test suite: every bus must pass all of it.

Subclass :class:`BusTests` and provide a ``make_bus`` fixture: an async
factory, ``await make_bus(start=True)`` -> ``(bus, Recorder, store)``, each
call standing for one more process over the same storage (and Redis), the
bus started with the recorder as its subscriber unless ``start=False``;
:class:`SharedBusTests` for a bus that reaches other processes. ``commit`` is
one process writing: it applies operations to its store and publishes the
changes on its bus, as the batcher does.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any, Callable, List, Sequence, Tuple

import pytest

from ..storage import Key, Operation, Record, RegistrationStore
from . import InvalidationBus

__all__ = ["Recorder", "BusTests", "SharedBusTests", "commit"]

LIVENESS = 5.0  # seconds: a bound for "it happens", not a latency (bench/ measures those)


class Recorder:
    """A :class:`~addonreg.bus.Subscriber` that records what it is told."""

    def __init__(self) -> None:
        self.applied: List[Record] = []
        self.forgotten: List[Key] = []
        self.resets = 0
        self.states: List[bool] = []
        self.fail_next_apply = False
        self._changed = asyncio.Event()

    def _note(self) -> None:
        self._changed.set()

    def apply_changes(self, records: Sequence[Record]) -> None:
        if self.fail_next_apply:
            self.fail_next_apply = False
            raise RuntimeError("cannot apply")
        self.applied.extend(records)
        self._note()

    def forget(self, keys: Sequence[Key]) -> None:
        self.forgotten.extend(keys)
        self._note()

    def invalidate_all(self) -> None:
        self.resets += 1
        self._note()

    def bus_state(self, connected: bool) -> None:
        self.states.append(connected)
        self._note()

    def heard(self, key: Key) -> bool:
        """Whether this process was told that ``key`` changed (a record, or a forget)."""
        return key in self.forgotten or any(r.key == key for r in self.applied)

    async def wait(
        self, predicate: Callable[[], bool], what: str, timeout: float = LIVENESS
    ) -> None:
        """Return once ``predicate()`` holds; fail after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"not within {timeout} s (liveness bound): {what}")


def sha(n: object) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


async def commit(
    process: Tuple[InvalidationBus, Recorder, RegistrationStore], ops: Sequence[Operation]
) -> List[Record]:
    """Apply ``ops`` to the process's store and publish the changes, as the batcher does."""
    bus, _, store = process
    results = await store.apply(ops)
    records = [a.record for a in results or () if a.changed and a.record is not None]
    await bus.publish(records)
    return records


class BusTests:
    """Tests of the :class:`~addonreg.bus.InvalidationBus` contract."""

    async def test_publish_applies_here_before_returning(self, make_bus: Any) -> None:
        bus, rec, store = process = await make_bus()
        [record] = await commit(process, [Operation("register", "a@b.example", sha(1), "1.0")])
        assert record in rec.applied
        assert bus.connected and rec.states[-1] is True
        await bus.heartbeat()

    async def test_empty_publish_does_nothing(self, make_bus: Any) -> None:
        bus, rec, _ = await make_bus()
        before = (list(rec.applied), rec.resets)
        await bus.publish([])
        assert (rec.applied, rec.resets) == before

    async def test_a_change_that_cannot_be_applied_drops_the_cache(self, make_bus: Any) -> None:
        bus, rec, _ = process = await make_bus()
        rec.fail_next_apply = True
        await commit(process, [Operation("register", "a@b.example", sha(2))])
        assert rec.resets >= 1 and bus.stats()["resets"] >= 1

    async def test_start_twice_and_publish_before_start_are_refused(self, make_bus: Any) -> None:
        bus, rec, _ = await make_bus()
        with pytest.raises(RuntimeError):
            await bus.start(rec)
        unstarted, _, _ = await make_bus(start=False)
        with pytest.raises(RuntimeError):
            await unstarted.publish([])

    async def test_close_is_idempotent_and_a_late_write_still_applies_here(
        self, make_bus: Any
    ) -> None:
        bus, rec, _ = process = await make_bus()
        await bus.close()
        await bus.close()
        [record] = await commit(process, [Operation("register", "a@b.example", sha(3))])
        assert record in rec.applied


class SharedBusTests(BusTests):
    """The contract of a bus that reaches other processes too."""

    async def test_another_process_hears_of_a_change(self, make_bus: Any) -> None:
        a = await make_bus()
        _, rec_b, _ = await make_bus()
        key: Tuple[str, str] = ("c@d.example", sha(4))
        await commit(a, [Operation("register", *key, "1.0")])
        await rec_b.wait(lambda: rec_b.heard(key), "B told of A's change")
        await commit(a, [Operation("revoke", *key)])
        await rec_b.wait(
            lambda: sum(r.key == key for r in rec_b.applied) + rec_b.forgotten.count(key) >= 2,
            "B told of A's revoke",
        )

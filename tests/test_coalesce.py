"""PassBatch: the calls of one event-loop pass are sent as one."""

import asyncio

import pytest

from addonreg.coalesce import PassBatch
from addonreg.storage import BackendError


class Sender:
    def __init__(self, gate=None, error=None):
        self.gate, self.error = gate, error
        self.calls = []
        self.entered = asyncio.Event()  # set once a send is in flight

    async def send(self, items):
        self.calls.append(list(items))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return [ValueError(f"bad {i}") if i < 0 else i * 10 for i in items]


async def test_one_pass_is_one_send_in_order_and_items_are_not_merged():
    sender = Sender()
    batch = PassBatch(sender.send)
    results = await asyncio.gather(*(batch.call(i) for i in (3, 1, 3)))
    assert results == [30, 10, 30] and sender.calls == [[3, 1, 3]]


async def test_later_calls_make_a_new_send_and_sends_are_bounded():
    sender = Sender()
    batch = PassBatch(sender.send, max_batch=3)
    assert await batch.call(1) == 10
    assert await batch.call(2) == 20
    assert sender.calls == [[1], [2]]
    sender.calls.clear()
    await asyncio.gather(*(batch.call(i) for i in range(7)))
    assert [len(c) for c in sender.calls] == [3, 3, 1]


async def test_a_failed_send_reaches_every_caller_and_an_item_can_fail_alone():
    sender = Sender(error=BackendError("down"))
    batch = PassBatch(sender.send)
    results = await asyncio.gather(batch.call(1), batch.call(2), return_exceptions=True)
    assert all(isinstance(r, BackendError) for r in results) and len(sender.calls) == 1
    sender.error = None
    results = await asyncio.gather(batch.call(1), batch.call(-1), return_exceptions=True)
    assert results[0] == 10 and isinstance(results[1], ValueError)


async def test_a_cancelled_caller_does_not_cancel_the_send_for_the_others():
    gate = asyncio.Event()
    sender = Sender(gate=gate)
    batch = PassBatch(sender.send)
    first = asyncio.ensure_future(batch.call(1))
    second = asyncio.ensure_future(batch.call(2))
    await sender.entered.wait()
    first.cancel()
    gate.set()
    assert await second == 20
    with pytest.raises(asyncio.CancelledError):
        await first
    assert len(sender.calls) == 1

"""LocalBus: delivery within the process, synchronous; and load_bus."""

import pytest

from addonreg.bus import BusError, InvalidationBus, load_bus
from addonreg.bus.local import LocalBus
from tests.bus.conftest import Recorder, record
from tests.conftest import make_settings


async def test_publish_delivers_before_returning():
    bus, rec = LocalBus(), Recorder()
    await bus.start(*rec.callbacks)
    assert rec.states == [True] and bus.connected
    records = [record(1), record(2, version=None, status="revoked")]
    await bus.publish(records)
    assert rec.changes == [records]
    await bus.publish([])  # nothing to tell
    assert rec.changes == [records] and rec.resets == 0
    assert bus.stats() == {"published": 1, "received": 0, "resets": 0, "reconnects": 0,
                           "publish_errors": 0, "malformed": 0}
    await bus.heartbeat()
    await bus.close()
    await bus.close()


async def test_publish_before_start_is_a_programming_error():
    with pytest.raises(RuntimeError):
        await LocalBus().publish([record(1)])


async def test_start_twice_is_refused():
    bus = LocalBus()
    await bus.start(*Recorder().callbacks)
    with pytest.raises(RuntimeError):
        await bus.start(*Recorder().callbacks)


async def test_a_change_that_cannot_be_applied_drops_the_cache():
    rec = Recorder()

    def broken(records):
        raise KeyError("cache bug")

    bus = LocalBus()
    await bus.start(broken, rec.on_reset)
    await bus.publish([record(1)])  # the write is committed: no exception for the caller
    assert rec.resets == 1 and bus.stats()["resets"] == 1


def test_load_bus_local():
    bus = load_bus(make_settings(pubsub="local://"))
    assert isinstance(bus, LocalBus) and isinstance(bus, InvalidationBus)


def test_load_bus_unknown_scheme():
    with pytest.raises(ValueError, match="scheme"):
        load_bus(make_settings(pubsub="kafka://broker:9092"))


def test_bus_error_keeps_the_original():
    original = ConnectionRefusedError("refused")
    error = BusError("down", original=original)
    assert error.original is original and "down" in str(error)

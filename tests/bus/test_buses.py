"""The shared bus contract (addonreg/bus/testing.py) on every bus over real storage."""

from __future__ import annotations

import pytest

from addonreg.bus.testing import BusTests, SharedBusTests


class TestLocalBus(BusTests):
    @pytest.fixture
    def make_bus(self, processes):
        return lambda start=True: processes("local", start)


class TestFeedBusSQLite(SharedBusTests):
    @pytest.fixture
    def make_bus(self, processes):
        return lambda start=True: processes("feed-sqlite", start)


@pytest.mark.mysql
class TestFeedBusMySQL(SharedBusTests):
    @pytest.fixture
    def make_bus(self, processes):
        return lambda start=True: processes("feed-mysql", start)


class TestRedisBus(SharedBusTests):
    @pytest.fixture
    def make_bus(self, processes):
        # The feed backstop slowed right down: what B hears, it hears through Redis.
        return lambda start=True: processes("redis", start, backstop=30)

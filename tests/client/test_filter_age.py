"""The lookup client and a real signed filter (``FilterReader.from_index``): used only
while the index's ``built_at`` is younger than ``filter_max_age``."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addonreg.filter import FilterReader
from addonreg.filter.writer import FilterWriter
from addonreg.storage.testing import sha
from addonreg_client import LookupClient, WriterClient
from tests.conftest import CREDS

pytestmark = pytest.mark.subprocess

DAY = 86400.0


def signed_filter(directory, records, serial: int, age: float) -> FilterReader:
    """A filter published ``age`` seconds ago, read back through its signed index."""
    key = Ed25519PrivateKey.generate()
    writer = FilterWriter(str(directory), key, clock=lambda: time.time() - age)
    writer.publish_base(records, serial)
    index = (directory / "filter" / "latest.json").read_bytes()
    return FilterReader.from_index(
        index, lambda path: (directory / path).read_bytes(), [key.public_key()]
    )


def test_an_old_signed_filter_is_not_believed(tmp_path, server_process):
    proc = server_process({"ADDONREG_HAWK_CREDENTIALS": "amo:" + CREDS["amo"]})
    ident = "aged@example.com"
    with WriterClient(proc.base, "amo", CREDS["amo"]) as amo:
        serial = amo.register(ident, sha(1), "1").serial
    records = [(ident, sha(1), "registered")]
    readers = {
        age: signed_filter(tmp_path / str(age), records, serial, age) for age in (60, 8 * DAY)
    }
    assert readers[8 * DAY].built_at < readers[60].built_at
    clients = {
        "fresh": LookupClient(proc.base, cache_size=1, filter=readers[60]),
        "old": LookupClient(proc.base, cache_size=1, filter=readers[8 * DAY]),
        "old, 9 days allowed": LookupClient(
            proc.base, cache_size=1, filter=readers[8 * DAY], filter_max_age=9 * DAY
        ),
    }
    for client in clients.values():  # each confirms the file with the service once
        assert client.check(ident, sha(1)).source == "service"
    with WriterClient(proc.base, "amo", CREDS["amo"]) as amo:
        amo.revoke(ident, sha(1))
    answers = {}
    for name, client in clients.items():
        client.check(ident, sha(2))  # evicts sha(1) from the one-entry HTTP cache
        result = client.check(ident, sha(1))
        answers[name] = (result.status, result.source)
        client.close()
    assert answers == {
        # exact at its serial, before the revocation: what a filter is
        "fresh": ("registered", "filter"),
        # 8 days > 7 (the service's filter_max_base_age): the service is asked
        "old": ("revoked", "service"),
        "old, 9 days allowed": ("registered", "filter"),
    }

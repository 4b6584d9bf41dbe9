"""The signed index, the reader's checks, and FilterWriter's directory."""

from __future__ import annotations

import base64
import json
import os

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addonreg.filter import (
    FilterReader,
    FilterRejected,
    FilterWriter,
    IndexVerificationError,
    build_delta,
    canonical_bytes,
    index_bytes,
    key_id,
    load_private_key,
    load_public_key,
    make_index,
    sign_index,
    verify_index,
)
from addonreg.filter.follow import follow_filter
from addonreg.sources import StorageSource
from addonreg.storage import Operation
from addonreg.storage.sqlite import SQLiteStore
from addonreg.storage.testing import sha

from .conftest import current

SEED = bytes(range(32))


@pytest.fixture
def key():
    return Ed25519PrivateKey.from_private_bytes(SEED)


@pytest.fixture
def published(tmp_path, key, records_100k, changes_100k):
    clock = iter(range(1_700_000_000, 1_800_000_000, 60)).__next__
    w = FilterWriter(str(tmp_path), key, clock=clock, max_delta_ratio=100)
    w.publish_base(records_100k, 1000)
    w.update(changes_100k, 2000)
    return tmp_path, w


def _get(root):
    return lambda path: (root / path).read_bytes()


def test_reader_checks_and_answers(published, key, records_100k, changes_100k):
    root, w = published
    r = FilterReader.from_index(
        (root / "filter/latest.json").read_bytes(), _get(root), [key.public_key()]
    )
    assert r.serial == 2000 and r.base_serial == 1000
    assert r.built_at == r.index["delta"]["built_at"] > r.index["base"]["built_at"]
    state = current(records_100k, changes_100k)
    assert r.status_many(list(state)) == list(state.values())


@pytest.mark.parametrize("which", ["base", "delta"])
def test_tampered_file_refused(published, key, which):
    root, w = published
    index = json.loads((root / "filter/latest.json").read_bytes())
    path = root / index[which]["path"]
    data = bytearray(path.read_bytes())
    for offset in (0, len(data) // 2, len(data) - 1):
        bad = bytearray(data)
        bad[offset] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(FilterRejected, match="does not match"):
            FilterReader.from_index(
                (root / "filter/latest.json").read_bytes(), _get(root), [key.public_key()]
            )
    path.write_bytes(bytes(data))


def test_tampered_index_refused(published, key):
    root, _ = published
    raw = (root / "filter/latest.json").read_bytes()
    FilterReader.from_index(raw, _get(root), [key.public_key()])
    refused = 0
    for offset in range(0, len(raw), 7):
        for flip in (0x01, 0x20):
            bad = bytearray(raw)
            bad[offset] ^= flip
            with pytest.raises(FilterRejected):
                FilterReader.from_index(bytes(bad), _get(root), [key.public_key()])
            refused += 1
    assert refused > 100
    # A re-signed index with a changed serial by another key: refused.
    other = Ed25519PrivateKey.generate()
    forged = sign_index(dict(json.loads(raw), serial=99), other)
    with pytest.raises(FilterRejected, match="not a trusted key"):
        FilterReader.from_index(index_bytes(forged), _get(root), [key.public_key()])


def test_wrong_key_refused_and_rotation(published, key):
    root, w = published
    raw = (root / "filter/latest.json").read_bytes()
    other = Ed25519PrivateKey.generate()
    with pytest.raises(FilterRejected):
        FilterReader.from_index(raw, _get(root), [other.public_key()])
    # An index claiming our key id but signed by another key.
    index = json.loads(raw)
    fake = dict(sign_index(index, other), key_id=key_id(key))
    with pytest.raises(IndexVerificationError, match="bad signature"):
        verify_index(fake, [key.public_key()])
    # Rotation: during the overlap, clients trust both keys.
    resigned = sign_index(index, other)
    for signed in (index, resigned):
        verify_index(index_bytes(signed), [key.public_key(), other.public_key()])


def test_key_formats(key):
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    raw = base64.b64encode(SEED).decode()
    for form in (pem, pem.decode(), raw, raw.encode()):
        assert key_id(load_private_key(form)) == key_id(key)
    pub = key.public_key()
    pub_pem = pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub_raw = base64.b64encode(
        pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    for form in (pub_pem, pub_raw, pub_raw.decode()):
        assert key_id(load_public_key(form)) == key_id(key)
    with pytest.raises(ValueError):
        load_private_key(base64.b64encode(b"short"))


def test_canonical_bytes_definition(key, base_100k):
    index = sign_index(make_index(base_100k, "2026-01-01T00:00:00Z"), key)
    body = {k: v for k, v in index.items() if k != "signature"}
    expected = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    assert canonical_bytes(index) == expected
    key.public_key().verify(base64.b64decode(index["signature"]), expected)
    with pytest.raises(ValueError):
        canonical_bytes(dict(index, ratio=0.5))


def test_writer_directory_and_idempotence(tmp_path, key, records_100k, changes_100k):
    clock = iter(range(1_700_000_000, 1_800_000_000, 60)).__next__
    w = FilterWriter(str(tmp_path), key, clock=clock, max_delta_ratio=100)
    first = w.publish_base(records_100k, 1000)
    raw = (tmp_path / "filter/latest.json").read_bytes()
    # The same registry again: nothing rewritten, byte-identical index.
    assert w.publish_base(list(reversed(records_100k)), 1000) == first
    assert (tmp_path / "filter/latest.json").read_bytes() == raw
    assert w.update([], 1000) == first
    idx = w.update(changes_100k[:500], 1500)
    idx = w.update(changes_100k[500:], 2000)  # cumulative: the delta covers both calls
    assert idx["delta"]["entries"] == build_delta(w.base, changes_100k, 2000).entries
    names = sorted(os.listdir(tmp_path / "filter"))
    # base, the 1500 delta (named by the previous index), the 2000 delta, latest.json
    assert len(names) == 4 and not any(n.startswith(".") for n in names)
    w.update([], 2100)
    assert len(os.listdir(tmp_path / "filter")) == 4  # the 1500 delta collected
    for entry in (idx["base"], idx["delta"]):
        assert (tmp_path / entry["path"]).stat().st_size == entry["size"]


def test_writer_new_base_when_delta_too_big_or_base_too_old(
    tmp_path, key, records_100k, changes_100k
):
    now = [1_700_000_000.0]
    w = FilterWriter(
        str(tmp_path), key, clock=lambda: now[0], max_delta_ratio=0.01, max_base_age=3600
    )
    w.publish_base(records_100k, 1000)
    idx = w.update(changes_100k, 2000)  # ~1.8 KB delta > 1 % of the base
    assert idx["delta"] is None and idx["base"]["serial"] == 2000
    w.max_delta_ratio = 100
    assert w.update(changes_100k[:1], 2001)["delta"] is not None
    now[0] += 3600
    idx = w.update(changes_100k[1:2], 2002)
    assert idx["delta"] is None and idx["base"]["serial"] == 2002


class _ChangingStore(SQLiteStore):
    """A scan that files change under: its pages are read before a write, as a
    key-order scan would have passed the files already, and the write comes
    after the first page."""

    async def snapshot(self, page=10_000):
        pages = [p async for p in super().snapshot(page=3)]
        yield pages[0]
        await self.apply(
            [Operation("revoke", "a@x", sha(0)), Operation("register", "b@x", sha(99), None)]
        )
        for rest in pages[1:]:
            yield rest


async def test_a_base_read_from_storage_while_files_change_is_the_registry(tmp_path, key):
    store = _ChangingStore(str(tmp_path / "db.sqlite3"))
    await store.open()
    await store.create_schema()
    await store.apply([Operation("register", "a@x", sha(n), None) for n in range(10)])
    writer = FilterWriter(str(tmp_path / "out"), key)
    try:
        await follow_filter(writer, StorageSource(store), follow=False, interval=1)
        assert await store.last_serial() == 12
    finally:
        await store.close()
    r = FilterReader.from_index(
        (tmp_path / "out/filter/latest.json").read_bytes(),
        _get(tmp_path / "out"),
        [key.public_key()],
    )
    # a@x's first file is read twice (registered, then revoked); b@x only after the scan.
    assert r.serial == 12
    assert [r.status("a@x", sha(n)) for n in range(3)] == ["revoked"] + ["registered"] * 2
    assert r.status("b@x", sha(99)) == "registered"

"""The reader trusts nothing it loads: every file is checked against the SHA-256
the signed index names (``from_bytes`` included), and every malformed index,
however shaped, is ``FilterRejected`` — never a ``RecursionError``,
``KeyError``, ``TypeError`` or a bare ``ValueError``."""

from __future__ import annotations

import copy
from typing import Any, Dict

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from addonreg.filter import (
    FilterFile,
    FilterReader,
    FilterRejected,
    FilterWriter,
    FormatError,
    index_bytes,
    sign_index,
)
from tests.filter.synth import registry

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = [KEY.public_key()]


def small_filter(tmp_path, records=None):
    """A small base + delta pair as published (a few hundred bytes each, like the
    one of the issue): the index, the files by path, the records."""
    if records is None:
        records = [(f"a{i % 7}@example.com", "%064x" % i, "registered") for i in range(40)]
        records[3] = (records[3][0], records[3][1], "revoked")
    clock = iter(range(1_700_000_000, 1_800_000_000, 60)).__next__
    writer = FilterWriter(str(tmp_path), KEY, clock=clock, max_delta_ratio=100)
    writer.publish_base(records, 100)
    index = writer.update([("a1@example.com", "%064x" % 1, "revoked")], 101)
    files = {
        entry["path"]: (tmp_path / entry["path"]).read_bytes()
        for entry in (index["base"], index["delta"])
    }
    return index, files, records


def test_every_bit_flip_of_a_filter_file_is_refused(tmp_path):
    index, files, records = small_filter(tmp_path)
    base_path, delta_path = index["base"]["path"], index["delta"]["path"]
    base, delta = files[base_path], files[delta_path]
    hashes = {"base_sha256": index["base"]["sha256"], "delta_sha256": index["delta"]["sha256"]}
    reader = FilterReader.from_bytes(base, delta, **hashes)  # the files as built load
    assert [reader.status(a, s) for a, s, _ in records[:5]] == [
        "registered",
        "revoked",  # a1@example.com's file 1, by the delta
        "registered",
        "revoked",
        "registered",
    ]
    parsed = tried = 0
    for which, data in (("base", base), ("delta", delta)):
        for position in range(len(data)):
            for bit in range(8):
                bad = bytearray(data)
                bad[position] ^= 1 << bit
                bad = bytes(bad)
                tried += 1
                try:
                    FilterFile.from_bytes(bad)
                    parsed += 1  # the format alone would have taken it
                except FormatError:
                    pass
                pair = (bad, delta) if which == "base" else (base, bad)
                with pytest.raises(FilterRejected):
                    FilterReader.from_bytes(*pair, **hashes)
                changed = dict(files)
                changed[base_path if which == "base" else delta_path] = bad
                with pytest.raises(FilterRejected):
                    FilterReader.from_index(index_bytes(index), changed, PUBLIC)
    # Why the hash: most flips still parse (no checksum in the format itself).
    assert tried == 8 * (len(base) + len(delta)) and parsed > tried // 2


def test_from_bytes_needs_the_hashes_the_index_names(tmp_path):
    index, files, _ = small_filter(tmp_path)
    base = files[index["base"]["path"]]
    delta = files[index["delta"]["path"]]
    good = index["base"]["sha256"]
    for kwargs in (
        {"base_sha256": index["delta"]["sha256"]},  # another file's
        {"base_sha256": None},
        {"base_sha256": 5},
        {"base_sha256": good, "delta_sha256": None},  # a delta without its hash
        {"base_sha256": good, "delta_sha256": good},
    ):
        with pytest.raises(FilterRejected):
            FilterReader.from_bytes(base, delta if "delta_sha256" in kwargs else None, **kwargs)
    with pytest.raises(FilterRejected):
        FilterReader.from_bytes("text", base_sha256=good)  # type: ignore[arg-type]
    # A delta over another base is refused, its own hash right or not.
    other = [(f"b{i}@example.com", "%064x" % i, "registered") for i in range(9)]
    other_index, other_files, _ = small_filter(tmp_path / "other", other)
    with pytest.raises(FilterRejected, match="another base"):
        FilterReader.from_bytes(
            base,
            other_files[other_index["delta"]["path"]],
            base_sha256=good,
            delta_sha256=other_index["delta"]["sha256"],
        )


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_a_deeply_nested_index_is_refused(tmp_path, depth):
    _, files, _ = small_filter(tmp_path)
    for text in (
        b"[" * depth + b"]" * depth,
        b'{"a":' * depth + b"1" + b"}" * depth,
        b'{"base":' + b"[" * depth + b"]" * depth + b"}",
    ):
        with pytest.raises(FilterRejected):
            FilterReader.from_index(text, files, PUBLIC)


@pytest.mark.parametrize("value", ["{}", "filter/latest.json", None, 5, {"base": {}}, [b"{}"]])
def test_an_index_that_is_not_bytes_is_refused(tmp_path, value):
    _, files, _ = small_filter(tmp_path)
    with pytest.raises(FilterRejected, match="bytes"):
        FilterReader.from_index(value, files, PUBLIC)  # type: ignore[arg-type]


def signed(index: Dict[str, Any]) -> bytes:
    return index_bytes(sign_index(index, KEY))


def mutations(index: Dict[str, Any]):
    """(what, a signed index whose shape breaks the documented one)."""
    values = [None, "1", -1, 2**64, 10**30, True, [], {}, "filter/../../etc/passwd", "x" * 300]
    for field in ("serial", "built_at", "base", "delta", "format", "version"):
        yield f"no {field}", {k: v for k, v in index.items() if k != field}
        for value in values:
            if field == "delta" and value is None:
                continue  # null is "no delta"
            bad = copy.deepcopy(index)
            bad[field] = value
            yield f"{field}={value!r}", bad
    for what in ("base", "delta"):
        for field in index[what]:
            bad = copy.deepcopy(index)
            del bad[what][field]
            yield f"no {what}.{field}", bad
            for value in values + ["/etc/passwd", "filter/%s.bin" % ("0" * 64)]:
                bad = copy.deepcopy(index)
                bad[what][field] = value
                yield f"{what}.{field}={value!r}", bad
    bad = copy.deepcopy(index)
    bad["base"]["sha256"] = bad["base"]["sha256"].upper()
    yield "base.sha256 in upper case", bad
    bad = copy.deepcopy(index)
    bad["delta"]["base_serial"] += 1
    yield "delta.base_serial not the base's", bad


def test_every_malformed_index_shape_is_refused(tmp_path):
    index, files, _ = small_filter(tmp_path)
    bare = {k: v for k, v in index.items() if k not in ("signature", "key_id")}
    FilterReader.from_index(signed(bare), files, PUBLIC)  # the original shape loads
    tried = 0
    for what, bad in mutations(bare):
        tried += 1
        try:
            data = signed(bad)
        except ValueError:
            continue  # a value the canonical form has no bytes for
        with pytest.raises(FilterRejected):
            FilterReader.from_index(data, files, PUBLIC)
            pytest.fail(f"accepted: {what}")
    assert tried > 150


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return small_filter(tmp_path_factory.mktemp("filter"))


@settings(max_examples=300, deadline=None)
@given(
    path=st.sampled_from(
        [(), ("base",), ("delta",), ("base", "sha256"), ("base", "size"), ("delta", "serial")]
    ),
    key=st.sampled_from(
        ["serial", "base", "delta", "path", "sha256", "size", "built_at", "base_serial", "x"]
    ),
    value=json_values,
)
def test_fuzzed_signed_indexes_are_loaded_or_refused(published, path, key, value):
    index, files, _ = published
    bare: Any = {k: v for k, v in index.items() if k not in ("signature", "key_id")}
    node = bare
    for step in path:
        if not isinstance(node.get(step), dict):
            node[step] = {}
        node = node[step]
    node[key] = value
    try:
        data = signed(bare)
    except ValueError:
        return
    try:
        reader = FilterReader.from_index(data, files, PUBLIC)
    except FilterRejected:
        return
    # Loaded (a field the reader does not use was added): the published pair.
    assert (reader.serial, reader.base.serial) == (index["serial"], index["base"]["serial"])


def test_a_synthetic_registry_round_trips_through_from_bytes(tmp_path):
    records = registry(2000, 300, seed=3)
    writer = FilterWriter(str(tmp_path), KEY)
    index = writer.publish_base(records, 9)
    data = (tmp_path / index["base"]["path"]).read_bytes()
    reader = FilterReader.from_bytes(data, base_sha256=index["base"]["sha256"])
    assert reader.status_many([(a, s) for a, s, _ in records]) == [s for _, _, s in records]

"""Exactness, determinism and delta semantics of the builder."""

from __future__ import annotations

import random

import numpy as np
import pytest

from addonreg.filter import (
    BuildError,
    FilterFile,
    FilterReader,
    KeySet,
    build_base,
    build_delta,
    filterfile,
    keys,
    ribbon,
)
from tests.filter import synth

from .conftest import current


def loaded(base, delta=None) -> FilterReader:
    """A reader of built files, through their bytes (as a client loads them)."""
    return FilterReader.from_bytes(
        base.data,
        delta.data if delta is not None else None,
        base_sha256=base.sha256,
        delta_sha256=delta.sha256 if delta is not None else None,
    )


def test_base_exact_on_every_known_file(records_100k, base_100k):
    reader = FilterReader(base_100k.file)
    got = reader.status_many([(a, s) for a, s, _ in records_100k])
    wrong = sum(g != st for g, (_, _, st) in zip(got, records_100k))
    assert wrong == 0
    assert base_100k.file.n_files == 100_000
    assert base_100k.file.n_revoked == sum(st == "revoked" for _, _, st in records_100k)
    # The clustered registry uses the add-on stage.
    assert [s.kind for s in base_100k.file.stages][0] == filterfile.ADDON


def test_delta_exact_on_every_known_file(records_100k, base_100k, changes_100k):
    delta = build_delta(base_100k, changes_100k, 2000)
    state = current(records_100k, changes_100k)
    reader = loaded(base_100k, delta)
    pairs = list(state)
    got = reader.status_many(pairs)
    assert sum(g != state[p] for g, p in zip(got, pairs)) == 0
    assert reader.serial == 2000 and reader.base_serial == 1000
    # "changed since base?" is exact too: the delta alone answers UNCHANGED
    # exactly for the files whose status is the base's.
    before = {(a, s): st for a, s, st in records_100k}
    d = delta.file.answer_np(*keys.hash_pairs(pairs))
    changed = np.array([before.get(p) != state[p] for p in pairs])
    assert ((d != filterfile.UNCHANGED) == changed).all()
    assert delta.file.n_changed == int(changed.sum())


def test_single_key_path_agrees_with_batch(records_100k, base_100k, changes_100k):
    delta = build_delta(base_100k, changes_100k, 2000)
    reader = loaded(base_100k, delta)
    sample = random.Random(3).sample(list(current(records_100k, changes_100k)), 2000)
    sample += [(f"x{i}@unknown.example", f"{i:064x}") for i in range(2000)]
    assert [reader.status(a, s) for a, s in sample] == reader.status_many(sample)


def test_same_input_same_bytes_in_any_order(records_100k, base_100k, changes_100k):
    shuffled = list(records_100k)
    random.Random(5).shuffle(shuffled)
    again = build_base(shuffled, 1000)
    assert again.data == base_100k.data
    d1 = build_delta(base_100k, changes_100k, 2000)
    d2 = build_delta(again, changes_100k, 2000)
    assert d1.data == d2.data
    # A delta of the whole current registry (any order) is the same delta.
    state = current(records_100k, changes_100k)
    whole = [(a, s, st) for (a, s), st in state.items()]
    random.Random(6).shuffle(whole)
    assert build_delta(base_100k, KeySet.from_records(whole), 2000, whole=True).data == d1.data
    assert build_delta(base_100k, whole, 2000, whole=True).data == d1.data


def test_delta_semantics():
    base_recs = [("a@x", "%064x" % i, "registered") for i in range(50)]
    base_recs += [("b@x", "%064x" % i, "revoked") for i in range(50, 60)]
    base = build_base(base_recs, 5)
    h = lambda i: "%064x" % i  # noqa: E731
    changes = [
        ("c@x", h(100), "registered"),  # registered after the base
        ("c@x", h(101), "registered"),
        ("c@x", h(101), "revoked"),  # new, then revoked
        ("a@x", h(1), "revoked"),  # revoked after the base
        ("a@x", h(2), "revoked"),
        ("a@x", h(2), "registered"),  # revoked then re-registered: unchanged
        ("b@x", h(50), "registered"),  # re-registered after a base revocation
    ]
    delta = build_delta(base, changes, 9)
    r = loaded(base, delta)
    assert r.status("c@x", h(100)) == "registered"
    assert r.status("c@x", h(101)) == "revoked"
    assert r.status("a@x", h(1)) == "revoked"
    assert r.status("a@x", h(2)) == "registered"
    assert r.status("b@x", h(50)) == "registered"
    assert r.status("b@x", h(51)) == "revoked"
    assert delta.file.n_changed == 4  # h(100), h(101), h(1), h(50); h(2) is back as it was
    assert r.serial == 9


def test_addon_revoked_after_base_costs_one_key():
    recs = [
        (f"a{j}@x", "%064x" % (j * 1000 + i), "registered") for j in range(200) for i in range(20)
    ]
    base = build_base(recs, 1)
    delta = build_delta(base, [(a, s, "revoked") for a, s, _ in recs if a == "a7@x"], 2)
    assert [(s.kind, s.n_positive) for s in delta.file.stages] == [(filterfile.ADDON, 1)]
    r = loaded(base, delta)
    assert r.status("a7@x", "%064x" % 7005) == "revoked"
    assert r.status("a8@x", "%064x" % 8005) == "registered"


@pytest.mark.parametrize(
    "recs",
    [
        [],
        [("a@x", "%064x" % 1, "registered")],
        [("a@x", "%064x" % 1, "revoked")],
        [("a@x", "%064x" % i, "revoked") for i in range(300)],
        [("a@x", "%064x" % i, "revoked" if i % 2 else "registered") for i in range(300)],
    ],
)
def test_small_and_extreme_registries(recs):
    base = build_base(recs, 3)
    r = loaded(base)
    assert [r.status(a, s) for a, s, _ in recs] == [st for _, _, st in recs]
    delta = build_delta(base, [("n@x", "%064x" % 999, "revoked")], 4)
    r = loaded(base, delta)
    assert r.status("n@x", "%064x" % 999) == "revoked"
    assert [r.status(a, s) for a, s, _ in recs] == [st for _, _, st in recs]


def test_all_revoked_registry_is_small():
    recs = [(f"a{i % 50}@x", "%064x" % i, "revoked") for i in range(5000)]
    assert len(build_base(recs, 1).data) < 200


def test_membership_layer():
    recs = synth.registry(20_000, 2_000, seed=4)
    base = build_base(recs, 1, membership_bits=8)
    r = loaded(base)
    assert r.status_many([(a, s) for a, s, _ in recs]) == [st for _, _, st in recs]
    unknown = [(f"u{i}@x", "%064x" % i) for i in range(20_000)]
    share = r.status_many(unknown).count("not-in-filter") / len(unknown)
    assert 0.99 < share < 0.999  # 1 - 2^-8
    # A file registered after the base is never "not-in-filter" with the delta.
    delta = build_delta(base, [("late@x", "%064x" % 1, "registered")], 2)
    assert loaded(base, delta).status("late@x", "%064x" % 1) == "registered"
    assert len(base.data) < 20_000 * 8 * 1.1 / 8 + 2000


def test_conflicting_duplicates_refused():
    with pytest.raises(ValueError):
        build_base([("a@x", "%064x" % 1, "registered"), ("a@x", "%064x" % 1, "revoked")], 1)
    # Same record twice, any case and the sha256: prefix: one file.
    b = build_base(
        [("a@x", "ab" * 32, "registered"), ("a@x", "sha256:" + "AB" * 32, "registered")], 1
    )
    assert b.file.n_files == 1
    with pytest.raises(ValueError):
        build_base([("a@x", "zz" * 32, "registered")], 1)
    with pytest.raises(ValueError):
        build_base([("a@x", "ab" * 32, "gone")], 1)


def test_delta_needs_a_superset_and_a_later_serial(base_100k):
    with pytest.raises(ValueError):
        build_delta(base_100k, [], 999)
    with pytest.raises(ValueError):
        build_delta(base_100k, KeySet.empty(), 2000, whole=True)


def test_verify_refuses_a_wrong_filter(keys_100k, base_100k):
    from addonreg.filter import verify

    desired = keys_100k.status.copy()
    desired[12345] = 3 - desired[12345]
    with pytest.raises(BuildError):
        verify(base_100k.file, keys_100k, desired)


def test_layers_numpy_and_python_agree():
    rng = np.random.default_rng(9)
    k0 = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    k1 = rng.integers(0, 2**64 - 1, 3000, dtype=np.uint64, endpoint=True)
    for n, k in [(1, 3), (40, 5), (2000, 7)]:
        layer = ribbon.build_layer(k0[:n], k1[:n], k, 1)
        assert layer.match_np(k0[:n], k1[:n]).all()
        value, fp = layer.eval_np(k0, k1)
        assert ((value == fp) == layer.match_np(k0, k1)).all()
        for i in range(0, 3000, 7):
            assert layer.eval_one(int(k0[i]), int(k1[i])) == (int(value[i]), int(fp[i]))


def test_truncated_or_padded_files_refused(base_100k):
    from addonreg.filter import FormatError

    for bad in (base_100k.data[:-1], base_100k.data + b"\0", b"XXXXXXXX" + base_100k.data[8:]):
        with pytest.raises(FormatError):
            FilterFile.from_bytes(bad)


def test_keyset_apply_equals_hashing_the_new_registry(records_100k, keys_100k, changes_100k):
    applied = keys_100k.apply(changes_100k)
    fresh = KeySet.from_records(
        [(a, s, st) for (a, s), st in current(records_100k, changes_100k).items()]
    )
    for name in ("k0", "k1", "a0", "a1", "status"):
        assert (getattr(applied, name) == getattr(fresh, name)).all(), name


def test_keyset_locate_with_equal_first_words():
    u = np.uint64
    k0 = np.array([1, 5, 5, 5, 9], dtype=u)
    k1 = np.array([0, 1, 2, 7, 0], dtype=u)
    z = np.zeros(5, dtype=u)
    ks = KeySet(k0, k1, z, z, np.ones(5, dtype=np.uint8))
    got = ks.locate(
        np.array([5, 5, 5, 5, 9, 10, 0], dtype=u), np.array([7, 2, 1, 3, 0, 0, 0], dtype=u)
    )
    assert got.tolist() == [3, 2, 1, -1, 4, -1, -1]


def test_file_keys_use_every_word_of_the_hash():
    """Hashes that differ in any one 64-bit word, or only in their add-on, get distinct keys."""
    hashes = []
    for word in range(4):
        for v in range(1, 200):
            raw = bytearray(32)
            raw[8 * word : 8 * word + 8] = v.to_bytes(8, "little")
            hashes.append(raw.hex())
    hashes += [f"{i:02x}" * 32 for i in range(256)]
    pairs = [(a, h) for a in ("a@x", "b@x") for h in hashes]
    _, _, f0, f1 = keys.hash_pairs(pairs)
    assert len({(x, y) for x, y in zip(f0.tolist(), f1.tolist())}) == len(pairs)
    assert keys.file_key("a@x", hashes[5]) == int(f0[5]).to_bytes(8, "little") + int(
        f1[5]
    ).to_bytes(8, "little")

"""Keys: the 128-bit hashes the filter is built over, and the hashed registry.

* add-on key = SHA-256(0x00 || u32le(len(id)) || id)[:16], words (a0, a1)
* file key   = (fmix64(s0 ^ a0 ^ fmix64(s2)), fmix64(s1 ^ a1 ^ fmix64(s3)))

where ``id`` is the add-on id's UTF-8 bytes exactly as given (ids are compared
exactly), s0..s3 the file's SHA-256 as four little-endian 64-bit words, and
a key's words are little-endian (k0 = bytes 0..7, k1 = bytes 8..15).

The file's SHA-256 is already a uniform 256-bit value that no one can aim at
a chosen target, so the file key only has to fold it to 128 bits and bind
it to its add-on; fmix64 (a bijection, ribbon.py) keeps hashes that differ
in any one word apart. Hashing it again with SHA-256 took a Python call per
file, a large part of a big build's time (bench/filter.py measures builds);
this is a few numpy operations over all the files at once. SHA-256 for the
add-on key because every platform has it (WebCrypto included).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Iterable, List, Tuple, Union

import numpy as np

from ..ids import normalize_sha256
from ..status import STATUS_CODE
from .ribbon import fmix64, fmix64_np

FileStatus = Tuple[str, str, str]
"""``(addon_id, sha256 hex, "registered" | "revoked")``: one file and its status, what the
filter is built over (the filter's "records"; :class:`addonreg.storage.Record` is a file's
whole stored state)."""

_sha256 = hashlib.sha256


def sha256_bytes(value: str) -> bytes:
    """The 32 bytes of a SHA-256 given as the identifier rules take it (:mod:`addonreg.ids`)."""
    sha = normalize_sha256(value)
    if sha is None:
        raise ValueError(f"not a SHA-256: {value!r}")
    return bytes.fromhex(sha)


def _id_bytes(addon_id: str) -> bytes:
    if type(addon_id) is not str or not addon_id:
        raise ValueError(f"not an add-on id: {addon_id!r}")
    raw = addon_id.encode("utf-8")
    return len(raw).to_bytes(4, "little") + raw


def addon_key(addon_id: str) -> bytes:
    """The 16-byte add-on key."""
    return _sha256(b"\x00" + _id_bytes(addon_id)).digest()[:16]


def file_key(addon_id: str, sha256: str) -> bytes:
    """The 16-byte file key."""
    k0, k1 = file_words(split(addon_key(addon_id)), sha256_bytes(sha256))
    return k0.to_bytes(8, "little") + k1.to_bytes(8, "little")


def file_words(addon: Tuple[int, int], sha256: bytes) -> Tuple[int, int]:
    """(k0, k1) of the file key, from the add-on key's words and the 32 raw hash bytes."""
    s0, s1, s2, s3 = (int.from_bytes(sha256[i : i + 8], "little") for i in (0, 8, 16, 24))
    return fmix64(s0 ^ addon[0] ^ fmix64(s2)), fmix64(s1 ^ addon[1] ^ fmix64(s3))


def split(key: bytes) -> Tuple[int, int]:
    """(k0, k1) of a 16-byte key."""
    return int.from_bytes(key[:8], "little"), int.from_bytes(key[8:16], "little")


Words = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def hash_pairs(pairs: Iterable[Tuple[str, str]]) -> Words:
    """(a0, a1, f0, f1): the add-on and file key words of (addon_id, sha256) pairs, in order."""
    ids, shas = [], []
    for addon_id, sha in pairs:
        ids.append(addon_id)
        shas.append(sha)
    return _hash(ids, shas)


def _hash(ids: List[str], shas: List[str]) -> Words:
    raw = b""
    if set(map(len, shas)) <= {64}:
        try:
            raw = bytes.fromhex("".join(shas))
        except ValueError:
            raw = b""
    if len(raw) != 32 * len(shas):  # some need normalising (or are not SHA-256s)
        raw = b"".join(map(sha256_bytes, shas))
    position = {a: i for i, a in enumerate(dict.fromkeys(ids))}  # distinct ids, first-seen order
    index = np.fromiter(map(position.__getitem__, ids), dtype=np.intp, count=len(ids))
    joined = b"".join(map(addon_key, position)) or bytes(16)
    table = np.frombuffer(joined, dtype="<u8").reshape(-1, 2)
    sha = np.frombuffer(raw, dtype="<u8").reshape(-1, 4)
    a0 = table[:, 0].astype(np.uint64)[index]
    a1 = table[:, 1].astype(np.uint64)[index]
    f0 = fmix64_np(sha[:, 2].astype(np.uint64))
    f0 ^= sha[:, 0]
    f0 ^= a0
    f1 = fmix64_np(sha[:, 3].astype(np.uint64))
    f1 ^= sha[:, 1]
    f1 ^= a1
    return a0, a1, fmix64_np(f0), fmix64_np(f1)


@dataclass(frozen=True, eq=False)
class KeySet:
    """The hashed registry at one serial: every known file's key, add-on key, status.

    Sorted by file key (k0, then k1), one row per file. Files never leave the
    registry, so a later KeySet holds every key of an earlier one.
    """

    k0: np.ndarray
    k1: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    status: np.ndarray  # uint8: a status code (status.py)

    def __len__(self) -> int:
        return len(self.k0)

    @classmethod
    def empty(cls) -> "KeySet":
        z = np.zeros(0, dtype=np.uint64)
        return cls(z, z, z, z, np.zeros(0, dtype=np.uint8))

    @classmethod
    def from_records(cls, records: Iterable[FileStatus]) -> "KeySet":
        """Hash ``(addon_id, sha256, status)`` records; order does not matter.

        A file listed twice must have one status both times (ValueError otherwise).
        """
        return cls._canonical(*_hash_records(records), last_wins=False)

    @classmethod
    def from_changes(cls, changes: Iterable[FileStatus]) -> "KeySet":
        """Hash change records (in feed order: a later record of a file wins)."""
        return cls._canonical(*_hash_records(changes), last_wins=True)

    def apply(self, changes: Union[Iterable[FileStatus], "KeySet"]) -> "KeySet":
        """This registry after ``changes`` (records in feed order, or ``from_changes``)."""
        ch = changes if isinstance(changes, KeySet) else KeySet.from_changes(changes)
        if not len(ch):
            return self
        idx = self.locate(ch.k0, ch.k1)
        found = idx >= 0
        at = idx[found]
        if ((self.a0[at] != ch.a0[found]) | (self.a1[at] != ch.a1[found])).any():
            raise ValueError("two different files share one 128-bit file key")
        status = self.status.copy()
        status[at] = ch.status[found]
        new = ~found
        if not new.any():
            return KeySet(self.k0, self.k1, self.a0, self.a1, status)
        n0, n1 = ch.k0[new], ch.k1[new]
        pos = np.searchsorted(self.k0, n0, side="left")
        # Among equal k0 (rare), step past the smaller k1.
        while True:
            inside = pos < len(self)
            step = np.zeros(len(pos), dtype=bool)
            at = pos[inside]
            step[inside] = (self.k0[at] == n0[inside]) & (self.k1[at] < n1[inside])
            if not step.any():
                break
            pos[step] += 1
        return KeySet(
            np.insert(self.k0, pos, n0),
            np.insert(self.k1, pos, n1),
            np.insert(self.a0, pos, ch.a0[new]),
            np.insert(self.a1, pos, ch.a1[new]),
            np.insert(status, pos, ch.status[new]),
        )

    @classmethod
    def _canonical(cls, k0, k1, a0, a1, st, *, last_wins: bool) -> "KeySet":
        n = len(k0)
        # Sort by k0 (stable: input order among equals); only when two keys share
        # a k0 (~n^2/2^65: almost never) sort by both words.
        order = np.argsort(k0, kind="stable")
        if n > 1:
            s0 = k0[order]
            if (s0[1:] == s0[:-1]).any():
                order = np.lexsort((np.arange(n), k1, k0))
        k0, k1, a0, a1, st = k0[order], k1[order], a0[order], a1[order], st[order]
        if n > 1:
            same_next = (k0[1:] == k0[:-1]) & (k1[1:] == k1[:-1])
            if same_next.any():
                if ((a0[1:] != a0[:-1]) | (a1[1:] != a1[:-1]))[same_next].any():
                    raise ValueError("two different files share one 128-bit file key")
                if not last_wins and (st[1:] != st[:-1])[same_next].any():
                    raise ValueError("a file is listed twice with different statuses")
                keep = np.ones(n, dtype=bool)
                keep[:-1] = ~same_next  # the last of each run of equal keys
                k0, k1, a0, a1, st = k0[keep], k1[keep], a0[keep], a1[keep], st[keep]
        return cls(k0, k1, a0, a1, st)

    def locate(self, q0: np.ndarray, q1: np.ndarray) -> np.ndarray:
        """Row of each queried file key, -1 where we do not hold it."""
        out = np.full(len(q0), -1, dtype=np.int64)
        n = len(self)
        if not n or not len(q0):
            return out
        pos = np.searchsorted(self.k0, q0, side="left")
        run = 1 + (_longest_run(self.k0[1:] == self.k0[:-1]) if n > 1 else 0)
        for d in range(run):  # runs of equal k0 are almost always of length 1
            p = np.minimum(pos + d, n - 1)
            hit = (self.k0[p] == q0) & (self.k1[p] == q1) & (pos + d < n)
            out[hit] = p[hit]
        return out

    def base_status(self, base: "KeySet") -> np.ndarray:
        """For each of our files, its status in ``base`` (0 when ``base`` lacks it)."""
        idx = base.locate(self.k0, self.k1)
        out = np.zeros(len(self), dtype=np.uint8)
        out[idx >= 0] = base.status[idx[idx >= 0]]
        return out

    @cached_property
    def addons(self) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a0, a1, index): the distinct add-on keys (sorted) and each file's add-on index."""
        u0, index = np.unique(self.a0, return_inverse=True)
        u1 = np.zeros(len(u0), dtype=np.uint64)
        u1[index] = self.a1
        if (u1[index] != self.a1).any():  # two add-ons share a k0: sort by both words
            order = np.lexsort((self.a1, self.a0))
            s0, s1 = self.a0[order], self.a1[order]
            new = np.ones(len(order), dtype=bool)
            new[1:] = (s0[1:] != s0[:-1]) | (s1[1:] != s1[:-1])
            index = np.empty(len(order), dtype=np.int64)
            index[order] = np.cumsum(new) - 1
            return s0[new], s1[new], index
        return u0, u1, index.astype(np.int64)


def _longest_run(eq: np.ndarray) -> int:
    """Length of the longest run of True in a bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], eq.astype(np.int8), [0]))))
    return int((edges[1::2] - edges[::2]).max()) if len(edges) else 0


def _hash_records(records: Iterable[FileStatus]):
    records = records if isinstance(records, list) else list(records)
    if records and set(map(len, records)) != {3}:
        raise ValueError("a record is (addon_id, sha256, status)")
    try:
        codes = np.fromiter(
            map(STATUS_CODE.__getitem__, map(itemgetter(2), records)),
            dtype=np.uint8,
            count=len(records),
        )
    except KeyError as exc:
        raise ValueError(f"unknown status {exc.args[0]!r}") from None
    a0, a1, k0, k1 = _hash(list(map(itemgetter(0), records)), list(map(itemgetter(1), records)))
    return k0, k1, a0, a1, codes

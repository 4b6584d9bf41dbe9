"""Building base and delta filters, and the verification every build runs.

Layout of a build (why: docs/filter.md, "Structure"):

* an *add-on stage* answers ``revoked`` for add-ons revoked whole (a base:
  every known file revoked; a delta: every known file changed to revoked),
  so a clustered revocation costs one key, not one per version;
* *file stages* for the files of every other add-on: a base has one
  (``revoked`` over a default ``registered``, or the other way round when
  that is smaller), a delta two (``revoked``, ``registered``; default
  ``unchanged``);
* each stage is a Clubcards-style pair: a k-bit ribbon filter over its
  positives, then a 1-bit ribbon retrieval over the positives plus the
  negatives that passed the filter; k minimises the estimated size.

Everything is chosen from the data alone (salts are attempt numbers), so the
same registry gives the same bytes, whatever the order of the records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

import numpy as np

from ..status import REGISTERED_CODE, REVOKED_CODE
from . import filterfile
from .filterfile import ADDON, FILE, UNCHANGED, FilterFile, Stage
from .keys import FileStatus, KeySet
from .ribbon import BuildError, build_layer

__all__ = ["Built", "BuildError", "build_base", "build_delta", "verify"]

# Candidate minimum file counts for an add-on revoked whole to be answered at
# add-on level (below it, its files go to the file stages: both are exact).
_THRESHOLDS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64, None)
_OVERHEAD = 1.045  # layer size over equation count, for the size estimates


@dataclass(frozen=True, eq=False)
class Built:
    """A built, verified filter file: its parsed form, bytes and the registry it encodes."""

    file: FilterFile
    data: bytes
    keys: KeySet  # the registry at file.serial

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def serial(self) -> int:
        return self.file.serial

    @property
    def entries(self) -> int:
        """Known files (a base) or changed files (a delta)."""
        return self.file.n_changed if self.file.is_delta else self.file.n_files


def build_base(
    records: Union[Iterable[FileStatus], KeySet], serial: int, *, membership_bits: int = 0
) -> Built:
    """A verified base filter of the registry (records or an already hashed KeySet) at ``serial``.

    ``membership_bits`` b > 0 adds a b-bit filter over every known file, so a
    reader can answer ``not-in-filter`` for all but 2^-b of unknown files (costs
    ~1.05 b bits per known file; 0, the default, leaves it out).
    """
    keys = records if isinstance(records, KeySet) else KeySet.from_records(records)
    if not 0 <= membership_bits <= 32:
        raise ValueError("membership_bits must be 0..32")
    _check_serial(serial)
    desired = keys.status
    orientations: List[Tuple[Tuple[int, ...], int]] = [
        ((REVOKED_CODE,), REGISTERED_CODE),
        ((REGISTERED_CODE,), REVOKED_CODE),
    ]
    stages, default = _build_stages(keys, desired, orientations)
    membership = (
        build_layer(keys.k0, keys.k1, membership_bits, 0) if membership_bits and len(keys) else None
    )
    f = FilterFile(
        filterfile.KIND_BASE,
        serial,
        serial,
        bytes(32),
        len(keys),
        _count_addons(keys),
        int((desired == REVOKED_CODE).sum()),
        0,
        default,
        membership,
        stages,
    )
    return _finish(f, keys, desired)


def build_delta(
    base: Built, changes: Union[Iterable[FileStatus], KeySet], serial: int, *, whole: bool = False
) -> Built:
    """A verified cumulative delta over ``base`` at ``serial``.

    ``changes``: every record changed since the base, in feed order (a later
    record of a file wins), or those hashed (``KeySet.from_changes``). With
    ``whole=True``, ``changes`` is instead the whole registry at ``serial``
    (records or KeySet), compared file by file with the base (slower: it
    looks up every file). The delta answers, for every file known at ``serial``: ``unchanged`` when
    its status is the one it had at the base, else its status now (files new
    since the base included).
    """
    if base.file.is_delta:
        raise ValueError("a delta is built over a base")
    _check_serial(serial)
    if serial < base.serial:
        raise ValueError("a delta's serial cannot precede its base's")
    if whole:
        current = changes if isinstance(changes, KeySet) else KeySet.from_records(changes)
        was = current.base_status(base.keys)
        if len(current) < len(base.keys) or int((was != 0).sum()) != len(base.keys):
            raise ValueError("the registry lost files since the base (files never leave it)")
        desired = np.where(was == current.status, UNCHANGED, current.status).astype(np.uint8)
    else:  # only the changed files can differ from the base
        ch = changes if isinstance(changes, KeySet) else KeySet.from_changes(changes)
        current = base.keys.apply(ch)
        at = base.keys.locate(ch.k0, ch.k1)
        was = np.zeros(len(ch), dtype=np.uint8)
        was[at >= 0] = base.keys.status[at[at >= 0]]
        desired = np.zeros(len(current), dtype=np.uint8)
        desired[current.locate(ch.k0, ch.k1)] = np.where(was == ch.status, UNCHANGED, ch.status)
    stages, default = _build_stages(
        current, desired, [((REVOKED_CODE, REGISTERED_CODE), UNCHANGED)]
    )
    f = FilterFile(
        filterfile.KIND_DELTA,
        serial,
        base.serial,
        bytes.fromhex(base.sha256),
        len(current),
        _count_addons(current),
        int((current.status == REVOKED_CODE).sum()),
        int((desired != UNCHANGED).sum()),
        default,
        None,
        stages,
    )
    return _finish(f, current, desired)


def verify(f: FilterFile, keys: KeySet, desired: np.ndarray) -> None:
    """Raise BuildError unless ``f`` gives every known file its wanted answer.

    ``desired``: per file of ``keys``, the status (a base) or UNCHANGED / the
    new status (a delta). Also checks the membership layer passes every file.
    """
    got = f.answer_np(keys.a0, keys.a1, keys.k0, keys.k1)
    wrong = int((got != desired).sum())
    if wrong:
        raise BuildError(f"filter gives {wrong} of {len(keys)} known files a wrong answer")
    if not f.member_np(keys.k0, keys.k1).all():
        raise BuildError("membership layer misses a known file")


# -- internals -------------------------------------------------------------


def _check_serial(serial: int) -> None:
    if type(serial) is not int or not 0 <= serial < 1 << 64:
        raise ValueError("serial must be an integer in 0 .. 2^64-1")


def _count_addons(keys: KeySet) -> int:
    return len(keys.addons[0]) if len(keys) else 0


def _finish(f: FilterFile, keys: KeySet, desired: np.ndarray) -> Built:
    data = f.to_bytes()
    parsed = FilterFile.from_bytes(data)  # verify what readers will read
    verify(parsed, keys, desired)
    return Built(parsed, data, keys)


def _best_k(p: int, q: int) -> Tuple[int, float]:
    """(k, estimated bits) of a stage with p positives and q negatives.

    k = 0 (no filter layer, retrieval over everything) only when it is
    smaller without counting the filter layer's 16-byte header: a stage
    without a filter answers positive for half of all unknown keys.
    """
    best = (0, _OVERHEAD * (p + q))
    for k in range(1, 33):
        bits = _OVERHEAD * (p * k + p + q * 2.0**-k)
        if bits < best[1]:
            best = (k, bits)
    return best


def _stage_bits(p: int, q: int) -> float:
    if not p:
        return 0.0
    if not q:
        return 64.0
    k, bits = _best_k(p, q)
    return bits + (192 if k else 64)  # stage and layer headers


def _build_stages(
    keys: KeySet, desired: np.ndarray, orientations: List[Tuple[Tuple[int, ...], int]]
) -> Tuple[Tuple[Stage, ...], int]:
    if not len(keys):
        return (), orientations[0][1]
    a0, a1, index = keys.addons
    n_addons = len(a0)
    files_per = np.bincount(index, minlength=n_addons)
    revoked_per = np.bincount(index, weights=(desired == REVOKED_CODE), minlength=n_addons)
    whole = revoked_per == files_per  # every known file of the add-on -> revoked

    # Per add-on counts of each wanted answer: a threshold's cost is then O(add-ons).
    answers_used = sorted({a for answers, _ in orientations for a in answers})
    per = {a: np.bincount(index, weights=(desired == a), minlength=n_addons) for a in answers_used}
    totals = {a: int((desired == a).sum()) for a in answers_used}
    best = None
    for t in _THRESHOLDS:
        chosen = whole & (files_per >= t) if t is not None else np.zeros(n_addons, bool)
        n_chosen = int(chosen.sum())
        left_files = len(desired) - int(files_per[chosen].sum())
        left = {a: totals[a] - int(per[a][chosen].sum()) for a in answers_used}
        for answers, default in orientations:
            bits = _stage_bits(n_chosen, n_addons - n_chosen)
            remaining = left_files
            for a in answers:
                bits += _stage_bits(left[a], remaining - left[a])
                remaining -= left[a]
            if best is None or bits < best[0]:
                best = (bits, chosen, answers, default)
    assert best is not None  # orientations is never empty
    _, chosen, answers, default = best

    stages = []
    tag = 0
    if chosen.any():
        stages.append(
            _build_stage(ADDON, REVOKED_CODE, a0[chosen], a1[chosen], a0[~chosen], a1[~chosen], tag)
        )
        tag += 1
    left = ~chosen[index]
    for a in answers:
        pos = left & (desired == a)
        if pos.any():
            neg = left & ~pos
            stages.append(
                _build_stage(FILE, a, keys.k0[pos], keys.k1[pos], keys.k0[neg], keys.k1[neg], tag)
            )
            tag += 1
            left = neg
    return tuple(stages), default


def _build_stage(
    kind: int,
    answer: int,
    p0: np.ndarray,
    p1: np.ndarray,
    n0: np.ndarray,
    n1: np.ndarray,
    index: int,
) -> Stage:
    p, q = len(p0), len(n0)
    if not q:
        return Stage(kind, answer, p, None, None)
    k, _ = _best_k(p, q)
    l1: Optional[object] = None
    if k:
        l1 = build_layer(p0, p1, k, 1 + 2 * index)
        hit = l1.match_np(n0, n1)
        n0, n1 = n0[hit], n1[hit]
    l2 = None
    if len(n0):
        values = np.concatenate([np.ones(p, np.uint64), np.zeros(len(n0), np.uint64)])
        l2 = build_layer(
            np.concatenate([p0, n0]), np.concatenate([p1, n1]), 1, 2 + 2 * index, values=values
        )
    return Stage(kind, answer, p, l1, l2)  # type: ignore[arg-type]

"""Shared registries for the filter tests (built once per session: hashing is the slow part)."""

from __future__ import annotations

import random
from typing import Dict, List, Tuple

import pytest

from addonreg.filter import FileStatus, KeySet, build_base
from tests.filter import synth


def flip(status: str) -> str:
    return "revoked" if status == "registered" else "registered"


@pytest.fixture(scope="session")
def records_100k() -> List[FileStatus]:
    return synth.registry(100_000, 10_000, clustered=True, seed=11)


@pytest.fixture(scope="session")
def keys_100k(records_100k) -> KeySet:
    return KeySet.from_records(records_100k)


@pytest.fixture(scope="session")
def base_100k(keys_100k):
    return build_base(keys_100k, 1000)


@pytest.fixture(scope="session")
def changes_100k(records_100k) -> List[FileStatus]:
    """1,000 changes after the base: 900 flips of known files, 100 new files
    (60 registered, 40 of them then revoked)."""
    rnd = random.Random(7)
    changes = [(a, s, flip(st)) for a, s, st in rnd.sample(records_100k, 900)]
    new = [(f"new{i}@synth.example", f"{i:064x}", "registered") for i in range(100)]
    return changes + new + [(a, s, "revoked") for a, s, _ in new[:40]]


def current(records: List[FileStatus], changes: List[FileStatus]) -> Dict[Tuple[str, str], str]:
    state = {(a, s): st for a, s, st in records}
    for a, s, st in changes:
        state[(a, s)] = st
    return state

"""Writes tests/filter/vectors/: a small signed base + delta and the answers a reader must give.

Run ``python -m tests.filter.make_vectors`` from the repository root after a
format change (test_vectors.py checks the committed files are what this
writes). The signing key is a TEST key (private seed bytes 0..31), never a
real one.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from typing import Any, Dict, List

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from addonreg.filter import FilterReader, FilterWriter, addon_key, file_key
from tests.filter import synth

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vectors")
TEST_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
GUID = "{d3b2c6a1-0f4e-4c5b-9a7d-1e2f3a4b5c6d}"


def _read(directory: str, path: str) -> bytes:
    with open(os.path.join(directory, path), "rb") as f:
        return f.read()


def registry() -> List[tuple]:
    recs = synth.registry(400, 40, revoked=0.05, clustered=True, seed=2024)
    recs += [(GUID, f"{i:02x}" * 32, "registered") for i in range(1, 6)]
    recs += [("whole@revoked.example", f"{i:02x}" * 32, "revoked") for i in range(10, 14)]
    return recs


def changes(recs: List[tuple]) -> List[tuple]:
    out = [
        (GUID, "01" * 32, "revoked"),  # revoked after the base
        (GUID, "02" * 32, "revoked"),
        (GUID, "02" * 32, "registered"),  # and back: unchanged
        ("whole@revoked.example", "0a" * 32, "registered"),  # re-registered
        ("new@later.example", "aa" * 32, "registered"),  # new after the base
        ("new@later.example", "bb" * 32, "revoked"),
    ]  # new, revoked
    out += [(a, s, "revoked") for a, s, st in recs if a == "a3@synth.example"]  # revoked whole
    return out


def write(directory: str) -> Dict[str, Any]:
    """Write the vectors into ``directory``; return the cases."""
    recs = registry()
    ch = changes(recs)
    clock = iter([1767225600, 1767225600, 1767229200, 1767229200, 1767229200]).__next__
    w = FilterWriter(directory, TEST_KEY, membership_bits=8, max_delta_ratio=100, clock=clock)
    w.publish_base(recs, 100)
    w.update(ch, 150)
    state = {(a, s): st for a, s, st in recs}
    for a, s, st in ch:
        state[(a, s)] = st
    queries = list(state)
    queries += [(f"unknown{i}@nowhere.example", f"{i + 7:064x}") for i in range(60)]
    queries += [
        (GUID, "ff" * 32),
        ("a3@synth.example", "cd" * 32),
        ("new@later.example", "AB" * 32),
    ]
    with open(os.path.join(directory, "filter", "latest.json"), "rb") as f:
        index = f.read()
    reader = FilterReader.from_index(index, lambda p: _read(directory, p), [TEST_KEY.public_key()])
    # Unknown files that pass the membership layer (1 in 256): "registered" is no proof.
    ground = [("ground@nowhere.example", f"{i:064x}") for i in range(1, 20000)]
    queries += [q for q, a in zip(ground, reader.status_many(ground)) if a == "registered"][:3]
    cases = []
    for addon_id, sha in queries:
        expected = reader.status(addon_id, sha)
        if (addon_id, sha) in state:
            assert expected == state[(addon_id, sha)]
        cases.append(
            {
                "addon_id": addon_id,
                "sha256": sha,
                "addon_key": addon_key(addon_id).hex(),
                "file_key": file_key(addon_id, sha).hex(),
                "known": (addon_id, sha) in state,
                "expected": expected,
            }
        )
    doc = {
        "comment": "Answers of the reference reader for filter/latest.json (serial 150) "
        "checked with public_key; see docs/filter.md, 'Test vectors'.",
        "public_key": base64.b64encode(TEST_KEY.public_key().public_bytes_raw()).decode(),
        "serial": reader.serial,
        "base_serial": reader.base_serial,
        "cases": cases,
    }
    with open(os.path.join(directory, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    return doc


if __name__ == "__main__":
    os.makedirs(HERE, exist_ok=True)
    doc = write(HERE)
    print(f"{len(doc['cases'])} cases written to {HERE}", file=sys.stderr)

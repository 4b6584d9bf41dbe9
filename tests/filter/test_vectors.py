"""The committed test vectors: a reader in another language checks itself against these."""

from __future__ import annotations

import collections
import json
import os

from addonreg.filter import FilterReader, addon_key, file_key

from .make_vectors import HERE, _read, write


def _load():
    with open(os.path.join(HERE, "cases.json")) as f:
        return json.load(f)


def test_vectors_answer_as_recorded():
    doc = _load()
    with open(os.path.join(HERE, "filter", "latest.json"), "rb") as f:
        index = f.read()
    reader = FilterReader.from_index(index, lambda p: _read(HERE, p), [doc["public_key"]])
    assert reader.serial == doc["serial"] == 150 and reader.base_serial == 100
    for case in doc["cases"]:
        assert addon_key(case["addon_id"]).hex() == case["addon_key"]
        assert file_key(case["addon_id"], case["sha256"]).hex() == case["file_key"]
        assert reader.status(case["addon_id"], case["sha256"]) == case["expected"], case
    pairs = [(c["addon_id"], c["sha256"]) for c in doc["cases"]]
    assert reader.status_many(pairs) == [c["expected"] for c in doc["cases"]]
    # The vectors exercise every answer, and unknown files of every kind.
    kinds = collections.Counter((c["known"], c["expected"]) for c in doc["cases"])
    assert {
        (True, "registered"),
        (True, "revoked"),
        (False, "not-in-filter"),
        (False, "registered"),
        (False, "revoked"),
    } <= set(kinds)


def test_vectors_are_what_the_builder_writes(tmp_path):
    """Same registry, same bytes: the committed files are reproducible exactly."""
    write(str(tmp_path))
    for root, _, names in os.walk(HERE):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), HERE)
            with open(os.path.join(HERE, rel), "rb") as a, open(tmp_path / rel, "rb") as b:
                assert a.read() == b.read(), rel
    assert sorted(os.listdir(tmp_path / "filter")) == sorted(
        os.listdir(os.path.join(HERE, "filter"))
    )

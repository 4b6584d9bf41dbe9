"""Synthetic registries for the filter tests and bench/filter.py (deterministic per seed).

``registry(n_files, n_addons, revoked=0.01, clustered=False, seed=0)``:

* add-on ids ``a<i>@synth.example``; file hashes are random 32 bytes;
* the first ``n_addons`` files go one to each add-on, every other file to add-on
  ``floor(n_addons * u**2)`` for u uniform in [0, 1): a few add-ons with
  thousands of files, most with a handful (mean n_files / n_addons);
* exactly ``R = round(revoked * n_files)`` files are revoked:
  - uniform: R files drawn uniformly without replacement;
  - clustered: add-ons are taken in a random order and revoked whole while
    their files fit in 90 % of R (an add-on too big for what is left is
    skipped); the rest of R is drawn uniformly among the files of the other
    add-ons.
"""

from __future__ import annotations

from typing import List

import numpy as np

from addonreg.filter import FileStatus


def addon_of_files(n_files: int, n_addons: int, rng: np.random.Generator) -> np.ndarray:
    addon = np.empty(n_files, dtype=np.int64)
    first = min(n_files, n_addons)
    addon[:first] = np.arange(first)
    u = rng.random(n_files - first)
    addon[first:] = np.minimum((n_addons * u * u).astype(np.int64), n_addons - 1)
    return addon


def revoked_mask(
    addon: np.ndarray, n_addons: int, revoked: float, clustered: bool, rng: np.random.Generator
) -> np.ndarray:
    n = len(addon)
    target = int(round(revoked * n))
    mask = np.zeros(n, dtype=bool)
    if not clustered:
        mask[rng.choice(n, size=target, replace=False)] = True
        return mask
    sizes = np.bincount(addon, minlength=n_addons)
    budget = int(0.9 * target)
    whole = np.zeros(n_addons, dtype=bool)
    used = 0
    for a in rng.permutation(n_addons).tolist():
        s = int(sizes[a])
        if used + s <= budget:
            whole[a] = True
            used += s
            if used == budget:
                break
    mask = whole[addon]
    others = np.flatnonzero(~mask)
    mask[rng.choice(others, size=target - used, replace=False)] = True
    return mask


def registry(
    n_files: int, n_addons: int, revoked: float = 0.01, clustered: bool = False, seed: int = 0
) -> List[FileStatus]:
    """``(addon_id, sha256 hex, status)`` records (see the module doc)."""
    rng = np.random.default_rng(seed)
    addon = addon_of_files(n_files, n_addons, rng)
    hexes = rng.bytes(32 * n_files).hex()
    mask = revoked_mask(addon, n_addons, revoked, clustered, rng)
    ids = [f"a{i}@synth.example" for i in range(n_addons)]
    names = ("registered", "revoked")
    return [
        (ids[a], hexes[64 * i : 64 * i + 64], names[r])
        for i, (a, r) in enumerate(zip(addon.tolist(), mask.tolist()))
    ]

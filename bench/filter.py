"""The ``filter`` family: addonreg.filter beside filtercascade (the MLBF AMO ships today).

Run by ``bench/run.py --family filter`` (``--filter-sizes``); alone, ``bench/filter.py
[--sizes 1000000,10000000]`` prints its markdown. Data: tests/filter/synth.py (its
docstring says how): N files over N/10 add-ons, 1 % revoked, uniformly or clustered (90 %
of revocations are whole add-ons), the same for both. Each (size, dataset, structure) runs
in a fresh process: its peak RSS (ru_maxrss, records included) is its own.

* ours: records -> hash -> build -> verify every known key -> bytes; then a delta of
  1,000 changes (900 status flips, 100 new files) and reader speed on base + delta.
* fc: filtercascade 0.4 (MurmurHash3; sizes do not depend on the hash) over our 16-byte
  file keys, set_crlite_error_rates, initialize + verify() every key + tofile; hashing
  not counted. (A Fuse8 cascade was measured too: docs/filter.md has its figures.)
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

Results = dict[tuple[int, str, str], dict[str, Any]]


def dataset(n: int, clustered: bool) -> list[tuple[str, str, str]]:
    # Test data, not the package's: tests/filter/synth.py, from the repo root.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.filter import synth

    return synth.registry(n, n // 10, revoked=0.01, clustered=clustered, seed=1)


def run_ours(recs: list[tuple[str, str, str]]) -> dict[str, Any]:
    from addonreg.filter import FilterReader, KeySet, build_base, build_delta

    t = time.perf_counter()
    keys = KeySet.from_records(recs)
    t_hash = time.perf_counter() - t
    base = build_base(keys, 1)
    t_all = time.perf_counter() - t
    rnd = random.Random(2)
    changes = [
        (a, s, "revoked" if st == "registered" else "registered")
        for a, s, st in rnd.sample(recs, 900)
    ]
    changes += [(f"new{i}@bench.example", f"{i:064x}", "registered") for i in range(100)]
    t = time.perf_counter()
    delta = build_delta(base, changes, 2)
    t_delta = time.perf_counter() - t
    reader = FilterReader.from_bytes(
        base.data, delta.data, base_sha256=base.sha256, delta_sha256=delta.sha256
    )
    pairs = [(a, s) for a, s, _ in rnd.sample(recs, min(200_000, len(recs)))]
    t = time.perf_counter()
    reader.status_many(pairs)
    batch = len(pairs) / (time.perf_counter() - t)
    t = time.perf_counter()
    for a, s in pairs[:20_000]:
        reader.status(a, s)
    single = 20_000 / (time.perf_counter() - t)
    stages = "+".join(
        f"{'addon' if s.kind == 0 else 'file'}(k={s.l1.k if s.l1 else 0})" for s in base.file.stages
    )
    return dict(
        bytes=len(base.data),
        build=t_all,
        hash=t_hash,
        keyed=t_all - t_hash,
        layers=stages,
        delta_bytes=len(delta.data),
        delta_changes=delta.entries,
        delta_s=t_delta,
        batch=batch,
        single=single,
    )


def run_fc(recs: list[tuple[str, str, str]]) -> dict[str, Any]:
    import filtercascade

    from addonreg.filter.keys import hash_pairs

    _, _, f0, f1 = hash_pairs([(a, s) for a, s, _ in recs])
    fk = np.stack([f0, f1], axis=1).astype("<u8").tobytes()
    keys = [fk[o : o + 16] for o in range(0, len(fk), 16)]
    rev = {k for k, (_, _, st) in zip(keys, recs) if st == "revoked"}
    reg = [k for k in keys if k not in rev]
    t = time.perf_counter()
    fc = filtercascade.FilterCascade([])
    fc.set_crlite_error_rates(include_len=len(rev), exclude_len=len(reg))
    fc.initialize(include=rev, exclude=reg)
    fc.verify(include=rev, exclude=reg)
    buf = io.BytesIO()
    fc.tofile(buf)
    t_all = time.perf_counter() - t
    return dict(bytes=len(buf.getvalue()), build=t_all, keyed=t_all, layers=str(fc.layerCount()))


def child(structure: str, n: int, kind: str) -> None:
    recs = dataset(n, kind == "clustered")
    out = {"ours": run_ours, "fc": run_fc}[structure](recs)
    out.update(
        peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        revoked=sum(st == "revoked" for _, _, st in recs),
    )
    print(json.dumps(out))


def measure(sizes: list[int]) -> Results:
    results: Results = {}
    for n in sizes:
        for kind in ("uniform", "clustered"):
            for s in ("ours", "fc"):
                done = subprocess.run(
                    [sys.executable, __file__, "--child", s, str(n), kind],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if done.returncode:
                    raise RuntimeError(f"{s} {n:,} {kind} failed:\n{done.stderr[-2000:]}")
                results[n, kind, s] = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"  filter {s} {n:,} {kind}: {results[n, kind, s]['bytes']:,} B",
                    file=sys.stderr,
                )
    return results


def bound_bytes(n: int, r: int) -> float:
    p = r / n
    return n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def figures(results: Results) -> dict[str, float]:
    """What report.TARGETS checks: the sizes against filtercascade, the worst of the rest."""
    ours = {k: r for k, r in results.items() if k[2] == "ours"}
    return {
        **{
            f"{kind}_vs_filtercascade": max(
                r["bytes"] / results[n, kind, "fc"]["bytes"]
                for (n, k, _), r in ours.items()
                if k == kind
            )
            for kind in ("uniform", "clustered")
        },
        "build_vs_filtercascade": max(
            r["keyed"] / results[n, k, "fc"]["keyed"] for (n, k, _), r in ours.items()
        ),
        "delta_bytes_per_1000_changes": max(
            r["delta_bytes"] * 1000 / r["delta_changes"] for r in ours.values()
        ),
        "reader_checks_per_s": min(r["batch"] for r in ours.values()),
    }


def markdown(results: Results) -> list[str]:
    names = {"ours": "addonreg.filter", "fc": "filtercascade 0.4"}
    lines = [
        "Same records for both. *keyed*: from 16-byte keys, build + check every known key"
        " + serialize. *from records*: ours with the hashing (end to end). Peak RSS "
        "includes the records.",
        "",
        "| files | dataset | structure | bytes | bits/file | × filtercascade | × bound "
        "| layers | keyed s | from records s | peak MB |",
        "|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for (n, kind, s), r in sorted(results.items(), key=lambda x: (x[0][:2], x[0][2] != "ours")):
        fc, bound = results[n, kind, "fc"], bound_bytes(n, r["revoked"])
        lines.append(
            f"| {n:,} | {kind} | {names[s]} | {r['bytes']:,} | {8 * r['bytes'] / n:.4f}"
            f" | {r['bytes'] / fc['bytes']:.3f} | {r['bytes'] / bound:.3f} | "
            f"{r['layers']} | {r['keyed']:.2f} | "
            f"{'%.2f' % r['build'] if s == 'ours' else '–'} | {r['peak_mb']:,.0f} |"
        )
    lines += [
        "",
        "| files | dataset | hash s | delta bytes / 1,000 changes | delta build s | "
        "reader `status_many` checks/s | single `status()` checks/s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for (n, kind, _), r in sorted((k, r) for k, r in results.items() if k[2] == "ours"):
        lines.append(
            f"| {n:,} | {kind} | {r['hash']:.2f} | "
            f"{r['delta_bytes'] * 1000 / r['delta_changes']:,.0f} | {r['delta_s']:.2f}"
            f" | {r['batch']:,.0f} | {r['single']:,.0f} |"
        )
    return lines + [
        "",
        "Information bound N·H(r/N): "
        + ", ".join(
            sorted(
                f"{n:,} {kind}: {bound_bytes(n, r['revoked']):,.0f} B"
                for (n, kind, s), r in results.items()
                if s == "ours"
            )
        )
        + ". Reader: base + delta, one "
        "core; `status_many` hashes in Python and answers with numpy.",
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--child", nargs=3, metavar=("STRUCTURE", "N", "DATASET"))
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    print("\n".join(markdown(measure([int(n) for n in args.sizes.split(",")]))))


if __name__ == "__main__":
    main()

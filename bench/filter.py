"""Filter sizes and speeds: addonreg.filter against filtercascade (AMO's MLBF) and a Fuse8 cascade.

    .venv/bin/python bench/filter.py [--sizes 1000000,10000000] [--structures ours,fc,fuse]

Needs the bench extra. Datasets: addonreg.filter.synth (its docstring says
exactly how): N files over N/10 add-ons, 1 % revoked, uniformly or clustered
(90 % of revocations are whole add-ons); the same records for every structure.
Each (size, dataset, structure) runs in a fresh process: its peak RSS
(ru_maxrss, records included) is its own. Markdown on stdout.

* ours: records -> hash -> build -> verify every known key -> bytes (end to end);
  then a delta of 1,000 changes (900 status flips of known files, 100 new
  files) and reader speed on the base + delta.
* fc: filtercascade 0.4 (MurmurHash3, its fastest hash; sizes do not depend
  on the hash) over our 16-byte file keys, set_crlite_error_rates,
  initialize + verify() over every key + tofile. Hashing not counted.
* fuse: a cascade of pyfusefilter Fuse8 filters over the same keys (8-bit
  fingerprints: revoked, then false positives, alternating until none).
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

import numpy as np


def dataset(n, clustered):
    from addonreg.filter import synth
    return synth.registry(n, n // 10, revoked=0.01, clustered=clustered, seed=1)


def run_ours(recs):
    from addonreg.filter import FilterReader, KeySet, build_base, build_delta
    t = time.perf_counter()
    keys = KeySet.from_records(recs)
    t_hash = time.perf_counter() - t
    base = build_base(keys, 1)
    t_all = time.perf_counter() - t
    rnd = random.Random(2)
    flips = [(a, s, "revoked" if st == "registered" else "registered")
             for a, s, st in rnd.sample(recs, 900)]
    changes = flips + [(f"new{i}@bench.example", f"{i:064x}", "registered") for i in range(100)]
    t = time.perf_counter()
    delta = build_delta(base, changes, 2)
    t_delta = time.perf_counter() - t
    reader = FilterReader.from_bytes(base.data, delta.data)
    pairs = [(a, s) for a, s, _ in rnd.sample(recs, min(200_000, len(recs)))]
    t = time.perf_counter()
    reader.status_many(pairs)
    batch = len(pairs) / (time.perf_counter() - t)
    from addonreg.filter.keys import hash_pairs
    hashed_pairs = hash_pairs(pairs)
    t = time.perf_counter()
    reader.status_codes(*hashed_pairs)
    hashed = len(pairs) / (time.perf_counter() - t)
    t = time.perf_counter()
    for a, s in pairs[:20_000]:
        reader.status(a, s)
    single = 20_000 / (time.perf_counter() - t)
    stages = "+".join(f"{'addon' if s.kind == 0 else 'file'}(k={s.l1.k if s.l1 else 0})"
                      for s in base.file.stages)
    return dict(bytes=len(base.data), build=t_all, hash=t_hash, keyed=t_all - t_hash, layers=stages,
                delta_bytes=len(delta.data), delta_changes=delta.entries, delta_s=t_delta,
                batch=batch, hashed=hashed, single=single)


def file_keys(recs):
    from addonreg.filter.keys import hash_pairs
    _, _, f0, f1 = hash_pairs([(a, s) for a, s, _ in recs])
    fk = np.stack([f0, f1], axis=1).astype("<u8").tobytes()
    keys = [fk[o:o + 16] for o in range(0, len(fk), 16)]
    rev = {k for k, (_, _, st) in zip(keys, recs) if st == "revoked"}
    return [k for k in keys if k not in rev], rev


def run_fc(recs):
    import filtercascade
    reg, rev = file_keys(recs)
    t = time.perf_counter()
    fc = filtercascade.FilterCascade([])
    fc.set_crlite_error_rates(include_len=len(rev), exclude_len=len(reg))
    fc.initialize(include=rev, exclude=reg)
    t_init = time.perf_counter() - t
    fc.verify(include=rev, exclude=reg)
    buf = io.BytesIO()
    fc.tofile(buf)
    t_all = time.perf_counter() - t
    return dict(bytes=len(buf.getvalue()), build=t_all, keyed=t_all, layers=str(fc.layerCount()))


def run_fuse(recs):
    # pyfusefilter's wrapper hashes str(item) with xxhash, which xxhash 4 refuses: call
    # its C binary fuse filter through its cffi module, keyed by our k0 words.
    from pyfusefilter._xorfilter import ffi, lib
    reg, rev = file_keys(recs)
    reg, rev = ([int.from_bytes(k[:8], "little") for k in ks] for ks in (reg, rev))
    t = time.perf_counter()
    size, layers, include, exclude = 0, 0, rev, reg
    while include:
        if len(include) <= 32:  # tiny fuse filters can pass each other's keys forever:
            size += 8 * len(include)  # end with the plain list of the last keys
            layers += 1
            break
        f = ffi.new("binary_fuse8_t *")
        assert lib.binary_fuse8_allocate(len(include), f)
        assert lib.binary_fuse8_populate(ffi.new("uint64_t[]", include), len(include), f)
        size += lib.binary_fuse8_serialization_bytes(f)
        layers += 1
        include, exclude = [k for k in exclude if lib.binary_fuse8_contain(k, f)], include
        lib.binary_fuse8_free(f)
    t_all = time.perf_counter() - t
    return dict(bytes=size, build=t_all, keyed=t_all, layers=str(layers))


RUNNERS = {"ours": run_ours, "fc": run_fc, "fuse": run_fuse}


def child(structure, n, kind):
    t = time.perf_counter()
    recs = dataset(n, kind == "clustered")
    gen = time.perf_counter() - t
    out = RUNNERS[structure](recs)
    out.update(gen=gen, peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
               revoked=sum(st == "revoked" for _, _, st in recs))
    print(json.dumps(out))


def bound_bytes(n, r):
    p = r / n
    return n * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--structures", default="ours,fc,fuse")
    ap.add_argument("--child", nargs=3, metavar=("STRUCTURE", "N", "DATASET"))
    args = ap.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]), args.child[2])
    results = {}
    for n in map(int, args.sizes.split(",")):
        for kind in ("uniform", "clustered"):
            for s in args.structures.split(","):
                proc = subprocess.run([sys.executable, __file__, "--child", s, str(n), kind],
                                      capture_output=True, text=True)
                if proc.returncode:
                    print(f"{s} {n} {kind} failed:\n{proc.stderr}", file=sys.stderr)
                    continue
                results[(n, kind, s)] = json.loads(proc.stdout.strip().splitlines()[-1])
                print(f"done {s} {n} {kind}: {results[(n, kind, s)]}", file=sys.stderr)
    report(results)


def report(results):
    print("## addonreg.filter vs filtercascade\n")
    print("Same records for every structure. *keyed*: from 16-byte keys, build + check "
          "every known key + serialize (ours: build_base on a KeySet; filtercascade: "
          "initialize + verify + tofile; Fuse8: build only). *from records*: ours with "
          "the hashing of the records (end to end). Peak RSS includes the records.\n")
    print("| files | dataset | structure | bytes | bits/file | × filtercascade | × bound "
          "| layers | keyed s | from records s | peak MB |")
    print("|---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
    names = {"ours": "addonreg.filter", "fc": "filtercascade 0.4", "fuse": "Fuse8 cascade"}
    for (n, kind, s), r in sorted(results.items(), key=lambda x: (x[0][0], x[0][1], x[0][2] != "ours")):
        fc = results.get((n, kind, "fc"))
        bound = bound_bytes(n, r["revoked"])
        ratio = f"{r['bytes'] / fc['bytes']:.3f}" if fc else "–"
        print(f"| {n:,} | {kind} | {names[s]} | {r['bytes']:,} | {8 * r['bytes'] / n:.4f} "
              f"| {ratio} | {r['bytes'] / bound:.3f} | {r['layers']} | {r['keyed']:.2f} "
              f"| {'%.2f' % r['build'] if s == 'ours' else '–'} | {r['peak_mb']:,.0f} |")
    bounds = sorted({(n, kind, r["revoked"]) for (n, kind, _), r in results.items()})
    print("\nInformation bound N·H(r/N): " + ", ".join(
        f"{n:,} {kind}: {bound_bytes(n, rv):,.0f} B" for n, kind, rv in bounds) + ".\n")
    ours = [(k, r) for k, r in sorted(results.items()) if k[2] == "ours"]
    if ours:
        print("| files | dataset | hash s | delta bytes / 1,000 changes | delta build s "
              "| reader batch checks/s | batch, pre-hashed | single `status()` checks/s |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|")
        for (n, kind, _), r in ours:
            print(f"| {n:,} | {kind} | {r['hash']:.2f} "
                  f"| {r['delta_bytes'] * 1000 / r['delta_changes']:,.0f} "
                  f"({r['delta_changes']} changed) | {r['delta_s']:.2f} | {r['batch']:,.0f} "
                  f"| {r['hashed']:,.0f} | {r['single']:,.0f} |")
        print("\nReader: base + delta; `status_many(pairs)` hashes in Python and answers "
              "with numpy (batch), `status_codes` takes hashed keys, `status()` is pure "
              "Python per file; one core.")


if __name__ == "__main__":
    main()

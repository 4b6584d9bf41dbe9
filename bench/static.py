"""Static mode benchmark: nginx serving the published tree vs nginx proxying to the service.

    .venv/bin/python bench/static.py [--rows 1000000] [--addons 100000] [--runs 5] [--duration 5]

1. Seeds a SQLite database with ``addonreg import`` (``--rows`` registrations
   over ``--addons`` add-ons), then times a full ``addonreg publish`` build of
   it: the publisher's throughput in files/s.
2. Starts one ``addonreg serve`` process and two nginx instances rendered from
   ``config/nginx.conf``: one in static mode (``@STATIC_ROOT@`` = the tree),
   one without (every GET proxied to the service).
3. Runs hot single ``GET``s (``--hot`` popular files) with ``wrk`` through
   each nginx, alternated ``--runs`` times, and reports medians and the ratio
   (the issue's target: static ≥ 10x the service's figure through nginx).

wrk is pinned to one CPU, the service and both nginx to the other (taskset).
Results: ``bench/results/static-<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_DIR))
sys.path.insert(0, str(REPO_DIR / "bench"))

import quick  # noqa: E402  (bench/quick.py: dataset, servers, wrk)

from tests.nginx import Nginx  # noqa: E402

PYTHON = sys.executable


def publish(storage: str, tree: Path) -> Dict[str, float]:
    """A full build of the tree; its numbers from the publisher's summary line."""
    env = dict(os.environ, ADDONREG_STORAGE=storage, ADDONREG_LOG_FORMAT="text")
    started = time.monotonic()
    result = subprocess.run([PYTHON, "-m", "addonreg", "publish", str(tree), "--rebuild"],
                            env=env, cwd=REPO_DIR, capture_output=True, text=True, timeout=3600)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise quick.BenchError(f"addonreg publish failed:\n{result.stderr[-2000:]}")
    match = re.search(r"published (\d+) files for (\d+) add-ons in ([\d.]+) s", result.stderr)
    if not match:
        raise quick.BenchError(f"no summary from addonreg publish:\n{result.stderr[-2000:]}")
    files, addons, seconds = int(match[1]), int(match[2]), float(match[3])
    return {"files": files, "addons": addons, "build_seconds": seconds,
            "files_per_s": files / seconds, "process_seconds": elapsed}


def main(argv: List[str] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--addons", type=int, default=100_000)
    parser.add_argument("--hot", type=int, default=100, help="popular files in the GET scenario")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args(argv)
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
            print(f"bench/static.py: {tool} not found (apt-get install wrk nginx-light)",
                  file=sys.stderr)
            return 2
    wrk_cpu, server_cpu, pinning = quick.choose_cpus(args.no_pin)
    started = datetime.datetime.now()
    tmp = Path(tempfile.mkdtemp(prefix="addonreg-static-bench-"))
    servers: List[quick.Server] = []
    nginxes: List[Nginx] = []
    try:
        storage = f"sqlite:///{tmp}/bench.sqlite3"
        rows = quick.make_dataset(args.rows, args.addons)
        csv_path = tmp / "rows.csv"
        quick.write_csv(rows, csv_path)
        print(f"seeding {len(rows):,} rows ...", file=sys.stderr)
        seeded = quick.import_rows(storage, csv_path, dict(os.environ))
        print(f"  {seeded}", file=sys.stderr)
        print("full publish ...", file=sys.stderr)
        tree = tmp / "static"
        build = publish(storage, tree)
        print(f"  {build['files']:,} files in {build['build_seconds']:.1f} s: "
              f"{build['files_per_s']:,.0f} files/s", file=sys.stderr)

        env = dict(os.environ, ADDONREG_STORAGE=storage, ADDONREG_PORT="0",
                   ADDONREG_HOST="127.0.0.1", ADDONREG_LOG_FORMAT="text",
                   ADDONREG_ACCESS_LOG="false")
        service = quick.Server("addonreg", quick.pinned([PYTHON, "-m", "addonreg", "serve"],
                                                        server_cpu),
                               env, tmp / "service.log",
                               re.compile(r"listening on [\d.]+:(?P<port>\d+)"))
        servers.append(service.start())
        upstream = f"127.0.0.1:{service.port}"
        static = Nginx(tmp / "nginx-static", read=upstream, static_root=str(tree / "current"))
        nginxes.append(static)
        proxied = Nginx(tmp / "nginx-service", read=upstream)
        nginxes.append(proxied)
        if server_cpu is not None:
            for ng in nginxes:  # the master and its worker, on the servers' CPU
                for pid in [ng.proc.pid] + [int(p) for p in subprocess.run(
                        ["pgrep", "-P", str(ng.proc.pid)], capture_output=True,
                        text=True).stdout.split()]:
                    subprocess.run(["taskset", "-pc", str(server_cpu), str(pid)],
                                   capture_output=True)

        hot = quick.hot_files(rows, args.hot)
        requests = quick.write_requests(tmp / "hot.txt",
                                        [f"GET\t{quick.file_path(r)}" for r in hot])
        # Every hot file answers 200 through both, with the same body.
        for row in hot[:10]:
            a = quick.http(f"http://127.0.0.1:{static.port}{quick.file_path(row)}")
            b = quick.http(f"http://127.0.0.1:{proxied.port}{quick.file_path(row)}")
            if a[0] != 200 or b[0] != 200 or a[1] != b[1]:
                raise quick.BenchError(f"{quick.file_path(row)}: static {a[0]}, service {b[0]}, "
                                       f"bodies {'equal' if a[1] == b[1] else 'differ'}")
        runs: Dict[str, List[Dict]] = {"static": [], "service": []}
        for i in range(args.runs):
            order = ("static", "service") if i % 2 == 0 else ("service", "static")
            for name in order:
                port = static.port if name == "static" else proxied.port
                numbers = quick.run_wrk(f"http://127.0.0.1:{port}", requests, args.duration,
                                        args.connections, wrk_cpu)
                runs[name].append(numbers)
                print(f"  {name:8s} run {i + 1}: {numbers['requests_per_s']:,.0f} req/s "
                      f"p99 {numbers['p99_ms']} ms", file=sys.stderr)
        summary = {name: {key: statistics.median(float(r[key]) for r in values)
                          for key in ("requests_per_s", "p50_ms", "p99_ms")}
                   for name, values in runs.items()}
        ratio = summary["static"]["requests_per_s"] / summary["service"]["requests_per_s"]
        report = {
            "started": started.isoformat(timespec="seconds"), "commit": quick.git_commit(),
            "pinning": pinning, "rows": args.rows, "addons": args.addons, "seed": seeded,
            "publish": build, "runs": runs, "medians": summary, "ratio_static_service": ratio,
            "wrk": f"-t1 -c{args.connections} -d{args.duration}s, {args.runs} runs alternated",
        }
        stamp = started.strftime("%Y-%m-%d-%H%M%S")
        out = REPO_DIR / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"static-{stamp}.json").write_text(json.dumps(report, indent=2) + "\n")
        md = [f"# Static mode — {started:%Y-%m-%d %H:%M}", "",
              f"- commit `{report['commit']}`; {os.cpu_count()} cores; {pinning}",
              f"- data: {args.rows:,} registrations over {args.addons:,} add-ons (SQLite)",
              f"- publisher full build: **{build['files']:,} files in "
              f"{build['build_seconds']:.1f} s = {build['files_per_s']:,.0f} files/s**",
              f"- wrk {report['wrk']}; hot single GET over {args.hot} popular files", "",
              "| path | req/s (median) | p50 | p99 |", "|---|---|---|---|"]
        for name, label in (("static", "nginx from the tree (static mode)"),
                            ("service", "nginx -> addonreg (1 process)")):
            m = summary[name]
            md.append(f"| {label} | {m['requests_per_s']:,.0f} | {m['p50_ms']:.2f} ms | "
                      f"{m['p99_ms']:.2f} ms |")
        md += ["", f"Static / service: **{ratio:.1f}x** (target ≥ 10x).", ""]
        (out / f"static-{stamp}.md").write_text("\n".join(md))
        print("\n".join(md))
        return 0
    except quick.BenchError as exc:
        print(f"bench/static.py: {exc}", file=sys.stderr)
        return 1
    finally:
        for ng in nginxes:
            ng.stop()
        for server in servers:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

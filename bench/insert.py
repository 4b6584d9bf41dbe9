"""Plain multi-row INSERT: the baseline of the bulk write scenarios of ``bench/run.py``.

New rows straight into MariaDB through aiomysql (no HTTP, validation, serials or
feed): ``--connections`` connections each loop on an ``INSERT`` of ``--rows`` new
rows (keys from ``--first``) and a ``COMMIT``, for ``--duration`` s, into ``--table``
(``LIKE registrations``). Prints ``insert {"requests", "rows", "duration_us", ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import itertools
import json
import statistics
import time
from urllib.parse import urlsplit

import aiomysql


async def insert_loop(
    args: argparse.Namespace, numbers: itertools.count[int], deadline: float, latencies: list[float]
) -> None:
    url = urlsplit(args.mysql_url)
    conn = await aiomysql.connect(
        host=url.hostname,
        port=url.port or 3306,
        user=url.username or "root",
        password=url.password or "",
        db=url.path.strip("/"),
        autocommit=False,
    )
    sql = (
        f"INSERT INTO `{args.table}` (addon_id, sha256, version, status, serial, "
        f"updated_at) VALUES " + ",".join(["(%s, %s, %s, 1, %s, %s)"] * args.rows)
    )
    try:
        async with conn.cursor() as cur:
            while time.monotonic() < deadline:
                now = datetime.datetime.now(datetime.UTC)
                params: list = []
                for n in itertools.islice(numbers, args.rows):
                    params += [
                        f"insert-{n % 1000}@bench.example",
                        hashlib.sha256(b"insert/%d" % n).digest(),
                        "1.0",
                        n,
                        now,
                    ]
                started = time.monotonic()
                await cur.execute(sql, params)
                await conn.commit()
                latencies.append(time.monotonic() - started)
    finally:
        conn.close()


async def main(args: argparse.Namespace) -> None:
    numbers = itertools.count(args.first)  # shared: one event loop, no lock needed
    latencies: list[float] = []
    started = time.monotonic()
    await asyncio.gather(
        *(
            insert_loop(args, numbers, started + args.duration, latencies)
            for _ in range(args.connections)
        )
    )
    seconds = time.monotonic() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    print(
        "insert "
        + json.dumps(
            {
                "requests": len(latencies),
                "rows": len(latencies) * args.rows,
                "duration_us": int(seconds * 1e6),
                "p50_us": int(cuts[49] * 1e6),
                "p99_us": int(cuts[98] * 1e6),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind in (
        ("--mysql-url", str),
        ("--table", str),
        ("--rows", int),
        ("--connections", int),
        ("--duration", float),
        ("--first", int),
    ):
        parser.add_argument(flag, type=kind, required=True)
    asyncio.run(main(parser.parse_args()))

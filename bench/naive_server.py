"""Naive write path for ``bench/writes.py``: one INSERT + COMMIT per request.

What addonreg's batched write path is compared with. One Tornado process, one
handler: ``PUT /v1/addons/{addon_id}/files/{sha256}`` (body optional
``{"version": …}``), Hawk-authenticated exactly as the service does it
(:class:`addonreg.auth.HawkAuthenticator` over a :class:`MemoryNonceStore`,
the credentials of ``$ADDONREG_HAWK_CREDENTIALS``), then, on a connection of
an aiomysql pool, ONE ``INSERT … ON DUPLICATE KEY UPDATE`` and ONE ``COMMIT``
per request: no batching, no serial counter, no cache. It answers ``201`` and
a record-shaped JSON body when the row is new, ``200`` when it existed.

Only the sha256 is checked (64 hex digits, as it goes into ``BINARY(32)``);
the add-on id goes in as it came (at most 255 ASCII characters). The table,
``naive_registrations`` (:data:`SCHEMA`), has the shape of addonreg's
``registrations`` (``addon_id`` ASCII binary + ``sha256 BINARY(32)`` primary
key, ``version``, ``status``, unique ``serial``, ``updated_at``); the serial
is an ``AUTO_INCREMENT`` here, since there is no counter row to lock.

The event loop is chosen like ``addonreg serve`` and ``bench/baseline.py``
(``--event-loop``, default ``$ADDONREG_EVENT_LOOP``, else ``auto``: uvloop when
installed); Tornado's access log is off, the socket is made with
``backlog=1024``.

Run: ``python bench/naive_server.py --mysql-url mysql://root@127.0.0.1:3306/DB
[--host 127.0.0.1] [--port 0] [--pool-size 8] [--event-loop auto]``. Creates its
table if missing, prints ``naive listening on HOST:PORT (LOOP, pool N)`` once it
accepts connections, and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiomysql
import pymysql
import tornado.httpserver
import tornado.netutil
import tornado.web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from baseline import loop_factory  # noqa: E402  (same event loop choice)

from addonreg.config import load_settings  # noqa: E402
from addonreg.hawk import AuthError, HawkAuthenticator
from addonreg.nonces import MemoryNonceStore  # noqa: E402

TABLE = "naive_registrations"
SCHEMA = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    addon_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    sha256 BINARY(32) NOT NULL,
    version VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    status TINYINT UNSIGNED NOT NULL COMMENT '1 registered, 2 revoked',
    serial BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    updated_at DATETIME(6) NOT NULL COMMENT 'UTC',
    PRIMARY KEY (addon_id, sha256),
    UNIQUE KEY {TABLE}_serial (serial)
) ENGINE=InnoDB"""
UPSERT = (f"INSERT INTO {TABLE} (addon_id, sha256, version, status, updated_at) "
          "VALUES (%s, %s, %s, 1, %s) ON DUPLICATE KEY UPDATE "
          "version = VALUES(version), status = 1, updated_at = VALUES(updated_at)")


class PutHandler(tornado.web.RequestHandler):
    def initialize(self, pool: aiomysql.Pool, auth: HawkAuthenticator) -> None:
        self.pool = pool
        self.auth = auth

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        if status == 401:
            self.set_header("WWW-Authenticate", "Hawk")
        self.finish({"code": status, "message": message})

    async def put(self, addon_id: str, sha256: str) -> None:
        try:
            await self.auth.authenticate(
                method=self.request.method, url=self.request.full_url(),
                authorization=self.request.headers.get("Authorization"),
                content=self.request.body,
                content_type=self.request.headers.get("Content-Type"))
        except AuthError as exc:
            return self.fail(401, exc.message)
        try:
            sha = bytes.fromhex(sha256)
            if len(sha) != 32 or not addon_id.isascii() or not 0 < len(addon_id) <= 255:
                raise ValueError
            version = None
            if self.request.body.strip():
                version = json.loads(self.request.body).get("version")
        except (ValueError, AttributeError):
            return self.fail(400, "bad add-on id, sha256 or body")
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        try:
            async with self.pool.acquire() as conn:
                try:
                    async with conn.cursor() as cur:
                        affected = await cur.execute(UPSERT, (addon_id, sha, version, now))
                        serial = cur.lastrowid
                    await conn.commit()
                except BaseException:
                    conn.close()  # rolls back on the server; the pool drops it
                    raise
        except (pymysql.err.MySQLError, OSError) as exc:
            logging.warning("write failed: %r", exc)
            return self.fail(503, "storage unavailable")
        self.set_status(201 if affected == 1 else 200)
        self.finish({"addon_id": addon_id, "sha256": sha256, "version": version,
                     "status": "registered", "serial": serial,
                     "updated_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})


def connect_args(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme != "mysql" or not parts.path.strip("/"):
        raise SystemExit("naive_server: --mysql-url must be mysql://user:pass@host:port/db")
    return dict(host=parts.hostname or "127.0.0.1", port=parts.port or 3306,
                user=unquote(parts.username or "root"), password=unquote(parts.password or ""),
                db=parts.path.strip("/"), charset="utf8mb4")


async def serve(host: str, port: int, mysql_url: str, pool_size: int) -> None:
    settings = load_settings()  # Hawk credentials and skew, as the service reads them
    if not settings.hawk_credentials:
        raise SystemExit("naive_server: set ADDONREG_HAWK_CREDENTIALS=id:key")
    auth = HawkAuthenticator(settings.hawk_credentials, MemoryNonceStore(settings.hawk_skew),
                             skew=settings.hawk_skew)
    # autocommit off: every request is an explicit transaction ended by COMMIT.
    pool = await aiomysql.create_pool(minsize=pool_size, maxsize=pool_size, autocommit=False,
                                      **connect_args(mysql_url))
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "table already exists"
                await cur.execute(SCHEMA)
        await conn.commit()
    app = tornado.web.Application(
        [(r"/v1/addons/([^/]+)/files/([^/]+)", PutHandler, {"pool": pool, "auth": auth})],
        compress_response=False)
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=75)
    sockets = tornado.netutil.bind_sockets(port, host, backlog=1024)
    server.add_sockets(sockets)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"naive listening on {host}:{sockets[0].getsockname()[1]} "
          f"({type(loop).__module__.split('.')[0]}, pool {pool_size})", flush=True)
    await stopping.wait()
    server.stop()
    await server.close_all_connections()
    pool.close()
    await pool.wait_closed()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    parser.add_argument("--mysql-url", required=True, help="mysql://user:pass@host:port/db")
    parser.add_argument("--pool-size", type=int, default=8,
                        help="MySQL connections (default 8, addonreg's storage_pool_size)")
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"),
                        default=os.environ.get("ADDONREG_EVENT_LOOP", "auto").lower())
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.host, args.port, args.mysql_url, args.pool_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())

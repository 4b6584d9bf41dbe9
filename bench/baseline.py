"""Bare Tornado baseline for the benchmarks in ``bench/``: the ceiling of one process.

One ``tornado.web.Application`` with one handler that answers every ``GET``,
``POST`` and ``PUT`` on any path with the same fixed JSON body, sized like
addonreg's single-file answer (``--size`` bytes; a request body is read by
Tornado and ignored). No storage, no validation, no cache: what is left is the
cost of Tornado's HTTP handling on the chosen event loop, so
``addonreg req/s / baseline req/s`` says how much of that ceiling the service
keeps.

The event loop is chosen as ``addonreg serve`` chooses it: ``--event-loop``
(default ``$ADDONREG_EVENT_LOOP``, else ``auto``: uvloop when installed). The
listening socket is made like the service's (``backlog=1024``), and Tornado's
access log is off as in the service.

Run: ``python bench/baseline.py [--host 127.0.0.1] [--port 0] [--size 204]
[--event-loop auto|asyncio|uvloop] [--reuse-port]`` (``--reuse-port``: SO_REUSEPORT,
so that several processes share one port, as ``bench/run.py --processes N`` does). Prints ``baseline listening on
HOST:PORT (LOOP)`` on standard output once it accepts connections, and stops
on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web


def fixed_body(size: int) -> bytes:
    """A record-shaped JSON object of exactly ``size`` bytes (or the smallest one)."""
    record = {"addon_id": "addon-0@bench.example", "sha256": "0" * 64, "version": "1.0",
              "status": "registered", "serial": 1, "updated_at": "2026-01-01T00:00:00.000000Z"}
    body = json.dumps(record, separators=(",", ":"))
    if size > len(body):
        record["version"] += "x" * (size - len(body))
        body = json.dumps(record, separators=(",", ":"))
    return body.encode()


class FixedHandler(tornado.web.RequestHandler):
    def initialize(self, body: bytes) -> None:
        self.body = body

    def get(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(self.body)

    post = get
    put = get  # bench/writes.py: the same signed PUTs as the service gets (not checked)


def loop_factory(choice: str):
    """The same choice as ``addonreg.server``: uvloop for auto/uvloop when installed."""
    if choice in ("auto", "uvloop"):
        try:
            import uvloop
            return uvloop.new_event_loop
        except ImportError:
            if choice == "uvloop":
                raise
    return asyncio.new_event_loop


async def serve(host: str, port: int, body: bytes, reuse_port: bool = False) -> None:
    app = tornado.web.Application([(r"/.*", FixedHandler, {"body": body})],
                                  compress_response=False)
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=75)
    # reuse_port: several baseline processes on one port, like `addonreg serve` x N.
    sockets = tornado.netutil.bind_sockets(port, host, backlog=1024, reuse_port=reuse_port)
    server.add_sockets(sockets)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"baseline listening on {host}:{sockets[0].getsockname()[1]} "
          f"({type(loop).__module__.split('.')[0]}, body {len(body)} bytes)", flush=True)
    await stopping.wait()
    server.stop()
    await server.close_all_connections()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (default)")
    parser.add_argument("--size", type=int, default=204, help="bytes of the answer body")
    parser.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"),
                        default=os.environ.get("ADDONREG_EVENT_LOOP", "auto").lower())
    parser.add_argument("--reuse-port", action="store_true",
                        help="SO_REUSEPORT, to run several processes on one port")
    args = parser.parse_args()
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    with asyncio.Runner(loop_factory=loop_factory(args.event_loop)) as runner:
        runner.run(serve(args.host, args.port, fixed_body(args.size), args.reuse_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

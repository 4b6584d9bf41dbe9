"""Bare Tornado baseline for ``bench/run.py``: the ceiling of one Tornado process.

GET and POST answer 200, PUT 201 (the service's answer to a new file), always with
SIZE bytes, the size of the service's answer in the scenario. No storage, parsing,
cache or access log; uvloop and SO_REUSEPORT like ``addonreg serve``. Run:
``python bench/baseline.py PORT SIZE``.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import tornado.httpserver
import tornado.netutil
import tornado.web


class FixedHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(self.settings["body"])

    post = get

    def put(self) -> None:
        self.set_status(201)
        self.get()


async def serve(port: int, size: int) -> None:
    app = tornado.web.Application([(r"/.*", FixedHandler)], body=b"x" * size)
    server = tornado.httpserver.HTTPServer(app, idle_connection_timeout=75)
    # The service's socket options: backlog 1024, SO_REUSEPORT.
    server.add_sockets(
        tornado.netutil.bind_sockets(port, "127.0.0.1", backlog=1024, reuse_port=True)
    )
    print(f"baseline listening on 127.0.0.1:{port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # as `addonreg serve` does without uvloop
        loop_factory = asyncio.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(int(sys.argv[1]), int(sys.argv[2])))

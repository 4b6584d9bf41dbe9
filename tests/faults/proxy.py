"""A TCP link between clients and one server, with faults: pass, stall, cut, restore.

:class:`LinkProxy` listens on a loopback port and forwards every connection
to its target. Its faults are what one process sees of a broken network:

* ``stall()`` — nothing moves either way, every socket stays open: a
  silently dead network, or a hung peer. Bytes sent meanwhile are held (by
  the proxy or the kernels' buffers) and delivered on ``restore()``, as TCP
  delivers them when a partition heals, even from a client that has given up
  and closed its socket since. ``stall("to_client")`` holds only what the
  server sends: requests arrive and are carried out, their answers do not
  come back (with a ``cut()`` next, the answers are lost for good: a server
  that crashed between doing a thing and saying so).
* ``cut()`` — every connection is reset and new ones are refused (the port
  is closed): a crashed or unreachable peer.
* ``restore()`` — back to passing, on the same port.

Each call returns once the new state holds: after ``stall()`` no byte that
a client sends reaches the target (bytes already handed to the kernel before
the call may still arrive).

The proxy runs its own event loop on a thread of its own, not on the
test's: a test blocks its loop at times (``ServerProcess`` waits for a
server's "listening" line, the checker reads the database with pymysql) and
the servers behind the proxy must still reach their backend meanwhile.

:class:`TCPProxy` is the same link behind the small async interface that
``tests/test_storage_down.py`` uses (``stop()`` cuts, ``start()`` restores).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Coroutine, Optional, Set, TypeVar

__all__ = ["LinkProxy", "TCPProxy"]

T = TypeVar("T")

_CHUNK = 65536


class LinkProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target_host:target_port``; see the module docstring.

    ``port`` is chosen on the first ``start()`` and kept across cuts.
    Not for use from several threads at once.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port: Optional[int] = None
        self.state = "cut"  # not started: nothing listens
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        # Set while bytes may flow: towards the server, towards the client. Made anew
        # with each loop (an event belongs to the loop that first waits on it).
        self._to_server = asyncio.Event()
        self._to_client = asyncio.Event()
        self._transports: Set[asyncio.BaseTransport] = set()
        self._tasks: Set[asyncio.Task] = set()

    def __repr__(self) -> str:
        return f"<LinkProxy :{self.port} -> {self.target[0]}:{self.target[1]} {self.state}>"

    # The faults ----------------------------------------------------------------

    def start(self) -> "LinkProxy":
        """Listen (on the same port as before, after a cut) and pass everything."""
        if self._thread is None:
            ready = threading.Event()
            self._thread = threading.Thread(
                target=self._run_loop,
                args=(ready,),
                name=f"link-proxy-{self.target[1]}",
                daemon=True,
            )
            self._thread.start()
            ready.wait()
        self._call(self._listen())
        self.state = "pass"
        return self

    def stall(self, direction: str = "both") -> None:
        """Stop forwarding ``both`` ways (or only ``to_client``, ``to_server``);
        keep every connection open."""
        if direction not in ("both", "to_client", "to_server"):
            raise ValueError(f"no direction {direction!r}")
        self._call(
            self._set_flowing(
                to_server=direction == "to_client", to_client=direction == "to_server"
            )
        )
        self.state = "stall" if direction == "both" else f"stall {direction}"

    def cut(self) -> None:
        """Reset every connection and refuse new ones (the port is closed)."""
        if self._thread is None:
            return
        self._call(self._close())
        loop, thread = self._loop, self._thread
        assert loop is not None
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = None
        self.state = "cut"

    def restore(self) -> None:
        """Pass again: after a stall, the held bytes go through; after a cut, listen again."""
        if self._thread is None:
            self.start()
            return
        self._call(self._set_flowing(to_server=True, to_client=True))
        self.state = "pass"

    close = cut

    # On the proxy's loop -------------------------------------------------------

    def _run_loop(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        self._to_server, self._to_client = asyncio.Event(), asyncio.Event()
        ready.set()
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the proxy's loop; its result, once it is done."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _set_flowing(self, *, to_server: bool, to_client: bool) -> None:
        for event, flowing in ((self._to_server, to_server), (self._to_client, to_client)):
            if flowing:
                event.set()
            else:
                event.clear()

    async def _listen(self) -> None:
        await self._set_flowing(to_server=True, to_client=True)
        if self._server is None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port or 0)
            self.port = self._server.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()  # RST, as from a peer that is gone
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._transports.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._transports.add(writer.transport)
        try:
            await self._to_server.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()  # the target refuses: so does the link
                return
            self._transports.add(up_writer.transport)
            await asyncio.gather(
                self._pipe(reader, up_writer, self._to_server),
                self._pipe(up_reader, writer, self._to_client),
            )
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            self._transports.discard(writer.transport)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, flowing: asyncio.Event
    ) -> None:
        try:
            while True:
                await flowing.wait()
                data = await reader.read(_CHUNK)
                await flowing.wait()  # a stall holds what was read
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._transports.discard(writer.transport)
            writer.close()


class TCPProxy:
    """A :class:`LinkProxy` as an async "database link": ``stop()`` cuts it, ``start()``
    brings it back on the same port (``tests/test_storage_down.py``)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.link = LinkProxy(target_host, target_port)

    @property
    def port(self) -> Optional[int]:
        return self.link.port

    async def start(self) -> "TCPProxy":
        self.link.restore()
        return self

    async def stop(self) -> None:
        """The database "goes down": refuse new connections, cut the open ones."""
        self.link.cut()

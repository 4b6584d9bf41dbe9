"""The harness checked on its own: the checker's verdicts and the link's faults.

No server and no backend: the checker gets made-up answers, the link sits in
front of a small echo server. A fault test is only as good as these two.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Iterator, Optional

import pytest

from addonreg.storage import REGISTERED, REVOKED
from tests.faults.checker import violations
from tests.faults.load import NO_ANSWER, Answer
from tests.faults.proxy import LinkProxy

SEEDED = {("seed@faults.test", "0" * 64): REGISTERED}
F1, F2 = ("a@faults.test", "1" * 64), ("a@faults.test", "2" * 64)


def write(
    kind: str,
    key,
    state: str,
    status: int,
    errno: Optional[int] = None,
    sent: float = 0.0,
    seconds: float = 0.01,
) -> Answer:
    return Answer(kind, 0, (key,), (state,), status, errno, sent, sent + seconds)


def read(states, status: int = 200, errno: Optional[int] = None) -> Answer:
    return Answer("get", 0, tuple(SEEDED), tuple(states), status, errno, 0.0, 0.01)


def check(*answers: Answer, stored=None):
    return violations(answers, stored or {}, SEEDED, liveness=5.0)


def test_acknowledged_writes_must_be_stored_with_their_state():
    put = write("put", F1, REGISTERED, 201)
    assert check(put, stored={F1: REGISTERED}) == []
    assert "but acknowledged as registered" in check(put, stored={})[0]
    delete = write("delete", F1, REVOKED, 200, sent=1.0)
    assert check(put, delete, stored={F1: REVOKED}) == []
    assert "but acknowledged as revoked" in check(put, delete, stored={F1: REGISTERED})[0]


def test_not_written_means_unchanged_and_unknown_means_either():
    refused = write("put", F1, REGISTERED, 503, 201)
    assert check(refused) == []
    assert "answered 'not written'" in check(refused, stored={F1: REGISTERED})[0]
    unknown = write("put", F2, REGISTERED, 503, 204)
    assert check(unknown) == check(unknown, stored={F2: REGISTERED}) == []
    # A refused DELETE after an acknowledged PUT leaves the file registered.
    put, delete = write("put", F1, REGISTERED, 201), write("delete", F1, REVOKED, 503, 202, 1.0)
    assert check(put, delete, stored={F1: REGISTERED}) == []
    assert check(put, delete, stored={F1: REVOKED})


def test_other_answers_to_writes_and_slow_answers_are_violations():
    assert "neither acknowledged" in check(write("put", F1, REGISTERED, 401))[0]
    assert "neither acknowledged" in check(write("delete", F1, REVOKED, 404))[0]
    late = write("put", F1, REGISTERED, 201, seconds=5.5)
    assert "liveness bound" in check(late, stored={F1: REGISTERED})[0]
    lost = write("put", F1, REGISTERED, NO_ANSWER, seconds=8.0)
    assert ["liveness" in v for v in check(lost)] == [True]  # and either state is fine


def test_reads_of_seeded_files_answer_their_state_or_503():
    assert check(read([REGISTERED]), read([], 503, 201)) == []
    assert "answered 'unknown'" in check(read(["unknown"], 404))[0]
    assert "answered 'revoked'" in check(read([REVOKED], 410))[0]


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A TCP echo server on a thread (the link's target)."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes, timeout: float = 1.0
) -> bytes:
    writer.write(data)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(data)), timeout)


async def test_the_link_passes_stalls_cuts_and_restores(echo_port: int):
    link = LinkProxy("127.0.0.1", echo_port).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        assert await exchange(reader, writer, b"pass") == b"pass"
        link.stall()
        with pytest.raises(asyncio.TimeoutError):
            await exchange(reader, writer, b"held", timeout=0.3)
        link.restore()  # what was held arrives
        assert await asyncio.wait_for(reader.readexactly(4), 1) == b"held"
        link.stall("to_client")  # the request reaches the server, its answer does not come
        with pytest.raises(asyncio.TimeoutError):
            await exchange(reader, writer, b"lost", timeout=0.3)
        link.cut()
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(4), 1)  # reset: the answer is lost
        writer.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", link.port)
        link.restore()  # the same port again
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        assert await exchange(reader, writer, b"back") == b"back"
        writer.close()
    finally:
        link.close()

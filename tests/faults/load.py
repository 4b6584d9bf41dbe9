"""A bounded mixed load against ``addonreg serve`` processes, recording every answer.

:class:`MixedLoad` runs ``clients`` concurrent clients on the test's event
loop; client ``i`` talks to process ``i % len(bases)``, one request at a
time, and stops by itself after ``max_seconds`` or ``max_requests`` (or at
:meth:`MixedLoad.stop`). Each request is one of

* ``put`` — a signed ``PUT`` of a file no request wrote before;
* ``delete`` — a signed ``DELETE`` of a file this client's ``PUT`` registered
  (acknowledged), revoked by no request since (a "not written" one aside);
* ``bulk`` — a signed ``POST /v1/registrations``: three new files and, when
  the mix has deletes, one revocation as above;
* ``get`` / ``lookup`` — reads (``GET`` one file, ``POST /v1/lookup`` five) of
  the *seeded* files (:func:`seed_files`), registered or revoked before the
  fault and written by no one during the test.

So every file is written by one client only, in the order of its requests,
and a write's effect can be told from the database afterwards. Every answer
is an :class:`Answer`: request kind, process, files, the states written (or
answered, for reads), status, errno, time sent and time answered. A request
with no answer within ``timeout`` is recorded with status 599; requests
still waiting for theirs are in :attr:`MixedLoad.pending`.

:meth:`MixedLoad.recovery` is the check that a fault has healed: a ``PUT``
and a read succeed on every process; its requests are recorded too.

Not thread-safe: one load per event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import random
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse

from addonreg.storage import REGISTERED, REVOKED
from addonreg.storage.testing import sha
from tests.conftest import Writer

__all__ = [
    "Answer",
    "Key",
    "MixedLoad",
    "seed_files",
    "WRITES",
    "READS",
    "FULL_MIX",
    "NEW_FILES_MIX",
    "NO_ANSWER",
]

Key = Tuple[str, str]
"""A file: (addon_id, sha256)."""

WRITES = ("put", "delete", "bulk")
READS = ("get", "lookup")
UNKNOWN = "unknown"
_STATE_OF_STATUS = {200: REGISTERED, 410: REVOKED, 404: UNKNOWN}
NO_ANSWER = 599
"""The status recorded when no answer came within the load's ``timeout``."""


@dataclasses.dataclass(frozen=True)
class Answer:
    """One request and its answer.

    ``states``: for a write, the state it writes each of ``keys`` to; for a
    read, the state answered for each (empty when the answer was an error).
    ``sent`` and ``answered`` are ``time.monotonic()``.
    """

    kind: str
    process: int
    keys: Tuple[Key, ...]
    states: Tuple[str, ...]
    status: int
    errno: Optional[int]
    sent: float
    answered: float

    @property
    def seconds(self) -> float:
        return self.answered - self.sent

    @property
    def is_write(self) -> bool:
        return self.kind in WRITES

    def describe(self, origin: float = 0.0) -> str:
        """One line, with times relative to ``origin`` (e.g. when the fault began)."""
        what = f"{self.kind} {self.keys[0][0]}/{self.keys[0][1][:8]}" + (
            f" (+{len(self.keys) - 1})" if len(self.keys) > 1 else ""
        )
        errno = f" errno {self.errno}" if self.errno is not None else ""
        return (
            f"{what} on process {self.process}: {self.status}{errno}, sent at "
            f"{self.sent - origin:+.2f} s, answered after {self.seconds:.2f} s"
        )


class _Deadline:
    """The HTTP client of a conftest ``Writer`` with one ``request_timeout`` for every
    request (``Client.fetch`` sets 30 s; a fault test needs its own bound)."""

    def __init__(self, http: Any, timeout: float) -> None:
        self.http = http
        self.timeout = timeout

    def fetch(self, request: HTTPRequest, **kwargs: Any) -> Awaitable[HTTPResponse]:
        request.request_timeout = self.timeout
        return self.http.fetch(request, **kwargs)

    def close(self) -> None:
        self.http.close()


def _writer(base: str, timeout: float) -> Writer:
    writer = Writer(base)
    writer.http = _Deadline(writer.http, timeout)
    return writer


def _file_path(key: Key) -> str:
    return f"/v1/addons/{key[0]}/files/{key[1]}"


def _decoded(response: HTTPResponse) -> Any:
    try:
        return json.loads(response.body)
    except (ValueError, TypeError):
        return None


async def seed_files(base: str, count: int, revoke_every: int = 4) -> Dict[Key, str]:
    """Register ``count`` files through ``base`` and revoke every ``revoke_every``-th;
    their states."""
    keys = [("seed@faults.test", sha(f"seed-{n}")) for n in range(count)]
    states = {key: REVOKED if n % revoke_every == 0 else REGISTERED for n, key in enumerate(keys)}
    writer = Writer(base)
    try:
        for op, wanted in (("register", None), ("revoke", REVOKED)):
            ops = [
                {"op": op, "addon_id": a, "sha256": h}
                for (a, h), state in states.items()
                if wanted is None or state == wanted
            ]
            response = await writer.signed("POST", "/v1/registrations", {"operations": ops})
            if response.code != 200:
                raise AssertionError(f"seeding failed: {response.code} {response.body[:300]!r}")
    finally:
        writer.close()
    return states


FULL_MIX: Mapping[str, float] = {"put": 0.3, "delete": 0.1, "bulk": 0.1, "get": 0.3, "lookup": 0.2}
"""How often each kind of request is sent (weights)."""
NEW_FILES_MIX: Mapping[str, float] = {"put": 0.35, "bulk": 0.15, "get": 0.3, "lookup": 0.2}
"""No revocation: every write registers new files only (the store's one-round-trip path)."""


class MixedLoad:
    """The load of the module docstring. ``seeded``: the files reads ask for, and their
    states; ``mix``: weights of the request kinds; ``pause``: each client's rest between
    requests (keeps the CPU for the servers)."""

    def __init__(
        self,
        bases: Sequence[str],
        seeded: Mapping[Key, str],
        *,
        clients: int = 8,
        mix: Mapping[str, float] = FULL_MIX,
        timeout: float = 10.0,
        pause: float = 0.005,
        max_seconds: float = 60.0,
        max_requests: int = 50_000,
        seed: int = 1,
    ) -> None:
        if not set(mix) <= set(WRITES + READS):
            raise ValueError(f"unknown request kinds in {mix}")
        self.bases = list(bases)
        self.seeded = dict(seeded)
        self.kinds = list(mix)
        self.weights = list(mix.values())
        self.clients = clients
        self.timeout = timeout
        self.pause = pause
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.seed = seed
        self.answers: List[Answer] = []
        self.pending: Dict[int, Answer] = {}  # requests sent, not yet answered (status 0)
        self.started = 0.0
        self._seeded_keys = list(self.seeded)
        # A writer (an HTTP client) per client, and one per process for recovery probes:
        # Tornado's client queues past 10 requests at once, and the queue would count
        # as the server's time.
        self._writers = [_writer(self.bases[i % len(self.bases)], timeout) for i in range(clients)]
        self._probe_writers = [_writer(base, timeout) for base in self.bases]
        self._tasks: List[asyncio.Task] = []
        self._stopping = False
        self._probes = 0
        self._tickets = itertools.count()

    # Running -------------------------------------------------------------------

    def start(self) -> "MixedLoad":
        self.started = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._client(i), name=f"load-client-{i}")
            for i in range(self.clients)
        ]
        return self

    async def stop(self) -> List[Answer]:
        """Let each client finish its request, then stop; every answer recorded."""
        self._stopping = True
        try:
            await asyncio.gather(*self._tasks)  # a client's failure is the test's failure
        finally:
            for writer in self._writers + self._probe_writers:
                writer.close()
        return self.answers

    def acknowledged(self, since: float = 0.0) -> int:
        """Writes acknowledged (2xx) among those sent since ``since``."""
        return sum(
            1 for a in self.answers if a.is_write and 200 <= a.status < 300 and a.sent >= since
        )

    async def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> float:
        """Poll ``condition`` while the load runs; the seconds it took (fails past ``timeout``)."""
        started = time.monotonic()
        while not condition():
            for task in self._tasks:
                if task.done():
                    task.result()  # a client that crashed says why
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not within {timeout} s: {what}")
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def recovery(self, within: float) -> float:
        """Liveness: the seconds until a ``PUT`` and a ``get`` succeeded on every process.

        Fails when that took longer than ``within``; each request is recorded.
        """
        started = time.monotonic()

        async def one(process: int) -> None:
            writer = self._probe_writers[process]
            while True:
                key = (f"probe{process}@faults.test", sha(f"probe-{self._probes}"))
                self._probes += 1
                put = await self._write(writer, process, "put", [key], [REGISTERED])
                get = await self._read_one(writer, process, self._seeded_keys[0])
                if 200 <= put.status < 300 and get.status in (200, 410):
                    return
                if time.monotonic() - started > within:
                    raise AssertionError(
                        f"liveness bound: process {process} did not recover within {within} s "
                        f"of the fault healing; last answers: {put.describe(started)}; "
                        f"{get.describe(started)}"
                    )
                await asyncio.sleep(0.05)

        await asyncio.gather(*(one(p) for p in range(len(self.bases))))
        return time.monotonic() - started

    # One client ------------------------------------------------------------------

    async def _client(self, index: int) -> None:
        process = index % len(self.bases)
        writer = self._writers[index]
        rng = random.Random(self.seed * 7919 + index)
        addon_id = f"load{index}@faults.test"
        registered: List[Key] = []  # acknowledged, not revoked since: may be deleted
        counter = 0

        def fresh() -> Key:
            nonlocal counter
            counter += 1
            return addon_id, sha(f"{index}-{counter}")

        deadline = self.started + self.max_seconds
        while (
            not self._stopping
            and time.monotonic() < deadline
            and len(self.answers) < self.max_requests
        ):
            kind = rng.choices(self.kinds, self.weights)[0]
            if kind == "delete" and not registered:
                kind = "put"
            if kind == "put":
                key = fresh()
                answer = await self._write(writer, process, "put", [key], [REGISTERED])
                if 200 <= answer.status < 300:
                    registered.append(key)
            elif kind == "delete":
                key = registered.pop(rng.randrange(len(registered)))
                answer = await self._write(writer, process, "delete", [key], [REVOKED])
                if answer.status == 503 and answer.errno in (201, 202, 203):
                    registered.append(key)  # certainly not written: still registered
            elif kind == "bulk":
                keys = [fresh() for _ in range(3)]
                states = [REGISTERED] * 3
                revoked = None
                if registered and "delete" in self.kinds:
                    revoked = registered.pop(rng.randrange(len(registered)))
                    keys.append(revoked)
                    states.append(REVOKED)
                answer = await self._write(writer, process, "bulk", keys, states)
                if answer.status == 200:
                    registered.extend(keys[:3])
                elif (
                    revoked is not None and answer.status == 503 and answer.errno in (201, 202, 203)
                ):
                    registered.append(revoked)
            elif kind == "get":
                await self._read_one(writer, process, rng.choice(self._seeded_keys))
            else:
                await self._lookup(writer, process, rng.sample(self._seeded_keys, 5))
            await asyncio.sleep(self.pause)

    # Requests ----------------------------------------------------------------------

    async def _send(
        self,
        kind: str,
        process: int,
        keys: Sequence[Key],
        request: Callable[[], Awaitable[HTTPResponse]],
        states: Callable[[HTTPResponse], Sequence[str]],
    ) -> Answer:
        sent = time.monotonic()
        ticket = next(self._tickets)
        self.pending[ticket] = Answer(kind, process, tuple(keys), (), 0, None, sent, sent)
        try:
            response: Optional[HTTPResponse] = await request()
        except (HTTPClientError, OSError):  # no answer within the timeout, or no connection
            response = None
        finally:
            del self.pending[ticket]
        answered = time.monotonic()
        if response is None:
            answer = Answer(kind, process, tuple(keys), (), NO_ANSWER, None, sent, answered)
        else:
            data = _decoded(response) if response.code >= 400 else None
            errno = data.get("errno") if isinstance(data, dict) else None
            answer = Answer(
                kind,
                process,
                tuple(keys),
                tuple(states(response)),
                response.code,
                errno,
                sent,
                answered,
            )
        self.answers.append(answer)
        return answer

    async def _write(
        self, writer: Writer, process: int, kind: str, keys: Sequence[Key], states: Sequence[str]
    ) -> Answer:
        if kind == "bulk":
            ops = [
                {"op": "register" if s == REGISTERED else "revoke", "addon_id": a, "sha256": h}
                for (a, h), s in zip(keys, states)
            ]
            request = lambda: writer.signed(
                "POST",
                "/v1/registrations",  # noqa: E731
                {"operations": ops},
            )
        else:
            method = "PUT" if kind == "put" else "DELETE"
            request = lambda: writer.signed(method, _file_path(keys[0]))  # noqa: E731
        return await self._send(kind, process, keys, request, lambda response: states)

    async def _read_one(self, writer: Writer, process: int, key: Key) -> Answer:
        def states(response: HTTPResponse) -> Sequence[str]:
            state = _STATE_OF_STATUS.get(response.code)
            return (state,) if state else ()

        return await self._send("get", process, [key], lambda: writer.get(_file_path(key)), states)

    async def _lookup(self, writer: Writer, process: int, keys: Sequence[Key]) -> Answer:
        files = [{"addon_id": a, "sha256": h} for a, h in keys]

        def states(response: HTTPResponse) -> Sequence[str]:
            if response.code != 200:
                return ()
            return [item["status"] for item in json.loads(response.body)["results"]]

        return await self._send(
            "lookup", process, keys, lambda: writer.post("/v1/lookup", {"files": files}), states
        )

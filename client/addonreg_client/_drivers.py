"""Carry out the effects of :mod:`addonreg_client._core`: blocking, or on asyncio.

A driver holds an ``httpx`` client (its own, or one the caller passes in and
keeps ownership of) and runs an operation's effects: it sends a request
(never following a redirect itself, never with the caller's client's default
auth) and reads the answer in full within the effect's size cap and
deadline, or sleeps. Nothing else: what to send, retry and believe is the
core's.

The async driver bounds each exchange with ``asyncio.timeout``; the blocking
one, with a client of its own, sends over :class:`~._bounded.BoundedTransport`,
whose every socket wait ends by the call's deadline. Either way an answer
dripped a byte at a time — its head or its body — is cut at the deadline.
With a caller's ``httpx.Client`` the blocking driver checks the deadline
between chunks of the body, and each socket wait is that client's own
timeout, no longer than what was left of the call when the request was sent.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from ._bounded import BoundedTransport, deadline
from ._core import BodyLimit, Effect, Reply, Send, Sleep, Steps
from .errors import DeadlineExceeded

__all__ = ["AsyncDriver", "SyncDriver"]

T = TypeVar("T")
# Everything httpx may raise while sending or reading; the core decides what each means.
_HTTPX_ERRORS = (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL)


@dataclasses.dataclass(frozen=True)
class _Done:
    value: Any


def _advance(steps: Steps[T], outcome: Any) -> Effect | _Done:
    """The operation's next effect, or its value once it has none."""
    try:
        return steps.send(outcome)
    except StopIteration as stop:
        return _Done(stop.value)


class SyncDriver:
    """Blocking: ``httpx.Client`` and ``time.sleep``."""

    def __init__(
        self,
        clock: Callable[[], float],
        http: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("give an httpx client or a transport, not both")
        self.clock = clock
        self.owns_http = http is None
        if http is None:
            http = httpx.Client(transport=transport or BoundedTransport())
        self.http = http

    def run(self, steps: Steps[T]) -> T:
        outcome: Any = None
        while not isinstance(effect := _advance(steps, outcome), _Done):
            outcome = self._perform(effect)
        return effect.value

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Sleep):
            return time.sleep(effect.seconds)
        try:
            with deadline(self.clock, effect.until):
                return self._exchange(effect)
        except DeadlineExceeded as exc:
            return exc
        except _HTTPX_ERRORS as exc:
            return exc

    def _exchange(self, send: Send) -> Any:
        limit = BodyLimit(send, self.clock)
        response = self.http.send(send.request, auth=send.auth, stream=True, follow_redirects=False)
        try:
            limit.start(response.headers)
            chunks = []
            for chunk in response.iter_bytes():
                limit.add(chunk)
                chunks.append(chunk)
            return Reply(
                response.status_code, response.headers, b"".join(chunks), str(send.request.url)
            )
        except Exception as exc:
            return exc
        finally:
            response.close()

    def close(self) -> None:
        """Close the connections, when the client is this driver's own."""
        if self.owns_http:
            self.http.close()


class AsyncDriver:
    """asyncio: ``httpx.AsyncClient`` and ``asyncio.sleep``."""

    def __init__(
        self,
        clock: Callable[[], float],
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("give an httpx client or a transport, not both")
        self.clock = clock
        self.owns_http = http is None
        self.http = http if http is not None else httpx.AsyncClient(transport=transport)

    async def run(self, steps: Steps[T]) -> T:
        outcome: Any = None
        while not isinstance(effect := _advance(steps, outcome), _Done):
            outcome = await self._perform(effect)
        return effect.value

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Sleep):
            return await asyncio.sleep(effect.seconds)
        try:
            async with asyncio.timeout(max(0.0, effect.until - self.clock())):
                return await self._exchange(effect)
        except TimeoutError:
            return DeadlineExceeded("the answer did not arrive within this call's deadline")
        except _HTTPX_ERRORS as exc:
            return exc

    async def _exchange(self, send: Send) -> Any:
        limit = BodyLimit(send, self.clock)
        response = await self.http.send(
            send.request, auth=send.auth, stream=True, follow_redirects=False
        )
        try:
            limit.start(response.headers)
            chunks = []
            async for chunk in response.aiter_bytes():
                limit.add(chunk)
                chunks.append(chunk)
            return Reply(
                response.status_code, response.headers, b"".join(chunks), str(send.request.url)
            )
        except (TimeoutError, asyncio.CancelledError):
            raise
        except Exception as exc:
            return exc
        finally:
            await response.aclose()

    async def aclose(self) -> None:
        """Close the connections, when the client is this driver's own."""
        if self.owns_http:
            await self.http.aclose()

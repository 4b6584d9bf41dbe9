"""Carry out the effects of :mod:`addonreg.client._core`: blocking, or on asyncio.

The two drivers differ only in how they send a request and how they wait;
everything else (what to send, retries, the cache) is the core's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any, TypeVar

import httpx

from ._core import Effect, Sleep, Steps

__all__ = ["AsyncDriver", "SyncDriver"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class _Done:
    value: Any


def _advance(steps: Steps[T], outcome: Any) -> Effect | _Done:
    """The operation's next effect, or its value once it has none."""
    try:
        return steps.send(outcome)
    except StopIteration as stop:
        return _Done(stop.value)


def _timeout(timeout: float | httpx.Timeout) -> httpx.Timeout:
    return timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)


class SyncDriver:
    """Blocking: ``httpx.Client`` and ``time.sleep``. Usable as a context manager."""

    _http: httpx.Client

    def _make_http(
        self, timeout: float | httpx.Timeout, transport: httpx.BaseTransport | None
    ) -> httpx.Client:
        return httpx.Client(timeout=_timeout(timeout), transport=transport)

    def _run(self, steps: Steps[T]) -> T:
        outcome: Any = None
        while not isinstance(effect := _advance(steps, outcome), _Done):
            outcome = self._perform(effect)
        return effect.value

    def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Sleep):
            return time.sleep(effect.seconds)
        try:
            return self._http.send(effect.request)
        except httpx.TransportError as exc:
            return exc

    def close(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        self._http.close()

    def __enter__(self: Any) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncDriver:
    """asyncio: ``httpx.AsyncClient`` and ``asyncio.sleep``. An async context manager."""

    _http: httpx.AsyncClient

    def _make_http(
        self, timeout: float | httpx.Timeout, transport: httpx.AsyncBaseTransport | None
    ) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=_timeout(timeout), transport=transport)

    async def _run(self, steps: Steps[T]) -> T:
        outcome: Any = None
        while not isinstance(effect := _advance(steps, outcome), _Done):
            outcome = await self._perform(effect)
        return effect.value

    async def _perform(self, effect: Effect) -> Any:
        if isinstance(effect, Sleep):
            return await asyncio.sleep(effect.seconds)
        try:
            return await self._http.send(effect.request)
        except httpx.TransportError as exc:
            return exc

    async def aclose(self) -> None:
        """Close the connections (the client cannot be used afterwards)."""
        await self._http.aclose()

    async def __aenter__(self: Any) -> Any:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

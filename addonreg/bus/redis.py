"""The Redis bus (``redis://host:port/db``): changes reach every process through one channel.

URL: ``redis://[:password@]host[:port][/db][?channel=NAME&timeout=SECONDS]``

* ``channel`` — the pub/sub channel (default ``addonreg:changes``). Every
  process of a deployment must use the same one; tests use a fresh name each
  so that concurrent runs on one Redis do not hear each other.
* ``timeout`` — seconds (default 1): bounds connecting, each command, the
  heartbeat's ``PING`` and the wait for a subscription to be confirmed.

No other option is accepted (``ValueError``); :func:`parse_url` splits these
off for code that hands the rest of the URL to redis-py.

Wire format: one msgpack map per message, ::

    {"o": origin, "s": sequence, "r": [[addon_id, sha256, version, status, serial, updated_at], ...]}

``origin`` is random bytes drawn when the bus is built (one per process
start), ``sequence`` counts that origin's messages (1, 2, …), ``sha256`` is
the 32 raw bytes of the digest, ``version`` a string or nil, ``status`` 1
(registered) or 2 (revoked), ``updated_at`` microseconds since the epoch. See
:func:`encode` and :func:`decode`.

Redis pub/sub is fire-and-forget: a message published while a subscriber is
disconnected, or that the publisher failed to send, is lost. This module
makes every such loss end in ``on_reset`` at the receivers:

* a receiver remembers the last sequence number of each origin; when the
  next one skips a number, it calls ``on_reset`` (then applies the
  message). The first message seen from an origin is taken as it is, and a
  repeated number (a ``PUBLISH`` retried after a connection error, which had
  arrived after all) is applied again without a reset.
* a publish that fails still uses up its sequence number, so the origin's
  next message shows the gap; and until a message gets through, the sender
  keeps trying to send an empty one (with backoff), so receivers learn of the
  gap as soon as Redis takes messages again, not at the next write.
* when the subscription drops (Redis restart, connection error, no answer to
  the keep-alive ``PING``), the receiver reports ``on_state(False)``,
  subscribes again with exponential backoff (0.05 s doubling to 2 s, with
  jitter), then calls ``on_reset`` and ``on_state(True)``.

Sequence memory survives resets: forgetting it after a resubscription would
let a message lost after the reset go unnoticed; keeping it can cost a
second reset shortly after the first, when the cache is nearly empty anyway.

:meth:`RedisBus.publish` never waits for Redis: it applies the change
locally, numbers the message and queues it; a background task sends the
queue in order (so receivers never see numbers out of order). A message
from one process is applied in the others within a few milliseconds on a
healthy network (the contract asks for 100 ms).

Not thread-safe: one bus per event loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import random
from typing import Any, Deque, Dict, List, Optional, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgpack
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..storage import REGISTERED, REVOKED, Record
from . import (BusError, ChangesCallback, InvalidationBus, ResetCallback, StateCallback,
               _ignore_state)

__all__ = ["RedisBus", "MessageError", "encode", "decode", "parse_url", "load_from_config",
           "DEFAULT_CHANNEL", "DEFAULT_TIMEOUT"]

log = logging.getLogger("addonreg.bus.redis")

DEFAULT_CHANNEL = "addonreg:changes"
DEFAULT_TIMEOUT = 1.0

_STATUS_CODES = {REGISTERED: 1, REVOKED: 2}
_STATUS_NAMES = {code: name for name, code in _STATUS_CODES.items()}
_OUTBOX_SIZE = 10_000  # messages waiting to be sent; beyond, they are dropped (and counted)
_MAX_ORIGINS = 4096  # origins whose sequence is remembered; the longest silent is forgotten


# The wire format -----------------------------------------------------------

class MessageError(ValueError):
    """A message on the channel is not one :func:`encode` writes."""


def encode(origin: bytes, sequence: int, records: Sequence[Record]) -> bytes:
    """One message: ``records`` as the ``sequence``-th message of ``origin``."""
    rows = [[r.addon_id, bytes.fromhex(r.sha256), r.version, _STATUS_CODES[r.status],
             r.serial, r.updated_at] for r in records]
    return msgpack.packb({"o": origin, "s": sequence, "r": rows}, use_bin_type=True)


def decode(payload: bytes) -> Tuple[bytes, int, List[Record]]:
    """``(origin, sequence, records)`` of a message; :class:`MessageError` when malformed."""
    origin, sequence, rows = _split(payload)
    return origin, sequence, decode_rows(rows)


def decode_rows(rows: List[Any]) -> List[Record]:
    """The records of a message's rows (from :func:`_split`); :class:`MessageError` if bad."""
    return [_decode_record(i, row) for i, row in enumerate(rows)]


def _split(payload: bytes) -> Tuple[bytes, int, List[Any]]:
    """``(origin, sequence, rows)``, the rows not yet checked: a process skips its own
    messages before paying for the records (a 5,000-file batch comes back to its writer)."""
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise MessageError(f"not msgpack ({exc.__class__.__name__})") from None
    if not isinstance(message, dict):
        raise MessageError("not a map")
    origin, sequence, rows = message.get("o"), message.get("s"), message.get("r")
    if not isinstance(origin, bytes) or not origin:
        raise MessageError("no origin")
    if type(sequence) is not int or sequence < 1:
        raise MessageError("no sequence number")
    if not isinstance(rows, list):
        raise MessageError("no records")
    return origin, sequence, rows


def _decode_record(index: int, row: Any) -> Record:
    if not isinstance(row, list) or len(row) != 6:
        raise MessageError(f"record {index}: not a 6-item array")
    addon_id, digest, version, status, serial, updated_at = row
    if not isinstance(addon_id, str) or not addon_id:
        raise MessageError(f"record {index}: bad addon_id")
    if not isinstance(digest, bytes) or len(digest) != 32:
        raise MessageError(f"record {index}: sha256 is not 32 bytes")
    if version is not None and not isinstance(version, str):
        raise MessageError(f"record {index}: bad version")
    if type(status) is not int or status not in _STATUS_NAMES:
        raise MessageError(f"record {index}: bad status")
    if type(serial) is not int or serial < 1:
        raise MessageError(f"record {index}: bad serial")
    if type(updated_at) is not int:
        raise MessageError(f"record {index}: bad updated_at")
    return Record(addon_id, digest.hex(), version, _STATUS_NAMES[status], serial, updated_at)


def _describe(exc: BaseException) -> str:
    # redis-py's exceptions have a terse repr ("network:ConnectionError").
    return f"{exc.__class__.__name__}: {exc}"


# The URL -------------------------------------------------------------------

def parse_url(url: str) -> Tuple[str, Dict[str, Any]]:
    """``(url for redis-py, {"channel": …, "timeout": …})``; ``ValueError`` on a bad option."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    channel = options.pop("channel", DEFAULT_CHANNEL)
    if not channel:
        raise ValueError("pub/sub URL: channel must not be empty")
    raw_timeout = options.pop("timeout", str(DEFAULT_TIMEOUT))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout < math.inf:
        raise ValueError(f"pub/sub URL: timeout must be a positive number of seconds, "
                         f"not {raw_timeout!r}")
    if options:
        raise ValueError(f"pub/sub URL: unknown option(s) {', '.join(sorted(options))} "
                         f"(known: channel, timeout)")
    return urlunsplit(parts._replace(query="")), {"channel": channel, "timeout": timeout}


# The bus -------------------------------------------------------------------

class RedisBus(InvalidationBus):
    """Changes to and from every process subscribed to one Redis channel.

    ``url`` is a plain redis-py URL (see :meth:`from_url` for one with
    options). ``origin`` defaults to 16 random bytes. ``keepalive``: after
    that many seconds without traffic the subscription is ``PING``-ed, and
    given up (then made again) when no answer comes within ``timeout``.
    ``backoff``: first and longest wait between subscription attempts.
    """

    def __init__(self, url: str, *, channel: str = DEFAULT_CHANNEL,
                 timeout: float = DEFAULT_TIMEOUT, origin: Optional[bytes] = None,
                 keepalive: float = 5.0, backoff: Tuple[float, float] = (0.05, 2.0)) -> None:
        super().__init__()
        self.channel = channel
        self.origin = origin if origin is not None else os.urandom(16)
        self.timeout = timeout
        self.keepalive = keepalive
        self.backoff = backoff
        parts = urlsplit(url)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"  # no password
        # No socket_timeout: with one, redis-py puts every write under
        # asyncio.wait_for, which on Python 3.11 can swallow a cancellation (and
        # close() would wait forever). Each operation here is bounded by
        # asyncio.timeout instead.
        options = dict(socket_connect_timeout=timeout, socket_timeout=None,
                       socket_keepalive=True, client_name="addonreg-bus")
        # One immediate retry, on a fresh connection: after a Redis restart the
        # pooled connection is dead and the first PUBLISH on it fails. A retried
        # PUBLISH that had in fact arrived repeats its number: receivers ignore that.
        self._commands = redis.asyncio.Redis.from_url(url, retry=Retry(NoBackoff(), 1), **options)
        # Nor any retry layer under the subscription: redis-py would otherwise
        # reconnect and resubscribe behind our back, and the messages lost
        # meanwhile would go unnoticed. Every error must reach _receive_forever.
        self._subscriber = redis.asyncio.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0, supported_errors=()), **options)
        self._sequence = 0
        self._last_seen: Dict[bytes, int] = {}  # origin -> last sequence; oldest first
        # Messages waiting for the sender task, oldest first. Not an asyncio.Queue
        # awaited under wait_for(): on Python 3.11 that can swallow a cancellation.
        self._outbox: Deque[bytes] = collections.deque()
        self._wakeup = asyncio.Event()  # set: the outbox has something
        self._idle = asyncio.Event()  # set: nothing queued nor being sent
        self._idle.set()
        self._gap_pending = False  # a message of ours was lost since the last one that got through
        self._receiver: Optional[asyncio.Task] = None
        self._sender: Optional[asyncio.Task] = None
        self._first_attempt: Optional[asyncio.Event] = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "RedisBus":
        """A bus for a pub/sub URL with options (``?channel=…&timeout=…``)."""
        plain, options = parse_url(url)
        return cls(plain, **{**options, **kwargs})

    @property
    def sequence(self) -> int:
        """The sequence number of the last message this bus numbered (0: none yet)."""
        return self._sequence

    def __repr__(self) -> str:
        return f"<RedisBus {self._where} channel={self.channel!r} origin={self.origin.hex()}>"

    # The interface ---------------------------------------------------------

    async def start(self, on_changes: ChangesCallback, on_reset: ResetCallback,
                    on_state: StateCallback = _ignore_state) -> None:
        """Subscribe, and return once the first attempt succeeded or failed.

        When it failed, ``on_state(False)`` has been called and attempts go
        on in the background; success then brings ``on_reset()`` and
        ``on_state(True)``.
        """
        if self._closed:
            raise RuntimeError("bus closed")
        self._bind(on_changes, on_reset, on_state)
        self._first_attempt = asyncio.Event()
        self._receiver = asyncio.create_task(self._receive_forever(), name="addonreg-bus-receive")
        self._sender = asyncio.create_task(self._send_forever(), name="addonreg-bus-send")
        await self._first_attempt.wait()

    async def publish(self, records: Sequence[Record]) -> None:
        self._require_started()
        if not records:
            return
        self._apply(records)
        self._sequence += 1
        try:
            payload = encode(self.origin, self._sequence, records)
        except (KeyError, ValueError, TypeError, OverflowError):
            log.exception("could not encode %d change(s)", len(records))
            self._lost(1)
            return
        if self._closed:
            log.warning("bus closed: %d change(s) not sent to the other processes", len(records))
            self._lost(1)
            return
        if len(self._outbox) >= _OUTBOX_SIZE:
            log.warning("pub/sub outbox full (%d messages): change(s) not sent", _OUTBOX_SIZE)
            self._lost(1)
            return
        self._outbox.append(payload)
        self._idle.clear()
        self._wakeup.set()

    async def close(self) -> None:
        """Send what is queued (for at most ``timeout``), stop the tasks, close the connections."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        if self._sender is not None and not self._sender.done():
            try:
                async with asyncio.timeout(self.timeout):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("closing with %d message(s) unsent", len(self._outbox))
        pending = {t for t in (self._sender, self._receiver) if t is not None}
        while pending:
            for task in pending:
                task.cancel()
            # Cancel again if one is still running: a library may have swallowed
            # the first cancellation (the loops also stop once they see _closed).
            _, pending = await asyncio.wait(pending, timeout=self.timeout)
        await self._subscriber.aclose()
        await self._commands.aclose()

    async def heartbeat(self) -> None:
        if not self.connected:
            raise BusError(f"not subscribed to {self.channel!r} on {self._where}")
        try:
            async with asyncio.timeout(self.timeout):
                await self._commands.ping()
        except (redis.exceptions.RedisError, OSError, asyncio.TimeoutError) as exc:
            raise BusError(f"Redis at {self._where} does not answer", original=exc) from None

    # Sending ---------------------------------------------------------------

    def _lost(self, count: int) -> None:
        """Messages that will never be sent: the next one that is shows the gap."""
        self._counts["publish_errors"] += count
        self._gap_pending = True

    async def _send_forever(self) -> None:
        """Send the outbox in order; after a loss, announce the gap until a message gets through."""
        failures = 0
        while True:
            if not self._outbox:
                self._idle.set()
                if self._closed:
                    return  # drained (close() also cancels: this is the way out if that was lost)
                self._wakeup.clear()
                if not self._gap_pending:
                    await self._wakeup.wait()
                    continue
                try:
                    async with asyncio.timeout(self._delay(failures)):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
                if not self._outbox:
                    # An empty message with the next number: receivers see the gap now.
                    self._sequence += 1
                    self._outbox.append(encode(self.origin, self._sequence, ()))
                    self._idle.clear()
            payload = self._outbox[0]
            try:
                async with asyncio.timeout(self.timeout):
                    await self._commands.publish(self.channel, payload)
            except Exception as exc:  # whatever it is, the loop must go on
                failures += 1
                self._lost(1)
                (log.warning if failures == 1 else log.debug)(
                    "publishing on %s failed (%d in a row): %s; the other processes will "
                    "drop their caches", self._where, failures, _describe(exc))
            else:
                if failures:
                    log.info("publishing on %s again after %d failure(s)", self._where, failures)
                failures = 0
                self._gap_pending = False
                self._counts["published"] += 1
            finally:
                self._outbox.popleft()

    def _delay(self, failures: int) -> float:
        first, longest = self.backoff
        return min(longest, first * 2 ** min(max(failures - 1, 0), 32)) * random.uniform(0.5, 1.0)

    # Receiving -------------------------------------------------------------

    async def _receive_forever(self) -> None:
        """Subscribe, listen until the subscription fails, and again, forever."""
        failures = 0
        may_have_missed = False  # a subscription was lost, or the first attempt failed
        while not self._closed:
            pubsub = self._subscriber.pubsub()
            try:
                await self._subscribe(pubsub)
                if may_have_missed:
                    self._counts["reconnects"] += 1
                    log.info("subscribed to %r on %s again", self.channel, self._where)
                    self._reset("pub/sub subscription was lost: changes may have been missed")
                failures = 0
                self._set_connected(True)
                self._first_attempt.set()  # type: ignore[union-attr]
                await self._listen(pubsub)
            except Exception as exc:
                failures += 1
                (log.warning if failures == 1 else log.debug)(
                    "pub/sub subscription to %r on %s %s (%d attempt(s)): %s", self.channel,
                    self._where, "lost" if self.connected else "failed", failures, _describe(exc))
            finally:
                await self._unsubscribe(pubsub)
            may_have_missed = True
            self._set_connected(False)
            self._first_attempt.set()  # type: ignore[union-attr]
            await asyncio.sleep(self._delay(failures))

    async def _subscribe(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Subscribe and wait for Redis to confirm: from then on no message is missed."""
        async with asyncio.timeout(2 * self.timeout):
            await pubsub.subscribe(self.channel)
            while True:
                message = await pubsub.get_message(timeout=self.timeout)
                if message is not None and message["type"] == "subscribe":
                    return

    async def _listen(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Handle messages until the subscription fails (then raise)."""
        loop = asyncio.get_running_loop()
        heard = loop.time()
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.keepalive))
            now = loop.time()
            if message is None:
                # A silent connection may be a dead one: ask, and give up when no answer comes.
                if pinged and now - heard > self.keepalive + self.timeout:
                    raise redis.exceptions.TimeoutError("no answer to the keep-alive PING")
                if not pinged and now - heard > self.keepalive:
                    async with asyncio.timeout(self.timeout):
                        await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            kind = message["type"]
            if kind == "message":
                self._handle(message["data"])
            elif kind == "unsubscribe":
                raise redis.exceptions.ConnectionError("unsubscribed by the server")

    async def _unsubscribe(self, pubsub: redis.asyncio.client.PubSub) -> None:
        """Close the subscription's connection and wait until it is closed."""
        try:
            if pubsub.connection is not None:
                # PubSub.aclose() does not wait for the socket to close; this does.
                await pubsub.connection.disconnect()
            await pubsub.aclose()
        except Exception as exc:
            log.debug("closing the subscription: %s", _describe(exc))

    def _handle(self, payload: bytes) -> None:
        """One message from the channel."""
        try:
            origin, sequence, rows = _split(payload)
            if origin == self.origin:
                return  # applied by publish() already
            records = decode_rows(rows)
        except MessageError as exc:
            self._counts["malformed"] += 1
            log.warning("ignoring a malformed message on %r: %s", self.channel, exc)
            return
        last = self._last_seen.pop(origin, None)
        # Re-inserted, so the dict stays ordered from the longest silent origin.
        self._last_seen[origin] = sequence if last is None else max(last, sequence)
        if len(self._last_seen) > _MAX_ORIGINS:
            del self._last_seen[next(iter(self._last_seen))]
        # A number at or below the last one is a repeat (a retried PUBLISH):
        # applying its records again is harmless, a newer change is never undone.
        if last is not None and sequence > last + 1:
            self._reset(f"message {sequence} from origin {origin.hex()} came after {last}: "
                        f"changes may have been missed")
        self._counts["received"] += 1
        if records:
            self._apply(records)


def load_from_config(settings) -> RedisBus:
    return RedisBus.from_url(settings.pubsub)

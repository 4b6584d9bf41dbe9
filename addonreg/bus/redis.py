"""The Redis bus (``redis://host:port/db``): changes reach every process in milliseconds.

URL: ``redis://[:password@]host[:port][/db][?channel=NAME&timeout=SECONDS]``

* ``channel`` — the pub/sub channel (default ``addonreg:changes``), the same
  for every process of a deployment;
* ``timeout`` — seconds (default 1) bounding connecting, each command and
  the wait for a subscription to be confirmed.

Redis pub/sub is fire-and-forget: a message published while a subscriber is
away is lost. So this bus is an accelerator on top of :class:`FeedBus`: every
process still follows storage's change feed, every ``backstop`` seconds
(default 10 × ``feed_interval``, 0.25 s), and a lost message, a Redis that is
down or a link that stalled silently costs at most that. ``publish`` never
waits for Redis: the message is queued and a background task sends it.

Messages are authenticated: one msgpack map per message, ::

    {"o": origin, "s": sequence, "r": [[addon_id, sha256, version, status, serial,
     updated_at], ...], "m": HMAC-SHA256(bus_key, msgpack([o, s, r]))}

(``sha256`` the 32 raw bytes, ``status`` 1 registered / 2 revoked,
``updated_at`` µs since the epoch). A receiver ignores its own messages and
any whose MAC fails (counted as ``rejected``); for the others it forgets
the files named (the next read goes to storage) rather than believing the
records: a message cannot make a process answer a state storage does not
hold. Rolling upgrade: processes from before the MAC still read these
messages (they ignore ``m``); their own unsigned messages are rejected by
new processes, which pick the changes up from the feed instead.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import logging
import math
import os
import random
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Sequence, Tuple
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import msgpack
import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..status import STATUS_CODE
from ..storage import Key, Record, RegistrationStore
from . import BusError, InvalidationBus, Subscriber
from .feed import FeedBus

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "RedisBus",
    "MessageError",
    "MessageForged",
    "encode",
    "decode",
    "parse_url",
    "load_from_config",
    "DEFAULT_CHANNEL",
    "DEFAULT_TIMEOUT",
]

log = logging.getLogger("addonreg.bus.redis")

DEFAULT_CHANNEL = "addonreg:changes"
DEFAULT_TIMEOUT = 1.0
_OUTBOX_SIZE = 10_000  # messages waiting to be sent; beyond, they are dropped (and counted)


class MessageError(ValueError):
    """A message on the channel is not one :func:`encode` writes."""


class MessageForged(MessageError):
    """A message whose MAC is missing or wrong: not written with our bus key
    (forged, or from a process with another key or from before the MAC)."""


def _mac(key: bytes, origin: bytes, sequence: int, rows: List[Any]) -> bytes:
    return hmac.digest(key, msgpack.packb([origin, sequence, rows], use_bin_type=True), "sha256")


def encode(key: bytes, origin: bytes, sequence: int, records: Sequence[Record]) -> bytes:
    """One message: ``records`` as the ``sequence``-th message of ``origin``, MAC'd."""
    rows = [
        [
            r.addon_id,
            bytes.fromhex(r.sha256),
            r.version,
            STATUS_CODE[r.status],
            r.serial,
            r.updated_at,
        ]
        for r in records
    ]
    return msgpack.packb(
        {"o": origin, "s": sequence, "r": rows, "m": _mac(key, origin, sequence, rows)},
        use_bin_type=True,
    )


def decode(key: bytes, payload: bytes) -> Tuple[bytes, List[Key], int]:
    """``(origin, keys, highest serial)`` of a message; :class:`MessageError` when
    malformed or not authenticated by ``key``."""
    try:
        message = msgpack.unpackb(payload, raw=False)
    except Exception as exc:  # msgpack raises a zoo of types on garbage
        raise MessageError(f"not msgpack ({exc.__class__.__name__})") from None
    if not isinstance(message, dict):
        raise MessageError("not a map")
    origin, sequence, rows, mac = (message.get(k) for k in ("o", "s", "r", "m"))
    if not isinstance(origin, bytes) or type(sequence) is not int or not isinstance(rows, list):
        raise MessageError("no origin, sequence or records")
    if not isinstance(mac, bytes) or not hmac.compare_digest(
        mac, _mac(key, origin, sequence, rows)
    ):
        raise MessageForged("MAC missing or wrong")
    keys = []
    for i, row in enumerate(rows):
        if (
            not isinstance(row, list)
            or len(row) != 6
            or not isinstance(row[0], str)
            or not isinstance(row[1], bytes)
            or len(row[1]) != 32
            or type(row[4]) is not int
        ):
            raise MessageError(f"record {i} is not [addon_id, sha256, …]")
        keys.append((row[0], row[1].hex()))
    return origin, keys, max((row[4] for row in rows), default=0)


def parse_url(url: str) -> Tuple[str, Dict[str, Any]]:
    """``(url for redis-py, {"channel": …, "timeout": …})``; ``ValueError`` on a bad part."""
    parts = urlsplit(url)
    parts.port  # raises ValueError on a bad port
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(
            f"the database must be a number (redis://host:port/0), not {parts.path.strip('/')!r}"
        )
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    channel = options.pop("channel", DEFAULT_CHANNEL)
    raw_timeout = options.pop("timeout", str(DEFAULT_TIMEOUT))
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = math.nan
    if not channel or not 0 < timeout <= 60:
        raise ValueError(
            f"channel must not be empty and timeout must be 0 < s <= 60, not {raw_timeout!r}"
        )
    if options:
        raise ValueError(
            f"unknown option(s) {', '.join(sorted(options))} (known: channel, timeout)"
        )
    return urlunsplit(parts._replace(query="")), {"channel": channel, "timeout": timeout}


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}"  # redis-py's reprs are terse


class RedisBus(FeedBus):
    """Changes to and from every process on one Redis channel, the feed as backstop.

    ``key`` authenticates messages (the ``bus_key`` setting, the same in every
    process). ``keepalive``: after that many seconds of silence the
    subscription is PINGed, and made again when no answer comes within
    ``timeout``. ``subscribe=False``: publish only (a command such as import).
    """

    def __init__(
        self,
        url: str,
        store: RegistrationStore,
        key: bytes,
        *,
        backstop: float = 0.25,
        subscribe: bool = True,
        keepalive: float = 5.0,
        backoff: Tuple[float, float] = (0.05, 2.0),
    ) -> None:
        super().__init__(store, interval=backstop)
        plain, options = parse_url(url)
        self.channel, self.timeout = options["channel"], options["timeout"]
        self.key, self.subscribe, self.keepalive, self.backoff = key, subscribe, keepalive, backoff
        self.origin = os.urandom(16)
        parts = urlsplit(plain)
        self._where = f"{parts.hostname or 'localhost'}:{parts.port or 6379}"  # no password
        # No socket_timeout: with one, redis-py puts every write under
        # asyncio.wait_for, which on Python 3.11 can swallow a cancellation.
        # Each operation here is bounded by asyncio.timeout instead.
        opts = dict(
            socket_connect_timeout=self.timeout, socket_keepalive=True, client_name="addonreg-bus"
        )
        # One immediate retry of a PUBLISH on a fresh connection (the pooled one
        # is dead after a Redis restart); none under the subscription, whose
        # every error must reach _receive_forever.
        self._commands = redis.asyncio.Redis.from_url(plain, retry=Retry(NoBackoff(), 1), **opts)
        self._pubsub_client = redis.asyncio.Redis.from_url(
            plain, retry=Retry(NoBackoff(), 0, supported_errors=()), **opts
        )
        self._sequence = 0
        self._outbox: Deque[bytes] = collections.deque()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._tasks: List[asyncio.Task] = []
        self.subscribed = False

    def __repr__(self) -> str:
        return f"<RedisBus {self._where} channel={self.channel!r}>"

    async def start(self, subscriber: Subscriber) -> None:
        """Start the feed backstop, the sender, and (unless publish-only) the subscription;
        return once the first subscription attempt succeeded or failed."""
        if self.subscribe:
            await super().start(subscriber)
        else:
            await InvalidationBus.start(self, subscriber)  # publish only: no feed
            self._set_connected(True)
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._send_forever(), name="addonreg-bus-send"))
        if self.subscribe:
            first = asyncio.Event()
            self._tasks.append(
                loop.create_task(self._receive_forever(first), name="addonreg-bus-receive")
            )
            await first.wait()

    async def publish(self, records: Sequence[Record]) -> None:
        self._require_started()
        if not records:
            return
        self._apply(records)
        if self._closed or len(self._outbox) >= _OUTBOX_SIZE:
            log.warning(
                "%d change(s) not sent to the other processes (%s)",
                len(records),
                "bus closed" if self._closed else "outbox full",
            )
            self._counts["publish_errors"] += 1
            return
        self._sequence += 1
        self._outbox.append(encode(self.key, self.origin, self._sequence, records))
        self._idle.clear()
        self._wakeup.set()

    async def close(self) -> None:
        """Send what is queued (for at most ``timeout``), stop the tasks, close the connections."""
        if self._closed:
            return
        await super().close()
        self._wakeup.set()
        try:
            async with asyncio.timeout(self.timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("closing with %d message(s) unsent", len(self._outbox))
        pending = set(self._tasks)
        while pending:
            for task in pending:
                task.cancel()
            # Cancel again if one is still running: a library may have swallowed
            # the first cancellation (the loops also stop once they see _closed).
            _, pending = await asyncio.wait(pending, timeout=self.timeout)
        await self._pubsub_client.aclose()
        await self._commands.aclose()

    async def heartbeat(self) -> None:
        if self.subscribe:
            await super().heartbeat()  # the feed
        try:
            async with asyncio.timeout(self.timeout):
                await self._commands.ping()  # type: ignore[misc]  # redis-py 7 types it bool | Awaitable
        except (redis.exceptions.RedisError, OSError, TimeoutError) as exc:
            raise BusError(f"Redis at {self._where} does not answer", original=exc) from None

    def _delay(self, failures: int) -> float:
        first, longest = self.backoff
        return min(longest, first * 2 ** min(max(failures - 1, 0), 32)) * random.uniform(0.5, 1.0)

    async def _send_forever(self) -> None:
        """Send the outbox in order; a message that fails is dropped (the feed covers it)."""
        failures = 0
        while True:
            if not self._outbox:
                self._idle.set()
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                async with asyncio.timeout(self.timeout):
                    await self._commands.publish(self.channel, self._outbox[0])
                self._counts["published"] += 1
                failures = 0
            except Exception as exc:  # whatever it is, the loop must go on
                failures += 1
                self._counts["publish_errors"] += 1
                if failures == 1:
                    log.warning(
                        "publishing on %s failed: %s; the other processes will take "
                        "the change from the feed",
                        self._where,
                        _describe(exc),
                    )
            finally:
                self._outbox.popleft()

    async def _receive_forever(self, first: asyncio.Event) -> None:
        """Subscribe, listen until the subscription fails, and again, forever."""
        failures = 0
        while not self._closed:
            pubsub = self._pubsub_client.pubsub()
            try:
                async with asyncio.timeout(2 * self.timeout):
                    await pubsub.subscribe(self.channel)
                    while (await pubsub.get_message(timeout=self.timeout) or {}).get(
                        "type"
                    ) != "subscribe":
                        pass
                if failures or not first.is_set():
                    log.info("subscribed to %r on %s", self.channel, self._where)
                self._counts["reconnects"] += bool(failures)
                failures, self.subscribed = 0, True
                first.set()
                await self._listen(pubsub)
            except Exception as exc:
                failures += 1
                if failures == 1:
                    log.warning(
                        "pub/sub subscription to %r on %s lost: %s (the feed goes on)",
                        self.channel,
                        self._where,
                        _describe(exc),
                    )
            finally:
                self.subscribed = False
                try:
                    if pubsub.connection is not None:
                        await pubsub.connection.disconnect()  # aclose() does not wait for it
                    await pubsub.aclose()
                except Exception as exc:
                    log.debug("closing the subscription: %s", _describe(exc))
            first.set()
            await asyncio.sleep(self._delay(failures))

    async def _listen(self, pubsub: Any) -> None:
        """Handle messages until the subscription fails (then raise)."""
        loop = asyncio.get_running_loop()
        heard, pinged = loop.time(), False
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.keepalive))
            now = loop.time()
            if message is None:
                # A silent connection may be a dead one: ask, give up when no answer comes.
                if pinged and now - heard > self.keepalive + self.timeout:
                    raise redis.exceptions.TimeoutError("no answer to the keep-alive PING")
                if not pinged and now - heard > self.keepalive:
                    async with asyncio.timeout(self.timeout):
                        await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            if message["type"] == "message":
                self._handle(message["data"])
            elif message["type"] == "unsubscribe":
                raise redis.exceptions.ConnectionError("unsubscribed by the server")

    def _handle(self, payload: bytes) -> None:
        try:
            origin, keys, serial = decode(self.key, payload)
        except MessageError as exc:
            kind = "rejected" if isinstance(exc, MessageForged) else "malformed"
            self._counts[kind] += 1
            if self._counts[kind] in (1, 10, 100, 1000) or self._counts[kind] % 10000 == 0:
                log.warning(
                    "ignoring a %s message on %r (%d so far): %s",
                    kind,
                    self.channel,
                    self._counts[kind],
                    exc,
                )
            return
        if origin != self.origin:
            self._counts["received"] += len(keys)
            # Reads must not answer older than this change (a read node behind it
            # is not read from until it has caught up): see storage.observe.
            self.store.observe(serial)
            self._forget(keys)


def load_from_config(
    settings: Settings, store: RegistrationStore, subscribe: bool = True
) -> RedisBus:
    return RedisBus(
        settings.pubsub,
        store,
        settings.bus_key.encode("utf-8"),
        backstop=10 * settings.feed_interval,
        subscribe=subscribe,
    )

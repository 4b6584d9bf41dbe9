"""``addonreg filter DIR``: build the registry filter and keep it current.

Reads the whole registry (storage's own scan, or a service's change feed
with ``--from URL``), publishes a base into ``DIR/filter/`` (see
:class:`~addonreg.filter.writer.FilterWriter`), then with ``--follow`` reads
the feed on and publishes a cumulative delta at most every
``filter_delta_interval`` seconds; the writer starts a new base when the
delta outgrows ``filter_max_delta_ratio`` of the base or the base is older
than ``filter_max_base_age``. An unchanged registry rewrites nothing, so
mirrors and clients see the same bytes.

``DIR`` is what the service's ``filter_dir`` and nginx's filter location
point at; ``DIR/filter/latest.json`` is the signed index.

A service's feed is checked record by record (:mod:`addonreg.sources`): a
record that breaks the contract stops the command (exit 1, one line naming
its serial) before anything built from its page is written. File names in
``DIR/filter/`` are the files' own SHA-256, never taken from the feed.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import signal
import sys
import time
from typing import TYPE_CHECKING, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ..sources import FeedError, FeedRejected, FeedSource, feed_source
from ..storage import BackendError, Record
from .index import raw_public_key
from .keys import FileStatus, KeySet
from .writer import FilterWriter

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["follow_filter", "run_filter", "generate_key"]

log = logging.getLogger("addonreg.filter")


def generate_key() -> Tuple[str, str]:
    """A new Ed25519 key: (private, public), each the base64 of its 32 raw bytes."""
    key = Ed25519PrivateKey.generate()
    from cryptography.hazmat.primitives import serialization

    private = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return (
        base64.b64encode(private).decode(),
        base64.b64encode(raw_public_key(key.public_key())).decode(),
    )


def _statuses(records: List[Record]) -> List[FileStatus]:
    return [(r.addon_id, r.sha256, r.status) for r in records]


async def follow_filter(
    writer: FilterWriter,
    source: FeedSource,
    *,
    follow: bool,
    interval: float,
    poll: float = 1.0,
    stopping: Optional[asyncio.Event] = None,
) -> None:
    """Publish a base, then (``follow``) deltas until ``stopping`` is set."""
    records, since = await source.snapshot()
    # A file read twice (it changed during the read): its later record wins.
    keys = KeySet.from_changes(_statuses(records))
    index = writer.publish_base(keys, since)
    log.info(
        "filter base: %d files at serial %d, %d bytes", len(keys), since, index["base"]["size"]
    )
    stopping = stopping or asyncio.Event()
    pending: List[Record] = []
    last = time.monotonic()
    while follow and not stopping.is_set():
        try:
            page, since = await source.read(since)
            pending += page
        except FeedRejected:
            raise  # asking again gets the same answer: stop, saying why
        except FeedError as exc:
            log.warning("feed unavailable: %s", exc)
        if pending and time.monotonic() - last >= interval:
            index = writer.update(_statuses(pending), since)
            log.info(
                "filter at serial %d: %d change(s); base %d bytes, delta %d bytes",
                since,
                len(pending),
                index["base"]["size"],
                (index.get("delta") or {}).get("size", 0),
            )
            pending, last = [], time.monotonic()
        try:
            await asyncio.wait_for(stopping.wait(), poll)
        except asyncio.TimeoutError:
            pass


async def run_filter(
    settings: Settings, directory: str, *, follow: bool, source_url: Optional[str]
) -> int:
    """``addonreg filter``: the exit code."""
    if not settings.filter_key:
        print(
            "addonreg filter: setting 'filter_key' is required ($ADDONREG_FILTER_KEY: the "
            "Ed25519 signing key, PEM or base64; `addonreg filter --generate-key` makes one)",
            file=sys.stderr,
        )
        return 2
    writer = FilterWriter(
        directory,
        settings.filter_key,
        max_delta_ratio=settings.filter_max_delta_ratio,
        max_base_age=settings.filter_max_base_age,
    )
    try:
        source = feed_source(settings, source_url)
    except FeedError as exc:
        print(f"addonreg filter: {exc}", file=sys.stderr)
        return 2
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await source.open()
        await follow_filter(
            writer,
            source,
            follow=follow,
            interval=settings.filter_delta_interval,
            stopping=stopping,
        )
    except (FeedError, BackendError, OSError) as exc:
        print(f"addonreg filter: {exc}", file=sys.stderr)
        return 1
    finally:
        await source.close()
    return 0

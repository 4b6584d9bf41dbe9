"""Prometheus metrics, multi-process aware (``GET /__metrics__``).

With several processes per host, set ``PROMETHEUS_MULTIPROC_DIR`` to a
directory the processes share, empty at start (``bin/addonreg-supervisord``
does):
prometheus_client then keeps each process's values in files there and a
scrape of any process reports the sum of all. Without it, a scrape reports
the process that answered.

The hot path stays cheap: a request costs one counter increment and one
histogram observation (in :func:`observe_request`, called from Tornado's
``log_function``); everything else the process already counts in plain
integers (cache hits, misses and evictions, queue depth, bus counters) is
copied into the metrics once a second by :class:`MetricsPump`, and at scrape.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Dict, Optional

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

__all__ = ["MULTIPROCESS", "observe_request", "MetricsPump", "exposition", "process_exited"]

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
CONTENT_TYPE = CONTENT_TYPE_LATEST

REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "addonreg_requests",
    "HTTP requests answered",
    ["endpoint", "method", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "addonreg_request_duration_seconds",
    "Time to answer a request",
    ["endpoint"],
    registry=REGISTRY,
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
CACHE_HITS = Counter(
    "addonreg_cache_hits", "Lookups answered from the process cache", ["cache"], registry=REGISTRY
)
CACHE_MISSES = Counter(
    "addonreg_cache_misses", "Lookups that went to storage", ["cache"], registry=REGISTRY
)
CACHE_EVICTIONS = Counter(
    "addonreg_cache_evictions", "Entries evicted (LRU)", ["cache"], registry=REGISTRY
)
CACHE_SIZE = Gauge(
    "addonreg_cache_entries",
    "Entries in the process caches",
    ["cache"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "addonreg_write_batch_size",
    "Operations per write transaction",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000),
)
COMMIT_LATENCY = Histogram(
    "addonreg_write_commit_seconds",
    "Time to commit one batch",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
QUEUE_DEPTH = Gauge(
    "addonreg_write_queue_depth",
    "Operations waiting to be written",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
INVALIDATIONS = Counter(
    "addonreg_invalidations_received",
    "Change messages received from other processes",
    registry=REGISTRY,
)
INVALIDATION_LAG = Histogram(
    "addonreg_invalidation_lag_seconds",
    "From a change's commit to its arrival in this process's cache",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)
PUBSUB_RECONNECTS = Counter(
    "addonreg_pubsub_reconnects", "Pub/sub subscriptions re-made", registry=REGISTRY
)
BUS_EVENTS = Counter(
    "addonreg_bus_events",
    "What the bus did: published, received, rejected "
    "(a bad MAC), malformed, publish_errors, reconnects, resets, feed_polls, "
    "feed_errors",
    ["event"],
    registry=REGISTRY,
)
BUS_CONNECTED = Gauge(
    "addonreg_bus_connected",
    "1 while changes are being followed",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
WRITES_FAILED = Counter(
    "addonreg_write_batches_failed",
    "Write batches not committed: not_written (certain) or expired (queued past storage_timeout)",
    ["outcome"],
    registry=REGISTRY,
)
PUBSUB_RESETS = Counter(
    "addonreg_pubsub_resets",
    "Caches cleared because changes may have been missed",
    registry=REGISTRY,
)

STORAGE_EVENTS = Counter(
    "addonreg_storage_events",
    "Multi-node MySQL: failovers (writes moved to another node), read_fallbacks (a read "
    "went to the write node), causal_waits (a read waited for a node to catch up), "
    "outcomes_resolved (a commit confirmed on another node after its node was lost)",
    ["event"],
    registry=REGISTRY,
)
STORAGE_READ_LAG = Gauge(
    "addonreg_storage_read_lag_seconds",
    "How far behind the read nodes are, as the engine reports it (the largest)",
    registry=REGISTRY,
    multiprocess_mode="max",
)

_request_children: Dict[Any, Any] = {}


def observe_request(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request (children cached: ``labels()`` is not free)."""
    key = (endpoint, method, status)
    child = _request_children.get(key)
    if child is None:
        child = _request_children[key] = (
            REQUESTS.labels(endpoint, method, str(status)),
            LATENCY.labels(endpoint),
        )
    child[0].inc()
    child[1].observe(seconds)


class MetricsPump:
    """Copies a process's own counters into the metrics, once a second and at scrape."""

    def __init__(self, registry, batcher=None, bus=None, interval: float = 1.0) -> None:
        self.registry = registry
        self.batcher = batcher
        self.bus = bus
        self.interval = interval
        self._seen: Dict[str, float] = {}
        self._task: Optional[asyncio.Task] = None

    def _delta(self, name: str, total: float) -> float:
        before = self._seen.get(name, 0)
        self._seen[name] = total
        return max(total - before, 0)

    def pump(self) -> None:
        for name, cache in (("files", self.registry.files), ("addons", self.registry.addons)):
            CACHE_HITS.labels(name).inc(self._delta(f"{name}.hits", cache.hits))
            CACHE_MISSES.labels(name).inc(self._delta(f"{name}.misses", cache.misses))
            CACHE_EVICTIONS.labels(name).inc(self._delta(f"{name}.evictions", cache.evictions))
            CACHE_SIZE.labels(name).set(len(cache))
        for lag in self.registry.drain_lag_samples():
            INVALIDATION_LAG.observe(lag)
        if self.batcher is not None:
            QUEUE_DEPTH.set(self.batcher.queued)
            stats = self.batcher.stats
            WRITES_FAILED.labels("not_written").inc(
                self._delta("batcher.failed", stats["failed_batches"])
            )
            WRITES_FAILED.labels("expired").inc(self._delta("batcher.expired", stats["expired"]))
            for size, seconds in self.batcher.drain_samples():
                BATCH_SIZE.observe(size)
                COMMIT_LATENCY.observe(seconds)
        if self.bus is not None:
            # One delta per event, fed to every counter that follows it: a second
            # _delta() of the same key would read 0 and the counter never rise.
            deltas = {
                event: self._delta(f"bus.{event}", total)
                for event, total in self.bus.stats().items()
            }
            INVALIDATIONS.inc(deltas.get("received", 0))
            PUBSUB_RECONNECTS.inc(deltas.get("reconnects", 0))
            PUBSUB_RESETS.inc(deltas.get("resets", 0))
            for event, delta in deltas.items():
                BUS_EVENTS.labels(event).inc(delta)
            BUS_CONNECTED.set(1 if self.bus.connected else 0)
        stats = getattr(self.registry.store, "stats", None)
        if stats is not None:  # multi-node MySQL
            counts = stats()
            for event in ("failovers", "read_fallbacks", "causal_waits", "outcomes_resolved"):
                STORAGE_EVENTS.labels(event).inc(
                    self._delta(f"storage.{event}", counts.get(event, 0))
                )
            STORAGE_READ_LAG.set(counts.get("read_lag", 0.0))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.pump()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self.pump()


def exposition() -> bytes:
    """The text format of every metric (all processes of the host in multi-process mode)."""
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def process_exited(pid: Optional[int] = None) -> None:
    """Drop this process's live gauges from the shared directory (multi-process mode)."""
    if MULTIPROCESS:
        multiprocess.mark_process_dead(pid or os.getpid())

"""FilterWriter: keeps ``DIR/filter/`` (content-addressed files + signed ``latest.json``).

For the publisher: call :meth:`FilterWriter.publish_base` once with the whole
registry, then :meth:`FilterWriter.update` with the changes read from the
change feed since the previous call (as often as a delta is wanted). Each
call builds and verifies the files, writes ``filter/<sha256>.bin`` (beside +
rename; a name is its content so an existing one is never rewritten), then
``filter/latest.json`` the same way, and deletes files that neither the new
nor the previous index names. No other I/O, no clock but the one passed in.

A new base replaces base + delta when the delta has grown past
``max_delta_ratio`` of the base's size or the base is older than
``max_base_age`` seconds: clients then fetch one base instead of an
ever-growing delta.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, Optional, Set, Union

from ..atomicfile import write_atomically
from .build import Built, build_base, build_delta
from .index import index_bytes, load_private_key, make_index, sign_index
from .keys import FileStatus, KeySet

INDEX_NAME = "latest.json"


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(int(ts), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class FilterWriter:
    def __init__(
        self,
        directory: str,
        private_key: Any,
        *,
        max_delta_ratio: float = 0.5,
        max_base_age: float = 7 * 86400,
        membership_bits: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = directory
        self.dir = os.path.join(directory, "filter")
        self.key = load_private_key(private_key)
        self.max_delta_ratio = max_delta_ratio
        self.max_base_age = max_base_age
        self.membership_bits = membership_bits
        self.clock = clock
        self.base: Optional[Built] = None
        self.base_time = 0.0
        self.delta: Optional[Built] = None
        self.delta_time = 0.0
        self._changes: KeySet = KeySet.empty()  # every change since the base, hashed
        self.index: Optional[Dict[str, Any]] = None
        self._previous_paths: Set[str] = set()

    @property
    def keys(self) -> KeySet:
        """The registry as of the last publication."""
        if self.base is None:
            raise RuntimeError("publish_base first")
        return (self.delta or self.base).keys

    @property
    def serial(self) -> int:
        return (self.delta or self.base).serial if self.base else -1

    def publish_base(
        self, records: Union[Iterable[FileStatus], KeySet], serial: int
    ) -> Dict[str, Any]:
        """Build and publish a base of the whole registry at ``serial`` (no delta)."""
        base = build_base(records, serial, membership_bits=self.membership_bits)
        now = self.clock()
        if self.base is not None and self.delta is None and base.data == self.base.data:
            return self.index  # type: ignore[return-value]  # nothing changed: keep every byte
        self.base, self.base_time, self.delta = base, now, None
        self._changes = KeySet.empty()
        return self._publish()

    def base_due(self, delta: Built) -> bool:
        """True when ``delta`` should give way to a new base (size ratio or age)."""
        assert self.base is not None
        return (
            len(delta.data) > self.max_delta_ratio * len(self.base.data)
            or self.clock() - self.base_time >= self.max_base_age
        )

    def update(self, changes: Iterable[FileStatus], serial: int) -> Dict[str, Any]:
        """Publish the registry at ``serial`` after ``changes`` (records since the last call)."""
        if self.base is None:
            raise RuntimeError("publish_base first")
        if serial < self.serial:
            raise ValueError(f"serial {serial} is older than the published {self.serial}")
        new = KeySet.from_changes(changes)
        if serial == self.serial and not len(new):
            return self.index  # type: ignore[return-value]
        cumulative = self._changes.apply(new)
        delta = build_delta(self.base, cumulative, serial)
        if self.base_due(delta):
            return self.publish_base(delta.keys, serial)
        if self.delta is not None and delta.data == self.delta.data:
            return self.index  # type: ignore[return-value]
        self.delta, self.delta_time, self._changes = delta, self.clock(), cumulative
        return self._publish()

    # -- files -------------------------------------------------------------

    def _publish(self) -> Dict[str, Any]:
        assert self.base is not None
        os.makedirs(self.dir, exist_ok=True)
        for built in (self.base, self.delta):
            if built is not None:
                self._write_once(f"{built.sha256}.bin", built.data)
        index = make_index(
            self.base,
            iso_time(self.base_time),
            self.delta,
            iso_time(self.delta_time) if self.delta else None,
        )
        index = sign_index(index, self.key)
        self._write(INDEX_NAME, index_bytes(index))
        paths = {e["path"] for e in (index["base"], index["delta"]) if e}
        self._collect(paths | self._previous_paths)
        self._previous_paths = paths
        self.index = index
        return index

    def _write_once(self, name: str, data: bytes) -> None:
        path = os.path.join(self.dir, name)
        if os.path.exists(path) and os.path.getsize(path) == len(data):
            return
        self._write(name, data)

    def _write(self, name: str, data: bytes) -> None:
        write_atomically(os.path.join(self.dir, name), data)

    def _collect(self, keep: Set[str]) -> None:
        """Delete ``.bin`` files named by neither the current nor the previous index."""
        names = {os.path.basename(p) for p in keep}
        for name in os.listdir(self.dir):
            if name.endswith(".bin") and not name.startswith(".") and name not in names:
                try:
                    os.unlink(os.path.join(self.dir, name))
                except FileNotFoundError:
                    pass

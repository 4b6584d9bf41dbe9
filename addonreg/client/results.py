"""What :mod:`addonreg.client` returns: frozen dataclasses, one per kind of answer.

* :class:`CheckResult` — a file's status (``registered``, ``revoked`` or
  ``unknown``) with the version and, when the answer came with one, the
  serial; ``source`` says where the answer came from (the service, this
  client's HTTP cache, or the offline filter).
* :class:`WriteResult` — a registration's or revocation's outcome.
* :class:`Job` — an asynchronous write (``Prefer: respond-async``).
* :class:`Operation` — one item of a bulk write.
* :class:`ServiceInfo` — ``GET /v1/``: the limits the clients chunk to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

__all__ = [
    "CheckResult",
    "FileKey",
    "Job",
    "Operation",
    "ServiceInfo",
    "Source",
    "Status",
    "WriteResult",
    "normalize_key",
]

Status = Literal["registered", "revoked", "unknown"]
Source = Literal["service", "cache", "filter"]
FileKey = tuple[str, str]
"""``(addon_id, sha256)``; the hash as 64 lowercase hex digits."""


def normalize_key(addon_id: str, sha256: str) -> FileKey:
    """``(addon_id, sha256)`` with the hash lowercased and without a ``sha256:`` prefix.

    Ids are kept as given: the service compares them exactly. Nothing else is
    checked here; the service says what breaks its rules (a ``400``).
    """
    digest = sha256.strip()
    if digest[:7].lower() == "sha256:":
        digest = digest[7:]
    return addon_id, digest.lower()


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """Whether one file is registered."""

    addon_id: str
    sha256: str
    status: Status
    version: str | None = None
    serial: int | None = None
    source: Source = "service"

    @property
    def registered(self) -> bool:
        return self.status == "registered"


@dataclasses.dataclass(frozen=True)
class WriteResult:
    """One write's outcome: ``status`` after it (``unknown``: a revoke of an unknown file).

    ``version``, ``updated_at`` and ``created`` are known for single writes
    (``register``/``revoke``), None in bulk results.
    """

    addon_id: str
    sha256: str
    status: Status
    serial: int | None
    version: str | None = None
    updated_at: str | None = None
    created: bool | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any], created: bool | None = None) -> WriteResult:
        return cls(
            record["addon_id"],
            record["sha256"],
            record["status"],
            record["serial"],
            record.get("version"),
            record.get("updated_at"),
            created,
        )

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> WriteResult:
        return cls(item["addon_id"], item["sha256"], item["status"], item.get("serial"))


@dataclasses.dataclass(frozen=True)
class Job:
    """An asynchronous write: ``queued``, then ``done`` (with ``results``) or ``failed``."""

    id: str
    status: Literal["queued", "done", "failed"]
    results: list[WriteResult] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Job:
        return cls(
            body["job"],
            body["status"],
            [WriteResult.from_item(i) for i in body.get("results") or ()],
        )


@dataclasses.dataclass(frozen=True)
class Operation:
    """One item of a bulk write; :meth:`register` and :meth:`revoke` build them."""

    op: Literal["register", "revoke"]
    addon_id: str
    sha256: str
    version: str | None = None

    @classmethod
    def register(cls, addon_id: str, sha256: str, version: str | None = None) -> Operation:
        return cls("register", addon_id, sha256, version)

    @classmethod
    def revoke(cls, addon_id: str, sha256: str) -> Operation:
        return cls("revoke", addon_id, sha256)

    @classmethod
    def of(cls, value: Operation | Mapping[str, Any]) -> Operation:
        """An :class:`Operation`, or a mapping with its fields (``{"op", "addon_id", …}``)."""
        if isinstance(value, Operation):
            return value
        return cls(value["op"], value["addon_id"], value["sha256"], value.get("version"))

    def to_wire(self) -> dict[str, Any]:
        item: dict[str, Any] = {"op": self.op, "addon_id": self.addon_id, "sha256": self.sha256}
        if self.version is not None:
            item["version"] = self.version
        return item


@dataclasses.dataclass(frozen=True)
class ServiceInfo:
    """``GET /v1/``: the service and the limits this client chunks to."""

    project_version: str
    max_lookup: int
    max_write: int
    settings: Mapping[str, Any]

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> ServiceInfo:
        settings = body.get("settings") or {}
        return cls(
            str(body.get("project_version", "")),
            int(settings.get("max_lookup", 1000)),
            int(settings.get("max_write", 5000)),
            dict(settings),
        )

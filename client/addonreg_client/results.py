"""What :mod:`addonreg_client` returns: frozen dataclasses, one per kind of answer.

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

from .errors import InvalidRequestError
from .ids import InvalidIdentifier, check_addon_id, check_sha256, check_version

__all__ = [
    "CheckResult",
    "FileKey",
    "Job",
    "Operation",
    "ServiceInfo",
    "Source",
    "Status",
    "WriteResult",
    "checked_key",
    "checked_version",
]

Status = Literal["registered", "revoked", "unknown"]
Source = Literal["service", "cache", "filter"]
FileKey = tuple[str, str]
"""``(addon_id, sha256)``; the hash as 64 lowercase hex digits."""


def checked_key(addon_id: Any, sha256: Any) -> FileKey:
    """``(addon_id, sha256)`` by the contract's rules (:mod:`addonreg_client.ids`):
    the id exactly as given, the hash as 64 lowercase hex digits (a ``sha256:``
    prefix accepted). Anything else is refused here, before it reaches a URL:
    :class:`~addonreg_client.errors.InvalidRequestError` (``status`` None)."""
    try:
        return check_addon_id(addon_id), check_sha256(sha256)
    except InvalidIdentifier as exc:
        raise InvalidRequestError(
            f"{exc} (got {str(addon_id if exc.field == 'addon_id' else sha256)[:80]!r})",
            details={"field": exc.field},
        ) from None


def checked_version(version: Any) -> str | None:
    """A version by the contract's rules (1-255 printable characters), or None."""
    try:
        return check_version(version)
    except InvalidIdentifier as exc:
        raise InvalidRequestError(str(exc), details={"field": "version"}) from None


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


@dataclasses.dataclass(frozen=True)
class Job:
    """An asynchronous write: ``queued``, then ``done`` (with ``results``) or ``failed``."""

    id: str
    status: Literal["queued", "done", "failed"]
    results: list[WriteResult] = dataclasses.field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


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
        if not isinstance(value, Operation):
            if not isinstance(value, Mapping) or "op" not in value:
                raise InvalidRequestError(f"not an operation: {value!r:.80}")
            value = cls(
                value["op"],
                value.get("addon_id", ""),
                value.get("sha256", ""),
                value.get("version"),
            )
        return value.checked()

    def checked(self) -> Operation:
        """This operation by the contract's rules (the hash normalised), or
        :class:`~addonreg_client.errors.InvalidRequestError`."""
        if self.op not in ("register", "revoke"):
            raise InvalidRequestError(f"op must be 'register' or 'revoke', got {self.op!r:.40}")
        addon_id, sha256 = checked_key(self.addon_id, self.sha256)
        return dataclasses.replace(
            self, addon_id=addon_id, sha256=sha256, version=checked_version(self.version)
        )

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

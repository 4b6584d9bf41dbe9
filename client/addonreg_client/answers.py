"""What the client believes: every answer proved against the question asked.

A registry's one promise is that "registered" is true, so nothing the server
sends is taken on trust: each function here turns a decoded body into a
result only when the body is the answer the contract gives *to this
question* — the record's ``addon_id`` and ``sha256`` are the ones asked, a
bulk answer has one result per file in the order asked, every ``status`` is
one the contract has, every field has its documented type, and the HTTP
status agrees with the body. Anything else raises
:class:`~addonreg_client.errors.BadAnswerError` naming what was wrong.

Pure functions of their arguments (no I/O), shared by the sync and async
clients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import BadAnswerError
from .ids import InvalidIdentifier, check_version, normalize_sha256
from .results import (
    CheckResult,
    FileKey,
    Job,
    Operation,
    ServiceInfo,
    Source,
    Status,
    WriteResult,
)

__all__ = [
    "FILE_STATUSES",
    "check_result",
    "is_file_not_found",
    "job",
    "lookup_results",
    "service_info",
    "write_record",
    "write_results",
]

FILE_STATUSES = ("registered", "revoked", "unknown")
_MISSING_RESOURCE = 111  # errno of every 404 (docs/errors.md)


def _mapping(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise BadAnswerError(f"{what}: expected an object, got {type(body).__name__}")
    return body


def _serial(value: Any, what: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    # bool is an int to Python, not to the contract.
    if type(value) is not int or value < 1:
        raise BadAnswerError(f"{what}: serial must be a positive integer, got {value!r:.40}")
    return value


def _text(value: Any, what: str, field: str) -> str | None:
    if value is not None and type(value) is not str:
        raise BadAnswerError(f"{what}: {field} must be a string or null, got {value!r:.40}")
    return value


def _version(value: Any, what: str) -> str | None:
    """A version by the contract's rule (1-255 printable characters) or null: what the
    command prints must not carry a newline or a terminal escape."""
    _text(value, what, "version")
    try:
        return check_version(value)
    except InvalidIdentifier:
        raise BadAnswerError(f"{what}: version breaks the rules ({value!r:.40})") from None


def _same_file(item: Mapping[str, Any], key: FileKey, what: str) -> None:
    """The item names the file asked about (the service echoes the id exactly and
    the hash as 64 lowercase hex digits)."""
    addon_id, sha256 = item.get("addon_id"), item.get("sha256")
    if addon_id is None or sha256 is None:
        missing = "addon_id" if addon_id is None else "sha256"
        raise BadAnswerError(f"{what}: the answer has no {missing}")
    if addon_id != key[0] or sha256 != key[1]:
        raise BadAnswerError(
            f"{what}: the service answered for another file "
            f"({str(addon_id)[:80]!r} {str(sha256)[:80]!r}, asked {key[0]!r} {key[1]})"
        )


def _record(body: Any, key: FileKey, status: str, what: str) -> Mapping[str, Any]:
    """A record (``docs/api.md``, "Record") of the file asked, with ``status``."""
    record = _mapping(body, what)
    _same_file(record, key, what)
    if record.get("status") != status:
        raise BadAnswerError(
            f"{what}: the record says {str(record.get('status'))[:40]!r} "
            f"where the HTTP status says {status!r}"
        )
    _serial(record.get("serial"), what)
    _version(record.get("version"), what)
    _text(record.get("updated_at"), what, "updated_at")
    return record


def check_result(http_status: int, body: Any, key: FileKey, source: Source) -> CheckResult:
    """A single read's ``200`` (registered) or ``410`` (revoked), proved."""
    what = f"GET {key[0]} {key[1]}"
    status: Status = "registered" if http_status == 200 else "revoked"
    record = _record(body, key, status, f"{what} ({http_status})")
    return CheckResult(key[0], key[1], status, record.get("version"), record["serial"], source)


def is_file_not_found(body: Any, key: FileKey) -> bool:
    """True when a ``404`` is the service's own "this file is not registered": errno
    111 with ``details`` naming the file asked. A ``404`` of no such route (a wrong
    server URL, a proxy's page) names no file, and is not an answer about it."""
    if not isinstance(body, Mapping) or body.get("errno") != _MISSING_RESOURCE:
        return False
    details = body.get("details")
    return (
        isinstance(details, Mapping)
        and details.get("addon_id") == key[0]
        and details.get("sha256") == key[1]
    )


def lookup_results(body: Any, keys: Sequence[FileKey]) -> list[CheckResult]:
    """``POST /v1/lookup``: one result per file asked, in the order asked."""
    what = "POST /v1/lookup"
    results = _mapping(body, what).get("results")
    if not isinstance(results, list):
        raise BadAnswerError(f"{what}: the answer has no list of results")
    if len(results) != len(keys):
        raise BadAnswerError(
            f"{what}: the service answered {len(results)} results for {len(keys)} files"
        )
    out = []
    for index, (item, key) in enumerate(zip(results, keys, strict=True)):
        where = f"{what} item {index}"
        item = _mapping(item, where)
        _same_file(item, key, where)
        status = item.get("status")
        if status not in FILE_STATUSES:
            raise BadAnswerError(
                f"{where}: status {str(status)[:40]!r} is not one of {FILE_STATUSES}"
            )
        version = _version(item.get("version"), where)
        out.append(CheckResult(key[0], key[1], status, version))
    return out


def _limit(settings: Mapping[str, Any], name: str, default: int) -> int:
    value = settings.get(name, default)
    if type(value) is not int or value < 1:
        raise BadAnswerError(f"GET /v1/: {name} must be a positive integer, got {value!r:.40}")
    return value


def service_info(body: Any) -> ServiceInfo:
    """``GET /v1/``: the limits, each a positive integer."""
    info = _mapping(body, "GET /v1/")
    settings = _mapping(info.get("settings", {}), "GET /v1/ settings")
    return ServiceInfo(
        str(info.get("project_version", "")),
        _limit(settings, "max_lookup", 1000),
        _limit(settings, "max_write", 5000),
        dict(settings),
    )


def write_record(
    body: Any, key: FileKey, status: str, what: str, created: bool | None = None
) -> WriteResult:
    """A ``PUT`` (``registered``) or ``DELETE`` (``revoked``) answer, proved."""
    record = _record(body, key, status, what)
    return WriteResult(
        key[0],
        key[1],
        status,  # type: ignore[arg-type]
        record["serial"],
        record.get("version"),
        record.get("updated_at"),
        created,
    )


# What each operation may end as: a revoke of an unknown file stays unknown.
_AFTER = {"register": ("registered",), "revoke": ("revoked", "unknown")}


def _write_item(item: Any, where: str, op: Operation | None) -> WriteResult:
    item = _mapping(item, where)
    if op is not None:
        _same_file(item, (op.addon_id, op.sha256), where)
    elif type(item.get("addon_id")) is not str or normalize_sha256(item.get("sha256")) is None:
        raise BadAnswerError(f"{where}: an item without a valid addon_id and sha256")
    status = item.get("status")
    allowed = _AFTER[op.op] if op is not None else FILE_STATUSES
    if status not in allowed:
        raise BadAnswerError(f"{where}: status {str(status)[:40]!r} is not one of {allowed}")
    serial = _serial(item.get("serial"), where, optional=True)
    return WriteResult(item["addon_id"], item["sha256"], status, serial)


def write_results(body: Any, ops: Sequence[Operation]) -> list[WriteResult]:
    """``POST /v1/registrations``: one result per operation, in order."""
    what = "POST /v1/registrations"
    results = _mapping(body, what).get("results")
    if not isinstance(results, list) or len(results) != len(ops):
        got = len(results) if isinstance(results, list) else "no"
        raise BadAnswerError(
            f"{what}: the service answered {got} results for {len(ops)} operations"
        )
    return [
        _write_item(item, f"{what} item {i}", op)
        for i, (item, op) in enumerate(zip(results, ops, strict=True))
    ]


def job_id(body: Any) -> str:
    """A ``202``'s job id."""
    ident = _mapping(body, "POST /v1/registrations (202)").get("job")
    if type(ident) is not str or not ident:
        raise BadAnswerError("POST /v1/registrations (202): no job id")
    return ident


def job(body: Any, asked: str) -> Job:
    """``GET /v1/jobs/{id}``: the job asked, a known status, results that parse."""
    what = f"GET /v1/jobs/{asked}"
    data = _mapping(body, what)
    if data.get("job") != asked:
        raise BadAnswerError(f"{what}: the service answered for another job")
    status = data.get("status")
    if status not in ("queued", "done", "failed"):
        raise BadAnswerError(f"{what}: status {str(status)[:40]!r} is not a job's")
    items = data.get("results") or []
    if not isinstance(items, list):
        raise BadAnswerError(f"{what}: results is not a list")
    return Job(
        asked, status, [_write_item(i, f"{what} item {n}", None) for n, i in enumerate(items)]
    )

"""Storage of registrations: the interface every backend implements.

A backend is picked by the scheme of the storage URL (``memory://``,
``sqlite:///path``, ``mysql://…``): the module of that name exports
``load_from_config(settings)``. It is built once per process, never per
request.

Guarantees every backend gives (``storage/testing.py`` checks them all):

* ``apply`` commits a whole batch of operations in one transaction, or none
  of it; each operation that changes a record gets the next serial, and the
  serials of a later commit are all greater than those of every earlier
  commit, whichever process committed (the serial counter is locked inside
  the write transaction, so commit order and serial order agree).
* An operation that changes nothing (registering a registered file with the
  same or no version, revoking a revoked one) takes no serial.
* Driver exceptions never leave a backend: they become :class:`BackendError`,
  which the handlers answer with ``503`` + ``Retry-After``. The base class,
  :class:`RegistrationStore`, does that and applies ``storage_timeout``, in
  one place for every backend; backends implement the operations.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import datetime
import functools
import importlib
import json
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Coroutine
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    Iterable,
    List,
    Mapping,
    NamedTuple,
    Optional,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)
from urllib.parse import unquote, urlsplit

from ..status import REGISTERED, REVOKED, STATUS_CODE, STATUS_NAME  # re-exported for callers

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "REGISTERED",
    "REVOKED",
    "RECORD_REVOKED",
    "STATUS_CODE",
    "STATUS_NAME",
    "Record",
    "Operation",
    "Applied",
    "Job",
    "BackendError",
    "OutcomeUnknown",
    "DatabaseMissing",
    "RegistrationStore",
    "Key",
    "plan",
    "result_item",
    "load_storage",
    "describe_storage",
]

RECORD_REVOKED = "record-revoked"  # an Operation of the import only (see Operation)

T = TypeVar("T")

Key = Tuple[str, str]
"""(addon_id, sha256 as 64 lowercase hex digits)."""

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def now_us() -> int:
    """The current time in whole microseconds since the epoch (UTC)."""
    return time.time_ns() // 1000


@functools.lru_cache(maxsize=4096)
def _format_second(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def format_timestamp(us: int) -> str:
    """``2026-11-27T18:00:00.123456Z`` (on every answer, so the seconds part is cached)."""
    seconds, micro = divmod(us, 1_000_000)
    return f"{_format_second(seconds)}.{micro:06d}Z"


class Record(NamedTuple):
    """One file's registration state. ``updated_at`` is microseconds since the epoch.

    A named tuple: one is built for every answer, and a tuple is several times
    cheaper to make than a frozen dataclass.
    """

    addon_id: str
    sha256: str
    version: Optional[str]
    status: str
    serial: int
    updated_at: int

    @property
    def key(self) -> Key:
        return (self.addon_id, self.sha256)

    def to_dict(self) -> dict:
        """The record as the API shows it."""
        return {
            "addon_id": self.addon_id,
            "sha256": self.sha256,
            "version": self.version,
            "status": self.status,
            "serial": self.serial,
            "updated_at": format_timestamp(self.updated_at),
        }


class Operation(NamedTuple):
    """A write: ``op`` is ``register``, ``revoke`` or ``record-revoked``; identifiers
    already validated.

    ``record-revoked`` (``addonreg import`` of a revoked row; the API has no such
    operation) records the file as revoked whether it was known or not, with
    ``version`` when given: a file migrated from another registry's revocations.

    A named tuple, like :class:`Record`: a bulk request builds thousands.
    """

    op: str
    addon_id: str
    sha256: str
    version: Optional[str] = None

    @property
    def key(self) -> Key:
        return (self.addon_id, self.sha256)


class Applied(NamedTuple):
    """The outcome of one operation.

    ``record`` is the state after the operation (None: a revoke of an unknown
    file); ``created`` is True when the file was not known before; ``changed``
    is True when the operation took a serial.
    """

    record: Optional[Record]
    created: bool = False
    changed: bool = False


def result_item(op: Operation, applied: Applied) -> dict:
    """One operation's outcome as ``POST /v1/registrations`` and jobs show it."""
    record = applied.record
    if record is None:
        return {"addon_id": op.addon_id, "sha256": op.sha256, "status": "unknown", "serial": None}
    return {
        "addon_id": op.addon_id,
        "sha256": op.sha256,
        "status": record.status,
        "serial": record.serial,
    }


JOB_QUEUED, JOB_DONE, JOB_FAILED = "queued", "done", "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """A stored asynchronous write (``Prefer: respond-async``).

    ``results`` (a list of :func:`result_item` dicts) is set once ``status``
    is ``done``; the job's operations and its completion commit in one
    transaction, so a job is applied exactly once even across crashes.
    """

    id: str
    owner: str
    status: str
    operations: Tuple[Operation, ...]
    results: Optional[List[dict]] = None


def encode_operations(ops: Sequence[Operation]) -> str:
    return json.dumps(
        [[op.op, op.addon_id, op.sha256, op.version] for op in ops],
        separators=(",", ":"),
        ensure_ascii=False,
    )


def decode_operations(text: str) -> Tuple[Operation, ...]:
    return tuple(Operation(*item) for item in json.loads(text))


def encode_results(ops: Sequence[Operation], results: Sequence[Applied]) -> str:
    return json.dumps(
        [result_item(op, a) for op, a in zip(ops, results)],
        separators=(",", ":"),
        ensure_ascii=False,
    )


class BackendError(Exception):
    """Storage could not answer. ``original`` is the driver's exception (logged, never shown).

    Raised by a write, it means nothing of the write was committed.
    """

    def __init__(
        self, message: str = "storage unavailable", original: Optional[BaseException] = None
    ) -> None:
        super().__init__(message if original is None else f"{message}: {original!r}")
        self.original = original


class DatabaseMissing(BackendError):
    """The database the storage URL names does not exist (``addonreg initdb`` creates it)."""


class OutcomeUnknown(BackendError):
    """A write's commit was sent but not confirmed in time: it may or may not be committed."""


def plan(
    ops: Sequence[Operation], current: Mapping[Key, Record], last_serial: int, now: int
) -> Tuple[List[Applied], Dict[Key, Record], int]:
    """Work out a batch: outcomes in order, final rows to write, the new last serial.

    ``current`` holds the stored records of the batch's keys. Shared by every
    backend so they all agree on what a batch means.
    """
    state: Dict[Key, Optional[Record]] = dict(current)
    rows: Dict[Key, Record] = {}
    results: List[Applied] = []
    serial = last_serial
    for op in ops:
        key = (op.addon_id, op.sha256)
        cur = state.get(key)
        if op.op in ("register", RECORD_REVOKED):
            # Both set a file's whole state (the import's revoked record may be new).
            status = REGISTERED if op.op == "register" else REVOKED
            if (
                cur is not None
                and cur.status == status
                and (op.version is None or op.version == cur.version)
            ):
                results.append(Applied(cur))
                continue
            serial += 1
            version = op.version if op.version is not None or cur is None else cur.version
            new = Record(op.addon_id, op.sha256, version, status, serial, now)
            results.append(Applied(new, created=cur is None, changed=True))
        elif op.op == "revoke":
            if cur is None or cur.status == REVOKED:
                results.append(Applied(cur))
                continue
            serial += 1
            new = Record(op.addon_id, op.sha256, cur.version, REVOKED, serial, now)
            results.append(Applied(new, changed=True))
        else:
            raise ValueError(f"unknown operation {op.op!r}")
        state[key] = rows[key] = new
    return results, rows, serial


class RegistrationStore(abc.ABC):
    """Where registrations live. Every operation may raise :class:`BackendError`.

    The public operations are defined here, once; a backend implements the
    protected method of the same name (``get`` runs ``_get``, ``apply`` runs
    ``_apply``) and never times or wraps its own work. What this class
    guarantees of every operation, whatever the backend:

    * It runs within :attr:`operation_timeout`: ``storage_timeout``, but for
      writes (:meth:`apply`, which bound themselves) and for MySQL (which
      bounds each call to a node instead).
    * An exception of the backend's :attr:`driver_errors`, or running out of
      time, comes out as :class:`BackendError` with the backend's
      :attr:`unavailable` message, the driver's exception as its ``original``
      and cause. Any other exception (a BackendError the backend raised
      itself, a cancellation) comes out as it is.

    Both happen in one place, :meth:`_call`, which a backend also uses for
    its own calls to storage outside an operation (opening a file, one
    query on one MySQL node). A public operation is a plain method returning
    :meth:`_call`'s coroutine, not a coroutine of its own: awaiting ``get_many``
    (the read miss path) runs one frame of this class around the backend's.

    ``open``, ``close`` and ``observe`` are the backend's own: connecting and
    forgetting, not operations on the registrations.
    """

    timeout: Optional[float] = None
    """``storage_timeout`` in seconds (None: no limit)."""

    driver_errors: ClassVar[Tuple[Type[BaseException], ...]] = ()
    """The exceptions of the backend's driver, which :meth:`_call` turns into BackendError."""

    unavailable: ClassVar[str] = "storage unavailable"
    """The message of the BackendError :meth:`_call` raises (the driver's error follows it)."""

    @property
    def operation_timeout(self) -> Optional[float]:
        """How long one operation may take: :attr:`timeout`. A backend whose one
        operation may be several calls, each within the timeout, says None."""
        return self.timeout

    async def _call(
        self, operation: Awaitable[T], timeout: Optional[float], message: Optional[str] = None
    ) -> T:
        """Await ``operation`` within ``timeout`` seconds (None: no limit); a driver
        error (:attr:`driver_errors`) or running out of time becomes
        ``BackendError(message or self.unavailable, original)``, raised from it."""
        try:
            if timeout is None:  # no limit (memory; MySQL operations; writes): 1.5 µs saved
                return await operation
            async with asyncio.timeout(timeout):
                return await operation
        except self.driver_errors + (TimeoutError,) as exc:  # evaluated on an exception only
            raise BackendError(message or self.unavailable, exc) from exc

    async def open(self) -> None:
        """Connect (pools, files). Called once, before anything else."""

    async def close(self) -> None:
        """Release connections. Further calls are not allowed."""

    def create_database(self) -> Coroutine[Any, Any, bool]:
        """Create the database itself when the backend has one and it is missing
        (``addonreg initdb``; ``serve`` never does). True when it was created."""
        return self._call(self._create_database(), self.operation_timeout)

    async def _create_database(self) -> bool:
        return False

    def create_schema(self) -> Coroutine[Any, Any, None]:
        """Create missing tables; idempotent."""
        return self._call(self._create_schema(), self.operation_timeout)

    @abc.abstractmethod
    async def _create_schema(self) -> None: ...

    def get(self, addon_id: str, sha256: str) -> Coroutine[Any, Any, Optional[Record]]:
        """The record of one file, or None when unknown."""
        return self._call(self._get(addon_id, sha256), self.operation_timeout)

    @abc.abstractmethod
    async def _get(self, addon_id: str, sha256: str) -> Optional[Record]: ...

    def get_many(self, keys: Iterable[Key]) -> Coroutine[Any, Any, Dict[Key, Record]]:
        """The records of many files in one round trip; unknown ones are absent."""
        return self._call(self._get_many(keys), self.operation_timeout)

    @abc.abstractmethod
    async def _get_many(self, keys: Iterable[Key]) -> Dict[Key, Record]: ...

    def list_files(self, addon_id: str) -> Coroutine[Any, Any, List[Record]]:
        """Every record of an add-on (revoked included), sorted by sha256."""
        return self._call(self._list_files(addon_id), self.operation_timeout)

    @abc.abstractmethod
    async def _list_files(self, addon_id: str) -> List[Record]: ...

    def changes(self, since: int, limit: int) -> Coroutine[Any, Any, List[Record]]:
        """Records whose serial is greater than ``since``, ascending, at most ``limit``."""
        return self._call(self._changes(since, limit), self.operation_timeout)

    @abc.abstractmethod
    async def _changes(self, since: int, limit: int) -> List[Record]: ...

    async def snapshot(self, page: int = 10_000) -> AsyncIterator[List[Record]]:
        """Every record, in pages of at most ``page``, in no set order. Rows that
        change during the read may come twice or not at all: a consistent view
        is this plus the :meth:`changes` after a :meth:`last_serial` read first,
        later records winning (``feeds.StorageSource.snapshot``). Each page is
        one operation (:meth:`_call`)."""
        pages = self._snapshot(page)
        try:
            while True:
                try:
                    records = await self._call(anext(pages), self.operation_timeout)
                except StopAsyncIteration:
                    return
                yield records
        finally:
            await pages.aclose()

    async def _snapshot(self, page: int) -> AsyncGenerator[List[Record], None]:
        """The pages of :meth:`snapshot`. Here, the change feed from 0; a backend
        may read in a cheaper order."""
        since = 0
        while records := await self._changes(since, page):
            yield records
            since = records[-1].serial

    def apply(
        self, ops: Sequence[Operation], job_id: Optional[str] = None
    ) -> Coroutine[Any, Any, Optional[List[Applied]]]:
        """Commit a batch of operations in one transaction (see :func:`plan`).

        With ``job_id``, the batch is that job's operations: in the same
        transaction the job is marked done with its results, unless it is no
        longer queued (another process finished it), in which case nothing is
        written and None is returned.

        Not within :attr:`operation_timeout`: a commit cut short at a deadline
        may or may not have happened, so each backend bounds its own write
        (``2 × storage_timeout``) and says which it was (:class:`OutcomeUnknown`
        when it cannot tell). Driver errors still become BackendError here.
        """
        return self._call(self._apply(ops, job_id), None)

    @abc.abstractmethod
    async def _apply(
        self, ops: Sequence[Operation], job_id: Optional[str]
    ) -> Optional[List[Applied]]: ...

    def create_job(
        self, job_id: str, owner: str, ops: Sequence[Operation]
    ) -> Coroutine[Any, Any, None]:
        """Store a queued job durably (committed when this returns)."""
        return self._call(self._create_job(job_id, owner, ops), self.operation_timeout)

    @abc.abstractmethod
    async def _create_job(self, job_id: str, owner: str, ops: Sequence[Operation]) -> None: ...

    def get_job(self, job_id: str) -> Coroutine[Any, Any, Optional[Job]]:
        """The job, or None when unknown."""
        return self._call(self._get_job(job_id), self.operation_timeout)

    @abc.abstractmethod
    async def _get_job(self, job_id: str) -> Optional[Job]: ...

    def pending_jobs(self) -> Coroutine[Any, Any, List[Job]]:
        """Every job still queued, oldest first (to finish after a restart)."""
        return self._call(self._pending_jobs(), self.operation_timeout)

    @abc.abstractmethod
    async def _pending_jobs(self) -> List[Job]: ...

    def last_serial(self) -> Coroutine[Any, Any, int]:
        """The greatest serial committed so far (0 when none)."""
        return self._call(self._last_serial(), self.operation_timeout)

    @abc.abstractmethod
    async def _last_serial(self) -> int: ...

    def heartbeat(self) -> Coroutine[Any, Any, None]:
        """Return when storage answers; raise :class:`BackendError` otherwise."""
        return self._call(self._heartbeat(), self.operation_timeout)

    @abc.abstractmethod
    async def _heartbeat(self) -> None: ...

    def observe(self, serial: int) -> None:
        """This process has seen changes up to ``serial`` (its own commit, a message
        on the bus): no read may answer an older state. One node: nothing to do."""

    def topology(self) -> Coroutine[Any, Any, List[Dict[str, Any]]]:
        """Each configured node, its role and state (``/__heartbeat__``); [] for one."""
        return self._call(self._topology(), self.operation_timeout)

    async def _topology(self) -> List[Dict[str, Any]]:
        return []


def describe_storage(url: str) -> str:
    """The storage a URL names, for people, without its password:
    ``SQLite file /abs/path``, ``MySQL root@host:3306/db``, ``memory``."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return f"SQLite file {os.path.abspath(url[len('sqlite:///') :])}"
    if parts.scheme == "mysql":
        userinfo, _, hosts = parts.netloc.rpartition("@")
        user = unquote(userinfo.partition(":")[0])
        return f"MySQL {user + '@' if user else ''}{hosts}{parts.path}"
    return parts.scheme


def load_storage(settings: Settings) -> RegistrationStore:
    """Build the backend the storage URL names (not yet opened)."""
    scheme = settings.storage.split(":", 1)[0]
    module = importlib.import_module(f"{__name__}.{scheme}")
    store = module.load_from_config(settings)
    if not isinstance(store, RegistrationStore):
        raise TypeError(f"{module.__name__}.load_from_config did not return a RegistrationStore")
    return store

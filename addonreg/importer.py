"""``addonreg import`` and ``addonreg initdb``: bulk loading into storage.

The file is read and checked whole before anything is written, so a
malformed row stops the import with nothing written and a message naming
its line. A CSV file starts with a header naming its columns: ``addon_id``
and ``sha256``, and optionally ``version`` and ``status``, in any order
(``addon_id,sha256,version`` is the usual one); every row has exactly the
header's columns. A JSON-lines file holds one ``{"addon_id", "sha256",
"version"?, "status"?}`` per line. ``status`` is ``registered`` (the default)
or ``revoked``: a revoked row records the file as revoked, known to the
registry before or not. A column or field of another name is refused (a
typo such as ``versoin`` would otherwise drop the versions silently), and so
are two rows for one file that disagree (status or version), naming both
lines; the same row twice is fine. The input is UTF-8 (a byte order mark at
its start is fine); bytes that are not, a field over 128 KiB and JSON nested
past Python's limit are refused naming their line. An input with no rows is
an error.

Rows are committed in batches through the same path as API writes
(:class:`~addonreg.batcher.WriteBatcher`), each changed row taking its own
serial; running servers see them through the change feed (or Redis).
Importing the same file again changes nothing (a registered file with the
same version takes no serial, nor a revoked one). The summary names the
storage written to.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from typing import IO, Any, Dict, Iterable, Iterator, List, Optional, Tuple

from .batcher import WriteBatcher
from .bus import BusError, Nobody, load_bus
from .config import Settings
from .ids import InvalidIdentifier, check_addon_id, check_sha256, check_version
from .status import REGISTERED, REVOKED
from .storage import (
    RECORD_REVOKED,
    BackendError,
    Key,
    Operation,
    describe_storage,
    load_storage,
)

__all__ = ["ImportFailed", "read_operations", "import_file", "initdb"]

FIELDS = ("addon_id", "sha256", "version", "status")
REQUIRED = ("addon_id", "sha256")
_OPS = {REGISTERED: "register", REVOKED: RECORD_REVOKED}


class ImportFailed(ValueError):
    """A malformed input; the message names its line."""


def _utf8_lines(stream: Iterable[str]) -> Iterator[str]:
    """The lines of a text stream, refusing any that is not UTF-8, naming it.

    The stream is decoded with ``errors="surrogateescape"`` (see
    :func:`open_input`), so a byte that is not UTF-8 arrives as a lone
    surrogate, which no valid UTF-8 decodes to. (Decoding strictly would say
    only at which byte offset of a buffer the decoder stopped.)
    """
    for number, line in enumerate(stream, 1):
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ImportFailed(
                    f"line {number}: not UTF-8 (at column {exc.start + 1})"
                ) from None
        yield line


def open_input(binary: IO[bytes]) -> IO[str]:
    """``binary`` as the text :func:`read_operations` reads (a UTF-8 BOM dropped)."""
    return io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _row(line: int, addon_id: Any, sha256: Any, version: Any, status: Any) -> Operation:
    if status is None or status == "":
        op = "register"
    elif isinstance(status, str) and status in _OPS:
        op = _OPS[status]
    else:
        raise ImportFailed(
            f"line {line}: status must be registered or revoked, got {repr(status)[:40]}"
        )
    try:
        return Operation(
            op,
            check_addon_id(addon_id),
            check_sha256(sha256),
            check_version(version if version != "" else None),
        )
    except InvalidIdentifier as exc:
        raise ImportFailed(f"line {line}: {exc}") from None


def _unknown(names: Iterable[str]) -> List[str]:
    """The names that are not fields, each as a short repr for a message."""
    return [repr(n) if len(n) <= 40 else repr(n[:37]) + "..." for n in names if n not in FIELDS]


def _json_lines(lines: Iterator[str], first: int) -> Iterator[Tuple[int, Operation]]:
    for number, text in enumerate(lines, first):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except RecursionError:
            raise ImportFailed(f"line {number}: JSON nested too deeply") from None
        except ValueError:
            raise ImportFailed(f"line {number}: not valid JSON") from None
        if not isinstance(row, dict) or "addon_id" not in row or "sha256" not in row:
            raise ImportFailed(f"line {number}: expected an object with addon_id and sha256")
        unknown = _unknown(row)
        if unknown:
            raise ImportFailed(
                f"line {number}: unknown field {unknown[0]} (known: {', '.join(FIELDS)})"
            )
        yield (
            number,
            _row(number, row["addon_id"], row["sha256"], row.get("version"), row.get("status")),
        )


def _csv_rows(
    lines: Iterator[str], header_line: int, header: List[str]
) -> Iterator[Tuple[int, Operation]]:
    reader = csv.reader(lines)
    columns = len(header)
    at = {name: header.index(name) for name in header}
    i_id, i_sha = at["addon_id"], at["sha256"]
    i_version, i_status = at.get("version"), at.get("status")
    try:
        for row in reader:
            number = header_line + reader.line_num
            if not row:
                continue
            if len(row) != columns:
                raise ImportFailed(
                    f"line {number}: expected {columns} columns as the header says, got {len(row)}"
                )
            yield (
                number,
                _row(
                    number,
                    row[i_id],
                    row[i_sha],
                    None if i_version is None else row[i_version],
                    None if i_status is None else row[i_status],
                ),
            )
    except csv.Error as exc:  # a field over csv.field_size_limit(), 128 KiB
        raise ImportFailed(f"line {header_line + reader.line_num}: {exc}") from None


def _header(text: str, number: int) -> List[str]:
    try:
        header = [c.strip().lower() for c in next(csv.reader([text]))]
    except csv.Error as exc:
        raise ImportFailed(f"line {number}: {exc}") from None
    unknown = _unknown(header)
    if unknown or not all(c in header for c in REQUIRED) or len(set(header)) != len(header):
        raise ImportFailed(
            f"line {number}: "
            + (f"unknown column {unknown[0]}; " if unknown else "")
            + "a CSV file starts with a header naming its columns: addon_id and sha256, "
            "and optionally version and status, each once (addon_id,sha256,version is the "
            "usual one); a JSON-lines file with '{'"
        )
    return header


def _describe(op: Operation) -> str:
    state = REVOKED if op.op == RECORD_REVOKED else REGISTERED
    return f"{state}, version {op.version!r}" if op.version is not None else f"{state}, no version"


def _no_conflicts(rows: List[Tuple[int, Operation]]) -> None:
    """Refuse two rows for one file that disagree, naming both lines."""
    seen: Dict[Key, int] = {}  # key -> index in rows of its first row
    for i, (number, op) in enumerate(rows):
        first = seen.setdefault(op[1:3], i)  # (addon_id, sha256): op.key without a call
        if first != i and rows[first][1] != op:
            line, earlier = rows[first]
            raise ImportFailed(
                f"lines {line} and {number}: two rows for the file {op.sha256} of "
                f"{op.addon_id} disagree ({_describe(earlier)}; {_describe(op)}): "
                "give each file once"
            )


def read_operations(stream: Iterable[str]) -> List[Operation]:
    """Every row of a CSV or JSON-lines stream as an operation (at least one)."""
    lines = _utf8_lines(stream)
    number = 0
    for first in lines:
        number += 1
        if first.strip():
            break
    else:
        raise ImportFailed("no rows: the input is empty")
    first = first.lstrip("\ufeff")  # a BOM when the stream did not drop it
    text = first.strip()
    if text.startswith("{"):
        rows = list(_json_lines(_chain(first, lines), number))
    else:
        rows = list(_csv_rows(lines, number, _header(text, number)))
    if not rows:
        raise ImportFailed(f"no rows after line {number}")
    _no_conflicts(rows)
    return [op for _, op in rows]


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest


async def initdb(settings: Settings) -> int:
    """``addonreg initdb``: the database (MySQL: created when missing and allowed), the schema."""
    store = load_storage(settings)
    try:
        created = await store.create_database()
        await store.open()
        await store.create_schema()
    except BackendError as exc:
        print(f"addonreg initdb: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    print(
        ("database created, " if created else "")
        + f"schema ready in {describe_storage(settings.storage)}"
    )
    return 0


async def import_file(
    settings: Settings,
    path: str,
    batch_size: int = 2000,
    progress: bool = True,
    out: Optional[IO[str]] = None,
) -> int:
    """Load ``path`` (``-``: standard input); the exit code."""
    out = out or sys.stdout
    started = time.monotonic()
    try:
        if path == "-":
            operations = read_operations(open_input(sys.stdin.buffer))
        else:
            with open(path, "rb") as fh:
                operations = read_operations(open_input(fh))
    except ImportFailed as exc:
        print(f"addonreg import: {path}: {exc}; nothing was imported", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"addonreg import: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    store = load_storage(settings)
    bus = load_bus(settings, store, subscribe=False)
    changed = done = 0
    batch_size = max(batch_size, 1)
    try:
        await store.open()
        await store.create_schema()
        await bus.start(Nobody())
        batcher = WriteBatcher(
            store,
            bus.publish,
            batch_size=batch_size,
            max_queue=batch_size,
            window=0,
            queue_timeout=None,
        )
        batcher.start()
        from tqdm import tqdm

        with tqdm(
            total=len(operations), unit="rows", disable=not progress, file=sys.stderr, desc="import"
        ) as bar:
            for i in range(0, len(operations), batch_size):
                batch = operations[i : i + batch_size]
                changed += sum(a.changed for a in await batcher.submit(batch))
                done += len(batch)
                bar.update(len(batch))
        await batcher.drain()
    except (BackendError, BusError) as exc:
        print(
            f"addonreg import: storage failed after {done} rows (importing again is "
            f"harmless): {exc}",
            file=sys.stderr,
        )
        return 1
    finally:
        await bus.close()
        await store.close()
    elapsed = time.monotonic() - started
    print(
        f"imported {done} rows ({changed} changed, {done - changed} already there) into "
        f"{describe_storage(settings.storage)} in {elapsed:.2f} s: "
        f"{done / elapsed if elapsed > 0 else 0:,.0f} rows/s",
        file=out,
    )
    return 0

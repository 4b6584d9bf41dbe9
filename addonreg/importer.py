"""``addonreg import`` and ``addonreg initdb``: bulk loading into storage.

The file is read and checked whole before anything is written, so a
malformed row stops the import with nothing written and a message naming
its line. A CSV file starts with the header ``addon_id,sha256,version`` (or
``addon_id,sha256``, for files without versions) and every row has exactly
the header's columns; a JSON-lines file holds one ``{"addon_id", "sha256",
"version"?}`` per line. An input with no rows is an error.

Rows are committed in batches through the same path as API writes
(:class:`~addonreg.batcher.WriteBatcher`), each changed row taking its own
serial; running servers see them through the change feed (or Redis).
Importing the same file again changes nothing (a registered file with the
same version takes no serial). The summary names the storage written to.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from typing import IO, Any, Iterator, List, Optional

from .batcher import WriteBatcher
from .bus import BusError, Nobody, load_bus
from .config import Settings
from .ids import InvalidIdentifier, check_addon_id, check_sha256, check_version
from .storage import BackendError, Operation, describe_storage, load_storage

__all__ = ["ImportError_", "read_operations", "import_file", "initdb"]

HEADERS = (["addon_id", "sha256", "version"], ["addon_id", "sha256"])


class ImportError_(ValueError):
    """A malformed input; the message names its line."""


def _operation(line: int, addon_id: Any, sha256: Any, version: Any) -> Operation:
    try:
        return Operation(
            "register",
            check_addon_id(addon_id),
            check_sha256(sha256),
            check_version(version if version != "" else None),
        )
    except InvalidIdentifier as exc:
        raise ImportError_(f"line {line}: {exc}") from None


def _json_lines(lines: Iterator[str], first: int) -> Iterator[Operation]:
    for number, text in enumerate(lines, first):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except ValueError:
            raise ImportError_(f"line {number}: not valid JSON") from None
        if not isinstance(row, dict) or "addon_id" not in row or "sha256" not in row:
            raise ImportError_(f"line {number}: expected an object with addon_id and sha256")
        yield _operation(number, row["addon_id"], row["sha256"], row.get("version"))


def _csv_rows(lines: Iterator[str], header_line: int, columns: int) -> Iterator[Operation]:
    reader = csv.reader(lines)
    for row in reader:
        number = header_line + reader.line_num
        if not row:
            continue
        if len(row) != columns:
            raise ImportError_(
                f"line {number}: expected {columns} columns as the header says, got {len(row)}"
            )
        yield _operation(number, row[0], row[1], row[2] if columns == 3 else None)


def read_operations(stream: IO[str]) -> List[Operation]:
    """Every row of a CSV or JSON-lines stream as a register operation (at least one)."""
    number = 0
    for number, first in enumerate(stream, 1):
        if first.strip():
            break
    else:
        raise ImportError_("no rows: the input is empty")
    text = first.lstrip("\ufeff").strip()
    if text.startswith("{"):
        operations = list(_json_lines(_chain(first, stream), number))
    else:
        header = [c.strip().lower() for c in next(csv.reader([text]))]
        if header not in HEADERS:
            raise ImportError_(
                f"line {number}: a CSV file starts with the header "
                "addon_id,sha256,version (or addon_id,sha256), a JSON-lines "
                "file with '{'"
            )
        operations = list(_csv_rows(stream, number, len(header)))
    if not operations:
        raise ImportError_(f"no rows after line {number}")
    return operations


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
            operations = read_operations(
                io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
            )
        else:
            with open(path, encoding="utf-8", newline="") as fh:
                operations = read_operations(fh)
    except ImportError_ as exc:
        print(f"addonreg import: {path}: {exc}; nothing was imported", file=sys.stderr)
        return 1
    except (OSError, UnicodeDecodeError) as exc:
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

"""SQL text for MySQL: packed reads (:func:`packed`), and batches written as
literals, the one exception to parameterised SQL.

Batches are written as SQL literals built here rather than through the
driver's per-parameter escaping, which was the largest cost of a bulk write
(bench: 32k -> 62k registrations/s with this and the optimistic path).
Nothing is escaped: text made only of plainly safe characters is quoted as
it is, anything else goes in as the hex of its UTF-8 under a charset
introducer, which no quote, backslash, NUL or sql_mode can change the
meaning of. Hashes go in as ``X'…'`` after a check that they are lowercase
hex. ``tests/storage/test_mysql_literals.py`` sends arbitrary text through
:func:`sql_text` into MariaDB and back.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from ...status import STATUS_NAME
from .. import BackendError, Key, Record

__all__ = [
    "sql_text",
    "key_list",
    "row_values",
    "batch_time",
    "from_us",
    "to_us",
    "Row",
    "packed",
    "unpack",
    "NODE_SERIAL",
    "CAUSAL",
    "CHUNK",
]

_EPOCH = datetime.datetime(1970, 1, 1)
_PLAIN = re.compile(r"[0-9A-Za-z._@{}+ -]*").fullmatch
_HEX = frozenset("0123456789abcdef")


def from_us(us: int) -> datetime.datetime:
    """Microseconds since the epoch as a naive UTC datetime (the column's type)."""
    return _EPOCH + datetime.timedelta(microseconds=us)


def to_us(dt: datetime.datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def sql_text(value: Optional[str]) -> str:
    """``value`` as a MariaDB string literal (``NULL`` for None)."""
    if value is None:
        return "NULL"
    if _PLAIN(value) is not None:
        return f"'{value}'"
    return f"_utf8mb4 X'{value.encode('utf-8').hex()}'"


def _hashes(keys: Iterable[str]) -> None:
    """Refuse anything but 64 lowercase hex digits (they are spliced into SQL as X'…')."""
    joined = "".join(keys)
    if len(joined) % 64 or not _HEX.issuperset(joined):
        raise ValueError("sha256 must be 64 lowercase hex digits")


def key_list(keys: Sequence[Key]) -> str:
    """``(addon_id, sha256) IN (…)`` items for ``keys``."""
    _hashes(sha for _, sha in keys)
    return ",".join([f"({sql_text(a)},X'{h}')" for a, h in keys])


Row = tuple[str, str, Optional[str], int, Any]
"""A row to insert: addon_id, sha256 (hex), version, status code, serial (an int
or an SQL expression)."""


def row_values(rows: Sequence[Row], when: str) -> str:
    """``VALUES`` rows for ``registrations``; ``when`` is the batch's time (an SQL expression)."""
    _hashes(row[1] for row in rows)
    return ",".join(
        [
            f"({sql_text(addon_id)},X'{sha}',{sql_text(version)},{status},{serial},{when})"
            for addon_id, sha, version, status, serial in rows
        ]
    )


_INLINE_TIME_ROWS = 200  # up to this many rows the time is in each row; above, set once


def batch_time(now: int, rows: int) -> tuple[Optional[str], str]:
    """For a batch of ``rows`` rows at ``now``: the statement to run first (or None),
    and the SQL expression of the batch's time."""
    literal = "'" + from_us(now).isoformat(" ", "microseconds") + "'"
    if rows <= _INLINE_TIME_ROWS:
        return None, literal
    return f"SET @addonreg_now = {literal}", "@addonreg_now"


def packed(order: str = "") -> str:
    """The select list that returns many records as ONE row: their count and
    the records joined in one string (``order``: an ORDER BY for the join).

    PyMySQL parses every row packet in Python, which was most of a 5,000-key
    read (a re-import's) and of a full scan; splitting one string costs a small
    fraction of that per record (bench/results/writes.md). Text columns travel as hex, so no value
    can hold a separator; the separators are literal characters, not escapes,
    so no sql_mode changes them. ``version`` is last: CONCAT_WS skips a NULL,
    so a NULL version is a missing sixth field.
    """
    return (
        "COUNT(*), GROUP_CONCAT(CONCAT(CONCAT_WS('\t', HEX(addon_id), LOWER(HEX(sha256)), "
        "status, serial, TIMESTAMPDIFF(MICROSECOND, '1970-01-01', updated_at), HEX(version)),"
        f" '\n'){order} SEPARATOR '')"
    )


NODE_SERIAL = "(SELECT value FROM counters WHERE name = 'serial')"
"""A select-list item: the last serial the answering node has applied, read in the
same statement as the records, so from the same snapshot (see ``nodes.py``)."""

CAUSAL = "SET STATEMENT wsrep_sync_wait = 1 FOR "
"""A prefix for a causal read on Galera: the node first applies every transaction
the cluster has certified."""

CHUNK = 5000  # rows per statement: one statement for a full batch

GROUP_CONCAT_MAX_LEN = 1 << 26  # 64 MiB per session: pages of records stay far below it


def unpack(row: Sequence[Any]) -> list[Record]:
    """The records of a :func:`packed` row (columns after those two are ignored).
    Every record ends in a newline, so a join the server cut short (past ``group_concat_max_len`` or
    ``max_allowed_packet``) has fewer newlines than records: an error, never a
    record read wrong."""
    count, text = row[0], row[1]
    if not count:
        return []
    if text is None or text.count("\n") != count:
        raise BackendError(
            f"MySQL cut a page of {count} records short: raise "
            "max_allowed_packet (or group_concat_max_len) on the server"
        )
    records, fromhex = [], bytes.fromhex
    for line in text[:-1].split("\n"):
        f = line.split("\t")
        records.append(
            Record(
                fromhex(f[0]).decode("ascii"),
                f[1],
                fromhex(f[5]).decode() if len(f) > 5 else None,
                STATUS_NAME[int(f[2])],
                int(f[3]),
                int(f[4]),
            )
        )
    return records

"""SQL text for MySQL batches: the one exception to parameterised SQL.

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

from . import Key

__all__ = ["sql_text", "key_list", "row_values", "batch_time", "from_us", "to_us", "Row"]

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
    return ",".join([f"({sql_text(addon_id)},X'{sha}',{sql_text(version)},"
                     f"{status},{serial},{when})"
                     for addon_id, sha, version, status, serial in rows])


_INLINE_TIME_ROWS = 200  # up to this many rows the time is in each row; above, set once


def batch_time(now: int, rows: int) -> tuple[Optional[str], str]:
    """For a batch of ``rows`` rows at ``now``: the statement to run first (or None),
    and the SQL expression of the batch's time."""
    literal = "'" + from_us(now).isoformat(" ", "microseconds") + "'"
    if rows <= _INLINE_TIME_ROWS:
        return None, literal
    return f"SET @addonreg_now = {literal}", "@addonreg_now"

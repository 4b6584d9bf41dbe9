"""sql_text, the one exception to parameterised SQL (storage/mysql.py): whatever
text goes through it comes back from MariaDB unchanged, and none escapes its
literal.

Every string hypothesis makes (quotes, backslashes, NUL, \\x1a, newlines, any
Unicode a UTF-8 column holds), read back as a value and stored in and read
from a utf8mb4_bin column like the versions are, under a permissive and a
NO_BACKSLASH_ESCAPES sql_mode.
"""

from __future__ import annotations

import pymysql
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addonreg.storage.mysql.sql import sql_text
from tests.conftest import mysql_connect, need_mysql

pytestmark = pytest.mark.mysql

HOSTILE = [
    "",
    "'",
    "\\",
    "\\'",
    "''",
    "\0",
    "\x1a",
    "\n\r\t",
    "%s",
    "%%",
    "é ✓ 𝄞",
    "1.0'; DROP TABLE registrations; --",
    "o'brien\\%s@x",
    "_utf8mb4 X'00'",
    "\\x27",
]


@pytest.fixture(scope="module", params=["", "NO_BACKSLASH_ESCAPES"])
def db(request):
    need_mysql()
    conn = mysql_connect()
    with conn.cursor() as cur:
        cur.execute("SET SESSION sql_mode = %s", (request.param,))
        cur.execute(
            "CREATE TEMPORARY TABLE literals (v VARCHAR(4000) CHARACTER SET utf8mb4 "
            "COLLATE utf8mb4_bin NULL)"
        )
    yield conn
    conn.close()


def round_trip(conn: pymysql.connections.Connection, text: object) -> None:
    with conn.cursor() as cur:
        cur.execute(f"SELECT {sql_text(text)}")  # type: ignore[arg-type]
        [(value,)] = cur.fetchall()
        assert value == text
        cur.execute("DELETE FROM literals")
        cur.execute(f"INSERT INTO literals (v) VALUES ({sql_text(text)})")  # type: ignore[arg-type]
        cur.execute("SELECT v, COUNT(*) FROM literals GROUP BY v")
        assert cur.fetchall() == ((text, 1),)


@pytest.mark.parametrize("text", HOSTILE + [None])
def test_hostile_text_round_trips(db, text):
    round_trip(db, text)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=300))
def test_any_text_round_trips(db, text):
    round_trip(db, text)

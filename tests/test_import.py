"""`addonreg import` as a real process: the status of a row honoured, unknown
fields and disagreeing duplicates refused, and every failure naming its line
(oversized fields, nesting, invalid UTF-8), with nothing written."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from typing import Dict, Optional, Tuple

import pytest

from addonreg.storage.testing import sha
from tests.conftest import MYSQL_URL, ROOT, mysql_connect, need_mysql, reset_mysql

pytestmark = pytest.mark.subprocess

GUID = "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"


def run_import(
    path: str, storage: str, input: Optional[bytes] = None
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    env["ADDONREG_STORAGE"] = storage
    return subprocess.run(
        [sys.executable, "-m", "addonreg", "import", "--quiet", path],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=60,
        input=input,
    )


def stored(storage: str) -> Dict[Tuple[str, str], Tuple[Optional[str], str]]:
    """{(addon_id, sha256): (version, status)} as the storage holds them."""
    names = {1: "registered", 2: "revoked"}
    if storage.startswith("sqlite:///"):
        path = storage[len("sqlite:///") :]
        if not os.path.exists(path):
            return {}
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute(
                "SELECT addon_id, hex(sha256), version, status FROM registrations"
            ).fetchall()
        except sqlite3.OperationalError:  # no schema: nothing was written
            return {}
        finally:
            conn.close()
    else:
        conn = mysql_connect(storage)
        with conn.cursor() as cur:
            cur.execute("SHOW TABLES LIKE 'registrations'")
            if not cur.fetchall():
                return {}
            cur.execute("SELECT addon_id, hex(sha256), version, status FROM registrations")
            rows = cur.fetchall()
        conn.close()
    return {(a, s.lower()): (v, names[st]) for a, s, v, st in rows}


@pytest.fixture(params=["sqlite", "mysql"])
def storage(request, tmp_path) -> str:
    if request.param == "mysql":
        need_mysql()
        reset_mysql()
        return MYSQL_URL
    return f"sqlite:///{tmp_path}/db.sqlite3"


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_a_status_column_is_honoured_and_importing_again_changes_nothing(tmp_path, storage):
    path = tmp_path / "rows.jsonl"
    path.write_text(
        jsonl(
            {"addon_id": "a@b", "sha256": sha(1), "version": "1.0", "status": "revoked"},
            {"addon_id": "a@b", "sha256": sha(2), "version": "2.0", "status": "registered"},
            {"addon_id": "a@b", "sha256": sha(3)},
            {"addon_id": GUID, "sha256": sha(4), "status": "revoked"},
        )
    )
    result = run_import(str(path), storage)
    assert result.returncode == 0, result.stderr
    assert b"imported 4 rows (4 changed, 0 already there)" in result.stdout
    assert stored(storage) == {
        ("a@b", sha(1)): ("1.0", "revoked"),
        ("a@b", sha(2)): ("2.0", "registered"),
        ("a@b", sha(3)): (None, "registered"),
        (GUID, sha(4)): (None, "revoked"),
    }
    again = run_import(str(path), storage)
    assert b"imported 4 rows (0 changed, 4 already there)" in again.stdout
    # CSV, columns in any order: revoking a registered file, registering a revoked one.
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text(
        f"status,sha256,addon_id,version\nrevoked,{sha(2)},a@b,\nregistered,{sha(4)},{GUID},4\n"
        f",{sha(5)},a@b,5\n"
    )
    result = run_import(str(csv_path), storage)
    assert result.returncode == 0, result.stderr
    assert b"imported 3 rows (3 changed" in result.stdout
    state = stored(storage)
    assert state[("a@b", sha(2))] == ("2.0", "revoked")  # the version kept
    assert state[(GUID, sha(4))] == ("4", "registered")
    assert state[("a@b", sha(5))] == ("5", "registered")


def test_a_revoked_import_is_answered_410_by_the_service(tmp_path, server_process):
    storage = f"sqlite:///{tmp_path}/db.sqlite3"
    path = tmp_path / "rows.csv"
    path.write_text(f"addon_id,sha256,version,status\na@b,{sha(1)},1,revoked\n")
    assert run_import(str(path), storage).returncode == 0
    proc = server_process({"ADDONREG_STORAGE": storage})
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{proc.base}/v1/addons/a@b/files/{sha(1)}", timeout=10)
    assert info.value.code == 410
    assert json.loads(info.value.read())["status"] == "revoked"


BIG = "x" * (128 * 1024 + 1)


@pytest.mark.parametrize(
    "content, line, words",
    [
        # Unknown fields or columns: a typo is not silently dropped.
        (
            jsonl(
                {"addon_id": "a@b", "sha256": sha(1)},
                {"addon_id": "a@b", "sha256": sha(2), "versoin": "1"},
            ),
            "line 2",
            "'versoin'",
        ),
        (f"addon_id,sha256,versoin\na@b,{sha(1)},1\n", "line 1", "'versoin'"),
        (f"addon_id,sha256,version,version\na@b,{sha(1)},1,1\n", "line 1", "each once"),
        (f"sha256,version\n{sha(1)},1\n", "line 1", "addon_id and sha256"),
        # A status of neither kind.
        (jsonl({"addon_id": "a@b", "sha256": sha(1), "status": "yes"}), "line 1", "status"),
        (jsonl({"addon_id": "a@b", "sha256": sha(1), "status": ["revoked"]}), "line 1", "status"),
        (
            f"addon_id,sha256,status\na@b,{sha(1)},registered\na@b,{sha(2)},unknown\n",
            "line 3",
            "status",
        ),
        # Two rows for one file that disagree: both lines named.
        (
            jsonl(
                {"addon_id": "a@b", "sha256": sha(1)},
                {"addon_id": "a@b", "sha256": sha(2)},
                {"addon_id": "a@b", "sha256": sha(1), "status": "revoked"},
            ),
            "lines 1 and 3",
            "registered, no version; revoked, no version",
        ),
        (
            f"addon_id,sha256,version\na@b,{sha(1)},1\nc@d,{sha(1)},1\na@b,{sha(1).upper()},2\n",
            "lines 2 and 4",
            "version '1'; registered, version '2'",
        ),
        (
            f"addon_id,sha256,version\na@b,{sha(1)},\na@b,{sha(1)},2\n",
            "lines 2 and 3",
            "no version",
        ),
        # A field over the csv module's 128 KiB limit, quoted or not.
        (
            f"addon_id,sha256,version\na@b,{sha(1)},1\nc@d,{sha(2)},{BIG}\n",
            "line 3",
            "field larger",
        ),
        (f'addon_id,sha256,version\na@b,{sha(1)},"1\n{BIG}"\n', "line 3", "field larger"),
        (f"addon_id,sha256,{BIG}\n", "line 1", "field larger"),
        # JSON nested past the interpreter's limit.
        (
            jsonl({"addon_id": "a@b", "sha256": sha(1)})
            + '{"addon_id": '
            + "[" * 100_000
            + "]" * 100_000
            + "}\n",
            "line 2",
            "nested too deeply",
        ),
    ],
)
def test_every_failure_names_its_line_and_writes_nothing(tmp_path, content, line, words):
    storage = f"sqlite:///{tmp_path}/db.sqlite3"
    path = tmp_path / "rows"
    path.write_text(content)
    result = run_import(str(path), storage)
    err = result.stderr.decode()
    assert result.returncode == 1
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert f"{line}:" in err and words in err, err
    assert "nothing was imported" in err
    assert stored(storage) == {}


@pytest.mark.parametrize(
    "content, line",
    [
        (b"addon_id,sha256,version\na@b," + sha(1).encode() + b",1\n\xff\xfe,x,y\n", 3),
        (b'{"addon_id": "a@b", "sha256": "' + sha(1).encode() + b'"}\n{"addon_id": "\xc3"}\n', 2),
        (b"\xef\xbb\xbf\xef\xbb\n", 1),
        (b"addon_id,sha256,version\r\na@b," + sha(1).encode() + b",caf\xe9\r\n", 2),
    ],
)
def test_invalid_utf8_is_named_by_its_line(tmp_path, content, line):
    storage = f"sqlite:///{tmp_path}/db.sqlite3"
    path = tmp_path / "rows"
    path.write_bytes(content)
    for result in (run_import(str(path), storage), run_import("-", storage, input=content)):
        err = result.stderr.decode()
        assert result.returncode == 1 and "Traceback" not in err, err
        assert f"line {line}: not UTF-8" in err, err
        assert stored(storage) == {}


def test_a_byte_order_mark_and_identical_duplicates_are_fine(tmp_path):
    storage = f"sqlite:///{tmp_path}/db.sqlite3"
    rows = jsonl(
        {"addon_id": "a@b", "sha256": sha(1), "version": "café"},
        {"addon_id": "a@b", "sha256": sha(1), "version": "café"},
        {"addon_id": "a@b", "sha256": "SHA256:" + sha(2).upper(), "status": "revoked"},
        {"addon_id": "a@b", "sha256": sha(2), "status": "revoked"},
    )
    bom = "\ufeff".encode()
    for name, data in (
        ("rows.jsonl", bom + rows.encode()),
        ("rows.csv", bom + f"addon_id,sha256\r\na@b,{sha(3)}\r\na@b,{sha(3)}\r\n".encode()),
    ):
        path = tmp_path / name
        path.write_bytes(data)
        for result in (run_import(str(path), storage), run_import("-", storage, input=data)):
            assert result.returncode == 0, result.stderr
    assert stored(storage) == {
        ("a@b", sha(1)): ("café", "registered"),
        ("a@b", sha(2)): (None, "revoked"),
        ("a@b", sha(3)): (None, "registered"),
    }

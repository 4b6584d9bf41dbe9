"""The README's "Try it", as a new user runs it: a server from one shell, an
``addonreg import`` from another, no Redis — over SQLite (the default) and
over MariaDB. The server answers the imported row, and then a changed
version, within the contract's 100 ms of the import's exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import MYSQL_URL, ROOT, need_mysql, reset_mysql

pytestmark = pytest.mark.subprocess

SHA = "a" * 64  # what the README's printf makes
FILE = f"/v1/addons/fx@example.com/files/{SHA}"


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def import_rows(path, env) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "addonreg",
            "import",
            "--config",
            "config/development.ini",
            str(path),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def answered_within(url: str, wanted, seconds: float) -> float:
    """How soon after now the server answered ``wanted`` (fails past ``seconds``)."""
    started = time.monotonic()
    while True:
        status, body = get(url)
        if (status, body.get("version")) == wanted:
            return time.monotonic() - started
        assert time.monotonic() - started < seconds, (status, body)


@pytest.mark.parametrize("storage", ["sqlite", "mysql"])
def test_try_it(server_process, tmp_path, storage):
    if storage == "mysql":
        need_mysql()
        reset_mysql()
        url = MYSQL_URL
    else:
        url = f"sqlite:///{tmp_path}/addonreg.sqlite3"
    env = dict(os.environ, ADDONREG_STORAGE=url)  # where make serve's file would be
    env.pop("ADDONREG_PUBSUB", None)  # the default: no Redis
    server = server_process(
        {"ADDONREG_STORAGE": url}, args=("--config", "config/development.ini", "--port", "0")
    )
    assert get(server.base + "/v1/")[0] == 200
    assert get(server.base + FILE)[0] == 404  # now cached as unknown
    rows = tmp_path / "rows.csv"
    rows.write_text(f"addon_id,sha256,version\nfx@example.com,{SHA},1.0\n")
    import_rows(rows, env)
    assert answered_within(server.base + FILE, (200, "1.0"), 0.1) < 0.1
    rows.write_text(f"addon_id,sha256,version\nfx@example.com,{SHA},1.1\n")
    import_rows(rows, env)  # a new version of the same file
    assert answered_within(server.base + FILE, (200, "1.1"), 0.1) < 0.1

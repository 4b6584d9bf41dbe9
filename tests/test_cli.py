"""The `addonreg` command: serve, initdb, import — as real processes."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request

import pytest

from addonreg.storage.testing import sha
from tests.conftest import ROOT

pytestmark = pytest.mark.subprocess


def run(*args, env=None, input=None):
    full_env = dict(os.environ)
    full_env.pop("ADDONREG_CONFIG", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "addonreg", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        input=input,
    )


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_answers_and_exits_0_on_sigterm(server_process):
    proc = server_process()
    assert fetch(proc.base + "/v1/")[1]["http_api_version"] == "1"
    assert proc.stop(signal.SIGTERM) == 0


def test_bad_setting_stops_start_up_naming_it():
    result = run("serve", env={"ADDONREG_MAX_LOOKUP": "many"})
    assert result.returncode == 2
    assert "max_lookup" in result.stderr and "ADDONREG_MAX_LOOKUP" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("serve", "--port", "http")
    assert result.returncode == 2 and "'port'" in result.stderr


def test_unreachable_storage_stops_start_up():
    result = run(
        "serve",
        env={
            "ADDONREG_STORAGE": "mysql://root@127.0.0.1:1/none",
            "ADDONREG_STORAGE_TIMEOUT": "1",
            "ADDONREG_PORT": "0",
        },
    )
    assert result.returncode == 1
    assert "storage mysql is unavailable" in result.stderr and "Traceback" not in result.stderr


def test_initdb_creates_schema(tmp_path):
    db = tmp_path / "x.sqlite3"
    result = run("initdb", env={"ADDONREG_STORAGE": f"sqlite:///{db}"})
    assert result.returncode == 0, result.stderr
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"registrations", "counters"} <= tables
    assert run("initdb", env={"ADDONREG_STORAGE": f"sqlite:///{db}"}).returncode == 0


def test_import_csv_and_json_lines_then_serve(tmp_path, server_process):
    env = {"ADDONREG_STORAGE": f"sqlite:///{tmp_path}/db.sqlite3"}
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text(
        "addon_id,sha256,version\n"
        + "".join(f"a{i}@b,{sha(i)},{i}.0\n" for i in range(50))
        + f"{{6ba7b810-9dad-11d1-80b4-00c04fd430c8}},SHA256:{sha(99).upper()},\n"
    )
    result = run("import", "--quiet", str(csv_file), env=env)
    assert result.returncode == 0, result.stderr
    assert "imported 51 rows (51 changed" in result.stdout and "rows/s" in result.stdout
    again = run("import", "--quiet", str(csv_file), env=env)
    assert "imported 51 rows (0 changed, 51 already there)" in again.stdout
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text(
        json.dumps({"addon_id": "j@b", "sha256": sha("j"), "version": "2"})
        + "\n\n"
        + json.dumps({"addon_id": "a1@b", "sha256": sha(1), "version": "1.1"})
        + "\n"
    )
    result = run("import", str(jsonl), env=env)
    assert result.returncode == 0 and "imported 2 rows (2 changed" in result.stdout
    assert "import" in result.stderr  # the progress bar
    proc = server_process(env)
    status, record = fetch(f"{proc.base}/v1/addons/a1@b/files/{sha(1)}")
    assert status == 200 and record["version"] == "1.1"
    status, record = fetch(
        proc.base + f"/v1/addons/%7B6ba7b810-9dad-11d1-80b4-00c04fd430c8%7D/files/{sha(99)}"
    )
    assert status == 200 and record["version"] is None
    status, feed = fetch(proc.base + "/v1/changes")
    assert len(feed["changes"]) == 52 and feed["next_since"] == 53


@pytest.mark.parametrize(
    "content, line",
    [
        ("addon_id,sha256,version\na@b,{s},1\nbad id,{s},1\n", 3),
        ("addon_id,sha256,version\na@b,{s},1\n\na@b,nothex,1\n", 4),
        ("addon_id,sha256,version\na@b,{s},1,extra\n", 2),
        ("\nid,hash\n", 2),
        ('{{"addon_id": "a@b", "sha256": "{s}"}}\n{{"addon_id": "a@b"}}\n', 2),
        ('{{"addon_id": "a@b", "sha256": "{s}"}}\nnot json\n', 2),
        ("addon_id,sha256,version\na@b,{s},1\nb@b,{s}\n", 3),  # fewer fields than the header
        ("addon_id,sha256\na@b,{s}\nb@b,{s},2.0\n", 3),  # more
        ("addon_id,sha256,version\n\n", 1),  # a header and no rows
    ],
)
def test_malformed_row_names_its_line_and_writes_nothing(tmp_path, content, line):
    db = tmp_path / "db.sqlite3"
    path = tmp_path / "rows"
    path.write_text(content.format(s=sha(1)))
    result = run("import", str(path), env={"ADDONREG_STORAGE": f"sqlite:///{db}"})
    assert result.returncode == 1
    assert f"line {line}" in result.stderr and "Traceback" not in result.stderr
    assert (
        not db.exists()
        or sqlite3.connect(db).execute("SELECT COUNT(*) FROM registrations").fetchone()[0] == 0
    )


def test_an_empty_input_is_an_error_and_a_header_without_version_is_fine(tmp_path):
    env = {"ADDONREG_STORAGE": f"sqlite:///{tmp_path}/d.sqlite3"}
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    result = run("import", str(empty), env=env)
    assert result.returncode == 1 and "no rows" in result.stderr
    two = tmp_path / "two.csv"
    two.write_text(f"addon_id,sha256\na@b,{sha(1)}\n")
    result = run("import", "--quiet", str(two), env=env)
    assert result.returncode == 0 and "imported 1 rows" in result.stdout
    assert f"into SQLite file {tmp_path}/d.sqlite3" in result.stdout  # where it went


def test_import_from_stdin(tmp_path):
    result = run(
        "import",
        "--quiet",
        "-",
        env={"ADDONREG_STORAGE": f"sqlite:///{tmp_path}/d"},
        input=f"addon_id,sha256,version\na@b,{sha(1)},1\n",
    )
    assert result.returncode == 0 and "imported 1 rows" in result.stdout


def test_console_script_is_installed():
    script = os.path.join(os.path.dirname(sys.executable), "addonreg")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    for command in ("serve", "initdb", "import"):
        assert command in result.stdout


def test_sigterm_lets_keep_alive_clients_go_without_cutting_a_request(server_process, tmp_path):
    """After SIGTERM each open connection gets its answer with Connection: close, then
    new connections are refused: no request is left unanswered, nothing acknowledged is lost."""
    import http.client
    import threading

    from addonreg.hawk import sign

    db = tmp_path / "ka.sqlite3"
    proc = server_process(
        {"ADDONREG_STORAGE": f"sqlite:///{db}", "ADDONREG_HAWK_CREDENTIALS": "amo:k"}
    )
    acked, outcomes = [], []
    answered = [threading.Event() for _ in range(8)]  # each client's first write acknowledged

    def client(i):
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=10)
        for n in range(100_000):
            path = f"/v1/addons/c{i}@example.com/files/{sha(n)}"
            auth = sign("amo", "k", "PUT", f"http://127.0.0.1:{proc.port}{path}", b"", None)
            try:
                conn.request("PUT", path, headers={"Authorization": auth})
            except ConnectionRefusedError:
                outcomes.append("refused")  # a new connection: the server stopped listening
                return
            try:
                response = conn.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError) as exc:
                outcomes.append(type(exc).__name__)  # a request left without an answer
                return
            if response.status == 201:
                acked.append((f"c{i}@example.com", sha(n)))
                answered[i].set()
            if response.getheader("Connection") == "close":
                conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    # Every client mid-stream on its kept-alive connection when SIGTERM lands
    # (30 s: a liveness bound).
    assert all(event.wait(30) for event in answered), "a client had no write acknowledged"
    proc.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(20)
    assert proc.stop() == 0
    assert outcomes == ["refused"] * 8, outcomes
    stored = {
        (a, s.hex())
        for a, s in sqlite3.connect(db).execute("SELECT addon_id, sha256 FROM registrations")
    }
    assert len(acked) > 0 and set(acked) <= stored


@pytest.mark.parametrize(
    "setting, value, expected",
    [
        ("STORAGE_TIMEOUT", "0", "> 0"),
        ("HEARTBEAT_TIMEOUT", "0", "> 0"),
        ("WRITE_WINDOW", "1e9", "<= 1"),
        ("HOST", "", "every interface"),
        ("HTTP_MAX_AGE", "-5", "from 0"),
        ("HAWK_SKEW", "99999999999", "to 3600"),
        ("HAWK_CREDENTIALS", "é:clé", "printable ASCII"),
        ("HAWK_CREDENTIALS", 'i"d:key', "quotes"),
        ("STORAGE", "mysql://h/db?pool_size=abc", "pool_size"),
        ("STORAGE", "sqlite://var/x", "sqlite:///"),
        ("PORT", "abc", "integer from 0 to 65535"),
        ("PUBSUB", "redis://h:1/notanumber", "number"),
        ("MAX_LOOKUPS", "5", "did you mean 'ADDONREG_MAX_LOOKUP'"),
    ],
)
def test_f9_a_setting_that_would_break_the_service_stops_start_up(setting, value, expected):
    """Each says what it expects and where the value came from; none starts."""
    result = run("serve", env={f"ADDONREG_{setting}": value})
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and f"ADDONREG_{setting}" in result.stderr
    assert "Traceback" not in result.stderr and "clé" not in result.stderr


def test_f9_an_unknown_ini_section_is_refused(tmp_path):
    ini = tmp_path / "a.ini"
    ini.write_text("[addonregg]\nport = 9\n")
    result = run("serve", "--config", str(ini))
    assert result.returncode == 2 and "unknown section 'addonregg'" in result.stderr


@pytest.mark.parametrize("storage", ["sqlite-not-a-database", "mysql-closed-port"])
def test_f8_a_start_up_that_fails_exits_within_seconds(tmp_path, storage):
    if storage == "sqlite-not-a-database":
        path = tmp_path / "garbage.sqlite3"
        path.write_bytes(b"\xde\xad" * 4096)
        url = f"sqlite:///{path}"
    else:
        url = "mysql://root@127.0.0.1:1/none"
    started = time.monotonic()
    result = run(
        "serve",
        env={"ADDONREG_STORAGE": url, "ADDONREG_PORT": "0", "ADDONREG_STORAGE_TIMEOUT": "1"},
    )
    assert result.returncode == 1 and "cannot start" in result.stderr
    assert time.monotonic() - started < 30  # liveness: it exits (it used to hang)


def test_two_servers_on_one_port_the_second_says_address_in_use(server_process):
    first = server_process()
    result = run("serve", env={"ADDONREG_PORT": str(first.port), "ADDONREG_STORAGE": "memory://"})
    assert result.returncode == 1 and "address in use" in result.stderr


@pytest.mark.mysql
def test_a_missing_mysql_database_is_named_and_initdb_creates_it():
    from tests.conftest import MYSQL_URL, mysql_connect, need_mysql

    need_mysql()
    url = MYSQL_URL.rsplit("/", 1)[0] + "/addonreg_test_missing"
    conn = mysql_connect(db=False)
    with conn.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS addonreg_test_missing")
    env = {"ADDONREG_STORAGE": url, "ADDONREG_PORT": "0"}
    result = run("serve", env=env)
    assert result.returncode == 1 and "does not exist" in result.stderr
    assert "addonreg initdb" in result.stderr
    result = run("initdb", env=env)
    assert result.returncode == 0 and "created" in result.stdout, result.stderr
    with conn.cursor() as cur:
        cur.execute("SHOW TABLES FROM addonreg_test_missing")
        assert {row[0] for row in cur.fetchall()} >= {"registrations", "counters", "jobs"}
        cur.execute("DROP DATABASE addonreg_test_missing")
    conn.close()

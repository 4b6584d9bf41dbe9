"""The production deployment, for real: ``supervisord.conf`` (through
``bin/addonreg-supervisord``) running two ``addonreg serve`` processes on one
port, ``config/nginx.conf`` in front, over MariaDB and Redis.

What it promises: reads and Hawk-signed writes work through nginx under the
public host name, and a write is answered by both processes within 100 ms;
nginx's client address reaches the service; a process killed with ``kill -9``
is restarted while the service goes on answering; ``supervisorctl restart``
and ``stop all`` are graceful (exit 0, no acknowledged write lost).

Clients connect from 127.0.0.2 with a ``Host`` of :data:`PUBLIC_HOST` and an
``X-Request-Id`` of their own, which the service's JSON request log echoes
with the pid that answered: that is how a test knows which process answered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPRequest, HTTPResponse

from addonreg.hawk import sign
from addonreg.storage.testing import sha
from tests.conftest import (
    BUS_KEY,
    CREDS,
    MYSQL_URL,
    REQUIRE_SERVICES,
    ROOT,
    mysql_connect,
    need_mysql,
    need_redis,
    redis_pubsub_url,
    reset_mysql,
    wait_until,
)
from tests.nginx import NGINX, free_port, render_nginx_conf

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]

LAUNCHER = Path(ROOT) / "bin" / "addonreg-supervisord"
SUPERVISORD = Path(sys.executable).parent / "supervisord"
# What clients sign for (Hawk covers host and port): nginx must pass it on unchanged.
PUBLIC_HOST = "registry.example.test:8443"
SOON = 0.5  # seconds: a liveness bound for "the other process answers the new state"
CLIENT_IP = "127.0.0.2"  # clients connect from here, nginx from 127.0.0.1
PROCS = ("addonreg:addonreg_00", "addonreg:addonreg_01")


def _need(reason: Optional[str]) -> None:
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
        pytest.skip(reason)


def need_nginx() -> None:
    reason = None
    if not os.access(NGINX, os.X_OK):
        reason = f"nginx not installed ({NGINX}; apt-get install nginx-light)"
    _need(reason)


def need_supervisord() -> None:
    reason = None
    if not SUPERVISORD.exists():
        reason = f"supervisord not installed in {SUPERVISORD.parent} (pip install -e '.[test]')"
    _need(reason)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for supervisord counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


class Deployment:
    """supervisord (2 processes on one port) and nginx, all under ``directory``."""

    def __init__(self, directory: Path, processes: int = 2) -> None:
        self.dir = directory
        self.port = free_port()
        self.front_port = free_port()
        self.log_path = directory / "supervisord.log"
        self.env = dict(os.environ)
        for name in list(self.env):
            if name.startswith("ADDONREG_") or name == "PROMETHEUS_MULTIPROC_DIR":
                del self.env[name]
        self.env.update(
            SUPERVISORD=str(SUPERVISORD),
            ADDONREG_PROCESSES=str(processes),
            ADDONREG_RUN_DIR=str(directory / "run"),
            ADDONREG_HOST="127.0.0.1",
            ADDONREG_PORT=str(self.port),
            ADDONREG_STORAGE=MYSQL_URL,
            ADDONREG_PUBSUB=redis_pubsub_url(),
            ADDONREG_BUS_KEY=BUS_KEY,
            ADDONREG_HAWK_CREDENTIALS=",".join(f"{k}:{v}" for k, v in CREDS.items()),
            ADDONREG_XHEADERS="true",
            ADDONREG_ACCESS_LOG="true",
            ADDONREG_LOG_LEVEL="INFO",
            ADDONREG_LOG_FORMAT="json",
        )
        self.supervisord: Optional[subprocess.Popen] = None
        self.nginxes: List[subprocess.Popen] = []

    # supervisord ------------------------------------------------------------

    def start_supervisord(self) -> None:
        # Append mode: supervisord and its children each open /dev/stdout again.
        with open(self.log_path, "ab") as log:
            self.supervisord = subprocess.Popen(
                [str(LAUNCHER)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``bin/addonreg-supervisord ctl ARGS``: supervisorctl's output."""
        result = subprocess.run(
            [str(LAUNCHER), "ctl", *args],
            env=self.env,
            text=True,
            capture_output=True,
            timeout=timeout,
        )
        return result.stdout + result.stderr

    def status(self) -> Dict[str, tuple]:
        """{name: (state, pid or None)} from ``supervisorctl status``."""
        states = {}
        for line in self.ctl("status").splitlines():
            m = re.match(r"(addonreg:\S+)\s+([A-Z]+)(?:\s+pid (\d+))?", line)
            if m:
                states[m[1]] = (m[2], int(m[3]) if m[3] else None)
        return states

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def records(self) -> List[Dict[str, Any]]:
        """The JSON log records of the processes, in order."""
        out = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_running(self, timeout: float = 20) -> Dict[str, int]:
        """Wait until every process is RUNNING and listening; {name: pid}."""
        deadline = time.monotonic() + timeout
        while True:
            if self.supervisord is not None and self.supervisord.poll() is not None:
                raise AssertionError(
                    f"supervisord exited {self.supervisord.returncode}:\n" + self.log()[-3000:]
                )
            states = self.status()
            pids = {name: pid for name, (state, pid) in states.items() if state == "RUNNING"}
            if len(pids) == len(PROCS):
                listening = {r["pid"] for r in self.records() if "listening on" in r.get("msg", "")}
                if set(pids.values()) <= listening:
                    return pids
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"not all RUNNING and listening: {states}\n" + self.log()[-3000:]
                )
            time.sleep(0.1)

    def pid(self, name: str) -> int:
        """``supervisorctl pid NAME``."""
        return int(self.ctl("pid", name).strip())

    def served(self, rids, timeout: float = 5) -> Dict[str, Dict[str, Any]]:
        """The request log records of these request ids, once all are logged."""
        wanted = set(rids)
        deadline = time.monotonic() + timeout
        while True:
            found = {r["rid"]: r for r in self.records() if r.get("rid") in wanted}
            if len(found) == len(wanted) or time.monotonic() > deadline:
                return found
            time.sleep(0.05)

    # nginx ------------------------------------------------------------------

    def start_nginx(self, read: Optional[str] = None, write: Optional[str] = None) -> int:
        """An nginx with ``config/nginx.conf`` in front of ``read`` and ``write``
        (host:port, default: the processes); its port."""
        own = f"127.0.0.1:{self.port}"
        port = self.front_port if not self.nginxes else free_port()
        ng = self.dir / f"nginx{len(self.nginxes)}"
        ng.mkdir()
        site = ng / "addonreg.conf"
        site.write_text(
            render_nginx_conf(listen=f"127.0.0.1:{port}", read=read or own, write=write or own)
        )
        temp = "\n".join(
            f"    {kind}_temp_path {ng}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        main = ng / "main.conf"
        # Workers run as this user (pytest's temporary directories are 0700);
        # nginx ignores `user` when not started as root.
        main.write_text(f"""user {pwd.getpwuid(os.getuid()).pw_name};
worker_processes 1;
events {{ worker_connections 512; }}
http {{
    access_log {ng}/access.log;
{temp}
    include {site};
}}
""")
        with open(ng / "nginx.out", "ab") as out:
            nginx = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(ng),
                    "-e",
                    str(ng / "error.log"),
                    "-c",
                    str(main),
                    "-g",
                    f"daemon off; pid {ng}/nginx.pid;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.nginxes.append(nginx)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return port
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "nginx did not start:\n"
                        + (ng / "nginx.out").read_text(errors="replace")
                        + (ng / "error.log").read_text(errors="replace")
                    )
                time.sleep(0.05)

    # teardown ---------------------------------------------------------------

    def spawned_pids(self) -> List[int]:
        return [int(p) for p in re.findall(r"spawned: '[^']+' with pid (\d+)", self.log())]

    def stop(self) -> None:
        for nginx in self.nginxes:
            if nginx.poll() is None:
                nginx.send_signal(signal.SIGQUIT)  # graceful; workers follow the master
                try:
                    nginx.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(nginx.pid, signal.SIGKILL)
                    nginx.wait(5)
        if self.supervisord is not None and self.supervisord.poll() is None:
            self.supervisord.send_signal(signal.SIGTERM)  # stops the processes gracefully
            try:
                self.supervisord.wait(45)
            except subprocess.TimeoutExpired:
                self.supervisord.kill()
                self.supervisord.wait(5)
        for pid in self.spawned_pids():  # whatever a dead supervisord left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    need_nginx()
    need_supervisord()
    need_mysql()
    need_redis()
    reset_mysql()
    d = Deployment(tmp_path_factory.mktemp("deploy"))
    try:
        d.start_supervisord()
        d.start_nginx()
        d.wait_running()
        yield d
    finally:
        d.stop()


@pytest.fixture
def deploy(deployment):
    """The deployment, with every process running."""
    if any(state != "RUNNING" for state, _ in deployment.status().values()):
        deployment.ctl("start", "all")
    deployment.wait_running()
    return deployment


@dataclasses.dataclass
class Answer:
    method: str
    path: str
    code: int
    started: float
    ended: float
    rid: str
    response: HTTPResponse

    def json(self) -> Any:
        return json.loads(self.response.body)


class Front:
    """A client of the deployment as the public sees it: through nginx, under PUBLIC_HOST."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = AsyncHTTPClient(force_instance=True, max_clients=64)

    async def fetch(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        signed: bool = False,
        raw: Optional[bytes] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: float = 10,
    ) -> Answer:
        if body is not None:
            raw = json.dumps(body).encode()
        rid = uuid.uuid4().hex
        h = {"Host": PUBLIC_HOST, "X-Request-Id": rid, **(headers or {})}
        if raw:
            h.setdefault("Content-Type", "application/json")
        if signed:
            h["Authorization"] = sign(
                "amo",
                CREDS["amo"],
                method,
                f"http://{PUBLIC_HOST}{path}",
                raw or b"",
                h.get("Content-Type"),
            )
        request = HTTPRequest(
            self.base + path,
            method=method,
            body=raw,
            headers=h,
            network_interface=CLIENT_IP,
            allow_nonstandard_methods=True,
            follow_redirects=False,
            request_timeout=timeout,
        )
        started = time.monotonic()
        response = await self.http.fetch(request, raise_error=False)
        return Answer(method, path, response.code, started, time.monotonic(), rid, response)

    async def burst(self, n: int, method: str, path: str, body: Any = None) -> List[Answer]:
        return list(await asyncio.gather(*(self.fetch(method, path, body) for _ in range(n))))

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def front(deploy):
    f = Front(deploy.front_port)
    yield f
    f.close()


def file_path(n: int, addon_id: str = "deploy@example.com") -> str:
    return f"/v1/addons/{addon_id}/files/{sha(n)}"


def stored(addon_ids) -> set:
    conn = mysql_connect()
    try:
        with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(addon_ids))
            cur.execute(
                f"SELECT addon_id, sha256 FROM registrations WHERE addon_id IN ({marks})",
                list(addon_ids),
            )
            return {(a, s.hex()) for a, s in cur.fetchall()}
    finally:
        conn.close()


def logged_at(record: Dict[str, Any]) -> float:
    """A log record's time, seconds since the epoch (millisecond precision)."""
    return (
        datetime.datetime.strptime(record["time"], "%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(tzinfo=datetime.timezone.utc)
        .timestamp()
    )


async def converge(deploy, front, path: str, old: int, new: int, write) -> float:
    """Do ``write`` once both processes answer ``old`` for ``path`` from their cache,
    then read through nginx for 300 ms; how long after the write was answered the
    process that did not take it last answered ``old`` (from the processes' logs)."""
    for _ in range(5):  # concurrent reads use many of nginx's connections: both processes
        warm = await front.burst(24, "GET", path)
        assert {a.code for a in warm} == {old}, [a.code for a in warm]
        if len({r["pid"] for r in deploy.served(a.rid for a in warm).values()}) == 2:
            break
    else:
        raise AssertionError("reads through nginx never reached both processes")
    answer = await write()
    reads: List[Answer] = []
    # As wide as the warm-up bursts, which reached both processes: nginx hands
    # out its most recently used keep-alive connections first, so narrower
    # bursts can stay on one process's connections (a flake seen in CI).
    while time.monotonic() - answer.ended < SOON + 0.2:
        reads += await front.burst(24, "GET", path)
    assert {a.code for a in reads} <= {old, new}, {a.code for a in reads}
    # A liveness bound (SOON); how soon, the contract's 100 ms, is bench/'s to measure.
    late = [a for a in reads if a.started - answer.ended > SOON and a.code != new]
    assert not late, f"{len(late)} reads sent {SOON} s after the write still answered {old}"

    served = deploy.served([answer.rid] + [a.rid for a in reads])
    assert len(served) == len(reads) + 1, "some requests are missing from the request log"
    acked = logged_at(served[answer.rid])
    other = [
        r for r in served.values() if r["pid"] != served[answer.rid]["pid"] and r["method"] == "GET"
    ]
    assert any(r["status"] == new for r in other), "the other process never answered the write"
    assert any(logged_at(r) - acked > 0.1 for r in other), "the other process was not asked"
    stale = [logged_at(r) - acked for r in other if r["status"] == old]
    return max(stale, default=0.0)


async def test_reads_and_signed_writes_through_nginx(deploy, front):
    path = file_path(1)

    async def put():
        a = await front.fetch("PUT", path, {"version": "1"}, signed=True)
        assert a.code == 201, (a.code, a.response.body)
        assert a.json()["version"] == "1"
        return a

    async def delete():
        a = await front.fetch("DELETE", path, signed=True)
        assert a.code == 200 and a.json()["status"] == "revoked", (a.code, a.response.body)
        return a

    assert await converge(deploy, front, path, 404, 200, put) < SOON
    assert await converge(deploy, front, path, 200, 410, delete) < SOON

    head = await front.fetch("HEAD", path)
    assert head.code == 410 and head.response.body == b""
    lookup = await front.fetch(
        "POST", "/v1/lookup", {"files": [{"addon_id": "deploy@example.com", "sha256": sha(1)}]}
    )
    assert lookup.code == 200 and lookup.json()["results"][0]["status"] == "revoked"

    # A GUID id, percent-encoded: signed as sent, so nginx must not touch the URI.
    guid = "{d3a0b4e5-1111-4222-8333-944455556666}"
    encoded = file_path(2, guid.replace("{", "%7B").replace("}", "%7D"))
    assert (await front.fetch("PUT", encoded, signed=True)).code == 201
    assert (await front.fetch("GET", file_path(2, guid))).code == 200

    # Bulk writes (~400 KB: nginx spools the body to its temp directory), async
    # jobs and the original API, all on the write routes.
    ops = [
        {"op": "register", "addon_id": "bulk@example.com", "sha256": sha(n)} for n in range(3000)
    ]
    bulk = await front.fetch("POST", "/v1/registrations", {"operations": ops}, signed=True)
    assert bulk.code == 200 and len(bulk.json()["results"]) == 3000, bulk.response.body[:300]
    job = await front.fetch(
        "POST",
        "/v1/registrations",
        {"operations": ops[:10]},
        signed=True,
        headers={"Prefer": "respond-async"},
    )
    assert job.code == 202
    location = job.response.headers["Location"]
    assert location == f"/v1/jobs/{job.json()['job']}"
    for _ in range(100):
        status = await front.fetch("GET", location, signed=True)
        assert status.code == 200
        if status.json()["status"] == "done":
            break
        await asyncio.sleep(0.05)
    assert status.json()["status"] == "done"
    old_api = {"id": "hash@example.com", "sha256": sha(3)}
    assert (await front.fetch("POST", "/hash", old_api, signed=True)).code == 202
    for _ in range(100):
        answer = await front.fetch("POST", "/addon", old_api)
        assert answer.code == 200
        if answer.json()["registered"]:
            break
        await asyncio.sleep(0.02)
    assert answer.json() == dict(old_api, registered=True)

    # An unsigned write is refused by the service, not by nginx.
    refused = await front.fetch("PUT", file_path(4), {"version": "1"})
    assert refused.code == 401 and refused.json()["errno"] == 104

    # A body of max_body_size passes; above it nginx answers itself, with the
    # contract's error body.
    largest = json.dumps({"files": [{"addon_id": "a@b", "sha256": sha(1)}]}).encode()
    largest += b" " * (4 * 1024 * 1024 - len(largest))
    assert (await front.fetch("POST", "/v1/lookup", raw=largest)).code == 200
    too_large = await front.fetch("POST", "/v1/lookup", raw=b" " * (4 * 1024 * 1024 + 1))
    assert too_large.code == 413 and too_large.json()["errno"] == 113


async def test_the_client_address_reaches_the_service(deploy, front):
    a = await front.fetch("GET", "/v1/nowhere", headers={"X-Forwarded-For": "198.51.100.7"})
    assert a.code == 404 and a.json()["errno"] == 111
    record = deploy.served([a.rid])[a.rid]
    # The client as nginx saw it (X-Real-IP, trusted with xheaders), not nginx's
    # own address, nor what the client claimed.
    assert record["remote"] == CLIENT_IP, record
    assert record["method"] == "GET" and record["status"] == 404


ROUTES = [  # (method, path, signed, body, write?) -- every route of config/nginx.conf
    ("GET", file_path(1), False, None, False),
    ("HEAD", file_path(1), False, None, False),
    ("GET", "/v1/addons/deploy@example.com/files", False, None, False),
    ("GET", "/v1/changes?since=0&limit=1", False, None, False),
    ("GET", "/v1/", False, None, False),
    ("GET", "/__lbheartbeat__", False, None, False),
    ("POST", "/v1/lookup", False, {"files": [{"addon_id": "a@b", "sha256": sha(1)}]}, False),
    ("POST", "/addon", False, {"id": "a@b", "sha256": sha(1)}, False),
    ("POST", "/addons", False, {"addons": [{"id": "a@b", "sha256": sha(1)}]}, False),
    ("PUT", file_path(9, "route@example.com"), True, None, True),
    ("DELETE", file_path(9, "route@example.com"), True, None, True),
    (
        "POST",
        "/v1/registrations",
        True,
        {"operations": [{"op": "register", "addon_id": "route@example.com", "sha256": sha(8)}]},
        True,
    ),
    ("GET", "/v1/jobs/" + "0" * 32, True, None, True),
    ("POST", "/hash", True, {"id": "route@example.com", "sha256": sha(7)}, True),
]


@pytest.mark.parametrize("down", ["read", "write"])
async def test_reads_and_writes_take_their_own_upstream(deploy, down):
    """With one upstream group pointing nowhere, exactly its routes fail (nginx's 503)."""
    nowhere = f"127.0.0.1:{free_port()}"
    port = await asyncio.to_thread(deploy.start_nginx, **{down: nowhere})
    front = Front(port)
    try:
        for method, path, signed, payload, write in ROUTES:
            a = await front.fetch(method, path, payload, signed=signed)
            if write == (down == "write"):
                assert unavailable(a, errno=201), (method, path, a.code, a.response.body)
            else:
                assert a.code < 500, (method, path, a.code, a.response.body)
    finally:
        front.close()


async def test_the_host_and_scheme_reach_the_service(deploy, front):
    a = await front.fetch("GET", "/v1/", headers={"X-Forwarded-Proto": "https"})
    assert a.code == 200
    # The Host the client sent, and nginx's own scheme rather than the client's claim.
    assert a.json()["url"] == f"http://{PUBLIC_HOST}/v1/"


async def traffic(
    front, stop: asyncio.Event, clients: int, prefix: str, answers: Optional[List[Answer]] = None
) -> List[Answer]:
    """``clients`` loops of reads and signed writes through nginx until ``stop``;
    the answers, appended to ``answers`` as they come (for a test to wait on)."""
    answers = [] if answers is None else answers
    known = file_path(0, f"{prefix}@example.com")
    assert (await front.fetch("PUT", known, signed=True)).code == 201

    async def client(i):
        n = 0
        while not stop.is_set():
            if n % 3 == 0:
                answers.append(await front.fetch("GET", known))
            elif n % 3 == 1:
                answers.append(
                    await front.fetch(
                        "POST",
                        "/v1/lookup",
                        {"files": [{"addon_id": f"{prefix}@example.com", "sha256": sha(0)}]},
                    )
                )
            else:
                answers.append(
                    await front.fetch("PUT", file_path(n, f"{prefix}{i}@example.com"), signed=True)
                )
            n += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return answers


def acknowledged(answers: List[Answer]) -> set:
    return {
        (a.path.split("/")[3], a.path.split("/")[5])
        for a in answers
        if a.method == "PUT" and a.code in (200, 201)
    }


def ok(a: Answer) -> bool:
    return a.code == (201 if a.method == "PUT" else 200)


def unavailable(a: Answer, errno: Optional[int] = None) -> bool:
    """A 503 with the contract's body and Retry-After (from the service or nginx)."""
    if a.code != 503 or "Retry-After" not in a.response.headers:
        return False
    if a.method == "HEAD":
        return a.response.body == b""
    data = a.json()
    return data["code"] == 503 and data["errno"] in ((201, 202, 203) if errno is None else (errno,))


async def test_kill_9_of_a_process(deploy, front):
    victim = PROCS[0]
    before = deploy.wait_running()
    pid = deploy.pid(victim)
    assert pid == before[victim]
    stop = asyncio.Event()
    answers: List[Answer] = []
    load = asyncio.create_task(traffic(front, stop, 8, "kill", answers))
    # Requests in flight when the kill lands: wait for traffic, not for a time.
    await wait_until(lambda: len(answers) >= 100, "traffic under way", timeout=30)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    await wait_until(lambda: not alive(pid), "the killed process gone", timeout=10, every=0.001)
    dead = time.monotonic()
    restarted = await asyncio.to_thread(deploy.wait_running)
    assert restarted[victim] != pid and restarted[PROCS[1]] == before[PROCS[1]]
    assert "exited: addonreg_00 (terminated by SIGKILL; not expected)" in deploy.log()
    before_stop = len(answers)  # and on, with the new process:
    await wait_until(lambda: len(answers) >= before_stop + 150, "traffic after", timeout=30)
    stop.set()
    await asyncio.wait_for(load, 15)

    assert len(answers) > 200
    failed = [a for a in answers if not ok(a)]
    # Only requests in flight while the process died may fail (one per client at
    # most), and only writes (nginx tries a read again, never a signed write):
    # 503 + Retry-After from nginx, for the client to sign again and retry.
    in_flight = [a for a in failed if a.started < dead and a.ended > killed]
    assert failed == in_flight, [(a.method, a.code, a.started - killed) for a in failed]
    assert len(failed) <= 8
    assert all(a.method == "PUT" and unavailable(a, errno=201) for a in failed), [
        (a.method, a.code, a.response.body[:100]) for a in failed
    ]
    acked = acknowledged(answers)
    assert acked <= stored({k for k, _ in acked})


async def test_supervisorctl_restart_one_process(deploy, front):
    before = deploy.wait_running()
    stop = asyncio.Event()
    answers: List[Answer] = []
    load = asyncio.create_task(traffic(front, stop, 8, "restart", answers))
    await wait_until(lambda: len(answers) >= 50, "traffic under way", timeout=30)
    out = await asyncio.to_thread(deploy.ctl, "restart", PROCS[1])
    assert f"{PROCS[1]}: stopped" in out and f"{PROCS[1]}: started" in out, out
    restarted = len(answers)  # and on, with the new process
    await wait_until(lambda: len(answers) >= restarted + 50, "traffic after", timeout=30)
    stop.set()
    await asyncio.wait_for(load, 15)
    after = deploy.wait_running()
    assert after[PROCS[1]] != before[PROCS[1]] and after[PROCS[0]] == before[PROCS[0]]
    assert "stopped: addonreg_01 (exit status 0)" in deploy.log()
    # Reads go on. Writes that nginx sent the stopping process on a kept-alive
    # connection may not be taken: 503 + Retry-After, from the process once its
    # write queue is closed (errno 202), or from nginx when the process closed
    # the connection under it (201). Nothing acknowledged is lost.
    failed = [a for a in answers if not ok(a)]
    assert all(a.method == "PUT" and unavailable(a) for a in failed), [
        (a.method, a.code, a.response.body[:100]) for a in failed
    ]
    acked = acknowledged(answers)
    assert acked <= stored({k for k, _ in acked})


async def test_supervisorctl_stop_all_while_writing(deploy, front):
    """Last: it leaves the processes stopped (the ``deploy`` fixture starts them again)."""
    pids = deploy.wait_running()
    acked = []
    answers: List[Answer] = []
    stop = asyncio.Event()

    async def client(i):
        n = 0
        while not stop.is_set():
            a = await front.fetch("PUT", file_path(n, f"stop{i}@example.com"), signed=True)
            answers.append(a)
            if a.code in (200, 201):
                acked.append((f"stop{i}@example.com", sha(n)))
            n += 1

    tasks = [asyncio.create_task(client(i)) for i in range(16)]
    # Writes in flight when supervisord stops the processes.
    await wait_until(lambda: len(answers) >= 100, "writes under way", timeout=30)
    out = await asyncio.to_thread(deploy.ctl, "stop", "all")
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 15)
    assert all(f"{name}: stopped" in out for name in PROCS), out

    assert len(acked) > 100
    lost = set(acked) - stored({k for k, _ in acked})
    assert not lost, f"{len(lost)} acknowledged writes lost"
    assert {state for state, _ in deploy.status().values()} == {"STOPPED"}
    log = deploy.log()
    for name in ("addonreg_00", "addonreg_01"):
        assert f"stopped: {name} (exit status 0)" in log
    assert not any(alive(pid) for pid in pids.values())
    # Not acknowledged: 503 + Retry-After (write queue closed, or no process left).
    refused = [a for a in answers if a.code != 201]
    assert all(unavailable(a) for a in refused), {a.code for a in refused}

"""The "cluster" family of ``bench/run.py``: addonreg on a 3-node Galera cluster and on a
primary with a GTID replica, both private and on loopback (``tests/faults/clusters.py``'s
harness, imported, not copied).

Five probes, each a :class:`run.Scenario` with ``probe=`` one of the functions below:

* :func:`read_spread` — misses of processes reading from nodes 1 and 2: each node's
  ``Com_select`` and the write node's statements per miss (target 0, feed polls included).
* :func:`write_failover` — ``kill -9`` of the write node under PUTs, ``--cluster-kills``
  times: the time from the kill to the first acknowledged PUT sent after it, and every
  acknowledged PUT looked for afterwards (a causal read).
* :func:`causal_cost` — in-process ``MySQLStore``: a plain read on a read node against the
  store's causal read (``wsrep_sync_wait``), and what a read costs when its node is behind.
* :func:`freshness` — a write on one process, the time until a process reading from
  another node answers it, over the feed and over a private Redis.
* :func:`async_loss` — the primary killed under PUTs and the replica promoted: acknowledged
  writes missing on it, asynchronous and semi-synchronous.

The clusters use the harness's shortened Galera timeouts (a dead peer is suspected after
2 s, not 5 s): with production's defaults, a write node's loss lasts about 3 s longer.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import run  # the script itself (run.py aliases its module as "run"): helpers, BenchError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root: tests/

from addonreg.storage import Operation  # noqa: E402
from addonreg.storage.mysql import MySQLStore  # noqa: E402
from addonreg.storage.mysql.sql import CAUSAL, NODE_SERIAL, packed  # noqa: E402
from tests.faults.checker import NOT_WRITTEN, OUTCOME_UNKNOWN  # noqa: E402
from tests.faults.clusters import GaleraCluster, ReplicaSet, need_galera, poll  # noqa: E402
from tests.faults.servers import PrivateRedis, make_pristine_datadir  # noqa: E402

STATUS = "SHOW GLOBAL STATUS WHERE Variable_name IN ('Com_select', 'Questions')"
ACKNOWLEDGED = (200, 201)


class Clusters:
    """The family's servers: one pristine datadir, one Galera cluster (started by the first
    probe that needs it, healed before each), each closed when the family ends."""

    def __init__(self, b: run.Bench) -> None:
        self.b, self.root = b, b.tmp / "clusters"
        self._pristine: Path | None = None
        self._galera: GaleraCluster | None = None

    def pristine(self) -> Path:
        if self._pristine is None:
            self.root.mkdir(exist_ok=True)
            self._pristine = make_pristine_datadir(self.root / "pristine" / "datadir")
        return self._pristine

    def galera(self) -> GaleraCluster:
        if self._galera is None:
            try:
                need_galera()
            except BaseException as exc:  # pytest's Skipped: not an Exception
                raise run.BenchError(f"no Galera here: {exc}") from None
            self._galera = GaleraCluster(self.pristine())
            self.b.cleanups.append(self._galera.close)
            up = self._galera.start()
            self.b.extras.setdefault("cluster", {})["galera_up_s"] = up
        self._galera.heal()
        return self._galera

    def replica_set(self) -> ReplicaSet:
        rs = ReplicaSet(self.pristine())
        self.b.cleanups.append(rs.close)
        self.b.extras.setdefault("cluster", {})["replica_set_up_s"] = rs.start()
        return rs


def clusters(b: run.Bench) -> Clusters:
    if "clusters" not in b.resources:
        b.resources["clusters"] = Clusters(b)
    held: Clusters = b.resources["clusters"]
    return held


def service(
    b: run.Bench, name: str, storage: str, pubsub: str = "feed://", read: str = ""
) -> run.Target:
    """An ``addonreg serve`` over ``storage`` (a node list), reading from ``read``."""
    return b.start_service(
        name,
        storage,
        pubsub=pubsub,
        env={
            "ADDONREG_STORAGE_READ": read,
            "ADDONREG_STORAGE_TIMEOUT": str(b.args.cluster_storage_timeout),
        },
    )


def cuts(values: list[float]) -> dict[str, float]:
    """p50, and p99 by nearest rank (below 100 values, about the largest; no interpolation)."""
    ordered = sorted(values)
    if len(ordered) < 2:
        return {"p50": ordered[0], "p99": ordered[0]} if ordered else {}
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
    }


def status(cluster: GaleraCluster, i: int) -> dict[str, int]:
    return {k: int(v) for k, v in cluster.nodes[i].query(STATUS, database=None)}


def table(head: tuple[str, ...], rows: list[tuple[Any, ...]]) -> list[str]:
    return [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
        *("| " + " | ".join(run_fmt(v) for v in r) + " |" for r in rows),
    ]


def run_fmt(value: Any) -> str:
    return f"{value:,.2f}" if isinstance(value, float) else str(value)


# -- 1. misses spread over read nodes -------------------------------------------------------


def read_spread(b: run.Bench, sc: run.Scenario) -> dict[str, Any]:
    """Two processes over the node list, reading from nodes 1 and 2; N misses each."""
    g, n = clusters(b).galera(), b.args.cluster_misses
    names = [f"cluster-read{i}" for i in (1, 2)]
    # What one look at a node's counters costs on it (SHOW STATUS is a "Question"),
    # measured before the processes start.
    own = [status(g, i)["Questions"] for i in range(3)]
    own = [status(g, i)["Questions"] - q for i, q in enumerate(own)]
    try:
        procs = [service(b, name, g.url(), read=g.node_url(i)) for name, i in zip(names, (1, 2))]
        time.sleep(1)  # their start-up (schema, first probes) is not what is measured
        idle0, t0 = [status(g, i) for i in range(3)], time.monotonic()
        time.sleep(b.args.cluster_idle)
        idle1, t1 = [status(g, i) for i in range(3)], time.monotonic()
        for k, p in enumerate(procs):
            for m in range(n):  # GETs of unknown files: one read each
                key = (f"miss{k}-{m}@bench.example", f"{k:02x}{m:062x}")
                code = run.http_request(p.port, "GET", run.Req(run.file_path((*key, ""))))[0]
                if code != 404:
                    raise run.BenchError(f"a miss answered {code}:\n{p.tail()}")
            for m in range(n // 10):  # lookups of 10 unknown files: one read each
                files = [
                    {"addon_id": f"look{k}-{m}@bench.example", "sha256": f"{k:02x}{m:052x}{j:010x}"}
                    for j in range(10)
                ]
                req = run.Req(
                    "/v1/lookup", run.dumps({"files": files}), ("Content-Type: application/json",)
                )
                code = run.http_request(p.port, "POST", req)[0]
                if code != 200:
                    raise run.BenchError(f"a lookup answered {code}:\n{p.tail()}")
        busy1, t2 = [status(g, i) for i in range(3)], time.monotonic()
        metrics = [events(p.port) for p in procs]
    finally:
        b.stop(*names)
    idle_s, busy_s, misses = t1 - t0, t2 - t1, n + n // 10
    rows, result = [], {"misses_per_process": misses, "busy_window_s": busy_s}
    for i in range(3):
        sel = busy1[i]["Com_select"] - idle1[i]["Com_select"]
        idle_rate = (idle1[i]["Com_select"] - idle0[i]["Com_select"]) / idle_s
        q = busy1[i]["Questions"] - idle1[i]["Questions"] - own[i]
        rows.append(
            (
                f"node {i}" + (" (write)" if i == 0 else " (read)"),
                sel,
                idle_rate,
                sel - idle_rate * busy_s,
                q,
            )
        )
        result[f"node{i}_com_select"] = sel
        result[f"node{i}_idle_selects_per_s"] = idle_rate
    write_queries = busy1[0]["Questions"] - idle0[0]["Questions"] - 2 * own[0]
    result["write_node_statements"] = write_queries
    result["write_node_queries_per_miss"] = write_queries / (2 * misses)
    result["read_fallbacks"] = sum(m.get("read_fallbacks", 0) for m in metrics)
    result["markdown"] = [  # a section of the report
        "",
        "## cluster-read-spread: misses spread over read nodes",
        "",
        f"Two `addonreg serve` over the 3-node list, `storage_read` node 1 and node 2; "
        f"each sent {n} GETs of unknown files and {n // 10} lookups of 10 unknown files "
        f"({misses} reads each) in {busy_s:.1f} s, after an idle window of {idle_s:.1f} s "
        "(the feed polls every 25 ms, the watcher looks at the read node every 0.5 s).",
        "",
        *table(
            (
                "node",
                "Com_select in the miss window",
                "idle SELECTs/s (feed, watcher)",
                "SELECTs beyond the idle rate",
                "statements, all kinds (own SHOWs removed)",
            ),
            rows,
        ),
        "",
        f"Write node: {write_queries} statements of any kind over both windows "
        f"({idle_s + busy_s:.1f} s), {result['write_node_queries_per_miss']:.3f} per miss; "
        f"read fallbacks reported by the processes: {result['read_fallbacks']}.",
    ]
    return result


def events(port: int) -> dict[str, float]:
    """The process's ``addonreg_storage_events_total`` by event."""
    text = run.http_request(port, "GET", run.Req("/__metrics__"))[1].decode()
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("addonreg_storage_events_total{"):
            label, value = line.rsplit(" ", 1)
            found[label.split('event="')[1].split('"')[0]] = float(value)
    return found


# -- PUT load (probes 2 and 5) ----------------------------------------------------------


@dataclass
class Answer:
    key: run.Row
    sent: float
    answered: float
    status: int  # 0: no answer (connection refused, reset, timeout)
    errno: int | None


class PutLoad:
    """``clients`` threads PUTting new files to one process, back to back, each answer kept."""

    def __init__(self, b: run.Bench, port: int, clients: int) -> None:
        self.b, self.port = b, port
        self.answers: list[Answer] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(clients)]

    def __enter__(self) -> PutLoad:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        for t in self.threads:
            t.join(90)

    def client(self) -> None:
        while not self.done.is_set():
            key = run.new_key(self.b)
            req = run.signed(
                self.b, "PUT", run.file_path(key), run.dumps({"version": key[2]}), self.port
            )
            sent = time.monotonic()
            try:
                code, body = run.http_request(self.port, "PUT", req)
            except OSError:
                code, body = 0, b""
            errno = None
            if code >= 400:
                try:
                    errno = json.loads(body).get("errno")
                except ValueError:
                    pass
            self.answers.append(Answer(key, sent, time.monotonic(), code, errno))
            if code not in ACKNOWLEDGED:
                time.sleep(0.01)  # a refusal comes back at once: no busy loop

    def first_ack_after(self, moment: float, bound: float) -> float | None:
        """Seconds from ``moment`` to the first acknowledged answer of a PUT sent after it."""
        deadline = moment + bound
        while time.monotonic() < deadline:
            acks = [
                a.answered for a in self.answers if a.sent > moment and a.status in ACKNOWLEDGED
            ]
            if acks:
                return min(acks) - moment
            time.sleep(0.01)
        return None

    def longest_gap(self) -> float:
        """The longest time between two acknowledgements (a node's death that was not a
        kill of the probe's shows here too)."""
        acks = sorted(a.answered for a in self.answers if a.status in ACKNOWLEDGED)
        return max((y - x for x, y in zip(acks, acks[1:])), default=0.0)

    def counts(self) -> dict[str, int]:
        a = self.answers
        return {
            "puts": len(a),
            "acknowledged": sum(x.status in ACKNOWLEDGED for x in a),
            "outcome_unknown": sum(x.status == 503 and x.errno == OUTCOME_UNKNOWN for x in a),
            "not_written": sum(x.status == 503 and x.errno in NOT_WRITTEN for x in a),
            "other_503": sum(
                x.status == 503 and x.errno not in NOT_WRITTEN and x.errno != OUTCOME_UNKNOWN
                for x in a
            ),
            "status_500": sum(x.status == 500 for x in a),
            "no_answer": sum(x.status == 0 for x in a),
            "other": sum(x.status not in (*ACKNOWLEDGED, 503, 500, 0) for x in a),
        }


def present(rows: list[tuple[Any, ...]]) -> set[tuple[str, str]]:
    return {(addon, digest.lower()) for addon, digest in rows}


REGISTERED = "SELECT addon_id, HEX(sha256) FROM registrations"


# -- 2. write unavailability when the write node is killed ------------------------------


def write_failover(b: run.Bench, sc: run.Scenario) -> dict[str, Any]:
    g, a = clusters(b).galera(), b.args
    gaps: list[float] = []
    rejoins: list[float] = []
    crashes: list[str] = []
    try:
        p = service(b, "cluster-writer", g.url())
        with PutLoad(b, p.port, a.cluster_clients) as load:
            time.sleep(2)
            for k in range(a.cluster_kills):
                whole(b, g, crashes, f"before kill {k + 1}")
                wait_write_node(p.port, g, 0)
                time.sleep(1)  # steady load before each kill
                killed = time.monotonic()
                g.kill(0)
                gap = load.first_ack_after(killed, 30)
                if gap is None:
                    raise run.BenchError(
                        f"kill {k + 1}: no PUT acknowledged within 30 s:\n{p.tail()}"
                    )
                gaps.append(gap)
                print(f"  kill {k + 1}: writes back after {gap:.2f} s", file=sys.stderr)
                try:
                    rejoins.append(g.start_node(0))  # IST; writes go on meanwhile
                except (RuntimeError, TimeoutError):
                    pass  # another node died meanwhile: whole() says which, and heals
                whole(b, g, crashes, f"after node 0 rejoined (kill {k + 1})")
            wait_write_node(p.port, g, 0)
            time.sleep(1)
        metrics = events(p.port)
    finally:
        b.stop("cluster-writer")
    # Every acknowledged PUT, looked for on node 1 after every write the cluster committed.
    conn = g.nodes[1].connect(timeout=30)
    try:
        with conn.cursor() as cur:
            cur.execute("SET SESSION wsrep_sync_wait = 1")
            cur.execute(REGISTERED)
            stored = present(list(cur.fetchall()))
    finally:
        conn.close()
    answers = load.answers
    lost, false_refusals, unknown_written = truthfulness(answers, stored)
    c = load.counts()
    q = cuts(gaps)
    result = {
        "kills": len(gaps),
        "unavailable_s": [round(gap, 3) for gap in gaps],
        "unavailable_p50_s": q["p50"],
        "unavailable_p99_s": q["p99"],
        "unavailable_max_s": max(gaps),
        "rejoin_s_p50": statistics.median(rejoins) if rejoins else None,
        **c,
        "acknowledged_lost": len(lost),
        "not_written_but_written": len(false_refusals),
        "outcome_unknown_written": unknown_written,
        "node_crashes": len(crashes),
        "longest_gap_between_acks_s": load.longest_gap(),
        "failovers": metrics.get("failovers", 0),
        "outcomes_resolved": metrics.get("outcomes_resolved", 0),
    }
    result["markdown"] = [  # a section of the report
        "",
        "## cluster-write-failover: the write node killed",
        "",
        f"One `addonreg serve` over the 3-node list (`storage_timeout` "
        f"{a.cluster_storage_timeout} s), {a.cluster_clients} clients PUTting new files back "
        f"to back; node 0 (the write node) killed with -9 {len(gaps)} times, each time "
        "started again and waited for until synced and the process writing to it again. "
        "Unavailability: from the kill to the answer of the first acknowledged PUT sent "
        "after it. Every acknowledged PUT is then looked for on node 1 by a causal read.",
        "",
        *table(
            ("kill", "writes back after (s)", "node 0 rejoined in (s)"),
            [(i + 1, gap, r) for i, (gap, r) in enumerate(zip(gaps, rejoins))],
        ),
        "",
        f"p50 {q['p50']:.2f} s, p99 {q['p99']:.2f} s (with {len(gaps)} kills: the largest). "
        f"{c['puts']} PUTs: {c['acknowledged']} acknowledged, {len(lost)} of them lost; "
        f'{c["outcome_unknown"]} "outcome unknown" (503 errno {OUTCOME_UNKNOWN}), '
        f'{c["not_written"]} "not written" (503 errno 201–203; {len(false_refusals)} of '
        f"them found written), {c['other_503']} other 503, {c['status_500']} 500, "
        f"{c['no_answer']} without an answer. The process counted {result['failovers']:.0f} "
        f"failovers and {result['outcomes_resolved']:.0f} outcomes resolved on another node. "
        f"Longest time between two acknowledged PUTs over the whole run: "
        f"{result['longest_gap_between_acks_s']:.2f} s.",
    ]
    if crashes:
        result["markdown"] += [
            "",
            f"**A node that was not killed died {len(crashes)} time(s)** (its log is in this "
            "run's `logs/`; the cluster was healed before the next kill):",
            "",
            *(f"- {c}" for c in crashes),
        ]
    return result


def truthfulness(
    answers: list[Answer], stored: set[tuple[str, str]]
) -> tuple[list[Answer], list[Answer], int]:
    """Acknowledged but absent; "not written" but present; how many "outcome unknown" present."""
    there = [(x.key[0], x.key[1]) in stored for x in answers]
    return (
        [x for x, t in zip(answers, there) if x.status in ACKNOWLEDGED and not t],
        [x for x, t in zip(answers, there) if x.status == 503 and x.errno in NOT_WRITTEN and t],
        sum(t for x, t in zip(answers, there) if x.status == 503 and x.errno == OUTCOME_UNKNOWN),
    )


def whole(b: run.Bench, g: GaleraCluster, crashes: list[str], when: str) -> None:
    """Every node running and synced; a node found dead (not node 0 between its kill and
    its restart) is recorded, its log kept in the run's logs, and the cluster healed."""
    for i, node in enumerate(g.nodes):
        if not node.running:
            kept = b.out / "logs" / f"galera-node{i}-died-{len(crashes) + 1}.log"
            text = node.log.read_text(errors="replace") if node.log.exists() else ""
            kept.write_text(text)
            signal = next(
                (line for line in text.splitlines() if "got signal" in line), "no signal logged"
            )
            crashes.append(f"node {i} found dead {when}: {signal.strip()} (`logs/{kept.name}`)")
            print(f"  node {i} died {when}: {signal.strip()}", file=sys.stderr)
    g.heal()


def wait_write_node(port: int, g: GaleraCluster, i: int) -> None:
    """Until the process writes to node ``i`` (its heartbeat's "current" write node)."""
    name = f"127.0.0.1:{g.nodes[i].port}"

    def current() -> bool:
        code, body = run.http_request(port, "GET", run.Req("/__heartbeat__"))
        nodes = json.loads(body).get("nodes", [])
        return any(n["node"] == name and n.get("current") for n in nodes)

    try:
        poll(current, f"the process writing to node {i}", timeout=30, every=0.2)
    except TimeoutError as exc:
        raise run.BenchError(str(exc)) from None


# -- 3. causal-wait cost -----------------------------------------------------------------


def causal_cost(b: run.Bench, sc: run.Scenario) -> dict[str, Any]:
    return asyncio.run(_causal_cost(b))


async def timed(call: Any, n: int) -> list[float]:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


GET_SQL = (
    f"SELECT {packed('')}, {NODE_SERIAL} FROM registrations "
    "WHERE addon_id = %s AND sha256 = UNHEX(%s)"
)  # what MySQLStore.get sends (its _records)


async def _causal_cost(b: run.Bench) -> dict[str, Any]:
    c, n, timeout = clusters(b), b.args.cluster_calls, b.args.cluster_storage_timeout
    g = c.galera()
    key = ("causal@bench.example", "ca" * 32)
    store = MySQLStore(g.url(), pool_size=2, timeout=timeout, read_url=g.node_url(1))
    await store.open()
    result: dict[str, Any] = {}
    try:
        await store.create_schema()
        await store.apply([Operation("register", key[0], key[1], "1")])
        node = store.read_nodes[0]
        await timed(lambda: store._row(node, GET_SQL, key), 50)  # warm-up
        plain, causal = [], []
        for _ in range(n // 100):  # alternated: the machine's speed drifts
            plain += await timed(lambda: store._row(node, GET_SQL, key), 100)
            causal += await timed(lambda: store._row(node, CAUSAL + GET_SQL, key), 100)
        gets = await timed(lambda: store.get(*key), n // 4)
        result.update(
            calls=len(plain),
            plain_read_ms=statistics.median(plain),
            causal_read_ms=statistics.median(causal),
            causal_added_ms=statistics.median(causal) - statistics.median(plain),
            plain_read_p99_ms=cuts(plain)["p99"],
            causal_read_p99_ms=cuts(causal)["p99"],
            store_get_ms=statistics.median(gets),
        )
        # Galera: node 1 stopped applying (FLUSH TABLES WITH READ LOCK) behind a write
        # this process saw: its causal read cannot be answered.
        behind = await behind_read(store, g.nodes[1].connect(), key, 20)
        result.update({f"galera_behind_{k}": v for k, v in behind.items()})
    finally:
        await store.close()
    g.wait_synced(size=3)
    rs = c.replica_set()
    writer = MySQLStore(rs.url(), pool_size=2, timeout=timeout)
    reader = MySQLStore(
        rs.url(), pool_size=2, timeout=timeout, read_url=rs.read_url(), max_lag=3600
    )
    for s in (writer, reader):
        await s.open()
    try:
        await writer.create_schema()
        await writer.apply([Operation("register", key[0], key[1], "1")])
        rs.wait_caught_up()
        await timed(lambda: reader.get(*key), 50)
        on_replica = await timed(lambda: reader.get(*key), n // 4)
        result["replica_get_ms"] = statistics.median(on_replica)
        behind = await behind_read(
            reader, rs.replica.connect(database=None), key, 40, writer=writer
        )
        result.update({f"replica_behind_{k}": v for k, v in behind.items()})
        result["replica_behind_added_ms"] = (
            result["replica_behind_get_ms"] - result["replica_get_ms"]
        )
    finally:
        for s in (writer, reader):
            await s.close()
        rs.close()
    result["galera_behind_first_added_ms"] = (
        result["galera_behind_first_ms"] - result["store_get_ms"]
    )
    result["markdown"] = [  # a section of the report
        "",
        "## cluster-causal-cost: what a causal read costs",
        "",
        f"In-process `MySQLStore` reading from Galera node 1 (the same one-file SELECT the "
        f"store's `get` sends), {result['calls']} calls each, alternated in runs of 100; "
        "medians (ms):",
        "",
        *table(
            ("read", "median ms", "p99 ms"),
            [
                ("plain SELECT on node 1", result["plain_read_ms"], result["plain_read_p99_ms"]),
                (
                    "`SET STATEMENT wsrep_sync_wait = 1 FOR` the same",
                    result["causal_read_ms"],
                    result["causal_read_p99_ms"],
                ),
                ("`store.get` (node 1 caught up: no causal read)", result["store_get_ms"], "—"),
            ],
        ),
        "",
        f"A causal read adds {result['causal_added_ms']:.3f} ms here (an idle cluster: "
        "the wait is one round of group communication; under writes it also waits for "
        "the node to apply what is in flight). The store does it only when a read comes "
        "back older than the serial the process has seen.",
        "",
        "When the read node is behind what the process has seen and does not catch up "
        "(it holds `FLUSH TABLES WITH READ LOCK`):",
        "",
        *table(
            (
                "read node",
                "first read ms",
                "median of the next ms",
                "read fallbacks",
                "causal waits",
            ),
            [
                (
                    "Galera node 1",
                    result["galera_behind_first_ms"],
                    result["galera_behind_get_ms"],
                    result["galera_behind_read_fallbacks"],
                    result["galera_behind_causal_waits"],
                ),
                (
                    "GTID replica",
                    result["replica_behind_first_ms"],
                    result["replica_behind_get_ms"],
                    result["replica_behind_read_fallbacks"],
                    result["replica_behind_causal_waits"],
                ),
            ],
        ),
        "",
        "A replica behind is given `CATCH_UP` (50 ms), then the read goes to the primary; "
        "on Galera the causal read gets `CAUSAL_TIMEOUT` (0.25 s) "
        f"({result['galera_behind_first_added_ms']:.0f} ms added to the first read). Either "
        "way the node is then skipped until the watcher's next look finds it past the serial "
        "the read needed: the next reads go to the write node at a plain read's cost "
        f"({result['replica_behind_added_ms']:.1f} ms added to a plain read on the replica, "
        f"{result['replica_get_ms']:.2f} ms).",
    ]
    return result


async def behind_read(
    store: MySQLStore, blocker: Any, key: tuple[str, str], n: int, writer: MySQLStore | None = None
) -> dict[str, float]:
    """Reads of ``key`` by ``store`` while its read node holds a read lock, behind a write
    ``store`` has seen (its own, or ``writer``'s observed as the bus would tell it)."""
    before = dict(store.counts)
    try:
        with blocker.cursor() as cur:
            cur.execute("FLUSH TABLES WITH READ LOCK")
        [applied] = await (writer or store).apply(
            [Operation("register", key[0], key[1], f"behind{time.monotonic_ns()}")]
        )
        store.observe(applied.record.serial)
        first = await timed(lambda: store.get(*key), 1)
        rest = await timed(lambda: store.get(*key), n)
        record = await store.get(*key)
        if record is None or record.serial < applied.record.serial:
            raise run.BenchError("a read answered older than a change the process had seen")
    finally:
        blocker.close()
    return {
        "first_ms": first[0],
        "get_ms": statistics.median(rest),
        "read_fallbacks": store.counts["read_fallbacks"] - before["read_fallbacks"],
        "causal_waits": store.counts["causal_waits"] - before["causal_waits"],
    }


# -- 4. freshness across nodes --------------------------------------------------------------


def freshness(b: run.Bench, sc: run.Scenario) -> dict[str, Any]:
    g, result, rows = clusters(b).galera(), {}, []
    (clusters(b).root / "redis").mkdir(parents=True, exist_ok=True)
    redis = PrivateRedis(clusters(b).root / "redis")
    b.cleanups.append(redis.close)
    redis.start()
    for bus, pubsub in (("feed", "feed://"), ("redis", redis.url())):
        names = (f"cluster-fresh-writer-{bus}", f"cluster-fresh-reader-{bus}")
        try:
            writer = service(b, names[0], g.url(), pubsub)  # reads on node 0, the write node
            reader = service(b, names[1], g.url(), pubsub, read=g.node_url(1))
            lags = lag_of_writes(b, writer.port, reader.port, b.args.cluster_writes, reader)
            fell_back = events(reader.port)
        finally:
            b.stop(*names)
        q = cuts(lags)
        result.update(
            {
                f"{bus}_writes": len(lags),
                f"{bus}_p50_ms": q["p50"],
                f"{bus}_p99_ms": q["p99"],
                f"{bus}_max_ms": max(lags),
                f"{bus}_reader_read_fallbacks": fell_back.get("read_fallbacks", 0),
                f"{bus}_reader_causal_waits": fell_back.get("causal_waits", 0),
            }
        )
        rows.append(
            (
                pubsub.split("?")[0],
                len(lags),
                q["p50"],
                q["p99"],
                max(lags),
                fell_back.get("causal_waits", 0),
                fell_back.get("read_fallbacks", 0),
            )
        )
    result["markdown"] = [  # a section of the report
        "",
        "## cluster-freshness: a write on one process, answered by another reading from node 1",
        "",
        "The writer reads and writes on node 0; the reader's `storage_read` is node 1. For "
        'each write: the reader caches "unknown" first, the writer\'s PUT is acknowledged, '
        "then the reader is asked every millisecond until it answers the file.",
        "",
        *table(
            (
                "pub/sub",
                "writes",
                "p50 ms",
                "p99 ms",
                "max ms",
                "reader's causal waits",
                "reader's read fallbacks",
            ),
            rows,
        ),
    ]
    return result


def lag_of_writes(b: run.Bench, writer: int, reader: int, n: int, proc: run.Target) -> list[float]:
    lags = []
    for i in range(n + 1):  # the first one only shows the reader sees the writer's writes
        key = run.new_key(b)
        run.http_request(reader, "GET", run.Req(run.file_path(key)))
        put = run.signed(b, "PUT", run.file_path(key), run.dumps({"version": key[2]}), writer)
        if run.http_request(writer, "PUT", put)[0] not in ACKNOWLEDGED:
            raise run.BenchError(f"a PUT on the writer was not acknowledged:\n{proc.tail()}")
        written = time.monotonic()
        while run.http_request(reader, "GET", run.Req(run.file_path(key)))[0] != 200:
            if time.monotonic() - written > 10:
                raise run.BenchError(
                    f"write {i + 1} not seen by the reader in 10 s:\n{proc.tail()}"
                )
            time.sleep(0.001)
        if i:
            lags.append((time.monotonic() - written) * 1000)
    return lags


# -- 5. asynchronous replication loss --------------------------------------------------------


def async_loss(b: run.Bench, sc: run.Scenario) -> dict[str, Any]:
    a, rs = b.args, clusters(b).replica_set()
    result: dict[str, Any] = {}
    rows = []
    for mode in ("async", "semi_sync"):
        lost_total = 0
        for r in range(a.cluster_loss_rounds):
            if rows:
                rs.rebuild()
            if mode == "semi_sync":
                rs.set_semi_sync(True)
            try:
                p = service(b, "cluster-replicas", rs.url())
                with PutLoad(b, p.port, a.cluster_clients) as load:
                    time.sleep(a.cluster_load_s)
                    killed = time.monotonic()
                    rs.kill_primary()
                    rs.promote()  # the runbook's steps, at once (the only replica)
                    resumed = load.first_ack_after(killed, 30)
                    time.sleep(0.5)
            finally:
                b.stop("cluster-replicas")
            stored = present(rs.replica.query(REGISTERED))
            acked = [x for x in load.answers if x.status in ACKNOWLEDGED]
            lost, false_refusals, unknown_written = truthfulness(load.answers, stored)
            before = sum(x.answered < killed for x in acked)
            c = load.counts()
            lost_total += len(lost)
            rows.append(
                (
                    mode.replace("_", "-"),
                    r + 1,
                    before,
                    len(lost),
                    f"{c['outcome_unknown']} ({unknown_written} written)",
                    f"{c['not_written']} ({len(false_refusals)} written)",
                    c["status_500"],
                    resumed if resumed is not None else "none in 30 s",
                )
            )
            print(f"  {mode} round {r + 1}: {len(lost)} of {before} lost", file=sys.stderr)
        result[f"{mode}_lost"] = lost_total
        result[f"{mode}_acknowledged_before_kill"] = sum(
            row[2] for row in rows if row[0] == mode.replace("_", "-")
        )
    result["rounds_per_mode"] = a.cluster_loss_rounds
    result["markdown"] = [  # a section of the report
        "",
        "## cluster-async-loss: the primary killed, the replica promoted",
        "",
        f"A primary with one GTID replica on loopback; one `addonreg serve` over the list "
        f"(primary, replica) under {a.cluster_clients} clients PUTting new files for "
        f"{a.cluster_load_s} s; then `kill -9` of the primary and the runbook's promotion "
        "of the replica at once (`STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only=0`); "
        "every acknowledged PUT looked for on the promoted replica. A new set for each round.",
        "",
        *table(
            (
                "replication",
                "round",
                "acknowledged before the kill",
                "acknowledged lost",
                "outcome unknown (of them written)",
                "not written (of them written)",
                "500",
                "writes back after (s)",
            ),
            rows,
        ),
        "",
        f"Asynchronous replication lost {result['async_lost']} acknowledged writes in "
        f"{a.cluster_loss_rounds} rounds here, semi-synchronous (`AFTER_SYNC`) "
        f"{result['semi_sync_lost']}. On loopback the replica receives a commit within "
        "microseconds of the primary writing it to its binary log, so the window is tiny; "
        "over a real network (a replica in another zone, a congested link, a replica "
        "catching up) an asynchronous replica can be seconds behind, and everything in "
        "that window is lost with the primary. Semi-synchronous replication closes it only "
        "while the primary waits for the replica: after `rpl_semi_sync_master_timeout` "
        "without an answer it silently falls back to asynchronous.",
    ]
    return result

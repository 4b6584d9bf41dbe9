"""Fixtures of the fault scenarios: private backends, links, a deployment, its bounds.

* ``pristine_datadir`` (session) — made once, copied by each ``mariadb``.
* ``mariadb`` / ``private_redis`` — a running private server, gone after
  the test (:mod:`tests.faults.servers`).
* ``galera_cluster`` / ``replica_set_module`` (module) — one 3-node Galera
  cluster, one primary with a GTID replica (:mod:`tests.faults.clusters`),
  started once per test module and shared by its tests; ``galera`` /
  ``replica_set`` — the same, healed before each test (killed nodes
  restarted, replication running and caught up; rebuilt on the same ports
  after a promotion or a lost quorum). Skipped without galera-4, rsync or
  mariadbd, failed instead under ``ADDONREG_REQUIRE_SERVICES=1``.
* ``links`` — factory of :class:`~tests.faults.proxy.LinkProxy` links, all
  closed after the test.
* ``serve`` — factory of ``addonreg serve`` processes over any storage URL
  (a cluster's node list, read nodes), as ``deployment`` configures them.
* ``deployment`` — factory of ``addonreg serve`` processes (conftest's
  ``server_process``) over the private MariaDB and, when given, a pub/sub
  URL, with ``storage_timeout`` = :data:`STORAGE_TIMEOUT`.

The bounds every scenario states: :data:`LIVENESS` (each answer, fault or
not) and :data:`RECOVERY` (from the fault healing to a PUT and a read
succeeding on every process, with no restart).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from tests.conftest import CREDS, ServerProcess
from tests.faults.clusters import GaleraCluster, ReplicaSet, need_galera, need_replication
from tests.faults.proxy import LinkProxy
from tests.faults.servers import PrivateMariaDB, PrivateRedis, make_pristine_datadir, need_programs

STORAGE_TIMEOUT = 1.0
"""ADDONREG_STORAGE_TIMEOUT of every process: short, so that faults are short."""
LIVENESS = 3 * STORAGE_TIMEOUT + 2
"""Generous liveness bound on every answer, in seconds (3 x storage_timeout + 2 s)."""
RECOVERY = 10.0
"""Liveness bound from a fault healing to a PUT and a read succeeding on each process."""
CLIENT_TIMEOUT = LIVENESS + 3
"""How long the load waits for an answer before recording none (a liveness violation)."""

Deployment = Callable[..., ServerProcess]


@pytest.fixture(scope="session")
def pristine_datadir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_programs("mariadb-install-db", "mariadbd")
    started = time.monotonic()
    path = make_pristine_datadir(tmp_path_factory.mktemp("mariadb-pristine") / "datadir")
    print(f"pristine MariaDB datadir made in {time.monotonic() - started:.2f} s")
    return path


@pytest.fixture
def mariadb(pristine_datadir: Path, tmp_path: Path) -> Iterator[PrivateMariaDB]:
    with PrivateMariaDB.from_pristine(pristine_datadir, tmp_path) as server:
        yield server


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    need_programs("redis-server")
    with PrivateRedis(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def galera_cluster(request: pytest.FixtureRequest) -> Iterator[GaleraCluster]:
    """A 3-node Galera cluster for the test module (killed and removed after it)."""
    need_galera()
    with GaleraCluster(request.getfixturevalue("pristine_datadir")) as cluster:
        yield cluster


@pytest.fixture
def galera(galera_cluster: GaleraCluster) -> GaleraCluster:
    """The module's Galera cluster, every node running and synced."""
    galera_cluster.heal()
    return galera_cluster


@pytest.fixture(scope="module")
def replica_set_module(request: pytest.FixtureRequest) -> Iterator[ReplicaSet]:
    """A primary with one asynchronous GTID replica for the test module."""
    need_replication()
    with ReplicaSet(request.getfixturevalue("pristine_datadir")) as replicas:
        yield replicas


@pytest.fixture
def replica_set(replica_set_module: ReplicaSet) -> ReplicaSet:
    """The module's replica set, replicating and caught up (asynchronous)."""
    replica_set_module.heal()
    return replica_set_module


@pytest.fixture
def links() -> Iterator[Callable[[int], LinkProxy]]:
    """Factory: a started link to ``127.0.0.1:<port>``."""
    made: List[LinkProxy] = []

    def make(port: int) -> LinkProxy:
        link = LinkProxy("127.0.0.1", port).start()
        made.append(link)
        return link

    yield make
    for link in made:
        link.close()


@pytest.fixture
def serve(server_process: Callable[..., ServerProcess]) -> Deployment:
    """Factory: ``serve(storage, storage_read=None, pubsub=None)`` starts one process
    over ``storage`` (any URL: a private server's, a link's, a cluster's node list),
    reading from ``storage_read`` when given, with ``pubsub`` (default local) and
    ``storage_timeout`` = :data:`STORAGE_TIMEOUT`."""

    def start(
        storage: str, storage_read: Optional[str] = None, pubsub: Optional[str] = None
    ) -> ServerProcess:
        env = {
            "ADDONREG_STORAGE": storage,
            "ADDONREG_PUBSUB": pubsub or "local://",
            "ADDONREG_STORAGE_TIMEOUT": str(STORAGE_TIMEOUT),
            "ADDONREG_HAWK_CREDENTIALS": ",".join(f"{k}:{v}" for k, v in CREDS.items()),
        }
        if storage_read:
            env["ADDONREG_STORAGE_READ"] = storage_read
        return server_process(env)

    return start


@pytest.fixture
def deployment(serve: Deployment, mariadb: PrivateMariaDB) -> Deployment:
    """Factory: ``deployment(pubsub=None, storage=None)`` starts one process over the
    private MariaDB (or ``storage``, a URL through a link) and ``pubsub`` (default local)."""

    def start(pubsub: Optional[str] = None, storage: Optional[str] = None) -> ServerProcess:
        return serve(storage or mariadb.url(), pubsub=pubsub)

    return start

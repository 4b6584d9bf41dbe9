"""Redis faults under load: killed and restarted; one process's link to it stalled or cut.

Two ``addonreg serve`` processes over one private MariaDB and one private
Redis (pub/sub and nonces), under the mixed load of :mod:`tests.faults.load`,
with every check of :mod:`tests.faults.scenario` once the fault heals
(acknowledged writes present, "not written" ones absent, no false
"unknown", each answer within 5 s, recovery within 10 s without a restart),
and the scenario's own:

* Redis killed: once it answers again, every write is taken (no nonce-store
  503 after :data:`REDIS_RECOVERY`), also on a process that sent Redis
  nothing while it was down.
* One process (B) cut off from Redis, by a stalled or a cut link: a write
  taken by the other (A) is answered by B within 1 s (the contract: "within
  1 s while a configured Redis is unreachable").
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import pytest

from addonreg.storage.testing import sha
from tests.conftest import Client, ServerProcess, Writer
from tests.faults.checker import writes_refused_after
from tests.faults.conftest import Deployment
from tests.faults.load import Key
from tests.faults.proxy import LinkProxy
from tests.faults.scenario import Run, under_load
from tests.faults.servers import PrivateMariaDB, PrivateRedis

pytestmark = [pytest.mark.mysql, pytest.mark.subprocess]

REDIS_RECOVERY = 1.0
"""Liveness bound from Redis answering again to every write being taken, seconds."""
STALE_BOUND = 1.0
"""The contract's bound on a stale answer while a configured Redis is unreachable, seconds."""


def file_path(key: Key) -> str:
    return f"/v1/addons/{key[0]}/files/{key[1]}"


async def answers_within(client: Client, key: Key, status: int, within: float, what: str) -> float:
    """Poll ``GET`` of ``key`` until it answers ``status``; the seconds it took."""
    started = time.monotonic()
    while True:
        code = (await client.get(file_path(key))).code
        if code == status:
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: still {code}, not {status}, {within} s after the write")
        await asyncio.sleep(0.02)


async def test_redis_killed_and_restarted(
    deployment: Deployment, mariadb: PrivateMariaDB, private_redis: PrivateRedis
):
    processes = [deployment(pubsub=private_redis.url()) for _ in range(2)]

    async def kill_and_restart(run: Run) -> None:
        private_redis.kill9()
        await run.load.wait_for(
            lambda: any(
                a.is_write and a.status == 503 and a.sent >= run.fault_started
                for a in run.load.answers
            ),
            10,
            "a write refused with Redis down",
        )
        await asyncio.to_thread(private_redis.start)  # empty: no nonce survives, no channel

    run = await under_load(processes, mariadb, kill_and_restart)
    refused = writes_refused_after(run.answers, run.healed + REDIS_RECOVERY)
    assert not refused, (
        f"{len(refused)} write(s) refused more than {REDIS_RECOVERY} s after "
        f"Redis answered again, e.g. {refused[0].describe(run.healed)}"
    )

    # Again with no traffic while Redis is down: the processes' connections to it are
    # all dead when the next write comes, and it must be taken all the same.
    private_redis.kill9()
    await asyncio.to_thread(private_redis.start)
    for n, process in enumerate(processes):
        writer = Writer(process.base)
        try:
            response = await writer.signed("PUT", file_path((f"quiet{n}@faults.test", sha(n))))
        finally:
            writer.close()
        assert response.code == 201, (
            f"the first write on process {n} after a quiet Redis "
            f"restart: {response.code} {response.body[:200]!r}"
        )


@pytest.mark.parametrize("fault", ["stall", "cut"])
async def test_a_process_cut_off_from_redis_sees_writes_within_1_s(
    deployment: Deployment,
    mariadb: PrivateMariaDB,
    private_redis: PrivateRedis,
    links: Callable[[int], LinkProxy],
    fault: str,
):
    link = links(private_redis.port)
    a: ServerProcess = deployment(pubsub=private_redis.url())
    b: ServerProcess = deployment(pubsub=private_redis.url(link.port))
    unknown, registered = ("stale@faults.test", sha(1)), ("stale@faults.test", sha(2))
    wa, wb = Writer(a.base), Writer(b.base)

    async def cut_b_off(run: Run) -> None:
        # B caches one file as "unknown" and one as registered.
        assert (await wb.get(file_path(unknown))).code == 404
        assert (await wa.signed("PUT", file_path(registered))).code == 201
        await answers_within(wb, registered, 200, STALE_BOUND, "B, Redis healthy")
        getattr(link, fault)()
        try:
            assert (await wa.signed("PUT", file_path(unknown))).code == 201
            await answers_within(
                wb,
                unknown,
                200,
                STALE_BOUND,
                f"B with its Redis link {fault}: a file registered on A",
            )
            assert (await wa.signed("DELETE", file_path(registered))).code == 200
            await answers_within(
                wb,
                registered,
                410,
                STALE_BOUND,
                f"B with its Redis link {fault}: a file revoked on A",
            )
        finally:
            link.restore()

    try:
        await under_load([a, b], mariadb, cut_b_off)
    finally:
        wa.close()
        wb.close()

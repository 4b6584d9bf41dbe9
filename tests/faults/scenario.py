"""The course of one fault scenario: seed, load, fault, heal, recovery, check.

:func:`under_load` seeds files, starts a :class:`~tests.faults.load.MixedLoad`
on the given processes, waits until writes are being acknowledged, runs the
test's ``fault`` coroutine (which injects the fault *and heals it*), then
waits for recovery (:data:`~tests.faults.conftest.RECOVERY`), lets the load
go on until as many writes were acknowledged again as before, stops it
and checks every answer against the database
(:func:`~tests.faults.checker.assert_consistent`, bound
:data:`~tests.faults.conftest.LIVENESS`). It returns the run, for checks of
the scenario's own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Awaitable, Callable, Dict, List, Mapping, Sequence

from tests.conftest import ServerProcess
from tests.faults.checker import assert_consistent
from tests.faults.conftest import CLIENT_TIMEOUT, LIVENESS, RECOVERY
from tests.faults.load import FULL_MIX, Answer, Key, MixedLoad, seed_files
from tests.faults.servers import PrivateMariaDB

__all__ = ["Run", "under_load"]

SEEDED = 200
WARM_WRITES = 40


@dataclasses.dataclass
class Run:
    """One scenario's record; times are ``time.monotonic()``."""

    load: MixedLoad
    seeded: Dict[Key, str]
    fault_started: float = 0.0
    healed: float = 0.0  # when ``fault`` returned
    recovery_seconds: float = 0.0
    answers: List[Answer] = dataclasses.field(default_factory=list)


async def under_load(
    processes: Sequence[ServerProcess],
    db: PrivateMariaDB,
    fault: Callable[[Run], Awaitable[None]],
    *,
    clients: int = 6,
    mix: Mapping[str, float] = FULL_MIX,
) -> Run:
    """The scenario of the module docstring; ``fault(run)`` injects the fault and heals it."""
    seeded = await seed_files(processes[0].base, SEEDED)
    load = MixedLoad(
        [p.base for p in processes], seeded, clients=clients, mix=mix, timeout=CLIENT_TIMEOUT
    ).start()
    run = Run(load, seeded)
    await load.wait_for(
        lambda: load.acknowledged() >= WARM_WRITES,
        30,
        f"{WARM_WRITES} writes acknowledged before the fault",
    )
    run.fault_started = time.monotonic()
    try:
        await fault(run)
        run.healed = time.monotonic()
        run.recovery_seconds = await load.recovery(RECOVERY)
        recovered = time.monotonic()
        await load.wait_for(
            lambda: load.acknowledged(since=recovered) >= WARM_WRITES,
            30,
            f"{WARM_WRITES} writes acknowledged after the recovery",
        )
    finally:
        run.answers = await load.stop()
    assert_consistent(run.answers, db, seeded, LIVENESS, run.fault_started)
    return run

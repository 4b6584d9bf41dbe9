"""What the answers of a load and the database must show once a fault has healed.

:func:`violations` takes every :class:`~tests.faults.load.Answer` of a run
and the registrations read from storage afterwards (:func:`stored_states`)
and lists each broken promise:

* a write answered *acknowledged* (2xx) must be in storage with its state,
  unless a later write of that file may have changed it;
* a write answered *not written* (``503`` with errno 201, 202 or 203,
  ``docs/errors.md``) changed nothing;
* a write answered *outcome unknown* (``503`` errno 204) may have been
  written or not; so may one that got no answer, which is a violation of
  its own (below);
* a write gets no other answer (a ``401`` here would be a nonce taken for a
  replay, a ``500`` a bug, a ``404`` on ``DELETE`` a lost acknowledged write);
* a read of a seeded file (registered or revoked before the fault, written
  by no one since) answers its state, or ``503``: never ``404``/``unknown``
  (the contract: a read never answers "unknown" because storage failed), and
  never another state;
* every answer came within ``liveness`` seconds of its request.

Each file is written by one client, one request at a time (see
:mod:`tests.faults.load`), so the states a file may end in follow from its
writes in the order they were sent.
"""

from __future__ import annotations

import collections
from typing import Counter, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from addonreg.status import STATUS_NAME
from tests.faults.load import NO_ANSWER, Answer, Key
from tests.faults.servers import PrivateMariaDB

__all__ = [
    "NOT_WRITTEN",
    "OUTCOME_UNKNOWN",
    "violations",
    "stored_states",
    "summary",
    "assert_consistent",
    "writes_refused_after",
]

NOT_WRITTEN = frozenset({201, 202, 203})
"""errnos of a 503 that promise nothing was written (docs/errors.md)."""
OUTCOME_UNKNOWN = 204
"""errno of a 503 for a write whose outcome the service cannot know."""
ABSENT = "absent"
_ACKNOWLEDGED = {"put": (200, 201), "delete": (200,), "bulk": (200,)}


def stored_states(db: PrivateMariaDB) -> Dict[Key, str]:
    """Every registration in storage: file -> ``registered`` or ``revoked``."""
    rows = db.query("SELECT addon_id, LOWER(HEX(sha256)), status FROM registrations")
    return {(addon_id, digest): STATUS_NAME[status] for addon_id, digest, status in rows}


def _outcome(answer: Answer) -> str:
    """What a write's answer says of it: ``acknowledged``, ``not written``, ``outcome
    unknown``, ``no answer`` (within the load's timeout) or ``unexpected``."""
    if answer.status in _ACKNOWLEDGED[answer.kind]:
        return "acknowledged"
    if answer.status == 503 and answer.errno in NOT_WRITTEN:
        return "not written"
    if answer.status == 503 and answer.errno == OUTCOME_UNKNOWN:
        return "outcome unknown"
    return "no answer" if answer.status == NO_ANSWER else "unexpected"


def violations(
    answers: Sequence[Answer],
    stored: Mapping[Key, str],
    seeded: Mapping[Key, str],
    liveness: float,
    origin: float = 0.0,
) -> List[str]:
    """Each broken promise of the module docstring, one line each (times from ``origin``)."""
    found: List[str] = []
    writes: Dict[Key, List[Answer]] = collections.defaultdict(list)
    for answer in answers:
        if answer.status == NO_ANSWER or answer.seconds > liveness:
            found.append(f"liveness bound {liveness} s: {answer.describe(origin)}")
        if answer.is_write:
            if _outcome(answer) == "unexpected":
                found.append(
                    f"a write answered neither acknowledged, nor not written, nor "
                    f"outcome unknown: {answer.describe(origin)}"
                )
            for key in answer.keys:
                writes[key].append(answer)
        else:
            found.extend(_read_violations(answer, seeded, origin))
    # One line per request, however many of its files are wrong.
    problems: Dict[Tuple[str, Optional[Answer]], List[Key]] = collections.defaultdict(list)
    for key, history in writes.items():
        problem = _file_problem(key, history, stored.get(key, ABSENT))
        if problem is not None:
            problems[problem].append(key)
    for (text, answer), keys in problems.items():
        files = _name(keys[0]) if len(keys) == 1 else f"{len(keys)} files ({_name(keys[0])}, …)"
        found.append(f"{files} {text}" + (f": {answer.describe(origin)}" if answer else ""))
    return found


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1][:8]}"


def _read_violations(answer: Answer, seeded: Mapping[Key, str], origin: float) -> Iterable[str]:
    if answer.status == 503 or answer.status == NO_ANSWER:
        return
    if not answer.states:
        yield (
            f"a read of seeded files answered neither their state nor 503: "
            f"{answer.describe(origin)}"
        )
        return
    for key, state in zip(answer.keys, answer.states):
        if state != seeded[key]:
            yield (
                f"a read answered {state!r} for a file {seeded[key]} before the fault "
                f"({_name(key)}): {answer.describe(origin)}"
            )


def _file_problem(
    key: Key, history: List[Answer], stored: str
) -> Optional[Tuple[str, Optional[Answer]]]:
    """What is wrong with ``key`` being ``stored`` after ``history`` (its writes), and the
    request to blame; None when nothing is."""
    history.sort(key=lambda a: a.sent)
    allowed: Set[str] = {ABSENT}
    for answer in history:
        state = _state(answer, key)
        outcome = _outcome(answer)
        if outcome == "acknowledged":
            allowed = {state}
        elif outcome != "not written":  # it may have been written
            allowed.add(state)
    if stored in allowed:
        return None
    not_written = [a for a in history if _outcome(a) == "not written" and _state(a, key) == stored]
    if not_written:
        return f"{stored} in storage, written by a request answered 'not written'", not_written[-1]
    acknowledged = [a for a in history if _outcome(a) == "acknowledged"]
    if acknowledged:
        return (
            f"{stored} in storage, but acknowledged as {_state(acknowledged[-1], key)}",
            acknowledged[-1],
        )
    return f"{stored} in storage, expected one of {sorted(allowed)}", None


def _state(answer: Answer, key: Key) -> str:
    """The state ``answer`` (a write) writes ``key`` to."""
    return answer.states[answer.keys.index(key)]


def summary(answers: Sequence[Answer]) -> str:
    """Counts of (kind, status, errno), for a failure message."""
    counts: Counter = collections.Counter((a.kind, a.status, a.errno) for a in answers)
    return ", ".join(
        f"{kind} {status}{f'/{errno}' if errno else ''}: {n}"
        for (kind, status, errno), n in sorted(counts.items(), key=str)
    )


def assert_consistent(
    answers: Sequence[Answer],
    db: PrivateMariaDB,
    seeded: Mapping[Key, str],
    liveness: float,
    origin: float = 0.0,
) -> None:
    """Fail with every violation (the first 15 in full) and the answers' summary."""
    found = violations(answers, stored_states(db), seeded, liveness, origin)
    if found:
        shown = "\n  ".join(found[:15])
        raise AssertionError(
            f"{len(found)} violation(s) among {len(answers)} answers "
            f"(times from the fault's start):\n  {shown}\n"
            f"answers: {summary(answers)}"
        )


def writes_refused_after(
    answers: Sequence[Answer], since: float, process: Optional[int] = None
) -> List[Answer]:
    """Writes sent at or after ``since`` (on ``process``, or any) that were not acknowledged."""
    return [
        a
        for a in answers
        if a.is_write
        and a.sent >= since
        and (process is None or a.process == process)
        and _outcome(a) != "acknowledged"
    ]

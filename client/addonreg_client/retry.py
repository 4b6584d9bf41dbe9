"""When to try a request again, and how long to wait first.

The model is Google Safe Browsing's v4 Update API (its "Request Frequency"
and "Back-Off Mode" rules), adapted to requests a person or a browser waits
for. The rules this module follows:

1. **Back off on failure, exponentially, randomly, capped** (GSB's back-off
   mode). A failed attempt — a ``503`` (or ``502``/``504`` from a proxy in
   front), or no connection at all — is retried after a wait drawn with *full
   jitter*: uniformly in ``[0, min(cap, base * 2**(n-1))]`` after the n-th
   consecutive failure. (GSB draws in ``[1, 2] * 15 min * 2**(n-1)``, capped
   at 24 h; full jitter spreads a crowd of clients better, and the base and
   cap here are seconds: ``base`` 0.1 s, ``cap`` 10 s by default.)
2. **The server's wait wins** (GSB's ``minimumWaitDuration``): no request
   of this client is sent before ``Retry-After`` has passed — not the retry,
   and not the next call's first attempt either. A wait that would end past
   a call's deadline is never slept on: that call fails at once (rule 4),
   and the wait is not remembered for the calls that follow (a hostile or
   broken ``Retry-After: 999999`` cannot stall a client for days).
3. **A success ends back-off**: the count of consecutive failures is per
   call, and starts again at zero with the next call.
4. **Bounded**: at most ``attempts`` tries per request, and every request —
   connect, sending, the answer's body, the retries and the waits — ends
   within ``deadline`` seconds of its start (a call is one request, or one
   per chunk of a bulk call); a ``Retry-After`` longer than
   what is left is not waited for — the call fails at once with
   :class:`~addonreg_client.errors.UnavailableError` carrying the server's
   wait, for the caller to schedule.

Only answers that say "try again" are retried: any other status is final,
since sending the same request again would get the same answer. Reads are
always safe to retry; writes are idempotent, and errno 204 ("outcome
unknown") is retried like any other ``503``.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable

__all__ = ["RETRY_STATUSES", "Attempts", "RetryPolicy", "parse_retry_after"]

RETRY_STATUSES = frozenset((502, 503, 504))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (the service sends seconds; a date is ignored)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 12:
        return None
    return float(value.strip())


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How many tries, the back-off between them, and each call's total ``deadline``
    in seconds (see the module docstring)."""

    attempts: int = 4
    base: float = 0.1
    cap: float = 10.0
    deadline: float = 30.0
    rng: Callable[[], float] = dataclasses.field(default=random.random, repr=False)

    def backoff(self, failures: int) -> float:
        """The wait after ``failures`` consecutive failures: full jitter, capped."""
        return self.rng() * min(self.cap, self.base * 2 ** (failures - 1))

    def start(self, clock: Callable[[], float] = time.monotonic) -> Attempts:
        return Attempts(self, clock)


class Attempts:
    """One request's tries: how long to wait before the next, or that there is none.

    Not shared between requests; :attr:`not_before` is carried between calls
    by the client (rule 2).
    """

    def __init__(self, policy: RetryPolicy, clock: Callable[[], float]) -> None:
        self.policy = policy
        self.clock = clock
        self.started = clock()
        self.failures = 0

    def wait_before(self, not_before: float) -> float:
        """Seconds to wait before this try (the server's wait, rule 2)."""
        return max(0.0, not_before - self.clock())

    def after_failure(self, retry_after: float | None, until: float | None = None) -> float | None:
        """A try failed: the wait before the next, or None when no try is left (rule 4):
        no more tries, or the wait would end past ``until`` (default: ``deadline``
        seconds after the first try).

        The wait is the larger of the back-off and the server's ``Retry-After``.
        """
        self.failures += 1
        if self.failures >= self.policy.attempts:
            return None
        wait = max(self.policy.backoff(self.failures), retry_after or 0.0)
        end = until if until is not None else self.started + self.policy.deadline
        if self.clock() + wait > end:
            return None
        return wait

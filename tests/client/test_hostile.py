"""The client and ``addonreg check`` against a hostile look-alike server (``lookalike.py``).

What must hold whatever the server does: never ``registered`` without proof
(the record of the very file asked, from the service's own answer); every
failure a typed :class:`AddonregError` — for the command, exit 3 and one line
on standard error — within the call's deadline; memory bounded (the client
stops reading at its cap). Each item of issue 19's "What was seen" that
concerns the client has its case here; each failed before the client proved
its answers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from addonreg.tools import EXIT_ERROR, EXIT_REGISTERED, EXIT_UNKNOWN
from addonreg_client import (
    AddonregError,
    AnswerTooLarge,
    AsyncLookupClient,
    BadAnswerError,
    DeadlineExceeded,
    InvalidRequestError,
    LookupClient,
    NotFoundError,
    RedirectRefused,
    RetryPolicy,
    UnavailableError,
    WriterClient,
)
from tests.client.lookalike import ADDON, OTHER_SHA, SHA, LookAlike
from tests.conftest import ROOT

pytestmark = pytest.mark.subprocess

FAST = RetryPolicy(attempts=2, base=0.01, deadline=5.0)


@pytest.fixture(scope="module")
def lookalike() -> Iterator[LookAlike]:
    server = LookAlike().start()
    yield server
    server.stop()


def client(server: LookAlike, scenario: str, **options) -> LookupClient:
    return LookupClient(server.url(scenario), retry=options.pop("retry", FAST), **options)


def check(server: LookAlike, scenario: str, addon_id: str = ADDON, sha256: str = SHA, **options):
    with client(server, scenario, **options) as c:
        return c.check(addon_id, sha256)


def addonreg_check(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_CLIENT_")}
    return subprocess.run(
        [sys.executable, "-m", "addonreg", "check", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_true_answers_are_believed(lookalike):
    """The proofs accept the service's own answers (else every test below is moot)."""
    assert check(lookalike, "valid").status == "registered"
    assert check(lookalike, "valid", sha256=OTHER_SHA).status == "unknown"
    assert check(lookalike, "redirect-home").status == "registered"  # same origin: followed
    with client(lookalike, "valid") as c:
        statuses = [r.status for r in c.check_many([(ADDON, OTHER_SHA), (ADDON, SHA)])]
    assert statuses == ["unknown", "registered"]


@pytest.mark.parametrize(
    ("scenario", "kind", "words"),
    [
        ("other-file", BadAnswerError, "answered for another file"),
        ("other-addon", BadAnswerError, "answered for another file"),
        ("revoked-in-200", BadAnswerError, "the record says 'revoked'"),
        ("registered-in-410", BadAnswerError, "the record says 'registered'"),
        ("no-sha256", BadAnswerError, "no sha256"),
        ("serial-text", BadAnswerError, "serial must be a positive integer"),
        ("serial-bool", BadAnswerError, "serial must be a positive integer"),
        ("version-escape", BadAnswerError, "version breaks the rules"),
        ("html", BadAnswerError, "not an addonreg answer: text/html"),
        ("not-json", BadAnswerError, "not valid application/json"),
        ("deep-json", BadAnswerError, "not valid application/json"),
        ("truncated", UnavailableError, "cut short"),
        ("huge-length", AnswerTooLarge, "larger than this client's cap"),
        ("huge-stream", AnswerTooLarge, "larger than this client's cap"),
        ("redirect-away", RedirectRefused, "redirect to another host refused"),
        ("route-404", NotFoundError, "no such resource"),
        ("other-404", NotFoundError, "no such resource"),
        ("plain-404", NotFoundError, "no such resource"),
    ],
)
def test_a_single_check_believes_only_a_proved_answer(lookalike, scenario, kind, words):
    with pytest.raises(kind) as raised:
        check(lookalike, scenario)
    assert words in str(raised.value)
    if scenario == "huge-stream":  # stopped at the cap (8 MiB), not the 400 MB on offer
        assert lookalike.sent and lookalike.sent[-1] < 64 << 20, lookalike.sent


@pytest.mark.parametrize(
    ("scenario", "words"),
    [
        ("reordered", "answered for another file"),
        ("short", "answered 2 results for 3 files"),
        ("long", "answered 4 results for 3 files"),
        ("bad-status", "status 'yes' is not one of"),
        ("other-file", "answered for another file"),
        ("version-number", "version must be a string or null"),
        ("results-not-list", "no list of results"),
        ("html", "not an addonreg answer: text/html"),
    ],
)
def test_a_bulk_check_believes_only_one_answer_per_file_in_order(lookalike, scenario, words):
    files = [(ADDON, OTHER_SHA), (ADDON, SHA), ("b@example.com", SHA)]
    with client(lookalike, scenario) as c, pytest.raises(BadAnswerError) as raised:
        c.check_many(files)
    assert words in str(raised.value)


@pytest.mark.parametrize("max_lookup", ["0", "-5", "%22lots%22", "true", "1.5", "null"])
def test_a_bad_max_lookup_is_a_typed_error(lookalike, max_lookup):
    with (
        client(lookalike, f"max-lookup-{max_lookup}") as c,
        pytest.raises(BadAnswerError) as raised,
    ):
        c.check_many([(ADDON, SHA)])
    assert "max_lookup must be a positive integer" in str(raised.value)


@pytest.mark.parametrize(
    ("addon_id", "sha256"),
    [
        ("evil@attacker.example", f"../../{ADDON}/files/{SHA}"),
        ("..", SHA),
        ("evil@attacker.example/../..", SHA),
        (ADDON, SHA + "?x=1"),
        (ADDON, "%2e%2e%2f" + SHA[9:]),
        ("", SHA),
        (ADDON, None),
    ],
)
def test_identifiers_are_checked_before_anything_is_sent(lookalike, addon_id, sha256):
    before = len(lookalike.requests)
    with pytest.raises(InvalidRequestError) as raised:
        check(lookalike, "valid", addon_id, sha256)
    assert raised.value.status is None and raised.value.details["field"] in ("addon_id", "sha256")
    with client(lookalike, "valid") as c, pytest.raises(InvalidRequestError) as bulk:
        c.check_many([(ADDON, SHA), (addon_id, sha256)])
    assert "file 1" in str(bulk.value)
    assert len(lookalike.requests) == before


@pytest.mark.parametrize("scenario", ["drip", "header-drip"])
def test_a_drip_is_cut_at_the_deadline(lookalike, scenario):
    """One byte every 2 s, of the body or of the head itself: the call ends at its
    deadline (3 s), not after the minutes the answer would take. The blocking
    client's own transport bounds every socket wait by the deadline. The bound
    below is a liveness bound, not a latency."""
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        check(lookalike, scenario, retry=RetryPolicy(deadline=3.0))
    assert time.monotonic() - started < 3.0 + 1.0


@pytest.mark.parametrize("scenario", ["drip", "header-drip"])
async def test_a_drip_is_cut_at_the_deadline_async(lookalike, scenario):
    started = time.monotonic()
    async with AsyncLookupClient(lookalike.url(scenario), retry=RetryPolicy(deadline=3.0)) as c:
        with pytest.raises(DeadlineExceeded):
            await c.check(ADDON, SHA)
    assert time.monotonic() - started < 3.0 + 1.0  # liveness bound


def test_retry_after_beyond_the_deadline_fails_at_once_and_is_not_slept_on_later(lookalike):
    with client(lookalike, "retry-after-once", retry=RetryPolicy(deadline=5.0)) as c:
        started = time.monotonic()
        with pytest.raises(UnavailableError) as unavailable:
            c.check(ADDON, SHA)
        assert unavailable.value.retry_after == 999999
        assert time.monotonic() - started < 1.0  # at once (liveness bound)
        started = time.monotonic()
        assert c.check(ADDON, SHA).status == "registered"  # the next call is not held
        assert time.monotonic() - started < 1.0


def writer(server: LookAlike, scenario: str) -> WriterClient:
    return WriterClient(server.url(scenario), "amo", "not-a-real-key", retry=FAST)


def test_writes_believe_only_a_proved_answer(lookalike):
    with writer(lookalike, "valid") as amo:
        assert amo.register(ADDON, SHA, "1.0").created
        assert amo.revoke(ADDON, SHA).status == "revoked"
        results = amo.write_many([{"op": "register", "addon_id": ADDON, "sha256": SHA}])
        assert [r.status for r in results] == ["registered"]
        with pytest.raises(InvalidRequestError):
            amo.register(ADDON, SHA, "bad\nversion")
        with pytest.raises(InvalidRequestError) as bad_op:
            amo.write_many([{"op": "register", "addon_id": ADDON, "sha256": SHA}, {"op": "x"}])
        assert "operation 1" in str(bad_op.value)
    for scenario, words in [
        ("other-file", "answered for another file"),
        ("revoked-in-200", "the record says 'revoked'"),
        ("html", "not an addonreg answer: text/html"),
        ("serial-text", "serial must be a positive integer"),
    ]:
        with writer(lookalike, scenario) as amo, pytest.raises(BadAnswerError) as raised:
            amo.register(ADDON, SHA)
        assert words in str(raised.value), scenario
    ops = [{"op": "register", "addon_id": ADDON, "sha256": s} for s in (SHA, OTHER_SHA)]
    for scenario, words in [
        ("reordered", "answered for another file"),
        ("short", "answered 1 results for 2 operations"),
        ("bad-status", "status 'revoked' is not one of"),
        ("serial-text", "serial must be a positive integer"),
    ]:
        with writer(lookalike, scenario) as amo, pytest.raises(BadAnswerError) as raised:
            amo.write_many(ops)
        assert words in str(raised.value), scenario


async def test_the_async_client_proves_answers_too(lookalike):
    for scenario, kind in [
        ("other-file", BadAnswerError),
        ("html", BadAnswerError),
        ("huge-stream", AnswerTooLarge),
        ("redirect-away", RedirectRefused),
        ("route-404", NotFoundError),
    ]:
        async with AsyncLookupClient(lookalike.url(scenario), retry=FAST) as c:
            with pytest.raises(kind):
                await c.check(ADDON, SHA)
    async with AsyncLookupClient(lookalike.url("reordered"), retry=FAST) as c:
        with pytest.raises(BadAnswerError):
            await c.check_many([(ADDON, SHA), (ADDON, OTHER_SHA)])
    async with AsyncLookupClient(lookalike.url("valid"), retry=FAST) as c:
        assert (await c.check(ADDON, SHA)).registered


def test_a_callers_httpx_client_is_used_and_left_open(lookalike):
    """Its redirect following and default auth do not apply: the client's bounds do."""
    with httpx.Client(follow_redirects=True, auth=("user", "secret")) as http:
        with LookupClient(lookalike.url("valid"), http=http, retry=FAST) as c:
            assert c.check(ADDON, SHA).registered
        with LookupClient(lookalike.url("redirect-away"), http=http, retry=FAST) as c:
            with pytest.raises(RedirectRefused):
                c.check(ADDON, SHA)
        assert not http.is_closed
        assert http.get(lookalike.url("valid") + "/v1/").status_code == 200


# -- the command ---------------------------------------------------------------


@pytest.mark.parametrize(
    "scenario",
    [
        "other-file",
        "other-addon",
        "revoked-in-200",
        "html",
        "truncated",
        "no-sha256",
        "serial-text",
        "deep-json",
        "huge-stream",
        "redirect-away",
        "route-404",
        "plain-404",
        "message-lines",
        "version-escape",
    ],
)
def test_the_command_exits_3_with_one_line_for_every_bad_answer(lookalike, scenario):
    done = addonreg_check("--addon-id", ADDON, "--sha256", SHA, "--server", lookalike.url(scenario))
    assert done.returncode == EXIT_ERROR, (done.stdout, done.stderr)
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("addonreg check: error: ")
    assert "Traceback" not in done.stderr and len(done.stderr) < 400


def test_the_command_path_injection_and_bad_ids_are_errors(lookalike):
    before = len(lookalike.requests)
    injected = addonreg_check(
        "--addon-id",
        "evil@attacker.example",
        "--sha256",
        f"../../{ADDON}/files/{SHA}",
        "--server",
        lookalike.url("valid"),
    )
    assert injected.returncode == EXIT_ERROR and "sha256 must be" in injected.stderr
    dots = addonreg_check("--addon-id", "..", "--sha256", SHA, "--server", lookalike.url("valid"))
    assert dots.returncode == EXIT_ERROR and "addon_id must be" in dots.stderr
    assert len(lookalike.requests) == before  # nothing was sent


@pytest.mark.parametrize(
    "server", ["ftp://127.0.0.1/", "http://", "127.0.0.1:8000", "http://h/?q=1"]
)
def test_the_command_refuses_a_server_that_is_not_an_http_url(server):
    done = addonreg_check("--addon-id", ADDON, "--sha256", SHA, "--server", server)
    assert done.returncode == EXIT_ERROR and "the server" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_command_believes_the_true_answers(lookalike):
    server = ["--server", lookalike.url("valid")]
    assert (
        addonreg_check("--addon-id", ADDON, "--sha256", SHA, *server).returncode == EXIT_REGISTERED
    )
    unknown = addonreg_check("--addon-id", ADDON, "--sha256", OTHER_SHA, *server)
    assert unknown.returncode == EXIT_UNKNOWN


@pytest.mark.parametrize("scenario", ["drip", "header-drip"])
def test_the_command_is_bounded_by_its_timeout(lookalike, scenario):
    started = time.monotonic()
    drip = addonreg_check(
        "--addon-id", ADDON, "--sha256", SHA, "--server", lookalike.url(scenario), "--timeout", "3"
    )
    assert drip.returncode == EXIT_ERROR and "deadline" in drip.stderr
    # 3 s and the interpreter's start: a liveness bound
    assert time.monotonic() - started < 3.0 + 5.0
    started = time.monotonic()
    busy = addonreg_check(
        "--addon-id", ADDON, "--sha256", SHA, "--server", lookalike.url("retry-after-always")
    )
    assert busy.returncode == EXIT_ERROR and "503" in busy.stderr
    assert time.monotonic() - started < 5.0  # at once, not after 999999 s: a liveness bound


def test_every_failure_is_an_addonreg_error(lookalike):
    """Whatever the scenario, nothing but AddonregError escapes (no KeyError, no
    JSONDecodeError, no httpx exception)."""
    for scenario in ["html", "truncated", "deep-json", "no-sha256", "serial-text", "nonsense"]:
        with pytest.raises(AddonregError):
            check(lookalike, scenario)

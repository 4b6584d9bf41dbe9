"""schemathesis ``--checks all`` against a real ``addonreg serve``: docs/openapi.yaml and
the service agree, and a finding fails the suite.

The command line runs, as an operator would (``schemathesis run … --checks all``),
every phase: the document's examples, the coverage phase (each boundary of each
schema, missing required headers, methods no path lists), fuzzing, and the
stateful phase that follows the document's links (a ``PUT``'s record to the
``GET``, ``DELETE`` and ``PUT`` of that file) and every check, the auth ones
included: a signed write must succeed, and the same request unsigned or badly
signed must be refused (``ignored_auth``). Bounded: a fixed seed and
``MAX_EXAMPLES`` examples per operation; about 20 s here.

``tests/schemathesis_hooks.py`` signs the secured operations with Hawk and
reads and writes MessagePack bodies; ``tests/schemathesis.toml`` holds the two
settings this API needs (no links inferred from field names; a ``410`` is the
contract's answer for a revoked file).

A gap found later is fixed, in the service where it breaks the contract
(``docs/api-v1.md``), in the document otherwise; never by a narrower check.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Dict, Tuple

import pytest

from tests.conftest import CREDS, ROOT, ServerProcess

pytestmark = pytest.mark.subprocess

SEED = 20261201
MAX_EXAMPLES = 15
SCHEMATHESIS = os.path.join(os.path.dirname(sys.executable), "schemathesis")
REQUEST_LINE = re.compile(
    r'^addonreg_requests_total\{endpoint="([^"]*)",method="([^"]*)",status="([0-9]+)"\} (\S+)$',
    re.M,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("schemathesis") / "db.sqlite3"
    proc = ServerProcess(
        {"ADDONREG_STORAGE": f"sqlite:///{db}", "ADDONREG_HAWK_CREDENTIALS": "amo:" + CREDS["amo"]}
    )
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def run(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Tuple[subprocess.CompletedProcess, Dict[Tuple[str, str, int], int]]:
    """The run's outcome, and what the server answered ((endpoint, method, status): count,
    from its own request counters). It runs in a directory of its own: schemathesis
    keeps the failures it found under ``.schemathesis/`` and replays them first next
    time, which would make one run depend on the last."""
    env = dict(
        os.environ,
        SCHEMATHESIS_HOOKS="tests.schemathesis_hooks",
        ADDONREG_SCHEMATHESIS_HAWK="amo:" + CREDS["amo"],
        PYTHONPATH=ROOT,
        NO_COLOR="1",
    )
    result = subprocess.run(
        [
            SCHEMATHESIS,
            "--config-file",
            os.path.join(ROOT, "tests", "schemathesis.toml"),
            "run",
            os.path.join(ROOT, "docs", "openapi.yaml"),
            "--url",
            server.base,
            "--checks",
            "all",
            "--seed",
            str(SEED),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--workers",
            "1",
        ],
        env=env,
        cwd=tmp_path_factory.mktemp("schemathesis-run"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    with urllib.request.urlopen(server.base + "/__metrics__", timeout=10) as response:
        text = response.read().decode()
    answered = {
        (endpoint, method, int(status)): int(float(count))
        for endpoint, method, status, count in REQUEST_LINE.findall(text)
    }
    return result, answered


def test_checks_all_find_nothing(run) -> None:
    result, _ = run
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5000:]
    summary = result.stdout.strip().splitlines()[-1]  # "== 942 passed … in 12.5s ==" or so
    assert "failure" not in summary and "error" not in summary, result.stdout[-20_000:]
    assert "Stateful" in result.stdout and "Coverage" in result.stdout  # every phase ran


def test_the_run_reached_each_operation_and_no_5xx(run) -> None:
    """A run that only met 400s and 401s tested little: each operation answered a 2xx
    (a secured one, so the hook's Hawk signatures hold), and nothing answered a 5xx."""
    _, answered = run
    assert not {key: n for key, n in answered.items() if key[2] >= 500}
    succeeded = {(endpoint, method) for endpoint, method, status in answered if status < 300}
    wanted = {
        ("file", "GET"),
        ("file", "HEAD"),
        ("file", "PUT"),
        ("file", "DELETE"),
        ("addon_files", "GET"),
        ("lookup", "POST"),
        ("changes", "GET"),
        ("registrations", "POST"),
        ("old_addon", "POST"),
        ("old_addons", "POST"),
        ("old_hash", "POST"),
    }
    assert wanted <= succeeded, sorted(wanted - succeeded)
    # ignored_auth sent the secured operations unsigned: refused, each of them.
    refused = {(endpoint, method) for endpoint, method, status in answered if status == 401}
    assert {("file", "PUT"), ("file", "DELETE"), ("registrations", "POST")} <= refused

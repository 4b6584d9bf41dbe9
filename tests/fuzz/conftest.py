"""The fuzzers' server: one real process for the whole package."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any, Dict, Iterable

import pytest

from tests.conftest import ROOT, ServerProcess
from tests.fuzz.harness import SEEDS, Http, Request, Server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterable[Server]:
    """One real ``addonreg serve`` over SQLite, seeded with ``addonreg import``."""
    tmp = tmp_path_factory.mktemp("fuzz")
    storage = f"sqlite:///{tmp}/fuzz.sqlite3"
    seed = tmp / "seed.jsonl"
    with open(seed, "w", encoding="utf-8") as fh:
        for i, (addon_id, sha, version) in enumerate(SEEDS):
            row: Dict[str, Any] = {"addon_id": addon_id, "sha256": sha}
            if version is not None or i % 2:
                row["version"] = version
            fh.write(json.dumps(row) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    env["ADDONREG_STORAGE"] = storage
    done = subprocess.run(
        [sys.executable, "-m", "addonreg", "import", "--quiet", str(seed)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr

    # A short shutdown_timeout: BUG-6 would otherwise hold the teardown for 10 s.
    proc = ServerProcess(
        {
            "ADDONREG_STORAGE": storage,
            "ADDONREG_PUBSUB": "local://",
            "ADDONREG_SHUTDOWN_TIMEOUT": "1",
        }
    )
    # Keep reading the server's output: a full pipe would block its logging (a hang).
    drain = threading.Thread(
        target=lambda: proc.output.extend(iter(proc.proc.stdout.readline, "")), daemon=True
    )
    drain.start()
    client = Http(proc.port, proc)
    try:
        facts = json.loads(client.send(Request("GET", "/v1/")).body)
        feed = json.loads(client.send(Request("GET", "/v1/changes?since=0&limit=10000")).body)[
            "changes"
        ]
        records = {(r["addon_id"], r["sha256"]): r for r in feed}
        expected = {(a, s.split(":")[-1].lower()): v for a, s, v in SEEDS}
        assert {k: r["version"] for k, r in records.items()} == expected
        assert all(r["status"] == "registered" for r in feed)
        serials = [r["serial"] for r in feed]
        assert serials == sorted(set(serials)) and serials[0] >= 1
        yield Server(proc, client, feed, facts)
    finally:
        client.close()
        if proc.proc.poll() is None:
            proc.proc.send_signal(signal.SIGTERM)
        try:
            code = proc.proc.wait(15)
        except subprocess.TimeoutExpired:
            code = None
        drain.join(5)
        proc.stop()
    assert code == 0, "server did not exit cleanly after the fuzzing:\n" + "".join(
        proc.output[-40:]
    )


# Strategies: identifiers --------------------------------------------------------------

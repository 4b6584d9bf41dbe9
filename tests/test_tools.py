"""The people's commands (``addonreg hash/check/register/revoke``) as real processes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from addonreg.tools import (
    EXIT_ERROR,
    EXIT_REGISTERED,
    EXIT_REVOKED,
    EXIT_UNKNOWN,
    EXIT_USAGE,
)
from tests.conftest import CREDS, ROOT

pytestmark = pytest.mark.subprocess


def addonreg(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_CLIENT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "addonreg", *args],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hash_check_register_revoke_and_their_exit_codes(tmp_path, server_process):
    proc = server_process({"ADDONREG_HAWK_CREDENTIALS": "amo:" + CREDS["amo"]})
    xpi = tmp_path / "fx.xpi"
    xpi.write_bytes(b"PK\x03\x04 not really a zip")
    digest = hashlib.sha256(xpi.read_bytes()).hexdigest()
    hashed = addonreg("hash", str(xpi))
    assert hashed.returncode == 0 and hashed.stdout == f"{digest}  {xpi}\n"

    server = ["--server", proc.base]
    check = ["check", str(xpi), "--addon-id", "fx@example.com", *server]
    unknown = addonreg(*check)
    assert unknown.returncode == EXIT_UNKNOWN, unknown.stderr
    assert unknown.stdout.startswith("unknown: fx@example.com")

    creds = {"ADDONREG_CLIENT_ID": "amo", "ADDONREG_CLIENT_KEY": CREDS["amo"]}
    registered = addonreg(
        "register", str(xpi), "--addon-id", "fx@example.com", "--version", "1.0", *server, env=creds
    )
    assert registered.returncode == 0, registered.stderr
    assert "registered (new)" in registered.stdout
    assert CREDS["amo"] not in registered.stdout + registered.stderr

    # A 404 of no such route (a wrong --server) is not "unknown": an error
    typo = addonreg(*check[:-1], proc.base + "/typo")
    assert typo.returncode == EXIT_ERROR, (typo.stdout, typo.stderr)
    assert "no such resource" in typo.stderr and typo.stdout == ""

    as_json = addonreg(*check, "--json")
    assert as_json.returncode == EXIT_REGISTERED
    assert addonreg(*check[:-1], proc.base + "/typo").returncode == EXIT_ERROR  # registered
    assert json.loads(as_json.stdout) == {
        "addon_id": "fx@example.com",
        "sha256": digest,
        "status": "registered",
        "version": "1.0",
        "serial": 1,
        "source": "service",
    }

    revoked = addonreg(
        "revoke", "--sha256", digest.upper(), "--addon-id", "fx@example.com", *server, env=creds
    )
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert addonreg(*check).returncode == EXIT_REVOKED

    # Errors: no credentials, wrong credentials, unknown file to revoke, no server
    no_creds = addonreg("register", "--sha256", digest, "--addon-id", "a@b", *server)
    assert no_creds.returncode == EXIT_ERROR and "ADDONREG_CLIENT_ID" in no_creds.stderr
    wrong = addonreg(
        "register",
        "--sha256",
        digest,
        "--addon-id",
        "a@b",
        *server,
        env={"ADDONREG_CLIENT_ID": "amo", "ADDONREG_CLIENT_KEY": "wrong"},
    )
    assert wrong.returncode == EXIT_ERROR and "401" in wrong.stderr
    missing = addonreg("revoke", "--sha256", "0" * 64, "--addon-id", "a@b", *server, env=creds)
    assert missing.returncode == EXIT_ERROR and "404" in missing.stderr
    down = addonreg(
        "check", "--sha256", digest, "--addon-id", "a@b", "--server", "http://127.0.0.1:9"
    )
    assert down.returncode == EXIT_ERROR and "cannot reach" in down.stderr
    assert addonreg("hash", str(tmp_path / "absent.xpi")).returncode == EXIT_ERROR
    bad_id = addonreg("check", "--sha256", digest, "--addon-id", "not-an-id", *server)
    # Refused before anything is sent (the contract's rules, the service's own)
    assert bad_id.returncode == EXIT_ERROR and "addon_id must be" in bad_id.stderr


def test_usage_errors_are_not_answers():
    assert addonreg("check", "--sha256", "0" * 64).returncode == EXIT_USAGE  # no --addon-id
    assert addonreg("check", "--addon-id", "a@b").returncode == EXIT_USAGE  # no file or hash
    assert (
        addonreg("register", "f.xpi", "--sha256", "0" * 64, "--addon-id", "a@b").returncode
        == EXIT_USAGE
    )
    assert addonreg("--help").stdout.count("check") >= 1

"""The client is its own distribution: ``pip install ./client`` into a fresh virtualenv
pulls none of the server's dependencies, and the client works from there.

Slow-ish (a virtualenv and a pip install from the index, pip's cache reused):
about 15 s. Skipped when the index cannot be reached, unless
``ADDONREG_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.client.lookalike import ADDON, OTHER_SHA, SHA, LookAlike
from tests.conftest import REQUIRE_SERVICES, ROOT

pytestmark = pytest.mark.subprocess

# What the server needs and a client must not get (setup.py's install_requires).
SERVER_ONLY = {
    "tornado",
    "aiomysql",
    "pymysql",
    "aiosqlite",
    "cachetools",
    "orjson",
    "tqdm",
    "redis",
    "prometheus-client",
    "uvloop",
    "numpy",
    "cryptography",
    "pyyaml",
    "addonreg",
}


def run(*args: str, **options) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, **options)


def test_the_client_installs_alone_and_works(tmp_path):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = str(env_dir / "bin" / "python")
    # A copy: pip builds in the source tree, and leaves build/ and *.egg-info there.
    source = shutil.copytree(
        Path(ROOT) / "client",
        tmp_path / "client",
        ignore=shutil.ignore_patterns("build", "*.egg-info"),
    )
    installed = run(
        python,
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "-q",
        str(source),
    )
    if installed.returncode != 0:
        if REQUIRE_SERVICES:
            pytest.fail(f"pip install ./client failed: {installed.stderr[-2000:]}")
        pytest.skip(f"pip install ./client failed (no index?): {installed.stderr[-300:]}")
    listed = run(python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check")
    names = {p["name"].lower().replace("_", "-") for p in json.loads(listed.stdout)}
    assert {"addonreg-client", "httpx", "mohawk"} <= names
    assert not names & SERVER_ONLY, names & SERVER_ONLY
    # Everything installed is the client's: httpx's own, mohawk's six, pip itself.
    assert names <= {
        "addonreg-client",
        "httpx",
        "httpcore",
        "h11",
        "anyio",
        "idna",
        "certifi",
        "sniffio",
        "typing-extensions",
        "mohawk",
        "six",
        "pip",
        "setuptools",
        "exceptiongroup",
    }, names

    # It works from there (JSON for the bulk lookup: msgpack is an extra), and the
    # server package is not importable.
    server = LookAlike().start()
    try:
        script = (
            "import addonreg_client as c\n"
            f"with c.LookupClient({server.url('valid')!r}) as client:\n"
            f"    print(client.check({ADDON!r}, {SHA!r}).status)\n"
            f"    print([r.status for r in client.check_many([({ADDON!r}, {OTHER_SHA!r})])])\n"
            "try:\n    import addonreg\nexcept ImportError:\n    print('no server')\n"
        )
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = run(python, "-c", script, cwd=tmp_path, env=env)
    finally:
        server.stop()
    assert done.stdout.split("\n")[:3] == ["registered", "['unknown']", "no server"], done.stderr
    assert sys.executable != python

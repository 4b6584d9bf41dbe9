"""The quickstarts run as their pages say, against a real server.

Each page's ``sh`` block ends with the command that runs its script; the test
runs that command line as written, with only the server URL and the
credentials (its ``export`` lines) coming from the test's environment.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.subprocess

DEV_ID, DEV_KEY = "dev", "development-key-not-secret"  # config/development.ini's


def command_of(page: str) -> str:
    """The last line of the page's first ``sh`` block: the command that runs the script."""
    with open(os.path.join(ROOT, "docs", page), encoding="utf-8") as fh:
        block = re.search(r"```sh\n(.*?)```", fh.read(), re.DOTALL)
    assert block, f"docs/{page} has no sh block"
    line = block.group(1).strip().splitlines()[-1]
    assert not line.startswith("export"), line
    return line


def run(page: str, env: dict[str, str]) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ADDONREG_")}
    full_env.update(env)
    done = subprocess.run(
        command_of(page),
        shell=True,
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_writer_then_checker_quickstarts(server_process):
    proc = server_process({"ADDONREG_HAWK_CREDENTIALS": f"{DEV_ID}:{DEV_KEY}"})
    server = {"ADDONREG_CLIENT_SERVER": proc.base}
    written = run(
        "quickstart-writer.md", dict(server, ADDONREG_CLIENT_ID=DEV_ID, ADDONREG_CLIENT_KEY=DEV_KEY)
    )
    assert "registered quickstart@example.com" in written and "(new)" in written
    assert "bulk: 20 files registered" in written and "revoked …000001" in written
    assert re.search(r"job \w+: done, 10 results", written), written
    checked = run("quickstart-checker.md", server).splitlines()
    assert checked[1] == "quickstart@example.com: registered (version 1.0)"
    assert [line.split(": ")[1] for line in checked[2:]] == ["revoked"] + ["registered"] * 4

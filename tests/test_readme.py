"""The README's examples run as written (only the server's address changes)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.subprocess


def readme_block(after_heading: str, language: str) -> str:
    with open(f"{ROOT}/README.md", encoding="utf-8") as fh:
        text = fh.read()
    section = text.split(after_heading, 1)[1]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_the_signing_example_registers_a_file(server_process):
    snippet = readme_block("### Writing: sign with Hawk", "python")
    assert "dev" in snippet and "development-key-not-secret" in snippet
    server = server_process(args=("--config", "config/development.ini", "--port", "0"))
    code = snippet.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "201"

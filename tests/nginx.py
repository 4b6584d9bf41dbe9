"""A real nginx running ``config/nginx.conf`` under a temporary prefix (for tests and bench)."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

from tests.conftest import REQUIRE_SERVICES, free_port  # noqa: F401 (free_port: for test_deploy)

ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = ROOT / "config" / "nginx.conf"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NO_STATIC_TREE = "/nonexistent/addonreg-static"  # static mode off: every GET goes to the service


def need_nginx() -> None:
    if not os.access(NGINX, os.X_OK):
        import pytest

        reason = f"nginx not installed ({NGINX}; apt-get install nginx-light)"
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (ADDONREG_REQUIRE_SERVICES=1: not skipping)")
        pytest.skip(reason)


def render_nginx_conf(
    listen: str,
    read: str,
    write: str,
    static_root: str = NO_STATIC_TREE,
    metrics_allow: str = "allow 127.0.0.1;",
    filter_root: str = NO_STATIC_TREE,
) -> str:
    """``config/nginx.conf`` with its placeholders filled, as an operator renders it."""
    text = NGINX_TEMPLATE.read_text()
    for name, value in (
        ("LISTEN", listen),
        ("READ_UPSTREAM", read),
        ("WRITE_UPSTREAM", write),
        ("STATIC_ROOT", static_root),
        ("METRICS_ALLOW", metrics_allow),
        ("FILTER_ROOT", filter_root),
    ):
        assert f"@{name}@" in text, f"config/nginx.conf lost its @{name}@ placeholder"
        text = text.replace(f"@{name}@", value)
    assert not re.search(r"@[A-Z_]+@", text), "config/nginx.conf has an unknown placeholder"
    return text


class Nginx:
    """nginx in the foreground under ``directory``; :meth:`stop` it."""

    def __init__(
        self,
        directory: Path,
        read: str,
        write: Optional[str] = None,
        static_root: str = NO_STATIC_TREE,
        port: Optional[int] = None,
        metrics_allow: str = "allow 127.0.0.1;",
        filter_root: str = NO_STATIC_TREE,
    ) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        site = self.dir / "addonreg.conf"
        site.write_text(
            render_nginx_conf(
                f"127.0.0.1:{self.port}",
                read,
                write or read,
                static_root,
                metrics_allow,
                filter_root,
            )
        )
        temp = "\n".join(
            f"    {kind}_temp_path {self.dir}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        main = self.dir / "main.conf"
        # Workers run as this user (temporary directories are 0700); nginx
        # ignores `user` when not started as root.
        main.write_text(f"""user {pwd.getpwuid(os.getuid()).pw_name};
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    access_log {self.dir}/access.log;
{temp}
    include {site};
}}
""")
        with open(self.dir / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(
                [
                    NGINX,
                    "-p",
                    str(self.dir),
                    "-e",
                    str(self.dir / "error.log"),
                    "-c",
                    str(main),
                    "-g",
                    f"daemon off; pid {self.dir}/nginx.pid;",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(
                        "nginx did not start:\n"
                        + (self.dir / "nginx.out").read_text(errors="replace")
                        + (self.dir / "error.log").read_text(errors="replace")
                    )
                time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful; workers follow the master
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)

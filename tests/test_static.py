"""Static mode: nginx serves the published tree, kept fresh by a real publisher process."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from addonreg.storage.testing import sha
from tests.conftest import CREDS, ROOT, Writer, body, wait_until
from tests.nginx import Nginx, need_nginx

pytestmark = pytest.mark.subprocess

GUID = "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"


class PublisherProcess:
    def __init__(self, directory, source_url, log_path):
        self.log_path = log_path
        self.out = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "addonreg",
                "publish",
                str(directory),
                "--follow",
                "--from",
                source_url,
                "--interval",
                "0.05",
                "--quiet",
            ],
            cwd=ROOT,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, ADDONREG_LOG_FORMAT="text"),
        )

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        code = self.proc.wait(15)
        self.out.close()
        return code


@pytest.fixture
def static(server_process, tmp_path):
    """A service, a publisher following it, and nginx in static mode in front."""
    need_nginx()
    service = server_process({"ADDONREG_HAWK_CREDENTIALS": f"amo:{CREDS['amo']}"})
    tree = tmp_path / "static"
    publishers = []

    def publisher():
        p = PublisherProcess(tree, service.base, tmp_path / "publisher.log")
        publishers.append(p)
        deadline = time.monotonic() + 20
        while not (tree / "state.json").exists() or not (tree / "current").exists():
            assert p.proc.poll() is None, p.log()
            assert time.monotonic() < deadline, p.log()
            time.sleep(0.05)
        return p

    nginx = Nginx(
        tmp_path / "nginx", read=f"127.0.0.1:{service.port}", static_root=str(tree / "current")
    )
    yield service, publisher, nginx
    nginx.stop()
    for p in publishers:
        p.stop()


def from_tree(response):
    """nginx answered from a file: its own validators, not the service's serial ETag."""
    return (
        "Last-Modified" in response.headers
        and re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', response.headers.get("ETag", "")) is not None
    )


async def seconds_until(check, what, timeout=1.0):
    """Seconds until ``check()`` came true (conftest.wait_until, timed)."""
    started = time.monotonic()
    await wait_until(check, what, timeout=timeout, every=0.01)
    return time.monotonic() - started


async def test_nginx_serves_the_tree_and_falls_through(static):
    service, start_publisher, nginx = static
    writer, front = Writer(service.base), Writer(nginx.base)
    start_publisher()
    try:
        path = f"/v1/addons/{GUID}/files/{sha(1)}"
        assert (await writer.signed("PUT", path, {"version": "1.0"})).code == 201

        async def published():
            r = await front.get(path)
            return r.code == 200 and from_tree(r)

        took = await seconds_until(published, "the file published")
        r = await front.get(path)
        direct = await writer.get(path)
        assert r.body == direct.body  # byte for byte the service's answer
        assert r.headers["Content-Type"] == direct.headers["Content-Type"]
        assert r.headers["Cache-Control"] == direct.headers["Cache-Control"]
        # the percent-encoded id finds the same file
        encoded = await front.get(
            f"/v1/addons/%7B6ba7b810-9dad-11d1-80b4-00c04fd430c8%7D/files/{sha(1)}"
        )
        assert encoded.code == 200 and from_tree(encoded) and encoded.body == direct.body
        # conditional requests answered by nginx
        etag, modified = r.headers["ETag"], r.headers["Last-Modified"]
        assert (await front.get(path, headers={"If-None-Match": etag})).code == 304
        assert (await front.get(path, headers={"If-Modified-Since": modified})).code == 304
        # the add-on's list, too
        listing = f"/v1/addons/{GUID}/files"

        async def list_published():
            return from_tree(await front.get(listing))

        await seconds_until(list_published, "the list published")
        assert (await front.get(listing)).body == (await writer.get(listing)).body
        # what is not in the tree goes to the service
        unknown = await front.get(f"/v1/addons/{GUID}/files/{sha(2)}")
        assert unknown.code == 404 and not from_tree(unknown) and body(unknown)["errno"] == 111
        upper = await front.get(f"/v1/addons/{GUID}/files/{sha(1).upper()}")
        assert upper.code == 200 and body(upper)["sha256"] == sha(1)
        # a revocation falls through to the service's 410 within a second
        assert (await writer.signed("DELETE", path)).code == 200

        async def revoked():
            return (await front.get(path)).code == 410

        assert await seconds_until(revoked, "the revocation through") <= 1.0
        assert took <= 1.0
        # writes through the static location still reach the service
        path3 = f"/v1/addons/{GUID}/files/{sha(3)}"
        r = await front.signed("PUT", path3)
        assert r.code == 201
    finally:
        writer.close()
        front.close()


async def test_a_restarted_publisher_resumes_without_a_rebuild(static):
    service, start_publisher, nginx = static
    writer, front = Writer(service.base), Writer(nginx.base)
    try:
        for n in range(5):
            assert (await writer.signed("PUT", f"/v1/addons/a@b/files/{sha(n)}")).code == 201
        first = start_publisher()

        async def published(n):
            return from_tree(await front.get(f"/v1/addons/a@b/files/{sha(n)}"))

        await seconds_until(lambda: published(4), "the first build", timeout=5)
        first.stop(signal.SIGKILL)
        assert (await writer.signed("PUT", "/v1/addons/a@b/files/" + sha(9))).code == 201
        assert (await writer.signed("DELETE", "/v1/addons/a@b/files/" + sha(0))).code == 200
        start_publisher()
        await seconds_until(lambda: published(9), "the change after the restart")
        assert (await front.get(f"/v1/addons/a@b/files/{sha(0)}")).code == 410
        log = first.log()
        assert log.count("published ") == 1, log  # the first start's full build, only
        assert "resuming from serial" in log
    finally:
        writer.close()
        front.close()

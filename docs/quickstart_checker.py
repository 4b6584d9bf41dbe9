"""Quickstart for checkers (the browser's side): hash a file, check it, check many.

Run it against a server (no credentials: reads are public)::

    export ADDONREG_CLIENT_SERVER=http://127.0.0.1:8000
    .venv/bin/python docs/quickstart_checker.py

Answers are cached as the service's ``Cache-Control`` allows and revalidated
with ``If-None-Match``; a 503 is retried after its ``Retry-After``; the
service never answers "unknown" because its storage failed.
"""

from pathlib import Path

from addonreg_client import LookupClient, server_url, sha256_file

ADDON_ID = "quickstart@example.com"
EXAMPLE = Path(__file__).with_name("quickstart.xpi")  # a tiny add-on file


def main() -> None:
    # The server from $ADDONREG_CLIENT_SERVER (default http://127.0.0.1:8000).
    with LookupClient(server_url()) as client:
        # 1. Hash the file as the service wants it: 64 lowercase hex digits.
        digest = sha256_file(EXAMPLE)
        print(f"sha256 {digest}")

        # 2. Check it: registered, revoked or unknown (and the version when known).
        result = client.check(ADDON_ID, digest)
        print(f"{ADDON_ID}: {result.status} (version {result.version})")

        # 3. Check many at once: one msgpack request per max_lookup files, in order.
        files = [(ADDON_ID, f"{n:064x}") for n in range(1, 6)]
        for item in client.check_many(files):
            print(f"…{item.sha256[-6:]}: {item.status}")


if __name__ == "__main__":
    main()

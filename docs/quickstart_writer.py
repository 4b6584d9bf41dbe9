"""Quickstart for writers (AMO's side): register and revoke files, in bulk, as a job.

Run it against a server (``make serve`` starts one with the development
credential)::

    export ADDONREG_CLIENT_SERVER=http://127.0.0.1:8000
    export ADDONREG_CLIENT_ID=dev ADDONREG_CLIENT_KEY=development-key-not-secret
    .venv/bin/python docs/quickstart_writer.py

Every call signs its request with Hawk, retries what the service asks to be
retried (a 503, errno 204 "outcome unknown" included: writes are idempotent)
and raises an :class:`addonreg_client.AddonregError` for anything else.
"""

from pathlib import Path

from addonreg_client import Operation, WriterClient, sha256_file

ADDON_ID = "quickstart@example.com"
EXAMPLE = Path(__file__).with_name("quickstart.xpi")  # a tiny add-on file


def main() -> None:
    # Server and credentials from $ADDONREG_CLIENT_SERVER/_ID/_KEY.
    with WriterClient.from_environment() as amo:
        # 1. One file: hash it, register it (idempotent: a second call changes nothing).
        digest = sha256_file(EXAMPLE)
        result = amo.register(ADDON_ID, digest, version="1.0")
        print(f"registered {result.addon_id} {result.sha256[:12]}… serial {result.serial} "
              f"({'new' if result.created else 'already known'})")

        # 2. Many at once: chunked to the service's max_write, all or nothing per chunk.
        batch = [Operation.register(ADDON_ID, f"{n:064x}", f"0.{n}") for n in range(1, 21)]
        results = amo.write_many(batch)
        print(f"bulk: {len(results)} files registered")

        # 3. Revoke one (a revoked file is "not registered"; register it again to undo).
        revoked = amo.revoke(ADDON_ID, f"{1:064x}")
        print(f"revoked …{revoked.sha256[-6:]} serial {revoked.serial}")

        # 4. A large upload as a job: answered 202 once stored, applied in the background.
        jobs = amo.write_many(batch[10:], respond_async=True)
        for job_id in jobs:
            job = amo.wait_for_job(job_id, timeout=30)
            print(f"job {job.id}: {job.status}, {len(job.results)} results")


if __name__ == "__main__":
    main()

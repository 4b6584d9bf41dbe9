"""The people's commands: ``addonreg hash``, ``check``, ``register``, ``revoke``.

They talk to a running service through :mod:`addonreg_client` (the client
distribution, re-exported as :mod:`addonreg.client`); they read no
server settings (``addonreg.cli`` hands them the command line before any
settings are loaded). ``--server`` defaults to ``$ADDONREG_CLIENT_SERVER``,
else ``http://127.0.0.1:8000``. Writers' credentials come from the
environment only — ``$ADDONREG_CLIENT_ID`` and ``$ADDONREG_CLIENT_KEY`` —
never from the command line, where other users of the machine can read them.

Exit codes (a script can ``case $?``):

== =====================================================================
0  ``check``: registered (the service's answer about this very file)
1  ``check``: revoked
2  ``check``: unknown to the service — its own ``404`` naming this file, and
   nothing else (a ``404`` of no such route, a wrong ``--server``, is 3)
3  an error: an identifier breaks the contract's rules (refused before
   anything is sent), the service refused the request (credentials) or
   could not answer within ``--timeout``, its answer broke the contract
   (another file, HTML, cut short, too large, a redirect elsewhere); or a
   file or the credentials are missing. One line on standard error, never a
   traceback.
64 the command line is wrong (usage; ``EX_USAGE``, so it is never read as
   "unknown")
== =====================================================================
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

__all__ = [
    "COMMANDS",
    "EXIT_ERROR",
    "EXIT_REGISTERED",
    "EXIT_REVOKED",
    "EXIT_UNKNOWN",
    "EXIT_USAGE",
    "add_commands",
    "main",
]

EXIT_REGISTERED, EXIT_REVOKED, EXIT_UNKNOWN, EXIT_ERROR, EXIT_USAGE = 0, 1, 2, 3, 64
DEFAULT_TIMEOUT = 10.0
_MESSAGE_MAX = 300  # characters of an error message (the server's text may be anything)
_CHECK_EXIT = {"registered": EXIT_REGISTERED, "revoked": EXIT_REVOKED, "unknown": EXIT_UNKNOWN}
COMMANDS = ("hash", "check", "register", "revoke")
# As addonreg.client names them; not imported from there, so that `addonreg serve`
# (whose parser lists these commands) does not load the client and httpx.
_SERVER_HELP = "the service (default: $ADDONREG_CLIENT_SERVER, else http://127.0.0.1:8000)"
_CREDENTIALS = "Hawk credentials from $ADDONREG_CLIENT_ID and $ADDONREG_CLIENT_KEY."


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 64, not argparse's 2 (which ``check`` uses for "unknown")."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 3600, got {value!r}")
    return seconds


def _file_arguments(parser: argparse.ArgumentParser, action: str) -> None:
    parser.add_argument("file", nargs="?", help=f"the add-on file to {action} (hashed here)")
    parser.add_argument("--sha256", help="the file's SHA-256 instead of the file")
    parser.add_argument("--addon-id", required=True, help="the add-on's id")
    parser.add_argument("--server", help=_SERVER_HELP)
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        help=f"seconds the whole command may wait for the service, retries included "
        f"(default {DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")


def add_commands(sub: Any) -> None:
    """Add the four commands to an ``add_subparsers()`` object."""
    hashing = sub.add_parser(
        "hash",
        help="print the SHA-256 of add-on files",
        description="Print each file's SHA-256, as the service wants it.",
    )
    hashing.add_argument("files", nargs="+", metavar="FILE")
    check = sub.add_parser(
        "check",
        help="is this add-on file registered? (exit 0/1/2)",
        description="Ask the service whether a file is registered: exit 0 "
        "registered, 1 revoked, 2 unknown, 3 error.",
    )
    _file_arguments(check, "check")
    register = sub.add_parser(
        "register",
        help="register a file (operators; Hawk)",
        description=f"Register a file. {_CREDENTIALS}",
    )
    _file_arguments(register, "register")
    register.add_argument("--version", dest="file_version", help="the file's add-on version")
    revoke = sub.add_parser(
        "revoke",
        help="revoke a file (operators; Hawk)",
        description=f"Revoke a file's registration. {_CREDENTIALS}",
    )
    _file_arguments(revoke, "revoke")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="addonreg", description="Check and register add-on files.")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _print(args: argparse.Namespace, result: Any, line: str) -> None:
    print(json.dumps(dataclasses.asdict(result)) if args.json else line)


def _hash(args: argparse.Namespace) -> int:
    from .client import sha256_file

    for name in args.files:
        print(f"{sha256_file(name)}  {name}")
    return 0


def _retry(args: argparse.Namespace) -> Any:
    from .client import RetryPolicy

    return RetryPolicy(deadline=args.timeout)


def _check(args: argparse.Namespace, sha256: str) -> int:
    from .client import LookupClient, server_url

    with LookupClient(server_url(args.server), retry=_retry(args)) as client:
        result = client.check(args.addon_id, sha256)
    version = f" version {result.version}" if result.version else ""
    _print(args, result, f"{result.status}: {result.addon_id} sha256:{result.sha256}{version}")
    return _CHECK_EXIT[result.status]


def _write(args: argparse.Namespace, sha256: str) -> int:
    from .client import WriterClient, environment_credentials, server_url

    creds = environment_credentials()
    with WriterClient(server_url(args.server), creds.id, creds.key, retry=_retry(args)) as client:
        if args.command == "register":
            result = client.register(args.addon_id, sha256, args.file_version)
            what = "new" if result.created else "already known"
        else:
            result = client.revoke(args.addon_id, sha256)
            what = "revoked"
    _print(
        args,
        result,
        f"{result.status} ({what}): {result.addon_id} sha256:{result.sha256} "
        f"serial {result.serial}",
    )
    return 0


def main(argv: Sequence[str]) -> int:
    """Run one command; its exit code (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    if args.command != "hash" and (args.file is None) == (args.sha256 is None):
        parser.error(f"{args.command}: give a FILE or --sha256 (one of them)")
    from .client import AddonregError, sha256_file

    try:
        if args.command == "hash":
            return _hash(args)
        sha256 = args.sha256 if args.sha256 is not None else sha256_file(args.file)
        return (_check if args.command == "check" else _write)(args, sha256)
    except AddonregError as exc:
        _error(args, str(exc))
    except OSError as exc:
        _error(args, f"{exc.filename or ''}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        _error(args, "interrupted")
    except Exception as exc:  # a bug of ours: still one line and exit 3, never "revoked"
        _error(args, f"unexpected {type(exc).__name__}: {exc}")
    return EXIT_ERROR


def _error(args: argparse.Namespace, message: str) -> None:
    """One line on standard error: the server's text may hold newlines or be huge."""
    line = "".join(c if c.isprintable() else " " for c in message)
    if len(line) > _MESSAGE_MAX:
        line = line[: _MESSAGE_MAX - 1] + "…"
    print(f"addonreg {args.command}: error: {line}", file=sys.stderr)

"""The ``addonreg`` command: ``serve``, ``initdb``, ``import``, ``publish``, ``filter``;
and the client commands of :mod:`addonreg.tools` (``hash``, ``check``, ``register``,
``revoke``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import List, Optional

from . import __version__, tools
from .config import ConfigError, Settings, load_settings
from .logs import configure_logging

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="addonreg", description="Add-on file registration service."
    )
    parser.add_argument("--version", action="version", version=f"addonreg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--config", help="ini file (default: $ADDONREG_CONFIG)")
        return p

    serve = command("serve", "run one server process")
    serve.add_argument("--port", help="port to listen on (default: setting 'port')")
    serve.add_argument("--host", help="address to listen on (default: setting 'host')")
    command("initdb", "create the storage schema and exit")
    load = command("import", "load registrations from a CSV or JSON-lines file")
    load.add_argument(
        "file",
        help="CSV with a header (addon_id,sha256 and optionally version, status), or JSON "
        "lines; - for standard input",
    )
    load.add_argument("--batch-size", type=int, default=2000, help="rows per transaction")
    load.add_argument("--quiet", action="store_true", help="no progress bar")
    publish = command("publish", "write the read resources as static files for nginx")
    publish.add_argument("directory", help="where the tree goes (nginx serves DIR/current)")
    publish.add_argument(
        "--follow",
        action="store_true",
        help="after the build, apply changes from the feed until stopped",
    )
    publish.add_argument(
        "--from",
        dest="source_url",
        metavar="URL",
        help="read the feed from a running service (default: from storage)",
    )
    publish.add_argument(
        "--rebuild",
        action="store_true",
        help="build a new tree even when a saved one can be resumed",
    )
    publish.add_argument(
        "--interval",
        type=float,
        default=0.2,
        help="seconds between polls of the feed when following",
    )
    publish.add_argument("--quiet", action="store_true", help="no progress bar")
    filt = command("filter", "build the signed offline filter, and keep it current")
    filt.add_argument(
        "directory", nargs="?", help="where DIR/filter/ goes (default: setting 'filter_dir')"
    )
    filt.add_argument(
        "--follow",
        action="store_true",
        help="after the base, publish deltas from the feed until stopped",
    )
    filt.add_argument(
        "--from",
        dest="source_url",
        metavar="URL",
        help="read the feed from a running service (default: from storage)",
    )
    filt.add_argument(
        "--generate-key",
        action="store_true",
        help="print a new signing key and its public key, and exit",
    )
    tools.add_commands(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"port": getattr(args, "port", None), "host": getattr(args, "host", None)}
    return load_settings(args.config, overrides=overrides)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in tools.COMMANDS:  # clients of a service: no server settings
        return tools.main(argv)
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"addonreg: error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        from .server import run

        return run(settings)
    configure_logging(settings.replace(log_level="WARNING"))
    if args.command == "initdb":
        from .importer import initdb

        return asyncio.run(initdb(settings))
    if args.command == "import":
        from .importer import import_file

        return asyncio.run(
            import_file(settings, args.file, batch_size=args.batch_size, progress=not args.quiet)
        )
    if args.command == "filter":
        from .filter.follow import generate_key, run_filter

        if args.generate_key:
            private, public = generate_key()
            print(f"filter_key = {private}\nfilter_public_keys = {public}")
            return 0
        directory = args.directory or settings.filter_dir
        if not directory:
            print("addonreg filter: give DIR, or set filter_dir", file=sys.stderr)
            return 2
        configure_logging(settings)
        return asyncio.run(
            run_filter(settings, directory, follow=args.follow, source_url=args.source_url)
        )
    if args.command == "publish":
        from .publisher import run_publish

        configure_logging(settings)
        return asyncio.run(
            run_publish(
                settings,
                args.directory,
                follow=args.follow,
                source_url=args.source_url,
                rebuild=args.rebuild,
                interval=args.interval,
                progress=not args.quiet,
            )
        )
    return 2  # unreachable: argparse requires a command

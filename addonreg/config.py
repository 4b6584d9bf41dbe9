"""Settings: defaults, then the ini file, then ``ADDONREG_*`` environment.

Each setting has a parser that states what it expects (a range for every
number: no timeout of 0, no window of a billion seconds); a bad value raises
:class:`ConfigError` naming the setting, the value, what was expected and
where the value came from, and start-up stops there. Unknown ``ADDONREG_*``
variables, unknown ini keys and unknown ini sections are errors too (a typo
must not silently leave a default in place), with the closest known name.
The ini file is read from ``[addonreg]`` (path from ``--config`` or
``ADDONREG_CONFIG``); a setting's variable is its name in capitals after
``ADDONREG_`` (``storage`` -> ``ADDONREG_STORAGE``).
"""

from __future__ import annotations

import base64
import configparser
import dataclasses
import difflib
import math
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]

SECTION = "addonreg"
ENV_PREFIX = "ADDONREG_"
# ADDONREG_* variables that are not settings: the config file, the launcher's
# (bin/addonreg-supervisord), the test suite's own.
OTHER_VARIABLES = ("CONFIG", "PROCESSES", "RUN_DIR", "REQUIRE_SERVICES")
OTHER_PREFIXES = ("TEST_", "BENCH_", "CLIENT_")  # CLIENT_: addonreg.client's own


class ConfigError(Exception):
    """A setting has a bad value; the message names it."""


def integer(lowest: int, highest: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        if raw.lstrip("-").isdigit() and len(raw) < 20 and lowest <= int(raw) <= highest:
            return int(raw)
        raise ValueError(f"an integer from {lowest} to {highest}")

    return parse


def seconds(lowest: float, highest: float, zero_ok: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if (value > lowest or (zero_ok and value == lowest)) and value <= highest:
            return value
        low = f">= {lowest:g}" if zero_ok else f"> {lowest:g}"
        raise ValueError(f"a number of seconds {low} and <= {highest:g}")

    return parse


def ratio(lowest: float, highest: float) -> Callable[[str], float]:
    """A plain number > ``lowest`` and <= ``highest`` (a proportion, not a duration)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if lowest < value <= highest:
            return value
        raise ValueError(f"a ratio > {lowest:g} and <= {highest:g} (0.5: half)")

    return parse


def choice(*names: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.lower() in names:
            return raw.lower()
        raise ValueError(" or ".join(names))

    return parse


def boolean(raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value in ("1", "true", "yes", "on")
    raise ValueError("true or false")


def host(raw: str) -> str:
    if not raw:
        raise ValueError(
            "an address to listen on (127.0.0.1; 0.0.0.0 or :: for every "
            "interface, which must be asked for by name)"
        )
    return raw


def storage_url(raw: str) -> str:
    expected = (
        "memory://, sqlite:///relative/path, sqlite:////absolute/path or "
        "mysql://user:password@host:port[,host:port…]/database[?pool_size=N]"
    )
    parts = urlsplit(raw)
    ok = parts.scheme == "memory" or (
        parts.scheme == "sqlite" and raw.startswith("sqlite:///") and len(raw) > len("sqlite:///")
    )
    if parts.scheme == "mysql":
        from .storage.mysql.nodes import parse_url  # the one parser of MySQL URLs

        try:
            parse_url(raw)
        except ValueError as exc:
            raise ValueError(f"{expected} ({exc})") from None
        ok = True
    if not ok:
        raise ValueError(expected)
    return raw


def read_storage_url(raw: str) -> str:
    """``storage_read``: empty (read where writes go) or a ``mysql://`` node list."""
    if raw and not raw.startswith("mysql://"):
        raise ValueError("mysql://user:password@host:port[,host:port…]/database, or nothing")
    return storage_url(raw) if raw else raw


def pubsub_url(raw: str) -> str:
    expected = (
        "feed://, local:// or redis://host:port/db[?channel=NAME&timeout=SECONDS] "
        "(rediss:// for Redis over TLS)"
    )
    scheme = urlsplit(raw).scheme
    if scheme in ("redis", "rediss"):  # the bus and the nonce store take both
        from .bus.redis import parse_url  # the one parser of Redis URLs

        try:
            parse_url(raw)
        except ValueError as exc:
            raise ValueError(f"{expected} ({exc})") from None
    elif scheme not in ("feed", "local"):
        raise ValueError(expected)
    return raw


_TOKEN = frozenset(
    "!#$%&'()*+-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"
)


def credentials(raw: str) -> Dict[str, str]:
    creds: Dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        ident, sep, key = item.partition(":")
        if not sep or not ident or not key or not _TOKEN.issuperset(ident + key):
            raise ValueError(
                "id:key pairs separated by commas; ids and keys of printable "
                "ASCII without spaces, quotes, backslashes or commas"
            )
        creds[ident] = key
    return creds


def secret(raw: str) -> str:
    if len(raw) < 16:
        raise ValueError("a secret of at least 16 characters")
    return raw


def _key_text(raw: str) -> str:
    """Key material as given, or the content of the file it names."""
    if raw and not raw.startswith("-----") and os.path.isfile(raw):
        with open(raw, encoding="ascii") as fh:
            return fh.read()
    return raw


def signing_key(raw: str) -> str:
    from .filter.index import load_private_key

    text = _key_text(raw)
    try:
        load_private_key(text)
    except ValueError:
        raise ValueError(
            "an Ed25519 private key: a PEM file, PEM text, or the base64 of its "
            "32 raw bytes (`addonreg filter --generate-key` makes one)"
        ) from None
    return text


def public_keys(raw: str) -> Tuple[str, ...]:
    from .filter.index import load_public_key, raw_public_key

    keys = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        try:
            key = load_public_key(_key_text(item))
        except ValueError:
            raise ValueError(
                "Ed25519 public keys, each the base64 of 32 raw bytes or PEM, separated by commas"
            ) from None
        keys.append(base64.b64encode(raw_public_key(key)).decode())
    return tuple(keys)


def gc_threshold(raw: str) -> Tuple[int, int, int]:
    values = tuple(raw.replace(" ", "").split(","))
    if len(values) == 3 and all(v.isdigit() and len(v) < 10 for v in values):
        return tuple(int(v) for v in values)  # type: ignore[return-value]
    raise ValueError(
        "three non-negative integers, e.g. 10000,20,20 (0 as the first turns "
        "automatic collection off)"
    )


def _field(default: Any, parse: Callable[[str], Any], doc: str, secret: bool = False) -> Any:
    metadata = {"parse": parse, "doc": doc}
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, repr=not secret, metadata=metadata)
    return dataclasses.field(default=default, repr=not secret, metadata=metadata)


DAY = 86400.0


@dataclasses.dataclass(frozen=True)
class Settings:
    """All settings, with their defaults. Documented in ``config/development.ini``."""

    storage: str = _field("sqlite:///var/addonreg.sqlite3", storage_url, "storage URL")
    pubsub: str = _field("feed://", pubsub_url, "how processes tell each other of changes")
    feed_interval: float = _field(0.025, seconds(0, 10), "how often the change feed is read")
    bus_key: str = _field("", secret, "key authenticating pub/sub messages (Redis)", True)
    host: str = _field("127.0.0.1", host, "address to listen on")
    port: int = _field(8000, integer(0, 65535), "port to listen on (0: any free port)")
    reuse_port: bool = _field(False, boolean, "share the port with other processes")
    hawk_credentials: Dict[str, str] = _field({}, credentials, "Hawk id:key pairs", True)
    max_lookup: int = _field(1000, integer(1, 100_000), "most files in one lookup")
    max_write: int = _field(5000, integer(1, 100_000), "most operations in one write")
    max_body_size: int = _field(4 * 1024 * 1024, integer(1, 1 << 30), "largest body, bytes")
    max_connections: int = _field(
        0, integer(0, 1_000_000), "open connections at most (0: the fd limit less a reserve)"
    )
    idle_timeout: float = _field(75.0, seconds(0, DAY), "idle keep-alive, and headers, timeout")
    body_timeout: float = _field(30.0, seconds(0, DAY), "longest wait for a request's body")
    cache_size: int = _field(100_000, integer(1, 100_000_000), "files cached per process")
    cache_ttl: float = _field(3600.0, seconds(0, 7 * DAY, True), "bound on a cached answer")
    cache_negative_ttl: float = _field(30.0, seconds(0, DAY, True), "lifetime of 'unknown'")
    cache_disconnected_ttl: float = _field(
        5.0, seconds(0, DAY, True), "cache lifetime while changes cannot be followed"
    )
    write_batch_size: int = _field(5000, integer(1, 100_000), "operations per transaction")
    write_queue_size: int = _field(50_000, integer(1, 10_000_000), "operations queued at most")
    write_window: float = _field(0.002, seconds(0, 1, True), "a lone write waits this long")
    shutdown_timeout: float = _field(10.0, seconds(0, 600, True), "SIGTERM: wait for requests")
    hawk_skew: int = _field(60, integer(1, 3600), "Hawk clock skew allowed, seconds")
    http_max_age: int = _field(300, integer(0, 31_536_000), "max-age of 200/410 answers")
    http_negative_max_age: int = _field(30, integer(0, 31_536_000), "max-age of 404 answers")
    retry_after: int = _field(5, integer(1, 3600), "Retry-After of a 503, seconds")
    storage_timeout: float = _field(2.0, seconds(0, 60), "longest wait for one storage call")
    storage_pool_size: int = _field(8, integer(1, 1000), "read connections (MySQL)")
    storage_read: str = _field("", read_storage_url, "where reads go (MySQL nodes)", True)
    storage_read_max_lag: float = _field(
        1.0, seconds(0, 3600), "a read node further behind is not read from"
    )
    heartbeat_timeout: float = _field(2.0, seconds(0, 60), "longest wait for a heartbeat check")
    log_level: str = _field(
        "info", choice("debug", "info", "warning", "error", "critical"), "logging level"
    )
    log_format: str = _field("json", choice("json", "text"), "json lines, or text to read")
    event_loop: str = _field("auto", choice("auto", "asyncio", "uvloop"), "the event loop")
    xheaders: bool = _field(False, boolean, "trust X-Forwarded-For/X-Real-Ip from a proxy")
    access_log: bool = _field(False, boolean, "log every request, not only 5xx")
    gc_threshold: Tuple[int, int, int] = _field(
        (10_000, 20, 20), gc_threshold, "Python's gc thresholds (gen0,gen1,gen2)"
    )
    filter_dir: str = _field("", str, "where the offline filter is (the service serves it)")
    filter_key: str = _field("", signing_key, "Ed25519 key signing the filter index", True)
    filter_public_keys: Tuple[str, ...] = _field(
        (), public_keys, "public keys of the filter, shown on /v1/"
    )
    filter_delta_interval: float = _field(60.0, seconds(0, DAY), "a new filter delta at most")
    filter_max_delta_ratio: float = _field(0.5, ratio(0, 100), "delta/base size: a new base")
    filter_max_base_age: float = _field(7 * DAY, seconds(0, 365 * DAY), "base age: a new base")

    def __post_init__(self) -> None:
        if self.storage_read and not self.storage.startswith("mysql://"):
            raise ConfigError(
                "setting 'storage_read' needs a mysql:// 'storage' (read nodes of the "
                "same database)"
            )
        if urlsplit(self.pubsub).scheme in ("redis", "rediss") and not self.bus_key:
            raise ConfigError(
                "setting 'bus_key' is required with a redis:// pub/sub "
                "($ADDONREG_BUS_KEY, the same secret in every process): it "
                "authenticates the invalidation messages"
            )

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def public(self) -> Dict[str, Any]:
        """The settings shown on ``GET /v1/`` (no secrets, no URLs with passwords)."""
        return {
            "max_lookup": self.max_lookup,
            "max_write": self.max_write,
            "max_body_size": self.max_body_size,
            "http_max_age": self.http_max_age,
            "http_negative_max_age": self.http_negative_max_age,
            "storage_backend": urlsplit(self.storage).scheme,
            "pubsub_backend": urlsplit(self.pubsub).scheme,
            "filter_public_keys": list(self.filter_public_keys),
        }


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _parse(name: str, raw: str, source: str) -> Any:
    try:
        return FIELDS[name].metadata["parse"](raw.strip())
    except ValueError as exc:
        shown = repr(raw) if FIELDS[name].repr else "(hidden)"
        if name == "hawk_credentials":  # the ids, never the keys
            shown = repr(",".join(i.partition(":")[0] + ":…" * (":" in i) for i in raw.split(",")))
        raise ConfigError(
            f"bad value for setting {name!r} ({source}): {shown}: expected {exc}"
        ) from None


def _unknown(what: str, name: str, known: Any, where: str = "") -> ConfigError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown {what} {name!r}{where}{hint}")


def load_settings(
    config_file: Optional[str] = None,
    environ: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Optional[str]]] = None,
) -> Settings:
    """Build the settings: defaults < ini file < environment < ``overrides``.

    ``config_file`` defaults to ``$ADDONREG_CONFIG``; ``overrides`` are raw
    strings from the command line.
    """
    env = os.environ if environ is None else environ
    values: Dict[str, Any] = {}
    path: Optional[str] = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except (OSError, configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path!r}: {exc}") from None
        for section in parser.sections():
            if section != SECTION:
                raise _unknown(
                    "section", section, [SECTION], f" in {path} (settings go in [{SECTION}])"
                )
        if parser.has_section(SECTION):
            for key, raw in parser.items(SECTION):
                if key not in FIELDS:
                    raise _unknown("setting", key, FIELDS, f" in [{SECTION}] of {path}")
                values[key] = _parse(key, raw, f"from {path}")
    for variable, raw in env.items():
        name = variable[len(ENV_PREFIX) :]
        if (
            not variable.startswith(ENV_PREFIX)
            or name in OTHER_VARIABLES
            or name.startswith(OTHER_PREFIXES)
        ):
            continue
        if name.lower() not in FIELDS:
            raise _unknown(
                "environment variable", variable, [ENV_PREFIX + n.upper() for n in FIELDS]
            )
        values[name.lower()] = _parse(name.lower(), raw, f"from ${variable}")
    for key, given in (overrides or {}).items():
        if given is not None:
            values[key] = _parse(key, str(given), "from the command line")
    return Settings(**values)

"""Settings: defaults, then the ini file, then ``ADDONREG_*`` environment.

Each setting has a type and a check; a bad value raises :class:`ConfigError`
naming the setting and where the value came from, and start-up stops there.
The ini file is read from ``[addonreg]`` (path from ``--config`` or
``ADDONREG_CONFIG``); the environment variable of a setting is its name in
capitals after ``ADDONREG_`` (``storage`` -> ``ADDONREG_STORAGE``).
"""

from __future__ import annotations

import configparser
import dataclasses
import os
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlsplit

__all__ = ["ConfigError", "Settings", "load_settings"]

SECTION = "addonreg"
ENV_PREFIX = "ADDONREG_"


class ConfigError(Exception):
    """A setting has a bad value; the message names it."""


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("must be a positive integer")
    return value


def _non_negative_float(raw: str) -> float:
    value = float(raw)
    if not value >= 0 or value == float("inf"):
        raise ValueError("must be a non-negative number")
    return value


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number, 0 to 65535")
    return value


def _storage_url(raw: str) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in ("memory", "sqlite", "mysql"):
        raise ValueError("must be memory://, sqlite:///path or mysql://user:pass@host:port/db")
    if scheme == "sqlite" and not raw.startswith("sqlite:///"):
        raise ValueError("a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path")
    if scheme == "mysql":
        parts = urlsplit(raw)
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("a MySQL URL needs a host and a database: mysql://user:pass@host:port/db")
        parts.port  # raises ValueError on a bad port
    return raw


def _pubsub_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("local", "redis"):
        raise ValueError("must be local:// or redis://host:port/db")
    if parts.scheme == "redis":
        parts.port
        from .bus.redis import parse_url  # the bus's own options (?channel=…&timeout=…)
        try:
            parse_url(raw)
        except ValueError as exc:
            raise ValueError(f"must be redis://host:port/db[?channel=…&timeout=…]: {exc}") \
                from None
    return raw


def _credentials(raw: str) -> Dict[str, str]:
    creds: Dict[str, str] = {}
    for item in filter(None, (p.strip() for p in raw.split(","))):
        ident, sep, key = item.partition(":")
        if not sep or not ident or not key:
            raise ValueError("must be id:key pairs separated by commas")
        creds[ident] = key
    return creds


def _log_level(raw: str) -> str:
    value = raw.upper()
    if value not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return value


def _log_format(raw: str) -> str:
    value = raw.lower()
    if value not in ("json", "text"):
        raise ValueError("must be json or text")
    return value


def _event_loop(raw: str) -> str:
    value = raw.lower()
    if value not in ("auto", "asyncio", "uvloop"):
        raise ValueError("must be auto, asyncio or uvloop")
    return value


def _gc_threshold(raw: str) -> Tuple[int, int, int]:
    try:
        values = tuple(int(x) for x in raw.replace(" ", "").split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 0:
        raise ValueError("must be three non-negative integers, e.g. 10000,20,20 "
                         "(0 as the first turns automatic collection off)")
    return values  # type: ignore[return-value]


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _field(default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return dataclasses.field(default=default, metadata={"parse": parse, "doc": doc})


@dataclasses.dataclass(frozen=True)
class Settings:
    """All settings, with their defaults. Documented in ``config/development.ini``."""

    storage: str = _field("sqlite:///addonreg.sqlite3", _storage_url, "storage URL")
    pubsub: str = _field("local://", _pubsub_url, "pub/sub URL")
    host: str = _field("127.0.0.1", str, "address to listen on")
    port: int = _field(8000, _port, "port to listen on")
    hawk_credentials: Dict[str, str] = dataclasses.field(
        default_factory=dict, repr=False,
        metadata={"parse": _credentials, "doc": "Hawk id:key pairs accepted for writes"})
    max_lookup: int = _field(1000, _positive_int, "most files in one POST /v1/lookup")
    max_write: int = _field(5000, _positive_int, "most operations in one POST /v1/registrations")
    max_body_size: int = _field(4 * 1024 * 1024, _positive_int, "largest request body, bytes")
    cache_size: int = _field(100_000, _positive_int, "entries in the per-process lookup cache")
    cache_ttl: float = _field(3600.0, _non_negative_float,
                              "safety bound on a cached positive answer, seconds")
    cache_negative_ttl: float = _field(30.0, _non_negative_float,
                                       "lifetime of a cached 'unknown', seconds")
    cache_disconnected_ttl: float = _field(
        5.0, _non_negative_float, "cache lifetime while pub/sub is down, seconds")
    write_batch_size: int = _field(5000, _positive_int, "most operations in one transaction")
    write_queue_size: int = _field(50_000, _positive_int,
                                   "most operations waiting to be written (503 above)")
    write_window: float = _field(0.002, _non_negative_float,
                                 "how long a lone write waits for others to share its commit")
    shutdown_timeout: float = _field(
        10.0, _non_negative_float, "on SIGTERM, longest wait for write requests in flight")
    hawk_skew: int = _field(60, _positive_int, "Hawk clock skew allowed, seconds")
    http_max_age: int = _field(300, int, "Cache-Control max-age of 200/410 answers")
    http_negative_max_age: int = _field(30, int, "Cache-Control max-age of 404 answers")
    retry_after: int = _field(5, _positive_int, "Retry-After of a 503, seconds")
    storage_timeout: float = _field(2.0, _non_negative_float,
                                    "longest wait for one storage call, seconds")
    storage_pool_size: int = _field(8, _positive_int, "read connections per process (MySQL)")
    heartbeat_timeout: float = _field(2.0, _non_negative_float,
                                      "longest wait for one heartbeat check, seconds")
    log_level: str = _field("INFO", _log_level, "logging level")
    log_format: str = _field("json", _log_format, "json (one object per line) or text")
    event_loop: str = _field("auto", _event_loop, "auto (uvloop when installed), asyncio, uvloop")
    xheaders: bool = _field(False, _bool, "trust X-Forwarded-For/X-Real-Ip from a proxy")
    access_log: bool = _field(False, _bool, "log every request, not only 5xx (costs throughput)")
    gc_threshold: Tuple[int, int, int] = _field(
        (10_000, 20, 20), _gc_threshold,
        "Python's gc thresholds (gen0,gen1,gen2); start-up objects are frozen out of it")

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
        }


def _defaults() -> Dict[str, Any]:
    values = {}
    for f in dataclasses.fields(Settings):
        values[f.name] = f.default_factory() if f.default is dataclasses.MISSING else f.default
    return values


def _parse(name: str, raw: str, source: str) -> Any:
    parse = Settings.__dataclass_fields__[name].metadata["parse"]
    try:
        return parse(raw.strip())
    except ValueError as exc:
        reason = str(exc) if "must" in str(exc) or "needs" in str(exc) else "not a valid value"
        raise ConfigError(f"bad value for setting {name!r} ({source}): {raw!r}: {reason}") from None


def load_settings(config_file: Optional[str] = None,
                  environ: Optional[Mapping[str, str]] = None,
                  overrides: Optional[Mapping[str, str]] = None) -> Settings:
    """Build the settings: defaults < ini file < environment < ``overrides``.

    ``config_file`` defaults to ``$ADDONREG_CONFIG``. ``overrides`` are raw
    strings from the command line. Unknown ini keys are an error too (a typo
    should not silently leave a default in place).
    """
    env = os.environ if environ is None else environ
    values = _defaults()
    known = set(values)
    path = config_file or env.get(ENV_PREFIX + "CONFIG") or None
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            with open(path, encoding="utf-8") as fh:
                parser.read_file(fh)
        except (OSError, configparser.Error) as exc:
            raise ConfigError(f"cannot read config file {path!r}: {exc}") from None
        if parser.has_section(SECTION):
            for key, raw in parser.items(SECTION):
                if key not in known:
                    raise ConfigError(f"unknown setting {key!r} in [{SECTION}] of {path}")
                values[key] = _parse(key, raw, f"from {path}")
    for key in known:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None:
            values[key] = _parse(key, raw, f"from ${ENV_PREFIX}{key.upper()}")
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _parse(key, str(raw), "from the command line")
    return Settings(**values)

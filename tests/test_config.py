"""Settings: defaults < ini file < environment < command line; bad values are named."""

import pytest

from addonreg.config import ConfigError, Settings, load_settings


def test_defaults():
    s = load_settings(environ={})
    assert s == Settings()
    # One default file for every command; processes over it follow its change feed.
    assert s.storage == "sqlite:///var/addonreg.sqlite3" and s.pubsub == "feed://"
    assert s.max_lookup == 1000 and s.max_write == 5000 and s.port == 8000
    assert s.http_negative_max_age < s.http_max_age


def test_precedence(tmp_path):
    ini = tmp_path / "a.ini"
    ini.write_text("[addonreg]\nport = 9001\nmax_lookup = 50\nstorage = memory://\n")
    s = load_settings(environ={"ADDONREG_CONFIG": str(ini), "ADDONREG_PORT": "9002"})
    assert (s.port, s.max_lookup, s.storage) == (9002, 50, "memory://")
    s = load_settings(str(ini), environ={"ADDONREG_PORT": "9002"}, overrides={"port": "9003"})
    assert s.port == 9003


def test_credentials_are_parsed_and_not_shown():
    s = load_settings(environ={"ADDONREG_HAWK_CREDENTIALS": "amo:s3cret, other:k2"})
    assert s.hawk_credentials == {"amo": "s3cret", "other": "k2"}
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.public())


@pytest.mark.parametrize(
    "name, value",
    [
        ("PORT", "eighty"),
        ("PORT", "70000"),
        ("STORAGE", "postgres://x"),
        ("STORAGE", "mysql://host-only"),
        ("STORAGE", "sqlite://relative"),
        ("PUBSUB", "kafka://x"),
        ("PUBSUB", "redis://127.0.0.1:6379/0?chanel=x"),
        ("PUBSUB", "redis://h:1/0?timeout=0"),
        ("MAX_LOOKUP", "0"),
        ("CACHE_TTL", "-1"),
        ("LOG_LEVEL", "LOUD"),
        ("HAWK_CREDENTIALS", "nokey"),
        ("XHEADERS", "maybe"),
        ("CACHE_TTL", "nan"),
        ("GC_THRESHOLD", "1000,10"),
        ("GC_THRESHOLD", "1000,-1,10"),
        ("GC_THRESHOLD", "a,b,c"),
    ],
)
def test_bad_environment_value_is_named(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={f"ADDONREG_{name}": value})
    message = str(info.value)
    assert f"'{name.lower()}'" in message and f"$ADDONREG_{name}" in message
    assert repr(value) in message


def test_redis_over_tls_is_accepted_for_the_bus_and_the_nonce_store():
    from addonreg.bus import load_bus
    from addonreg.bus.redis import RedisBus
    from addonreg.nonces import RedisNonceStore, load_nonce_store

    url = "rediss://:secret@redis.example:6380/2?channel=c&timeout=0.5"
    s = load_settings(environ={"ADDONREG_PUBSUB": url, "ADDONREG_BUS_KEY": "k" * 32})
    assert s.pubsub == url and s.public()["pubsub_backend"] == "rediss"
    assert isinstance(load_bus(s, object()), RedisBus)  # built, not connected
    assert isinstance(load_nonce_store(s.pubsub), RedisNonceStore)
    with pytest.raises(ConfigError, match="bus_key"):  # required over TLS too
        load_settings(environ={"ADDONREG_PUBSUB": url, "ADDONREG_BUS_KEY": ""})
    with pytest.raises(ConfigError, match="chanel"):  # parsed like redis://
        load_settings(environ={"ADDONREG_PUBSUB": "rediss://h:1/0?chanel=x"})


def test_filter_max_delta_ratio_is_a_ratio():
    s = load_settings(environ={"ADDONREG_FILTER_MAX_DELTA_RATIO": "0.25"})
    assert s.filter_max_delta_ratio == 0.25
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"ADDONREG_FILTER_MAX_DELTA_RATIO": "0"})
    assert "a ratio > 0 and <= 100" in str(info.value)
    assert "seconds" not in str(info.value)


def test_gc_threshold_is_parsed():
    assert load_settings(environ={}).gc_threshold == (10_000, 20, 20)
    assert load_settings(environ={"ADDONREG_GC_THRESHOLD": "700, 10,10"}).gc_threshold == (
        700,
        10,
        10,
    )


def test_bad_ini_value_and_unknown_key(tmp_path):
    ini = tmp_path / "a.ini"
    ini.write_text("[addonreg]\nmax_write = lots\n")
    with pytest.raises(ConfigError, match=r"'max_write'.*a\.ini"):
        load_settings(str(ini), environ={})
    ini.write_text("[addonreg]\nmax_wirte = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'max_wirte'"):
        load_settings(str(ini), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(str(tmp_path / "missing.ini"), environ={})


def test_shipped_config_files_load():
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    dev = load_settings(os.path.join(root, "config", "development.ini"), environ={})
    assert dev.storage.startswith("sqlite:///")
    # Production's secrets come from the environment.
    prod = load_settings(
        os.path.join(root, "config", "production.ini"),
        environ={"ADDONREG_BUS_KEY": "a-secret-from-the-environment"},
    )
    assert prod.storage.startswith("mysql://") and prod.pubsub.startswith("redis://")

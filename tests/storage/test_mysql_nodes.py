"""Node lists in MySQL storage URLs, and the settings that name read nodes."""

import pytest

from addonreg.config import ConfigError, load_settings
from addonreg.storage import describe_storage
from addonreg.storage.mysql.nodes import ClusterURL, NodeAddress, parse_url


def test_one_node_as_before():
    assert parse_url("mysql://u:p%40ss@db.example:3307/reg?pool_size=4") == ClusterURL(
        "u", "p@ss", (NodeAddress("db.example", 3307),), "reg", 4
    )
    assert parse_url("mysql://db/reg").nodes == (NodeAddress("db", 3306),)
    assert parse_url("mysql://db/reg").user == "root"


def test_a_node_list_keeps_its_order():
    url = parse_url("mysql://u:p@h1:3306,h2:3307,[::1]:3308/reg")
    assert [str(n) for n in url.nodes] == ["h1:3306", "h2:3307", "::1:3308"]
    assert (url.user, url.password, url.database) == ("u", "p", "reg")


@pytest.mark.parametrize(
    "url, why",
    [
        ("mysql://u@h1:3306,h1:3306/reg", "named twice"),
        ("mysql://u@h1:99999/reg", "bad node"),
        ("mysql://u@h1:3306,/reg", "bad node"),
        ("mysql://u@h1:abc/reg", "bad node"),
        ("mysql://u@h1:3306", "expected"),
        ("mysql://u@h1/reg?pool_size=0", "pool_size"),
        ("mysql://u@h1/reg?pool=3", "unknown option"),
        ("postgres://h1/reg", "expected"),
    ],
)
def test_bad_urls_say_what_is_wrong(url, why):
    with pytest.raises(ValueError, match=why):
        parse_url(url)


def test_storage_is_described_without_its_password():
    assert describe_storage("mysql://u:secret@h1:3306,h2:3307/reg") == "MySQL u@h1:3306,h2:3307/reg"


def test_settings_take_node_lists_and_read_nodes():
    settings = load_settings(
        environ={
            "ADDONREG_STORAGE": "mysql://u:p@h1:3306,h2:3306/reg",
            "ADDONREG_STORAGE_READ": "mysql://u:p@h2:3306/reg",
            "ADDONREG_STORAGE_READ_MAX_LAG": "0.5",
        }
    )
    assert settings.storage_read == "mysql://u:p@h2:3306/reg"
    assert settings.storage_read_max_lag == 0.5
    assert "p@h2" not in repr(settings)  # it carries a password


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ADDONREG_STORAGE": "mysql://u@h1:3306,h1:3306/reg"}, "named twice"),
        (
            {"ADDONREG_STORAGE": "sqlite:///x.db", "ADDONREG_STORAGE_READ": "mysql://h2/reg"},
            "needs a mysql:// 'storage'",
        ),
        (
            {"ADDONREG_STORAGE": "mysql://h1/reg", "ADDONREG_STORAGE_READ": "sqlite:///x.db"},
            "storage_read",
        ),
        ({"ADDONREG_STORAGE_READ_MAX_LAG": "-1"}, "storage_read_max_lag"),
    ],
)
def test_bad_cluster_settings_stop_start_up(env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=env)

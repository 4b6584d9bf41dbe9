"""The identifier rules of the contract."""

import pytest
from hypothesis import given, strategies as st

from addonreg.ids import InvalidIdentifier, check_version, is_addon_id, normalize_sha256

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize("value", [
    "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}", "{6BA7B810-9DAD-11D1-80B4-00C04FD430C8}",
    "fx@example.com", "@example.com", "a.b_c-d@x-y.z", "A@B", "x" * 200 + "@" + "y" * 54,
])
def test_valid_addon_ids(value):
    assert is_addon_id(value)


@pytest.mark.parametrize("value", [
    "", "fx", "fx@", "a b@c", "a@b/c", "{6ba7b810-9dad-11d1-80b4-00c04fd430c}", "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
    "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}x", "a@b\n", "é@b", "a@b@c", "x" * 250 + "@b.com",
    None, 5, b"a@b",
])
def test_invalid_addon_ids(value):
    assert not is_addon_id(value)


def test_sha256_forms():
    assert normalize_sha256(HEX) == HEX
    assert normalize_sha256(HEX.upper()) == HEX
    assert normalize_sha256("sha256:" + HEX) == HEX
    assert normalize_sha256("SHA256:" + HEX.upper()) == HEX
    for bad in (HEX[:-1], HEX + "0", "g" + HEX[1:], HEX[:32] + " " + HEX[33:], "md5:" + HEX[:32],
                "sha256:" + HEX[:-1], "sha256:sha256:" + HEX, "\uff10" + HEX[1:], " " + HEX[1:],
                "sha256 " + HEX, None, 1, b"0" * 64):
        assert normalize_sha256(bad) is None, bad


@given(st.text(max_size=80))
def test_sha256_matches_the_rule(text):
    import re
    expected = re.fullmatch(r"(?:sha256:)?([0-9a-fA-F]{64})", text, re.IGNORECASE | re.ASCII)
    assert normalize_sha256(text) == (expected.group(1).lower() if expected else None)


def test_versions():
    assert check_version(None) is None and check_version("1.0 β") == "1.0 β"
    for bad in ("", "a\x00", "a\n", "\x7f", "v" * 256, 1):
        with pytest.raises(InvalidIdentifier):
            check_version(bad)

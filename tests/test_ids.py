"""The identifier rules of the contract."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from addonreg.ids import InvalidIdentifier, check_version, is_addon_id, normalize_sha256

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    "value",
    [
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
        "{6BA7B810-9DAD-11D1-80B4-00C04FD430C8}",
        "fx@example.com",
        "@example.com",
        "a.b_c-d@x-y.z",
        "A@B",
        "x" * 200 + "@" + "y" * 54,
    ],
)
def test_valid_addon_ids(value):
    assert is_addon_id(value)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "fx",
        "fx@",
        "a b@c",
        "a@b/c",
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c}",
        "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}x",
        "a@b\n",
        "é@b",
        "a@b@c",
        "x" * 250 + "@b.com",
        None,
        5,
        b"a@b",
    ],
)
def test_invalid_addon_ids(value):
    assert not is_addon_id(value)


def test_sha256_forms():
    assert normalize_sha256(HEX) == HEX
    assert normalize_sha256(HEX.upper()) == HEX
    assert normalize_sha256("sha256:" + HEX) == HEX
    assert normalize_sha256("SHA256:" + HEX.upper()) == HEX
    for bad in (
        HEX[:-1],
        HEX + "0",
        "g" + HEX[1:],
        HEX[:32] + " " + HEX[33:],
        "md5:" + HEX[:32],
        "sha256:" + HEX[:-1],
        "sha256:sha256:" + HEX,
        "\uff10" + HEX[1:],
        " " + HEX[1:],
        "sha256 " + HEX,
        None,
        1,
        b"0" * 64,
    ):
        assert normalize_sha256(bad) is None, bad


@given(st.text(max_size=80))
def test_sha256_matches_the_rule(text):
    import re

    expected = re.fullmatch(r"(?:sha256:)?([0-9a-fA-F]{64})", text, re.IGNORECASE | re.ASCII)
    assert normalize_sha256(text) == (expected.group(1).lower() if expected else None)


def test_versions():
    assert check_version(None) is None and check_version("1.0 β") == "1.0 β"
    with pytest.raises(InvalidIdentifier):
        check_version("1.0\ud800")  # a lone surrogate: no UTF-8 storage holds it
    for bad in ("", "a\x00", "a\n", "\x7f", "v" * 256, 1):
        with pytest.raises(InvalidIdentifier):
            check_version(bad)


# valid_keys: the bulk lookup's all-at-once check must agree with the per-item one.

from hypothesis import settings  # noqa: E402

from addonreg.ids import check_addon_id, check_sha256, valid_keys  # noqa: E402

_IDS = st.one_of(
    st.sampled_from(
        [
            "a@b",
            "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}",
            "@x",
            "A.b_c-d@E",
            "a@b\nc@d",
            "a@b\n",
            "",
            "a",
            "a@",
            "a@b ",
            "é@b",
            "a" * 254 + "@b",
            "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}\n",
        ]
    ),
    st.text(alphabet="ab@.{}-\n_ 0", max_size=12),
    st.integers(),
    st.none(),
)
_HASHES = st.one_of(
    st.sampled_from(
        [
            "a" * 64,
            "A" * 64,
            "0" * 64,
            "sha256:" + "b" * 64,
            "a" * 63,
            "a" * 65,
            "g" * 64,
            "a" * 62 + " a",
            " " + "a" * 63,
            "a" * 63 + "\n",
            "٠" * 64,
        ]
    ),
    st.text(alphabet="0123456789abcdefABCDEF \n", min_size=60, max_size=66),
    st.integers(),
)


def _one_by_one(ids, hashes):
    try:
        return [(check_addon_id(a), check_sha256(h)) for a, h in zip(ids, hashes)]
    except InvalidIdentifier:
        return None


@settings(max_examples=400, deadline=None)
@given(pairs=st.lists(st.tuples(_IDS, _HASHES), min_size=1, max_size=6))
def test_valid_keys_agrees_with_the_per_item_checks(pairs):
    ids, hashes = [p[0] for p in pairs], [p[1] for p in pairs]
    fast = valid_keys(ids, hashes)
    if fast is not None:  # all valid: exactly what the per-item checks give
        assert fast == _one_by_one(ids, hashes)
    elif _one_by_one(ids, hashes) is not None:
        # None with all valid is allowed only for what the fast path leaves to
        # the slow one: the "sha256:" prefix.
        assert any(isinstance(h, str) and len(h) == 71 for h in hashes)


def test_valid_keys_normalises_case_and_refuses_a_newline_inside_an_id():
    assert valid_keys(["a@b"], ["AB" * 32]) == [("a@b", "ab" * 32)]
    assert valid_keys(["a@b\nc@d"], ["ab" * 32]) is None
    assert valid_keys(["a@b", "c@d"], ["ab" * 32, "cd" * 31 + " c"]) is None

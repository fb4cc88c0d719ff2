from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aptmesh.bencode import MAX_DIGITS, BencodeError, Value, decode, encode

values: st.SearchStrategy[Value] = st.recursive(
    st.integers(min_value=1 - 10**MAX_DIGITS, max_value=10**MAX_DIGITS - 1)
    | st.binary(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.binary(max_size=10), inner, max_size=5)
    ),
    max_leaves=30,
)


@given(values)
def test_round_trip(value: Value) -> None:
    assert decode(encode(value)) == value


def test_literal() -> None:
    assert encode({b"b": [1, b"x"], b"a": -3}) == b"d1:ai-3e1:bli1e1:xee"


@pytest.mark.parametrize(
    "data",
    [
        b"i03e",
        b"i-0e",
        b"ie",
        b"3:ab",
        b"d1:bi1e1:ai2ee",
        b"d1:ai1e1:ai1ee",
        b"i1ei2e",
        b"x",
        b"05:abcde",
    ],
)
def test_non_canonical_input_is_refused(data: bytes) -> None:
    with pytest.raises(BencodeError):
        decode(data)


def test_depth_is_bounded() -> None:
    with pytest.raises(BencodeError, match="deep"):
        decode(b"l" * 100 + b"e" * 100)


def test_huge_integers_and_lengths_are_refused_before_int_sees_them() -> None:
    for data in (b"i" + b"9" * 100_000 + b"e", b"9" * 100_000 + b":x", b"i-" + b"1" * 33 + b"e"):
        with pytest.raises(BencodeError):
            decode(data)
    assert decode(b"i" + b"9" * MAX_DIGITS + b"e") == 10**MAX_DIGITS - 1

"""Ids: prefix, 26 Crockford base32 characters, ordered by creation time."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from maintlink import ids

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def decode(text: str) -> int:
    value = 0
    for char in text:
        value = value * 32 + CROCKFORD.index(char)
    return value


@given(ms=st.integers(0, 2**48 - 1), rand=st.integers(0, 2**80 - 1))
def test_an_id_encodes_its_millisecond_and_random_bits(ms: int, rand: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ids, "_last_ms", -1)
        mp.setattr(time, "time_ns", lambda: ms * 1_000_000 + 999_999)
        mp.setattr(ids.secrets, "randbits", lambda _bits: rand)
        value = ids.new_id("evt")
    prefix, body = value.split("_")
    assert prefix == "evt" and len(body) == 26 and set(body) <= set(CROCKFORD)
    assert decode(body) == (ms << 80) | rand


def test_ids_sort_in_creation_order_within_one_millisecond() -> None:
    made = [ids.new_id("att") for _ in range(2000)]
    assert made == sorted(made) and len(set(made)) == len(made)

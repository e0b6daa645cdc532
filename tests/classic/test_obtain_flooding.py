"""obtain() and deliver() rebuild sets, frozensets and dict keys with the decoder's
hash-flooding guard (issue 13 item 17): thousands of distinct ints sharing one hash are
refused instead of costing O(n²) comparisons; ordinary data still copies."""

from __future__ import annotations

import time

import pytest

from rpc_classic import ClassicConnection, deliver, obtain

MODULUS = "(2**61 - 1)"  # int hashes are the value modulo this (not randomised)
COUNT = 1500


@pytest.mark.parametrize(
    "expression",
    [
        f"{{k * {MODULUS} + 7 for k in range(1, {COUNT})}}",
        f"[frozenset(k * {MODULUS} + 7 for k in range(1, {COUNT}))]",  # in a list: it crosses by reference
        f"{{k * {MODULUS} + 7: None for k in range(1, {COUNT})}}",
        f"[{{k * {MODULUS} + 7 for k in range(1, {COUNT})}}]",
    ],
    ids=["set", "frozenset", "dict", "nested"],
)
def test_obtain_refuses_hash_flooding(thread_conn: ClassicConnection, expression: str) -> None:
    proxy = thread_conn.eval(expression)
    started = time.monotonic()
    with pytest.raises(ValueError, match="hash"):
        obtain(proxy)
    assert time.monotonic() - started < 5.0  # refused before building, not after O(n²) work


def test_deliver_is_guarded_on_the_peer(thread_conn: ClassicConnection) -> None:
    flood = {k * (2**61 - 1) + 7 for k in range(1, COUNT)}
    with pytest.raises(ValueError, match="hash"):
        deliver(thread_conn, flood)


def test_ordinary_sets_and_dicts_still_copy(thread_conn: ClassicConnection) -> None:
    value = obtain(thread_conn.eval(f"[{{k for k in range({COUNT})}}, {{k: str(k) for k in range({COUNT})}}]"))
    assert value == [set(range(COUNT)), {k: str(k) for k in range(COUNT)}]
    few = obtain(thread_conn.eval(f"[frozenset(k * {MODULUS} + 7 for k in range(1, 200))]"))  # a few collisions are fine
    assert few == [frozenset(k * (2**61 - 1) + 7 for k in range(1, 200))]

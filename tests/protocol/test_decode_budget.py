"""The decoder's per-frame budget (issue 13 item 5): decoding costs a small constant factor of
the encoded size, whatever shape a peer chooses.

A frame of 5-byte empty sets used to cost ~45 times its size (each empty set is ~216 bytes).
Every container the decoder builds is charged its approximate memory against
``decode_budget_base + decode_budget_factor * len(encoded)``; going over is a
``RemoteProtocolError``. Ordinary data of every container kind stays well within it.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import wire

SET, FROZENSET, LIST, DICT, TUPLE32, TUPLE8, NONE, SLICE = 0x1E, 0x1A, 0x1C, 0x1D, 0x19, 0x18, 0x00, 0x1B


def many(count: int, item: bytes) -> bytes:
    """A TUPLE32 of ``count`` copies of the encoded ``item``."""
    return bytes([TUPLE32]) + struct.pack("<I", count) + item * count


EMPTY_SET = bytes([SET]) + struct.pack("<I", 0)
EMPTY_FROZENSET = bytes([FROZENSET]) + struct.pack("<I", 0)
EMPTY_LIST = bytes([LIST]) + struct.pack("<I", 0)
EMPTY_DICT = bytes([DICT]) + struct.pack("<I", 0)
ONE_TUPLE_OF_NONE = bytes([TUPLE8, 1, NONE])
SLICE_OF_NONES = bytes([SLICE, NONE, NONE, NONE])


@pytest.mark.parametrize(
    "item",
    [EMPTY_SET, EMPTY_FROZENSET, EMPTY_DICT + EMPTY_SET, ONE_TUPLE_OF_NONE],
    ids=["empty-sets", "empty-frozensets", "dicts-and-sets", "1-tuples"],
)
def test_amplifying_shapes_are_refused(item: bytes) -> None:
    values = 2 if item == EMPTY_DICT + EMPTY_SET else 1
    data = bytes([TUPLE32]) + struct.pack("<I", 100_000 * values) + item * 100_000
    tracemalloc.start()
    try:
        with pytest.raises(p.RemoteProtocolError, match="decode budget"):
            p.ValueDecoder().decode(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    limits = p.CodecLimits()
    assert peak < limits.decode_budget_base + (limits.decode_budget_factor + 4) * len(data)


@pytest.mark.parametrize(
    "value",
    [
        tuple((index % 100, index % 7) for index in range(100_000)),  # small pairs: ~11x
        tuple((index,) for index in range(100_000)),
        frozenset(range(100_000)),
        tuple(frozenset({index, index + 1}) for index in range(20_000)),
        tuple(str(index) for index in range(100_000)),
        tuple(slice(index, index + 1) for index in range(50_000)),
        ((), ) * 100_000,
    ],
    ids=["small-pairs", "1-tuples-of-ints", "big-frozenset", "small-frozensets", "strings", "slices", "empty-tuples"],
)
def test_ordinary_data_decodes(value: object) -> None:
    data = wire(p.ValueEncoder().encode(value))
    assert p.ValueDecoder().decode(data) == value


def test_containers_by_value_decode_within_the_budget() -> None:
    value = [{"key": index, "tags": {index, -index}, "items": [index, str(index)]} for index in range(20_000)]
    data = wire(p.ValueEncoder(containers_by_value=True).encode(value))
    assert p.ValueDecoder().decode(data) == value


def test_the_budget_is_configurable() -> None:
    data = many(1000, EMPTY_SET)
    with pytest.raises(p.RemoteProtocolError, match="decode budget"):
        p.ValueDecoder(limits=p.CodecLimits(decode_budget_base=0, decode_budget_factor=16)).decode(data)
    generous = p.CodecLimits(decode_budget_base=0, decode_budget_factor=64)
    assert p.ValueDecoder(limits=generous).decode(data) == (set(),) * 1000
    with pytest.raises(ValueError):
        p.CodecLimits(decode_budget_factor=0)
    with pytest.raises(ValueError):
        p.CodecLimits(decode_budget_base=-1)


def test_the_budget_is_per_value_not_per_decoder() -> None:
    decoder = p.ValueDecoder()
    data = wire(p.ValueEncoder().encode(tuple((index, index) for index in range(10_000))))
    for _ in range(50):  # many frames in a row: each has its own budget
        assert len(decoder.decode(data)) == 10_000  # type: ignore[arg-type]  # a tuple


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([EMPTY_SET, EMPTY_LIST, EMPTY_DICT, ONE_TUPLE_OF_NONE, SLICE_OF_NONES, bytes([NONE])]), max_size=2000))
def test_any_mix_costs_at_most_the_budget(items: list[bytes]) -> None:
    """Whatever the mix of shapes, decoding either succeeds within the budget or is refused."""
    data = bytes([TUPLE32]) + struct.pack("<I", len(items)) + b"".join(items)
    limits = p.CodecLimits(decode_budget_base=1024, decode_budget_factor=16)
    tracemalloc.start()
    try:
        try:
            p.ValueDecoder(limits=limits).decode(data)
        except p.RemoteProtocolError as exc:
            assert "decode budget" in str(exc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4096 + 24 * len(data) + 64 * 1024  # budget, plus the transient item lists

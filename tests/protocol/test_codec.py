"""Property tests of the value codec (``ValueEncoder`` / ``ValueDecoder``) through the public API.

Owns the codec's contract as seen by a caller: every value type round-trips with its exact
type (sign of zero and NaN bits included), canonical forms are the shortest, the box/unbox
hooks are called and their results used, encoding refuses what it cannot carry with
``EncodeError``, limits are validated and enforced on both sides, and large ``bytes`` travel
as separate buffers. Hostile input is ``test_fuzz.py``'s business; byte-exact layouts are the
golden vectors' (``test_golden.py``).
"""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from tests.protocol.helpers import floats, ints, same, scalars, texts, values, wire

PROPERTY = settings(max_examples=300, deadline=None)


def roundtrip(value: object, *, by_value: bool = False, limits: p.CodecLimits = p.CodecLimits()) -> object:
    data = wire(p.ValueEncoder(limits=limits, containers_by_value=by_value).encode(value))
    return p.ValueDecoder(limits=limits).decode(data)


# -- round trips -----------------------------------------------------------------------


@PROPERTY
@given(values())
def test_roundtrip_immutable_values(value: object) -> None:
    assert same(roundtrip(value), value)


@pytest.mark.timeout(180)  # generating nested dicts/sets is slow: ~50 s on a loaded 2-core machine
@PROPERTY
@given(values(by_value=True))
def test_roundtrip_containers_by_value(value: object) -> None:
    assert same(roundtrip(value, by_value=True), value)


@PROPERTY
@given(scalars)
def test_scalar_types_are_exact(value: object) -> None:
    decoded = roundtrip(value)
    assert type(decoded) is type(value)
    assert same(decoded, value)


@PROPERTY
@given(floats)
def test_float_bits_are_kept(value: float) -> None:
    decoded = roundtrip(value)
    assert isinstance(decoded, float)
    assert struct.pack("<d", decoded) == struct.pack("<d", value)


def test_special_floats() -> None:
    negative_zero = roundtrip(-0.0)
    assert isinstance(negative_zero, float) and math.copysign(1.0, negative_zero) == -1.0
    assert roundtrip(math.inf) == math.inf and roundtrip(-math.inf) == -math.inf
    nan = roundtrip(math.nan)
    assert isinstance(nan, float) and math.isnan(nan)
    assert same(roundtrip(complex(math.nan, -0.0)), complex(math.nan, -0.0))


@PROPERTY
@given(ints)
def test_int_encoding_is_minimal(value: int) -> None:
    data = wire(p.ValueEncoder().encode(value))
    if -128 <= value < 128:
        assert data[0] == 0x08 and len(data) == 2
    elif -(1 << 63) <= value < 1 << 63:
        assert data[0] == 0x09 and len(data) == 9
    else:
        (length,) = struct.unpack_from("<I", data, 1)
        assert data[0] == 0x0A and len(data) == 5 + length
        # one byte fewer would not hold the value in two's complement
        lo, hi = -(1 << (8 * length - 9)), 1 << (8 * length - 9)
        assert not lo <= value < hi
    assert roundtrip(value) == value


@PROPERTY
@given(texts)
def test_strings_with_surrogates_roundtrip(value: str) -> None:
    assert roundtrip(value) == value


@pytest.mark.parametrize(
    ("value", "by_value"),
    [(True, False), (False, False), (1, False), (0, False), ((), False), ([], True), ((1,), False), ([1], True),
     (frozenset(), False), (set(), True), ({}, True), (b"", False), ("", False), (1.0, False)],
)
def test_type_preservation(value: object, by_value: bool) -> None:
    decoded = roundtrip(value, by_value=by_value)
    assert type(decoded) is type(value) and decoded == value


def test_bool_and_int_stay_apart_in_containers() -> None:
    assert same(roundtrip((True, 1, False, 0)), (True, 1, False, 0))
    assert same(roundtrip({1: True, False: 0}, by_value=True), {1: True, False: 0})


def test_length_boundaries() -> None:
    for n in (0, 1, 255, 256, 65536):
        for value in ("x" * n, b"y" * n, (None,) * n):
            assert same(roundtrip(value), value)
    assert wire(p.ValueEncoder().encode("é" * 128))[0] == 0x11  # 256 bytes of UTF-8: STR32


def test_slice_and_singletons() -> None:
    value = (slice(None), slice(1, 2), slice("a", (1,), ...), NotImplemented, ..., None)
    assert same(roundtrip(value), value)


# -- references and hooks --------------------------------------------------------------


@PROPERTY
@given(st.integers(0, (1 << 64) - 1), st.integers(0, (1 << 32) - 1), st.none() | texts | st.tuples(texts))
def test_refs_roundtrip_with_default_hooks(oid: int, type_id: int, info: object) -> None:
    assert roundtrip(p.Ref(oid, type_id, info)) == p.Ref(oid, type_id, info)
    assert roundtrip(p.BackRef(oid)) == p.BackRef(oid)


def test_box_and_unbox_hooks_are_called() -> None:
    thing = object()
    boxed: list[object] = []
    unboxed: list[p.Ref | p.BackRef] = []

    def box(obj: object) -> p.Ref | p.BackRef:
        boxed.append(obj)
        return p.Ref(42, 5, info="Thing")

    def unbox(ref: p.Ref | p.BackRef) -> object:
        unboxed.append(ref)
        return thing

    data = wire(p.ValueEncoder(box).encode((thing, 1, "s")))
    assert len(boxed) == 1 and boxed[0] is thing  # values that travel by value skip the hook
    decoded = p.ValueDecoder(unbox).decode(data)
    assert isinstance(decoded, tuple) and decoded[0] is thing and decoded[1:] == (1, "s")
    assert unboxed == [p.Ref(42, 5, "Thing")]


def test_box_then_unbox_restores_objects() -> None:
    table: dict[int, object] = {}

    def box(obj: object) -> p.Ref:
        table[id(obj)] = obj
        return p.Ref(id(obj), 1)

    def unbox(ref: p.Ref | p.BackRef) -> object:
        return table[ref.oid]

    things = (object(), [1, 2], {"k": 1}, bytearray(b"x"), 3)
    data = wire(p.ValueEncoder(box).encode(things))
    decoded = p.ValueDecoder(unbox).decode(data)
    assert isinstance(decoded, tuple)
    assert all(got is want for got, want in zip(decoded[:4], things[:4])) and decoded[4] == 3
    assert len(table) == 4  # the int travelled by value; the hook never saw it


def test_box_hook_must_return_a_reference() -> None:
    bad_hook: Any = lambda obj: "oops"  # deliberately breaks the hook's contract
    with pytest.raises(p.EncodeError, match="not a reference"):
        p.ValueEncoder(bad_hook).encode(object())


def test_unbox_hook_errors_propagate_unchanged() -> None:
    def unbox(ref: p.Ref | p.BackRef) -> object:
        raise KeyError(ref)

    with pytest.raises(KeyError):
        p.ValueDecoder(unbox).decode(wire(p.ValueEncoder().encode(p.BackRef(3))))


def test_out_of_range_references() -> None:
    for ref in (p.Ref(-1), p.Ref(1 << 64), p.Ref(1, 1 << 32), p.BackRef(-1), p.BackRef(1 << 64)):
        with pytest.raises(p.EncodeError):
            p.ValueEncoder().encode(ref)


# -- refusals --------------------------------------------------------------------------


class MyInt(int):
    pass


@pytest.mark.parametrize(
    "value", [object(), [1], {"a": 1}, {1}, bytearray(b"x"), memoryview(b"x"), MyInt(3), p.Op.CALL, (1, [2])]
)
def test_unsupported_types_without_box(value: object) -> None:
    with pytest.raises(p.EncodeError):
        p.ValueEncoder().encode(value)


def test_depth_limit_on_encode_and_decode() -> None:
    limits = p.CodecLimits(max_depth=4)
    ok: object = ()
    for _ in range(3):
        ok = (ok,)
    assert roundtrip(ok, limits=limits) == ok  # 4 levels
    too_deep = (ok,)
    with pytest.raises(p.EncodeError, match="deeper"):
        p.ValueEncoder(limits=limits).encode(too_deep)
    data = wire(p.ValueEncoder().encode(too_deep))
    with pytest.raises(p.RemoteProtocolError, match="deeper"):
        p.ValueDecoder(limits=limits).decode(data)
    nested_default: object = None
    for _ in range(65):
        nested_default = [nested_default]
    with pytest.raises(p.EncodeError):
        p.ValueEncoder(containers_by_value=True).encode(nested_default)


def test_depth_counts_ref_descriptors() -> None:
    limits = p.CodecLimits(max_depth=1)
    assert roundtrip(p.Ref(1, 1, info="T"), limits=limits) == p.Ref(1, 1, info="T")
    with pytest.raises(p.EncodeError):
        p.ValueEncoder(limits=limits).encode((p.Ref(1, 1, info="T"),))


@PROPERTY
@given(values(with_refs=False, max_leaves=8))
def test_a_type_description_written_again_gives_the_same_bytes(info: object) -> None:
    # The same description object written again, alone or twice in one value: same bytes.
    ref = p.Ref(7, 3, info)
    first = wire(p.ValueEncoder().encode(ref))
    assert wire(p.ValueEncoder().encode(ref)) == first
    assert wire(p.ValueEncoder().encode((ref, ref))) == wire(p.ValueEncoder().encode((p.Ref(7, 3, info),) * 2))
    assert same(_info(roundtrip(ref)), info)


def test_a_type_description_written_before_keeps_the_limits() -> None:
    info = ("mod", "Cls", ("a", "b", "c"), ("__len__",), "")
    assert roundtrip(p.Ref(1, 1, info)) == p.Ref(1, 1, info)
    with pytest.raises(p.EncodeError, match="deeper"):  # descriptor levels 2 and 3 are past a depth of 2
        p.ValueEncoder(limits=p.CodecLimits(max_depth=2)).encode(p.Ref(1, 1, info))
    with pytest.raises(p.EncodeError, match="items"):
        p.ValueEncoder(limits=p.CodecLimits(max_items=3)).encode(p.Ref(1, 1, info))
    assert roundtrip(p.Ref(1, 1, info), limits=p.CodecLimits(max_depth=3)) == p.Ref(1, 1, info)


def test_an_equal_description_of_other_types_is_written_as_itself() -> None:
    as_ints = (1, (0,))
    p.ValueEncoder().encode(p.Ref(1, 1, as_ints))
    as_bools = (True, (False,))  # equal to as_ints, and hashes alike
    assert same(_info(roundtrip(p.Ref(1, 1, as_bools))), as_bools)


def _info(ref: object) -> object:
    assert type(ref) is p.Ref
    return ref.info


def test_item_limit_on_encode_and_decode() -> None:
    limits = p.CodecLimits(max_items=3)
    assert roundtrip((1, 2, 3), limits=limits) == (1, 2, 3)
    for value in ((1, 2, 3, 4), frozenset(range(4)), [0] * 4, {i: i for i in range(4)}, set(range(4))):
        with pytest.raises(p.EncodeError, match="items"):
            p.ValueEncoder(limits=limits, containers_by_value=True).encode(value)
        data = wire(p.ValueEncoder(containers_by_value=True).encode(value))
        with pytest.raises(p.RemoteProtocolError, match="items"):
            p.ValueDecoder(limits=limits).decode(data)


@pytest.mark.parametrize(
    "kwargs",
    [{"max_depth": 0}, {"max_depth": 201}, {"max_items": -1}, {"zero_copy_threshold": 0}],
)
def test_limits_are_validated(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        p.CodecLimits(**kwargs)


def test_limits_defaults_and_extremes() -> None:
    limits = p.CodecLimits()
    assert (limits.max_depth, limits.max_items, limits.zero_copy_threshold) == (64, 1 << 20, 64 * 1024)
    p.CodecLimits(max_depth=1, max_items=0, zero_copy_threshold=1)
    p.CodecLimits(max_depth=200)
    with pytest.raises(p.EncodeError):
        p.ValueEncoder(limits=p.CodecLimits(max_items=0)).encode((1,))
    assert roundtrip((), limits=p.CodecLimits(max_items=0)) == ()


def test_encoder_is_reusable_after_an_error() -> None:
    encoder = p.ValueEncoder()
    with pytest.raises(p.EncodeError):
        encoder.encode((1, 2, object()))
    assert wire(encoder.encode((1,))) == bytes.fromhex("18 01 08 01")


# -- zero copy -------------------------------------------------------------------------


def test_large_bytes_are_separate_buffers() -> None:
    big = bytes(range(256)) * 512  # 128 KiB, over the 64 KiB default threshold
    parts = p.ValueEncoder().encode(("head", big, "tail"))
    assert len(parts) == 3
    assert parts[1] is big
    assert bytes(parts[0]).endswith(struct.pack("<BI", 0x13, len(big)))
    assert p.ValueDecoder().decode(wire(parts)) == ("head", big, "tail")


def test_zero_copy_threshold_is_honoured() -> None:
    data = b"z" * 1000
    assert len(p.ValueEncoder().encode(data)) == 1  # under the default threshold: copied
    parts = p.ValueEncoder(limits=p.CodecLimits(zero_copy_threshold=1000)).encode((data, data))
    assert [part is data for part in parts] == [False, True, False, True]
    assert p.ValueDecoder().decode(wire(parts)) == (data, data)
    assert len(p.ValueEncoder(limits=p.CodecLimits(zero_copy_threshold=1)).encode(b"s" * 255)) == 1  # BYTES8 copies

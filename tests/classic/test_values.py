"""Copying values: the packed plain-data form, ``obtain`` and ``deliver`` (pickle only when
both sides enable it)."""

from __future__ import annotations

import collections
from fractions import Fraction
from typing import Any

import pytest

import rpc_classic
import rpc_service
from rpc_classic import ClassicConnection, NotPlainDataError, SlaveService, classic_config, deliver, obtain
from rpc_classic._plain import FORMAT, pack, unpack


# -- the packed form ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None, True, 7, -(2**100), 1.5, 2j, "text", b"bytes", ..., NotImplemented,
        (), (1, (2, (3,))), [1, [2, [3]]], {"a": [1, {2: (3, frozenset({4}))}]}, {1, 2, "x"},
        frozenset({(1, 2)}), bytearray(b"\x00\xff"), slice(1, 10, 2), {(1, 2): {"nested": [b"x"]}},
    ],
)
def test_pack_round_trips(value: Any) -> None:
    copy = unpack(pack(value))
    assert copy == value and type(copy) is type(value)


def test_pack_keeps_sharing_and_cycles() -> None:
    shared = [1, 2]
    value: list[Any] = [shared, shared, {"again": shared}]
    value.append(value)
    value.append((value, shared))
    copy = unpack(pack(value))
    assert copy[0] is copy[1] is copy[2]["again"] is copy[4][1]
    assert copy[3] is copy and copy[4][0] is copy
    assert copy[0] == [1, 2] and copy[0] is not shared


def test_pack_is_flat_so_deep_nesting_fits_the_codec() -> None:
    deep: list[Any] = []
    node = deep
    for _ in range(500):  # far deeper than the codec's max_depth
        node.append([])
        node = node[0]
    assert unpack(pack(deep)) == deep


@pytest.mark.parametrize("value", [object(), collections.OrderedDict(a=1), [1, Fraction(1, 3)], {"f": len}])
def test_pack_refuses_what_is_not_plain_data(value: Any) -> None:
    with pytest.raises(NotPlainDataError, match="allow_pickle"):
        pack(value)


@pytest.mark.parametrize(
    "packed",
    [
        None,
        ("other", 1, ()),
        (FORMAT, (0,), ()),  # reference out of range
        (FORMAT, (0,), (("t", ((0,),)),)),  # a tuple containing itself
        (FORMAT, (0,), (("s", ((1,),)), ("l", ()))),  # a list inside a set: unhashable
        (FORMAT, (0,), (("d", (1,)),)),  # odd dict payload
        (FORMAT, (0,), (("?", ()),)),
        (FORMAT, (0,), (("b", "not bytes"),)),
        (FORMAT, [1], ()),
    ],
)
def test_unpack_rejects_malformed_input(packed: object) -> None:
    with pytest.raises(ValueError, match="malformed"):
        unpack(packed)


# -- obtain and deliver ------------------------------------------------------------------


def test_obtain_copies_plain_data(thread_conn: ClassicConnection) -> None:
    remote = thread_conn.eval("{'a': [1, 2, {3}], 'b': (4, [5])}")
    assert rpc_service.is_proxy(remote)
    local = obtain(remote)
    assert local == {"a": [1, 2, {3}], "b": (4, [5])}
    assert type(local) is dict and not rpc_service.is_proxy(local["a"])
    local["a"].append(99)
    assert thread_conn.eval("1") == 1 and len(remote["a"]) == 3  # a copy, not the original


def test_obtain_passes_local_values_through() -> None:
    value = [1, 2]
    assert obtain(value) is value
    assert obtain(5) == 5


def test_obtain_refuses_non_plain_values_without_pickle(thread_conn: ClassicConnection) -> None:
    thread_conn.execute("class Thing:\n    pass\nthing = Thing()")
    with pytest.raises(NotPlainDataError, match="allow_pickle"):
        obtain(thread_conn.namespace["thing"])
    with pytest.raises(NotPlainDataError):
        obtain(thread_conn.eval("[1, len]"))


def test_obtain_and_deliver_use_pickle_only_when_both_sides_allow_it() -> None:
    both = {"allow_pickle": True}
    with rpc_classic.connect_thread(config=both, remote_config=both) as conn:
        assert obtain(conn.modules.fractions.Fraction(1, 3)) == Fraction(1, 3)
        remote = deliver(conn, Fraction(2, 3))
        assert rpc_service.is_proxy(remote) and remote.denominator == 3
    with rpc_classic.connect_thread(config=both) as conn:  # the peer does not allow pickle
        with pytest.raises(ValueError, match="allow_pickle"):
            obtain(conn.modules.fractions.Fraction(1, 3))
        with pytest.raises(ValueError, match="allow_pickle"):
            deliver(conn, Fraction(2, 3))
    with rpc_classic.connect_thread(remote_config=both) as conn:  # this side does not
        with pytest.raises(NotPlainDataError):
            obtain(conn.modules.fractions.Fraction(1, 3))
        with pytest.raises(NotPlainDataError):
            deliver(conn, Fraction(2, 3))


def test_deliver_copies_plain_data_to_the_peer(subproc_conn: ClassicConnection) -> None:
    local = {"numbers": [1, 2, 3], "blob": bytearray(b"abc")}
    remote = deliver(subproc_conn, local)
    assert rpc_service.is_proxy(remote)
    subproc_conn.namespace["delivered"] = remote
    assert subproc_conn.eval("type(delivered) is dict and sum(delivered['numbers'])") == 6
    subproc_conn.execute("delivered['numbers'].append(4)")
    assert local["numbers"] == [1, 2, 3]  # the peer changed its own copy
    assert deliver(subproc_conn, 12) == 12


def test_obtain_needs_a_slave_peer_or_pickle() -> None:
    class Plain(rpc_service.Service):
        def exposed_data(self) -> list[int]:
            return [1, 2]

    with rpc_service.ThreadedServer(Plain) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            with pytest.raises(NotPlainDataError, match="classic peer"):
                obtain(conn.root.data())
    with rpc_service.ThreadedServer(Plain, protocol_config={"allow_pickle": True}) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, config={"allow_pickle": True}) as conn:
            assert obtain(conn.root.data()) == [1, 2]


def test_slave_given_as_instance_is_shared() -> None:
    shared = SlaveService()
    with rpc_classic.connect_thread(remote_service=shared, remote_config=classic_config()) as conn:
        conn.execute("marker = 1")
    assert shared.exposed_namespace["marker"] == 1

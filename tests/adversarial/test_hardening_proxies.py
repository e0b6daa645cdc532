"""Hardening (issue 13): what a peer's objects and type descriptors may make a proxy claim or cost.

- Item 6: a proxy never claims to be an instance of an immutable by-value builtin (a client's
  ``str`` subclass must not pass the server's ``isinstance(x, str)``), while proxies of
  mutable builtins (``list``, ``dict``) still do.
- Item 2: a type descriptor is bounded in member count and size; proxy classes are cached
  only while something uses them (no process-wide cache holding a peer's huge classes).
"""

from __future__ import annotations

import enum
import gc
import socket
from typing import Any, Iterator

import pytest

import rpc_protocol as wire
import rpc_service
from rpc_service import Service, ThreadedServer, is_proxy


class Checker(Service):
    def exposed_kinds(self, value: Any) -> dict[str, bool]:
        return {kind.__name__: isinstance(value, kind) for kind in (str, bytes, int, float, complex, tuple, frozenset, range, slice, list, dict)}

    def exposed_is_proxy(self, value: Any) -> bool:
        return is_proxy(value)

    def exposed_classes(self) -> int:
        return 0


@pytest.fixture
def port() -> Iterator[int]:
    server = ThreadedServer(Checker, port=0, protocol_config={"sync_request_timeout": 5.0})
    thread = server.start_in_thread()
    try:
        yield server.port
    finally:
        server.close()
        thread.join(timeout=10)


class Sneaky(str):
    """Looks like a harmless name; formats as something else later."""

    def __format__(self, spec: str) -> str:
        return "../secret"


class Flags(enum.IntEnum):
    A = 1


class Bytes(bytes):
    pass


class Tuple(tuple):  # type: ignore[type-arg]  # a plain tuple subclass
    pass


class Float(float):
    pass


class FrozenSet(frozenset):  # type: ignore[type-arg]  # a plain frozenset subclass
    pass


@pytest.mark.parametrize(
    "value, base",
    [(Sneaky("name"), "str"), (Flags.A, "int"), (Bytes(b"x"), "bytes"), (Tuple((1,)), "tuple"), (Float(1.0), "float"), (FrozenSet({1}), "frozenset")],
    ids=["str", "IntEnum", "bytes", "tuple", "float", "frozenset"],
)
def test_a_subclass_of_a_by_value_builtin_is_not_an_instance_of_it_remotely(port: int, value: object, base: str) -> None:
    with rpc_service.connect("127.0.0.1", port, config={"sync_request_timeout": 5.0}) as conn:
        assert conn.root.is_proxy(value)  # it crossed by reference...
        remote = conn.root.kinds(value)
        kinds = {name: remote[name] for name in ("str", "bytes", "int", "float", "complex", "tuple", "frozenset", "range", "slice")}
        assert not any(kinds.values()), (base, kinds)  # ...and claims none of the immutable builtins


def test_a_descriptor_naming_a_by_value_builtin_is_not_believed(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        from tests.adversarial.helpers import RawPeer

        peer = RawPeer(sock)
        peer.handshake()
        for index, name in enumerate(["str", "int", "bytes", "tuple", "bool", "range", "slice"], start=1):
            ref = wire.Ref(index, index, ("hostile", "Fake", (), (), name))
            answer = peer.call_root("kinds", ref)
            assert isinstance(answer, wire.Reply), answer
            kinds = answer.value
            assert isinstance(kinds, wire.Ref)  # a dict crosses by reference; ask for its items
            items = peer.call(wire.Op.CALLATTR, wire.BackRef(kinds.oid), ("__getitem__", name if name not in ("bool",) else "int"))
            assert isinstance(items, wire.Reply) and items.value is False, (name, items)


def test_proxies_of_mutable_builtins_still_pass_isinstance(port: int) -> None:
    with rpc_service.connect("127.0.0.1", port, config={"sync_request_timeout": 5.0}) as conn:
        kinds = conn.root.kinds([1, 2])
        assert kinds["list"] is True
        assert isinstance(kinds, dict)  # the server's dict, seen here

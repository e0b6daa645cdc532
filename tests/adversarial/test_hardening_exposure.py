"""Hardening (issue 13): what ``allow_public_attrs`` and ``allow_setattr`` may open, and no more.

- Item 7: ``allow_public_attrs=True`` plus any generator used to be code execution through
  ``gen.gi_frame.f_builtins``. Frames, code objects and tracebacks, and the names leading to
  them (``gi_frame``, ``cr_frame``, ``ag_frame``, ``f_globals``, ``f_builtins``, ``tb_frame``...)
  stay closed; only ``allow_all_attrs`` opens them.
- Item 9: ``allow_setattr`` let one client replace a shared service's exposed method (every
  other client's calls then ran in the attacker's process). Setting never replaces a method
  or any class-level attribute; an instance's own data and a property's setter still work.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import Connection, Service, ThreadedServer


class Holder:
    def __init__(self) -> None:
        self.frame = sys._getframe()
        self.code = Holder.__init__.__code__
        try:
            raise ValueError("x")
        except ValueError as exc:
            self.tb = exc.__traceback__
        self.number = 7


class Introspectable(Service):
    def exposed_gen(self) -> Iterator[int]:
        yield 1

    def exposed_coro(self) -> Any:
        async def coro() -> None:
            pass

        return coro()

    def exposed_agen(self) -> Any:
        async def agen() -> Any:
            yield 1

        return agen()

    def exposed_holder(self) -> Holder:
        return Holder()


class Shared(Service):
    exposed_limit = 10

    def __init__(self) -> None:
        self.exposed_name = "shared"
        self._value = 0

    def exposed_echo(self, value: Any) -> Any:
        return value

    @property
    def exposed_value(self) -> int:
        return self._value

    @exposed_value.setter
    def exposed_value(self, value: int) -> None:
        self._value = int(value)

    def exposed_get_class(self) -> type:
        return Holder

    def exposed_module(self) -> types.ModuleType:
        return types


@pytest.fixture
def serve() -> Iterator[Callable[[Any, dict[str, Any]], Connection]]:
    servers: list[tuple[ThreadedServer, Any]] = []
    conns: list[Connection] = []

    def serve(service: Any, config: dict[str, Any]) -> Connection:
        server = ThreadedServer(service, port=0, protocol_config={"sync_request_timeout": 5.0, **config})
        servers.append((server, server.start_in_thread()))
        conn = rpc_service.connect("127.0.0.1", server.port, config={"sync_request_timeout": 5.0})
        conns.append(conn)
        return conn

    yield serve
    for conn in conns:
        conn.close()
    for server, thread in servers:
        server.close()
        thread.join(timeout=10)


INTERNAL_PATHS = [
    ("gen", "gi_frame"),
    ("gen", "gi_code"),
    ("coro", "cr_frame"),
    ("coro", "cr_code"),
    ("agen", "ag_frame"),
    ("agen", "ag_code"),
    ("holder", "frame"),
    ("holder", "code"),
    ("holder", "tb"),
]


@pytest.mark.parametrize("factory, name", INTERNAL_PATHS, ids=[f"{f}.{n}" for f, n in INTERNAL_PATHS])
def test_public_attrs_never_reach_frames_code_or_tracebacks(serve: Callable[[Any, dict[str, Any]], Connection], factory: str, name: str) -> None:
    conn = serve(Introspectable, {"allow_public_attrs": True})
    obj = getattr(conn.root, factory)()
    try:
        with pytest.raises(AttributeError):
            getattr(obj, name)
        if factory != "holder":  # (a holder's public names are listed; their values are refused)
            assert name not in dir(obj)
    finally:
        if factory in ("coro",):
            obj.close()  # (never awaited: close it to keep the server quiet)


def test_public_attrs_still_open_public_data(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    conn = serve(Introspectable, {"allow_public_attrs": True})
    assert conn.root.holder().number == 7
    gen = conn.root.gen()
    assert next(gen) == 1


def test_the_generator_route_to_builtins_is_closed(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    """The red team's exploit, end to end: gen.gi_frame.f_builtins['eval']."""
    conn = serve(Introspectable, {"allow_public_attrs": True})
    gen = conn.root.gen()
    with pytest.raises(AttributeError, match="gi_frame"):
        gen.gi_frame.f_builtins["eval"]("1+1")


def test_allow_all_attrs_still_opens_everything(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    conn = serve(Introspectable, {"allow_all_attrs": True})
    assert conn.root.gen().gi_frame.f_code.co_name == "exposed_gen"


def test_setattr_never_replaces_a_shared_method(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    shared = Shared()
    attacker = serve(shared, {"allow_setattr": True})
    with pytest.raises(AttributeError, match="class-level"):
        attacker.root.echo = lambda value: "hijacked"
    assert "exposed_echo" not in vars(shared)
    assert attacker.root.echo("x") == "x"  # still the service's own method
    bystander = serve(shared, {"allow_setattr": True})  # another client of the same shared instance
    assert bystander.root.echo("mine") == "mine"


def test_setattr_never_replaces_class_level_values_or_class_attributes(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    shared = Shared()
    conn = serve(shared, {"allow_setattr": True, "allow_delattr": True, "allow_public_attrs": True})
    with pytest.raises(AttributeError, match="class-level"):
        conn.root.limit = 99
    assert "exposed_limit" not in vars(shared)
    cls = conn.root.get_class()
    with pytest.raises(AttributeError, match="class"):
        setattr(cls, "number", 1)
    assert not hasattr(Holder, "number")
    with pytest.raises(AttributeError, match="class-level"):
        del conn.root.echo


def test_setattr_still_sets_instance_data_and_properties(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    shared = Shared()
    conn = serve(shared, {"allow_setattr": True})
    conn.root.name = "renamed"
    assert shared.exposed_name == "renamed"
    conn.root.value = 5
    assert shared.exposed_value == 5


def test_setattr_on_a_module_never_replaces_its_functions(serve: Callable[[Any, dict[str, Any]], Connection]) -> None:
    conn = serve(Shared(), {"allow_setattr": True, "allow_public_attrs": True})
    module = conn.root.module()
    with pytest.raises(AttributeError, match="module attribute"):
        module.new_class = None
    assert types.new_class is not None and callable(types.new_class)

"""RPyC compatibility probes (issue 16): calling with ``allow_safe_attrs=False``, and the
``__class__`` a proxy of a subclass of a mutable builtin reports.

- RPyC's test_attr_access::test_allow_safe_attrs: with ``allow_safe_attrs=False`` the other
  special methods are off, but calling a callable is never a "safe attr": returned
  functions, bound methods (``obj.exposed_foobar()``), classes and callable instances stay
  callable.
- ``proxy.__class__`` of a ``Counter``, ``OrderedDict``, ``defaultdict`` or a user
  ``class L(list)`` reads as the remote class (``__name__``, ``__qualname__``,
  ``__module__``) while ``isinstance(proxy, dict)`` / ``isinstance(proxy, list)`` still hold.
"""

from __future__ import annotations

import collections
import collections.abc
import os
import socket
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import Connection, Proxy, Service

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


# -- calling with allow_safe_attrs=False --------------------------------------------------


def helper(suffix: str = "") -> str:
    return "helper" + suffix


class MyClass:
    def exposed_foobar(self, suffix: str = "") -> str:
        return "Fee" + suffix


class Adder:
    """A callable instance that also has a safe special (__len__) besides __call__."""

    def __call__(self, a: int, b: int = 0) -> int:
        return a + b

    def __len__(self) -> int:
        return 7


class Plain:
    def exposed_ping(self) -> str:
        return "pong"


class CallService(Service):
    exposed_MyClass = MyClass

    def exposed_get_func(self) -> Callable[..., str]:
        return helper

    def exposed_get_bound(self) -> Callable[..., str]:
        return MyClass().exposed_foobar

    def exposed_get_builtin(self) -> Callable[..., Any]:
        return abs

    def exposed_get_adder(self) -> Adder:
        return Adder()

    def exposed_get_plain(self) -> Plain:
        return Plain()

    def exposed_get_lambda(self) -> Callable[[int], int]:
        return lambda x: x * 2


SAFE_OFF = {"allow_safe_attrs": False}


def test_safe_attrs_off_methods_callable_in_both_spellings(connect_to: ConnectTo) -> None:
    conn = connect_to(CallService, SAFE_OFF)
    obj = conn.root.MyClass()  # a class proxy: calling it makes an instance
    assert obj.foobar() == "Fee"
    assert obj.exposed_foobar() == "Fee"  # GETATTR hands out a bound method; calling it is a CALL
    assert obj.exposed_foobar("!") == obj.foobar(suffix="!") == "Fee!"
    method = obj.exposed_foobar
    assert callable(method) and method(suffix="?") == "Fee?"


def test_safe_attrs_off_returned_functions_callable(connect_to: ConnectTo) -> None:
    conn = connect_to(CallService, SAFE_OFF)
    func = conn.root.get_func()
    assert callable(func)
    assert func() == "helper"
    assert func("!") == func(suffix="!") == "helper!"
    assert conn.root.get_func()() == "helper"
    assert conn.root.get_bound()("x") == "Feex"
    assert conn.root.get_builtin()(-3) == 3
    assert conn.root.get_lambda()(21) == 42


def test_safe_attrs_off_callable_instance_calls_but_other_specials_stay_off(connect_to: ConnectTo) -> None:
    conn = connect_to(CallService, SAFE_OFF)
    adder = conn.root.get_adder()
    assert callable(adder) and adder(2, b=3) == 5
    with pytest.raises(TypeError):
        len(adder)  # __len__ is a safe special: still off
    with pytest.raises(AttributeError):
        adder.__len__()
    assert "__len__" not in dir(adder)
    plain = conn.root.get_plain()
    assert not callable(plain)  # only a callable remote object gets __call__
    with pytest.raises(TypeError):
        plain()
    assert plain.ping() == "pong"


def test_safe_attrs_off_async_call_of_a_returned_function(connect_to: ConnectTo) -> None:
    conn = connect_to(CallService, SAFE_OFF)
    result = rpc_service.async_(conn.root.get_func())("?")
    result.wait(10)
    assert result.value == "helper?"


def test_safe_attrs_on_calls_and_specials(connect_to: ConnectTo) -> None:
    conn = connect_to(CallService)
    adder = conn.root.get_adder()
    assert adder(1, 1) == 2 and len(adder) == 7
    assert conn.root.MyClass().exposed_foobar() == "Fee"
    assert conn.root.get_func()() == "helper"


# -- proxy.__class__ of subclasses of mutable builtins ------------------------------------


class L(list):  # type: ignore[type-arg]  # an untyped user subclass, as in the probe
    pass


class Outer:
    class Inner(dict):  # type: ignore[type-arg]  # nested: qualname Outer.Inner
        pass


class ContainerService(Service):
    def exposed_counter(self) -> collections.Counter[str]:
        return collections.Counter(a=1, b=2)

    def exposed_ordered(self) -> collections.OrderedDict[str, int]:
        return collections.OrderedDict(x=1)

    def exposed_default(self) -> collections.defaultdict[str, list[int]]:
        return collections.defaultdict(list)

    def exposed_user_list(self) -> L:
        return L([1, 2])

    def exposed_inner(self) -> Outer.Inner:
        return Outer.Inner(k=1)

    def exposed_plain_dict(self) -> dict[str, int]:
        return {"a": 1}

    def exposed_plain_list(self) -> list[int]:
        return [1, 2, 3]


@pytest.mark.parametrize(
    ("method", "cls", "base"),
    [
        ("counter", collections.Counter, dict),
        ("ordered", collections.OrderedDict, dict),
        ("default", collections.defaultdict, dict),
        ("user_list", L, list),
        ("inner", Outer.Inner, dict),
    ],
)
def test_class_of_builtin_subclass_reads_as_the_remote_class(connect_to: ConnectTo, method: str, cls: type, base: type) -> None:
    conn = connect_to(ContainerService)
    proxy = getattr(conn.root, method)()
    reported = proxy.__class__
    assert reported.__name__ == cls.__name__
    assert reported.__qualname__ == cls.__qualname__
    assert reported.__module__ == cls.__module__
    assert isinstance(proxy, base) and issubclass(reported, base)  # isinstance(proxy, dict) still holds
    assert reported is not base and reported is not cls
    assert not isinstance(proxy, cls)  # a local class of the same name is never passed
    assert rpc_service.is_proxy(proxy) and isinstance(proxy, Proxy)
    assert type(proxy).__name__ == cls.__name__
    # shared and hashable, like the proxy class
    again = getattr(conn.root, method)()
    assert again.__class__ is reported and hash(again.__class__) == hash(reported)
    assert {reported: method}[again.__class__] == method


def test_class_of_builtin_subclass_keeps_the_proxy_working(connect_to: ConnectTo) -> None:
    conn = connect_to(ContainerService)
    counter = conn.root.counter()
    assert isinstance(counter, collections.abc.MutableMapping)
    assert counter["b"] == 2 and len(counter) == 2 and sorted(counter) == ["a", "b"]
    user_list = conn.root.user_list()
    assert isinstance(user_list, collections.abc.MutableSequence)
    assert list(user_list) == [1, 2] and user_list[1] == 2


def test_class_of_exact_builtins_is_the_builtin(connect_to: ConnectTo) -> None:
    conn = connect_to(ContainerService)
    assert conn.root.plain_dict().__class__ is dict
    assert conn.root.plain_list().__class__ is list
    assert isinstance(conn.root.plain_dict(), dict) and isinstance(conn.root.plain_list(), list)


class _Middle(Service):
    def __init__(self, upstream: Connection) -> None:
        self.upstream = upstream

    def exposed_counter(self) -> Any:
        return self.upstream.root.counter()


@pytest.fixture
def forwarding_chain() -> Iterator[Connection]:
    """owner <- middle <- client: the client's connection to the middle."""
    upstream = rpc_service.connect_thread(remote_service=ContainerService)
    downstream = rpc_service.connect_thread(remote_service=_Middle(upstream))
    try:
        yield downstream
    finally:
        downstream.close()
        upstream.close()


def test_class_of_a_forwarded_builtin_subclass(forwarding_chain: Connection) -> None:
    counter = forwarding_chain.root.counter()
    assert counter.__class__.__name__ == "Counter" and counter.__class__.__module__ == "collections"
    assert isinstance(counter, dict) and counter["a"] == 1


# -- RPyC's keyword spellings ------------------------------------------------------------


class _Echo(Service):
    def exposed_echo(self, value: Any) -> Any:
        return value


def test_thread_pool_server_takes_rpycs_nbthreads_spelling() -> None:
    server = rpc_service.ThreadPoolServer(_Echo, nbThreads=3)
    try:
        assert server.nbthreads == 3
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            assert conn.root.echo(1) == 1
    finally:
        server.close()
    with pytest.raises(TypeError, match="not both"):
        rpc_service.ThreadPoolServer(_Echo, nbthreads=2, nbThreads=3)


@pytest.mark.parametrize("keepalive", [True, False])
def test_connect_keepalive(keepalive: bool) -> None:
    with rpc_service.ThreadedServer(_Echo) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port, keepalive=keepalive) as conn:
            with socket.socket(fileno=os.dup(conn.fileno())) as sock:
                assert bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)) is keepalive
            assert conn.root.echo("ok") == "ok"

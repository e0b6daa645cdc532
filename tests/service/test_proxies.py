"""Proxies: attribute access, calls, the container and comparison protocols, context managers,
isinstance, dir, callbacks both ways, identity of objects returned to their owner, the
per-type proxy class cache, and the cost of a call on ``conn.root`` (one request frame).

Every test goes through ``connect_to`` and so runs over TCP and over the in-process pair.
"""

from __future__ import annotations

import gc
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, Sequence

import pytest

import rpc_service
from rpc_protocol import Buffer, FrameType, Op
from rpc_service import Connection, Service, exposed

if TYPE_CHECKING:
    from .conftest import ConnectTo


class Widget:
    def __init__(self, size: int) -> None:
        self.size = size

    def exposed_get_size(self) -> int:
        return self.size

    @exposed
    def grow(self, by: int = 1, *, times: int = 1) -> int:
        self.size += by * times
        return self.size

    def __repr__(self) -> str:
        return f"Widget({self.size})"

    def __str__(self) -> str:
        return f"a widget of size {self.size}"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.size == other
        return self is other

    def __lt__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.size < other
        return NotImplemented

    def __hash__(self) -> int:
        return 1000 + self.size


class Gadget:
    @exposed
    def kind(self) -> str:
        return "gadget"


class Recorder:
    """A context manager that records, on the server, what its protocol methods were called with."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bool]] = []
        self.suppress = False

    def __enter__(self) -> Recorder:
        self.events.append(("enter", True))
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        self.events.append(("exit", exc_type is None))
        return self.suppress

    @exposed
    def log(self) -> tuple[tuple[str, bool], ...]:
        return tuple(self.events)

    @exposed
    def set_suppress(self, value: bool) -> None:
        self.suppress = value


class Countdown:
    """An iterator whose __next__ runs remotely."""

    def __init__(self, start: int) -> None:
        self.current = start

    def __iter__(self) -> Countdown:
        return self

    def __next__(self) -> int:
        if self.current <= 0:
            raise StopIteration
        self.current -= 1
        return self.current + 1


class ProxyService(Service):
    exposed_Widget = Widget
    exposed_Gadget = Gadget
    exposed_answer = 42

    def __init__(self) -> None:
        self.data: dict[str, Any] = {"a": 1, "b": [1, 2, 3]}
        self.items = [3, 1, 2]
        self.kept: list[object] = []
        self.recorder = Recorder()
        self.conn: Connection | None = None

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def exposed_add(self, a: int, b: int = 0, *rest: int, scale: int = 1, **extra: int) -> int:
        return (a + b + sum(rest) + sum(extra.values())) * scale

    def exposed_get_data(self) -> dict[str, Any]:
        return self.data

    def exposed_get_items(self) -> list[int]:
        return self.items

    def exposed_snapshot(self) -> tuple[Any, ...]:
        """By-value copy of the server-side state, to check what remote mutations did."""
        data = tuple(sorted((key, tuple(value) if isinstance(value, list) else value) for key, value in self.data.items()))
        return data, tuple(self.items)

    def exposed_new_list(self, *values: int) -> list[int]:
        return list(values)

    def exposed_recorder(self) -> Recorder:
        return self.recorder

    def exposed_countdown(self, start: int) -> Countdown:
        return Countdown(start)

    def exposed_echo(self, value: object) -> object:
        return value

    def exposed_mutate(self, values: Any) -> int:
        """Change a container the client sent (by reference) through its item protocol."""
        values[0] = "changed"
        del values[-1]
        return len(values)

    def exposed_apply(self, func: Any, *args: Any) -> Any:
        return func(*args)

    def exposed_keep_widget(self, size: int) -> Widget:
        widget = Widget(size)
        self.kept.append(widget)
        return widget

    def exposed_is_kept(self, value: object) -> bool:
        return any(value is kept for kept in self.kept) and type(value) is Widget

    def exposed_call_client(self, name: str) -> Any:
        """Symmetric use: call this connection's peer (the client) through its root."""
        assert self.conn is not None
        return self.conn.root.greet(name)

    def exposed_thread_ident(self) -> int:
        return threading.get_ident()

    def _private(self) -> None:
        pass

    def public_not_exposed(self) -> None:
        pass


# -- attributes and calls ----------------------------------------------------------------


def test_attribute_get_and_call_with_args_and_kwargs(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    assert root.answer == 42
    assert root.add(1) == 1
    assert root.add(1, 2) == 3
    assert root.add(1, 2, 3, 4) == 10
    assert root.add(1, b=2, scale=10) == 30
    assert root.add(1, 2, 3, scale=2, x=4, y=5) == 30
    # a bound method fetched as an attribute is callable later
    add = root.add
    assert add(5, 5) == 10
    assert callable(add)
    # the remote signature is enforced remotely
    with pytest.raises(TypeError):
        root.add()


def test_methods_of_an_object_returned_by_the_service(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    widget = root.Widget(3)
    assert widget.get_size() == 3
    assert widget.grow() == 4
    assert widget.grow(2, times=3) == 10
    assert widget.get_size() == 10
    assert rpc_service.is_proxy(widget)
    assert not rpc_service.is_proxy(Widget(1))


# -- containers travel by reference --------------------------------------------------------


def test_remote_list_len_iter_contains_and_items(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    items = root.get_items()
    assert rpc_service.is_proxy(items)
    assert len(items) == 3
    assert list(items) == [3, 1, 2]
    assert sorted(items) == [1, 2, 3]
    assert list(reversed(items)) == [2, 1, 3]
    assert 2 in items and 7 not in items
    assert items[0] == 3 and items[-1] == 2
    assert list(items[0:2]) == [3, 1]  # the slice is a new list on the server, reached by reference
    items[1] = 10
    del items[0]
    assert root.snapshot()[1] == (10, 2)  # the server's own list changed
    with pytest.raises(IndexError):
        items[5]


def test_remote_dict_item_get_set_del(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    data = root.get_data()
    assert isinstance(data, dict) and not isinstance(data, list)
    assert len(data) == 2
    assert sorted(data) == ["a", "b"]
    assert "a" in data and "z" not in data
    assert data["a"] == 1
    data["c"] = 3
    del data["a"]
    with pytest.raises(KeyError):
        data["a"]
    assert root.snapshot()[0] == (("b", (1, 2, 3)), ("c", 3))
    # a nested container is a reference too: mutating it changes the server's object
    inner = data["b"]
    assert rpc_service.is_proxy(inner)
    inner[0] = 100
    assert root.snapshot()[0][0] == ("b", (100, 2, 3))


def test_containers_sent_by_the_client_are_changed_in_place(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    local: list[object] = [1, 2, 3]
    assert root.mutate(local) == 2
    assert local == ["changed", 2]
    table: dict[object, object] = {0: "zero", -1: "minus one", 5: "five"}
    assert root.mutate(table) == 2
    assert table == {0: "changed", 5: "five"}


def test_remote_iterator_next_runs_remotely(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    countdown = root.countdown(3)
    assert iter(countdown) is countdown  # __iter__ returns the same remote object, hence the same proxy
    assert next(countdown) == 3
    assert list(countdown) == [2, 1]
    with pytest.raises(StopIteration):
        next(countdown)


# -- comparisons, hash, repr -------------------------------------------------------------------


def test_comparisons_run_remotely(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    widget = root.Widget(3)
    assert widget == 3 and widget != 4
    assert widget < 4 and not widget < 3
    assert widget == widget
    assert (widget == root.Widget(3)) is False  # Widget.__eq__ compares identity for non-ints
    low, high = root.new_list(1, 2), root.new_list(1, 3)
    # two remote lists: the comparison runs on the server between the real lists
    assert low < high and high > low and low <= low and not low > high
    assert low != high and low == root.echo(low)
    # a remote Gadget has no ordering
    with pytest.raises(TypeError):
        root.Gadget() < 1  # noqa: B015 - the comparison itself is under test


@pytest.mark.xfail(
    reason="known limitation (as in RPyC): the local list crosses by reference, so the remote "
    "list.__eq__ gets a proxy, which is not a real list, and answers NotImplemented",
    raises=AssertionError,
    strict=True,
)
def test_remote_list_equals_an_equal_local_list(connect_to: ConnectTo) -> None:
    items = connect_to(ProxyService).root.get_items()
    assert list(items) == [3, 1, 2]  # the contents are equal...
    assert items == [3, 1, 2]  # ...but the comparison is False (and `<` raises TypeError)


def test_hash_is_the_remote_hash(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    widget = root.Widget(7)
    assert hash(widget) == 1007
    # usable as a dict key / set member (hash and __eq__ both remote)
    table = {widget: "w"}
    assert table[widget] == "w"
    assert widget in {widget}
    with pytest.raises(TypeError, match="unhashable"):
        hash(root.get_items())
    assert hash(root) == hash(root)


def test_repr_and_str_are_the_remote_ones(connect_to: ConnectTo) -> None:
    conn = connect_to(ProxyService)
    widget = conn.root.Widget(5)
    assert repr(widget) == "Widget(5)"
    assert str(widget) == "a widget of size 5"
    assert f"{widget}" == "a widget of size 5"
    assert repr(conn.root.get_items()) == "[3, 1, 2]"
    conn.close()
    # no round trip possible any more: the proxy says what it was
    closed = repr(widget)
    assert "Widget" in closed and "closed" in closed


# -- context managers -----------------------------------------------------------------------


def test_with_block_runs_enter_and_exit_remotely(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    recorder = root.recorder()
    with recorder as entered:
        assert entered is recorder  # __enter__ returned the same remote object
        assert recorder.log() == (("enter", True),)
    assert recorder.log() == (("enter", True), ("exit", True))


def test_with_block_exception_reaches_remote_exit(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    recorder = root.recorder()
    with pytest.raises(KeyError):
        with recorder:
            raise KeyError("boom")
    assert recorder.log()[-1] == ("exit", False)  # __exit__ saw an exception
    recorder.set_suppress(True)
    with recorder:
        raise KeyError("suppressed by the remote __exit__")
    assert recorder.log()[-1] == ("exit", False)


# -- isinstance, type, dir --------------------------------------------------------------------


def test_isinstance_of_builtin_types(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    items = root.get_items()
    assert isinstance(items, list)
    assert not isinstance(items, (dict, tuple, str))
    assert isinstance(root.get_data(), dict)
    assert not isinstance(root.Widget(1), list)
    assert type(items) is not list  # only isinstance is fooled, on purpose


def test_isinstance_against_a_remote_class(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    widget_class = root.Widget
    widget = widget_class(2)
    assert isinstance(widget, widget_class)  # __instancecheck__ runs on the server
    assert not isinstance(root.Gadget(), widget_class)
    assert not isinstance(5, widget_class)
    assert not isinstance(Widget(2), widget_class)  # a local Widget is not the remote class's instance


def test_dir_shows_only_exposed_names(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    names = dir(root)
    public = {name for name in names if not name.startswith("_")}
    assert public == {
        "Gadget",
        "Widget",
        "add",
        "answer",
        "apply",
        "call_client",
        "countdown",
        "echo",
        "get_data",
        "get_items",
        "get_service_aliases",
        "get_service_name",
        "is_kept",
        "keep_widget",
        "mutate",
        "new_list",
        "recorder",
        "snapshot",
        "thread_ident",
    }
    # the names are given without the prefix, and nothing private or internal shows
    assert not any(name.startswith("exposed_") for name in names)
    for hidden in ("_private", "public_not_exposed", "on_connect", "data", "conn", "__dict__", "__class__", "__init__"):
        assert hidden not in names
    assert sorted({name for name in dir(root.Widget(1)) if not name.startswith("_")}) == ["get_size", "grow"]


# -- callbacks and identity -----------------------------------------------------------------------


def test_client_function_passed_as_argument_runs_on_the_client(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    calls: list[tuple[int, int]] = []

    def callback(value: int) -> int:
        calls.append((value, threading.get_ident()))
        return value * 2

    assert root.apply(callback, 21) == 42
    # run here: the side effect is in this process's list, on the thread that made the call
    # (the caller serves the peer's nested request while it waits for its reply)
    assert calls == [(21, threading.get_ident())]
    assert root.thread_ident() != threading.get_ident()  # while the service itself runs elsewhere


class GreeterService(Service):
    def __init__(self) -> None:
        self.greeted: list[tuple[str, int]] = []

    def exposed_greet(self, name: str) -> str:
        self.greeted.append((name, threading.get_ident()))
        return f"hello {name}"


def test_server_calls_back_into_the_client_service(connect_to: ConnectTo) -> None:
    client = GreeterService()
    conn = connect_to(ProxyService, client_service=client)
    assert conn.root.call_client("server") == "hello server"
    assert client.greeted == [("server", threading.get_ident())]


def test_objects_return_to_their_owner_as_the_original(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    # client-owned objects come back as themselves
    for value in (object(), [1, 2], {"k": "v"}, Widget(1), test_objects_return_to_their_owner_as_the_original):
        assert root.echo(value) is value
    # server-owned objects sent back arrive on the server as the original
    widget = root.keep_widget(4)
    assert root.is_kept(widget) is True
    assert root.is_kept(Widget(4)) is False  # an equal local Widget is another object
    # and the same remote object is always the same proxy here
    assert root.echo(widget) is widget


def test_proxy_class_is_cached_per_remote_type(connect_to: ConnectTo) -> None:
    root = connect_to(ProxyService).root
    first, second = root.Widget(1), root.Widget(2)
    assert first is not second
    assert type(first) is type(second)
    assert type(root.Gadget()) is not type(first)
    assert type(root.new_list(1)) is type(root.get_items())
    assert type(root.get_data()) is not type(root.get_items())
    assert issubclass(type(first), rpc_service.Proxy)


def test_equal_remote_types_share_a_proxy_class_across_connections(connect_to: ConnectTo) -> None:
    first_conn = connect_to(ProxyService)
    second_conn = connect_to(ProxyService)
    first, second = first_conn.root.Widget(1), second_conn.root.Widget(1)
    # a proxy class holds no connection state, so equal descriptors share one class
    assert type(first) is type(second)
    # ... while each proxy still talks over its own connection
    assert first._rpc_conn is first_conn and second._rpc_conn is second_conn
    second_conn.close()
    assert first.get_size() == 1


def test_a_peers_descriptor_is_not_kept_once_its_proxy_classes_are_gone() -> None:
    """Regression (review of the identity table of proxy classes): the descriptor objects a
    peer sent were kept, up to 64 of them (each up to ~1 MiB), after every class made of them
    and every connection was gone. What the cache keeps follows what is in use.
    (Semi-private: the table is not in the API.)"""
    from rpc_service._proxy import _CLASSES

    method = f"only_here_{threading.get_ident()}"
    service = type("OnlyHere", (Service,), {f"exposed_{method}": lambda self: 1})

    def kept() -> bool:
        return any(method in str(info) for info, _ in list(_CLASSES._known.values()))

    conn = rpc_service.connect_thread(remote_service=service)
    assert getattr(conn.root, method)() == 1
    assert kept()  # known while its class is in use
    conn.close()
    del conn
    deadline = time.monotonic() + 5
    while kept() and time.monotonic() < deadline:  # (the serving side lets go of its connection on its thread)
        gc.collect()
        time.sleep(0.05)
    assert not kept()


# -- one round trip -------------------------------------------------------------------------------

_HEADER = struct.Struct("<BBHII")  # docs/protocol.md §3: type u8, flags u8, reserved u16, seq u32, length u32


class WireTap:
    """A stream wrapper that records every frame crossing a connection, each way.

    Installed as the client connection's stream once the handshake is done, it sees exactly
    the bytes on the wire (the connection writes through and reads from ``_stream`` on
    every use) and parses the fixed 12-byte frame headers of docs/protocol.md §3, plus the
    ``op`` byte that opens a REQUEST payload. Counting frames rather than method calls
    makes the check independent of how the library is structured inside: a hidden
    INSPECT or GETATTR before a call would show up as a second REQUEST frame.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._out = bytearray()
        self._in = bytearray()
        self.sent: list[tuple[FrameType, Op | None]] = []
        self.received: list[tuple[FrameType, Op | None]] = []

    @staticmethod
    def _parse(buf: bytearray, into: list[tuple[FrameType, Op | None]]) -> None:
        while len(buf) >= _HEADER.size:
            kind, _flags, _reserved, _seq, length = _HEADER.unpack_from(buf)
            if len(buf) < _HEADER.size + length:
                return
            frame_type = FrameType(kind)
            op = Op(buf[_HEADER.size]) if frame_type is FrameType.REQUEST else None
            into.append((frame_type, op))
            del buf[: _HEADER.size + length]

    def reset(self) -> None:
        with self._lock:
            self.sent.clear()
            self.received.clear()

    def requests(self) -> list[Op | None]:
        with self._lock:
            return [op for kind, op in self.sent if kind is FrameType.REQUEST]

    def replies(self) -> list[FrameType]:
        with self._lock:
            return [kind for kind, _ in self.received if kind in (FrameType.REPLY, FrameType.ERROR)]

    # -- the Stream protocol --

    @property
    def closed(self) -> bool:
        return bool(self._inner.closed)

    def fileno(self) -> int:
        return int(self._inner.fileno())

    def close(self) -> None:
        self._inner.close()

    def write(self, buffers: Sequence[Buffer]) -> None:
        with self._lock:
            for buffer in buffers:
                self._out += buffer
            self._parse(self._out, self.sent)
        self._inner.write(buffers)

    def read_into(self, buffer: memoryview, timeout: float | None) -> int:
        count: int = self._inner.read_into(buffer, timeout)
        with self._lock:
            self._in += buffer[:count]
            self._parse(self._in, self.received)
        return count


def _tap(conn: Connection) -> WireTap:
    tap = WireTap(conn._stream)
    conn._stream = tap
    return tap


def test_a_method_call_on_root_is_one_request(connect_to: ConnectTo) -> None:
    conn = connect_to(ProxyService)
    tap = _tap(conn)
    assert conn.root.add(2, 3, scale=2) == 10
    assert tap.requests() == [Op.CALLATTR]
    assert tap.replies() == [FrameType.REPLY]
    # and every further call too (nothing is looked up lazily the first time)
    tap.reset()
    for value in range(5):
        assert conn.root.add(value) == value
    assert tap.requests() == [Op.CALLATTR] * 5
    # an error costs the same
    tap.reset()
    with pytest.raises(TypeError):
        conn.root.add()
    assert tap.requests() == [Op.CALLATTR]
    assert tap.replies() == [FrameType.ERROR]


def test_a_method_call_on_a_returned_object_is_one_request(connect_to: ConnectTo) -> None:
    conn = connect_to(ProxyService)
    tap = _tap(conn)
    widget = conn.root.keep_widget(1)  # the type's descriptor comes with the reference...
    assert tap.requests() == [Op.CALLATTR]
    tap.reset()
    assert widget.grow(2) == 3  # ...so the first call on it needs no extra look-up
    assert len(conn.root.get_items()) == 3
    assert tap.requests() == [Op.CALLATTR, Op.CALLATTR, Op.CALLATTR]
    tap.reset()
    assert conn.root.answer == 42  # a plain attribute: one GETATTR
    assert tap.requests() == [Op.GETATTR]

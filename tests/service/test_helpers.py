"""Helpers and the serving API: BgServingThread, buffiter, restricted, ping, serve, poll_all.

Requests are counted with ``tests.service.helpers.count_requests``.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Iterator

import pytest

import rpc_service
from rpc_service import AsyncResultTimeout, BgServingThread, Connection, Service, async_, buffiter, restricted

from .conftest import ConnectTo
from .helpers import count_requests

pytestmark = pytest.mark.timeout(60)


class Thing:
    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b
        self._secret = "hidden"

    def method(self) -> str:
        return f"method({self.a})"


class Item:
    def __init__(self, index: int) -> None:
        self.index = index

    def exposed_get(self) -> int:
        return self.index


class HelperService(Service):
    """Stores a client callback and fires it from a thread of the server's own."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.callback: Callable[[int], Any] | None = None
        self.fired: list[Any] = []
        self.fire_errors: list[BaseException] = []
        self.fire_done = threading.Event()
        self.items = list(range(1000))
        self.gate = threading.Event()

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_block(self) -> str:
        self.gate.wait(10)
        return "released"

    def exposed_register(self, callback: Callable[[int], Any]) -> None:
        self.callback = callback

    def exposed_fire(self, count: int, after_reply: bool = False) -> None:
        """Call the stored callback ``count`` times from a new server-side thread; return at once.

        ``after_reply``: start only once the reply to this call is on the wire (so the
        client cannot serve the callbacks while it waits for that reply).
        """
        callback = self.callback
        conn = self.conn
        assert callback is not None and conn is not None

        def run() -> None:
            try:
                deadline = time.monotonic() + 5
                # semi-private: the protocol's table of the peer's requests not yet answered
                while after_reply and conn._proto._pending_in and time.monotonic() < deadline:
                    time.sleep(0.001)
                for index in range(count):
                    self.fired.append(callback(index))
            except BaseException as exc:
                self.fire_errors.append(exc)
            finally:
                self.fire_done.set()

        threading.Thread(target=run, name="server-fire", daemon=True).start()

    def exposed_items(self) -> list[int]:
        return self.items  # a list travels by reference

    def exposed_things(self, count: int) -> list[Item]:
        return [Item(index) for index in range(count)]

    def exposed_numbers(self, count: int) -> Iterator[int]:
        return iter(range(count))

    def exposed_getattr(self, obj: Any, name: str) -> Any:
        return getattr(obj, name)

    def exposed_setattr(self, obj: Any, name: str, value: Any) -> None:
        setattr(obj, name, value)

    def exposed_call_method(self, obj: Any, name: str) -> Any:
        return getattr(obj, name)()

    def exposed_dir(self, obj: Any) -> list[str]:
        return dir(obj)

    def exposed_close_later(self, delay: float) -> None:
        assert self.conn is not None
        threading.Timer(delay, self.conn.close).start()


class ClientService(Service):
    def __init__(self) -> None:
        self.received: list[int] = []
        self.threads: set[str] = set()
        self.all_received = threading.Event()
        self.expected = 0

    def exposed_notify(self, value: int) -> int:
        self.received.append(value)
        self.threads.add(threading.current_thread().name)
        if len(self.received) >= self.expected:
            self.all_received.set()
        return value * 10


@pytest.fixture
def service() -> Iterator[HelperService]:
    svc = HelperService()
    yield svc
    svc.gate.set()


# -- BgServingThread ------------------------------------------------------------------


def test_bg_serving_thread_serves_server_callbacks(
    no_thread_leak: None, connect_to: ConnectTo, service: HelperService
) -> None:
    client = ClientService()
    client.expected = 5
    conn = connect_to(service, client_service=client)
    root: Any = conn.root
    root.register(client.exposed_notify)
    bg = BgServingThread(conn)
    try:
        assert bg.active
        root.fire(5, after_reply=True)
        # the main thread stays idle: only the background thread can serve the callbacks
        assert client.all_received.wait(5)
        assert service.fire_done.wait(5)
        assert client.received == [0, 1, 2, 3, 4]
        assert client.threads == {"rpc-bg-serving"}
        assert service.fired == [0, 10, 20, 30, 40]
        assert service.fire_errors == []
    finally:
        bg.stop()
    assert not bg.active
    assert not bg._thread.is_alive()  # semi-private: stop() joined it
    assert root.echo("after stop") == "after stop"  # the connection is still fine


def test_bg_serving_thread_shares_the_connection_with_callers(
    no_thread_leak: None, connect_to: ConnectTo, service: HelperService
) -> None:
    """The main thread keeps calling while the server calls back from its own thread."""
    client = ClientService()
    client.expected = 50
    conn = connect_to(service, client_service=client)
    root: Any = conn.root
    root.register(client.exposed_notify)
    bg = BgServingThread(conn, interval=0.05)
    try:
        root.fire(50)
        for index in range(200):
            assert root.echo(index) == index
        assert service.fire_done.wait(10)
        assert client.all_received.wait(5)
        assert sorted(client.received) == list(range(50))
        assert service.fire_errors == []
    finally:
        bg.stop()


def test_without_serving_the_callback_waits_for_serve(connect_to: ConnectTo, service: HelperService) -> None:
    client = ClientService()
    client.expected = 1
    conn = connect_to(service, client_service=client)
    root: Any = conn.root
    root.register(client.exposed_notify)
    root.fire(1, after_reply=True)
    assert not client.all_received.wait(0.2)  # nobody reads this side
    assert conn.serve(5) is True  # serves the server's request
    assert client.received == [0]
    assert service.fire_done.wait(5)
    assert service.fired == [0]


def test_bg_serving_thread_ends_when_the_connection_closes(
    no_thread_leak: None, connect_to: ConnectTo, service: HelperService
) -> None:
    conn = connect_to(service)
    ended = threading.Event()
    bg = BgServingThread(conn, ended.set, interval=0.05)
    conn.root.close_later(0.1)
    assert ended.wait(5)
    assert not bg.active
    bg.stop()  # harmless after the fact
    assert conn.closed


def test_bg_serving_thread_stop_runs_the_callback(no_thread_leak: None, connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    calls: list[str] = []
    bg = BgServingThread(conn, lambda: calls.append("done"), interval=0.05)
    started = time.monotonic()
    bg.stop()
    assert time.monotonic() - started < 2
    assert calls == ["done"]
    assert not conn.closed


# -- buffiter -------------------------------------------------------------------------


def test_buffiter_yields_everything_in_order_with_few_round_trips(
    connect_to: ConnectTo, service: HelperService
) -> None:
    conn = connect_to(service)
    remote = conn.root.items()
    assert rpc_service.is_proxy(remote)
    counter = count_requests(conn)

    assert list(buffiter(remote)) == service.items
    buffered = counter[0]
    assert buffered <= 2 + math.ceil(len(service.items) / 256)

    counter[0] = 0
    assert list(buffiter(remote, chunk=100)) == service.items
    assert counter[0] <= 2 + len(service.items) // 100

    counter[0] = 0
    assert [item for item in remote] == service.items  # a builtin list: batched transparently
    assert counter[0] <= buffered


def test_buffiter_edge_cases(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    service.items = []
    assert list(buffiter(conn.root.items())) == []
    service.items = list(range(512))  # an exact multiple of the chunk
    assert list(buffiter(conn.root.items(), chunk=256)) == list(range(512))
    assert list(buffiter(conn.root.items(), chunk=1))[:3] == [0, 1, 2]
    assert list(buffiter(conn.root.numbers(10), chunk=3)) == list(range(10))  # a remote iterator
    things = list(buffiter(conn.root.things(5), chunk=2))  # items that are themselves proxies
    assert [thing.get() for thing in things] == list(range(5))
    assert list(buffiter([1, 2, 3])) == [1, 2, 3]  # local: plain iteration
    with pytest.raises(ValueError):
        list(buffiter(conn.root.items(), chunk=0))


# -- restricted -----------------------------------------------------------------------


def test_restricted_exposes_only_the_named_attributes(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service, client_config={"allow_setattr": True})
    root: Any = conn.root
    thing = Thing(1, 2)
    view = restricted(thing, ["a"], ["a"])

    assert root.getattr(view, "a") == 1
    for hidden in ("b", "_secret", "method", "__dict__"):
        with pytest.raises(AttributeError):
            root.getattr(view, hidden)
    root.setattr(view, "a", 10)
    assert thing.a == 10
    assert root.getattr(view, "a") == 10
    with pytest.raises(AttributeError):
        root.setattr(view, "b", 20)
    assert thing.b == 2
    names = root.dir(view)
    assert "a" in names and "b" not in names and "method" not in names


def test_restricted_without_write_access(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service, client_config={"allow_setattr": True})
    root: Any = conn.root
    thing = Thing(1, 2)
    view = restricted(thing, ["a", "method"])
    assert root.call_method(view, "method") == "method(1)"
    with pytest.raises(AttributeError):
        root.setattr(view, "a", 5)
    assert thing.a == 1


def test_unrestricted_object_is_not_reachable_either(connect_to: ConnectTo, service: HelperService) -> None:
    """Without restricted() a plain object exposes nothing by default (the baseline)."""
    conn = connect_to(service)
    with pytest.raises(AttributeError):
        conn.root.getattr(Thing(1, 2), "a")


# -- ping, serve, poll_all, context manager --------------------------------------------


def test_ping(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    conn.ping()
    conn.ping(b"payload")
    conn.ping(b"x" * 100_000, timeout=5)
    assert not conn.closed


def test_ping_timeout_leaves_the_connection_usable(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    blocked = async_(conn.root.block)()
    with pytest.raises(AsyncResultTimeout, match="ping"):
        conn.ping(timeout=0.2)  # the server is busy in block()
    service.gate.set()
    assert blocked.value == "released"
    conn.ping(timeout=5)
    assert conn._slots == {}  # semi-private: the abandoned ping left nothing registered


def test_serve_returns_false_when_idle(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    started = time.monotonic()
    assert conn.serve(0.1) is False
    assert 0.05 <= time.monotonic() - started < 2
    assert conn.serve(0) is False


def test_serve_returns_true_when_it_served(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    result = async_(conn.root.echo)("served")
    assert conn.serve(5) is True
    assert result._ready  # semi-private: delivered by serve(), without .ready polling again
    assert result.value == "served"


def test_poll_all(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    assert conn.poll_all() is False
    assert conn.poll_all(0.05) is False
    echo = async_(conn.root.echo)
    results = [echo(index) for index in range(10)]
    conn.ping()  # all ten replies precede the pong: the ping's wait delivered them
    assert all(result._ready for result in results)
    more = [echo(index) for index in range(10)]
    deadline = time.monotonic() + 5
    served = False
    while not all(result._ready for result in more) and time.monotonic() < deadline:
        served = conn.poll_all(0.05) or served
    assert served is True
    assert [result.value for result in more] == list(range(10))


def test_poll_all_after_close_is_false(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    conn.close()
    assert conn.poll_all(0.05) is False


def test_serve_all_returns_when_the_peer_closes(connect_to: ConnectTo, service: HelperService) -> None:
    conn = connect_to(service)
    conn.root.close_later(0.1)
    thread = threading.Thread(target=conn.serve_all)
    thread.start()
    thread.join(5)
    assert not thread.is_alive()
    assert conn.closed


def test_context_manager_closes(connect_to: ConnectTo, service: HelperService) -> None:
    with connect_to(service) as conn:
        assert conn.root.echo("inside") == "inside"
        assert isinstance(conn.fileno(), int)
        assert "open" in repr(conn)
    assert conn.closed
    assert "closed" in repr(conn)
    with pytest.raises(rpc_service.ConnectionClosedError):
        conn.root.echo(1)


def test_context_manager_closes_on_error(connect_to: ConnectTo, service: HelperService) -> None:
    with pytest.raises(KeyError):
        with connect_to(service) as conn:
            raise KeyError("boom")
    assert conn.closed


def test_connect_as_context_manager_over_tcp() -> None:
    with rpc_service.ThreadedServer(HelperService) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            assert conn.root.echo(1) == 1
        assert conn.closed

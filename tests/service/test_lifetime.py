"""Reference lifetime: a lent object lives exactly as long as the peer holds a proxy of it.

The owner's object table is read through ``Connection._boxer.lent`` and the holder's
proxy table through ``Connection._boxer.held``: semi-private counters, used here on
purpose because they are the only direct way to see a leak. Releases are batched and
piggybacked on the next frame the holder sends, so every check first sends one with
``conn.ping()``.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from typing import Any, Callable

import pytest

import rpc_service
from rpc_service import Connection, Service

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class Thing:
    """A plain object lent by reference (not a builtin immutable, so never by value)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def exposed_get(self) -> int:
        return self.value


class OwnerService(Service):
    """Lends objects and reports the size of its side's object table."""

    def __init__(self) -> None:
        self.conn: Connection | None = None
        self.kept = Thing(7)

    def on_connect(self, conn: Connection) -> None:
        self.conn = conn

    def exposed_lent(self) -> int:
        # semi-private: the owner's table of objects currently held by the peer
        assert self.conn is not None
        return self.conn._boxer.lent

    def exposed_held(self) -> int:
        # semi-private: the proxies of the peer's objects this side holds
        assert self.conn is not None
        return self.conn._boxer.held

    def exposed_make(self) -> Thing:
        return Thing(1)

    def exposed_make_many(self, count: int, start: int = 0) -> tuple[Thing, ...]:
        return tuple(Thing(start + i) for i in range(count))

    def exposed_kept_thing(self) -> Thing:
        return self.kept

    def exposed_pair(self) -> tuple[Thing, Thing]:
        return (self.kept, self.kept)

    def exposed_forget_kept(self) -> None:
        self.kept = Thing(self.kept.value + 1)

    def exposed_send_twice(self, callback: Callable[[Thing], int]) -> tuple[int, int]:
        # Two callbacks in a row: the client's proxy from the first one dies after it
        # answered, so its release is still queued on the client when the second call
        # sends the same object again.
        return callback(self.kept), callback(self.kept)

    def exposed_call_with(self, callback: Callable[[Any], Any], arg: Any) -> Any:
        return callback(arg)


def _settle(conn: Connection) -> None:
    """Drop garbage and send the queued releases (they ride on the ping frame)."""
    gc.collect()
    conn.ping()


def _lent_on_server(conn: Connection) -> int:
    _settle(conn)
    lent: int = conn.root.lent()
    return lent


def test_lent_count_follows_the_proxies_held(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    assert baseline == 1  # only the service itself, held by the client as conn.root
    held_before = conn._boxer.held

    things = root.make_many(10)
    assert len(things) == 10
    assert _lent_on_server(conn) == baseline + 10
    assert conn._boxer.held == held_before + 10

    one = root.make()
    assert _lent_on_server(conn) == baseline + 11

    del things
    assert _lent_on_server(conn) == baseline + 1
    assert one.get() == 1  # the one still held is still alive and usable
    del one
    assert _lent_on_server(conn) == baseline
    assert conn._boxer.held == held_before


def test_releases_wait_for_the_next_frame(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    things = root.make_many(5)
    del things
    gc.collect()
    # nothing was sent since the proxies died: the owner still lends them
    # (reading the count is itself a request, so the releases arrive with it)
    pending = len(conn._boxer.releases_owed)  # semi-private: the queue of releases owed
    assert pending == 5
    assert root.lent() == baseline  # the request carried the releases ahead of itself
    assert len(conn._boxer.releases_owed) == 0


def test_same_object_gives_the_same_proxy_while_alive(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    first = root.kept_thing()
    second = root.kept_thing()
    assert first is second
    a, b = root.pair()
    assert a is b is first
    # one table entry on the owner however many times it was sent
    assert _lent_on_server(conn) == baseline + 1
    assert first.get() == 7
    del first, second, a, b
    assert _lent_on_server(conn) == baseline


def test_distinct_objects_give_distinct_proxies(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    x, y = conn.root.make_many(2)
    assert x is not y
    assert (x.get(), y.get()) == (0, 1)


def test_dropped_then_resent_object_works(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    proxy = root.kept_thing()
    alive = weakref.ref(proxy)
    del proxy
    gc.collect()
    assert alive() is None
    # the release rides on this very request: the owner forgets the object, then lends it anew
    again = root.kept_thing()
    assert again.get() == 7
    assert _lent_on_server(conn) == baseline + 1
    del again
    assert _lent_on_server(conn) == baseline


def test_resent_before_the_release_arrived(connect_to: ConnectTo) -> None:
    """The owner sends an object again while the holder's release of it is still queued."""
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    seen: list[weakref.ref[Any]] = []
    queued: list[int] = []

    def callback(thing: Any) -> int:
        if seen:
            assert seen[-1]() is None  # the first proxy is gone...
            assert thing is not seen[-1]()
        queued.append(len(conn._boxer.releases_owed))  # semi-private: ...its release not yet sent
        seen.append(weakref.ref(thing))
        value: int = thing.get()
        return value

    assert root.send_twice(callback) == (7, 7)
    assert queued == [0, 1]
    # every reference sent was released: the owner table is back to the service alone
    assert _lent_on_server(conn) == baseline
    # and the object can still be handed out and used
    assert root.kept_thing().get() == 7
    assert _lent_on_server(conn) == baseline


def test_owner_drops_its_own_reference_but_peer_keeps_it_alive(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    proxy = root.kept_thing()
    root.forget_kept()  # the service no longer refers to it: only the lending table does
    gc.collect()
    assert proxy.get() == 7
    assert root.kept_thing().get() == 8
    assert proxy is not root.kept_thing()


def test_client_objects_lent_to_the_server_are_released(connect_to: ConnectTo) -> None:
    """The same accounting the other way round: what the client lends comes back."""
    conn = connect_to(OwnerService)
    root: Any = conn.root
    lent_before = conn._boxer.lent  # semi-private: the client's table of lent objects
    things = [Thing(i) for i in range(20)]

    def identity(arg: Any) -> Any:
        return arg

    for thing in things:
        assert root.call_with(identity, thing) is thing  # comes back as itself
    # the server dropped its proxies after each call; its releases arrive with its next frame
    deadline = time.monotonic() + 5
    while conn._boxer.lent != lent_before and time.monotonic() < deadline:
        root.held()  # the server's reply frame carries its queued releases
        gc.collect()
    assert conn._boxer.lent == lent_before
    assert root.held() == 1  # the server holds only the client's root service


@pytest.mark.timeout(120)
def test_hundred_thousand_proxies_leave_no_trace(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    held_before = conn._boxer.held
    total, per_call = 100_000, 1_000
    started = time.monotonic()
    checked = 0
    for start in range(0, total, per_call):
        things = root.make_many(per_call, start)
        assert len(things) == per_call
        if start % 25_000 == 0:  # spot-check that the proxies are live and distinct
            assert things[0].get() == start and things[-1].get() == start + per_call - 1
            checked += 1
        del things
        assert time.monotonic() - started < 25, f"too slow: {start} proxies in 25 s"
    assert checked == 4
    assert _lent_on_server(conn) == baseline
    assert conn._boxer.held == held_before
    assert len(conn._boxer.releases_owed) == 0  # nothing left owed


def test_closing_clears_both_tables(connect_to: ConnectTo) -> None:
    conn = connect_to(OwnerService)
    things = conn.root.make_many(3)
    assert conn._boxer.held >= 3
    conn.close()
    assert conn._boxer.held == 0 and conn._boxer.lent == 0
    # a proxy outliving its connection fails cleanly rather than hanging
    with pytest.raises(rpc_service.ConnectionClosedError):
        things[0].get()
    assert "closed connection" in repr(things[0])


def test_threads_creating_and_dropping_proxies_leave_no_trace(connect_to: ConnectTo) -> None:
    """Proxies of the same object die on one thread while another receives it again."""
    conn = connect_to(OwnerService)
    root: Any = conn.root
    baseline = _lent_on_server(conn)
    failures: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for call in range(200):
                if call % 2:
                    assert root.kept_thing().get() == 7
                else:
                    things = root.make_many(10, call)
                    assert things[3].get() == call + 3
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []
    assert _lent_on_server(conn) == baseline
    assert conn._boxer.held == 1  # only the peer's root service

"""Shared toolkit of the adversarial suite: the service under attack, hostile peers, baselines.

Owns the representative service every adversarial case attacks (:class:`TargetService`),
hand-built frames (:func:`frame`, per ``docs/protocol.md``), a hostile peer that speaks the
protocol by hand over a plain socket (:class:`RawPeer`, on the sans-I/O
``rpc_protocol.Connection`` so it can break any rule on purpose), the thread/fd
:class:`Baseline`, and the environment for child processes. Everything is loopback-only and
every wait here is bounded in time; nothing here starts a server (``conftest.py`` does).
"""

from __future__ import annotations

import itertools
import os
import socket
import struct
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import rpc_protocol as wire
from rpc_service import Connection, Service

REPO = Path(__file__).resolve().parents[2]
SRC_PATHS = [str(path) for path in sorted((REPO / "packages").glob("*/src"))]
HEADER = struct.Struct("<BBHII")  # type, flags, reserved, seq, length (docs/protocol.md §3)


def child_env() -> dict[str, str]:
    """The environment of a child Python process that imports this checkout's packages."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*SRC_PATHS, str(REPO)])
    env.pop("PYTHONHASHSEED", None)
    return env


# -- the service under attack -------------------------------------------------------------------


class Item:
    """A plain object (not a Service) handed out by the service; only ``exposed_`` names reach it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.secret = "item-secret"
        self._private = "item-private"

    def exposed_get_name(self) -> str:
        return self.name

    def public_method(self) -> str:  # public but not exposed: unreachable by default
        return "public"

    def _hidden(self) -> str:
        return "hidden"


class TargetService(Service):
    """The representative service every adversarial case attacks.

    Shared by all the connections of a server (the fixtures pass an instance), so a test can
    see what it went through: how many clients connected and disconnected, which calls
    started and finished, and weak references to every :class:`Item` it lent.
    """

    def __init__(self) -> None:
        self.secret = "service-secret"
        self._lock = threading.Lock()
        self.connects = 0
        self.disconnects = 0
        self.started = threading.Event()
        self.finished = threading.Event()
        self.items: list[weakref.ref[Item]] = []

    def on_connect(self, conn: Connection) -> None:
        with self._lock:
            self.connects += 1

    def on_disconnect(self, conn: Connection) -> None:
        with self._lock:
            self.disconnects += 1

    exposed_ItemClass = Item  # a class handed out on purpose (a factory): its own rules still hold

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_add(self, a: Any, b: Any) -> Any:
        return a + b

    def exposed_slow(self, seconds: float) -> str:
        self.started.set()
        time.sleep(min(float(seconds), 5.0))
        self.finished.set()
        return "done"

    def exposed_blob(self, size: int) -> bytes:
        return b"\xab" * min(int(size), 16 * 1024 * 1024)

    def exposed_make(self, name: str) -> Item:
        item = Item(name)
        with self._lock:
            self.items.append(weakref.ref(item))
        return item

    def exposed_numbers(self) -> list[int]:
        return list(range(100))

    def exposed_forever(self) -> Iterator[int]:
        """An endless iterator: a peer must not be able to drain it in one request."""
        return itertools.count()

    def exposed_call(self, callback: Callable[..., Any], *args: Any) -> Any:
        return callback(*args)

    def live_items(self) -> int:
        with self._lock:
            return sum(1 for ref in self.items if ref() is not None)

    def _private_method(self) -> str:
        return "private"

    def public_method(self) -> str:
        return "public"


# -- frames and raw peers -------------------------------------------------------------------------


def frame(kind: int, seq: int = 0, payload: bytes = b"", *, flags: int = 0, reserved: int = 0, length: int | None = None) -> bytes:
    """One frame built by hand: the 12-byte header (``length`` overrides the real one) and payload."""
    return HEADER.pack(kind, flags, reserved, seq, len(payload) if length is None else length) + payload


def joined(buffers: list[wire.Buffer]) -> bytes:
    return b"".join(bytes(buf) for buf in buffers)


def preface(low: int = wire.MIN_VERSION, high: int = wire.MAX_VERSION, reserved: int = 0, magic: bytes = wire.MAGIC) -> bytes:
    return magic + struct.pack("<BBH", low, high, reserved)


def assert_prompt(conn: Connection, within: float = 1.0) -> None:
    """The normal client is served, and promptly."""
    start = time.monotonic()
    assert conn.root.echo("bystander") == "bystander"
    elapsed = time.monotonic() - start
    assert elapsed < within, f"the normal client waited {elapsed:.2f} s"


def value_of(answer: wire.Reply | wire.ErrorReply) -> Any:
    """The value of a reply; an error reply fails the test with what the server said."""
    assert isinstance(answer, wire.Reply), f"the server answered with an error: {answer}"
    return answer.value


class RawPeer:
    """A hostile client: a plain socket plus a by-hand sans-I/O protocol state machine.

    ``handshake()`` opens a real rpc connection; after that the test may send well-formed
    requests (``call``), or any bytes at all (``sock.sendall``). The state machine has no box
    hook, so only plain values (and ``BackRef``/``Ref`` objects) can be sent.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.proto = wire.Connection()
        self.root: wire.Ref | None = None
        self.events: list[wire.Event] = []

    def handshake(self, services: tuple[str, ...] = ("RAW",), timeout: float = 5.0, root: object = None) -> None:
        """Our preface and Hello at once (``root``: what we offer, e.g. a ``Ref``), then the
        server's Hello, which it sends only after ours (and its on_connect)."""
        self.sock.sendall(joined([*self.proto.send(wire.Preface()), *self.proto.send(wire.Hello(services=services, root=root))]))
        hello = self.wait_for(wire.Hello, timeout=timeout)
        assert isinstance(hello, wire.Hello) and isinstance(hello.root, wire.Ref)
        self.root = hello.root

    @property
    def root_ref(self) -> wire.BackRef:
        """The server's root service, as the server's own object sent home."""
        assert self.root is not None
        return wire.BackRef(self.root.oid)

    def request_bytes(self, op: wire.Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> tuple[int, bytes]:
        seq = self.proto.next_seq()
        return seq, joined(self.proto.send(wire.Request(seq, op, target, args, kwargs or {})))

    def call(self, op: wire.Op, target: object, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, timeout: float = 5.0) -> wire.Reply | wire.ErrorReply:
        """Send one request and return its reply or error event."""
        seq, data = self.request_bytes(op, target, args, kwargs)
        self.sock.sendall(data)
        return self.answer(seq, timeout)

    def call_root(self, method: str, *args: Any, timeout: float = 5.0) -> wire.Reply | wire.ErrorReply:
        return self.call(wire.Op.CALLATTR, self.root_ref, (method, *args), timeout=timeout)

    def answer(self, seq: int, timeout: float = 5.0) -> wire.Reply | wire.ErrorReply:
        def match(event: wire.Event) -> bool:
            return isinstance(event, (wire.Reply, wire.ErrorReply)) and event.seq == seq

        event = self.wait_for(match, timeout=timeout)
        assert isinstance(event, (wire.Reply, wire.ErrorReply))
        return event

    def wait_for(self, what: type | Callable[[wire.Event], bool], timeout: float = 5.0) -> wire.Event:
        """Read until an event of type ``what`` (or matching it) arrives; bounded by ``timeout``."""
        match: Callable[[wire.Event], bool] = (lambda e: type(e) is what) if isinstance(what, type) else what
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if match(event):
                    del self.events[index]
                    return event
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"nothing matching {what!r} from the server within {timeout} s"
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            assert data, "the server closed the connection"
            self.events.extend(self.proto.receive_data(data))


# -- baselines ---------------------------------------------------------------------------------------


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Baseline:
    """Threads and open file descriptors of this process at one moment, to come back to.

    ``capture()`` (re)records them; ``wait_back(timeout)`` waits (bounded) until every thread
    started since has ended and the fd count is no higher, and returns a description of what
    is still over (empty when back); ``assert_back(timeout)`` fails the test if it is not.
    """

    def __init__(self) -> None:
        self.threads: set[threading.Thread] = set()
        self.fds = 0
        self.capture()

    def capture(self) -> None:
        self.threads = set(threading.enumerate())
        self.fds = open_fds()

    def excess(self) -> str:
        extra = sorted(thread.name for thread in threading.enumerate() if thread not in self.threads and thread.is_alive())
        fds = open_fds()
        problems = []
        if extra:
            problems.append(f"threads still running: {extra}")
        if fds > self.fds:
            problems.append(f"{fds - self.fds} more open fds than the baseline {self.fds}: {fd_targets()}")
        return "; ".join(problems)

    def wait_back(self, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            problem = self.excess()
            if not problem or time.monotonic() >= deadline:
                return problem
            extra = [thread for thread in threading.enumerate() if thread not in self.threads and thread.is_alive()]
            if extra:
                extra[0].join(timeout=min(0.05, max(0.0, deadline - time.monotonic())))
            else:
                time.sleep(0.02)

    def assert_back(self, timeout: float = 5.0) -> None:
        problem = self.wait_back(timeout)
        assert not problem, f"not back to the baseline after {timeout} s: {problem}"


def fd_targets() -> list[str]:
    """What this process's descriptors point at (for failure messages)."""
    targets = []
    for name in sorted(os.listdir("/proc/self/fd"), key=int):
        try:
            targets.append(f"{name}->{os.readlink(f'/proc/self/fd/{name}')}")
        except OSError:
            pass
    return targets


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(step)
    return True


def python_child(code: str) -> list[str]:
    """argv of a child Python process running ``code``."""
    return [sys.executable, "-c", code]

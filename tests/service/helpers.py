"""Helpers the service-layer tests share (and the layers above reuse): running servers in
threads, watching a raw socket be dropped, counting the requests a connection makes, and
a class that cannot be hashed (its metaclass defines ``__eq__`` alone).

Counting wraps the protocol connection's ``send_request`` (reached through the semi-private
``_proto``): every request a proxy makes, synchronous or not, is framed by it.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable

from rpc_service import Connection, Server


class Running:
    """A server started in a thread; ``stop()`` closes it and checks its thread ended."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.thread = server.start_in_thread()

    def stop(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive(), "start() did not return after close()"


def dropped_within(sock: socket.socket, seconds: float) -> bool:
    """Read (and discard) until the server ends the connection: True on EOF or reset, False
    if it is still open after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except TimeoutError:
            return False


class RequestCount:
    """The requests a connection has sent since this was made (``count[0]``; ``count[0] = 0``
    starts counting again), read from ``conn.stats.calls_sent``: no patching, so it works
    whether ``rpc_protocol`` is compiled or not."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._start = conn.stats.calls_sent

    def __getitem__(self, index: int) -> int:
        if index != 0:
            raise IndexError(index)
        return self._conn.stats.calls_sent - self._start

    def __setitem__(self, index: int, value: int) -> None:
        if index != 0:
            raise IndexError(index)
        self._start = self._conn.stats.calls_sent - value


def count_requests(conn: Connection) -> RequestCount:
    """A counter of the requests ``conn`` sends from now on (see :class:`RequestCount`)."""
    return RequestCount(conn)


def run_threads(count: int, target: Callable[[int], None], timeout: float = 20) -> None:
    """Run ``target(index)`` on ``count`` threads at once; fail unless all end within ``timeout``."""
    threads = [threading.Thread(target=target, args=(index,), name=f"test-worker-{index}") for index in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "worker threads did not finish in time"


class _Unhashable(type):
    def __eq__(cls, other: object) -> bool:  # (no __hash__: its classes are unhashable)
        return cls is other

    __hash__ = None  # type: ignore[assignment]  # what defining __eq__ alone does; said for mypy


class OfUnhashableClass(metaclass=_Unhashable):
    """An object whose class cannot be a dict key or set member (``hash(type(obj))`` raises)."""

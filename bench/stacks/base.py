"""The small interface every stack module implements, and the constants all stacks share.

This module owns the contract between :mod:`bench.workloads` (which times things) and the stack
adapters (which only know how to serve and how to make one call of each kind). It must not do
any timing itself and must not import any RPC library.

A stack module exposes, at module level:

* ``NAME``: the column title;
* ``IDLE_NEEDS_THREAD``: True when a connection only stays open while the thread that opened it
  lives (``multiprocessing.managers`` keeps one connection per thread);
* ``describe()``: facts worth recording in the JSON (library version, serializer, ...);
* ``serve(report_port, max_connections)``: the server entry point, run in its own process; it
  binds 127.0.0.1 on port 0, calls ``report_port(port)`` once listening, then serves forever;
* ``connect(port)``: a :class:`Client` connected to that server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Protocol

HOST = "127.0.0.1"
#: Length of the list served by ``get_list`` (workload 4).
LIST_LEN = 10_000


class Client(Protocol):
    """One client connection to a stack's server; each method is one operation of a workload."""

    def noop(self) -> None:
        """Call the remote ``noop()`` (workloads 1, 5, 6, 7)."""

    def echo(self, data: bytes) -> Sized:
        """Send ``data`` and return what the server sent back (workload 2)."""

    def call_back(self, fn: Callable[[], None]) -> None:
        """Ask the server to call ``fn`` once, then return (workload 3)."""

    def get_list(self) -> Iterable[int]:
        """Return the server's ``LIST_LEN``-int list as the stack hands it over (workload 4)."""

    def close(self) -> None:
        """Close the connection; must not raise if the server is already gone."""


class StackModule(Protocol):
    """What :func:`importlib.import_module` returns for a stack module."""

    NAME: str
    IDLE_NEEDS_THREAD: bool

    def describe(self) -> dict[str, str]: ...

    def serve(self, report_port: Callable[[int], None], max_connections: int) -> None: ...

    def connect(self, port: int) -> Client: ...


def server_list() -> list[int]:
    """The list every server returns from ``get_list`` (a fresh list on each call)."""
    return list(range(LIST_LEN))


__all__ = ["HOST", "LIST_LEN", "Client", "StackModule", "server_list"]

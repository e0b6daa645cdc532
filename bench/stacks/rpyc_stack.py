"""RPyC 6 peer: a ``rpyc.Service`` with ``exposed_`` methods behind ``rpyc.ThreadedServer``.

This module owns the RPyC adapter and uses only RPyC's public API (``rpyc.Service``,
``rpyc.ThreadedServer``, ``rpyc.connect``). It must measure RPyC as its users write it:
``conn.root.noop()`` (a remote attribute lookup, then the call), a plain local function passed
as the callback, and plain netref iteration of the remote list (one round trip per item).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sized
from typing import Any

import rpyc  # type: ignore[import-untyped]

from bench.stacks.base import HOST, server_list

NAME = "rpyc"
IDLE_NEEDS_THREAD = False

#: Same on both sides; the default 30 s would be enough, this only guards slow CI machines.
_CONFIG: dict[str, Any] = {"sync_request_timeout": 120}


def describe() -> dict[str, str]:
    return {"version": str(getattr(rpyc, "__version__", "?")), "server": "rpyc.ThreadedServer"}


class BenchService(rpyc.Service):  # type: ignore[misc]  # rpyc ships no type information
    def exposed_noop(self) -> None:
        return None

    def exposed_echo(self, data: bytes) -> bytes:
        return data

    def exposed_call_back(self, fn: Callable[[], None]) -> None:
        fn()

    def exposed_get_list(self) -> list[int]:
        return server_list()


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    server = rpyc.ThreadedServer(
        BenchService, hostname=HOST, port=0, protocol_config=dict(_CONFIG)
    )
    # The socket is bound here but listen() only happens inside start(): report the port once
    # the server says it is active, or an early client is refused.
    runner = threading.Thread(target=server.start, daemon=True)
    runner.start()
    deadline = time.monotonic() + 30.0
    while not server.active:
        if not runner.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("rpyc.ThreadedServer did not start listening")
        time.sleep(0.005)  # start-up only, never on a measured path
    report_port(int(server.port))
    runner.join()


class RpycClient:
    def __init__(self, port: int) -> None:
        self._conn: Any = rpyc.connect(HOST, port, service=rpyc.VoidService, config=dict(_CONFIG))

    def noop(self) -> None:
        self._conn.root.noop()

    def echo(self, data: bytes) -> Sized:
        result: Sized = self._conn.root.echo(data)
        return result

    def call_back(self, fn: Callable[[], None]) -> None:
        self._conn.root.call_back(fn)

    def get_list(self) -> Iterable[int]:
        result: Iterable[int] = self._conn.root.get_list()
        return result

    def close(self) -> None:
        try:
            self._conn.close()
        except Exception:  # the server may be gone already
            pass


def connect(port: int) -> RpycClient:
    return RpycClient(port)

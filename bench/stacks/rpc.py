"""The stack under test: ``rpc_service``, written against the public API of DESIGN.md §3 only.

This module owns the ``rpc_service`` adapter. It must use nothing but the public names
(``Service``, ``VoidService``, ``ThreadedServer``, ``connect``) and must measure the library the
way its users write it: ``conn.root.noop()``, a plain local function as the callback, a plain
``for x in conn.root.get_list()``. Importing it raises ImportError (so the harness prints
``n/a``) when ``rpc_service`` is missing or lacks one of those names.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sized
from typing import Any

import rpc_service as _rpc_service_module

from bench.stacks.base import HOST, server_list

#: Seen as Any so that this file type-checks whatever state the library is in.
rpc_service: Any = _rpc_service_module

_REQUIRED = ("Service", "VoidService", "ThreadedServer", "connect")  # and .start_in_thread()
_missing = [name for name in _REQUIRED if not hasattr(rpc_service, name)]
if _missing:
    raise ImportError(f"rpc_service lacks {', '.join(_missing)}")

NAME = "rpc"
IDLE_NEEDS_THREAD = False

#: RPyC's key name (DESIGN.md §3); a generous bound so a slow machine never times out a 4 MiB echo.
_CONFIG: dict[str, Any] = {"sync_request_timeout": 120}


def describe() -> dict[str, str]:
    version = getattr(rpc_service, "__version__", None)
    if version is None:
        about = getattr(rpc_service, "__about__", None)
        version = getattr(about, "__version__", "?")
    return {"version": str(version), "server": "rpc_service.ThreadedServer"}


class BenchService(rpc_service.Service):  # type: ignore[misc]  # subclass of Any
    def exposed_noop(self) -> None:
        return None

    def exposed_echo(self, data: bytes) -> bytes:
        return data

    def exposed_call_back(self, fn: Callable[[], None]) -> None:
        fn()

    def exposed_get_list(self) -> list[int]:
        return server_list()


def serve(report_port: Callable[[int], None], max_connections: int, **config: Any) -> None:
    """Serve ``BenchService`` (``config``: more keys for its connections' config)."""
    server: Any = rpc_service.ThreadedServer(
        BenchService, hostname=HOST, port=0, protocol_config={**_CONFIG, **config}
    )
    server.start_in_thread()  # DESIGN.md §3: returns once listening, so no client is refused
    report_port(int(server.port))
    threading.Event().wait()  # serve until the harness terminates this process


class RpcClient:
    def __init__(self, port: int, **config: Any) -> None:
        self._conn: Any = rpc_service.connect(
            HOST, port, service=rpc_service.VoidService, config={**_CONFIG, **config}
        )

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


def connect(port: int) -> RpcClient:
    return RpcClient(port)

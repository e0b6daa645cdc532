"""stdlib peer: ``multiprocessing.managers.BaseManager`` serving one registered object over TCP.

This module owns the managers adapter and uses only the documented managers API
(``BaseManager.register``, ``get_server().serve_forever()``, ``connect()``, ``BaseProxy``
subclasses with ``_exposed_`` and ``_callmethod``). It must measure managers as their users
write them: a proxy to a shared object, results by value (pickle), and, for the callback, a
second manager server inside the client process whose proxy the client passes as the argument
(managers have no other way to call back into a client).

Quirks this must live with: every connection pays an HMAC challenge both ways; creating a proxy
opens extra short connections (create, incref, decref); a proxy keeps **one connection per
thread** per server address, so N idle connections from one process need N threads.
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
from collections.abc import Callable, Iterable, Sized
from multiprocessing.managers import BaseManager, BaseProxy
from typing import Any

from bench.stacks.base import HOST, server_list

NAME = "managers"
IDLE_NEEDS_THREAD = True

#: Both sides (and the callback server in the client) use this key; the benchmark binds loopback.
AUTHKEY = b"rpc-bench"


def describe() -> dict[str, str]:
    return {
        "version": f"stdlib {sys.version_info.major}.{sys.version_info.minor}",
        "serializer": "pickle",
        "server": "managers.Server (thread per connection)",
    }


class BenchObject:
    def noop(self) -> None:
        return None

    def echo(self, data: bytes) -> bytes:
        return data

    def call_back(self, cb: CallbackProxy) -> None:
        cb.call()  # the proxy is rebuilt here and connects back to the client's manager

    def get_list(self) -> list[int]:
        return server_list()


class BenchProxy(BaseProxy):
    _exposed_ = ("noop", "echo", "call_back", "get_list")

    def noop(self) -> None:
        self._callmethod("noop")

    def echo(self, data: bytes) -> bytes:
        result: bytes = self._call("echo", (data,))
        return result

    def call_back(self, cb: CallbackProxy) -> None:
        self._callmethod("call_back", (cb,))

    def get_list(self) -> list[int]:
        result: list[int] = self._call("get_list")
        return result

    def _call(self, method: str, args: tuple[Any, ...] = ()) -> Any:
        # typeshed declares _callmethod as returning None; it returns the remote result.
        call: Callable[..., Any] = self._callmethod
        return call(method, args)


class CallbackHolder:
    def __init__(self) -> None:
        self.fn: Callable[[], None] | None = None

    def call(self) -> None:
        if self.fn is not None:
            self.fn()


class CallbackProxy(BaseProxy):
    _exposed_ = ("call",)

    def call(self) -> None:
        self._callmethod("call")


_shared = BenchObject()


def _get_bench() -> BenchObject:
    return _shared


class BenchManager(BaseManager):
    pass


BenchManager.register("get_bench", callable=_get_bench, proxytype=BenchProxy)

#: The client process's callback target; calls come one at a time from the timing thread.
_CALLBACK_HOLDER = CallbackHolder()


def _get_callback() -> CallbackHolder:
    return _CALLBACK_HOLDER


class CallbackManager(BaseManager):
    pass


CallbackManager.register("get_callback", callable=_get_callback, proxytype=CallbackProxy)

_callback_managers: list[CallbackManager] = []


def _callback_service() -> CallbackManager:
    """The client process's callback server (started once, on a daemon thread) and a client of it.

    ``serve_forever`` has no clean stop (closing its listener makes its accept loop spin), so it
    lives as long as the client process does; there is one per process.
    """
    if not _callback_managers:
        server: Any = CallbackManager(address=(HOST, 0), authkey=AUTHKEY).get_server()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        manager = CallbackManager(address=server.address, authkey=AUTHKEY)
        manager.connect()
        _callback_managers.append(manager)
    return _callback_managers[0]


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    # Callback proxies rebuilt here authenticate with this process's key: make it the shared one.
    multiprocessing.current_process().authkey = AUTHKEY
    server: Any = BenchManager(address=(HOST, 0), authkey=AUTHKEY).get_server()
    report_port(int(server.address[1]))
    server.serve_forever()


class ManagersClient:
    def __init__(self, port: int) -> None:
        manager = BenchManager(address=(HOST, port), authkey=AUTHKEY)
        manager.connect()
        self._manager: BenchManager | None = manager
        self._obj: BenchProxy | None = manager.get_bench()  # type: ignore[attr-defined]
        self._cb_proxy: CallbackProxy | None = None

    def _bench(self) -> BenchProxy:
        assert self._obj is not None, "client is closed"
        return self._obj

    def noop(self) -> None:
        self._bench().noop()

    def echo(self, data: bytes) -> Sized:
        return self._bench().echo(data)

    def _callback_proxy(self) -> CallbackProxy:
        if self._cb_proxy is None:
            self._cb_proxy = _callback_service().get_callback()  # type: ignore[attr-defined]
        assert self._cb_proxy is not None
        return self._cb_proxy

    def call_back(self, fn: Callable[[], None]) -> None:
        cb = self._callback_proxy()
        _CALLBACK_HOLDER.fn = fn
        try:
            self._bench().call_back(cb)
        finally:
            _CALLBACK_HOLDER.fn = None

    def get_list(self) -> Iterable[int]:
        return self._bench().get_list()

    def close(self) -> None:
        # Dropping the last proxy runs its finalizer: decref, then close this thread's connection.
        self._obj = None
        self._cb_proxy = None
        self._manager = None


def connect(port: int) -> ManagersClient:
    return ManagersClient(port)

"""Pyro5 peer: an exposed class in a threaded ``Pyro5.api.Daemon``, reached through ``Proxy``.

This module owns the Pyro5 adapter and uses only Pyro5's public API (``Daemon``, ``Proxy``,
``expose``, ``callback``, ``Pyro5.config``). It must measure Pyro5 as its users write it:
``proxy.noop()``; for the callback a client-side ``Daemon`` serving a registered object that the
server reaches with a reverse connection (Pyro5 is not symmetric: a callback is a new
connection from server to client, set up on every ``call_back``); lists travel by value.

Serializer choice: **msgpack** when the ``msgpack`` package is installed, else **serpent**.
Pyro5 offers serpent (its default), json, marshal and msgpack (it dropped pickle). msgpack is
the fastest *safe* one: it is a pure data format (decoding never runs code or builds arbitrary
objects), it carries ``bytes`` natively as binary, and it is a C extension. marshal is as fast
but the Python docs state it is not secure against malicious data, so it is not "safe"; serpent
is safe (``ast.literal_eval`` based) but pure Python and ships ``bytes`` as base64 text; json
cannot carry ``bytes`` at all. ``SOCK_NODELAY`` is turned on (Pyro5 defaults it off) so that
Nagle's algorithm does not add delay that the other stacks, all TCP_NODELAY, do not pay.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterable, Sized
from typing import Any

import Pyro5  # type: ignore[import-untyped]
import Pyro5.api  # type: ignore[import-untyped]

from bench.stacks.base import HOST, server_list

NAME = "pyro"
IDLE_NEEDS_THREAD = False

SERIALIZER = "msgpack" if importlib.util.find_spec("msgpack") is not None else "serpent"
_OBJECT_ID = "bench"


def _configure() -> None:
    Pyro5.config.SERIALIZER = SERIALIZER
    Pyro5.config.SOCK_NODELAY = True


def describe() -> dict[str, str]:
    return {
        "version": str(getattr(Pyro5, "__version__", "?")),
        "serializer": SERIALIZER,
        "server": "Pyro5 Daemon, SERVERTYPE=thread",
    }


class BenchObject:
    def noop(self) -> None:
        return None

    def echo(self, data: bytes) -> bytes:
        return data

    def call_back(self, cb: Any) -> None:
        with cb:  # a Proxy to the client's callback object; closes the reverse connection
            cb.call()

    def get_list(self) -> list[int]:
        return server_list()


Pyro5.api.expose(BenchObject)  # marks the class and its methods; applied as a call, not as a
# decorator, because Pyro5 ships no type information and mypy would then drop the class's types


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    _configure()
    Pyro5.config.SERVERTYPE = "thread"
    # One pool thread per live connection; Pyro5 refuses connections beyond the pool size.
    Pyro5.config.THREADPOOL_SIZE = max_connections + 64
    daemon: Any = Pyro5.api.Daemon(host=HOST, port=0)
    daemon.register(BenchObject, objectId=_OBJECT_ID)
    report_port(int(daemon.sock.getsockname()[1]))
    daemon.requestLoop()


class CallbackTarget:
    def __init__(self) -> None:
        self.fn: Callable[[], None] | None = None

    def call(self) -> None:
        if self.fn is not None:
            self.fn()


Pyro5.api.expose(CallbackTarget)
Pyro5.api.callback(CallbackTarget.call)  # an exception in fn is also reported on the client side


class PyroClient:
    def __init__(self, port: int) -> None:
        _configure()
        self._proxy: Any = Pyro5.api.Proxy(f"PYRO:{_OBJECT_ID}@{HOST}:{port}")
        self._proxy._pyroBind()  # connect + handshake now, like the other stacks' connect()
        self._daemon: Any = None
        self._loop: threading.Thread | None = None
        self._callback = CallbackTarget()

    def noop(self) -> None:
        self._proxy.noop()

    def echo(self, data: bytes) -> Sized:
        result: Any = self._proxy.echo(data)
        if isinstance(result, dict):  # serpent ships bytes as a base64 dict
            import serpent  # type: ignore[import-untyped]

            result = serpent.tobytes(result)
        assert isinstance(result, (bytes, bytearray, memoryview))
        return result

    def call_back(self, fn: Callable[[], None]) -> None:
        if self._daemon is None:
            self._daemon = Pyro5.api.Daemon(host=HOST, port=0)
            self._daemon.register(self._callback)
            self._loop = threading.Thread(target=self._daemon.requestLoop, daemon=True)
            self._loop.start()
        self._callback.fn = fn
        try:
            self._proxy.call_back(self._callback)  # Pyro5 passes a registered object as a proxy
        finally:
            self._callback.fn = None

    def get_list(self) -> Iterable[int]:
        result: Iterable[int] = self._proxy.get_list()
        return result

    def close(self) -> None:
        try:
            self._proxy._pyroRelease()
        except Exception:
            pass
        if self._daemon is not None:
            self._daemon.shutdown()
            if self._loop is not None:
                self._loop.join(timeout=5)
            self._daemon.close()
            self._daemon = None


def connect(port: int) -> PyroClient:
    return PyroClient(port)

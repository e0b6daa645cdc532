"""Helpers around proxies: background serving, buffered iteration, restricted views.

Owns :class:`BgServingThread` (serves a connection from a thread so the peer's callbacks
run while this side does other work), :func:`buffiter` (iterates a remote iterable in
batches) and :func:`restricted` (hands the peer a view of an object limited to named
attributes).
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Iterator

from rpc_protocol import Op

from ._connection import Connection
from ._errors import ConnectionClosedError
from ._proxy import Proxy
from ._service import exposed

__all__ = ["BgServingThread", "buffiter", "restricted"]


class BgServingThread:
    """Serves ``conn`` on a daemon thread until :meth:`stop` or until it closes."""

    def __init__(self, conn: Connection, callback: Callable[[], object] | None = None, *, interval: float = 0.1) -> None:
        self._conn = conn
        self._interval = interval
        self._callback = callback
        self._active = True
        self._thread = threading.Thread(target=self._run, name="rpc-bg-serving", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while self._active:
                self._conn.serve(self._interval)
        except ConnectionClosedError:
            pass
        finally:
            self._active = False
            if self._callback is not None:
                self._callback()

    @property
    def active(self) -> bool:
        return self._active

    def stop(self) -> None:
        """Stop serving and join the thread (within a couple of intervals)."""
        self._active = False
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5 + 2 * self._interval)


def buffiter(obj: Any, chunk: int = 256) -> Iterator[Any]:
    """Iterate a remote iterable in batches: ``chunk`` items in the first round trip, doubling after.

    For a local object this is plain ``iter(obj)``. Items are fetched ahead, so only use it
    where reading ahead cannot change what you observe.
    """
    if not isinstance(obj, Proxy):
        yield from obj
        return
    conn = obj._rpc_conn
    yield from conn._batches(conn._request(Op.CALLATTR, obj, ("__iter__",)), chunk)


def restricted(obj: Any, attrs: Iterable[str], wattrs: Iterable[str] = ()) -> Any:
    """A stand-in for ``obj`` through which the peer reaches only ``attrs``.

    ``wattrs`` lists the attributes the peer may also set (its config must still allow
    setting attributes). Pass the result to the peer instead of ``obj``.
    """
    readable = tuple(attrs)
    writable = frozenset(wattrs)
    namespace: dict[str, Any] = {"__slots__": (), "__repr__": lambda self: f"restricted({obj!r}, {readable!r})"}
    for name in readable:
        getter = _getter(obj, name)
        setter = _setter(obj, name) if name in writable else None
        namespace[name] = exposed(property(getter, setter))
    cls = type(f"Restricted{type(obj).__name__}", (), namespace)
    return cls()


def _getter(obj: Any, name: str) -> Callable[[Any], Any]:
    return lambda self: getattr(obj, name)


def _setter(obj: Any, name: str) -> Callable[[Any, Any], None]:
    return lambda self, value: setattr(obj, name, value)

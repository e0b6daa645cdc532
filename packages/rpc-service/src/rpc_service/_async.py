"""Asynchronous calls: :class:`AsyncResult`, :func:`async_` and :func:`timed`.

Owns the slot a reply lands in. Every request, synchronous or not, waits on one of these;
the connection fills it from whichever thread is reading. Waiting on a result serves the
connection (so callbacks from the peer keep flowing) rather than sleeping.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from rpc_protocol import Op

from ._context import deadline
from ._proxy import Proxy

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["AsyncResult", "async_", "timed"]


class AsyncResult:
    """The eventual result of a request: a value, or the exception the peer raised."""

    __slots__ = ("_conn", "_ready", "_is_error", "_value", "_callbacks", "_deadline", "_wakers")

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._ready = False
        self._is_error = False
        self._value: Any = None
        self._callbacks: list[Callable[[AsyncResult], object]] = []
        self._deadline: float | None = None
        self._wakers: list[Any] | None = None  # the wake-up locks of threads waiting here (the connection's)

    def __repr__(self) -> str:
        state = "error" if self.error else "ready" if self._ready else "expired" if self.expired else "pending"
        return f"<AsyncResult {state}>"

    def _run_callbacks(self) -> None:
        """Run the callbacks added so far; the connection calls it (outside its lock) once
        it has filled the slot."""
        # Each callback is claimed by exactly one pop() here or remove() in add_callback.
        callbacks = self._callbacks
        while callbacks:
            try:
                callback = callbacks.pop(0)
            except IndexError:
                break
            self._conn._run_callback(callback, self)

    @property
    def ready(self) -> bool:
        """Whether the reply has arrived (serves pending input without blocking)."""
        if not self._ready and not self._conn.closed:
            self._conn.poll_all(0)
        return self._ready

    @property
    def error(self) -> bool:
        """Whether the reply has arrived and is an exception (serves pending input
        without blocking, as :attr:`ready` does)."""
        return self.ready and self._is_error

    @property
    def expired(self) -> bool:
        """Whether the expiry set with :meth:`set_expiry` passed with no reply."""
        return not self._ready and self._deadline is not None and time.monotonic() > self._deadline

    def set_expiry(self, timeout: float | None) -> None:
        """Give up waiting ``timeout`` seconds from now (None: never)."""
        self._deadline = None if timeout is None else time.monotonic() + timeout

    def add_callback(self, callback: Callable[[AsyncResult], object]) -> None:
        """Call ``callback(result)`` once the reply arrives (at once if it already has)."""
        if not self._ready:
            callbacks = self._callbacks
            callbacks.append(callback)
            if not self._ready:
                return  # _set() will run it
            try:  # the reply arrived meanwhile: run it here unless _set() already took it
                callbacks.remove(callback)
            except ValueError:
                return
        callback(self)

    def wait(self, timeout: float | None = None) -> None:
        """Serve the connection until the reply arrives; AsyncResultTimeout when it does not in time."""
        if self._ready:
            return
        deadline = self._deadline
        if timeout is not None:
            end = time.monotonic() + timeout
            deadline = end if deadline is None else min(deadline, end)
        self._conn._wait(self, deadline)

    @property
    def value(self) -> Any:
        """The returned value (waits for it); raises the remote exception if there was one."""
        self.wait()
        if self._is_error:
            raise self._value
        return self._value


class _AsyncCall:
    """The callable :func:`async_` returns."""

    __slots__ = ("_conn", "_op", "_target", "_name")

    def __init__(self, conn: Connection, op: Op, target: Proxy, name: str | None) -> None:
        self._conn = conn
        self._op = op
        self._target = target
        self._name = name

    def __repr__(self) -> str:
        return f"async_({self._target!r}{'.' + self._name if self._name else ''})"

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult:
        if self._name is not None:
            args = (self._name, *args)
        return self._conn._async_request(self._op, self._target, args, kwargs)


def async_(proxy: Any) -> Callable[..., AsyncResult]:
    """Wrap a remote callable so calling it returns an :class:`AsyncResult` at once.

    Accepts a proxy of a remote callable or a method of a proxy (``conn.root.method``).
    """
    if isinstance(proxy, Proxy):
        if not callable(proxy):
            raise TypeError(f"async_() needs a proxy of a remote callable; this {type(proxy).__name__} is not callable")
        return _AsyncCall(proxy._rpc_conn, Op.CALL, proxy, None)
    owner = getattr(proxy, "__self__", None)
    name = getattr(getattr(proxy, "__func__", None), "_rpc_name", None)
    if isinstance(owner, Proxy) and isinstance(name, str):
        return _AsyncCall(owner._rpc_conn, Op.CALLATTR, owner, name)
    raise TypeError(f"async_() needs a proxy of a remote callable, not {type(proxy).__name__}")


def timed(proxy: Any, timeout: float) -> Callable[..., AsyncResult]:
    """Wrap a remote callable so each call returns an :class:`AsyncResult` that expires
    ``timeout`` seconds after the call (as RPyC's ``timed``): ``.value`` then raises
    AsyncResultTimeout, and ``.expired`` turns true. ``timed(f, t)(...).value`` is the
    blocking form. The call is made under ``deadline(timeout)``: the peer sees the budget
    (``remaining()``, ``cancelled()`` once it passed). As in RPyC, a reply that arrives
    after the expiry still counts if the result is waited for again (no CANCEL is sent).
    """
    try:
        limit = deadline(timeout)  # (checked as deadline() checks it: a bool or a string is no timeout)
    except ValueError:
        limit = None
    if limit is None or not timeout > 0:
        raise ValueError(f"timed() needs a positive number of seconds, not {timeout!r}")
    call = async_(proxy)

    def timed_call(*args: Any, **kwargs: Any) -> AsyncResult:
        with limit:  # (an outer deadline that is earlier wins; one object serves every thread)
            result = call(*args, **kwargs)
        if result._deadline is None:
            result.set_expiry(timeout)
        return result

    return timed_call

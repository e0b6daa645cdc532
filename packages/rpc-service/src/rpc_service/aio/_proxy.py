"""Async proxies: stand-ins for the peer's objects on an :class:`AsyncConnection`.

Owns the proxy classes of the asyncio driver. A proxy of an async connection has two
faces, chosen by the thread that uses it: **on the connection's event loop** every
operation returns an awaitable (``await p.m(x)`` is one round trip, ``await p.attr``
fetches an attribute, ``await p[k]``, ``async for item in p``); operations that Python
cannot await (``len()``, ``in``, ``bool()``, ``hash()``, ``p.x = v``...) raise TypeError
there and have helpers in ``aio`` (``await aio.len(p)``...). **On any other thread** (a
plain ``def`` handler run in a worker thread) the same proxy is an ordinary blocking
proxy whose calls are handed to the loop. This module never touches the wire itself: it
only calls its connection's ``_request``/``_start`` methods.
"""

from __future__ import annotations

import builtins as _builtins
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Final, Generator

from rpc_protocol import Op

from .._exposure import OPTIONAL_SPECIALS
from .._proxy import _BUILTIN_CLASSES, Proxy, _method, _ProxyClasses, _special

if TYPE_CHECKING:
    from ._connection import AsyncConnection

__all__ = ["AsyncProxy", "make_async_proxy_class"]

_INTERNAL: Final = frozenset({"_rpc_conn", "_rpc_oid", "_rpc_ref"})
_NO_KWARGS: Final[dict[str, Any]] = {}
# special methods whose result Python needs at once (an int, a bool...): not awaitable, so on
# the loop they raise with the name of the helper to await instead
_HELPERS: Final = {
    "__len__": "await aio.len(proxy)",
    "__length_hint__": "await aio.len(proxy)",
    "__contains__": "await aio.contains(proxy, item)",
    "__bool__": "await aio.bool(proxy)",
    "__index__": "await aio.call(proxy, '__index__')",
    "__int__": "await aio.call(proxy, '__int__')",
    "__float__": "await aio.call(proxy, '__float__')",
    "__complex__": "await aio.call(proxy, '__complex__')",
    "__setitem__": "await aio.setitem(proxy, key, value)",
    "__delitem__": "await aio.delitem(proxy, key)",
    "__enter__": "await aio.call(proxy, '__enter__')",
    "__exit__": "await aio.call(proxy, '__exit__', None, None, None)",
}
_IN_PLACE: Final = frozenset(name for name in OPTIONAL_SPECIALS if name.startswith("__i") and name not in _HELPERS and name != "__iter__")


def _on_loop_error(what: str, helper: str) -> TypeError:
    return TypeError(f"{what} of an async proxy cannot be awaited on the event loop; use {helper}")


class _Attribute:
    """``proxy.name`` on the loop for a name the type descriptor does not list: awaiting it
    fetches the attribute (GETATTR), calling it calls the method by name (one CALLATTR)."""

    __slots__ = ("_proxy", "_name")

    def __init__(self, proxy: AsyncProxy, name: str) -> None:
        self._proxy = proxy
        self._name = name

    def __await__(self) -> Generator[Any, None, Any]:
        proxy = self._proxy
        return proxy._rpc_conn._start(Op.GETATTR, proxy._rpc_ref, (self._name,), _NO_KWARGS).__await__()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        proxy = self._proxy
        return proxy._rpc_conn._start(Op.CALLATTR, proxy._rpc_ref, (self._name, *args), kwargs)

    def __repr__(self) -> str:
        return f"<attribute {self._name!r} of {self._proxy!r} (await it, or call it)>"


class AsyncProxy(Proxy):
    """A reference to an object on the peer of an :class:`AsyncConnection` (module doc)."""

    __slots__ = ()
    _rpc_conn: AsyncConnection  # type: ignore[assignment]  # the async connection duck-types Connection

    def __getattr__(self, name: str) -> Any:
        if name in _INTERNAL or name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        conn = self._rpc_conn
        if conn._on_loop():
            return _Attribute(self, name)
        return conn._request(Op.GETATTR, self._rpc_ref, (name,))

    def __setattr__(self, name: str, value: object) -> None:
        if name in _INTERNAL:
            object.__setattr__(self, name, value)
        elif self._rpc_conn._on_loop():
            raise _on_loop_error("setting an attribute", "await aio.setattr(proxy, name, value)")
        else:
            self._rpc_conn._request(Op.SETATTR, self, (name, value))

    def __delattr__(self, name: str) -> None:
        if self._rpc_conn._on_loop():
            raise _on_loop_error("deleting an attribute", "await aio.delattr(proxy, name)")
        self._rpc_conn._request(Op.DELATTR, self, (name,))

    def __dir__(self) -> list[str]:
        if self._rpc_conn._on_loop():
            raise _on_loop_error("dir()", "await aio.dir(proxy)")
        return list(self._rpc_conn._request(Op.DIR, self))

    def __hash__(self) -> int:
        if self._rpc_conn._on_loop():
            raise _on_loop_error("hash()", "await aio.hash(proxy)")
        return super().__hash__()

    def __repr__(self) -> str:
        conn = self._rpc_conn
        if conn.closed or conn._on_loop():  # no round trip: await aio.repr(proxy) asks the peer
            module, name = self._rpc_type
            state = " on a closed connection" if conn.closed else ""
            return f"<async proxy of {module}.{name} #{self._rpc_oid}{state}>"
        return str(conn._request(Op.REPR, self))

    def __str__(self) -> str:
        if self._rpc_conn._on_loop():
            return self.__repr__()
        return str(self._rpc_conn._request(Op.STR, self))

    def __format__(self, spec: str) -> str:
        if self._rpc_conn._on_loop():
            return format(self.__repr__(), spec)
        return str(self._rpc_conn._request(Op.CALLATTR, self, ("__format__", spec)))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._rpc_conn._aiterate(self)

    def __iter__(self) -> Any:
        # defined even when the remote type lacks __iter__: Python would otherwise fall back
        # to __getitem__ and iterate awaitables on the loop
        return _iter(self)


def _sync_only(name: str) -> Callable[..., Any]:
    helper = _HELPERS.get(name, f"await aio.call(proxy, {name!r}, ...)")

    def special(self: AsyncProxy, *args: Any) -> Any:
        conn = self._rpc_conn
        if conn._on_loop():
            raise _on_loop_error(name, helper)
        return conn._request(Op.CALLATTR, self._rpc_ref, (name, *args), _NO_KWARGS)

    special.__name__ = special.__qualname__ = name
    return special


def _call(self: AsyncProxy, *args: Any, **kwargs: Any) -> Any:
    return self._rpc_conn._request(Op.CALL, self._rpc_ref, args, kwargs)


def _iter(self: AsyncProxy) -> Any:
    conn = self._rpc_conn
    if conn._on_loop():
        raise _on_loop_error("iter()", "async for item in proxy")
    return conn._iterate(self)


def _async_proxy_class(descriptor: tuple[str, str, tuple[str, ...], tuple[str, ...], str]) -> type[Proxy]:
    module, qualname, methods, specials, builtin_name = descriptor
    namespace: dict[str, Any] = {"__slots__": (), "_rpc_type": (module, qualname)}
    if builtin_name in _BUILTIN_CLASSES:
        namespace["_rpc_builtin"] = getattr(_builtins, builtin_name)
    for name in methods:
        namespace[name] = _method(name)  # dual: awaitable on the loop, blocking elsewhere
    for name in specials:
        if name == "__call__":
            namespace[name] = _call
        elif name == "__iter__":
            namespace[name] = _iter
        elif name in _HELPERS or name in _IN_PLACE:
            namespace[name] = _sync_only(name)
        else:
            namespace[name] = _special(name)
    # named as the remote class, as the threaded driver's proxy classes are (``_proxy``)
    namespace["__module__"] = module
    namespace["__qualname__"] = qualname or "AsyncProxy"
    return type(qualname.rpartition(".")[2] or "AsyncProxy", (AsyncProxy,), namespace)


# checked, bounded and held weakly, as the threaded driver's (see ``_proxy``)
make_async_proxy_class: Final = _ProxyClasses(_async_proxy_class).make

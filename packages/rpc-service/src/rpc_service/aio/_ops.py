"""Awaitable forms of the operations Python syntax cannot await on an async proxy.

Owns ``aio.len``, ``aio.contains``, ``aio.bool``, ``aio.hash``, ``aio.repr``, ``aio.str``,
``aio.dir``, ``aio.getattr``, ``aio.setattr``, ``aio.delattr``, ``aio.setitem``,
``aio.delitem`` and ``aio.call`` (a method by name). Each is one round trip on the proxy's
connection; they are only used on the connection's event loop.
"""

from __future__ import annotations

import builtins
from typing import Any

from rpc_protocol import Op

from ._proxy import AsyncProxy

__all__ = ["bool", "call", "contains", "delattr", "delitem", "dir", "getattr", "hash", "len", "repr", "setattr", "setitem", "str"]


def _start(proxy: Any, op: Op, args: tuple[Any, ...] = (), kwargs: dict[builtins.str, Any] | None = None) -> Any:
    if not builtins.isinstance(proxy, AsyncProxy):
        raise TypeError(f"expected an async proxy, not {builtins.type(proxy).__name__}")
    return proxy._rpc_conn._start(op, proxy._rpc_ref, args, {} if kwargs is None else kwargs)


async def call(proxy: Any, name: builtins.str, *args: Any, **kwargs: Any) -> Any:
    """``proxy.name(*args, **kwargs)`` by name (special methods included)."""
    return await _start(proxy, Op.CALLATTR, (name, *args), kwargs)


async def len(proxy: Any) -> int:  # noqa: A001  # deliberately mirrors the builtin
    """``len(proxy)``."""
    value = await call(proxy, "__len__")
    if builtins.type(value) is not int:
        raise TypeError("the peer's __len__ returned a non-integer")
    return value


async def contains(proxy: Any, item: object) -> builtins.bool:
    """``item in proxy``."""
    return builtins.bool(await call(proxy, "__contains__", item))


async def bool(proxy: Any) -> builtins.bool:  # noqa: A001
    """``bool(proxy)`` (``__bool__``, else ``__len__``, else True, as locally)."""
    try:
        return builtins.bool(await call(proxy, "__bool__"))
    except AttributeError:
        pass
    try:
        return await len(proxy) != 0
    except AttributeError:
        return True


async def hash(proxy: Any) -> int:  # noqa: A001
    """``hash()`` of the remote object."""
    value = await _start(proxy, Op.HASH)
    if builtins.type(value) is not int:
        raise TypeError("the peer returned a non-integer hash")
    return value


async def repr(proxy: Any) -> builtins.str:  # noqa: A001
    """``repr()`` of the remote object."""
    return builtins.str(await _start(proxy, Op.REPR))


async def str(proxy: Any) -> builtins.str:  # noqa: A001
    """``str()`` of the remote object."""
    return builtins.str(await _start(proxy, Op.STR))


async def dir(proxy: Any) -> list[builtins.str]:  # noqa: A001
    """What ``dir(proxy)`` would show."""
    return builtins.list(await _start(proxy, Op.DIR))


async def getattr(proxy: Any, name: builtins.str) -> Any:  # noqa: A001
    """``proxy.name`` (same as ``await proxy.name``)."""
    return await _start(proxy, Op.GETATTR, (name,))


async def setattr(proxy: Any, name: builtins.str, value: object) -> None:  # noqa: A001
    """``proxy.name = value`` (the peer's config must allow it)."""
    await _start(proxy, Op.SETATTR, (name, value))


async def delattr(proxy: Any, name: builtins.str) -> None:  # noqa: A001
    """``del proxy.name`` (the peer's config must allow it)."""
    await _start(proxy, Op.DELATTR, (name,))


async def setitem(proxy: Any, key: object, value: object) -> None:
    """``proxy[key] = value``."""
    await call(proxy, "__setitem__", key, value)


async def delitem(proxy: Any, key: object) -> None:
    """``del proxy[key]``."""
    await call(proxy, "__delitem__", key)

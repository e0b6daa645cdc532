"""rpc_service.aio: the asyncio driver, on the same wire as the threaded one.

    from rpc_service import aio

    conn = await aio.connect("127.0.0.1", port)
    print(await conn.root.echo("hi"))   # one round trip
    await conn.close()

Proxies of an :class:`AsyncConnection` are awaitable on its event loop (``await p.m(x)``,
``await p.attr``, ``await p[k]``, ``async for x in p``, and ``await aio.len(p)``-style
helpers where syntax cannot await) and ordinary blocking proxies on any other thread.
On an :class:`aio.Server <Server>` (and for callbacks into an async client), ``async def``
handlers run on the loop; plain ``def`` handlers run in a worker thread, where the
proxies they receive block, so existing services work unchanged. TLS: pass an
``ssl.SSLContext`` as ``ssl=`` to :func:`connect` and :class:`Server`.
"""

from __future__ import annotations

from ._connection import AsyncConnection
from ._factories import connect, unix_connect
from ._ops import bool, call, contains, delattr, delitem, dir, getattr, hash, len, repr, setattr, setitem, str
from ._proxy import AsyncProxy
from ._server import Server

__all__ = [
    "AsyncConnection",
    "AsyncProxy",
    "Server",
    "bool",
    "call",
    "connect",
    "contains",
    "delattr",
    "delitem",
    "dir",
    "getattr",
    "hash",
    "len",
    "repr",
    "setattr",
    "setitem",
    "str",
    "unix_connect",
]

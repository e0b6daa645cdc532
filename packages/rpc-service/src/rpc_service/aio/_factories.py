"""Connecting with asyncio: :func:`connect` (TCP, optionally TLS) and :func:`unix_connect`.

Owns opening the transport, translating ``OSError`` into ``ConnectionFailedError`` and
running the handshake before the connection is handed out. TLS is asyncio's own: pass an
``ssl.SSLContext`` as ``ssl=`` (rpc-service never imports rpc-tls; ``rpc_tls`` can build
the context). It never blocks the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl as _ssl
from typing import Any, Callable

from .._config import ConfigArg
from .._context import CURRENT
from .._errors import ConnectionFailedError
from .._streams import check_port
from .._service import ServiceArg, VoidService, instantiate
from ._connection import AsyncConnection

__all__ = ["connect", "unix_connect"]


async def _open(
    opener: Callable[[Callable[[], AsyncConnection]], Any],
    where: str,
    service: ServiceArg,
    config: ConfigArg,
    timeout: float | None,
    executor: concurrent.futures.Executor | None,
) -> AsyncConnection:
    instance = instantiate(service)

    def factory() -> AsyncConnection:
        return AsyncConnection(instance, config, executor=executor)

    # The transport's callbacks keep the context they were made in: made outside any call
    # context, so a deadline around connect() does not cling to every request served later.
    token = CURRENT.set(None)
    try:
        _, conn = await asyncio.wait_for(opener(factory), timeout)
    except asyncio.TimeoutError:
        raise ConnectionFailedError(f"could not connect to {where}: timed out after {timeout} s") from None
    except (OSError, _ssl.SSLError) as exc:
        raise ConnectionFailedError(f"could not connect to {where}: {exc}") from exc
    finally:
        CURRENT.reset(token)
    assert isinstance(conn, AsyncConnection)
    await conn._handshake()
    return conn


async def connect(
    host: str,
    port: int,
    *,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    timeout: float | None = None,
    ssl: _ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    executor: concurrent.futures.Executor | None = None,
) -> AsyncConnection:
    """Connect to ``host:port`` and return the open :class:`AsyncConnection`.

    ``timeout`` bounds the TCP (and TLS) connect; the protocol handshake is bounded by the
    config's ``handshake_timeout``. ``ssl``: an ``ssl.SSLContext`` makes it a TLS
    connection (``server_hostname`` defaults to ``host``). ``executor`` runs this side's
    plain ``def`` callbacks (default: a pool of the connection's own, threads made on demand).
    """
    check_port(port)
    loop = asyncio.get_running_loop()

    def opener(factory: Callable[[], AsyncConnection]) -> Any:
        if ssl is None:
            return loop.create_connection(factory, host, port)
        return loop.create_connection(factory, host, port, ssl=ssl, server_hostname=server_hostname or host)

    return await _open(opener, f"{host}:{port}", service, config, timeout, executor)


async def unix_connect(
    path: str,
    *,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    timeout: float | None = None,
    executor: concurrent.futures.Executor | None = None,
) -> AsyncConnection:
    """Connect to the unix socket ``path`` (see :func:`connect`)."""
    loop = asyncio.get_running_loop()
    return await _open(lambda factory: loop.create_unix_connection(factory, path), path, service, config, timeout, executor)

"""rpc_service: Services, proxies, connections, factories and servers.

A process exposes a :class:`Service`; the peer reaches it as ``conn.root``, and calls,
attribute access, iteration and callbacks cross the connection as if local. Built on the
sans-I/O ``rpc_protocol``; nothing else is required.

    import rpc_service

    class EchoService(rpc_service.Service):
        def exposed_echo(self, text):
            return text

    with rpc_service.ThreadedServer(EchoService) as server:
        server.start_in_thread()
        with rpc_service.connect("127.0.0.1", server.port) as conn:
            assert conn.root.echo("hi") == "hi"
"""

from __future__ import annotations

from rpc_protocol import ProtocolError, RPCError

from .__about__ import __version__
from ._async import AsyncResult, async_, timed
from ._by_value import by_value, obtain
from ._config import Config, ConfigArg
from ._connection import Connection, ConnectionStats, Lifecycle
from ._context import cancelled, deadline, remaining
from ._errors import (
    AsyncResultTimeout,
    AuthenticationError,
    ConnectionClosedError,
    ConnectionFailedError,
    ConnectionRejectedError,
    DeadlineExceeded,
    HandshakeTimeout,
    LentObjectsLimitError,
    RemoteError,
    ServiceNotFoundError,
)
from ._factories import (
    connect,
    connect_pipes,
    connect_stream,
    connect_subproc,
    connect_thread,
    open_tcp,
    serve_stdio,
    unix_connect,
)
from ._helpers import BgServingThread, buffiter, restricted
from ._hooks import Authenticator, Registrar
from ._proxy import Proxy, is_proxy
from ._server import OneShotServer, Server
from ._server_threaded import ThreadedServer
from ._server_pool import ForkingServer, ThreadPoolServer
from ._service import Service, ServiceArg, VoidService, exposed
from ._streams import PipeStream, SocketStream, Stream, SubprocessStream

__all__ = [
    "__version__",
    # services
    "Service",
    "ServiceArg",
    "VoidService",
    "exposed",
    # connections and factories
    "Config",
    "ConfigArg",
    "Connection",
    "ConnectionStats",
    "Lifecycle",
    "connect",
    "connect_pipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "open_tcp",
    "serve_stdio",
    "unix_connect",
    # proxies and calls
    "AsyncResult",
    "BgServingThread",
    "Proxy",
    "async_",
    "buffiter",
    "by_value",
    "is_proxy",
    "obtain",
    "restricted",
    "timed",
    # call context
    "cancelled",
    "deadline",
    "remaining",
    # servers and hooks
    "Authenticator",
    "ForkingServer",
    "OneShotServer",
    "Registrar",
    "Server",
    "ThreadPoolServer",
    "ThreadedServer",
    # streams
    "PipeStream",
    "SocketStream",
    "Stream",
    "SubprocessStream",
    # errors
    "AsyncResultTimeout",
    "AuthenticationError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ConnectionRejectedError",
    "DeadlineExceeded",
    "HandshakeTimeout",
    "ProtocolError",
    "RPCError",
    "LentObjectsLimitError",
    "RemoteError",
    "ServiceNotFoundError",
]

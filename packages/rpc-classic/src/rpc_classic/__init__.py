"""rpc_classic: classic mode — the peer as a slave (remote import, eval, exec), file transfer, teleport.

A :class:`SlaveService` offers its peer everything its interpreter can do. The classic
factories connect to one, make the local side a Slave too (pass ``service=VoidService`` to
keep it closed) and return a :class:`ClassicConnection` with the shortcuts::

    import rpc_classic

    with rpc_classic.connect("127.0.0.1") as conn:          # rpc-classic listens on 18812
        print(conn.modules.os.getcwd())                     # runs on the server
        conn.execute("x = 6 * 7")
        print(conn.eval("x"), conn.namespace["x"])          # 42 42
        rpc_classic.upload(conn, "data/", "/tmp/data")      # a whole tree, streamed

Only ever serve classic mode to peers you would give a shell to (see the README).
"""

from __future__ import annotations

from .__about__ import __version__
from ._connection import ClassicConnection, ModuleNamespace
from ._errors import ClassicError, NotPlainDataError, UnsafePathError, VersionMismatchError
from ._mock import MockClassicConnection
from ._factories import (
    DEFAULT_PORT,
    DEFAULT_TLS_PORT,
    connect,
    connect_pipes,
    connect_stream,
    connect_subproc,
    connect_thread,
    tls_connect,
    unix_connect,
)
from ._service import FORWARD_DUNDERS, ClassicService, SlaveService, classic_config, forward_dunders
from ._stdio import interact, redirected_stdio
from ._teleport import teleport_function
from ._transfer import download, upload
from ._values import deliver, obtain

__all__ = [
    "__version__",
    # the service and its connections
    "ClassicConnection",
    "ClassicService",
    "MockClassicConnection",
    "ModuleNamespace",
    "SlaveService",
    "classic_config",
    "forward_dunders",
    "FORWARD_DUNDERS",
    # factories
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "connect",
    "connect_pipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "tls_connect",
    "unix_connect",
    # helpers
    "deliver",
    "download",
    "interact",
    "obtain",
    "redirected_stdio",
    "teleport_function",
    "upload",
    # errors
    "ClassicError",
    "NotPlainDataError",
    "UnsafePathError",
    "VersionMismatchError",
]

"""The classic factories: ``rpc_service``'s factories with Slave defaults and the shortcuts.

Owns choosing the local side of a classic connection: :class:`SlaveService` by default (as
the seed says, the client becomes a slave of the server too), with :func:`classic_config`
applied to the client's config whenever the local service is a Slave, and left as given
otherwise (``service=VoidService`` keeps a client that does not trust its server closed).
Every factory returns a :class:`ClassicConnection`. ``rpc_tls`` (the ``tls`` extra) is
imported only inside :func:`tls_connect`; nothing here may import it at module level.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any, Sequence

import rpc_service
from rpc_service import ConfigArg, ServiceArg, Stream

from ._connection import ClassicConnection
from ._service import SlaveService, classic_config, forward_dunders, is_slave

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "connect",
    "connect_pipes",
    "connect_stream",
    "connect_subproc",
    "connect_thread",
    "tls_connect",
    "unix_connect",
]

DEFAULT_PORT = 18812
DEFAULT_TLS_PORT = 18821



def _local_config(service: ServiceArg, config: ConfigArg) -> ConfigArg:
    """Classic settings for a Slave side; a non-Slave side keeps what it was given (what it
    exposes), and on either side proxies ask the peer for module dunders (:data:`FORWARD_DUNDERS`)."""
    return classic_config(config) if is_slave(service) else forward_dunders(config)


def _classic(conn: rpc_service.Connection) -> ClassicConnection:
    assert isinstance(conn, ClassicConnection)
    return conn


def connect(
    host: str,
    port: int = DEFAULT_PORT,
    service: ServiceArg = SlaveService,
    config: ConfigArg = None,
    *,
    ipv6: bool = False,
    timeout: float | None = 10.0,
) -> ClassicConnection:
    """Connect to a classic server over TCP (``rpc-classic`` listens on 18812 by default)."""
    return _classic(
        rpc_service.connect(
            host, port, service, _local_config(service, config), ipv6=ipv6, timeout=timeout, connection_class=ClassicConnection
        )
    )


def unix_connect(
    path: str | os.PathLike[str], service: ServiceArg = SlaveService, config: ConfigArg = None, *, timeout: float | None = 10.0
) -> ClassicConnection:
    """Connect to a classic server listening on a unix socket (``path``: a str or a ``pathlib.Path``)."""
    return _classic(
        rpc_service.unix_connect(os.fspath(path), service, _local_config(service, config), timeout=timeout, connection_class=ClassicConnection)
    )


def tls_connect(
    host: str,
    port: int = DEFAULT_TLS_PORT,
    keyfile: str | None = None,
    certfile: str | None = None,
    ca_certs: str | None = None,
    service: ServiceArg = SlaveService,
    config: ConfigArg = None,
    **kwargs: Any,
) -> ClassicConnection:
    """Connect to a classic server over TLS (needs the ``tls`` extra: ``rpc-classic[tls]``).

    ``keyfile``/``certfile`` present a client certificate; ``ca_certs`` verifies the server
    (the server's certificate and host name are verified by default). Further keywords go
    to ``rpc_tls.tls_connect``.
    """
    try:
        import rpc_tls
    except ImportError as exc:
        raise ImportError(
            "rpc_classic.tls_connect needs rpc-tls: pip install 'rpc-classic[tls]'"
        ) from exc
    options: dict[str, Any] = dict(
        keyfile=keyfile, certfile=certfile, ca_certs=ca_certs, service=service, config=_local_config(service, config), **kwargs
    )
    return _classic(rpc_tls.tls_connect(host, port, connection_class=ClassicConnection, **options))


def connect_stream(stream: Stream, service: ServiceArg = SlaveService, config: ConfigArg = None) -> ClassicConnection:
    """Run the handshake over an already-open stream."""
    return _classic(rpc_service.connect_stream(stream, service, _local_config(service, config), connection_class=ClassicConnection))


def connect_pipes(
    input: IO[bytes] | int, output: IO[bytes] | int, service: ServiceArg = SlaveService, config: ConfigArg = None
) -> ClassicConnection:
    """Connect over two pipes (read from ``input``, write to ``output``)."""
    return _classic(
        rpc_service.connect_pipes(input, output, service, _local_config(service, config), connection_class=ClassicConnection)
    )


def server_command(*extra: str) -> list[str]:
    """The command that runs a classic server on its stdio with this interpreter."""
    return [sys.executable, "-m", "rpc_classic", "--mode", "stdio", "--quiet", *extra]


def connect_subproc(
    args: Sequence[str | os.PathLike[str]] | str | os.PathLike[str] | None = None, service: ServiceArg = SlaveService, config: ConfigArg = None, **popen: Any
) -> ClassicConnection:
    """Start a classic server as a child process and connect over its stdin/stdout.

    ``args`` defaults to ``python -m rpc_classic --mode stdio`` with this interpreter (the
    child must be able to import ``rpc_classic``: pass ``env=`` if it is not installed);
    other keywords go to ``subprocess.Popen``. Closing the connection reaps the child.
    """
    command = server_command() if args is None else args
    return _classic(
        rpc_service.connect_subproc(command, service, _local_config(service, config), connection_class=ClassicConnection, **popen)
    )


def connect_thread(
    service: ServiceArg = SlaveService,
    config: ConfigArg = None,
    remote_service: ServiceArg = SlaveService,
    remote_config: ConfigArg = None,
) -> ClassicConnection:
    """An in-process classic pair: ``remote_service`` served by a daemon thread."""
    return _classic(
        rpc_service.connect_thread(
            service,
            _local_config(service, config),
            remote_service,
            _local_config(remote_service, remote_config),
            connection_class=ClassicConnection,
        )
    )

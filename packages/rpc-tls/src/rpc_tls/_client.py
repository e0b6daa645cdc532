"""The client side: :class:`TLSClient` and :func:`tls_connect`.

Owns opening a TCP connection, the TLS handshake under a deadline (verifying the server's
certificate and host name unless told otherwise), and handing the result to
``rpc_service.connect_stream`` over a :class:`TLSStream`. The server's verified identity
becomes the client connection's ``credentials``. Errors leave here as this package's
(handshake) or ``rpc_service``'s (TCP connect) errors. It must not build contexts itself
beyond asking ``_context``, nor serve anything.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading

from rpc_service import ConfigArg, Connection, ServiceArg, VoidService, connect_stream, open_tcp

from ._context import PathArg, TLSClientConfig, client_context
from ._errors import TLSConnectionError, handshake_error
from ._identity import PeerIdentity
from ._socket import TLSSocket, TLSStream, peer_name

__all__ = ["TLSClient", "tls_connect"]

log = logging.getLogger("rpc_tls")


class TLSClient:
    """A client's TLS settings and SSL context, built once and reused for each connection.

    See :class:`TLSClientConfig` for the arguments. :meth:`reload` re-reads the files.
    """

    def __init__(
        self,
        keyfile: PathArg | None = None,
        certfile: PathArg | None = None,
        ca_certs: PathArg | None = None,
        *,
        password: str | bytes | None = None,
        insecure_skip_verify: bool = False,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum_version: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._config = TLSClientConfig(
            certfile=certfile,
            keyfile=keyfile,
            ca_certs=ca_certs,
            password=password,
            insecure_skip_verify=insecure_skip_verify,
            minimum_version=minimum_version,
            maximum_version=maximum_version,
            ciphers=ciphers,
        )
        self._context = client_context(self._config)

    @classmethod
    def from_config(cls, config: TLSClientConfig) -> TLSClient:
        return cls(
            config.keyfile,
            config.certfile,
            config.ca_certs,
            password=config.password,
            insecure_skip_verify=config.insecure_skip_verify,
            minimum_version=config.minimum_version,
            maximum_version=config.maximum_version,
            ciphers=config.ciphers,
        )

    def __repr__(self) -> str:
        return f"<TLSClient certfile={self._config.certfile!r} ca_certs={self._config.ca_certs!r}>"

    @property
    def config(self) -> TLSClientConfig:
        return self._config

    @property
    def context(self) -> ssl.SSLContext:
        return self._context

    def reload(self, config: TLSClientConfig | None = None) -> None:
        """Re-read the files (or use ``config``); on error the current context stays."""
        with self._lock:
            config = config or self._config
            context = client_context(config)
            self._config, self._context = config, context

    def wrap(self, sock: socket.socket, server_hostname: str, *, timeout: float | None = 10.0) -> TLSSocket:
        """Run the client handshake on a connected socket (which it takes over) within ``timeout``."""
        context, config = self._context, self._config
        peer = peer_name(sock)
        if config.insecure_skip_verify:
            log.warning(
                "TLS verification is DISABLED for %s (insecure_skip_verify=True): the connection is "
                "encrypted but not authenticated, so anyone on the path can impersonate the server",
                peer,
            )
        sock.settimeout(timeout)  # SSL do_handshake takes the socket timeout as a total deadline
        try:
            tls = context.wrap_socket(sock, server_hostname=server_hostname, do_handshake_on_connect=True)
        except (OSError, ValueError) as exc:
            sock.close()
            raise handshake_error(
                exc, server_side=False, peer=peer, hostname=server_hostname, sent_certificate=config.certfile is not None, timeout=timeout,
                context=context,
            ) from exc
        if not isinstance(tls, TLSSocket):
            tls.close()
            raise TypeError("the SSL context must hand out rpc_tls.TLSSocket (set its sslsocket_class)")
        tls.share()
        tls.settimeout(None)
        return tls

    def connect(
        self,
        host: str,
        port: int,
        service: ServiceArg = VoidService,
        config: ConfigArg = None,
        *,
        server_hostname: str | None = None,
        ipv6: bool = False,
        timeout: float | None = 10.0,
        connection_class: type[Connection] = Connection,
    ) -> Connection:
        """Connect to ``host:port`` over TLS and return the handshaken connection.

        ``server_hostname`` is the name the server's certificate must hold (default: ``host``);
        ``timeout`` bounds the TCP connect and the TLS handshake, each.
        """
        sock = open_tcp(host, port, ipv6=ipv6, timeout=timeout)
        tls = self.wrap(sock, server_hostname or host, timeout=timeout)
        peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            # an unverified certificate proves nothing: no identity without verification
            der = None if self._config.insecure_skip_verify else tls.getpeercert(binary_form=True)
            identity = PeerIdentity.from_der(der) if der else None
            stream = TLSStream(tls, sent_certificate=self._config.certfile is not None, peer=peer)
        except BaseException:
            tls.close()
            raise
        try:
            return connect_stream(stream, service, config, credentials=identity, connection_class=connection_class)
        except TLSConnectionError as exc:
            stream.close()
            if exc.handshake_error is not None:  # TLS 1.3: the server's verdict on our certificate
                raise exc.handshake_error from exc
            raise
        except BaseException:
            stream.close()
            raise


def tls_connect(
    host: str,
    port: int,
    keyfile: PathArg | None = None,
    certfile: PathArg | None = None,
    ca_certs: PathArg | None = None,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    server_hostname: str | None = None,
    ipv6: bool = False,
    timeout: float | None = 10.0,
    password: str | bytes | None = None,
    insecure_skip_verify: bool = False,
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
    maximum_version: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
    connection_class: type[Connection] = Connection,
) -> Connection:
    """Connect to an rpc server over TLS.

    Verifies the server's certificate against ``ca_certs`` (the system trust store when
    None) and that it names ``server_hostname`` (default ``host``); TLS 1.2 at least.
    ``certfile``/``keyfile`` present a client certificate (mutual TLS). The server's
    :class:`PeerIdentity` is the connection's ``credentials`` (None when verification is
    skipped: an unverified certificate proves nothing). To reuse one context for
    many connections, make a :class:`TLSClient` and call its ``connect``.
    """
    client = TLSClient(
        keyfile,
        certfile,
        ca_certs,
        password=password,
        insecure_skip_verify=insecure_skip_verify,
        minimum_version=minimum_version,
        maximum_version=maximum_version,
        ciphers=ciphers,
    )
    return client.connect(
        host, port, service, config, server_hostname=server_hostname, ipv6=ipv6, timeout=timeout, connection_class=connection_class
    )

"""The server side: :class:`TLSAuthenticator`, an ``rpc_service.Authenticator``.

Owns the server's SSL context (built once, swapped whole by :meth:`TLSAuthenticator.reload`)
and the TLS handshake of each accepted socket. The server calls the authenticator on a
client's own thread (never on the accept loop) with the socket's timeout set to the
handshake deadline; the handshake must finish within it, in total (a client trickling bytes
does not extend it). The verified client certificate becomes a :class:`PeerIdentity`, which
the service sees as ``conn.credentials``. It must not accept sockets, serve connections or
decide who is authorized: ``on_connect`` does that from the identity.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from typing import Any

from ._context import PathArg, TLSServerConfig, server_context
from ._errors import TLSHandshakeError, handshake_error
from ._identity import PeerIdentity
from ._socket import TLSSocket, TLSStream, peer_name

__all__ = ["TLSAuthenticator"]

log = logging.getLogger("rpc_tls")
#: How long a refused client gets to read the alert that says why (see _linger).
_LINGER = 0.5


class TLSAuthenticator:
    """Wraps each accepted socket in TLS; pass it as a server's ``authenticator=``.

    ``keyfile``/``certfile`` are the server's key and certificate (PEM; ``keyfile`` may be
    None when ``certfile`` holds both). With ``ca_certs`` every client must present a
    certificate issued by one of those CAs (``require_client_cert=False``: only verified
    when presented). ``handshake_timeout`` is the deadline used when the caller's socket has
    no timeout of its own (servers set one from ``protocol_config["handshake_timeout"]``).
    """

    def __init__(
        self,
        keyfile: PathArg | None,
        certfile: PathArg,
        ca_certs: PathArg | None = None,
        *,
        password: str | bytes | None = None,
        require_client_cert: bool = True,
        minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2,
        maximum_version: ssl.TLSVersion | None = None,
        ciphers: str | None = None,
        handshake_timeout: float = 10.0,
    ) -> None:
        if handshake_timeout <= 0:
            raise ValueError("handshake_timeout must be positive")
        self.handshake_timeout = handshake_timeout
        self._lock = threading.Lock()
        self._config = TLSServerConfig(
            certfile=certfile,
            keyfile=keyfile,
            ca_certs=ca_certs,
            password=password,
            require_client_cert=require_client_cert,
            minimum_version=minimum_version,
            maximum_version=maximum_version,
            ciphers=ciphers,
        )
        self._context = server_context(self._config)

    @classmethod
    def from_config(cls, config: TLSServerConfig, *, handshake_timeout: float = 10.0) -> TLSAuthenticator:
        return cls(
            config.keyfile,
            config.certfile,
            config.ca_certs,
            password=config.password,
            require_client_cert=config.require_client_cert,
            minimum_version=config.minimum_version,
            maximum_version=config.maximum_version,
            ciphers=config.ciphers,
            handshake_timeout=handshake_timeout,
        )

    def __repr__(self) -> str:
        mode = "mutual TLS" if self._config.ca_certs is not None else "server-only TLS"
        return f"<TLSAuthenticator {mode} certfile={str(self._config.certfile)!r}>"

    @property
    def config(self) -> TLSServerConfig:
        """The settings the current context was built from."""
        return self._config

    @property
    def context(self) -> ssl.SSLContext:
        """The SSL context new connections use (replaced whole by :meth:`reload`)."""
        return self._context

    def reload(self, config: TLSServerConfig | None = None) -> None:
        """Re-read the key, certificate and CA files (or use ``config``) for new connections.

        The new context is built first and swapped in whole: if loading fails the error is
        raised (:class:`CertificateFileError`) and the server keeps its current certificate.
        Connections already open keep the context they were made with.
        """
        with self._lock:
            config = config or self._config
            context = server_context(config)
            self._config, self._context = config, context
        log.info("%r: certificates reloaded", self)

    def __call__(self, sock: socket.socket) -> tuple[TLSStream, Any]:
        """Run the TLS handshake on an accepted socket; returns a :class:`TLSStream` over it
        and the client's :class:`PeerIdentity` (None if it sent no certificate). Raises
        :class:`TLSHandshakeError`."""
        context = self._context  # one snapshot: a concurrent reload() affects later clients only
        timeout = sock.gettimeout() or self.handshake_timeout
        deadline = time.monotonic() + timeout
        peer = peer_name(sock)
        # Handshake on a duplicate, so that ``sock`` (which the server may shut down when it
        # closes) keeps naming the connection during the handshake and afterwards.
        twin = sock.dup()
        twin.settimeout(timeout)  # with a timeout, SSL do_handshake takes it as a total deadline
        try:
            tls = context.wrap_socket(twin, server_side=True, do_handshake_on_connect=True)
        except (OSError, ValueError) as exc:
            twin.close()
            if not isinstance(exc, TimeoutError):
                _linger(sock, min(deadline, time.monotonic() + _LINGER))  # within the handshake deadline
            error = handshake_error(exc, server_side=True, peer=peer, timeout=timeout, context=context)
            log.debug("%s", error)
            raise error from exc
        if not isinstance(tls, TLSSocket):  # a context not made by this package
            tls.close()
            raise TypeError("the SSL context must hand out rpc_tls.TLSSocket (set its sslsocket_class)")
        tls.share(companion=sock)
        try:
            der = tls.getpeercert(binary_form=True)
            identity = PeerIdentity.from_der(der) if der else None
        except ValueError as exc:
            tls.close()
            raise TLSHandshakeError(f"TLS handshake with {peer} failed: cannot read the client's certificate: {exc}") from exc
        log.debug("TLS with %s: %s %s, client %s", peer, tls.version(), (tls.cipher() or ("?",))[0], identity or "anonymous")
        tls.settimeout(None)  # the handshake deadline is over; the connection manages its reads
        return TLSStream(tls, server_side=True, peer=peer), identity


def _linger(sock: socket.socket, deadline: float) -> None:
    """Close our direction and drain the client's for a moment (bounded by ``deadline``).

    A TLS 1.3 client finishes its handshake before the server judges its certificate, so it
    may already have sent application data; closing a socket with unread data makes the
    kernel send a reset, which can destroy the alert that tells the client why it was
    refused. Reading until the client closes (or the deadline) lets the alert arrive.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        drained = 0
        while drained < 1 << 20:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            sock.settimeout(remaining)
            data = sock.recv(65536)
            if not data:
                return
            drained += len(data)
    except OSError:
        return

"""rpc_tls: TLS for rpc connections, and the certificates to go with it.

Encrypted, authenticated connections for ``rpc_service``: :func:`tls_connect` verifies the
server's certificate and host name by default (TLS 1.2 at least), :class:`TLSAuthenticator`
makes any server speak TLS and, given ``ca_certs``, require client certificates, whose
verified :class:`PeerIdentity` the service sees as ``conn.credentials``. Certificates for
development and private deployments come from :class:`CertificateAuthority` or the
``rpc-tls`` command.

    import rpc_service, rpc_tls

    ca = rpc_tls.CertificateAuthority.create()
    ca.save("ca.pem", "ca.key")
    ca.issue_server("localhost", "127.0.0.1").save("server.pem", "server.key")
    ca.issue_client("alice").save("alice.pem", "alice.key")

    auth = rpc_tls.TLSAuthenticator("server.key", "server.pem", ca_certs="ca.pem")
    with rpc_service.ThreadedServer(MyService, authenticator=auth) as server:
        server.start_in_thread()
        with rpc_tls.tls_connect("localhost", server.port, "alice.key", "alice.pem", ca_certs="ca.pem") as conn:
            conn.root.hello()        # the server's on_connect saw conn.credentials.common_name == "alice"
"""

from __future__ import annotations

from .__about__ import __version__
from ._certs import CertificateAuthority, CertifiedKey, KeyType, PrivateKey, generate_key
from ._client import TLSClient, tls_connect
from ._context import TLSClientConfig, TLSServerConfig
from ._errors import (
    CertificateExpiredError,
    CertificateFileError,
    CertificateVerificationError,
    ClientCertificateRequiredError,
    HostnameMismatchError,
    TLSConnectionError,
    TLSError,
    TLSHandshakeError,
    TLSHandshakeTimeout,
    TLSVersionError,
    UnknownCAError,
)
from ._identity import PeerIdentity
from ._server import TLSAuthenticator
from ._socket import TLSSocket, TLSStream

__all__ = [
    "__version__",
    # connecting and serving
    "TLSAuthenticator",
    "TLSClient",
    "TLSClientConfig",
    "TLSServerConfig",
    "tls_connect",
    # identities
    "PeerIdentity",
    # certificate tooling
    "CertificateAuthority",
    "CertifiedKey",
    "KeyType",
    "PrivateKey",
    "generate_key",
    # transport
    "TLSSocket",
    "TLSStream",
    # errors
    "CertificateExpiredError",
    "CertificateFileError",
    "CertificateVerificationError",
    "ClientCertificateRequiredError",
    "HostnameMismatchError",
    "TLSConnectionError",
    "TLSError",
    "TLSHandshakeError",
    "TLSHandshakeTimeout",
    "TLSVersionError",
    "UnknownCAError",
]

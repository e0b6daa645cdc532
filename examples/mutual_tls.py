"""Mutual TLS: a private CA, certificates for a server and a client, and a server that lets in
only clients holding a certificate from that CA.

The certificates are made in Python in a temporary directory (``rpc-tls ca``, ``rpc-tls server``
and ``rpc-tls client`` make the same files from the shell). The server sees the client's verified
identity as ``conn.credentials``. Run it with ``hatch run demo:python examples/mutual_tls.py``.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta

import rpc_service
import rpc_tls


class GreeterService(rpc_service.Service):
    def on_connect(self, conn: rpc_service.Connection) -> None:
        self.caller = conn.credentials.common_name  # a rpc_tls.PeerIdentity, verified

    def exposed_hello(self) -> str:
        return f"hello, {self.caller}"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:

        def path(name: str) -> str:
            return os.path.join(tmp, name)

        ca = rpc_tls.CertificateAuthority.create("example CA", valid_for=timedelta(hours=1))
        ca.save(path("ca.pem"), path("ca.key"))
        ca.issue_server("localhost", "127.0.0.1", valid_for=timedelta(hours=1)).save(path("server.pem"), path("server.key"))
        ca.issue_client("alice", valid_for=timedelta(hours=1)).save(path("alice.pem"), path("alice.key"))
        print(f"[setup] CA, server and client certificates in {tmp}")

        authenticator = rpc_tls.TLSAuthenticator(path("server.key"), path("server.pem"), ca_certs=path("ca.pem"))
        with rpc_service.ThreadedServer(GreeterService, authenticator=authenticator) as server:
            server.start_in_thread()
            print(f"[server] mutual TLS on 127.0.0.1:{server.port}")
            with rpc_tls.tls_connect(
                "127.0.0.1", server.port, keyfile=path("alice.key"), certfile=path("alice.pem"), ca_certs=path("ca.pem")
            ) as conn:
                greeting = conn.root.hello()
                print(f"[alice] {greeting}; the server's certificate: {conn.credentials.subject}")
                assert greeting == "hello, alice"
            try:  # no client certificate: refused during the handshake
                rpc_tls.tls_connect("127.0.0.1", server.port, ca_certs=path("ca.pem")).close()
            except rpc_tls.TLSError as exc:
                print(f"[anonymous] refused: {type(exc).__name__}")
            else:
                raise AssertionError("a client without a certificate got in")
    print("[example] done")


if __name__ == "__main__":
    main()

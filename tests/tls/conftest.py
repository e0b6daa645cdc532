"""Fixtures for the TLS tests: a PKI minted at run time, and servers that are always closed.

``pki`` (once per session) makes two CAs and every certificate the tests need, valid for an
hour (or already expired, for the expiry tests), and writes them to a temporary folder: no
key is ever committed. ``serve(authenticator, ...)`` starts a server on 127.0.0.1, port 0,
and closes it at teardown; ``EchoService`` is what it serves by default.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import pytest

import rpc_service
import rpc_tls
from rpc_service import Connection, Service
from rpc_tls import CertificateAuthority, CertifiedKey, PeerIdentity

HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Pair:
    """A certificate and key on disk."""

    cert: str
    key: str
    item: CertifiedKey

    @property
    def identity(self) -> PeerIdentity:
        return self.item.identity


@dataclass(frozen=True)
class Pki:
    root: Path
    ca: str  # the CA certificate file (ca_certs=)
    other_ca: str
    authority: CertificateAuthority
    server: Pair  # localhost, 127.0.0.1, ::1
    server_two: Pair  # the same names, another key (for reload)
    server_other_ca: Pair
    server_wrong_host: Pair
    server_expired: Pair
    alice: Pair
    bob: Pair
    alice_expired: Pair
    mallory: Pair  # a client certificate from the other CA


def _pair(root: Path, name: str, item: CertifiedKey) -> Pair:
    cert, key = root / f"{name}.pem", root / f"{name}.key"
    item.save(cert, key)
    return Pair(str(cert), str(key), item)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority.create("rpc-tls test CA", valid_for=HOUR)
    other = CertificateAuthority.create("someone else's CA", valid_for=HOUR)
    ca.save(root / "ca.pem", root / "ca.key")
    other.save(root / "other-ca.pem", root / "other-ca.key")
    now = datetime.now(timezone.utc)
    start, end = now - timedelta(days=2), now - timedelta(days=1)  # expired yesterday
    hosts = ("localhost", "127.0.0.1", "::1")
    return Pki(
        root=root,
        ca=str(root / "ca.pem"),
        other_ca=str(root / "other-ca.pem"),
        authority=ca,
        server=_pair(root, "server", ca.issue_server(*hosts, valid_for=HOUR)),
        server_two=_pair(root, "server-two", ca.issue_server(*hosts, common_name="server-two", valid_for=HOUR)),
        server_other_ca=_pair(root, "server-other-ca", other.issue_server(*hosts, valid_for=HOUR)),
        server_wrong_host=_pair(root, "server-wrong-host", ca.issue_server("elsewhere.example", valid_for=HOUR)),
        server_expired=_pair(root, "server-expired", ca.issue_server(*hosts, not_before=start, not_after=end)),
        alice=_pair(root, "alice", ca.issue_client("alice", valid_for=HOUR)),
        bob=_pair(root, "bob", ca.issue_client("bob", valid_for=HOUR)),
        alice_expired=_pair(root, "alice-expired", ca.issue_client("alice", not_before=start, not_after=end)),
        mallory=_pair(root, "mallory", other.issue_client("mallory", valid_for=HOUR)),
    )


class EchoService(Service):
    """Echo, callbacks, and who the server thinks the client is."""

    def on_connect(self, conn: Connection) -> None:
        self._conn = conn

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_call(self, function: Callable[[Any], Any], value: Any) -> Any:
        return function(value)

    def exposed_whoami(self) -> str | None:
        identity = self._conn.credentials
        return None if identity is None else str(identity.common_name)


class Serve(Protocol):
    def __call__(
        self,
        authenticator: Any,
        service: type[Service] | Service = EchoService,
        *,
        server_class: type[rpc_service.Server] = rpc_service.ThreadedServer,
        protocol_config: dict[str, Any] | None = None,
        ipv6: bool = False,
    ) -> rpc_service.Server: ...


@pytest.fixture
def serve() -> Iterator[Serve]:
    servers: list[rpc_service.Server] = []

    def serve(
        authenticator: Any,
        service: type[Service] | Service = EchoService,
        *,
        server_class: type[rpc_service.Server] = rpc_service.ThreadedServer,
        protocol_config: dict[str, Any] | None = None,
        ipv6: bool = False,
    ) -> rpc_service.Server:
        server = server_class(service, port=0, ipv6=ipv6, authenticator=authenticator, protocol_config=protocol_config)
        servers.append(server)
        server.start_in_thread()
        return server

    yield serve
    for server in servers:
        server.close()


class RecordingAuthenticator:
    """Wraps an authenticator and keeps what each call returned or raised."""

    def __init__(self, inner: rpc_tls.TLSAuthenticator) -> None:
        self.inner = inner
        self.identities: list[PeerIdentity | None] = []
        self.errors: list[BaseException] = []
        self.done = threading.Event()

    def __call__(self, sock: socket.socket) -> tuple[rpc_tls.TLSStream, Any]:
        try:
            wrapped, identity = self.inner(sock)
        except BaseException as exc:
            self.errors.append(exc)
            self.done.set()
            raise
        self.identities.append(identity)
        self.done.set()
        return wrapped, identity


def mutual(pki: Pki, **options: Any) -> rpc_tls.TLSAuthenticator:
    """The server side of mutual TLS: the test server certificate, clients from the test CA."""
    return rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, ca_certs=pki.ca, **options)


def ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True

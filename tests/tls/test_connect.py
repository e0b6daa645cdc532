"""Connecting over TLS: what is accepted, what is refused, and what each side learns.

Server-only and mutual TLS; every refusal the issue lists (no client certificate, a client
certificate from another CA, a host name the server's certificate does not hold, an expired
certificate) ends in this package's specific error with a message saying what to change,
under TLS 1.2 and 1.3 alike; the verified identity reaches ``on_connect`` as
``conn.credentials``; a refused client never disturbs the server.
"""

from __future__ import annotations

import logging
import ssl
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes

import rpc_service
import rpc_tls
from rpc_service import AuthenticationError, ConnectionClosedError, ConnectionFailedError, Connection, Service
from rpc_tls import (
    CertificateExpiredError,
    ClientCertificateRequiredError,
    HostnameMismatchError,
    PeerIdentity,
    TLSHandshakeError,
    TLSVersionError,
    UnknownCAError,
)

from .conftest import EchoService, Pki, RecordingAuthenticator, Serve, ipv6_loopback, mutual

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
VERSIONS = pytest.mark.parametrize("version", [TLS12, TLS13], ids=["tls1.2", "tls1.3"])
QUICK = {"sync_request_timeout": 10}


def connect(pki: Pki, port: int, client: str | None = "alice", **options: Any) -> Connection:
    pair = getattr(pki, client) if client else None
    options.setdefault("ca_certs", pki.ca)
    options.setdefault("config", QUICK)
    return rpc_tls.tls_connect(
        "127.0.0.1", port, keyfile=pair.key if pair else None, certfile=pair.cert if pair else None, **options
    )


def assert_still_serving(pki: Pki, server: rpc_service.Server) -> None:
    with connect(pki, server.port) as conn:
        assert conn.root.echo("still here") == "still here"


# -- accepted -------------------------------------------------------------------------------


def test_server_only_tls(pki: Pki, serve: Serve) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert))
    with connect(pki, server.port, client=None) as conn:
        assert conn.root.echo(b"over tls") == b"over tls"
        assert conn.root.call(lambda x: x * 2, 21) == 42  # callbacks cross too
        assert conn.root.whoami() is None  # no client certificate: no identity
        assert isinstance(conn.credentials, PeerIdentity)  # the client knows whom it reached
        assert conn.credentials.fingerprint_sha256 == pki.server.identity.fingerprint_sha256
        assert "TLSStream" in repr(conn)


def test_a_tls_connection_idle_a_while_still_serves(pki: Pki, serve: Serve) -> None:
    """The server's listener passes a read timeout of 0.15 s on to the sockets it accepts
    (rpc_service), undone before the authenticator runs: a TLS client quiet for longer is
    still served."""
    server = serve(rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert))
    with connect(pki, server.port, client=None) as conn:
        assert conn.root.echo("first") == "first"
        time.sleep(0.5)
        assert conn.root.echo("after a pause") == "after a pause"


@VERSIONS
def test_mutual_tls_accepted(pki: Pki, serve: Serve, version: ssl.TLSVersion) -> None:
    server = serve(mutual(pki))
    with connect(pki, server.port, maximum_version=version) as conn:
        assert conn.root.whoami() == "alice"
        assert conn.root.echo(list(range(5))) == list(range(5))
        assert {TLS12: "TLSv1.2", TLS13: "TLSv1.3"}[version] in repr(conn)  # the TLSStream's repr names it


def test_identity_is_visible_in_on_connect(pki: Pki, serve: Serve) -> None:
    seen: list[Any] = []

    class WatchingService(Service):
        def on_connect(self, conn: Connection) -> None:
            seen.append(conn.credentials)

    server = serve(mutual(pki), WatchingService)
    with connect(pki, server.port) as conn:
        conn.ping(timeout=5)
    (identity,) = seen
    assert isinstance(identity, PeerIdentity)
    assert identity == pki.alice.identity
    assert identity.common_name == "alice"
    assert identity.subject == "CN=alice"
    assert identity.issuer == "CN=rpc-tls test CA"
    assert identity.fingerprint_sha256 == pki.alice.item.certificate.fingerprint(hashes.SHA256()).hex()
    assert identity.not_before < identity.not_after


def test_on_connect_can_refuse_by_identity(pki: Pki, serve: Serve) -> None:
    class OnlyAlice(EchoService):
        def on_connect(self, conn: Connection) -> None:
            if conn.credentials is None or conn.credentials.common_name != "alice":
                raise PermissionError(f"{conn.credentials} may not use this service")
            super().on_connect(conn)

    server = serve(mutual(pki), OnlyAlice)
    with connect(pki, server.port, client="alice") as conn:
        assert conn.root.whoami() == "alice"
    with pytest.raises(rpc_service.ConnectionRejectedError, match="PermissionError: CN=bob"):
        connect(pki, server.port, client="bob")  # the factory says why (on_connect runs before the server's Hello)


def test_optional_client_certificate(pki: Pki, serve: Serve) -> None:
    server = serve(mutual(pki, require_client_cert=False))
    with connect(pki, server.port, client=None) as conn:
        assert conn.root.whoami() is None
    with connect(pki, server.port, client="bob") as conn:
        assert conn.root.whoami() == "bob"
    with pytest.raises(UnknownCAError):  # presented certificates are still verified
        connect(pki, server.port, client="mallory")


def test_server_hostname_override(pki: Pki, serve: Serve) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server_wrong_host.key, pki.server_wrong_host.cert))
    with connect(pki, server.port, client=None, server_hostname="elsewhere.example") as conn:
        assert conn.credentials.dns_names == ("elsewhere.example",)


def test_one_client_context_for_many_connections(pki: Pki, serve: Serve) -> None:
    server = serve(mutual(pki))
    client = rpc_tls.TLSClient(pki.alice.key, pki.alice.cert, pki.ca)
    context = client.context
    for _ in range(3):
        with client.connect("localhost", server.port, config=QUICK) as conn:
            assert conn.root.whoami() == "alice"
    assert client.context is context


@pytest.mark.parametrize(
    "server_class",
    [rpc_service.ThreadedServer, rpc_service.ThreadPoolServer, rpc_service.ForkingServer, rpc_service.OneShotServer],
    ids=["threaded", "pool", "forking", "oneshot"],
)
def test_every_kind_of_server(pki: Pki, serve: Serve, server_class: type[rpc_service.Server]) -> None:
    server = serve(mutual(pki), server_class=server_class)
    with connect(pki, server.port) as conn:
        assert conn.root.whoami() == "alice"
        for index in range(3):
            assert conn.root.call(lambda x: x + 1, index) == index + 1


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6(pki: Pki, serve: Serve) -> None:
    server = serve(mutual(pki), ipv6=True)
    with rpc_tls.tls_connect("::1", server.port, pki.alice.key, pki.alice.cert, pki.ca, ipv6=True, config=QUICK) as conn:
        assert conn.root.whoami() == "alice"


def test_insecure_skip_verify_connects_and_warns(pki: Pki, serve: Serve, caplog: pytest.LogCaptureFixture) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server_other_ca.key, pki.server_other_ca.cert))
    with caplog.at_level(logging.WARNING, logger="rpc_tls"):
        with connect(pki, server.port, client=None, ca_certs=None, insecure_skip_verify=True) as conn:
            assert conn.root.echo(1) == 1
            assert conn.credentials is None  # an unverified certificate is no identity
    assert "verification is DISABLED" in caplog.text
    assert "insecure_skip_verify=True" in caplog.text


# -- refused --------------------------------------------------------------------------------


@VERSIONS
def test_client_without_certificate_is_rejected(pki: Pki, serve: Serve, version: ssl.TLSVersion) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth)
    with pytest.raises(ClientCertificateRequiredError) as caught:
        connect(pki, server.port, client=None, maximum_version=version)
    assert caught.value.rejected_by_peer
    assert "requires a client certificate" in str(caught.value) and "certfile=" in str(caught.value)
    assert auth.done.wait(5)
    assert isinstance(auth.errors[0], ClientCertificateRequiredError)
    assert "sent no certificate" in str(auth.errors[0])
    assert_still_serving(pki, server)


@VERSIONS
def test_client_certificate_from_another_ca_is_rejected(pki: Pki, serve: Serve, version: ssl.TLSVersion) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth)
    with pytest.raises(UnknownCAError) as caught:
        connect(pki, server.port, client="mallory", maximum_version=version)
    assert caught.value.rejected_by_peer
    assert "does not trust the CA" in str(caught.value)
    assert auth.done.wait(5)
    assert isinstance(auth.errors[0], UnknownCAError) and not auth.errors[0].rejected_by_peer
    assert_still_serving(pki, server)


def test_server_certificate_from_an_unknown_ca_is_rejected(pki: Pki, serve: Serve) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server_other_ca.key, pki.server_other_ca.cert))
    with pytest.raises(UnknownCAError) as caught:
        connect(pki, server.port, client=None)
    assert not caught.value.rejected_by_peer
    assert "ca_certs=" in str(caught.value)


def test_system_trust_store_is_the_default(pki: Pki, serve: Serve) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert))
    with pytest.raises(UnknownCAError):  # our private CA is in no system store
        connect(pki, server.port, client=None, ca_certs=None)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_hostname_mismatch_is_rejected(pki: Pki, serve: Serve, host: str) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server_wrong_host.key, pki.server_wrong_host.cert))
    with pytest.raises(HostnameMismatchError) as caught:
        rpc_tls.tls_connect(host, server.port, ca_certs=pki.ca)
    assert repr(host) in str(caught.value) and "server_hostname=" in str(caught.value)


def test_expired_server_certificate_is_rejected(pki: Pki, serve: Serve) -> None:
    server = serve(rpc_tls.TLSAuthenticator(pki.server_expired.key, pki.server_expired.cert))
    with pytest.raises(CertificateExpiredError) as caught:
        connect(pki, server.port, client=None)
    assert "expired" in str(caught.value) and not caught.value.rejected_by_peer


@VERSIONS
def test_expired_client_certificate_is_rejected(pki: Pki, serve: Serve, version: ssl.TLSVersion) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth)
    with pytest.raises(CertificateExpiredError) as caught:
        connect(pki, server.port, client="alice_expired", maximum_version=version)
    assert caught.value.rejected_by_peer and "renew" in str(caught.value)
    assert auth.done.wait(5)
    assert isinstance(auth.errors[0], CertificateExpiredError)


def test_handshake_errors_are_connection_and_authentication_errors(pki: Pki, serve: Serve) -> None:
    server = serve(mutual(pki))
    with pytest.raises(TLSHandshakeError) as caught:
        connect(pki, server.port, client=None)
    assert isinstance(caught.value, ConnectionFailedError)  # what rpc_service.connect raises
    assert isinstance(caught.value, AuthenticationError)  # what servers log for refused peers
    assert isinstance(caught.value, rpc_tls.TLSError)


def test_plain_client_cannot_reach_a_tls_server(pki: Pki, serve: Serve) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth, protocol_config={"handshake_timeout": 2})
    with pytest.raises((ConnectionClosedError, TimeoutError)):
        rpc_service.connect("127.0.0.1", server.port, config={"handshake_timeout": 2})
    assert auth.done.wait(5)
    assert "does not speak TLS" in str(auth.errors[0])
    assert_still_serving(pki, server)


def test_tls_client_cannot_reach_a_plain_server(pki: Pki, serve: Serve) -> None:
    server = serve(None)
    with pytest.raises(TLSHandshakeError, match="does not speak TLS|closed the connection"):
        connect(pki, server.port, timeout=5)


def test_versions_below_tls_1_2_cannot_be_configured(pki: Pki) -> None:
    with pytest.raises(ValueError, match="TLS 1.2"):
        rpc_tls.TLSClient(minimum_version=ssl.TLSVersion.TLSv1_1)
    with pytest.raises(ValueError, match="TLS 1.2"):
        rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, minimum_version=ssl.TLSVersion.TLSv1)
    assert rpc_tls.TLSClient(ca_certs=pki.ca).context.minimum_version == TLS12
    assert mutual(pki).context.minimum_version == TLS12


@pytest.mark.parametrize(
    "server_versions, client_versions, server_says, client_says",
    [
        ({"maximum_version": TLS12}, {"minimum_version": TLS13}, "accepts TLS 1.2 only", "offered (TLS 1.3)"),
        ({"minimum_version": TLS13}, {"maximum_version": TLS12}, "accepts TLS 1.3 only", "offered (TLS 1.2)"),
    ],
    ids=["old-server", "old-client"],
)
def test_a_version_error_names_the_versions_each_side_allows(
    pki: Pki, serve: Serve, server_versions: dict[str, Any], client_versions: dict[str, Any], server_says: str, client_says: str
) -> None:
    auth = RecordingAuthenticator(mutual(pki, **server_versions))
    server = serve(auth)
    with pytest.raises(TLSVersionError) as caught:
        connect(pki, server.port, **client_versions)
    assert client_says in str(caught.value) and "or newer" not in str(caught.value)
    assert auth.done.wait(5)
    assert isinstance(auth.errors[0], TLSVersionError) and server_says in str(auth.errors[0]), auth.errors
    assert_still_serving(pki, server)


def test_contradictory_client_settings_are_refused(pki: Pki) -> None:
    with pytest.raises(ValueError, match="contradict"):
        rpc_tls.TLSClient(ca_certs=pki.ca, insecure_skip_verify=True)
    with pytest.raises(ValueError, match="certfile"):
        rpc_tls.TLSClient(keyfile=pki.alice.key)


def test_unreachable_server_is_a_connection_failure(pki: Pki) -> None:
    with pytest.raises(ConnectionFailedError, match="cannot connect"):
        connect(pki, 1, timeout=2)  # nothing listens on port 1

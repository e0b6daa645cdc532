"""The translation of ``ssl`` errors into this package's errors, case by case.

The end-to-end tests meet the common failures; these feed :func:`handshake_error` and
:func:`connection_error` the OpenSSL reasons and verification codes that are hard to
provoke on purpose, and check the class, the direction (``rejected_by_peer``) and that the
message says what to do. Also the shape of the error tree.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

import rpc_service
import rpc_tls
from rpc_protocol import RPCError
from rpc_tls._errors import connection_error, file_error, handshake_error


def ssl_error(reason: str) -> ssl.SSLError:
    error = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()} (_ssl.c:1)")
    error.reason = reason
    return error


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
    error.reason = "CERTIFICATE_VERIFY_FAILED"
    error.verify_code = code
    error.verify_message = message
    return error


@pytest.mark.parametrize(
    "exc, server_side, kind, by_peer, words",
    [
        (ssl_error("UNSUPPORTED_PROTOCOL"), True, rpc_tls.TLSVersionError, False, "TLS 1.2 or newer"),
        (ssl_error("TLSV1_ALERT_PROTOCOL_VERSION"), False, rpc_tls.TLSVersionError, True, "refused the versions"),
        (ssl_error("PEER_DID_NOT_RETURN_A_CERTIFICATE"), True, rpc_tls.ClientCertificateRequiredError, False, "sent no certificate"),
        (ssl_error("TLSV13_ALERT_CERTIFICATE_REQUIRED"), False, rpc_tls.ClientCertificateRequiredError, True, "certfile="),
        (ssl_error("SSLV3_ALERT_CERTIFICATE_EXPIRED"), True, rpc_tls.CertificateExpiredError, True, "refused this server's certificate"),
        (ssl_error("SSLV3_ALERT_BAD_CERTIFICATE"), False, rpc_tls.CertificateVerificationError, True, "refused this client's"),
        (verify_error(9, "certificate is not yet valid"), False, rpc_tls.CertificateExpiredError, False, "not yet valid"),
        (verify_error(18, "self-signed certificate"), False, rpc_tls.UnknownCAError, False, "ca_certs="),
        (verify_error(20, "unable to get local issuer certificate"), True, rpc_tls.UnknownCAError, False, "this server's ca_certs"),
        (verify_error(64, "IP address mismatch"), False, rpc_tls.HostnameMismatchError, False, "server_hostname="),
        (verify_error(23, "certificate revoked"), False, rpc_tls.CertificateVerificationError, False, "was refused"),
        (ssl_error("HTTP_REQUEST"), True, rpc_tls.TLSHandshakeError, False, "does not speak TLS"),
        (ssl.SSLEOFError(8, "EOF occurred in violation of protocol"), False, rpc_tls.TLSHandshakeError, False, "closed the connection"),
        (ConnectionResetError(104, "Connection reset by peer"), True, rpc_tls.TLSHandshakeError, False, "closed the connection"),
        (TimeoutError("timed out"), True, rpc_tls.TLSHandshakeTimeout, False, "within 2 s"),
    ],
)
def test_handshake_error_classification(
    exc: BaseException, server_side: bool, kind: type[rpc_tls.TLSHandshakeError], by_peer: bool, words: str
) -> None:
    error = handshake_error(exc, server_side=server_side, peer="10.1.2.3:4433", hostname="example.test", timeout=2)
    assert type(error) is kind
    assert error.rejected_by_peer is by_peer
    assert str(error).startswith("TLS handshake with 10.1.2.3:4433 failed: ")
    assert words in str(error)


def test_a_bare_handshake_failure_depends_on_whether_a_certificate_was_sent() -> None:
    failure = ssl_error("SSLV3_ALERT_HANDSHAKE_FAILURE")
    without = handshake_error(failure, server_side=False, peer="p", sent_certificate=False)
    assert isinstance(without, rpc_tls.ClientCertificateRequiredError)  # how TLS 1.2 servers say it
    with_one = handshake_error(failure, server_side=False, peer="p", sent_certificate=True)
    assert type(with_one) is rpc_tls.TLSHandshakeError and "no cipher" in str(with_one)


def test_connection_errors() -> None:
    late = connection_error(ssl_error("TLSV1_ALERT_UNKNOWN_CA"), server_side=False, peer="p")
    assert isinstance(late, rpc_tls.TLSConnectionError) and isinstance(late, rpc_service.ConnectionClosedError)
    assert isinstance(late.handshake_error, rpc_tls.UnknownCAError)
    broken = connection_error(ssl_error("DECRYPTION_FAILED_OR_BAD_RECORD_MAC"), server_side=False, peer="p")
    assert isinstance(broken, rpc_tls.TLSConnectionError) and broken.handshake_error is None
    plain = connection_error(BrokenPipeError(32, "Broken pipe"), server_side=True, peer="p")
    assert type(plain) is rpc_service.ConnectionClosedError


def test_file_errors() -> None:
    mismatch = ssl_error("KEY_VALUES_MISMATCH")
    assert "does not belong" in str(file_error("certificate and key", "a.pem", mismatch))
    assert "permission denied" in str(file_error("private key", "k.key", PermissionError(13, "denied")))


def test_a_directory_given_for_a_file_is_named_as_such(tmp_path: Path) -> None:
    """Regression: TLSAuthenticator(ca_certs=<a directory>) said "no such file"."""
    error = file_error("CA certificates", str(tmp_path), FileNotFoundError(2, "No such file or directory"))
    assert "it is a directory, not a file" in str(error) and "no such file" not in str(error)


def test_error_tree() -> None:
    assert issubclass(rpc_tls.TLSError, RPCError)
    verification: list[type[Exception]] = [rpc_tls.CertificateExpiredError, rpc_tls.UnknownCAError, rpc_tls.HostnameMismatchError]
    assert all(issubclass(kind, rpc_tls.CertificateVerificationError) for kind in verification)
    handshake: list[type[Exception]] = [
        rpc_tls.CertificateVerificationError,
        rpc_tls.ClientCertificateRequiredError,
        rpc_tls.TLSVersionError,
        rpc_tls.TLSHandshakeTimeout,
    ]
    assert all(issubclass(kind, rpc_tls.TLSHandshakeError) for kind in handshake)
    assert issubclass(rpc_tls.TLSHandshakeError, rpc_service.ConnectionFailedError)
    assert issubclass(rpc_tls.TLSHandshakeError, rpc_service.AuthenticationError)
    assert issubclass(rpc_tls.TLSHandshakeTimeout, TimeoutError)
    assert issubclass(rpc_tls.TLSConnectionError, rpc_service.ConnectionClosedError)
    assert issubclass(rpc_tls.CertificateFileError, ValueError)
    assert set(rpc_tls.__all__) <= set(dir(rpc_tls))

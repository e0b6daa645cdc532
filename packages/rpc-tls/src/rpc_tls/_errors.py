"""The exceptions of the TLS layer, and the translation of ``ssl`` errors into them.

Owns the error tree below and :func:`handshake_error`, :func:`connection_error` and
:func:`file_error`: the only places where ``ssl.SSLError`` (and the socket errors met during
a handshake) become errors of this package, each with a message that says what went wrong
and what to change. Which OpenSSL failure means what is data (the tables below), not
if-chains. It must not do I/O, build contexts or know about connections::

    RPCError (rpc_protocol)
    └── TLSError                             every error of this package
        ├── TLSHandshakeError                the TLS handshake failed (also rpc_service's
        │   │                                ConnectionFailedError and AuthenticationError)
        │   ├── CertificateVerificationError a certificate was refused, by this side or the peer
        │   │   ├── CertificateExpiredError  expired (or not valid yet)
        │   │   ├── UnknownCAError           not issued by a CA the verifier trusts
        │   │   └── HostnameMismatchError    the server's certificate does not name the host
        │   ├── ClientCertificateRequiredError  the server requires a client certificate; none came
        │   ├── TLSVersionError              no protocol version in common (the floor is TLS 1.2)
        │   └── TLSHandshakeTimeout          the handshake did not finish in time (also TimeoutError)
        ├── TLSConnectionError               TLS failed on an open connection (also ConnectionClosedError)
        └── CertificateFileError             a key or certificate could not be loaded (also ValueError)

``rejected_by_peer`` tells the two directions apart: False when this side refused the
peer's certificate, True when the peer's alert says it refused ours.
"""

from __future__ import annotations

import os
import ssl
from typing import Mapping

from rpc_protocol import RPCError
from rpc_service import AuthenticationError, ConnectionClosedError, ConnectionFailedError

__all__ = [
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
    "connection_error",
    "file_error",
    "handshake_error",
]


class TLSError(RPCError):
    """Root of the errors of ``rpc_tls``."""


class TLSHandshakeError(TLSError, ConnectionFailedError, AuthenticationError):
    """The TLS handshake failed; no connection was made.

    ``reason`` is OpenSSL's reason code (``"CERTIFICATE_VERIFY_FAILED"``...) when known,
    ``verify_code`` the X.509 verification code when this side refused a certificate, and
    ``rejected_by_peer`` is True when the peer refused this side (its alert says why).
    """

    def __init__(self, message: str, *, reason: str | None = None, verify_code: int | None = None, rejected_by_peer: bool = False) -> None:
        super().__init__(message)
        self.reason = reason
        self.verify_code = verify_code
        self.rejected_by_peer = rejected_by_peer


class CertificateVerificationError(TLSHandshakeError):
    """A certificate was refused (by this side, or by the peer: see ``rejected_by_peer``)."""


class CertificateExpiredError(CertificateVerificationError):
    """A certificate has expired, or is not valid yet (check the clocks too)."""


class UnknownCAError(CertificateVerificationError):
    """A certificate was not issued by a CA the verifying side trusts."""


class HostnameMismatchError(CertificateVerificationError):
    """The server's certificate names neither the host nor the address connected to."""


class ClientCertificateRequiredError(TLSHandshakeError):
    """The server requires a client certificate and the client sent none."""


class TLSVersionError(TLSHandshakeError):
    """The two sides have no TLS version in common (this package never goes below TLS 1.2)."""


class TLSHandshakeTimeout(TLSHandshakeError, TimeoutError):
    """The peer did not complete the TLS handshake before the deadline."""


class TLSConnectionError(TLSError, ConnectionClosedError):
    """TLS failed on an established connection, which is closed now.

    ``handshake_error`` is set when the failure is a late handshake verdict (with TLS 1.3 a
    server refuses a client certificate only after the client finished its handshake, so
    the client learns it on its first read).
    """

    def __init__(self, message: str, handshake_error: TLSHandshakeError | None = None) -> None:
        super().__init__(message)
        self.handshake_error = handshake_error


class CertificateFileError(TLSError, ValueError):
    """A key or certificate file is missing, unreadable, malformed, or the key does not fit."""


# -- what OpenSSL's codes mean ----------------------------------------------------------------

#: X.509 verification codes (``X509_V_ERR_*``) of a certificate this side refused.
_VERIFY_CODES: Mapping[int, type[CertificateVerificationError]] = {
    2: UnknownCAError,  # unable to get issuer certificate
    9: CertificateExpiredError,  # certificate is not yet valid
    10: CertificateExpiredError,  # certificate has expired
    18: UnknownCAError,  # self-signed certificate
    19: UnknownCAError,  # self-signed certificate in chain
    20: UnknownCAError,  # unable to get local issuer certificate
    21: UnknownCAError,  # unable to verify the first certificate
    62: HostnameMismatchError,  # hostname mismatch
    64: HostnameMismatchError,  # IP address mismatch
}

#: Alerts from the peer: it refused this side.
_PEER_ALERTS: Mapping[str, type[TLSHandshakeError]] = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": CertificateExpiredError,
    "TLSV1_ALERT_UNKNOWN_CA": UnknownCAError,
    "SSLV3_ALERT_BAD_CERTIFICATE": CertificateVerificationError,
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": CertificateVerificationError,
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": CertificateVerificationError,
    "SSLV3_ALERT_CERTIFICATE_REVOKED": CertificateVerificationError,
    "TLSV1_ALERT_ACCESS_DENIED": CertificateVerificationError,
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": ClientCertificateRequiredError,
    "TLSV1_ALERT_PROTOCOL_VERSION": TLSVersionError,
}

#: Failures this side detected itself (no verification code).
_LOCAL_REASONS: Mapping[str, type[TLSHandshakeError]] = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": ClientCertificateRequiredError,
    "UNSUPPORTED_PROTOCOL": TLSVersionError,
    "NO_PROTOCOLS_AVAILABLE": TLSVersionError,
}

#: Reasons meaning the peer does not speak TLS at all.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL", "PACKET_LENGTH_TOO_LONG", "RECORD_LAYER_FAILURE"})

#: What to say, by (error class, who refused whom). ``{us}``/``{them}`` are "this client" /
#: "the server" (or the other way round), ``{detail}`` OpenSSL's words, ``{host}`` the host name,
#: ``{versions}`` the TLS versions this side allows.
_MESSAGES: Mapping[tuple[type[TLSHandshakeError], bool], str] = {
    (CertificateExpiredError, False): "{their} certificate has expired or is not valid yet ({detail}); "
    "{their} owner must renew it (rpc-tls can issue a new one), or a clock is wrong",
    (CertificateExpiredError, True): "{them} refused {our} certificate as expired or not yet valid; "
    "renew the certificate in certfile= (rpc-tls can issue a new one), or check the clocks",
    (UnknownCAError, False): "{their} certificate was not issued by a CA {us} trusts ({detail}); {ca_hint}",
    (UnknownCAError, True): "{them} does not trust the CA that issued {our} certificate; use a certificate "
    "issued by a CA in {their} ca_certs",
    (HostnameMismatchError, False): "the server's certificate does not name {host!r} ({detail}); connect with a "
    "name or address the certificate lists, pass server_hostname= with one, or issue the certificate with "
    "{host!r} among its names",
    (CertificateVerificationError, False): "{their} certificate was refused ({detail})",
    (CertificateVerificationError, True): "{them} refused {our} certificate ({detail}); check that it is "
    "issued for this use (client or server) by a CA {them} trusts",
    (ClientCertificateRequiredError, False): "the client sent no certificate, and this server requires one "
    "(it was given ca_certs=); the client must pass certfile= and keyfile=",
    (ClientCertificateRequiredError, True): "the server requires a client certificate and this client sent "
    "none; pass certfile= and keyfile= with a certificate issued by a CA the server trusts",
    (TLSVersionError, False): "no TLS version in common ({detail}): {us} accepts {versions} only, and "
    "{them} offered none of those; upgrade the peer's TLS library or change either side's versions "
    "(minimum_version=, maximum_version=)",
    (TLSVersionError, True): "no TLS version in common ({detail}): {them} refused the versions {us} offered "
    "({versions})",
}
_VERSION_NAMES: Mapping[ssl.TLSVersion, str] = {
    ssl.TLSVersion.TLSv1: "1.0", ssl.TLSVersion.TLSv1_1: "1.1", ssl.TLSVersion.TLSv1_2: "1.2", ssl.TLSVersion.TLSv1_3: "1.3"
}

_CA_HINTS = {
    False: "pass ca_certs= with the certificate of the CA that issued it (without ca_certs the system trust "
    "store is used), or insecure_skip_verify=True to connect without any verification",
    True: "issue the client's certificate from a CA listed in this server's ca_certs",
}


def _words(server_side: bool) -> dict[str, str]:
    if server_side:
        return {"us": "this server", "our": "this server's", "them": "the client", "their": "the client's"}
    return {"us": "this client", "our": "this client's", "them": "the server", "their": "the server's"}


def _versions(context: ssl.SSLContext | None) -> str:
    """The TLS versions ``context`` allows, in words: "TLS 1.3", "TLS 1.2 to 1.3", "TLS 1.2 or newer"."""
    if context is None:
        return "TLS 1.2 or newer"  # the floor of every context this package makes
    low = _VERSION_NAMES.get(context.minimum_version, "1.0")
    high = _VERSION_NAMES.get(context.maximum_version)  # None: no maximum set
    if low == high or (high is None and low == "1.3"):  # (1.3: the newest TLS there is)
        return f"TLS {low}"
    return f"TLS {low} or newer" if high is None else f"TLS {low} to {high}"


def handshake_error(
    exc: BaseException,
    *,
    server_side: bool,
    peer: str,
    hostname: str | None = None,
    sent_certificate: bool = True,
    timeout: float | None = None,
    context: ssl.SSLContext | None = None,
) -> TLSHandshakeError:
    """The error of this package that says why the handshake with ``peer`` failed (``context``:
    the one this side shook hands with, whose TLS versions a version error names)."""
    words = {**_words(server_side), "versions": _versions(context)}
    prefix = f"TLS handshake with {peer} failed: "
    if isinstance(exc, TimeoutError):
        within = f" within {timeout:g} s" if timeout is not None else ""
        return TLSHandshakeTimeout(f"{prefix}{words['them']} did not complete the TLS handshake{within}")
    if not isinstance(exc, ssl.SSLError):
        if isinstance(exc, (ConnectionError, EOFError)):
            return TLSHandshakeError(f"{prefix}{words['them']} closed the connection during the TLS handshake ({exc})")
        return TLSHandshakeError(f"{prefix}{exc}")
    reason: str | None = getattr(exc, "reason", None) or None
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        detail = exc.verify_message or str(exc)
        kind: type[TLSHandshakeError] = _VERIFY_CODES.get(code, CertificateVerificationError)
        return _make(kind, False, prefix, words, detail, hostname, server_side, reason=reason, verify_code=code)
    detail = str(reason or exc)
    key = reason or ""
    if key in _PEER_ALERTS:
        return _make(_PEER_ALERTS[key], True, prefix, words, detail, hostname, server_side, reason=reason)
    if key in _LOCAL_REASONS:
        return _make(_LOCAL_REASONS[key], False, prefix, words, detail, hostname, server_side, reason=reason)
    if reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and not server_side and not sent_certificate:
        # TLS 1.2 servers answer a missing client certificate with a bare handshake_failure.
        return _make(ClientCertificateRequiredError, True, prefix, words, detail, hostname, server_side, reason=reason)
    if reason in _NOT_TLS:
        hint = "is it a plain rpc client? It must connect with rpc_tls.tls_connect" if server_side else (
            "is the server started with a TLSAuthenticator?"
        )
        return TLSHandshakeError(f"{prefix}{words['them']} does not speak TLS ({detail}); {hint}", reason=reason)
    if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
        return TLSHandshakeError(f"{prefix}{words['them']} closed the connection during the TLS handshake ({detail})", reason=reason)
    if reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
        return TLSHandshakeError(
            f"{prefix}{words['them']} refused the handshake ({detail}): no cipher or key type in common, "
            "or it requires a client certificate",
            reason=reason,
            rejected_by_peer=True,
        )
    return TLSHandshakeError(f"{prefix}{exc}", reason=reason)


def _make(
    kind: type[TLSHandshakeError],
    by_peer: bool,
    prefix: str,
    words: Mapping[str, str],
    detail: str,
    hostname: str | None,
    server_side: bool,
    *,
    reason: str | None,
    verify_code: int | None = None,
) -> TLSHandshakeError:
    template = _MESSAGES.get((kind, by_peer)) or _MESSAGES[(CertificateVerificationError, by_peer)]
    text = template.format(detail=detail, host=hostname or "?", ca_hint=_CA_HINTS[server_side], **words)
    return kind(prefix + text, reason=reason, verify_code=verify_code, rejected_by_peer=by_peer)


def connection_error(exc: OSError, *, server_side: bool, peer: str, sent_certificate: bool = True) -> ConnectionClosedError:
    """The error for a TLS failure on an open connection (``exc`` from a read or a write).

    A TLS alert (a late handshake verdict) becomes a :class:`TLSConnectionError` carrying the
    classified handshake error; a plain socket error a :class:`ConnectionClosedError`.
    """
    if not isinstance(exc, ssl.SSLError):
        return ConnectionClosedError(f"connection lost: {exc}")
    verdict = handshake_error(exc, server_side=server_side, peer=peer, sent_certificate=sent_certificate)
    if isinstance(verdict, (CertificateVerificationError, ClientCertificateRequiredError, TLSVersionError)):
        return TLSConnectionError(str(verdict), verdict)
    return TLSConnectionError(f"TLS connection with {peer} lost: {getattr(exc, 'reason', None) or exc}")


def file_error(what: str, path: object, exc: BaseException) -> CertificateFileError:
    """A :class:`CertificateFileError` for a key or certificate that could not be loaded."""
    if isinstance(path, (str, os.PathLike)) and os.path.isdir(path):
        why = "it is a directory, not a file"
    elif isinstance(exc, FileNotFoundError):
        why = "no such file"
    elif isinstance(exc, PermissionError):
        why = "permission denied"
    elif isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) == "KEY_VALUES_MISMATCH":
        why = "the private key does not belong to the certificate"
    elif isinstance(exc, ssl.SSLError) and getattr(exc, "reason", None) in ("BAD_DECRYPT", "BAD_PASSWORD_READ"):
        why = "the key is encrypted and the password is wrong or missing (password=)"
    elif isinstance(exc, ssl.SSLError):
        why = f"not a valid PEM file ({getattr(exc, 'reason', None) or exc})"
    else:
        why = str(exc) or type(exc).__name__
    return CertificateFileError(f"cannot load the {what} {str(path)!r}: {why}")

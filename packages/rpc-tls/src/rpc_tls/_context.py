"""TLS settings and the SSL contexts built from them: :class:`TLSServerConfig`, :class:`TLSClientConfig`.

Owns the security defaults of DESIGN §6 in one place: TLS 1.2 at least; a client verifies
the server's certificate and host name (against ``ca_certs``, or the system trust store when
none is given) unless it says ``insecure_skip_verify``; a server given ``ca_certs`` requires
and verifies client certificates against those CAs only (never the system store);
compression and renegotiation are off. Loading errors become :class:`CertificateFileError`.
Every context made here hands out :class:`TLSSocket`. It must not open connections.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field

from ._certs import CertifiedKey, PathArg
from ._errors import CertificateFileError, file_error
from ._socket import TLSSocket

__all__ = ["PathArg", "TLSClientConfig", "TLSServerConfig", "client_context", "server_context"]

_FLOOR = ssl.TLSVersion.TLSv1_2


def _check_versions(minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None) -> None:
    if minimum < _FLOOR:
        raise ValueError(f"minimum_version must be TLS 1.2 or newer, not {minimum.name}")
    if maximum is not None and maximum != ssl.TLSVersion.MAXIMUM_SUPPORTED:
        if maximum < minimum:
            raise ValueError(f"maximum_version {maximum.name} is below minimum_version {minimum.name}")


@dataclass(frozen=True)
class TLSServerConfig:
    """What a :class:`TLSAuthenticator` builds its context from.

    ``keyfile`` may be None when ``certfile`` holds the key too. With ``ca_certs`` (a PEM
    file or a directory of hashed certificates) clients must present a certificate issued
    by one of those CAs, or may (``require_client_cert=False``: verified when present).
    """

    certfile: PathArg
    keyfile: PathArg | None = None
    ca_certs: PathArg | None = None
    password: str | bytes | None = field(default=None, repr=False)
    require_client_cert: bool = True
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion | None = None
    ciphers: str | None = None

    def __post_init__(self) -> None:
        _check_versions(self.minimum_version, self.maximum_version)


@dataclass(frozen=True)
class TLSClientConfig:
    """What a :class:`TLSClient` builds its context from.

    ``ca_certs`` replaces the system trust store (pinning the server to those CAs);
    ``certfile``/``keyfile`` are this client's certificate for mutual TLS.
    ``insecure_skip_verify`` turns every verification off: the connection is encrypted but
    anyone on the path can impersonate the server. Each such connection logs a warning.
    """

    certfile: PathArg | None = None
    keyfile: PathArg | None = None
    ca_certs: PathArg | None = None
    password: str | bytes | None = field(default=None, repr=False)
    insecure_skip_verify: bool = False
    minimum_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    maximum_version: ssl.TLSVersion | None = None
    ciphers: str | None = None

    def __post_init__(self) -> None:
        _check_versions(self.minimum_version, self.maximum_version)
        if self.keyfile is not None and self.certfile is None:
            raise ValueError("keyfile= needs certfile= (the certificate that goes with the key)")
        if self.insecure_skip_verify and self.ca_certs is not None:
            raise ValueError("ca_certs= and insecure_skip_verify=True contradict each other: pick one")


def _common(context: ssl.SSLContext, minimum: ssl.TLSVersion, maximum: ssl.TLSVersion | None, ciphers: str | None) -> None:
    context.minimum_version = minimum
    if maximum is not None:
        context.maximum_version = maximum
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if ciphers is not None:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ValueError(f"no usable cipher in ciphers={ciphers!r}") from exc
    context.sslsocket_class = TLSSocket


def _no_password() -> bytes:
    """The password of an encrypted key loaded without ``password=``: refused, so that OpenSSL
    never prompts for one on the terminal (which blocks a server under a tty)."""
    raise ValueError("the key is encrypted and no password was given")


def _load_chain(context: ssl.SSLContext, certfile: PathArg, keyfile: PathArg | None, password: str | bytes | None) -> None:
    for what, path in (("certificate", certfile), ("private key", keyfile)):
        if path is not None and not os.path.isfile(path):
            raise file_error(what, path, FileNotFoundError(path))
    try:
        context.load_cert_chain(
            os.fspath(certfile), None if keyfile is None else os.fspath(keyfile), _no_password if password is None else password
        )
    except (OSError, ValueError) as exc:
        try:  # OpenSSL says little ("PEM lib"): find out what is wrong, to say it
            CertifiedKey.load(certfile, keyfile, password=password)
        except CertificateFileError as precise:
            raise precise from exc
        where = os.fspath(certfile) if keyfile is None else f"{os.fspath(certfile)} + {os.fspath(keyfile)}"
        raise file_error("certificate and key", where, exc) from exc


def _load_cas(context: ssl.SSLContext, ca_certs: PathArg) -> None:
    try:
        if os.path.isdir(ca_certs):
            context.load_verify_locations(capath=os.fspath(ca_certs))
        elif not os.path.isfile(ca_certs):
            raise FileNotFoundError(ca_certs)
        else:
            context.load_verify_locations(cafile=os.fspath(ca_certs))
    except (OSError, ValueError) as exc:
        raise file_error("CA certificates", ca_certs, exc) from exc


def _default_client_context(ca_certs: PathArg | None) -> ssl.SSLContext:
    """``ssl.create_default_context`` (so newer Pythons' stricter defaults apply), trusting
    ``ca_certs`` only, or the system store when it is None."""
    if ca_certs is None:
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        if os.path.isdir(ca_certs):
            return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, capath=os.fspath(ca_certs))
        if not os.path.isfile(ca_certs):
            raise FileNotFoundError(ca_certs)
        return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca_certs))
    except (OSError, ValueError) as exc:
        raise file_error("CA certificates", ca_certs, exc) from exc


def server_context(config: TLSServerConfig) -> ssl.SSLContext:
    """A server context: TLS 1.2+, this server's certificate, client verification if ``ca_certs``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _common(context, config.minimum_version, config.maximum_version, config.ciphers)
    _load_chain(context, config.certfile, config.keyfile, config.password)
    if config.ca_certs is not None:
        _load_cas(context, config.ca_certs)  # these CAs only: the system store never vouches for clients
        context.verify_mode = ssl.CERT_REQUIRED if config.require_client_cert else ssl.CERT_OPTIONAL
    return context


def client_context(config: TLSClientConfig) -> ssl.SSLContext:
    """A client context: TLS 1.2+, server certificate and host name verified (unless opted out)."""
    context = _default_client_context(config.ca_certs)
    if config.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    _common(context, config.minimum_version, config.maximum_version, config.ciphers)
    if config.certfile is not None:
        _load_chain(context, config.certfile, config.keyfile, config.password)
    return context

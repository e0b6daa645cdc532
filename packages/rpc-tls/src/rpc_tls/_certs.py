"""Certificate tooling on ``cryptography``: :class:`CertificateAuthority` and :class:`CertifiedKey`.

Owns making a private CA, issuing server and client certificates from it (DNS names and IP
addresses as subject alternative names, key usages set for TLS), and reading and writing
them as PEM (keys written with mode 0600, files replaced atomically so a server reloading
them never reads half a file). For development, tests and private deployments; it must not
talk to the network or to any public CA, and it never verifies chains (the TLS handshake
does that).
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal, TypeVar, Union

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ._errors import CertificateFileError, file_error
from ._identity import PeerIdentity

__all__ = ["CertificateAuthority", "CertifiedKey", "KeyType", "PathArg", "PrivateKey", "generate_key"]

PathArg = Union[str, "os.PathLike[str]"]
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]
KeyType = Literal["ec", "rsa"]
_K = TypeVar("_K", bound="CertifiedKey")
#: Backdating of ``not_before``, so a peer whose clock is a little behind accepts a fresh certificate.
_CLOCK_SKEW = timedelta(minutes=5)


def generate_key(key_type: KeyType = "ec") -> PrivateKey:
    """A new private key: ECDSA P-256 (fast, the default) or RSA 3072."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    raise ValueError(f"key_type must be 'ec' or 'rsa', not {key_type!r}")


def _validity(valid_for: timedelta, not_before: datetime | None, not_after: datetime | None) -> tuple[datetime, datetime]:
    start = not_before if not_before is not None else datetime.now(timezone.utc) - _CLOCK_SKEW
    end = not_after if not_after is not None else start + valid_for + (_CLOCK_SKEW if not_before is None else timedelta())
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("not_before and not_after must be timezone-aware datetimes")
    if end <= start:
        raise ValueError(f"the certificate would expire ({end}) before it starts ({start})")
    return start, end


def _general_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() for c in host):
                raise ValueError(f"not a host name or IP address: {host!r}") from None
            names.append(x509.DNSName(host if host.isascii() else host.encode("idna").decode("ascii")))
    return names


def _write_atomically(path: PathArg, data: bytes, mode: int, what: str) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``. An
    OSError keeps its class (FileNotFoundError for a missing directory...) and names ``path``."""
    target = os.fspath(path)
    try:
        _replace(target, data, mode)
    except OSError as exc:
        why = "its directory does not exist" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
        raise OSError(exc.errno, f"cannot write the {what}: {why}", target) from exc


def _replace(target: str, data: bytes, mode: int) -> None:
    directory = os.path.dirname(os.path.abspath(target))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".rpc-tls-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def _password(password: str | bytes | None) -> bytes | None:
    return password.encode("utf-8") if isinstance(password, str) else password


@dataclass(frozen=True)
class CertifiedKey:
    """A certificate and its private key (a server's or a client's, or a CA's)."""

    certificate: x509.Certificate
    private_key: PrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def key_pem(self, password: str | bytes | None = None) -> bytes:
        """The private key as PKCS#8 PEM, encrypted when ``password`` is given."""
        secret = _password(password)
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret) if secret else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)

    @property
    def identity(self) -> PeerIdentity:
        """What a peer verifying this certificate will see as ``conn.credentials``."""
        return PeerIdentity.from_certificate(self.certificate)

    def save(self, certfile: PathArg, keyfile: PathArg, *, password: str | bytes | None = None) -> None:
        """Write the certificate (mode 0644) and the key (mode 0600), each replaced atomically."""
        _write_atomically(keyfile, self.key_pem(password), 0o600, "private key")
        _write_atomically(certfile, self.cert_pem, 0o644, "certificate")

    @classmethod
    def load(cls: type[_K], certfile: PathArg, keyfile: PathArg | None = None, *, password: str | bytes | None = None) -> _K:
        """Read a PEM certificate and key (``keyfile`` None: both in ``certfile``)."""
        cert_data = _read(certfile, "certificate")
        key_data = cert_data if keyfile is None else _read(keyfile, "private key")
        try:
            certificate = x509.load_pem_x509_certificate(cert_data)
        except ValueError as exc:
            raise CertificateFileError(f"cannot load the certificate {os.fspath(certfile)!r}: not a PEM certificate ({exc})") from exc
        where = os.fspath(keyfile if keyfile is not None else certfile)
        encrypted = b"ENCRYPTED" in key_data
        if encrypted and password is None:
            raise CertificateFileError(f"cannot load the private key {where!r}: it is encrypted; give its password (password=)")
        try:
            key = serialization.load_pem_private_key(key_data, _password(password) if encrypted else None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            why = "wrong password" if encrypted else f"not a PEM private key ({exc})"
            raise CertificateFileError(f"cannot load the private key {where!r}: {why}") from exc
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise CertificateFileError(f"unsupported key type {type(key).__name__}: use EC or RSA keys")
        if key.public_key().public_bytes(*_SPKI) != certificate.public_key().public_bytes(*_SPKI):
            raise CertificateFileError(f"the private key does not belong to the certificate {os.fspath(certfile)!r}")
        return cls(certificate=certificate, private_key=key)


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _read(path: PathArg, what: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise file_error(what, path, exc) from exc


@dataclass(frozen=True)
class CertificateAuthority(CertifiedKey):
    """A private CA that issues server and client certificates.

    ``CertificateAuthority.create()`` makes a new one; ``CertificateAuthority.load(cert, key)``
    reads one saved before. Give its ``cert_pem`` file to the peers as ``ca_certs``.
    """

    @classmethod
    def create(
        cls,
        common_name: str = "rpc-tls development CA",
        *,
        organization: str | None = None,
        valid_for: timedelta = timedelta(days=3650),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType = "ec",
    ) -> CertificateAuthority:
        key = generate_key(key_type)
        start, end = _validity(valid_for, not_before, not_after)
        name = _name(common_name, organization)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
            .add_extension(ski, critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(certificate=certificate, private_key=key)

    def issue(
        self,
        common_name: str,
        *,
        hosts: tuple[str, ...] | list[str] = (),
        server_auth: bool = True,
        client_auth: bool = True,
        organization: str | None = None,
        valid_for: timedelta = timedelta(days=365),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType = "ec",
    ) -> CertifiedKey:
        """A certificate for ``common_name``; ``hosts`` (DNS names, ``*.wildcards``, IPv4/IPv6
        addresses) become its subject alternative names, which is what host names are checked
        against. ``server_auth``/``client_auth`` set what it may be used for."""
        if not (server_auth or client_auth):
            raise ValueError("a certificate must allow server_auth, client_auth or both")
        key = generate_key(key_type)
        start, end = _validity(valid_for, not_before, not_after)
        usages = [oid for oid, wanted in ((ExtendedKeyUsageOID.SERVER_AUTH, server_auth), (ExtendedKeyUsageOID.CLIENT_AUTH, client_auth)) if wanted]
        authority_key_id = _authority_key_id(self.certificate)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organization))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(ca=False, rsa_key=isinstance(key, rsa.RSAPrivateKey)), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(authority_key_id, critical=False)
        )
        names = _general_names(tuple(hosts))
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return CertifiedKey(certificate=builder.sign(self.private_key, hashes.SHA256()), private_key=key)

    def issue_server(
        self,
        *hosts: str,
        common_name: str | None = None,
        organization: str | None = None,
        valid_for: timedelta = timedelta(days=365),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType = "ec",
    ) -> CertifiedKey:
        """A server certificate for ``hosts`` (e.g. ``"localhost", "127.0.0.1", "::1"``);
        the common name defaults to the first host."""
        if not hosts:
            raise ValueError("a server certificate needs at least one host name or address")
        return self.issue(
            common_name or hosts[0],
            hosts=hosts,
            server_auth=True,
            client_auth=False,
            organization=organization,
            valid_for=valid_for,
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
        )

    def issue_client(
        self,
        common_name: str,
        *hosts: str,
        organization: str | None = None,
        valid_for: timedelta = timedelta(days=365),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        key_type: KeyType = "ec",
    ) -> CertifiedKey:
        """A client certificate naming ``common_name`` (the identity a server authorizes on)."""
        return self.issue(
            common_name,
            hosts=hosts,
            server_auth=False,
            client_auth=True,
            organization=organization,
            valid_for=valid_for,
            not_before=not_before,
            not_after=not_after,
            key_type=key_type,
        )


def _authority_key_id(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = x509.BasicConstraints(ca=False, path_length=None)
    if not constraints.ca:
        raise ValueError(f"{ca.subject.rfc4514_string()} is not a CA certificate (basicConstraints CA:FALSE)")
    try:
        ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key())  # type: ignore[arg-type]  # a CA key is one of the issuer key types
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _name(common_name: str, organization: str | None) -> x509.Name:
    if not common_name:
        raise ValueError("common_name must not be empty")
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )

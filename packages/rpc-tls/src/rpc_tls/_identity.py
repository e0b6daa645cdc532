"""The identity a verified certificate proves: :class:`PeerIdentity`.

Owns reading a certificate (DER, PEM or a ``cryptography`` object) into a frozen value a
service can authorize on: ``conn.credentials`` on a server is the client's identity (None
when the client sent no certificate), on a client the server's. It must not verify
anything: by the time an identity is built, the TLS handshake has verified the chain.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

__all__ = ["PeerIdentity"]


@dataclass(frozen=True)
class PeerIdentity:
    """Who the certificate names, and which certificate it is.

    ``subject`` and ``issuer`` are RFC 4514 strings (``CN=alice,O=Example``);
    ``fingerprint_sha256`` is the lowercase hex SHA-256 of the DER certificate (pin on it);
    ``not_before`` / ``not_after`` are timezone-aware UTC datetimes.
    """

    subject: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    uris: tuple[str, ...]
    emails: tuple[str, ...]
    issuer: str
    serial_number: int
    fingerprint_sha256: str
    not_before: datetime
    not_after: datetime

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> PeerIdentity:
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            names = x509.SubjectAlternativeName([])
        return cls(
            subject=cert.subject.rfc4514_string(),
            common_name=_common_name(cert.subject),
            dns_names=tuple(names.get_values_for_type(x509.DNSName)),
            ip_addresses=tuple(str(ip) for ip in names.get_values_for_type(x509.IPAddress)),
            uris=tuple(names.get_values_for_type(x509.UniformResourceIdentifier)),
            emails=tuple(names.get_values_for_type(x509.RFC822Name)),
            issuer=cert.issuer.rfc4514_string(),
            serial_number=cert.serial_number,
            fingerprint_sha256=cert.fingerprint(hashes.SHA256()).hex(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )

    @classmethod
    def from_der(cls, der: bytes) -> PeerIdentity:
        return cls.from_certificate(x509.load_der_x509_certificate(der))

    @classmethod
    def from_pem(cls, pem: bytes) -> PeerIdentity:
        return cls.from_certificate(x509.load_pem_x509_certificate(pem))

    @property
    def names(self) -> tuple[str, ...]:
        """Every name the certificate holds: the common name, then the DNS names and addresses."""
        found = [self.common_name] if self.common_name else []
        for name in (*self.dns_names, *self.ip_addresses):
            if name not in found:
                found.append(name)
        return tuple(found)

    def __str__(self) -> str:
        return f"{self.subject} (sha256 {self.fingerprint_sha256[:16]}..., until {self.not_after:%Y-%m-%d %H:%M} UTC)"


def _common_name(name: x509.Name) -> str | None:
    attributes = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attributes:
        return None
    value = attributes[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")

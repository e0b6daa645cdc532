"""Certificate tooling: CAs, server and client certificates, PEM files, identities.

What ``CertificateAuthority`` issues must satisfy OpenSSL's strict X.509 checks (``openssl
verify -x509_strict`` when the tool is there), carry the names and usages asked for, and
round-trip through PEM files (keys private to their owner, optionally encrypted). Loading
anything wrong is a :class:`CertificateFileError` naming the file and the problem.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

import rpc_tls
from rpc_tls import CertificateAuthority, CertificateFileError, CertifiedKey, PeerIdentity

from .conftest import HOUR, Pki, Serve


def extension(item: CertifiedKey, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return item.certificate.extensions.get_extension_for_class(kind)


def test_a_new_ca(pki: Pki) -> None:
    ca = pki.authority
    constraints = extension(ca, x509.BasicConstraints)
    assert constraints.critical and isinstance(constraints.value, x509.BasicConstraints) and constraints.value.ca
    assert ca.certificate.subject == ca.certificate.issuer
    assert ca.identity.common_name == "rpc-tls test CA"
    assert isinstance(ca.private_key, ec.EllipticCurvePrivateKey)


def test_server_certificate_names_and_usage(pki: Pki) -> None:
    server = pki.server.item
    identity = server.identity
    assert identity.dns_names == ("localhost",)
    assert identity.ip_addresses == ("127.0.0.1", "::1")
    assert identity.common_name == "localhost"
    assert identity.names == ("localhost", "127.0.0.1", "::1")
    names = extension(server, x509.SubjectAlternativeName).value
    assert isinstance(names, x509.SubjectAlternativeName)
    assert ipaddress.ip_address("::1") in names.get_values_for_type(x509.IPAddress)
    usage = extension(server, x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]  # type: ignore[call-overload]  # ExtendedKeyUsage is iterable
    constraints = extension(server, x509.BasicConstraints).value
    assert isinstance(constraints, x509.BasicConstraints) and not constraints.ca


def test_client_certificate_usage(pki: Pki) -> None:
    usage = extension(pki.alice.item, x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.CLIENT_AUTH]  # type: ignore[call-overload]  # ExtendedKeyUsage is iterable
    assert pki.alice.identity.dns_names == () and pki.alice.identity.common_name == "alice"


def test_wildcards_and_both_usages() -> None:
    ca = CertificateAuthority.create(valid_for=HOUR)
    both = ca.issue("gateway", hosts=["*.internal.example", "10.0.0.7"], server_auth=True, client_auth=True, organization="Example")
    assert both.identity.dns_names == ("*.internal.example",)
    assert both.identity.subject == "O=Example,CN=gateway"
    with pytest.raises(ValueError, match="server_auth"):
        ca.issue("nothing", server_auth=False, client_auth=False)
    with pytest.raises(ValueError, match="host name"):
        ca.issue_server("not a host")
    with pytest.raises(ValueError, match="at least one"):
        ca.issue_server()


def test_validity_window() -> None:
    ca = CertificateAuthority.create(valid_for=HOUR)
    now = datetime.now(timezone.utc)
    short = ca.issue_client("brief", valid_for=timedelta(minutes=10))
    assert short.identity.not_before <= now <= short.identity.not_after <= now + timedelta(minutes=20)
    exact = ca.issue_client("exact", not_before=now, not_after=now + timedelta(days=1))
    assert exact.identity.not_after - exact.identity.not_before == timedelta(days=1)
    with pytest.raises(ValueError, match="expire"):
        ca.issue_client("backwards", not_before=now, not_after=now - timedelta(seconds=1))
    with pytest.raises(ValueError, match="timezone"):
        ca.issue_client("naive", not_before=datetime(2030, 1, 1), not_after=datetime(2031, 1, 1))


def test_only_a_ca_issues(pki: Pki) -> None:
    leaf_as_ca = CertificateAuthority(certificate=pki.alice.item.certificate, private_key=pki.alice.item.private_key)
    with pytest.raises(ValueError, match="not a CA"):
        leaf_as_ca.issue_client("eve")


def test_pem_round_trip_and_key_permissions(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(valid_for=HOUR)
    ca.save(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert stat.S_IMODE(os.stat(tmp_path / "ca.key").st_mode) == 0o600
    loaded = CertificateAuthority.load(tmp_path / "ca.pem", tmp_path / "ca.key")
    assert isinstance(loaded, CertificateAuthority)
    assert loaded.certificate == ca.certificate
    issued = loaded.issue_server("localhost")
    assert issued.identity.issuer == ca.identity.subject
    # certificate and key in one file
    (tmp_path / "both.pem").write_bytes(issued.cert_pem + issued.key_pem())
    assert CertifiedKey.load(tmp_path / "both.pem").certificate == issued.certificate
    assert PeerIdentity.from_pem(issued.cert_pem) == issued.identity
    assert PeerIdentity.from_der(issued.certificate.public_bytes(serialization.Encoding.DER)) == issued.identity


def test_encrypted_keys(pki: Pki, serve: Serve, tmp_path: Path) -> None:
    server = pki.authority.issue_server("localhost", "127.0.0.1", valid_for=HOUR)
    server.save(tmp_path / "s.pem", tmp_path / "s.key", password="sesame")
    assert b"ENCRYPTED" in (tmp_path / "s.key").read_bytes()
    with pytest.raises(CertificateFileError):
        CertifiedKey.load(tmp_path / "s.pem", tmp_path / "s.key")
    assert CertifiedKey.load(tmp_path / "s.pem", tmp_path / "s.key", password="sesame").certificate == server.certificate
    with pytest.raises(CertificateFileError, match="password"):
        rpc_tls.TLSAuthenticator(tmp_path / "s.key", tmp_path / "s.pem", password="wrong")
    running = serve(rpc_tls.TLSAuthenticator(tmp_path / "s.key", tmp_path / "s.pem", password="sesame"))
    with rpc_tls.tls_connect("127.0.0.1", running.port, ca_certs=pki.ca) as conn:
        assert conn.credentials == server.identity


_LOAD_WITHOUT_PASSWORD = """
import sys, rpc_tls
cert, key = sys.argv[1:]
for load in (
    lambda: rpc_tls.TLSAuthenticator(key, cert),
    lambda: rpc_tls.TLSClient(key, cert),
    lambda: rpc_tls.tls_connect("127.0.0.1", 1, keyfile=key, certfile=cert),
):
    try:
        load()
    except rpc_tls.CertificateFileError as exc:
        assert "encrypted" in str(exc), exc
    else:
        raise AssertionError("loaded an encrypted key without its password")
"""


def test_an_encrypted_key_without_password_fails_at_once_without_a_prompt(pki: Pki, tmp_path: Path) -> None:
    # OpenSSL asks for a missing password on the terminal, or on stderr in a process without
    # one (as here: a new session, stdin empty), and then waits for an answer.
    pki.alice.item.save(tmp_path / "a.pem", tmp_path / "a.key", password="sesame")
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_WITHOUT_PASSWORD, str(tmp_path / "a.pem"), str(tmp_path / "a.key")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, start_new_session=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_saving_errors_name_the_file(pki: Pki, tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    for item in (pki.authority, pki.alice.item):
        with pytest.raises(FileNotFoundError, match="directory does not exist") as caught:
            item.save(missing / "x.pem", missing / "x.key")
        assert caught.value.filename == str(missing / "x.key")
    with pytest.raises(IsADirectoryError, match="cannot write the certificate") as refused:
        pki.alice.item.save(tmp_path, tmp_path / "x.key")
    assert refused.value.filename == str(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["x.key"]  # no temporary file left behind


def test_loading_errors_say_what_is_wrong(pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(CertificateFileError, match="no such file") as caught:
        rpc_tls.TLSAuthenticator(tmp_path / "missing.key", pki.server.cert)
    assert "missing.key" in str(caught.value)
    with pytest.raises(CertificateFileError, match="does not belong"):
        rpc_tls.TLSAuthenticator(pki.alice.key, pki.server.cert)
    with pytest.raises(CertificateFileError, match="does not belong"):
        CertifiedKey.load(pki.server.cert, pki.alice.key)
    (tmp_path / "junk.pem").write_text("hello\n")
    with pytest.raises(CertificateFileError, match="junk.pem"):
        rpc_tls.TLSAuthenticator(pki.server.key, tmp_path / "junk.pem")
    with pytest.raises(CertificateFileError, match="CA certificates"):
        rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, ca_certs=tmp_path / "junk.pem")
    with pytest.raises(CertificateFileError, match="no such file"):
        rpc_tls.TLSClient(ca_certs=tmp_path / "nowhere.pem")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, rpc_tls.TLSError)


def test_rsa_keys(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(valid_for=HOUR, key_type="rsa")
    leaf = ca.issue_server("localhost", key_type="rsa")
    assert isinstance(leaf.private_key, rsa.RSAPrivateKey) and leaf.private_key.key_size == 3072
    leaf.save(tmp_path / "r.pem", tmp_path / "r.key")
    rpc_tls.TLSAuthenticator(tmp_path / "r.key", tmp_path / "r.pem")  # loads into a context
    with pytest.raises(ValueError, match="key_type"):
        rpc_tls.generate_key("dsa")  # type: ignore[arg-type]  # deliberately not a KeyType


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")
def test_openssl_verifies_issued_certificates_strictly(pki: Pki) -> None:
    leaves = [pki.server.cert, pki.alice.cert, pki.server_two.cert]
    result = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", pki.ca, *leaves], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": OK") == len(leaves)
    purpose = subprocess.run(
        ["openssl", "verify", "-purpose", "sslclient", "-CAfile", pki.ca, pki.server.cert], capture_output=True, text=True, timeout=30, check=False
    )
    assert purpose.returncode != 0  # a server certificate is not a client certificate

"""Certificate reload: new certificates for new connections, without restarting anything.

``TLSAuthenticator.reload()`` re-reads the files (or takes a new config) and swaps the
server's context whole; connections already open keep theirs and go on working. A reload
that cannot load the new files raises and leaves the current certificate in place. A
``TLSClient`` reloads the same way.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

import rpc_tls
from rpc_tls import CertificateFileError

from .conftest import Pair, Pki, Serve


def copy_pair(pair: Pair, folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "live.pem", folder / "live.key"
    shutil.copyfile(pair.cert, cert)
    shutil.copyfile(pair.key, key)
    return cert, key


def test_reload_serves_the_new_certificate_to_new_connections(pki: Pki, serve: Serve, tmp_path: Path) -> None:
    cert, key = copy_pair(pki.server, tmp_path)
    auth = rpc_tls.TLSAuthenticator(key, cert, ca_certs=pki.ca)
    server = serve(auth)
    client = rpc_tls.TLSClient(pki.alice.key, pki.alice.cert, pki.ca)
    with client.connect("127.0.0.1", server.port) as before:
        assert before.credentials.fingerprint_sha256 == pki.server.identity.fingerprint_sha256
        old_context = auth.context

        pki.server_two.item.save(cert, key)  # renewed on disk (atomically), then reloaded
        auth.reload()
        assert auth.context is not old_context

        with client.connect("127.0.0.1", server.port) as after:
            assert after.credentials.fingerprint_sha256 == pki.server_two.identity.fingerprint_sha256
            assert after.credentials.common_name == "server-two"
            assert after.root.whoami() == "alice"
        # the connection made before the reload is untouched
        assert before.root.echo("still fine") == "still fine"
        assert before.credentials.common_name == "localhost"


def test_reload_with_a_new_config(pki: Pki, serve: Serve) -> None:
    auth = rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert)
    server = serve(auth)
    auth.reload(replace(auth.config, certfile=pki.server_two.cert, keyfile=pki.server_two.key, ca_certs=pki.ca))
    assert auth.config.certfile == pki.server_two.cert
    with pytest.raises(rpc_tls.ClientCertificateRequiredError):  # ca_certs now requires client certificates
        rpc_tls.tls_connect("127.0.0.1", server.port, ca_certs=pki.ca)
    with rpc_tls.tls_connect("127.0.0.1", server.port, pki.bob.key, pki.bob.cert, pki.ca) as conn:
        assert conn.credentials.common_name == "server-two"
        assert conn.root.whoami() == "bob"


def test_a_failed_reload_keeps_the_current_certificate(pki: Pki, serve: Serve, tmp_path: Path) -> None:
    cert, key = copy_pair(pki.server, tmp_path)
    auth = rpc_tls.TLSAuthenticator(key, cert)
    server = serve(auth)
    context = auth.context
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateFileError, match="live.pem"):
        auth.reload()
    key.unlink()
    with pytest.raises(CertificateFileError, match="no such file"):
        auth.reload()
    assert auth.context is context
    with rpc_tls.tls_connect("127.0.0.1", server.port, ca_certs=pki.ca) as conn:
        assert conn.credentials.fingerprint_sha256 == pki.server.identity.fingerprint_sha256


def test_client_reload(pki: Pki, serve: Serve, tmp_path: Path) -> None:
    cert, key = copy_pair(pki.alice, tmp_path)
    server = serve(rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, ca_certs=pki.ca))
    client = rpc_tls.TLSClient(key, cert, pki.ca)
    with client.connect("127.0.0.1", server.port) as conn:
        assert conn.root.whoami() == "alice"
    pki.bob.item.save(cert, key)
    client.reload()
    with client.connect("127.0.0.1", server.port) as conn:
        assert conn.root.whoami() == "bob"

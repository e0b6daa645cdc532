"""The TLS server against a client we did not write: ``openssl s_client``.

TLS 1.1 is refused by the server (a protocol_version alert, logged as a
:class:`TLSVersionError`); TLS 1.2 and 1.3 are accepted with a client certificate, which the
server verifies into the client's identity, and the server's first rpc bytes (the preface,
``rpc_protocol.MAGIC``) arrive decrypted at the foreign client. Skipped where the
``openssl`` command is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Final

import pytest

import rpc_protocol
import rpc_service
from rpc_tls import TLSVersionError

from .conftest import Pki, RecordingAuthenticator, Serve, mutual

OPENSSL = shutil.which("openssl")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not installed")


# What s_client sends once connected: a preface of a future protocol version, which the server
# answers with its own preface (its range, the rpc magic) before it closes.
FUTURE_PREFACE: Final = b"".join(bytes(b) for b in rpc_protocol.Connection().send(rpc_protocol.Preface(200, 201)))


def s_client(pki: Pki, port: int, version_flag: str) -> subprocess.CompletedProcess[bytes]:
    assert OPENSSL is not None
    command = [
        OPENSSL, "s_client", "-connect", f"127.0.0.1:{port}", version_flag,
        "-cipher", "DEFAULT:@SECLEVEL=0",  # let the client offer TLS 1.1: the *server* must refuse it
        "-CAfile", pki.ca, "-cert", pki.alice.cert, "-key", pki.alice.key,
        "-servername", "localhost", "-verify_return_error", "-brief",
        "-ign_eof",  # keep reading until the server closes (after its preface)
    ]  # fmt: skip
    return subprocess.run(command, input=FUTURE_PREFACE, capture_output=True, timeout=20, check=False)


def test_tls_1_1_is_refused(pki: Pki, serve: Serve) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth, service=rpc_service.VoidService, protocol_config={"handshake_timeout": 0.5})
    result = s_client(pki, server.port, "-tls1_1")
    output = result.stdout + result.stderr
    if b"no protocols available" in output or b"unsupported protocol" in output.lower():
        pytest.skip("this openssl build will not even offer TLS 1.1, so it cannot test the server's refusal")
    assert result.returncode != 0
    assert b"CONNECTION ESTABLISHED" not in output and rpc_protocol.MAGIC not in result.stdout
    assert auth.done.wait(5)
    assert not auth.identities
    assert isinstance(auth.errors[0], TLSVersionError), auth.errors
    assert "TLS 1.2 or newer" in str(auth.errors[0])


@pytest.mark.parametrize("flag, version", [("-tls1_2", b"TLSv1.2"), ("-tls1_3", b"TLSv1.3")])
def test_tls_1_2_and_1_3_are_accepted(pki: Pki, serve: Serve, flag: str, version: bytes) -> None:
    auth = RecordingAuthenticator(mutual(pki))
    server = serve(auth, service=rpc_service.VoidService, protocol_config={"handshake_timeout": 0.5})
    result = s_client(pki, server.port, flag)
    assert b"CONNECTION ESTABLISHED" in result.stderr, result.stderr.decode(errors="replace")
    assert b"Protocol version: " + version in result.stderr
    assert b"Verification: OK" in result.stderr  # s_client verified our server certificate
    assert rpc_protocol.MAGIC in result.stdout  # the server's rpc preface, decrypted
    assert auth.done.wait(5)
    assert not auth.errors
    (identity,) = auth.identities
    assert identity is not None and identity.common_name == "alice"

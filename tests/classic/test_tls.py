"""Classic mode over TLS: ``rpc_classic.tls_connect`` (the ``tls`` extra) against an in-process
server and against the CLI's TLS options, with certificates minted by ``rpc_tls``."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Iterator

import pytest

import rpc_classic
import rpc_service
from rpc_classic import ClassicConnection, SlaveService, classic_config
from rpc_service import VoidService

from .conftest import finish, first_line, server_side, start_cli

rpc_tls: Any = pytest.importorskip("rpc_tls", reason="rpc-tls (the tls extra) is not importable")
if not all(hasattr(rpc_tls, name) for name in ("tls_connect", "TLSAuthenticator", "CertificateAuthority")):
    pytest.skip("rpc_tls does not offer tls_connect/TLSAuthenticator/CertificateAuthority yet", allow_module_level=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pki")
    ca = rpc_tls.CertificateAuthority.create()
    ca.save(root / "ca.pem", root / "ca.key")
    ca.issue_server("localhost", "127.0.0.1").save(root / "server.pem", root / "server.key")
    ca.issue_client("alice").save(root / "alice.pem", root / "alice.key")
    return {name: str(root / name) for name in ("ca.pem", "server.pem", "server.key", "alice.pem", "alice.key")}


@pytest.fixture
def tls_server(pki: dict[str, str]) -> Iterator[rpc_service.ThreadedServer]:
    auth = rpc_tls.TLSAuthenticator(pki["server.key"], pki["server.pem"], ca_certs=pki["ca.pem"])
    server = rpc_service.ThreadedServer(SlaveService, authenticator=auth, protocol_config=classic_config())
    server.start_in_thread()
    yield server
    server.close()


def test_default_tls_port() -> None:
    assert inspect.signature(rpc_classic.tls_connect).parameters["port"].default == 18821 == rpc_classic.DEFAULT_TLS_PORT


def test_classic_over_tls(tls_server: rpc_service.ThreadedServer, pki: dict[str, str]) -> None:
    with rpc_classic.tls_connect(
        "127.0.0.1", tls_server.port, keyfile=pki["alice.key"], certfile=pki["alice.pem"], ca_certs=pki["ca.pem"]
    ) as conn:
        assert isinstance(conn, ClassicConnection)
        assert conn.config.allow_all_attrs  # a Slave client by default
        conn.execute("secret = 'over tls'")
        assert conn.eval("secret") == "over tls"
        assert conn.modules.os.getpid() == os.getpid()
        assert server_side(tls_server, conn).credentials.common_name == "alice"


def test_classic_over_tls_with_a_closed_client(tls_server: rpc_service.ThreadedServer, pki: dict[str, str]) -> None:
    with rpc_classic.tls_connect(
        "127.0.0.1", tls_server.port, pki["alice.key"], pki["alice.pem"], pki["ca.pem"], service=VoidService
    ) as conn:
        assert not conn.config.allow_all_attrs
        assert conn.eval("1 + 1") == 2


def test_cli_oneshot_over_tls(pki: dict[str, str], tmp_path: Path) -> None:
    proc = start_cli(
        "--mode", "oneshot", "--port", "0", "--quiet",
        "--certfile", pki["server.pem"], "--keyfile", pki["server.key"], "--ca-certs", pki["ca.pem"],
    )  # fmt: skip
    try:
        host, port = first_line(proc).split("\t")
        with pytest.raises(rpc_tls.TLSError, match="client certificate"):  # --ca-certs: certificates required
            rpc_classic.tls_connect(host, int(port), ca_certs=pki["ca.pem"])
        with rpc_classic.tls_connect(host, int(port), pki["alice.key"], pki["alice.pem"], pki["ca.pem"]) as conn:
            assert conn.modules.os.getpid() == proc.pid
        code, err = finish(proc)
        assert code == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)


def test_tls_cli_on_all_interfaces_without_ca_still_warns(pki: dict[str, str]) -> None:
    proc = start_cli(
        "--mode", "oneshot", "--port", "0", "--host", "0.0.0.0", "--quiet",
        "--certfile", pki["server.pem"], "--keyfile", pki["server.key"],
    )  # fmt: skip
    try:
        _, port = first_line(proc).split("\t")
        with rpc_classic.tls_connect("127.0.0.1", int(port), ca_certs=pki["ca.pem"]) as conn:
            conn.ping()
        code, err = finish(proc)
        assert code == 0 and "any client can connect" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=5)

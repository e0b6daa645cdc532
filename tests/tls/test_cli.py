"""The ``rpc-tls`` command: the README's walk-through, end to end, and its refusals.

Makes a CA, a server certificate and a client certificate with the command, then runs a
mutual-TLS server and client on those files exactly as the README shows; the command never
overwrites files without ``--force``, reports a missing CA plainly, and ``show`` prints what
a certificate says. The console script entry point is the one ``pyproject.toml`` declares.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rpc_service
import rpc_tls
from rpc_tls._cli import _parser, main

from .conftest import EchoService

if sys.version_info >= (3, 11):
    import tomllib
else:  # 3.10: the same parser, from PyPI (a test dependency)
    import tomli as tomllib

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "packages" / "rpc-tls"


def make_certificates(folder: Path) -> None:
    assert main(["ca", "--dir", str(folder), "--days", "1"]) == 0
    assert main(["server", "localhost", "127.0.0.1", "--dir", str(folder), "--days", "1"]) == 0
    assert main(["client", "alice", "--dir", str(folder), "--days", "1"]) == 0


def test_making_a_ca_and_certificates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_certificates(tmp_path)
    out = capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == ["alice.key", "alice.pem", "ca.key", "ca.pem", "server.key", "server.pem"]
    assert "names:    localhost, 127.0.0.1" in out and "subject:  CN=alice" in out


def test_mutual_tls_with_cli_made_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_certificates(tmp_path)
    monkeypatch.chdir(tmp_path)
    authenticator = rpc_tls.TLSAuthenticator("server.key", "server.pem", ca_certs="ca.pem")
    with rpc_service.ThreadedServer(EchoService, port=0, authenticator=authenticator) as server:
        server.start_in_thread()
        with rpc_tls.tls_connect("localhost", server.port, keyfile="alice.key", certfile="alice.pem", ca_certs="ca.pem") as conn:
            assert conn.root.whoami() == "alice"
            assert conn.credentials.common_name == "localhost"


def test_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ca", "--dir", str(tmp_path)]) == 0
    before = (tmp_path / "ca.pem").read_bytes()
    assert main(["ca", "--dir", str(tmp_path)]) == 1
    assert "--force" in capsys.readouterr().err
    assert (tmp_path / "ca.pem").read_bytes() == before
    assert main(["ca", "--dir", str(tmp_path), "--force", "--common-name", "Second CA"]) == 0
    assert (tmp_path / "ca.pem").read_bytes() != before


def test_missing_ca_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["server", "localhost", "--dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rpc-tls: error: cannot load the") and "ca.pem" in err


def test_explicit_ca_paths_names_and_key_type(tmp_path: Path) -> None:
    authority = tmp_path / "authority"
    authority.mkdir()
    assert main(["ca", "--dir", str(authority), "--name", "root", "--key-type", "rsa"]) == 0
    ca_args = ["--ca-cert", str(authority / "root.pem"), "--ca-key", str(authority / "root.key"), "--dir", str(tmp_path)]
    assert main(["client", "build bot", "--name", "bot", "--host", "ci.example", *ca_args]) == 0
    identity = rpc_tls.CertifiedKey.load(tmp_path / "bot.pem", tmp_path / "bot.key").identity
    assert identity.common_name == "build bot" and identity.dns_names == ("ci.example",)


def test_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_certificates(tmp_path)
    capsys.readouterr()
    assert main(["show", str(tmp_path / "server.pem")]) == 0
    out = capsys.readouterr().out
    identity = rpc_tls.CertifiedKey.load(tmp_path / "server.pem", tmp_path / "server.key").identity
    assert identity.fingerprint_sha256 in out and "issuer:   CN=rpc-tls CA" in out
    assert main(["show", str(tmp_path / "nothing.pem")]) == 1


def test_console_script_and_module_entry_points() -> None:
    project = tomllib.loads((PACKAGE_DIR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"] == {"rpc-tls": "rpc_tls._cli:main"}
    result = subprocess.run(
        [sys.executable, "-m", "rpc_tls", "--version"], capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    )
    assert result.returncode == 0 and result.stdout.strip() == f"rpc-tls {rpc_tls.__version__}"


def test_every_option_has_help() -> None:
    parser = _parser()
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    parsers = [parser, *(sub for action in subparsers for sub in action.choices.values())]
    assert len(parsers) == 5
    undocumented = [
        (each.prog, action.option_strings or action.dest)
        for each in parsers
        for action in each._actions
        if not isinstance(action, argparse._SubParsersAction) and not (action.help and action.help.strip())
    ]
    assert not undocumented

"""The ``rpc-registry`` command: ``serve`` in a child process (udp and tcp, listing, key file,
stopped by SIGTERM), and the client subcommands ``list`` and ``lookup`` run in-process.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Protocol

import pytest

import rpc_registry
from rpc_registry._cli import _parser, main
from tests.registry.helpers import KEY, client_for, source_path, start_registry

if sys.version_info >= (3, 11):
    import tomllib
else:  # 3.10: the same parser, from PyPI (a test dependency)
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parents[2]


class Served:
    def __init__(self, process: subprocess.Popen[str], mode: str, port: int) -> None:
        self.process, self.mode, self.port = process, mode, port

    def args(self) -> list[str]:
        return ["--mode", self.mode, "--host", "127.0.0.1", "--port", str(self.port), "--timeout", "2"]


class ServeCli(Protocol):
    def __call__(self, *extra: str) -> Served: ...


@pytest.fixture
def serve_cli() -> Iterator[ServeCli]:
    """Runs ``python -m rpc_registry serve ... *extra`` and reads the port it announces."""
    started: list[subprocess.Popen[str]] = []

    def start(*extra: str) -> Served:
        process = subprocess.Popen(
            [sys.executable, "-m", "rpc_registry", "serve", "--host", "127.0.0.1", "--port", "0", "--log-level", "info", *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONPATH": source_path()},
        )
        started.append(process)
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"registry on 127\.0\.0\.1:(\d+)", line)
        assert match, f"unexpected first line {line!r}"
        return Served(process, "tcp" if "tcp" in extra else "udp", int(match.group(1)))

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def stop(served: Served) -> str:
    served.process.send_signal(signal.SIGTERM)
    _, stderr = served.process.communicate(timeout=10)
    assert served.process.returncode == 0, stderr
    return stderr


@pytest.mark.parametrize("mode", ["udp", "tcp"])
def test_serve_list_and_lookup(serve_cli: ServeCli, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    served = serve_cli("--mode", mode, "--allow-listing", "--pruning-timeout", "30")
    client = rpc_registry.UDPRegistryClient("127.0.0.1", served.port) if mode == "udp" else rpc_registry.TCPRegistryClient("127.0.0.1", served.port)
    assert client.register(["Chat3", "Chat"], 5000)
    assert main(["lookup", *served.args(), "chat"]) == 0
    assert capsys.readouterr().out == "127.0.0.1:5000\n"
    assert main(["list", *served.args()]) == 0
    assert capsys.readouterr().out == "CHAT\nCHAT3\n"
    assert main(["lookup", *served.args(), "nobody"]) == 1
    assert "no server offers 'nobody'" in capsys.readouterr().err
    stderr = stop(served)
    assert "registered Chat3, Chat at 127.0.0.1:5000" in stderr


def test_serve_with_a_key_file(serve_cli: ServeCli, tmp_path: Path) -> None:
    key_file = tmp_path / "registry.key"
    key_file.write_bytes(KEY + b"\n")
    served = serve_cli("--mode", "tcp", "--key-file", str(key_file))
    assert not rpc_registry.TCPRegistryClient("127.0.0.1", served.port).register(["Echo"], 5000)
    assert rpc_registry.TCPRegistryClient("127.0.0.1", served.port, key=rpc_registry.load_key(key_file)).register(["Echo"], 5000)
    assert "authentication required" in stop(served)


def test_list_refused_when_listing_is_disabled(capsys: pytest.CaptureFixture[str]) -> None:
    server = start_registry("udp")
    try:
        assert main(["list", "--host", "127.0.0.1", "--port", str(server.port)]) == 2
        assert "listing is disabled" in capsys.readouterr().err
    finally:
        server.close()


def test_lookup_with_a_key_file_trusts_only_signed_replies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    server = start_registry("tcp", key=KEY)
    try:
        assert client_for(server, key=KEY).register(["Echo"], 5000)
        args = ["lookup", "--mode", "tcp", "--host", "127.0.0.1", "--port", str(server.port), "--key-file", str(key_file), "echo"]
        assert main(args) == 0
        assert capsys.readouterr().out == "127.0.0.1:5000\n"
    finally:
        server.close()


def test_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    short = tmp_path / "short.key"
    short.write_bytes(b"short")
    assert main(["lookup", "--key-file", str(short), "--host", "127.0.0.1", "x"]) == 2
    assert "at least 16 bytes" in capsys.readouterr().err
    assert main(["lookup", "--key-file", str(tmp_path / "missing"), "--host", "127.0.0.1", "x"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["serve", "--mode", "carrier-pigeon"])
    assert info.value.code == 2


def test_the_console_script_points_at_main() -> None:
    project = tomllib.loads((REPO_ROOT / "packages/rpc-registry/pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["scripts"] == {"rpc-registry": "rpc_registry._cli:main"}
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "99999"],
        ["serve", "--port", "-1"],
        ["lookup", "x", "--port", "70000"],
        ["list", "--port", "eighty"],
    ],
)
def test_bad_ports_are_one_line_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a port number (0-65535)" in err, err


def test_an_unresolvable_host_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "no-such-host.invalid", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rpc-registry: cannot listen on no-such-host.invalid:0"), err


def test_every_option_has_help() -> None:
    parser = _parser()
    subparsers = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    parsers = [parser, *(sub for action in subparsers for sub in action.choices.values())]
    assert len(parsers) == 4
    undocumented = [
        (each.prog, action.option_strings)
        for each in parsers
        for action in each._actions
        if action.option_strings and not (action.help and action.help.strip())
    ]
    assert not undocumented


def test_serve_logs_queries_at_debug(serve_cli: ServeCli) -> None:
    served = serve_cli("--mode", "tcp", "--log-level", "debug")
    assert main(["lookup", "nothing-here", *served.args()]) == 1
    stderr = stop(served)
    assert re.search(r"DEBUG: query for 'nothing-here' from 127\.0\.0\.1.*: 0 server\(s\)", stderr), stderr



@pytest.mark.parametrize("mode", ["udp", "tcp"])
def test_serve_stops_cleanly_on_sigterm_right_after_its_first_line(serve_cli: ServeCli, mode: str) -> None:
    """Regression: the line was printed before the SIGTERM handler was installed, so a
    caller stopping the server as soon as it read it could kill it (exit -15)."""
    for _ in range(3):
        stop(serve_cli("--mode", mode))

"""The ``rpc-classic`` command, run as ``python -m rpc_classic``: stdio (through
``connect_subproc``), oneshot, threaded and forking modes, unix sockets, the bind warning,
option errors and registration with a registry."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import rpc_classic
from rpc_classic._cli import bind_warning, build_parser, main

from .conftest import READY_TIMEOUT, child_env, finish, first_line, start_cli

@pytest.fixture
def cli_processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=5)


def test_connect_subproc_runs_the_cli_in_stdio_mode() -> None:
    with rpc_classic.connect_subproc(env=child_env()) as conn:
        pid = conn.modules.os.getpid()
        assert pid != os.getpid()
        assert rpc_classic.obtain(conn.modules.sys.argv)[1:] == ["--mode", "stdio", "--quiet"]
        process = conn._stream.process  # type: ignore[attr-defined]  # the SubprocessStream's child
    assert process.poll() is not None  # closing the connection reaped the child


def test_oneshot_prints_host_and_port_then_serves_one_client(cli_processes: list[subprocess.Popen[str]]) -> None:
    proc = start_cli("--mode", "oneshot", "--port", "0", "--quiet")
    cli_processes.append(proc)
    host, port = first_line(proc).split("\t")
    assert host == "127.0.0.1"
    with rpc_classic.connect(host, int(port)) as conn:
        assert conn.modules.os.getpid() == proc.pid
        conn.execute("x = 1")
    code, err = finish(proc)
    assert code == 0, err
    assert "WITHOUT TLS client certificates" in err and "every account on this machine" in err


def private_env(tmp_path: Path) -> dict[str, str]:
    env = child_env()
    env.pop("XDG_RUNTIME_DIR", None)
    env["TMPDIR"] = str(tmp_path)
    return env


@pytest.mark.parametrize("mode", ["oneshot", "threaded"])
def test_default_is_a_private_unix_socket_not_tcp(mode: str, tmp_path: Path, cli_processes: list[subprocess.Popen[str]]) -> None:
    proc = start_cli("--mode", mode, "--quiet", env=private_env(tmp_path))
    cli_processes.append(proc)
    path = Path(first_line(proc))
    assert path.parent.parent == tmp_path and path.parent.name.startswith("rpc-classic-")
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent.stat().st_uid == os.getuid()
    with rpc_classic.unix_connect(str(path)) as conn:
        assert conn.modules.os.getpid() == proc.pid
    if mode == "threaded":
        proc.terminate()
    code, err = finish(proc)
    assert code == 0, err
    assert "WARNING" not in err
    assert not path.parent.exists()  # the private directory goes with the server


def test_sigterm_right_after_the_first_line_stops_cleanly(tmp_path: Path, cli_processes: list[subprocess.Popen[str]]) -> None:
    """Regression: the path was printed before the SIGTERM handler was installed, so a
    caller stopping the server as soon as it read it could kill it (exit -15, the private
    directory left behind)."""
    for _ in range(3):
        proc = start_cli("--mode", "threaded", "--quiet", env=private_env(tmp_path))
        cli_processes.append(proc)
        path = Path(first_line(proc))
        proc.terminate()
        code, err = finish(proc)
        assert code == 0, err
        assert not path.parent.exists()


def test_a_given_socket_path_is_made_owner_only(tmp_path: Path, cli_processes: list[subprocess.Popen[str]]) -> None:
    path = tmp_path / "given.sock"
    proc = start_cli("--mode", "oneshot", "--socket-path", str(path), "--quiet")
    cli_processes.append(proc)
    assert first_line(proc) == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with rpc_classic.unix_connect(str(path)) as conn:
        conn.ping()
    assert finish(proc)[0] == 0


def test_oneshot_on_a_unix_socket(tmp_path: Path, cli_processes: list[subprocess.Popen[str]]) -> None:
    path = str(tmp_path / "classic.sock")
    proc = start_cli("--mode", "oneshot", "--socket-path", path, "--quiet")
    cli_processes.append(proc)
    assert first_line(proc) == path
    with rpc_classic.unix_connect(path) as conn:
        assert conn.eval("2 + 2") == 4
    assert finish(proc)[0] == 0


def test_binding_all_interfaces_without_tls_warns_loudly(cli_processes: list[subprocess.Popen[str]]) -> None:
    proc = start_cli("--mode", "oneshot", "--host", "0.0.0.0", "--port", "0", "--quiet")
    cli_processes.append(proc)
    _, port = first_line(proc).split("\t")
    with rpc_classic.connect("127.0.0.1", int(port)) as conn:
        conn.ping()
    code, err = finish(proc)
    assert code == 0
    assert "WITHOUT TLS" in err and "!!!!" in err


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def connect_when_up(port: int) -> rpc_classic.ClassicConnection:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        try:
            return rpc_classic.connect("127.0.0.1", port, timeout=2)
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.mark.parametrize("mode", ["threaded", "forking"])
def test_threaded_and_forking_servers(mode: str, cli_processes: list[subprocess.Popen[str]]) -> None:
    port = free_port()
    proc = start_cli("--mode", mode, "--port", str(port), "--quiet")
    cli_processes.append(proc)
    with connect_when_up(port) as first, rpc_classic.connect("127.0.0.1", port) as second:
        first.execute("who = 'first'")
        pids = {first.modules.os.getpid(), second.modules.os.getpid()}
        if mode == "threaded":
            assert pids == {proc.pid}
            assert second.eval("'who' in globals()") is False  # a namespace per connection
        else:
            assert len(pids) == 2 and proc.pid not in pids  # a child process per client
    proc.terminate()
    code, err = finish(proc)
    assert code == 0, err


def test_bind_warning() -> None:
    for host in (None, "", "127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert "every account on this machine" in (bind_warning(host, tls=False, ca_certs=False) or ""), host
        assert "every account on this machine" in (bind_warning(host, tls=True, ca_certs=False) or ""), host
        assert bind_warning(host, tls=True, ca_certs=True) is None, host
    assert "WITHOUT TLS" in (bind_warning("0.0.0.0", tls=False, ca_certs=False) or "")
    assert "WITHOUT TLS" in (bind_warning("example.org", tls=False, ca_certs=False) or "")
    assert "anyone who can reach 0.0.0.0" in (bind_warning("0.0.0.0", tls=True, ca_certs=False) or "")
    assert bind_warning("0.0.0.0", tls=True, ca_certs=True) is None
    assert bind_warning("0.0.0.0", tls=False, ca_certs=False, socket_path="/tmp/x.sock") is None


@pytest.mark.parametrize(
    "argv",
    [
        ["--mode", "stdio", "--port", "5"],
        ["--mode", "stdio", "--certfile", "c.pem"],
        ["--certfile", "c.pem"],
        ["--ca-certs", "ca.pem"],
        ["--register", "--registry-type", "tcp"],
        ["--mode", "nonsense"],
    ],
)
def test_option_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "rpc-classic" in capsys.readouterr().err


def test_registers_with_a_registry(cli_processes: list[subprocess.Popen[str]]) -> None:
    rpc_registry = pytest.importorskip("rpc_registry", reason="rpc-registry is not importable")
    registry = rpc_registry.TCPRegistryServer(host="127.0.0.1", port=0)
    registry.start_in_thread()
    try:
        proc = start_cli(
            "--mode", "oneshot", "--port", "0", "--quiet",
            "--register", "--registry-type", "tcp", "--registry-host", "127.0.0.1", "--registry-port", str(registry.port),
        )  # fmt: skip
        cli_processes.append(proc)
        host, port = first_line(proc).split("\t")
        client = rpc_registry.TCPRegistryClient("127.0.0.1", registry.port)
        deadline = time.monotonic() + READY_TIMEOUT
        while (host, int(port)) not in client.discover("SLAVE"):
            assert time.monotonic() < deadline, "the server never registered"
            time.sleep(0.05)
        assert (host, int(port)) in client.discover("classic")
        with rpc_classic.connect(host, int(port)) as conn:
            assert conn.eval("'found'") == "found"
        assert finish(proc)[0] == 0
    finally:
        registry.close()


# -- newcomer's checks: --version, help for every option, one-line errors, --verbose/--logfile


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"rpc-classic {rpc_classic.__version__}"


def test_every_option_has_help() -> None:
    undocumented = [
        action.option_strings
        for action in build_parser()._actions
        if action.option_strings and not (action.help and action.help.strip())
    ]
    assert not undocumented


@pytest.mark.parametrize(
    "argv, names",
    [
        (["--port", "99999"], "--port"),
        (["--port", "-1"], "--port"),
        (["--port", "http"], "--port"),
        (["--registry-port", "65536", "--register"], "--registry-port"),
        (["--host", "999.1.1.1"], "--host"),
        (["--host", "no-such-host.invalid"], "--host"),
        (["--logfile", "/nonexistent-dir/rpc.log"], "--logfile"),
        (["--verbose", "--quiet"], "--quiet"),
    ],
)
def test_bad_values_are_one_line_errors(argv: list[str], names: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rpc-classic: error: "), err
    assert names in err


def test_missing_certificate_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("rpc_tls", reason="rpc-tls is not importable")
    missing = str(tmp_path / "missing.pem")
    with pytest.raises(SystemExit) as info:
        main(["--certfile", missing, "--keyfile", missing, "--port", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.pem" in err, err


def test_an_encrypted_keyfile_is_a_one_line_error_not_a_password_prompt(tmp_path: Path) -> None:
    rpc_tls = pytest.importorskip("rpc_tls", reason="rpc-tls is not importable")
    issued = rpc_tls.CertificateAuthority.create("test CA").issue_server("localhost")
    issued.save(tmp_path / "s.pem", tmp_path / "s.key", password="sesame")
    proc = start_cli("--certfile", str(tmp_path / "s.pem"), "--keyfile", str(tmp_path / "s.key"), "--port", "0")
    code, err = finish(proc)
    assert code == 2
    assert err.count("\n") == 1 and "encrypted" in err and "s.key" in err, err


def test_a_port_out_of_range_from_the_console_is_one_line_without_traceback() -> None:
    proc = start_cli("--port", "99999")
    code, err = finish(proc)
    assert code == 2
    assert err.strip().splitlines() == ["rpc-classic: error: argument --port: 99999 is not a port number (0-65535); see --help"]


@pytest.mark.parametrize("verbose", [False, True])
def test_logfile_and_verbose(verbose: bool, tmp_path: Path, cli_processes: list[subprocess.Popen[str]]) -> None:
    logfile = tmp_path / "classic.log"
    proc = start_cli("--mode", "oneshot", "--port", "0", "--logfile", str(logfile), *(["--verbose"] if verbose else []))
    cli_processes.append(proc)
    host, port = first_line(proc).split("\t")
    with rpc_classic.connect(host, int(port)) as conn:
        assert conn.eval("1 + 1") == 2
    code, err = finish(proc)
    assert code == 0, err
    # the log went to the file; stderr holds only the TCP warning, which is not a log record
    assert " INFO: " not in err and " DEBUG: " not in err, err
    text = logfile.read_text(encoding="utf-8")
    assert " INFO: serving " in text
    assert (" DEBUG: " in text) is verbose, text

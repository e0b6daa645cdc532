"""teleport_function / conn.teleport: a local function's code runs on the peer, same
interpreter version only."""

from __future__ import annotations

import os
from typing import Any

import pytest

import rpc_classic
from rpc_classic import ClassicConnection, NotPlainDataError, VersionMismatchError, teleport_function
from rpc_classic import _teleport


def remote_identity(label: str, *, scale: int = 2) -> tuple[str, int, str]:
    import os

    return label, os.getpid() * scale // scale, os.getcwd()


def uses_remote_globals(value: int, extra: tuple[int, ...] = (1, 2)) -> int:
    return value * int(globals()["factor"]) + sum(extra)  # `factor` is in the peer's namespace


def test_teleported_function_runs_on_the_peer(subproc_conn: ClassicConnection) -> None:
    remote = subproc_conn.teleport(remote_identity)
    label, pid, cwd = remote("hi", scale=3)
    assert label == "hi" and pid == subproc_conn.modules.os.getpid() != os.getpid()
    assert cwd == subproc_conn.modules.os.getcwd()
    assert subproc_conn.eval("remote_identity('x')[0]") == "x"  # def_: stored in the namespace


def test_teleport_uses_the_peer_namespace_and_copies_defaults(thread_conn: ClassicConnection) -> None:
    thread_conn.execute("factor = 10")
    remote = teleport_function(thread_conn, uses_remote_globals, def_=False)
    assert remote(4) == 43
    assert remote(4, (5,)) == 45
    assert "uses_remote_globals" not in rpc_classic.obtain(thread_conn.eval("list(globals())"))


@pytest.mark.parametrize("def_", [True, False])
def test_a_lambda_teleports_too(thread_conn: ClassicConnection, def_: bool) -> None:
    """Regression: the peer refused any function whose name is not an identifier, so a
    lambda ("<lambda>") could not be teleported; it is defined nowhere (it has no name)."""
    remote = teleport_function(thread_conn, lambda x, y=2: x * y + 1, def_=def_)
    assert remote(4) == 9 and remote(4, 3) == 13
    assert "<lambda>" not in rpc_classic.obtain(thread_conn.eval("list(globals())"))
    mock = rpc_classic.MockClassicConnection()
    assert mock.teleport(lambda x: x + 1, def_=def_)(1) == 2 and "<lambda>" not in mock.namespace


def test_teleport_refuses_closures_and_non_functions(thread_conn: ClassicConnection) -> None:
    captured = 5

    def closure() -> int:
        return captured

    with pytest.raises(TypeError, match="closes over captured"):
        thread_conn.teleport(closure)
    with pytest.raises(TypeError, match="plain Python functions"):
        thread_conn.teleport(len)

    def bad_default(x: object = object()) -> object:
        return x

    with pytest.raises(NotPlainDataError, match="default values of .*bad_default"):
        thread_conn.teleport(bad_default)


def test_teleport_refuses_another_python_version(thread_conn: ClassicConnection, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = thread_conn.root.python_info()
    pretend = (peer[0], (peer[1][0], peer[1][1] + 1, 0))  # this side claims the next minor version
    monkeypatch.setattr(_teleport, "python_info", lambda: pretend)
    with pytest.raises(VersionMismatchError) as info:
        thread_conn.teleport(remote_identity)
    message = str(info.value)
    assert _teleport._describe(pretend) in message and _teleport._describe(peer) in message


def test_the_peer_checks_the_version_too(thread_conn: ClassicConnection) -> None:
    """A peer given code from another version refuses it itself (as VersionMismatchError)."""
    here = _teleport.python_info()
    other: Any = ("otherpython", here[1])
    with pytest.raises(Exception) as info:
        thread_conn.root.teleport(b"", "f", None, None, other)
    error = rpc_classic._errors.translate_remote(info.value)
    assert isinstance(error, VersionMismatchError) and "otherpython" in str(error)

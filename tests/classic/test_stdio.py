"""redirected_stdio and interact: the peer's standard streams, here."""

from __future__ import annotations

import io
import sys

import pytest

import rpc_classic
from rpc_classic import ClassicConnection, SlaveService, interact, redirected_stdio
from rpc_service import VoidService

from .conftest import child_env


def test_redirected_stdio(subproc_conn: ClassicConnection, capsys: pytest.CaptureFixture[str]) -> None:
    with redirected_stdio(subproc_conn):
        subproc_conn.execute("import sys\nprint('to the client', 42)\nprint('oops', file=sys.stderr)")
    out, err = capsys.readouterr()
    assert "to the client 42" in out and "oops" in err
    subproc_conn.execute("print('not for us')")  # the child's own stdout again
    assert "not for us" not in capsys.readouterr().out
    assert subproc_conn.eval("type(sys.stdout).__name__") == "TextIOWrapper"


def test_redirected_stdio_works_for_a_closed_client(capsys: pytest.CaptureFixture[str]) -> None:
    """The streams lent to the peer expose only their text methods, so even a VoidService
    client (whose config opens nothing) receives the output."""
    with rpc_classic.connect_subproc(service=VoidService, env=child_env()) as conn:
        with redirected_stdio(conn):
            conn.execute("print('through a closed client')")
    assert "through a closed client" in capsys.readouterr().out


def test_interact(subproc_conn: ClassicConnection, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    subproc_conn.execute("base = 40")
    script = "x = base + 2\nprint(x * 2, local_value)\nfor i in range(2):\n    print('loop', i)\n\nraise KeyError('k')\nimport os; print(os.getpid())\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(script))
    interact(subproc_conn, {"local_value": 7}, banner="remote console")
    out, err = capsys.readouterr()
    assert "remote console" in err  # the console writes its banner and errors to stderr
    assert "84 7" in out and "loop 1" in out
    assert str(subproc_conn.modules.os.getpid()) in out
    assert "KeyError" in err
    assert "x" not in subproc_conn.namespace  # the console had a copy of the namespace


def test_interact_ends_on_exit(subproc_conn: ClassicConnection, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("print('before')\nexit()\nprint('never')\n"))
    interact(subproc_conn)
    out = capsys.readouterr().out
    assert "before" in out and "never" not in out
    assert subproc_conn.eval("1 + 1") == 2


def test_slave_restores_redirected_streams_when_the_peer_goes() -> None:
    service = SlaveService()
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr, sys.stdin
    try:
        service.exposed_redirect_stdio(out, err)
        service.exposed_redirect_stdio(err, out)
        assert sys.stdout is err
        service.on_disconnect(None)  # type: ignore[arg-type]  # the hook ignores its argument here
        assert (sys.stdout, sys.stderr, sys.stdin) == saved
    finally:
        sys.stdout, sys.stderr, sys.stdin = saved


def test_redirecting_a_peer_in_this_process_is_refused(thread_conn: ClassicConnection) -> None:
    with pytest.raises(RuntimeError, match="same process"):
        with redirected_stdio(thread_conn):
            pass  # pragma: no cover
    assert thread_conn.eval("1") == 1

"""Standard streams across the connection: :func:`redirected_stdio` and :func:`interact`.

Owns the small stream objects that cross: :class:`StreamForwarder` (lent to the peer, it
exposes only the text-stream methods of one local stream, so even a client whose own side
is closed can receive the peer's output) and :class:`PatientReader` (installed as the
peer's ``sys.stdin``, it waits for this side's input without the synchronous request
timeout). The redirection itself is done by the peer's ``SlaveService``, which also undoes
it if the connection drops. It must not touch this process's own ``sys`` streams.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from typing import Any, Final, Iterable, Iterator, Mapping

from rpc_service import ConnectionClosedError, RemoteError, async_, exposed

from ._mock import need_peer

__all__ = ["StreamForwarder", "PatientReader", "redirected_stdio", "interact", "process_marker"]

# Random per interpreter: with the pid it tells "the peer is this very process" apart from a
# peer that merely has the same pid (another container) or was forked from this one.
_PROCESS_TOKEN: Final = os.urandom(16)


def process_marker() -> tuple[int, bytes]:
    """What identifies this process to a peer checking whether it is the same process."""
    return os.getpid(), _PROCESS_TOKEN


class StreamForwarder:
    """What the peer sees of one local text stream: writing, reading lines, flushing."""

    __slots__ = ("_stream",)

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __repr__(self) -> str:
        return f"<StreamForwarder of {self._stream!r}>"

    @exposed
    def write(self, text: str) -> int:
        return int(self._stream.write(text))

    @exposed
    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self._stream.write(line)

    @exposed
    def flush(self) -> None:
        self._stream.flush()

    @exposed
    def readline(self, size: int = -1) -> str:
        return str(self._stream.readline(size))

    @exposed
    def read(self, size: int = -1) -> str:
        return str(self._stream.read(size))

    @exposed
    def isatty(self) -> bool:
        return bool(self._stream.isatty())

    def _encoding(self) -> str:
        return str(getattr(self._stream, "encoding", None) or "utf-8")

    encoding = exposed(property(_encoding))


class PatientReader:
    """The peer side of a redirected stdin: a read-only text stream over a
    :class:`StreamForwarder` proxy that waits as long as the user takes (a
    ``sync_request_timeout`` would cut a slow prompt short)."""

    encoding = "utf-8"
    errors = "strict"
    closed = False

    def __init__(self, remote: Any) -> None:
        self._remote = remote

    def __repr__(self) -> str:
        return "<PatientReader of the peer's stdin>"

    def _call(self, name: str, *args: Any) -> Any:
        method = getattr(self._remote, name)
        try:
            call = async_(method)
        except TypeError:  # not a proxy method (e.g. a local stream): call it directly
            return method(*args)
        return call(*args).value

    def readline(self, size: int | None = -1) -> str:
        return str(self._call("readline", -1 if size is None else size))

    def read(self, size: int | None = -1) -> str:
        return str(self._call("read", -1 if size is None else size))

    def readlines(self, hint: int = -1) -> list[str]:
        lines: list[str] = []
        while line := self.readline():
            lines.append(line)
            if 0 < hint <= sum(map(len, lines)):
                break
        return lines

    def __iter__(self) -> Iterator[str]:
        while line := self.readline():
            yield line

    def isatty(self) -> bool:
        return bool(self._call("isatty"))

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def fileno(self) -> int:
        raise io.UnsupportedOperation("the peer's stdin has no file descriptor here")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass  # the stream belongs to the peer


@contextlib.contextmanager
def redirected_stdio(conn: Any, *, stdin: bool = False) -> Iterator[None]:
    """Within the block, the peer's ``sys.stdout`` and ``sys.stderr`` write to this side's
    (and, with ``stdin=True``, its ``sys.stdin`` reads from this side's).

    The peer's streams are process-wide: output of the peer's other threads and clients
    arrives here too while the block runs. The peer restores its streams on exit, and by
    itself if the connection drops. A peer in this very process (``connect_thread``) refuses.
    """
    need_peer(conn, "redirected_stdio()")
    inp = StreamForwarder(sys.stdin) if stdin else None
    token = conn.root.redirect_stdio(StreamForwarder(sys.stdout), StreamForwarder(sys.stderr), inp, process_marker())
    try:
        yield
    finally:
        if not conn.closed:
            with contextlib.suppress(ConnectionClosedError):
                conn.root.restore_stdio(token)


def interact(conn: Any, namespace: Mapping[str, Any] | None = None, *, banner: str | None = None) -> None:
    """An interactive Python console running *on the peer*, driven from this side's stdio.

    The console's globals are a copy of the peer's ``namespace`` plus ``namespace`` (values
    of this side cross as usual: immutables by value, the rest as proxies). Returns at end
    of input or when the console calls ``exit()``.
    """
    need_peer(conn, "interact()")
    root = conn.root
    builtins_mod = root.getmodule("builtins")
    console_globals = builtins_mod.dict(root.namespace)
    for key, value in (namespace or {}).items():
        console_globals[key] = value
    console = root.getmodule("code").InteractiveConsole(console_globals)
    with redirected_stdio(conn, stdin=True):
        result = async_(console.interact)(banner, "")
        try:
            result.value  # no expiry: a console lasts as long as its user
        except RemoteError as exc:
            if exc.remote_type != "builtins.SystemExit":
                raise

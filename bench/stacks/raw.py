"""The floor: a raw length-prefixed TCP echo in plain Python, one server thread per connection.

This module owns the cheapest protocol that can express every workload: a frame is a 4-byte
big-endian length followed by the payload, whose first byte is an opcode. It must stay minimal
(no serialization, no dispatch tables, no allocation beyond the payload buffer) because every
other stack is reported as a ratio to it.

Opcodes: ``N`` noop (reply ``N``); ``E`` + data echo (the same frame comes back); ``C`` callback
(the server sends ``c``, waits for the client's ``r``, then replies ``C``: two round trips);
``L`` list (the reply is ``L`` + ``LIST_LEN`` native int64s, one round trip).
"""

from __future__ import annotations

import socket
import struct
import threading
from array import array
from collections.abc import Callable, Iterable

from bench.stacks.base import HOST, LIST_LEN

NAME = "raw"
IDLE_NEEDS_THREAD = False

_HEADER = struct.Struct("!I")
_NOOP = b"N"
_ECHO = b"E"
_CALLBACK = b"C"
_CALLBACK_REQUEST = b"c"
_CALLBACK_REPLY = b"r"
_LIST = b"L"


def describe() -> dict[str, str]:
    return {"protocol": "4-byte length + opcode + payload, TCP_NODELAY, thread per connection"}


def _recv_exact(sock: socket.socket, n: int) -> bytes | bytearray:
    if n <= 65536:  # small frames: one recv() nearly always suffices and returns bytes directly
        chunk = sock.recv(n)
        if len(chunk) == n:
            return chunk
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf = bytearray(chunk)
        while len(buf) < n:
            more = sock.recv(n - len(buf))
            if not more:
                raise ConnectionError("peer closed the connection")
            buf += more
        return buf
    buf = bytearray(n)  # big frames: straight into one buffer, no intermediate copies
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("peer closed the connection")
        got += k
    return buf


def _recv_frame(sock: socket.socket) -> bytes | bytearray:
    (length,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return _recv_exact(sock, length)


def _send_frame(sock: socket.socket, head: bytes | bytearray,
                body: bytes | bytearray = b"") -> None:
    """Send one frame whose payload is ``head + body``; ``body`` (possibly big) is not copied."""
    prefix = _HEADER.pack(len(head) + len(body)) + head
    if len(body) < 65536:
        sock.sendall(prefix + body)
    else:
        sock.sendall(prefix)
        sock.sendall(body)


def _handle(sock: socket.socket, list_reply: bytes) -> None:
    with sock:
        try:
            while True:
                frame = _recv_frame(sock)
                op = frame[:1]
                if op == _NOOP or op == _ECHO:
                    _send_frame(sock, b"", frame)
                elif op == _CALLBACK:
                    _send_frame(sock, _CALLBACK_REQUEST)
                    if _recv_frame(sock) != _CALLBACK_REPLY:
                        return
                    _send_frame(sock, _CALLBACK)
                elif op == _LIST:
                    _send_frame(sock, b"", list_reply)
                else:
                    return
        except OSError:
            return


def serve(report_port: Callable[[int], None], max_connections: int) -> None:
    list_reply = _LIST + array("q", range(LIST_LEN)).tobytes()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(socket.SOMAXCONN)  # max_connections: no limit to set
    report_port(listener.getsockname()[1])
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_handle, args=(sock, list_reply), daemon=True).start()


class RawClient:
    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection((HOST, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def noop(self) -> None:
        _send_frame(self._sock, _NOOP)
        _recv_frame(self._sock)

    def echo(self, data: bytes) -> memoryview:
        _send_frame(self._sock, _ECHO, data)
        return memoryview(_recv_frame(self._sock))[1:]

    def call_back(self, fn: Callable[[], None]) -> None:
        _send_frame(self._sock, _CALLBACK)
        if _recv_frame(self._sock) != _CALLBACK_REQUEST:
            raise ConnectionError("protocol error: expected a callback request")
        fn()
        _send_frame(self._sock, _CALLBACK_REPLY)
        _recv_frame(self._sock)

    def get_list(self) -> Iterable[int]:
        _send_frame(self._sock, _LIST)
        frame = _recv_frame(self._sock)
        values = array("q")
        values.frombytes(memoryview(frame)[1:])
        return values

    def close(self) -> None:
        self._sock.close()


def connect(port: int) -> RawClient:
    return RawClient(port)

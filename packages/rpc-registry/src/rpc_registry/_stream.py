"""Socket helpers shared by the TCP registry server and client: framing and bounded reads.

Owns the TCP framing (each message preceded by its length, 4 bytes big-endian) and
:func:`recv_exact`, a read of exactly n bytes under a deadline. It knows nothing of what the
bytes mean and holds no state.
"""

from __future__ import annotations

import socket
import struct
import time

__all__ = ["LENGTH_PREFIX", "recv_exact"]

#: TCP framing: every message is preceded by its length, 4 bytes big-endian.
LENGTH_PREFIX = struct.Struct(">I")


def recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """``n`` bytes from ``sock`` before ``deadline`` (``time.monotonic``); None on a clean EOF
    before the first byte. Raises ``TimeoutError``, ``EOFError`` or another ``OSError``."""
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            raise TimeoutError("the client took too long to send its request")
        sock.settimeout(timeout)
        chunk = sock.recv(remaining)
        if not chunk:
            if remaining == n:
                return None
            raise EOFError("the client closed the connection in the middle of a request")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)

"""Idle reads: reading from a stream while giving back the protocol's large buffers once idle.

Owns :func:`read_into`, the read a connection does between frames. After a large payload the
protocol keeps its buffer (up to 16 MiB) for the next one; a connection that then stays quiet
for :data:`IDLE_RELEASE` seconds (or whose read times out first, as a pooled connection's
does when it is parked) releases it, so an idle connection costs little whatever it carried.
It does no I/O of its own beyond the one read it is asked for.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import rpc_protocol as wire

    from ._streams import Stream

__all__ = ["IDLE_RELEASE", "read_into"]

IDLE_RELEASE: Final = 1.0  # seconds without data before kept buffers are released


def read_into(stream: Stream, proto: wire.Connection, view: memoryview, timeout: float | None) -> int:
    """``stream.read_into(view, timeout)``, releasing ``proto``'s large buffers once idle."""
    if not proto.holds_large_buffer:
        return stream.read_into(view, timeout)
    start = time.monotonic()
    try:
        return stream.read_into(view, IDLE_RELEASE if timeout is None else min(timeout, IDLE_RELEASE))
    except TimeoutError:
        proto.release_buffers()
        if timeout is None:
            return stream.read_into(view, None)
        remaining = timeout - (time.monotonic() - start)
        if remaining <= 0:
            raise
        return stream.read_into(view, remaining)

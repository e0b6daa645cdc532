"""Callbacks nested on a waiting thread's stack: how much of it is left, and what then.

Owns :func:`stack_nearly_full`, :func:`too_deep` and :func:`refused_or_moved`. A thread
waiting on a call of its own serves the peer's requests meanwhile (callbacks nest on its
stack, A→B→A..., and the callbacks of several threads' calls pile up on one serving
thread). Before each nested one, both drivers make sure at least :data:`STACK_RESERVE`
frames are left below the recursion limit, so that what is read meanwhile (the reply
awaited, at least) can still be decoded and the connection stays usable: the threaded
driver serves it on a thread of its own then (up to :data:`MAX_OVERFLOW_THREADS` per
connection), the asyncio driver's share of threads refuses it with RecursionError. The
threaded driver also refuses one that makes ``max_pending_requests`` - 2 nested on a
connection: the peer, which sends each next level, may have no more in flight (it would
wait for room until its timeout).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import rpc_protocol as wire

    from ._demux import Demux

__all__ = ["MAX_OVERFLOW_THREADS", "STACK_RESERVE", "refused_or_moved", "stack_nearly_full", "too_deep"]

#: Python frames kept free below the recursion limit.
STACK_RESERVE: Final = 160
#: Threads a connection of the threaded driver may start at once for requests a waiting
#: thread, its stack nearly full, cannot serve on top of it (8 threads' chains of callbacks
#: 20 deep are 160 levels on one serving thread); past them such a request is refused.
MAX_OVERFLOW_THREADS: Final = 64


#: Python 3.10 counts calls made through C (a method wrapper, ``Context.run``...) towards the
#: recursion limit besides frames: there the frames looked at are held to half of it.
_FRAMES_PER_LEVEL: Final = 1 if sys.version_info >= (3, 11) else 2


def stack_nearly_full() -> bool:
    """Fewer than ``STACK_RESERVE`` frames are left below the recursion limit."""
    try:
        sys._getframe(sys.getrecursionlimit() // _FRAMES_PER_LEVEL - STACK_RESERVE)
    except ValueError:  # (the stack is not that deep)
        return False
    return True


def too_deep() -> RecursionError:
    """The error a request refused by a thread whose stack is nearly full is answered with."""
    return RecursionError(
        f"calls nested too deeply: a callback would be served within {STACK_RESERVE} frames of "
        f"the recursion limit ({sys.getrecursionlimit()}); it was refused to keep the connection usable"
    )


def refused_or_moved(conn: Demux, request: wire.Request) -> bool:
    """For a request a thread waiting on a call of its own took while callbacks nest deep on
    ``conn`` (threaded driver, no lock held): False to serve it here; True when it was
    answered with RecursionError (``max_pending_requests`` - 2 nested on the connection: the
    peer could not send the next level, or no overflow thread left) or handed to a thread of its own (this thread's
    stack nearly full)."""
    limit = conn._config.max_pending_requests - 2
    if conn._nested >= limit:  # (with the one served first, the peer has all it may in flight)
        conn._refuse_request(request, RecursionError(
            f"calls nested too deeply: {conn._nested} callbacks nested on this connection, and the "
            "peer may have no more requests in flight (max_pending_requests) to nest another"
        ))
        return True
    if not stack_nearly_full():
        return False
    with conn._lock:
        refused = conn._overflow >= MAX_OVERFLOW_THREADS
        if not refused:
            conn._overflow += 1
            conn._nested += 1  # (served on that thread, it is still nested: counted until done)
    if refused:
        conn._refuse_request(request, too_deep())
        return True

    def done() -> None:
        with conn._lock:
            conn._overflow -= 1
            conn._nested -= 1

    def serve() -> None:
        try:
            conn._serve_request(request)
        except Exception:  # (closed meanwhile: nobody to answer)
            pass
        finally:
            done()

    try:
        threading.Thread(target=serve, name="rpc-nested-callback", daemon=True).start()
    except BaseException:
        done()
        raise
    return True

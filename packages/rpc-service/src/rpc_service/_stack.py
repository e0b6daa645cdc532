"""How much of the calling thread's stack is left, for callbacks nested on it.

Owns :func:`stack_nearly_full` and :func:`too_deep`. A thread waiting on a call of its own
serves the peer's requests meanwhile (callbacks nest on its stack, A→B→A...); both drivers
ask here before each nested one, and refuse it with RecursionError when fewer than
:data:`STACK_RESERVE` frames are left below the recursion limit, so that what is read
meanwhile (the reply awaited, at least) can still be decoded and the connection stays usable.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["STACK_RESERVE", "stack_nearly_full", "too_deep"]

#: Python frames kept free below the recursion limit.
STACK_RESERVE: Final = 160


def stack_nearly_full() -> bool:
    """Fewer than ``STACK_RESERVE`` frames are left below the recursion limit."""
    try:
        sys._getframe(sys.getrecursionlimit() - STACK_RESERVE)
    except ValueError:  # (the stack is not that deep)
        return False
    return True


def too_deep() -> RecursionError:
    """The error a request refused by a thread whose stack is nearly full is answered with."""
    return RecursionError(
        f"calls nested too deeply: a callback would be served within {STACK_RESERVE} frames of "
        f"the recursion limit ({sys.getrecursionlimit()}); it was refused to keep the connection usable"
    )

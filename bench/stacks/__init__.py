"""The stacks under comparison: one module per stack, each implementing :mod:`bench.stacks.base`.

This package owns the registry of stack names; it must not import any stack module eagerly, so
that a stack whose library is missing only makes its own column ``n/a``.
"""

from __future__ import annotations

#: Stack name -> module implementing :class:`bench.stacks.base.StackModule`, in table order.
STACK_MODULES: dict[str, str] = {
    "raw": "bench.stacks.raw",
    "rpc": "bench.stacks.rpc",
    "rpc-aio": "bench.stacks.rpc_aio",
    "rpc-deadline": "bench.stacks.rpc_deadline",
    "rpc-traced": "bench.stacks.rpc_traced",
    "rpyc": "bench.stacks.rpyc_stack",
    "pyro": "bench.stacks.pyro",
    "managers": "bench.stacks.mpmanagers",
}

__all__ = ["STACK_MODULES"]

"""The value codec's vocabulary: tags, references, limits and hooks.

Owns what the encoder (``_encoder.py``) and the decoder (``_decoder.py``) share: the tag
byte of every value type (byte tables in ``docs/protocol.md``), the two reference forms, the
limits both enforce and the shapes of the box/unbox hooks. Immutable builtins travel by
value, plain containers by value only when the caller asks, and everything else as a
compact reference produced by the caller's ``box`` hook. It encodes and decodes nothing
itself, never imports pickle and performs no I/O.
"""

from __future__ import annotations

import builtins  # dataclass fields say builtins.object: mypyc's dataclasses cannot resolve a bare `object`
from dataclasses import dataclass
from typing import Callable, Final, Union

__all__ = ["Buffer", "BackRef", "BoxHook", "CodecLimits", "DEFAULT_LIMITS", "Ref", "UnboxHook"]  # (+ tags and costs)

Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to an object that lives on the *sending* side.

    ``type_id`` names the object's type within one connection; ``info`` carries that
    type's descriptor (an encodable value) the first time the type crosses, else None.
    """

    oid: int
    type_id: int = 0
    info: builtins.object = None


@dataclass(frozen=True, slots=True)
class BackRef:
    """A reference to an object that lives on the *receiving* side (a proxy sent home)."""

    oid: int


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Bounds applied when encoding and decoding values.

    ``zero_copy_threshold``: ``bytes`` values at least this long are handed to the I/O
    layer as separate buffers instead of being copied into the frame.

    ``decode_budget_factor`` and ``decode_budget_base`` bound what decoding one frame (one
    value, or a request's values) may build: the containers it creates are charged their
    approximate memory (see :data:`CONTAINER_COSTS`), and the total must stay within
    ``decode_budget_base + decode_budget_factor * len(bytes)``. A peer's frame of 5-byte
    empty sets would otherwise cost ~45 times its size; real data stays well below.
    """

    max_depth: int = 64
    max_items: int = 1 << 20
    zero_copy_threshold: int = 64 * 1024
    decode_budget_factor: int = 16
    decode_budget_base: int = 64 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= 200:
            raise ValueError("max_depth must be between 1 and 200")
        if self.max_items < 0 or self.zero_copy_threshold < 1:
            raise ValueError("max_items must be >= 0 and zero_copy_threshold >= 1")
        if self.decode_budget_factor < 1 or self.decode_budget_base < 0:
            raise ValueError("decode_budget_factor must be >= 1 and decode_budget_base >= 0")


DEFAULT_LIMITS: Final = CodecLimits()

# -- tags (one byte before every value; see docs/protocol.md) --------------------------
NONE: Final = 0x00
FALSE: Final = 0x01
TRUE: Final = 0x02
ELLIPSIS: Final = 0x03
NOT_IMPLEMENTED: Final = 0x04
INT8: Final = 0x08
INT64: Final = 0x09
BIGINT: Final = 0x0A
FLOAT: Final = 0x0C
COMPLEX: Final = 0x0D
STR8: Final = 0x10
STR32: Final = 0x11
BYTES8: Final = 0x12
BYTES32: Final = 0x13
TUPLE8: Final = 0x18
TUPLE32: Final = 0x19
FROZENSET: Final = 0x1A
SLICE: Final = 0x1B
LIST: Final = 0x1C
DICT: Final = 0x1D
SET: Final = 0x1E
REF: Final = 0x20
REF_TYPED: Final = 0x21
BACKREF: Final = 0x22

# What the decoder charges each container it builds against the frame's budget, as
# (bytes for the container, bytes per item): CPython's sizes on 64-bit, garbage-collector
# header included, rounded. The values inside are not charged (a scalar costs at most
# ~20 times its encoding); the pointers to them are.
COST_TUPLE: Final = (40, 8)
COST_LIST: Final = (56, 8)
COST_SET: Final = (216, 32)  # set and frozenset: a hash table of (hash, pointer) slots
COST_DICT: Final = (64, 56)  # (pairs)
COST_SLICE: Final = (56, 0)

BoxHook = Callable[[object], Union[Ref, BackRef]]
UnboxHook = Callable[[Union[Ref, BackRef]], object]

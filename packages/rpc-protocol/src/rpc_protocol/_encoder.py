"""The value encoder: Python values to the tagged bytes of ``docs/protocol.md`` §6.

Owns :class:`ValueEncoder`: one writer per type, immutable builtins by value, plain
containers by value only when asked, anything else through the caller's ``box`` hook as a
reference. Limits (depth, items) are enforced on the way out; large ``bytes`` values are
handed over as buffers of their own, not copied. It never imports pickle or performs I/O.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, Callable, Final

from ._codec import (
    BACKREF, BIGINT, BYTES8, BYTES32, COMPLEX, DEFAULT_LIMITS, DICT, ELLIPSIS, FALSE, FLOAT, FROZENSET,
    INT8, INT64, LIST, NONE, NOT_IMPLEMENTED, REF, REF_TYPED, SET, SLICE, STR8, STR32, TRUE, TUPLE8,
    TUPLE32, BackRef, BoxHook, Buffer, CodecLimits, Ref,
)
from ._errors import EncodeError

if TYPE_CHECKING:
    from ._shared import SharedCache

__all__ = ["ValueEncoder"]

_TAG_U8 = struct.Struct("<BB")
_TAG_U32 = struct.Struct("<BI")
_TAG_I8 = struct.Struct("<Bb")
_TAG_I64 = struct.Struct("<Bq")
_TAG_F64 = struct.Struct("<Bd")
_TAG_C128 = struct.Struct("<Bdd")
_TAG_REF = struct.Struct("<BQI")
_TAG_U64 = struct.Struct("<BQ")

_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1


def _no_box(value: object) -> Ref | BackRef:
    raise EncodeError(f"cannot encode a value of type {type(value).__qualname__!r} by value")


def _not_a_reference(boxed: object) -> EncodeError:
    return EncodeError(f"box hook returned {type(boxed).__qualname__}, not a reference")


class ValueEncoder:
    """Encodes values into a list of buffers (see :meth:`encode`).

    ``box`` turns anything that does not travel by value into a :class:`Ref`/:class:`BackRef`;
    without it such values raise :class:`EncodeError`. With ``containers_by_value`` plain
    ``list``/``dict``/``set`` objects are copied instead of boxed.
    """

    __slots__ = ("_box", "_limits", "_writers", "_buf", "_parts", "_shared")

    def __init__(
        self,
        box: BoxHook | None = None,
        limits: CodecLimits = DEFAULT_LIMITS,
        *,
        containers_by_value: bool = False,
        shared: SharedCache | None = None,
    ) -> None:
        # (returning object, not a reference: a hook that breaks its contract is our EncodeError, compiled or not)
        self._box: Callable[[object], object] = box or _no_box
        self._limits = limits
        self._buf = bytearray()
        self._parts: list[Buffer] = []
        self._writers: dict[type, _Writer] = _BY_VALUE_WRITERS if containers_by_value else _WRITERS
        # type descriptors encoded by any encoder sharing it (with these limits: its config's)
        self._shared = shared if shared is not None and shared.serves(limits) else None

    def encode(self, value: object) -> list[Buffer]:
        """Return ``value`` encoded as buffers meant to be written back to back."""
        self.start(bytearray())
        self.write(value)
        return self.finish()

    def start(self, buf: bytearray) -> None:
        """Begin an encoding that appends to ``buf`` (which may already hold a header)."""
        self._buf = buf
        self._parts = []

    def write(self, value: object, depth: int = 0) -> None:
        """Append ``value`` to the encoding under way."""
        try:
            writer = self._writers.get(type(value))
        except TypeError:  # an unhashable class (its metaclass has __eq__, no __hash__): boxed
            writer = None
        if writer is None:
            self._write_boxed(value, depth)
        else:
            writer(self, value, depth)

    def reference(self, value: object) -> object:
        """``value`` as :meth:`write` sees it: the box hook's reference (the value is lent)
        when it has no writer of its own, else the value itself."""
        try:
            writer = self._writers.get(type(value))
        except TypeError:  # (unhashable class: boxed, as write does)
            writer = None
        if writer is not None:
            return value
        boxed = self._box(value)
        if type(boxed) is not Ref and type(boxed) is not BackRef:
            raise _not_a_reference(boxed)
        return boxed

    def _write_boxed(self, value: object, depth: int) -> None:
        boxed = self._box(value)
        if type(boxed) is Ref:
            self._ref(boxed, depth)
        elif type(boxed) is BackRef:
            self._backref(boxed, depth)
        else:
            raise _not_a_reference(boxed)

    def finish(self) -> list[Buffer]:
        """Close the encoding under way and return its buffers."""
        parts = self._parts
        if self._buf:
            parts.append(self._buf)
        self._parts = []
        self._buf = bytearray()
        return parts

    # -- writers: one per type, each given (value, depth) -------------------------------

    def _str(self, value: str, depth: int) -> None:
        data = value.encode("utf-8", "surrogatepass")
        n = len(data)
        buf = self._buf
        buf += _TAG_U8.pack(STR8, n) if n < 256 else _TAG_U32.pack(STR32, n)
        buf += data

    def _int(self, value: int, depth: int) -> None:
        if -128 <= value < 128:
            self._buf += _TAG_I8.pack(INT8, value)
        elif _INT64_MIN <= value <= _INT64_MAX:
            self._buf += _TAG_I64.pack(INT64, value)
        else:
            # minimal two's complement: a negative v needs the bits of ~v plus a sign bit
            data = value.to_bytes(((value if value >= 0 else ~value).bit_length() + 8) // 8, "little", signed=True)
            self._buf += _TAG_U32.pack(BIGINT, len(data))
            self._buf += data

    def _bool(self, value: bool, depth: int) -> None:
        self._buf.append(TRUE if value else FALSE)

    def _singleton(self, value: object, depth: int) -> None:
        self._buf.append(NONE if value is None else ELLIPSIS if value is ... else NOT_IMPLEMENTED)

    def _float(self, value: float, depth: int) -> None:
        self._buf += _TAG_F64.pack(FLOAT, value)

    def _complex(self, value: complex, depth: int) -> None:
        self._buf += _TAG_C128.pack(COMPLEX, value.real, value.imag)

    def _bytes(self, value: bytes, depth: int) -> None:
        n = len(value)
        buf = self._buf
        if n < 256:
            buf += _TAG_U8.pack(BYTES8, n)
            buf += value
            return
        buf += _TAG_U32.pack(BYTES32, n)
        if n < self._limits.zero_copy_threshold:
            buf += value
            return
        self._parts.append(buf)
        self._parts.append(value)
        self._buf = bytearray()

    def _enter(self, n: int, depth: int) -> int:
        limits = self._limits
        if depth >= limits.max_depth:
            raise EncodeError(f"value nested deeper than {limits.max_depth} levels")
        if n > limits.max_items:
            raise EncodeError(f"container of {n} items exceeds the limit of {limits.max_items}")
        return depth + 1

    def start_tuple(self, n: int, depth: int) -> int:
        """Append the head of a tuple of ``n`` items at nesting ``depth``; return the depth of
        its items, which the caller then writes with :meth:`write` (as the tuple writer does)."""
        limits = self._limits
        depth = self._enter(n, depth) if depth >= limits.max_depth or n > limits.max_items else depth + 1
        self._buf += _TAG_U8.pack(TUPLE8, n) if n < 256 else _TAG_U32.pack(TUPLE32, n)
        return depth

    def _tuple(self, value: tuple[Any, ...], depth: int) -> None:
        depth = self.start_tuple(len(value), depth)
        buf = self._buf
        write = self.write
        for item in value:
            # The commonest items (call arguments, method names) are written inline, with the
            # same bytes their writers produce; a writer may start a new buffer, hence the reload.
            kind = type(item)
            if kind is str:
                data = item.encode("utf-8", "surrogatepass")
                if len(data) < 256:
                    buf += _TAG_U8.pack(STR8, len(data))
                    buf += data
                    continue
            elif kind is int:
                if -128 <= item < 128:
                    buf += _TAG_I8.pack(INT8, item)
                    continue
                if _INT64_MIN <= item <= _INT64_MAX:
                    buf += _TAG_I64.pack(INT64, item)
                    continue
            elif item is None:
                buf.append(NONE)
                continue
            write(item, depth)
            buf = self._buf

    def _container(self, value: frozenset[object] | list[object] | set[object], depth: int) -> None:
        if type(value) is not list and not all(map(_plain, value)):
            # Set elements must be hashed on arrival; a proxy would hash by a remote call
            # from inside the decoder. Such a set crosses as a reference instead.
            self._write_boxed(value, depth)
            return
        n = len(value)
        depth = self._enter(n, depth)
        self._buf += _TAG_U32.pack(_CONTAINER_TAGS[type(value)], n)
        write = self.write
        for item in value:
            write(item, depth)

    def _dict(self, value: dict[object, object], depth: int) -> None:
        if not all(map(_plain, value)):  # keys, as for set elements
            self._write_boxed(value, depth)
            return
        n = len(value)
        depth = self._enter(n, depth)
        self._buf += _TAG_U32.pack(DICT, n)
        write = self.write
        for key, item in value.items():
            write(key, depth)
            write(item, depth)

    def _slice(self, value: slice, depth: int) -> None:
        depth = self._enter(3, depth)
        self._buf.append(SLICE)
        self.write(value.start, depth)
        self.write(value.stop, depth)
        self.write(value.step, depth)

    def _ref(self, value: Ref, depth: int) -> None:
        try:
            header = _TAG_REF.pack(REF if value.info is None else REF_TYPED, value.oid, value.type_id)
        except struct.error:
            raise EncodeError("reference or type id out of range") from None
        self._buf += header
        info = value.info
        if info is None:
            return
        depth = self._enter(1, depth)
        shared = self._shared
        if shared is None:
            self.write(info, depth)
            return
        kept = shared.descriptor(info, depth)
        if kept is not None:  # (the bytes this same object encoded to, at this depth or deeper)
            self._buf += kept
            return
        buf, parts, start = self._buf, len(self._parts), len(self._buf)
        self.write(info, depth)
        if self._buf is buf and len(self._parts) == parts:  # (all in this buffer: no large bytes)
            shared.keep_descriptor(info, depth, bytes(buf[start:]))

    def _backref(self, value: BackRef, depth: int) -> None:
        try:
            self._buf += _TAG_U64.pack(BACKREF, value.oid)
        except struct.error:
            raise EncodeError("reference id out of range") from None


# The writer of each type that has one (the class's own functions: built once, not per encoder).
_Writer = Callable[[ValueEncoder, Any, int], None]
_WRITERS: Final[dict[type, _Writer]] = {
    str: ValueEncoder._str, int: ValueEncoder._int, bool: ValueEncoder._bool, tuple: ValueEncoder._tuple,
    bytes: ValueEncoder._bytes, float: ValueEncoder._float, Ref: ValueEncoder._ref,
    BackRef: ValueEncoder._backref, type(None): ValueEncoder._singleton, type(...): ValueEncoder._singleton,
    type(NotImplemented): ValueEncoder._singleton, complex: ValueEncoder._complex,
    slice: ValueEncoder._slice, frozenset: ValueEncoder._container,
}
_BY_VALUE_WRITERS: Final[dict[type, _Writer]] = {
    **_WRITERS, list: ValueEncoder._container, dict: ValueEncoder._dict, set: ValueEncoder._container,
}
_CONTAINER_TAGS: Final = {frozenset: FROZENSET, list: LIST, dict: DICT, set: SET}
# BackRef counts: the receiver hashes its own, local object. Ref does not (see _container).
_PLAIN_SCALARS: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, type(...), type(NotImplemented), BackRef}
)


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` can be hashed on arrival without a remote call (no Ref inside)."""
    kind = type(value)
    try:
        if kind in _PLAIN_SCALARS:
            return True
    except TypeError:  # (an unhashable class: not one of them)
        return False
    if (kind is tuple or kind is frozenset) and depth < DEFAULT_LIMITS.max_depth:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]  # tuple or frozenset
    return False

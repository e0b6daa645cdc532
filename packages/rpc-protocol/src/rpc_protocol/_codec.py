"""The value codec: Python values to bytes and back, safely.

Owns the tagged binary encoding of values (byte tables in ``docs/protocol.md``):
immutable builtins travel by value, plain containers by value only when the caller asks,
and everything else as a compact reference produced by the caller's ``box`` hook. Decoding
checks every length against the bytes actually present before allocating, bounds nesting
depth and container size, and raises only :class:`RemoteProtocolError`. It never imports
pickle or performs I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, Callable, Final, Union

from ._errors import EncodeError, RemoteProtocolError

__all__ = [
    "Buffer",
    "BackRef",
    "CodecLimits",
    "Ref",
    "ValueDecoder",
    "ValueEncoder",
]

Buffer = Union[bytes, bytearray, memoryview]


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to an object that lives on the *sending* side.

    ``type_id`` names the object's type within one connection; ``info`` carries that
    type's descriptor (an encodable value) the first time the type crosses, else None.
    """

    oid: int
    type_id: int = 0
    info: object = None


@dataclass(frozen=True, slots=True)
class BackRef:
    """A reference to an object that lives on the *receiving* side (a proxy sent home)."""

    oid: int


@dataclass(frozen=True, slots=True)
class CodecLimits:
    """Bounds applied when encoding and decoding values.

    ``zero_copy_threshold``: ``bytes`` values at least this long are handed to the I/O
    layer as separate buffers instead of being copied into the frame.
    """

    max_depth: int = 64
    max_items: int = 1 << 20
    zero_copy_threshold: int = 64 * 1024

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= 200:
            raise ValueError("max_depth must be between 1 and 200")
        if self.max_items < 0 or self.zero_copy_threshold < 1:
            raise ValueError("max_items must be >= 0 and zero_copy_threshold >= 1")


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

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I8 = struct.Struct("<b")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_REF = struct.Struct("<QI")
_U64 = struct.Struct("<Q")
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

BoxHook = Callable[[object], Union[Ref, BackRef]]
UnboxHook = Callable[[Union[Ref, BackRef]], object]


def _no_box(value: object) -> Ref | BackRef:
    raise EncodeError(f"cannot encode a value of type {type(value).__qualname__!r} by value")


class ValueEncoder:
    """Encodes values into a list of buffers (see :meth:`encode`).

    ``box`` turns anything that does not travel by value into a :class:`Ref`/:class:`BackRef`;
    without it such values raise :class:`EncodeError`. With ``containers_by_value`` plain
    ``list``/``dict``/``set`` objects are copied instead of boxed.
    """

    __slots__ = ("_box", "_limits", "_writers", "_buf", "_parts")

    def __init__(
        self,
        box: BoxHook | None = None,
        limits: CodecLimits = DEFAULT_LIMITS,
        *,
        containers_by_value: bool = False,
    ) -> None:
        self._box = box or _no_box
        self._limits = limits
        self._buf = bytearray()
        self._parts: list[Buffer] = []
        self._writers: dict[type, _Writer] = _BY_VALUE_WRITERS if containers_by_value else _WRITERS

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
        writer = self._writers.get(type(value))
        if writer is None:
            self._write_boxed(value, depth)
        else:
            writer(self, value, depth)

    def _write_boxed(self, value: object, depth: int) -> None:
        boxed = self._box(value)
        if type(boxed) is Ref:
            self._ref(boxed, depth)
        elif type(boxed) is BackRef:
            self._backref(boxed, depth)
        else:
            raise EncodeError(f"box hook returned {type(boxed).__qualname__}, not a reference")

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

    def _tuple(self, value: tuple[Any, ...], depth: int) -> None:
        n = len(value)
        limits = self._limits
        depth = self._enter(n, depth) if depth >= limits.max_depth or n > limits.max_items else depth + 1
        buf = self._buf
        buf += _TAG_U8.pack(TUPLE8, n) if n < 256 else _TAG_U32.pack(TUPLE32, n)
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
        if value.info is not None:
            self.write(value.info, self._enter(1, depth))

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
_BY_VALUE_WRITERS: Final[dict[type, _Writer]] = {**_WRITERS, list: ValueEncoder._container, dict: ValueEncoder._dict, set: ValueEncoder._container}
_CONTAINER_TAGS: Final = {frozenset: FROZENSET, list: LIST, dict: DICT, set: SET}
# BackRef counts: the receiver hashes its own, local object. Ref does not (see _container).
_PLAIN_SCALARS: Final = frozenset(
    {type(None), bool, int, float, complex, str, bytes, type(...), type(NotImplemented), BackRef}
)


def _plain(value: object, depth: int = 0) -> bool:
    """Whether ``value`` can be hashed on arrival without a remote call (no Ref inside)."""
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if (kind is tuple or kind is frozenset) and depth < DEFAULT_LIMITS.max_depth:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]  # tuple or frozenset
    return False


class _HookFailed(Exception):
    """Carries an exception raised by the unbox hook through the decoder's guard."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _identity(ref: Ref | BackRef) -> object:
    return ref


class ValueDecoder:
    """Decodes values from a buffer, raising only :class:`RemoteProtocolError` on bad input.

    ``unbox`` turns each decoded :class:`Ref`/:class:`BackRef` into a local object (a proxy,
    or the original object); by default the references themselves are returned.
    """

    __slots__ = ("_unbox", "_limits", "_readers", "_hashed")

    def __init__(self, unbox: UnboxHook | None = None, limits: CodecLimits = DEFAULT_LIMITS) -> None:
        self._unbox = unbox or _identity
        self._limits = limits
        self._readers = _READERS
        self._hashed = 0  # > 0 while reading a set element or dict key

    def decode(self, data: Buffer) -> object:
        """Decode exactly one value that must fill ``data`` completely."""
        view = memoryview(data)
        values, pos = self.decode_values(view, 0, len(view), 1)
        if pos != len(view):
            raise RemoteProtocolError(f"{len(view) - pos} trailing bytes after a value")
        return values[0]

    def decode_from(self, view: memoryview, pos: int, end: int) -> tuple[object, int]:
        """Decode one value from ``view[pos:end]``; return it and the position after it."""
        values, pos = self.decode_values(view, pos, end, 1)
        return values[0], pos

    def decode_values(self, view: memoryview, pos: int, end: int, count: int) -> tuple[list[object], int]:
        """Decode ``count`` values that follow each other from ``view[pos:end]``; return
        them and the position after the last."""
        self._hashed = 0
        try:
            return self._values(view, pos, end, 0, count)
        except RemoteProtocolError:
            raise
        except _HookFailed as failed:
            raise failed.error from None
        except (struct.error, IndexError, ValueError, TypeError, OverflowError) as exc:
            # TypeError: an unhashable item in a frozenset, set or dict key
            raise RemoteProtocolError(f"malformed value: {exc}") from None
        except (RecursionError, MemoryError):
            raise RemoteProtocolError("value too deep or too large to decode") from None

    # -- readers: view[pos - 1] was the tag; each returns (value, position after it) ----

    def _read(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        if pos >= end:
            raise RemoteProtocolError("value truncated")
        reader = self._readers[view[pos]]
        if reader is None:
            raise RemoteProtocolError(f"unknown value tag 0x{view[pos]:02x}")
        return reader(self, view, pos + 1, end, depth)

    def _none(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return None, pos

    def _false(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return False, pos

    def _true(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return True, pos

    def _ellipsis(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return ..., pos

    def _not_implemented(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return NotImplemented, pos

    def _int8(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return _I8.unpack_from(view, pos)[0], _need(pos, 1, end)

    def _int64(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        stop = _need(pos, 8, end)
        return _I64.unpack_from(view, pos)[0], stop

    def _bigint(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        start, stop = _sized(view, pos, end, _U32)
        return int.from_bytes(view[start:stop], "little", signed=True), stop

    def _float(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        stop = _need(pos, 8, end)
        return _F64.unpack_from(view, pos)[0], stop

    def _complex(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        stop = _need(pos, 16, end)
        real, imag = _C128.unpack_from(view, pos)
        return complex(real, imag), stop

    def _str8(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        start, stop = _sized(view, pos, end, _U8)
        return str(view[start:stop], "utf-8", "surrogatepass"), stop

    def _str32(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        start, stop = _sized(view, pos, end, _U32)
        return str(view[start:stop], "utf-8", "surrogatepass"), stop

    def _bytes8(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        start, stop = _sized(view, pos, end, _U8)
        return bytes(view[start:stop]), stop

    def _bytes32(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        start, stop = _sized(view, pos, end, _U32)
        return bytes(view[start:stop]), stop

    def _items(
        self, view: memoryview, pos: int, end: int, depth: int, count: struct.Struct, per_item: int = 1
    ) -> tuple[list[object], int]:
        """Read an item count, then that many values (``per_item`` values per item)."""
        n, start = self._count(view, pos, end, depth, count, per_item)
        return self._values(view, start, end, depth + 1, n * per_item)

    def _count(self, view: memoryview, pos: int, end: int, depth: int, count: struct.Struct, per_item: int) -> tuple[int, int]:
        """Read and check an item count; return it and the position after it."""
        if depth >= self._limits.max_depth:
            raise RemoteProtocolError(f"value nested deeper than {self._limits.max_depth} levels")
        start = _need(pos, count.size, end)
        n: int = count.unpack_from(view, pos)[0]
        if n > self._limits.max_items:
            raise RemoteProtocolError(f"container of {n} items exceeds the limit of {self._limits.max_items}")
        if n * per_item > end - start:  # every value takes at least one byte
            raise RemoteProtocolError("container truncated")
        return n, start

    def _values(self, view: memoryview, pos: int, end: int, depth: int, n: int) -> tuple[list[object], int]:
        readers = self._readers
        items: list[object] = []
        append = items.append
        for _ in range(n):
            if pos >= end:
                raise RemoteProtocolError("value truncated")
            tag = view[pos]
            # The commonest values are read inline, exactly as their readers would.
            if tag == STR8:
                stop = pos + 2 + view[pos + 1]
                if stop > end:
                    raise RemoteProtocolError("value truncated")
                append(str(view[pos + 2 : stop], "utf-8", "surrogatepass"))
                pos = stop
            elif tag == INT8:
                if pos + 2 > end:
                    raise RemoteProtocolError("value truncated")
                append(_I8.unpack_from(view, pos + 1)[0])
                pos += 2
            elif tag == INT64:
                if pos + 9 > end:
                    raise RemoteProtocolError("value truncated")
                append(_I64.unpack_from(view, pos + 1)[0])
                pos += 9
            elif tag == NONE:
                append(None)
                pos += 1
            elif tag == TUPLE8:  # as _tuple8 and _count would
                if depth >= self._limits.max_depth:
                    raise RemoteProtocolError(f"value nested deeper than {self._limits.max_depth} levels")
                count = view[pos + 1]
                if count > self._limits.max_items:
                    raise RemoteProtocolError(f"container of {count} items exceeds the limit of {self._limits.max_items}")
                if count > end - pos - 2:  # every value takes at least one byte
                    raise RemoteProtocolError("container truncated")
                inner, pos = self._values(view, pos + 2, end, depth + 1, count)
                append(tuple(inner))
            elif tag == BACKREF:
                if pos + 9 > end:
                    raise RemoteProtocolError("value truncated")
                append(self._unboxed(BackRef(_U64.unpack_from(view, pos + 1)[0])))
                pos += 9
            else:
                reader = readers[tag]
                if reader is None:
                    raise RemoteProtocolError(f"unknown value tag 0x{tag:02x}")
                item, pos = reader(self, view, pos + 1, end, depth)
                append(item)
        return items, pos

    def _tuple8(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        items, pos = self._items(view, pos, end, depth, _U8)
        return tuple(items), pos

    def _tuple32(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        items, pos = self._items(view, pos, end, depth, _U32)
        return tuple(items), pos

    def _frozenset(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._hashed += 1
        items, pos = self._items(view, pos, end, depth, _U32)
        self._hashed -= 1
        _check_collisions(items)
        return frozenset(items), pos

    def _list(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return self._items(view, pos, end, depth, _U32)

    def _set(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._hashed += 1
        items, pos = self._items(view, pos, end, depth, _U32)
        self._hashed -= 1
        _check_collisions(items)
        return set(items), pos

    def _dict(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        n, pos = self._count(view, pos, end, depth, _U32, 2)
        depth += 1
        read = self._read
        keys: list[object] = []
        values: list[object] = []
        for _ in range(n):
            self._hashed += 1
            key, pos = read(view, pos, end, depth)
            self._hashed -= 1
            keys.append(key)
            value, pos = read(view, pos, end, depth)
            values.append(value)
        _check_collisions(keys)
        return dict(zip(keys, values)), pos

    def _slice(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        if depth >= self._limits.max_depth:
            raise RemoteProtocolError(f"value nested deeper than {self._limits.max_depth} levels")
        items, pos = self._values(view, pos, end, depth + 1, 3)
        return slice(items[0], items[1], items[2]), pos

    def _unboxed(self, ref: Ref | BackRef) -> object:
        try:
            return self._unbox(ref)
        except Exception as exc:
            raise _HookFailed(exc) from exc

    def _no_hashed_refs(self) -> None:
        if self._hashed:
            raise RemoteProtocolError("a reference to a remote object cannot be a set element or dict key")

    def _ref(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._no_hashed_refs()
        stop = _need(pos, 12, end)
        oid, type_id = _REF.unpack_from(view, pos)
        return self._unboxed(Ref(oid, type_id)), stop

    def _ref_typed(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._no_hashed_refs()
        stop = _need(pos, 12, end)
        oid, type_id = _REF.unpack_from(view, pos)
        if depth >= self._limits.max_depth:
            raise RemoteProtocolError(f"value nested deeper than {self._limits.max_depth} levels")
        info, stop = self._read(view, stop, end, depth + 1)
        if info is None:
            raise RemoteProtocolError("typed reference without a type descriptor")
        return self._unboxed(Ref(oid, type_id, info)), stop

    def _backref(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        stop = _need(pos, 8, end)
        return self._unboxed(BackRef(_U64.unpack_from(view, pos)[0])), stop


_Reader = Callable[[ValueDecoder, memoryview, int, int, int], tuple[object, int]]


def _reader_table() -> tuple[_Reader | None, ...]:
    readers: list[_Reader | None] = [None] * 256
    for tag, reader in (
        (NONE, ValueDecoder._none), (FALSE, ValueDecoder._false), (TRUE, ValueDecoder._true),
        (ELLIPSIS, ValueDecoder._ellipsis), (NOT_IMPLEMENTED, ValueDecoder._not_implemented),
        (INT8, ValueDecoder._int8), (INT64, ValueDecoder._int64), (BIGINT, ValueDecoder._bigint),
        (FLOAT, ValueDecoder._float), (COMPLEX, ValueDecoder._complex),
        (STR8, ValueDecoder._str8), (STR32, ValueDecoder._str32),
        (BYTES8, ValueDecoder._bytes8), (BYTES32, ValueDecoder._bytes32),
        (TUPLE8, ValueDecoder._tuple8), (TUPLE32, ValueDecoder._tuple32), (FROZENSET, ValueDecoder._frozenset),
        (SLICE, ValueDecoder._slice), (LIST, ValueDecoder._list), (DICT, ValueDecoder._dict), (SET, ValueDecoder._set),
        (REF, ValueDecoder._ref), (REF_TYPED, ValueDecoder._ref_typed), (BACKREF, ValueDecoder._backref),
    ):
        readers[tag] = reader
    return tuple(readers)


# The reader of each tag, indexed by the tag byte (the class's own functions: built once).
_READERS: Final = _reader_table()

# Set elements or dict keys of one container that may share their hash with another one.
# int, float and tuple hashes are not randomised, so a peer can send thousands of distinct
# values that hash alike; inserting n of them costs O(n²) comparisons, all under the GIL
# (40 000 froze every thread of the process for ~15 s). Real data never comes close.
_MAX_COLLISIONS: Final = 256


def _check_collisions(keys: list[object]) -> None:
    if len(keys) > _MAX_COLLISIONS and len(keys) - len(set(map(hash, keys))) > _MAX_COLLISIONS:
        raise RemoteProtocolError(f"more than {_MAX_COLLISIONS} set elements or dict keys share a hash (hash flooding)")


def _need(pos: int, n: int, end: int) -> int:
    """Return ``pos + n``, or raise if that runs past ``end``."""
    stop = pos + n
    if stop > end:
        raise RemoteProtocolError("value truncated")
    return stop


def _sized(view: memoryview, pos: int, end: int, length: struct.Struct) -> tuple[int, int]:
    """Read a length at ``pos``; return (start, stop) of the bytes it announces."""
    start = _need(pos, length.size, end)
    n: int = length.unpack_from(view, pos)[0]
    return start, _need(start, n, end)

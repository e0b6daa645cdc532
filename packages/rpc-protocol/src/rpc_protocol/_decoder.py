"""The value decoder: the tagged bytes of ``docs/protocol.md`` §6 back to Python values.

Owns :class:`ValueDecoder`: one reader per tag, references turned into objects by the
caller's ``unbox`` hook. Decoding checks every length against the bytes actually present
before allocating, bounds nesting depth, container size and shared hashes, charges every
container it builds against the frame's budget (a small constant factor of the frame's size,
``CodecLimits.decode_budget_*``), and raises only
:class:`RemoteProtocolError` (or what the hook raised). It never imports pickle or performs I/O.
"""

from __future__ import annotations

import struct
from typing import Callable, Final, Iterable

from ._codec import (
    BACKREF, BIGINT, BYTES8, BYTES32, COMPLEX, COST_DICT, COST_LIST, COST_SET, COST_SLICE, COST_TUPLE, DEFAULT_LIMITS, DICT, ELLIPSIS, FALSE, FLOAT, FROZENSET,
    INT8, INT64, LIST, NONE, NOT_IMPLEMENTED, REF, REF_TYPED, SET, SLICE, STR8, STR32, TRUE, TUPLE8,
    TUPLE32, BackRef, Buffer, CodecLimits, Ref, UnboxHook,
)
from ._errors import RemoteProtocolError
from ._shared import SharedCache

__all__ = ["ValueDecoder"]

_U8 = struct.Struct("<B")
_U32 = struct.Struct("<I")
_I8 = struct.Struct("<b")
_I64 = struct.Struct("<q")
_F64 = struct.Struct("<d")
_C128 = struct.Struct("<dd")
_REF = struct.Struct("<QI")
_U64 = struct.Struct("<Q")


class _HookFailed(Exception):
    """Carries an exception raised by the unbox hook through the decoder's guard."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


def _identity(ref: Ref | BackRef) -> object:
    return ref


def trailing_bytes(count: int) -> RemoteProtocolError:
    """The error for ``count`` bytes left after a value that should have filled its buffer."""
    return RemoteProtocolError(f"{count} trailing bytes after a value")


class ValueDecoder:
    """Decodes values from a buffer, raising only :class:`RemoteProtocolError` on bad input.

    ``unbox`` turns each decoded :class:`Ref`/:class:`BackRef` into a local object (a proxy,
    or the original object); by default the references themselves are returned.
    ``unbox_backref``, if given, takes a BackRef's object id instead of ``unbox`` (the
    commonest reference, the target of every request, then needs no BackRef object).
    """

    __slots__ = (
        "_unbox", "_unbox_backref", "_limits", "_readers", "_hashed", "_budget", "_budget_base", "_budget_factor", "_calls", "_calls_kept", "_refs"
    )

    def __init__(
        self,
        unbox: UnboxHook | None = None,
        limits: CodecLimits = DEFAULT_LIMITS,
        unbox_backref: Callable[[int], object] | None = None,
        *,
        shared: SharedCache | None = None,
    ) -> None:
        self._unbox = unbox or _identity
        self._unbox_backref = unbox_backref or self._backref_unboxed
        self._limits = limits
        self._readers = _READERS
        self._hashed = 0  # > 0 while reading a set element or dict key
        self._budget = 0  # bytes the containers of the value being decoded may still cost
        self._budget_base = limits.decode_budget_base
        self._budget_factor = limits.decode_budget_factor
        # (decode_call) the bodies of calls seen lately: this decoder's own, or those of every
        # decoder sharing ``shared`` (made with these limits: its config's)
        if shared is not None and shared.serves(limits):
            self._calls, self._calls_kept = shared.calls, _SHARED_CALLS_KEPT
        else:
            self._calls, self._calls_kept = {}, _CALLS_KEPT
        self._refs = 0  # references given to the hooks (decode_call: the target's alone)

    def decode(self, data: Buffer) -> object:
        """Decode exactly one value that must fill ``data`` completely."""
        view = memoryview(data)
        values, pos = self.decode_values(view, 0, len(view), 1)
        if pos != len(view):
            raise trailing_bytes(len(view) - pos)
        return values[0]

    def decode_from(self, view: memoryview, pos: int, end: int) -> tuple[object, int]:
        """Decode one value from ``view[pos:end]``; return it and the position after it."""
        values, pos = self.decode_values(view, pos, end, 1)
        return values[0], pos

    def decode_values(self, view: memoryview, pos: int, end: int, count: int) -> tuple[list[object], int]:
        """Decode ``count`` values that follow each other from ``view[pos:end]``; return
        them and the position after the last."""
        self._hashed = 0
        self._budget = self._budget_base + self._budget_factor * (end - pos)
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

    @property
    def limits(self) -> CodecLimits:
        """The limits this decoder enforces."""
        return self._limits

    def unboxed(self, ref: object) -> object:
        """What decoding ``ref`` (a :class:`Ref`, a :class:`BackRef` or a plain value, as a
        decoder with no hooks returns it) gives: the hooks' object, or the value itself."""
        if type(ref) is Ref:
            return self._unbox(ref)
        if type(ref) is BackRef:
            return self._unbox_backref(ref.oid)
        return ref

    def decode_call(self, view: memoryview, pos: int, end: int) -> tuple[object, object, object]:
        """The three values of a request's body at ``view[pos:end]``: its target, its
        arguments and its flattened keywords (as ``decode_values(view, pos, end, 3)``; they
        must fill it).

        A body seen lately whose target is a BACKREF and whose arguments and keywords are
        scalars, none of them a reference (a method called again with the same arguments),
        is not decoded again: its values are kept, by the body's bytes, and only the target is
        looked up anew (the ``unbox_backref`` hook, so a released target is refused as before).
        """
        body = None
        if end - pos <= _MAX_CALL_KEPT and view[pos] == BACKREF:
            body = bytes(view[pos:end])
            kept = self._calls.get(body)
            if kept is not None:
                return self._unbox_backref(kept[0]), kept[1], kept[2]
        self._refs = 0
        (target, args, flat), stop = self.decode_values(view, pos, end, 3)
        if stop != end:
            raise trailing_bytes(end - stop)
        if body is not None and self._refs == 1 and type(args) is tuple and type(flat) is tuple and _scalars(args) and _scalars(flat):
            calls = self._calls
            if len(calls) >= self._calls_kept:
                calls.clear()
            calls[body] = (_U64.unpack_from(view, pos + 1)[0], args, flat)
        return target, args, flat

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
        self, view: memoryview, pos: int, end: int, depth: int, count: struct.Struct, cost: tuple[int, int], per_item: int = 1
    ) -> tuple[list[object], int]:
        """Read an item count, then that many values (``per_item`` values per item)."""
        n, start = self._count(view, pos, end, depth, count, cost, per_item)
        return self._values(view, start, end, depth + 1, n * per_item)

    def _count(
        self, view: memoryview, pos: int, end: int, depth: int, count: struct.Struct, cost: tuple[int, int], per_item: int
    ) -> tuple[int, int]:
        """Read and check an item count, charge the container's ``cost``; return the count
        and the position after it."""
        if depth >= self._limits.max_depth:
            raise RemoteProtocolError(f"value nested deeper than {self._limits.max_depth} levels")
        start = _need(pos, count.size, end)
        n: int = count.unpack_from(view, pos)[0]
        if n > self._limits.max_items:
            raise RemoteProtocolError(f"container of {n} items exceeds the limit of {self._limits.max_items}")
        if n * per_item > end - start:  # every value takes at least one byte
            raise RemoteProtocolError("container truncated")
        if n or cost is not COST_TUPLE:  # (the empty tuple is a shared singleton: free)
            self._charge(cost[0] + cost[1] * n)
        return n, start

    def _charge(self, cost: int) -> None:
        budget = self._budget - cost
        if budget < 0:
            raise _over_budget(self._limits)
        self._budget = budget

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
                if count:  # COST_TUPLE, as _count would charge
                    budget = self._budget - 40 - 8 * count
                    if budget < 0:
                        raise _over_budget(self._limits)
                    self._budget = budget
                    inner, pos = self._values(view, pos + 2, end, depth + 1, count)
                    append(tuple(inner))
                else:  # (no arguments, no keywords: the commonest tuple)
                    append(())
                    pos += 2
            elif tag == BACKREF:
                if pos + 9 > end:
                    raise RemoteProtocolError("value truncated")
                self._refs += 1
                try:  # (_unboxed, inlined)
                    append(self._unbox_backref(_U64.unpack_from(view, pos + 1)[0]))
                except Exception as exc:
                    raise _HookFailed(exc) from exc
                pos += 9
            elif tag == REF:  # as _ref would
                self._no_hashed_refs()
                if pos + 13 > end:
                    raise RemoteProtocolError("value truncated")
                oid, type_id = _REF.unpack_from(view, pos + 1)
                append(self._unboxed(Ref(oid, type_id)))
                pos += 13
            else:
                reader = readers[tag]
                if reader is None:
                    raise RemoteProtocolError(f"unknown value tag 0x{tag:02x}")
                item, pos = reader(self, view, pos + 1, end, depth)
                append(item)
        return items, pos

    def _tuple8(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        items, pos = self._items(view, pos, end, depth, _U8, COST_TUPLE)
        return tuple(items), pos

    def _tuple32(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        items, pos = self._items(view, pos, end, depth, _U32, COST_TUPLE)
        return tuple(items), pos

    def _frozenset(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._hashed += 1
        items, pos = self._items(view, pos, end, depth, _U32, COST_SET)
        self._hashed -= 1
        _check_collisions(items)
        return frozenset(items), pos

    def _list(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        return self._items(view, pos, end, depth, _U32, COST_LIST)

    def _set(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        self._hashed += 1
        items, pos = self._items(view, pos, end, depth, _U32, COST_SET)
        self._hashed -= 1
        _check_collisions(items)
        return set(items), pos

    def _dict(self, view: memoryview, pos: int, end: int, depth: int) -> tuple[object, int]:
        n, pos = self._count(view, pos, end, depth, _U32, COST_DICT, 2)
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
        self._charge(COST_SLICE[0])
        items, pos = self._values(view, pos, end, depth + 1, 3)
        return slice(items[0], items[1], items[2]), pos

    def _unboxed(self, ref: Ref | BackRef) -> object:
        self._refs += 1
        try:
            return self._unbox(ref)
        except Exception as exc:
            raise _HookFailed(exc) from exc

    def _backref_unboxed(self, oid: int) -> object:
        return self._unbox(BackRef(oid))

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
        self._refs += 1
        try:
            return self._unbox_backref(_U64.unpack_from(view, pos)[0]), stop
        except Exception as exc:
            raise _HookFailed(exc) from exc


#: Request bodies kept by ``decode_call``: how many, and how long each may be (bytes).
_CALLS_KEPT: Final = 32
_SHARED_CALLS_KEPT: Final = 256  # (kept for every connection sharing a SharedCache)
_MAX_CALL_KEPT: Final = 128
_SCALAR_TYPES: Final = frozenset({str, int, float, bool, bytes, type(None)})


def _scalars(values: tuple[object, ...]) -> bool:
    for value in values:
        if type(value) not in _SCALAR_TYPES:
            return False
    return True


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
# And what comparing the keys that share a hash may cost: keys per shared hash, squared,
# times the size of the largest (items inside, and 64-bit digits of big ints: what one
# comparison walks). 256 colliding keys of 30 000-item tuples in a 15 MB frame froze every
# thread for ~6 s under the count limit alone; this bound is ~10 ms of comparisons.
_MAX_COLLISION_WORK: Final = 1 << 22


def _check_collisions(keys: list[object]) -> None:
    count = len(keys)
    if count < 2:
        return
    hashes = list(map(hash, keys))
    distinct = len(set(hashes))
    if distinct == count:  # (the common case: no hash shared)
        return
    if count - distinct > _MAX_COLLISIONS:
        raise RemoteProtocolError(f"more than {_MAX_COLLISIONS} set elements or dict keys share a hash (hash flooding)")
    groups: dict[int, list[object]] = {}
    for key_hash, key in zip(hashes, keys):
        groups.setdefault(key_hash, []).append(key)
    work = 0
    for group in groups.values():
        if len(group) > 1:
            work += len(group) * len(group) * max(_comparison_size(key) for key in group)
            if work > _MAX_COLLISION_WORK:
                raise RemoteProtocolError("set elements or dict keys that share a hash would cost too much to compare (hash flooding)")


def _comparison_size(value: object) -> int:
    """How much comparing ``value`` with an equal-hashed one may walk: its items, nested,
    and a big int's 64-bit digits (counted up to the whole work bound, no further)."""
    size = 0
    stack = [value]
    while stack and size <= _MAX_COLLISION_WORK:
        item = stack.pop()
        size += 1
        kind = type(item)
        if kind is tuple or kind is frozenset:
            stack.extend(item)  # type: ignore[arg-type]  # a tuple or frozenset
        elif kind is int:
            size += item.bit_length() >> 6  # type: ignore[attr-defined]  # an int
    return size


def check_hash_collisions(keys: Iterable[object]) -> None:
    """The decoder's hash-flooding guard, for code that builds a set or dict from a peer's
    values outside the decoder: raises :class:`RemoteProtocolError` when more than 256 of
    ``keys`` share their hash with another, or when comparing those would cost too much
    (``TypeError`` for an unhashable one)."""
    _check_collisions(list(keys))


def _over_budget(limits: CodecLimits) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"the value would cost more than {limits.decode_budget_factor} times its encoded size "
        f"(+{limits.decode_budget_base} bytes) to build (decode budget)"
    )


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

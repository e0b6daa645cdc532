"""Boxing: turning objects into wire references and references back into objects.

Owns the two tables of a connection: the local objects lent to the peer (each with the
number of references sent, so an object lives exactly as long as the peer holds a proxy)
and the proxies of the peer's objects (one live proxy per remote object, with the number
of references received, released in batches once the proxy is garbage). Also assigns
per-connection type ids and sends each type's descriptor once. It does no I/O: releases
are queued here and sent by the connection with its next frame.
"""

from __future__ import annotations

import threading
import weakref
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

import rpc_protocol as wire
from rpc_protocol import BackRef, RemoteProtocolError, Ref

from ._errors import LentObjectsLimitError
from ._exposure import Exposure
from ._proxy import Proxy, descriptor_members, make_proxy_class

if TYPE_CHECKING:
    from ._connection import Connection

__all__ = ["Boxer", "release_frames"]

# Types the peer may describe on one connection. Each costs a proxy class, kept for the
# connection's life; without a bound a peer could make us build one per 30-byte REF_TYPED.
_MAX_PEER_TYPES = 4096
# Members (methods and special methods) of all the proxy classes the peer's descriptors gave
# one connection: each costs a function (~0.5 KiB), so this bounds a connection's classes to
# ~16 MiB whatever the peer describes (a descriptor alone is bounded in _proxy).
_MAX_PEER_MEMBERS = 32768


class Boxer:
    """The box/unbox hooks of one connection, with the tables behind them."""

    def __init__(
        self, conn: Connection, exposure: Exposure, make_class: Callable[[object], type[Proxy]] = make_proxy_class
    ) -> None:
        self._conn = conn
        self._make_class = make_class  # the asyncio driver makes its own proxy classes
        self._exposure = exposure
        self._lock = threading.Lock()
        # local objects lent to the peer: oid -> [object, references sent]
        self._objects: dict[int, list[Any]] = {}
        self._oid_of: dict[int, int] = {}  # id(object) -> oid, while lent
        self._next_oid = 1
        self._max_lent = conn.config.max_lent_objects
        self._max_proxies = conn.config.max_proxies
        self._type_ids: dict[type, int] = {}
        # what the frame being encoded added, to undo if encoding fails
        self._lent_now: list[int] = []
        self._typed_now: list[type] = []
        # the peer's objects held here: oid -> [weakref to proxy, references received]
        self._proxies: dict[int, list[Any]] = {}
        self._proxy_classes: dict[int, type[Proxy]] = {}
        self._peer_members = 0  # members of the classes in _proxy_classes
        self.releases_owed: deque[tuple[int, int]] = deque()  # (oid, count), appended from any thread

    # -- sending side ------------------------------------------------------------------

    def box(self, obj: object) -> Ref | BackRef:
        if isinstance(obj, Proxy) and obj._rpc_conn is self._conn:
            return obj._rpc_ref
        lock = self._lock  # (acquire/release: a with-statement makes two bound methods per lend)
        lock.acquire()
        try:
            oid = self._oid_of.get(id(obj))
            if oid is None:
                if len(self._objects) >= self._max_lent:
                    raise LentObjectsLimitError(
                        f"the peer already holds {len(self._objects)} objects of this side, the limit "
                        f"(max_lent_objects={self._max_lent}); it must release some before more are lent"
                    )
                oid = self._next_oid
                self._next_oid += 1
                self._objects[oid] = [obj, 1]
                self._oid_of[id(obj)] = oid
            else:
                self._objects[oid][1] += 1
            self._lent_now.append(oid)
            cls = type(obj)
            try:
                type_id = self._type_ids.get(cls)
            except TypeError:  # (its metaclass defines __eq__ without __hash__; rolled back by the sender)
                raise wire.EncodeError(f"cannot lend an instance of {cls.__qualname__!r}: its class is unhashable") from None
            if type_id is not None:
                return Ref(oid, type_id)
            type_id = self._type_ids[cls] = len(self._type_ids) + 1
            self._typed_now.append(cls)
        finally:
            lock.release()
        return Ref(oid, type_id, self._exposure.describe(cls))

    def commit(self) -> None:
        """The frame being encoded went out: keep what it lent."""
        self._lent_now.clear()
        self._typed_now.clear()

    def rollback(self) -> None:
        """The frame being encoded failed: forget what it lent and which types it described."""
        with self._lock:
            for cls in self._typed_now:
                del self._type_ids[cls]
        self._typed_now.clear()
        lent, self._lent_now = self._lent_now, []
        for oid in lent:
            self.release(oid, 1)

    def local(self, oid: int) -> object:
        entry = self._objects.get(oid)
        if entry is None:
            raise RemoteProtocolError(f"the peer referred to object #{oid}, which is not lent to it")
        return entry[0]

    def release(self, oid: int, count: int) -> object:
        """The peer dropped ``count`` references to object ``oid``; returns the object when
        this was its last reference (so the caller decides where it is finalised), else None."""
        lock = self._lock  # (acquire/release: as in box)
        lock.acquire()
        try:
            entry = self._objects.get(oid)
            if entry is None:
                return None
            entry[1] -= count
            if entry[1] <= 0:
                del self._objects[oid]
                del self._oid_of[id(entry[0])]
                return entry[0]
            return None
        finally:
            lock.release()

    @property
    def lent(self) -> int:
        """How many distinct local objects the peer currently holds."""
        return len(self._objects)

    # -- receiving side ----------------------------------------------------------------

    def unbox(self, ref: Ref | BackRef) -> object:
        if type(ref) is BackRef:
            return self.local(ref.oid)
        assert type(ref) is Ref
        cls = self._proxy_classes.get(ref.type_id)
        if cls is None:
            if ref.info is None:
                raise RemoteProtocolError(f"reference to an object of unknown type #{ref.type_id}")
            if len(self._proxy_classes) >= _MAX_PEER_TYPES:
                raise RemoteProtocolError(f"the peer described more than {_MAX_PEER_TYPES} types")
            cls = self._make_class(ref.info)
            self._peer_members += descriptor_members(ref.info)
            if self._peer_members > _MAX_PEER_MEMBERS:
                raise RemoteProtocolError(f"the peer described types with more than {_MAX_PEER_MEMBERS} members in all")
            self._proxy_classes[ref.type_id] = cls
        entry = self._proxies.get(ref.oid)
        proxy = entry[0]() if entry is not None else None
        if proxy is not None:
            entry[1] += 1  # type: ignore[index]  # entry is set when proxy is
            return proxy
        if len(self._proxies) >= self._max_proxies:  # (an honest peer stops at its max_lent_objects)
            raise RemoteProtocolError(
                f"the peer sent references to more than {self._max_proxies} distinct objects of its own "
                f"held here at once (max_proxies={self._max_proxies})"
            )
        proxy = object.__new__(cls)
        object.__setattr__(proxy, "_rpc_conn", self._conn)
        object.__setattr__(proxy, "_rpc_oid", ref.oid)
        object.__setattr__(proxy, "_rpc_ref", BackRef(ref.oid))
        entry = [None, 1]
        entry[0] = weakref.ref(proxy, partial(self._proxy_died, ref.oid, entry))
        self._proxies[ref.oid] = entry
        return proxy

    def _proxy_died(self, oid: int, entry: list[Any], _ref: object) -> None:
        # Runs wherever the proxy became garbage: only atomic list/dict operations here.
        if self._proxies.get(oid) is entry:
            self._proxies.pop(oid, None)
        self.releases_owed.append((oid, entry[1]))

    def take_releases(self) -> tuple[tuple[int, int], ...]:
        """The queued releases, now owed to the peer."""
        queued = self.releases_owed
        if not queued:
            return ()
        releases = []
        while queued:
            try:
                releases.append(queued.popleft())
            except IndexError:  # emptied meanwhile (only this thread pops; defensive)
                break
        return tuple(releases)

    @property
    def held(self) -> int:
        """How many distinct remote objects are held here through live proxies."""
        return len(self._proxies)

    def clear(self) -> None:
        with self._lock:
            self._objects.clear()
            self._oid_of.clear()
        self._proxies.clear()
        self._proxy_classes.clear()
        self.releases_owed.clear()


def release_frames(proto: wire.Connection, releases: tuple[tuple[int, int], ...]) -> list[wire.Buffer]:
    """The RELEASE frames of ``releases`` (taken from a Boxer), as many as the peer's frame
    limit needs (each entry is 12 bytes after a 4-byte count, docs/protocol.md §4)."""
    hello = proto.peer_hello
    per_frame = ((hello.max_frame_size if hello else 1024) - 4) // 12
    if len(releases) <= per_frame:
        return proto.send_release(releases)
    buffers: list[wire.Buffer] = []
    for start in range(0, len(releases), per_frame):
        buffers += proto.send_release(releases[start : start + per_frame])
    return buffers

"""What connections made alike may share: what setting a connection up and its first calls decode and encode.

Owns :class:`SharedCache`. Every connection to one server receives the same preface and
Hello (the same services, the same root described the same way) and sends the same Hello
back; every client of one kind does the same on its side; the type descriptors a side sends,
the first bytes of a call of each method and the bodies of common calls are the same on
each connection. Decoding and checking those bytes, and encoding those values, once rather
than once per connection is most of what setting a connection up would otherwise cost in the
protocol. The cache is made and owned by the caller, who passes it to each
:class:`Connection` made with the same config; this package keeps no state of its own. It
holds immutable values only (strings, numbers, bytes, tuples of them), a bounded number of
them, and nothing of any connection: the references in what it keeps (a Hello's root, a
call's target) are still unboxed by each connection's own hooks, and what a side lends (its
root) still goes through its own box hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from ._codec import CodecLimits, Ref
from ._frames import HEADER_SIZE, PREFACE_SIZE

if TYPE_CHECKING:
    from ._connection import ProtocolConfig
    from ._events import Hello

__all__ = ["SharedCache"]

#: Hello payloads kept: how many, and how long each may be (bytes).
_HELLOS_KEPT: Final = 16
MAX_HELLO_KEPT: Final = 2048
#: Encoded type descriptors kept.
_DESCRIPTORS_KEPT: Final = 256
#: Encoded Hello frames kept (a side sends one or a few kinds).
_HELLO_FRAMES_KEPT: Final = 16
#: Call prefixes kept (see ``_calls.CallPrefixes``).
_PREFIXES_KEPT: Final = 256


class SharedCache:
    """A cache for the connections made with ``config`` (``Connection(config, shared=...)``).

    Threads may share one: each use is one lookup or one store in a dict, of values that are
    never changed. When one of its tables is full it is emptied and fills again.
    """

    __slots__ = ("config", "_hellos", "_handshakes", "_descriptors", "_hello_frames", "_prefixes", "calls")

    def __init__(self, config: ProtocolConfig) -> None:
        self.config = config
        # a Hello's payload -> the Hello it decodes to, its root a Ref (not unboxed)
        self._hellos: dict[bytes, Hello] = {}
        # a peer's preface and HELLO frame, read at once -> its version range and its Hello
        # (as in _hellos): what a connection's first read usually holds
        self._handshakes: dict[bytes, tuple[tuple[int, int], Hello]] = {}
        # id(descriptor) -> (the descriptor, kept alive so its id is not reused; the nesting
        # depth it was encoded at; its encoding)
        self._descriptors: dict[int, tuple[object, int, bytes]] = {}
        # (services, capabilities, max_frame_size, the root's oid and type id, id of its
        # descriptor) -> (the descriptor, kept alive so its id is not reused; the HELLO frame)
        self._hello_frames: dict[tuple[object, ...], tuple[object, bytes]] = {}
        # (oid, method name, argument count, the peer's frame limit) -> a call's prefixes
        self._prefixes: dict[tuple[int, str | None, int, int], tuple[bytes, bytes, bytes, bytes | None]] = {}
        # a call's body -> its target's oid, its arguments and keywords (scalars only): the
        # bodies the decoders sharing this cache saw lately (ValueDecoder.decode_call keeps them)
        self.calls: dict[bytes, tuple[int, tuple[object, ...], tuple[object, ...]]] = {}

    def __repr__(self) -> str:
        return (
            f"<rpc_protocol.SharedCache hellos={len(self._hellos)} handshakes={len(self._handshakes)} "
            f"hello_frames={len(self._hello_frames)} descriptors={len(self._descriptors)} "
            f"prefixes={len(self._prefixes)} calls={len(self.calls)}>"
        )

    def serves(self, limits: CodecLimits) -> bool:
        """Whether what it keeps was decoded and encoded under ``limits`` (its config's)."""
        own = self.config.limits
        return own is limits or own == limits

    def hello(self, payload: bytes) -> Hello | None:
        """The Hello kept for ``payload`` (its root a reference, not unboxed), or None."""
        return self._hellos.get(payload)

    def keep_hello(self, payload: bytes, hello: Hello) -> bool:
        """Keep ``hello``, decoded from ``payload`` with its references left as they are,
        if its root is a reference (not a connection's own object) with a plain descriptor."""
        if len(payload) > MAX_HELLO_KEPT or type(hello.root) is not Ref or not _plain(hello.root.info):
            return False
        hellos = self._hellos
        if len(hellos) >= _HELLOS_KEPT:
            hellos.clear()
        hellos[payload] = hello
        return True

    def handshake(self, data: bytes) -> tuple[tuple[int, int], Hello] | None:
        """The version range and Hello kept for ``data``, a peer's preface then its HELLO frame."""
        return self._handshakes.get(data)

    def keep_handshake(self, data: bytes, peer_range: tuple[int, int]) -> None:
        """Keep what ``data`` (a preface, then a HELLO frame whose payload is kept: see
        :meth:`keep_hello`) was received as: ``peer_range``, and that Hello."""
        hello = self._hellos.get(data[PREFACE_SIZE + HEADER_SIZE :])
        if hello is None:
            return
        handshakes = self._handshakes
        if len(handshakes) >= _HELLOS_KEPT:
            handshakes.clear()
        handshakes[data] = (peer_range, hello)

    def hello_frame(self, key: tuple[object, ...], info: object) -> bytes | None:
        """The HELLO frame kept for ``key`` (which names ``info``, this very object, by id)."""
        kept = self._hello_frames.get(key)
        return kept[1] if kept is not None and kept[0] is info else None

    def keep_hello_frame(self, key: tuple[object, ...], info: object, frame: bytes) -> None:
        """Keep ``frame``, the HELLO frame ``key`` (with ``info``, a plain descriptor) encodes to."""
        if not _plain(info):
            return
        frames = self._hello_frames
        if len(frames) >= _HELLO_FRAMES_KEPT:
            frames.clear()
        frames[key] = (info, frame)

    def call_prefixes(self, key: tuple[int, str | None, int, int]) -> tuple[bytes, bytes, bytes, bytes | None] | None:
        """The prefixes of a call kept for ``key`` (oid, name, argument count, peer's frame limit)."""
        return self._prefixes.get(key)

    def keep_call_prefixes(self, key: tuple[int, str | None, int, int], prefixes: tuple[bytes, bytes, bytes, bytes | None]) -> None:
        prefixes_kept = self._prefixes
        if len(prefixes_kept) >= _PREFIXES_KEPT:
            prefixes_kept.clear()
        prefixes_kept[key] = prefixes

    def descriptor(self, info: object, depth: int) -> bytes | None:
        """The encoding of the type descriptor ``info`` (this very object) at nesting
        ``depth``, if it was encoded at that depth or a deeper one (so within the limits)."""
        kept = self._descriptors.get(id(info))
        return kept[2] if kept is not None and kept[0] is info and depth <= kept[1] else None

    def keep_descriptor(self, info: object, depth: int, encoded: bytes) -> None:
        """Keep ``encoded``, what the type descriptor ``info`` encoded to at nesting ``depth``,
        if it is plain (a descriptor holding a reference or a mutable value encodes anew)."""
        if not _plain(info):
            return
        descriptors = self._descriptors
        if len(descriptors) >= _DESCRIPTORS_KEPT:
            descriptors.clear()
        descriptors[id(info)] = (info, depth, encoded)


def _plain(value: object) -> bool:
    """Whether ``value`` holds strings, numbers, None and tuples of them only (no reference,
    nothing mutable): what a type descriptor is made of."""
    if type(value) is tuple:
        return all(_plain(item) for item in value)
    kind = type(value)
    return kind is str or kind is int or kind is float or kind is bool or value is None

"""``SharedCache``: what connections made with one config share (decoded Hellos, encoded descriptors).

Nothing a peer or the caller can observe may change with a cache: every Hello decodes as a
connection without one decodes it, its root unboxed by each connection's own hook; every
frame is encoded to the same bytes; what one connection refuses, another refuses too; and the
cache stays bounded whatever peers send.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rpc_protocol as p
from rpc_protocol._frames import MIN_FRAME_LIMIT
from tests.protocol.helpers import handshake, pair, same_event, texts, values, wire

CONFIG = p.ProtocolConfig()
_names = st.lists(st.text(max_size=8), max_size=4).map(tuple)
_plain_infos = st.recursive(st.text(max_size=6) | st.integers() | st.none(), lambda kids: st.lists(kids, max_size=4).map(tuple), max_leaves=12)
_roots = st.builds(p.Ref, st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1), _plain_infos) | values(with_refs=True, max_leaves=4)


def _received_hello(hello: p.Hello, receiver: p.Connection) -> p.Hello:
    """``hello`` sent by a fresh connection, as ``receiver`` decodes it."""
    sender = p.Connection(box=lambda obj: p.Ref(1, 1, ("m", "C", ("f",), (), "")))
    handshake(sender, receiver, hello_a=hello)
    assert receiver.peer_hello is not None
    return receiver.peer_hello


@settings(max_examples=200, deadline=None)
@given(services=_names, capabilities=st.frozensets(st.text(max_size=5), max_size=3), root=_roots, again=st.integers(1, 3))
def test_a_hello_decodes_as_without_the_cache(services: tuple[str, ...], capabilities: frozenset[str], root: object, again: int) -> None:
    """The same Hello received by several connections sharing a cache (the first decodes
    it, the others find it kept) is the Hello a connection without a cache receives."""
    shared = p.SharedCache(CONFIG)
    hello = p.Hello(services, capabilities, root=root)
    expected = _received_hello(hello, p.Connection(CONFIG))
    for _ in range(again):
        assert same_event(_received_hello(hello, p.Connection(CONFIG, shared=shared)), expected)


def test_the_root_is_unboxed_by_each_connection() -> None:
    """A kept Hello keeps the peer's reference, never an object of a connection: each
    connection's own hook makes its root."""
    shared = p.SharedCache(CONFIG)
    roots = []
    for _ in range(3):
        made: list[p.Ref] = []

        def unbox(ref: p.Ref | p.BackRef, made: list[p.Ref] = made) -> object:
            assert isinstance(ref, p.Ref)
            made.append(ref)
            return object()

        receiver = p.Connection(CONFIG, unbox=unbox, shared=shared)
        roots.append(_received_hello(p.Hello(("S",), root=object()), receiver).root)
        assert made == [p.Ref(1, 1, ("m", "C", ("f",), (), ""))]
    assert len({id(root) for root in roots}) == 3


def test_a_descriptor_holding_references_is_decoded_as_always() -> None:
    """A Hello whose root descriptor holds references is not kept: each connection decodes
    it, its hook called for every reference in it, as without a cache."""
    shared = p.SharedCache(CONFIG)
    for _ in range(2):
        made: list[object] = []
        receiver = p.Connection(CONFIG, unbox=lambda ref, made=made: made.append(ref) or ref, shared=shared)  # type: ignore[misc]  # (append returns None)
        sender = p.Connection(box=lambda obj: p.Ref(1, 1, ("m", p.Ref(5, 2), "x")))
        handshake(sender, receiver, hello_a=p.Hello(root=object()))
        assert made == [p.Ref(5, 2), p.Ref(1, 1, ("m", p.Ref(5, 2), "x"))]


@pytest.mark.parametrize(
    "fields",
    [(), ((), (), 65536), ((), ("S", 1), 65536, None), ((), (), 10, None), (("c",), (), "65536", None), [(), (), 65536, None]],
    ids=["empty", "three", "service-not-str", "frame-limit-too-small", "limit-not-int", "list"],
)
def test_a_malformed_hello_is_refused_alike(fields: object) -> None:
    """The connection that would keep it says what is wrong, as one without a cache says."""
    payload = wire(p.ValueEncoder(containers_by_value=True).encode(fields))
    frame = bytes((1, 0, 0, 0, 0, 0, 0, 0)) + len(payload).to_bytes(4, "little") + payload  # docs/protocol.md §3: HELLO
    messages = []
    for conn in (p.Connection(CONFIG), p.Connection(CONFIG, shared=p.SharedCache(CONFIG))):
        conn.receive_data(wire(p.Connection().send(p.Preface())))
        with pytest.raises(p.RemoteProtocolError) as caught:
            conn.receive_data(frame)
        messages.append(str(caught.value))
        assert conn.state is p.State.FAILED
    assert messages[0] == messages[1]


def test_a_cache_serves_its_own_config_only() -> None:
    with pytest.raises(ValueError, match="config"):
        p.Connection(p.ProtocolConfig(max_pending=5), shared=p.SharedCache(CONFIG))
    p.Connection(p.ProtocolConfig(), shared=p.SharedCache(CONFIG))  # an equal config is fine


# -- encoding --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(info=_plain_infos, name=texts, args=st.lists(st.integers(), max_size=3))
def test_frames_describing_a_type_are_the_bytes_of_a_connection_without_the_cache(info: object, name: str, args: list[int]) -> None:
    """The same descriptor object described on several connections sharing a cache (the
    first encodes it, the others copy its bytes): the frames of connections without one."""
    shared = p.SharedCache(CONFIG)
    descriptor = (info, name)

    def frames(conn: p.Connection) -> bytes:
        peer = p.Connection()
        handshake(conn, peer, hello_a=p.Hello(root=object()))
        return wire(conn.send_request(1, p.Op.CALL, p.BackRef(0), (object(), *args)))

    def box(obj: object) -> p.Ref:
        return p.Ref(1, 1, descriptor)

    expected = frames(p.Connection(CONFIG, box=box))
    for _ in range(3):
        assert frames(p.Connection(CONFIG, box=box, shared=shared)) == expected


def test_a_kept_descriptor_still_counts_against_the_depth_limit() -> None:
    """Encoded once near the top of a value, the descriptor is not copied where it would
    nest past ``max_depth``: that frame is refused as without the cache."""
    config = p.ProtocolConfig(limits=p.CodecLimits(max_depth=8))
    shared = p.SharedCache(config)
    descriptor = ("m", "C", (("deep",),), (), "")
    encoder = p.ValueEncoder(lambda obj: p.Ref(1, 1, descriptor), config.limits, shared=shared)
    encoder.encode((object(),))  # kept, encoded at depth 2
    nested: object = object()
    for _ in range(5):  # (the descriptor's innermost tuple then sits at depth 8)
        nested = (nested,)
    with pytest.raises(p.EncodeError, match="nested deeper"):
        p.ValueEncoder(lambda obj: p.Ref(1, 1, descriptor), config.limits).encode(nested)
    with pytest.raises(p.EncodeError, match="nested deeper"):
        encoder.encode(nested)


def test_what_is_kept_stays_bounded() -> None:
    """Peers sending ever new Hellos, a side describing ever new types: the cache keeps a
    bounded number of each (semi-private: its tables are not in the API)."""
    shared = p.SharedCache(CONFIG)
    for n in range(300):
        _received_hello(p.Hello((f"S{n}",), root=object()), p.Connection(CONFIG, shared=shared))
        info = ("m", f"C{n}", (), (), "")
        p.ValueEncoder(lambda obj, info=info: p.Ref(1, 1, info), shared=shared).encode(object())  # type: ignore[misc]  # (a default binds info)
        assert len(shared._hellos) <= 16 and len(shared._descriptors) <= 256


@pytest.mark.parametrize("kind", ["lent-object", "list", "backref"])
def test_a_descriptor_that_is_not_plain_is_encoded_anew_by_each_connection(kind: str) -> None:
    """Regression (review of the change that added the cache): a descriptor holding an
    object the box hook lends, a mutable list or a reference was kept, so another
    connection sent the first one's object ids (its own box hook never called) and a list
    changed since went out stale. Only plain descriptors are kept."""
    helper = object()
    inner: object = {"lent-object": helper, "list": ["x"], "backref": p.BackRef(3)}[kind]
    descriptor = ("m", "C", inner)
    shared = p.SharedCache(CONFIG)
    for oid in (100, 200):
        lent: list[object] = []

        def box(obj: object, oid: int = oid, lent: list[object] = lent) -> p.Ref:
            if obj is helper:
                lent.append(obj)
                return p.Ref(oid, 9)
            return p.Ref(1, 1, descriptor)

        with_cache = wire(p.ValueEncoder(box, CONFIG.limits, containers_by_value=True, shared=shared).encode(object()))
        assert lent == ([helper] if kind == "lent-object" else [])
        without = wire(p.ValueEncoder(box, CONFIG.limits, containers_by_value=True).encode(object()))
        assert with_cache == without
    if kind == "list":
        assert isinstance(inner, list)
        inner.append("changed")
        encoded = wire(p.ValueEncoder(lambda obj: p.Ref(1, 1, descriptor), CONFIG.limits, containers_by_value=True, shared=shared).encode(object()))
        assert "changed" in str(p.ValueDecoder().decode(encoded))


# -- the Hello a side sends, a call's prefixes -----------------------------------------


def _sent_hello(conn: p.Connection, hello: p.Hello, peer_limit: int | None = None) -> bytes:
    """What ``conn`` sends as its Hello, after the prefaces (and the peer's Hello, announcing
    ``peer_limit``, when given: as the accepting side sends its own)."""
    peer = p.Connection(p.ProtocolConfig(max_frame_size=peer_limit or CONFIG.max_frame_size))
    conn.receive_data(wire(peer.send(p.Preface())))
    preface = wire(conn.send(p.Preface()))
    assert preface == wire(p.Connection().send(p.Preface()))
    if peer_limit is not None:
        conn.receive_data(wire(peer.send(p.Hello())))
    return wire(conn.send(hello))


@settings(max_examples=200, deadline=None)
@given(services=_names, capabilities=st.frozensets(st.text(max_size=5), max_size=3), info=_plain_infos, again=st.integers(1, 3))
def test_a_hello_sent_is_the_frame_of_a_connection_without_the_cache(
    services: tuple[str, ...], capabilities: frozenset[str], info: object, again: int
) -> None:
    """Several connections sharing a cache send one Hello (the first encodes it, the others
    copy its bytes): the bytes a connection without one sends, the root lent by each
    connection's own box hook."""
    root = object()

    def sent(shared: p.SharedCache | None) -> tuple[bytes, list[object]]:
        lent: list[object] = []

        def box(obj: object) -> p.Ref:
            lent.append(obj)
            return p.Ref(1, 1, ("m", "C", info))

        return _sent_hello(p.Connection(CONFIG, box=box, shared=shared), p.Hello(services, capabilities, root=root)), lent

    expected = sent(None)
    assert expected[1] == [root]
    shared = p.SharedCache(CONFIG)
    for _ in range(again):
        assert sent(shared) == expected


@pytest.mark.parametrize("root", ["a-value", "another-reference", "not-plain"])
def test_a_hello_whose_root_boxes_otherwise_is_encoded_anew(root: str) -> None:
    """A root that travels by value, a root another connection lends under another id, a
    descriptor holding a reference: each connection's Hello is the bytes it encodes itself."""
    shared = p.SharedCache(CONFIG)
    for oid in (1, 2):
        value: object = 5 if root == "a-value" else object()
        info: object = ("m", p.BackRef(oid)) if root == "not-plain" else ("m", "C")

        def box(obj: object, oid: int = oid if root == "another-reference" else 1, info: object = info) -> p.Ref:
            return p.Ref(oid, 1, info)

        hello = p.Hello(("S",), root=value)
        with_cache = _sent_hello(p.Connection(CONFIG, box=box, shared=shared), hello)
        assert with_cache == _sent_hello(p.Connection(CONFIG, box=box), hello)


def test_a_kept_hello_over_the_peers_limit_is_refused_as_without_the_cache() -> None:
    """A Hello kept when sent to a peer with the default limit, then sent to one that
    announced the smallest limit first (the accepting side's order): refused, as a
    connection without the cache refuses it."""
    shared = p.SharedCache(CONFIG)
    hello = p.Hello(tuple(f"service-{n:04}" for n in range(200)), root=object())

    def box(obj: object) -> p.Ref:
        return p.Ref(1, 1, ("m", "C"))

    _sent_hello(p.Connection(CONFIG, box=box, shared=shared), hello)
    for conn in (p.Connection(CONFIG, box=box), p.Connection(CONFIG, box=box, shared=shared)):
        with pytest.raises(p.EncodeError, match="exceeds the peer's limit"):
            _sent_hello(conn, hello, peer_limit=MIN_FRAME_LIMIT)


@settings(max_examples=200, deadline=None)
@given(
    oid=st.integers(0, 2**64 - 1),
    name=st.none() | st.text(max_size=300),
    args=st.lists(st.integers(), max_size=3).map(tuple),
    budget=st.none() | st.integers(0, 2**64 - 1),
    limits=st.lists(st.sampled_from([MIN_FRAME_LIMIT, CONFIG.max_frame_size]), min_size=1, max_size=3),
)
def test_first_calls_on_connections_sharing_a_cache_are_the_bytes_without_it(
    oid: int, name: str | None, args: tuple[int, ...], budget: int | None, limits: list[int]
) -> None:
    """The first call of a method on each of several connections sharing a cache (the first
    encodes its prefix, the others copy it), to peers announcing different frame limits:
    the bytes of the general path, or its refusal."""
    shared = p.SharedCache(CONFIG)
    target = p.BackRef(oid)
    op, op_args = (p.Op.CALL, args) if name is None else (p.Op.CALLATTR, (name, *args))
    context = None if budget is None else p.CallContext(budget)
    for limit in limits:
        peer_config = p.ProtocolConfig(max_frame_size=limit)
        fast, _ = pair(CONFIG, peer_config)
        fast._shared = shared  # (pair makes its connections without one)
        slow, _ = pair(CONFIG, peer_config)
        try:
            expected = wire(slow.send_request(1, op, target, op_args, None, False, context))
        except p.EncodeError:
            with pytest.raises(p.EncodeError):
                fast.send_call(1, target, name, args, None, budget)
            continue
        assert wire(fast.send_call(1, target, name, args, None, budget)) == expected


def test_kept_hellos_and_prefixes_stay_bounded() -> None:
    """A side sending ever new Hellos and calling ever new methods keeps a bounded number of
    each (semi-private, as above)."""
    shared = p.SharedCache(CONFIG)
    for n in range(400):
        conn, _ = pair()
        conn._shared = shared
        conn.send_call(1, p.BackRef(n), "method", (), None)
        if n < 40:
            _sent_hello(p.Connection(CONFIG, box=lambda obj: p.Ref(1, 1, ("m", "C")), shared=shared), p.Hello((f"S{n}",), root=object()))
        assert len(shared._hello_frames) <= 16 and len(shared._prefixes) <= 256


# -- a peer's preface and Hello read at once ------------------------------------------------

_ranges = st.tuples(st.integers(1, 3), st.integers(0, 2)).map(lambda low_extra: (low_extra[0], low_extra[0] + low_extra[1]))


def _receive_all(receiver: p.Connection, data: bytes) -> tuple[object, ...]:
    """What receiving ``data`` in one read does: its events (or error), then the state."""
    try:
        outcome: object = receiver.receive_data(data)
    except p.ProtocolError as exc:
        outcome = (type(exc), str(exc))
    hello = receiver.peer_hello
    return outcome, receiver.state, receiver.version, repr(receiver.error), receiver.bytes_needed, hello and (hello.services, hello.capabilities, hello.max_frame_size)


@settings(max_examples=300, deadline=None)
@given(
    peer_range=_ranges,
    our_range=st.none() | _ranges,
    send_hello_first=st.booleans(),
    services=_names,
    info=_plain_infos | st.just(("m", p.BackRef(4))),
    tail=st.sampled_from([b"", b"\x02\x00"]),
    again=st.integers(1, 3),
)
def test_a_preface_and_hello_read_at_once_are_received_as_without_the_cache(
    peer_range: tuple[int, int], our_range: tuple[int, int] | None, send_hello_first: bool, services: tuple[str, ...], info: object, tail: bytes, again: int
) -> None:
    """Several connections sharing a cache read the same preface and Hello in one read (the
    first parses them, the others find them kept), whatever each had sent first (nothing,
    its preface, with its Hello too) and whether the versions meet: the events, the state
    and the failure of a connection without the cache; the root unboxed by each one's hook."""
    sender = p.Connection(box=lambda obj: p.Ref(1, 1, ("m", "C", info)))
    data = wire(sender.send(p.Preface(*peer_range))) + wire(sender.send(p.Hello(services, root=object()))) + tail

    def received(shared: p.SharedCache | None) -> tuple[object, ...]:
        unboxed: list[object] = []

        def unbox(ref: p.Ref | p.BackRef) -> object:
            unboxed.append(ref)
            return len(unboxed)

        receiver = p.Connection(CONFIG, unbox=unbox, shared=shared)
        if our_range is not None:
            receiver.send(p.Preface(*our_range))
            if send_hello_first:
                receiver.send(p.Hello())
        outcome = _receive_all(receiver, data)
        return outcome, tuple(unboxed)

    expected = received(None)
    shared = p.SharedCache(CONFIG)
    for _ in range(again):
        assert received(shared) == expected
    events = expected[0]
    assert isinstance(events, tuple)
    events = events[0]
    if not tail and info != ("m", p.BackRef(4)) and isinstance(events, list) and len(events) == 2:
        assert len(shared._handshakes) == 1  # (kept, so the later ones took the shortcut: semi-private)


def test_a_box_hook_answering_no_reference_for_the_root_is_refused() -> None:
    """Regression (review): the Hello's root is boxed before the frame is encoded; a hook
    returning something else than a reference is refused there, as the encoder refuses it."""
    for shared in (None, p.SharedCache(CONFIG)):
        conn = p.Connection(CONFIG, box=lambda obj: "not a reference", shared=shared)  # type: ignore[arg-type,return-value]  # (a broken hook, on purpose)
        conn.send(p.Preface())
        with pytest.raises(p.EncodeError, match="box hook returned str, not a reference"):
            conn.send(p.Hello(root=object()))

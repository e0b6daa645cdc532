"""The golden vectors and tables of ``docs/protocol.md``, checked against the implementation.

The spec is the single source of truth: this module parses every fenced block tagged
``golden`` out of it (``name:``, ``kind:``, ``value:``, ``hex:`` and ``why:`` lines, see the
spec's *Golden vectors* section), evaluates ``value`` in a namespace holding only builtins and
the public names of ``rpc_protocol``, and checks both directions byte for byte. It also checks
the spec's tag, frame-type, operation and state tables against the code, so that the document
cannot drift. It must not hold expectations of its own: a new vector goes in the spec.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

import rpc_protocol as p
from tests.protocol.helpers import pair, same, same_event, settled_pair, wire

SPEC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
KINDS = frozenset({"value", "by-value", "decode", "frame", "bad-value", "bad-frame"})
EVENT_TYPES = (p.Preface, p.Hello, p.Request, p.Reply, p.ErrorReply, p.Release, p.Ping, p.Pong, p.Close, p.Cancel)

_BLOCK = re.compile(r"^```golden[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_TOKEN = re.compile(r"(?P<hex>(?:[0-9a-fA-F]{2})+)(?:\*(?P<times>[0-9]+))?")


@dataclass(frozen=True)
class Vector:
    name: str
    kind: str
    expr: str | None
    data: bytes
    why: str | None


def parse_hex(text: str) -> bytes:
    """Hex tokens separated by whitespace; ``H*N`` repeats the hex digits ``H`` N times."""
    out = bytearray()
    for token in text.split():
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise ValueError(f"bad hex token {token!r}")
        out += bytes.fromhex(match["hex"]) * int(match["times"] or 1)
    return bytes(out)


def parse_block(body: str) -> Vector:
    fields: dict[str, str] = {}
    hex_lines: list[str] = []
    for line in body.splitlines():
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep or key not in {"name", "kind", "value", "hex", "why"}:
            raise ValueError(f"unexpected line in a golden block: {line!r}")
        if key == "hex":
            hex_lines.append(rest)
        elif key in fields:
            raise ValueError(f"repeated {key!r} in a golden block: {body!r}")
        else:
            fields[key] = rest.strip()
    if "name" not in fields or fields.get("kind") not in KINDS or not hex_lines:
        raise ValueError(f"golden block without name, a known kind or hex: {body!r}")
    return Vector(fields["name"], fields["kind"], fields.get("value"), parse_hex(" ".join(hex_lines)), fields.get("why"))


def load_vectors() -> list[Vector]:
    vectors = [parse_block(match[1]) for match in _BLOCK.finditer(SPEC.read_text(encoding="utf-8"))]
    names = [vector.name for vector in vectors]
    duplicates = {name for name in names if names.count(name) > 1}
    if duplicates:
        raise ValueError(f"duplicate golden vector names: {sorted(duplicates)}")
    return vectors


VECTORS = load_vectors()
NAMESPACE: dict[str, object] = {"__builtins__": builtins, **{name: getattr(p, name) for name in p.__all__}}


def evaluate(vector: Vector) -> object:
    assert vector.expr is not None, f"{vector.name}: no value line"
    return eval(vector.expr, dict(NAMESPACE))  # the spec is ours; eval is the point of the format


def of_kind(*kinds: str) -> list[object]:
    return [pytest.param(vector, id=vector.name) for vector in VECTORS if vector.kind in kinds]


# -- the parser found what it should ---------------------------------------------------


def test_spec_has_enough_vectors() -> None:
    counts = {kind: sum(vector.kind == kind for vector in VECTORS) for kind in KINDS}
    assert len(VECTORS) >= 80, counts
    assert counts["value"] >= 35 and counts["by-value"] >= 3 and counts["frame"] >= 12, counts
    assert counts["decode"] >= 3 and counts["bad-value"] >= 8 and counts["bad-frame"] >= 8, counts


def test_hex_parser() -> None:
    assert parse_hex("0a 0100*2\n ff*3") == bytes.fromhex("0a01000100ffffff")
    assert parse_hex("") == b""
    with pytest.raises(ValueError):
        parse_hex("0g")
    with pytest.raises(ValueError):
        parse_block("name: x\nkind: nonsense\nhex: 00")


# -- values ----------------------------------------------------------------------------


@pytest.mark.parametrize("vector", of_kind("value", "by-value"))
def test_value_vector(vector: Vector) -> None:
    value = evaluate(vector)
    encoder = p.ValueEncoder(containers_by_value=vector.kind == "by-value")
    assert wire(encoder.encode(value)).hex(" ") == vector.data.hex(" ")
    decoded = p.ValueDecoder().decode(vector.data)
    assert same(decoded, value), (decoded, value)


@pytest.mark.parametrize("vector", of_kind("decode"))
def test_decode_vector(vector: Vector) -> None:
    decoded = p.ValueDecoder().decode(vector.data)
    assert same(decoded, evaluate(vector))


@pytest.mark.parametrize("vector", of_kind("bad-value"))
def test_bad_value_vector(vector: Vector) -> None:
    assert vector.why, f"{vector.name}: say why it is rejected"
    with pytest.raises(p.RemoteProtocolError):
        p.ValueDecoder().decode(vector.data)


# -- frames ----------------------------------------------------------------------------


def _prime(sender: p.Connection, receiver: p.Connection, event: p.Event) -> None:
    """Make ``event`` legal for ``sender``: the request it answers, the ping it pongs, or
    (for a Cancel) the request of its own that it cancels."""
    if isinstance(event, p.Cancel):
        request = p.Request(seq=event.seq, op=p.Op.CALL, target=p.BackRef(0))
        assert receiver.receive_data(wire(sender.send(request))) == [request]
        return
    primer: p.Event | None = None
    if isinstance(event, (p.Reply, p.ErrorReply)):
        primer = p.Request(seq=event.seq, op=p.Op.CALL, target=p.BackRef(0), by_value=True)
    elif isinstance(event, p.Pong):
        primer = p.Ping(seq=event.seq)
    if primer is not None:
        assert sender.receive_data(wire(receiver.send(primer))) == [primer]


@pytest.mark.parametrize("vector", of_kind("frame"))
def test_frame_vector(vector: Vector) -> None:
    event = evaluate(vector)
    assert isinstance(event, EVENT_TYPES)
    if isinstance(event, p.Preface):
        sender, receiver = p.Connection(), p.Connection()
    elif isinstance(event, p.Hello):
        sender, receiver = settled_pair(p.ProtocolConfig(max_frame_size=event.max_frame_size))
    else:
        sender, receiver = pair()
        _prime(sender, receiver, event)
    assert wire(sender.send(event)).hex(" ") == vector.data.hex(" ")
    received = receiver.receive_data(vector.data)
    assert len(received) == 1 and same_event(received[0], event), received
    assert receiver.bytes_needed == p.HEADER_SIZE  # nothing left over, the next header is due


@pytest.mark.parametrize("vector", of_kind("bad-frame"))
def test_bad_frame_vector(vector: Vector) -> None:
    assert vector.why, f"{vector.name}: say why it is rejected"
    _, receiver = pair()
    with pytest.raises(p.RemoteProtocolError):
        receiver.receive_data(vector.data)
    assert receiver.state is p.State.FAILED


# -- coverage of the spec's tables -----------------------------------------------------


def _table_rows(heading: str) -> list[list[str]]:
    """The body rows of the first markdown table after ``heading``, as stripped cells."""
    text = SPEC.read_text(encoding="utf-8")
    start = text.index(heading)
    rows: list[list[str]] = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # drop the header and the --- line


def test_tag_table_is_covered_and_exhaustive() -> None:
    tags = {int(row[0].strip("`"), 16): row[1] for row in _table_rows("## 6. Value codec")}
    assert len(tags) == 24
    first_bytes = {vector.data[0] for vector in VECTORS if vector.kind in ("value", "by-value")}
    assert set(tags) <= first_bytes, {hex(tag): tags[tag] for tag in set(tags) - first_bytes}
    decoder = p.ValueDecoder()
    for tag in set(range(256)) - set(tags):
        with pytest.raises(p.RemoteProtocolError, match="unknown value tag"):
            decoder.decode(bytes([tag]) + bytes(16))


def test_frame_type_table_matches_the_code() -> None:
    rows = _table_rows("### Frame types")
    assert {int(row[0]): row[1] for row in rows} == {kind.value: kind.name for kind in p.FrameType}
    kinds = {vector.data[0] for vector in VECTORS if vector.kind == "frame" and vector.data[:4] != p.MAGIC}
    assert kinds == {kind.value for kind in p.FrameType}
    assert any(vector.data.startswith(p.MAGIC) for vector in VECTORS if vector.kind == "frame")


def test_flag_table_matches_the_code() -> None:
    rows = _table_rows("### Flags")
    assert {int(row[0].strip("`"), 16): row[1].strip("`") for row in rows if row[0] != "other"} == {
        flag.value: flag.name for flag in p.FrameFlags if flag
    }


def test_op_table_matches_the_code() -> None:
    rows = _table_rows("## 5. Request operations")
    assert {int(row[0]): row[1] for row in rows} == {op.value: op.name for op in p.Op}


def test_state_table_matches_the_code() -> None:
    # The transition table is not public API (it is data inside the state machine), so this
    # is the one place that imports a private module: the spec promises to render it exactly.
    from rpc_protocol._states import TRANSITIONS

    documented: dict[tuple[str, str, str], str] = {}
    for state, direction, events, target in _table_rows("## 8. State machine"):
        for event in events.split(","):
            key = (state, direction, event.strip())
            assert key not in documented, key
            documented[key] = target
    actual = {(state.name, direction, kind.__name__): target.name for (state, direction, kind), target in TRANSITIONS.items()}
    assert documented == actual
    assert {state for state, _, _ in documented} | set(documented.values()) == {state.name for state in p.State} - {
        "FAILED"
    }

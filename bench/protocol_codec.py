"""Micro-benchmark of the wire layer alone: encode + frame + decode, no sockets.

Measures a typical request (``conn.root.method(1, "two", 3.0)`` as it goes on the wire,
with a reference to the target) and a 4 MiB bytes reply, through a pair of handshaken
``rpc_protocol.Connection`` objects: ``send()`` on one, ``receive_data()`` on the other.
For scale it also times ``pickle`` dumps+loads of the same request tuple (pickle is not
used by the stack; it is the stdlib's fastest general serializer). Run with
``hatch run bench:codec`` or ``python bench/protocol_codec.py [--seconds S]``.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

try:
    import rpc_protocol as wire
except ImportError:  # run from a checkout without the packages installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "packages" / "rpc-protocol" / "src"))
    import rpc_protocol as wire


def handshaken_pair() -> tuple[wire.Connection, wire.Connection]:
    a, b = wire.Connection(), wire.Connection()
    b.receive_data(b"".join(a.send(wire.Preface())))
    a.receive_data(b"".join(b.send(wire.Preface())))
    b.receive_data(b"".join(a.send(wire.Hello())))
    a.receive_data(b"".join(b.send(wire.Hello())))
    return a, b


def per_call(fn: Callable[[], object], seconds: float, repeats: int = 5) -> list[float]:
    """Seconds per call of ``fn``, one figure per repeat (each repeat runs ~seconds/repeats)."""
    loops = 1
    while True:  # calibrate: loops per repeat
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - start > seconds / repeats / 4 or loops > 1 << 24:
            break
        loops *= 2
    figures = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops * 4):
            fn()
        figures.append((time.perf_counter() - start) / (loops * 4))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement (default 2)")
    seconds = parser.parse_args().seconds

    client, server = handshaken_pair()
    target = wire.BackRef(1)

    def request_round() -> None:
        seq = client.next_seq()
        data = client.send(wire.Request(seq, wire.Op.CALLATTR, target, ("method", 1, "two", 3.0), {}))
        (request,) = server.receive_data(b"".join(data))
        assert isinstance(request, wire.Request)
        reply = server.send(wire.Reply(request.seq, None))
        client.receive_data(b"".join(reply))

    payload = bytes(4 << 20)

    def big_reply_round() -> None:
        seq = client.next_seq()
        server.receive_data(b"".join(client.send(wire.Request(seq, wire.Op.CALLATTR, target, ("read",), {}))))
        buffers = server.send(wire.Reply(seq, payload))
        # the I/O layer writes the buffers back to back; the reader gets them as one block
        (reply,) = client.receive_data(b"".join(buffers))
        assert isinstance(reply, wire.Reply) and len(reply.value) == len(payload)  # type: ignore[arg-type]  # bytes

    def big_reply_encode_only() -> None:
        seq = client.next_seq()
        server.receive_data(b"".join(client.send(wire.Request(seq, wire.Op.CALLATTR, target, ("read",), {}))))
        buffers = server.send(wire.Reply(seq, payload))
        assert buffers[1] is payload  # zero-copy: the payload is handed over, not copied
        client.receive_data(b"".join(buffers))  # keep the state machines in step

    pickled = ("method", 1, "two", 3.0)

    rows = []
    for name, fn, size in (
        ("request + empty reply (encode+decode both)", request_round, 0),
        ("4 MiB bytes reply (encode+decode)", big_reply_round, len(payload)),
        ("pickle dumps+loads of the request args", lambda: pickle.loads(pickle.dumps(pickled)), 0),
    ):
        figures = per_call(fn, seconds)
        median = statistics.median(figures)
        throughput = f"{size / median / 1e6:,.0f} MB/s" if size else ""
        rows.append((name, median * 1e6, min(figures) * 1e6, throughput))
    big_reply_encode_only()
    print(f"rpc_protocol {wire.__version__} on Python {sys.version.split()[0]}")
    print(f"{'workload':45} {'median µs':>10} {'best µs':>10}  throughput")
    for name, median_us, best_us, throughput in rows:
        print(f"{name:45} {median_us:10.2f} {best_us:10.2f}  {throughput}")


if __name__ == "__main__":
    main()

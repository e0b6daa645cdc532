"""The registry's policy, sans I/O: bytes and a sender address in, reply bytes out.

Authentication (unsigned, forged, stale and replayed registrations are refused with a reason;
queries stay public; replies are signed), the advertised address versus the sender's, listing
on and off, a full table, replies cut down to fit one message, and drops counted and logged.
"""

from __future__ import annotations

import logging

import pytest

from rpc_registry import RegistryHandler, RegistryLimits, RegistryTable
from rpc_registry._messages import (
    MAX_MESSAGE_SIZE,
    UNSIGNED,
    VALID,
    Ack,
    Body,
    ListNames,
    Nack,
    Names,
    Providers,
    Query,
    Register,
    Unregister,
    decode,
    encode,
    new_rid,
)
from tests.registry.helpers import KEY, OTHER_KEY, FakeClock

NOW = 1_700_000_000.0


def make_handler(*, key: bytes | None = None, allow_listing: bool = False, max_servers: int = 4096) -> RegistryHandler:
    table = RegistryTable(10.0, FakeClock(), max_servers=max_servers)
    return RegistryHandler(
        table, key=key, allow_listing=allow_listing, limits=RegistryLimits(max_servers=max_servers), wallclock=FakeClock(NOW)
    )


def ask(handler: RegistryHandler, body: Body, *, key: bytes | None = None, source: str = "192.0.2.9", timestamp: float = NOW, rid: bytes | None = None) -> Body:
    reply = handler.handle(encode(body, rid or new_rid(), key, timestamp=timestamp), source)
    assert reply is not None
    return decode(reply, handler.key).body


def test_register_query_unregister() -> None:
    handler = make_handler()
    assert ask(handler, Register(("Chat3", "Chat"), 5000, "10.0.0.5")) == Ack()
    assert ask(handler, Query("chat")) == Providers((("10.0.0.5", 5000),))
    assert ask(handler, Query("CHAT3")) == Providers((("10.0.0.5", 5000),))
    assert ask(handler, Unregister(5000, "10.0.0.5")) == Ack()
    assert ask(handler, Query("chat")) == Providers(())


@pytest.mark.parametrize("advertised", ["", "0.0.0.0"])
def test_without_an_advertised_address_the_senders_is_used(advertised: str) -> None:
    handler = make_handler()
    assert ask(handler, Register(("Echo",), 5000, advertised), source="192.0.2.7") == Ack()
    assert ask(handler, Query("echo")) == Providers((("192.0.2.7", 5000),))
    assert ask(handler, Unregister(5000, advertised), source="192.0.2.7") == Ack()
    assert ask(handler, Query("echo")) == Providers(())


def test_the_advertised_address_wins_over_the_senders() -> None:
    handler = make_handler()
    ask(handler, Register(("Echo",), 5000, "198.51.100.1"), source="127.0.0.1")
    assert ask(handler, Query("echo")) == Providers((("198.51.100.1", 5000),))


def test_listing_is_off_by_default() -> None:
    handler = make_handler()
    ask(handler, Register(("b", "a"), 1, "h"))
    reply = ask(handler, ListNames())
    assert isinstance(reply, Nack) and "disabled" in reply.reason
    assert handler.refused == 1
    listing = make_handler(allow_listing=True)
    ask(listing, Register(("b", "a"), 1, "h"))
    assert ask(listing, ListNames()) == Names(("A", "B"))


def test_bad_names_and_a_full_table_are_refused_with_a_reason() -> None:
    handler = make_handler(max_servers=1)
    reply = ask(handler, Register(tuple(f"n{i}" for i in range(40)), 1, "h"))
    assert isinstance(reply, Nack) and "names" in reply.reason
    assert ask(handler, Register(("a",), 1, "h")) == Ack()
    reply = ask(handler, Register(("a",), 2, "h"))
    assert reply == Nack("the registry is full")


# -- authentication ---------------------------------------------------------------------------


def test_with_a_key_registrations_must_be_signed() -> None:
    handler = make_handler(key=KEY)
    unsigned = ask(handler, Register(("Echo",), 1, "h"))
    assert isinstance(unsigned, Nack) and "authentication required" in unsigned.reason
    forged = ask(handler, Register(("Echo",), 1, "h"), key=OTHER_KEY)
    assert isinstance(forged, Nack) and "authentication failed" in forged.reason
    assert ask(handler, Query("echo")) == Providers(())
    assert ask(handler, Register(("Echo",), 1, "h"), key=KEY) == Ack()
    assert ask(handler, Query("echo")) == Providers((("h", 1),))  # queries need no key
    refused = ask(handler, Unregister(1, "h"))
    assert isinstance(refused, Nack)
    assert ask(handler, Query("echo")) == Providers((("h", 1),))  # nobody without the key removes it
    assert ask(handler, Unregister(1, "h"), key=KEY) == Ack()
    assert ask(handler, Query("echo")) == Providers(())
    assert handler.refused == 3


def test_replayed_and_stale_registrations_are_refused() -> None:
    handler = make_handler(key=KEY)
    data = encode(Register(("Echo",), 1, "h"), new_rid(), KEY, timestamp=NOW)
    first, second = handler.handle(data, "h"), handler.handle(data, "h")
    assert first is not None and second is not None
    assert decode(first, KEY).body == Ack()
    replayed = decode(second, KEY).body
    assert isinstance(replayed, Nack) and "replayed" in replayed.reason
    stale = ask(handler, Unregister(1, "h"), key=KEY, timestamp=NOW - 3600)
    assert isinstance(stale, Nack) and "stale" in stale.reason
    assert ask(handler, Query("echo")) == Providers((("h", 1),))


def test_a_registry_with_a_key_signs_its_replies() -> None:
    handler = make_handler(key=KEY)
    reply = handler.handle(encode(Query("x"), new_rid()), "h")
    assert reply is not None
    assert decode(reply, KEY).signature == VALID
    assert decode(reply, OTHER_KEY).signature != VALID
    plain = make_handler().handle(encode(Query("x"), new_rid()), "h")
    assert plain is not None and decode(plain, KEY).signature == UNSIGNED


def test_replies_answer_the_request_id() -> None:
    handler = make_handler()
    rid = new_rid()
    reply = handler.handle(encode(Query("x"), rid), "h")
    assert reply is not None and decode(reply).rid == rid


# -- limits and drops -------------------------------------------------------------------------


def test_a_long_answer_is_cut_down_to_fit_one_message() -> None:
    handler = make_handler()
    host = "h" * 200
    for port in range(1, 101):
        assert ask(handler, Register(("Popular",), port, host)) == Ack()
    reply = handler.handle(encode(Query("popular"), new_rid()), "x")
    assert reply is not None and len(reply) <= MAX_MESSAGE_SIZE
    body = decode(reply).body
    assert isinstance(body, Providers) and 0 < len(body.addresses) < 100
    assert body.addresses[0] == (host, 1)  # the oldest are kept


def test_garbage_and_replies_are_dropped_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    handler = make_handler()
    with caplog.at_level(logging.WARNING):
        assert handler.handle(b"\x00garbage", "203.0.113.1") is None
        assert handler.handle(encode(Ack(), new_rid()), "203.0.113.1") is None
        assert handler.handle(b"x" * (MAX_MESSAGE_SIZE + 1), "203.0.113.1") is None
    assert handler.dropped == 3
    dropped = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert len(dropped) == 3 and all("203.0.113.1" in text for text in dropped)


def test_drop_logging_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    handler = make_handler()
    with caplog.at_level(logging.WARNING):
        for _ in range(500):
            handler.handle(b"junk", "203.0.113.1")
    assert handler.dropped == 500
    assert len(caplog.records) <= 20 + 5
    assert ask(handler, Query("x")) == Providers(())  # still serving


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RegistryLimits(max_connections=0)
    with pytest.raises(ValueError):
        RegistryLimits(max_clock_skew=0)


# -- the per-source limit of UDP requests ----------------------------------------------------


def test_source_limiter_takes_tokens_per_source_and_refills_with_time() -> None:
    clock = FakeClock(0.0)
    limiter = RegistryHandler(RegistryTable(10.0, clock), limits=RegistryLimits(udp_rate=2.0, udp_burst=3)).limiter
    assert [limiter.allow("192.0.2.1") for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("192.0.2.2")  # another source has a bucket of its own
    clock.advance(0.5)  # one token back at 2 a second
    assert limiter.allow("192.0.2.1") and not limiter.allow("192.0.2.1")


def test_source_limiter_forgets_the_least_recently_used_past_max_sources() -> None:
    """A flood from ever new sources keeps at most max_sources buckets, dropping the least
    recently used one at a time: a source seen lately keeps its drained bucket."""
    clock = FakeClock(0.0)
    limiter = RegistryHandler(
        RegistryTable(10.0, clock), limits=RegistryLimits(udp_rate=0.001, udp_burst=1, max_sources=64)
    ).limiter
    assert limiter.allow("192.0.2.1") and not limiter.allow("192.0.2.1")  # drained
    for index in range(10_000):
        limiter.allow(f"10.{index // 65536}.{index // 256 % 256}.{index % 256}")
        if index % 32 == 0:
            assert not limiter.allow("192.0.2.1")  # recently used: still drained
        assert len(limiter._buckets) <= 64
    assert limiter.allow("10.0.0.0")  # long forgotten: a full bucket again

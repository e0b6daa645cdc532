"""The registry's request handling, sans I/O: request bytes and sender address in, reply bytes out.

Owns :class:`RegistryLimits` (the bounds of one registry), :class:`SourceLimiter` (per-source
token buckets against floods and reflection) and :class:`RegistryHandler`, which decodes a
request, applies the registry's policy (signed and fresh register/unregister when the
registry holds a key; listing only when allowed; the advertised address, or the sender's
when none is advertised) to the :class:`RegistryTable`, and encodes the reply within the
size the transport allows (a UDP reply to an unsigned request is at most
``UDP_REPLY_FACTOR`` times the request: it must not amplify a spoofed query). Malformed,
oversized or misdirected messages are dropped (no reply) and logged, rate-limited; refused
requests get a ``Nack`` saying why. It is thread-safe (one lock around the table) and owns no
socket: the UDP and TCP servers drive it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from ._auth import ReplayGuard
from ._errors import MessageError
from ._messages import (
    INVALID,
    MAX_MESSAGE_SIZE,
    UDP_REPLY_FACTOR,
    UNSIGNED,
    VALID,
    Ack,
    Body,
    Envelope,
    ListNames,
    Nack,
    Names,
    Providers,
    Query,
    Register,
    Unregister,
    decode,
    encode,
)
from ._table import RegistryTable

__all__ = ["RegistryHandler", "RegistryLimits", "SourceLimiter"]

_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_QUIET_AFTER = 20  # drops logged one by one before logging only every _LOG_EVERY-th
_LOG_EVERY = 100


@dataclass(frozen=True)
class RegistryLimits:
    """The bounds of one registry server.

    ``max_servers``: leases held at once; ``max_names``: names per server;
    ``max_name_length``: characters per name; ``max_clock_skew``: seconds a signed request's
    timestamp may differ from the registry's clock; ``nonce_cache_size``: signed requests
    remembered against replay; ``max_connections``: TCP clients served at once;
    ``connection_timeout``: seconds a TCP client may take to send a request;
    ``max_requests_per_connection``: requests served on one TCP connection;
    ``max_connections_per_source``: TCP clients served at once from one IP address;
    ``connection_lifetime``: seconds one TCP connection may be held in all;
    ``udp_rate``/``udp_burst``: UDP requests answered per second, and in a burst, per source
    address (more are dropped unanswered); ``max_sources``: source addresses tracked for that.
    Every message is at most ``MAX_MESSAGE_SIZE`` (8 KiB) bytes.
    """

    max_servers: int = 4096
    max_names: int = 32
    max_name_length: int = 128
    max_clock_skew: float = 60.0
    nonce_cache_size: int = 4096
    max_connections: int = 64
    connection_timeout: float = 5.0
    max_requests_per_connection: int = 64
    max_connections_per_source: int = 8
    connection_lifetime: float = 30.0
    udp_rate: float = 20.0
    udp_burst: int = 40
    max_sources: int = 4096

    def __post_init__(self) -> None:
        counts = (self.max_servers, self.max_names, self.max_name_length, self.nonce_cache_size,
                  self.max_connections, self.max_requests_per_connection, self.max_connections_per_source,
                  self.udp_burst, self.max_sources)
        times = (self.max_clock_skew, self.connection_timeout, self.connection_lifetime, self.udp_rate)
        if min(counts) < 1 or not all(value > 0 and math.isfinite(value) for value in times):
            raise ValueError("every registry limit must be positive")


class SourceLimiter:
    """A token bucket per source address: ``rate`` requests a second, ``burst`` at once.

    At most ``max_sources`` buckets are kept: past that, the least recently used is forgotten
    (in constant time: a flood from ever new, possibly spoofed, addresses costs no more per
    datagram than one from a known one). Thread-safe; ``clock`` is monotonic seconds.
    """

    def __init__(self, rate: float, burst: int, max_sources: int, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.max_sources, self.clock = rate, burst, max_sources, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, when)
        self._lock = threading.Lock()

    def allow(self, source: str) -> bool:
        """Take a token for ``source``; False when its bucket is empty."""
        now = self.clock()
        with self._lock:
            tokens, when = self._buckets.pop(source, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - when) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
            if len(self._buckets) > self.max_sources:  # (by one at most)
                self._buckets.popitem(last=False)
            return allowed


class RegistryHandler:
    """Turns request bytes into reply bytes (or None: dropped), applying them to ``table``.

    ``key``: when given, register and unregister must be signed with it, fresh and not
    replayed, and every reply is signed. ``allow_listing``: answer list requests.
    ``wallclock``: the clock signed timestamps are compared with (injected for tests).
    """

    def __init__(
        self,
        table: RegistryTable,
        *,
        key: bytes | None = None,
        allow_listing: bool = False,
        limits: RegistryLimits = RegistryLimits(),
        wallclock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        self.table = table
        self.key = key
        self.allow_listing = allow_listing
        self.limits = limits
        self.logger = logger or logging.getLogger("rpc_registry")
        self._wallclock = wallclock
        self._replay = ReplayGuard(limits.max_clock_skew, limits.nonce_cache_size, wallclock)
        self._lock = threading.Lock()
        self._next_prune = float("-inf")
        self.dropped = 0
        """Messages dropped without a reply (malformed, oversized, not a request)."""
        self.refused = 0
        """Requests answered with a refusal (authentication, limits, listing disabled)."""
        self.limiter = SourceLimiter(limits.udp_rate, limits.udp_burst, limits.max_sources, table.clock)

    def handle(self, data: bytes, source: str, *, max_reply: int | None = None) -> bytes | None:
        """The reply to the request ``data`` that came from IP address ``source``, or None.

        ``max_reply``: the largest reply allowed for an unsigned request (UDP passes
        ``UDP_REPLY_FACTOR * len(data)``); a request signed with the registry's key, fresh
        and not replayed, may get a full reply. Longer answers are cut to fit; when not even
        an empty one fits, the request is dropped.
        """
        try:
            envelope = decode(data, self.key)
        except MessageError as exc:
            self.drop(source, str(exc))
            return None
        if not isinstance(envelope.body, (Register, Unregister, Query, ListNames)):
            self.drop(source, f"a {type(envelope.body).__name__} is not a request")
            return None
        with self._lock:
            reply = self._apply(envelope, source)
            if isinstance(reply, Nack):
                self.refused += 1
            if max_reply is not None and isinstance(envelope.body, (Query, ListNames)) and self._trusted(envelope):
                max_reply = None
        encoded = self._encode_reply(reply, envelope, MAX_MESSAGE_SIZE if max_reply is None else max_reply)
        if encoded is None:
            self.drop(source, f"the reply does not fit in {max_reply} bytes ({UDP_REPLY_FACTOR}x the request)")
        return encoded

    def _trusted(self, envelope: Envelope) -> bool:
        """A query or list signed with our key, fresh and not replayed (lock held)."""
        return (
            self.key is not None
            and envelope.signature == VALID
            and self._replay.check(envelope.rid, envelope.timestamp) is None
        )

    # -- policy -------------------------------------------------------------------------

    def _apply(self, envelope: Envelope, source: str) -> Body:
        table = self.table
        now = table.clock()
        if now >= self._next_prune:  # forget expired leases now and then (bounded work)
            table.prune()
            self._next_prune = now + min(1.0, table.pruning_timeout)
        body = envelope.body
        if isinstance(body, Query):
            providers = table.query(body.name)
            self.logger.debug("query for %r from %s: %d server(s)", body.name, source, len(providers))
            return Providers(tuple(providers))
        if isinstance(body, ListNames):
            self.logger.debug("listing asked by %s%s", source, "" if self.allow_listing else " (refused: listing is disabled)")
            if not self.allow_listing:
                return Nack("listing is disabled on this registry")
            return Names(tuple(table.names(host=body.host or None)))
        assert isinstance(body, (Register, Unregister))
        refusal = self._authenticate(envelope, source)
        if refusal is not None:
            return Nack(refusal)
        host = source if body.host in _UNSPECIFIED_HOSTS else body.host
        if isinstance(body, Unregister):
            if table.unregister(host, body.port):
                self.logger.info("unregistered %s:%d (asked by %s)", host, body.port, source)
            return Ack()
        known = table.lease(host, body.port) is not None
        try:
            if not table.register(body.names, host, body.port):
                self.logger.warning("registry full (%d servers): refused %s:%d", table.max_servers, host, body.port)
                return Nack("the registry is full")
        except ValueError as exc:
            self.logger.warning("refused registration of %s:%d from %s: %s", host, body.port, source, exc)
            return Nack(str(exc))
        log = self.logger.debug if known else self.logger.info
        log("registered %s at %s:%d (from %s)", ", ".join(body.names), host, body.port, source)
        return Ack()

    def _authenticate(self, envelope: Envelope, source: str) -> str | None:
        """None when a register/unregister may proceed, else the reason it may not."""
        if self.key is None:
            return None
        if envelope.signature == UNSIGNED:
            reason = "authentication required: this registry accepts only signed registrations"
        elif envelope.signature == INVALID:
            reason = "authentication failed (wrong key or altered message)"
        else:
            refusal = self._replay.check(envelope.rid, envelope.timestamp)
            if refusal is None:
                return None
            reason = f"stale or replayed request: {refusal}"
        self.logger.warning("refused %s from %s: %s", type(envelope.body).__name__.lower(), source, reason)
        return reason

    # -- bytes --------------------------------------------------------------------------

    def _encode_reply(self, reply: Body, envelope: Envelope, max_size: int) -> bytes | None:
        """Encode ``reply``, cutting a long answer down until it fits in ``max_size`` bytes;
        None when not even an empty answer fits."""
        for _ in range(64):  # halving 1024 items (or 200 characters) reaches none well within this
            try:
                data: bytes | None = encode(reply, envelope.rid, self.key)
            except MessageError:
                data = None
            if data is not None and len(data) <= max_size:
                return data
            if isinstance(reply, Providers) and reply.addresses:
                reply = Providers(reply.addresses[: len(reply.addresses) // 2])
            elif isinstance(reply, Names) and reply.names:
                reply = Names(reply.names[: len(reply.names) // 2])
            elif isinstance(reply, Nack) and reply.reason:
                reply = Nack(reply.reason[: len(reply.reason) // 2])
            else:
                break
        if max_size >= MAX_MESSAGE_SIZE:
            return encode(Nack("the reply does not fit in one message"), envelope.rid, self.key)
        return None

    def drop(self, source: str, reason: str) -> None:
        """Count and log (rate-limited) a message dropped without a reply."""
        with self._lock:
            self.dropped += 1
            count = self.dropped
        if count <= _QUIET_AFTER or count % _LOG_EVERY == 0:
            self.logger.warning("dropped a message from %s: %s (%d dropped so far)", source, reason, count)

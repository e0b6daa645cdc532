"""The registry's request handling, sans I/O: request bytes and sender address in, reply bytes out.

Owns :class:`RegistryLimits` (the bounds of one registry) and :class:`RegistryHandler`, which
decodes a request, applies the registry's policy (signed and fresh register/unregister when
the registry holds a key; listing only when allowed; the advertised address, or the sender's
when none is advertised) to the :class:`RegistryTable`, and encodes the reply. Malformed,
oversized or misdirected messages are dropped (no reply) and logged, rate-limited; refused
requests get a ``Nack`` saying why. It is thread-safe (one lock around the table) and owns no
socket: the UDP and TCP servers drive it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ._auth import ReplayGuard
from ._errors import MessageError
from ._messages import (
    INVALID,
    UNSIGNED,
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

__all__ = ["RegistryHandler", "RegistryLimits"]

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
    ``max_requests_per_connection``: requests served on one TCP connection.
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

    def __post_init__(self) -> None:
        counts = (self.max_servers, self.max_names, self.max_name_length, self.nonce_cache_size,
                  self.max_connections, self.max_requests_per_connection)
        if min(counts) < 1 or not self.max_clock_skew > 0 or not self.connection_timeout > 0:
            raise ValueError("every registry limit must be positive")


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

    def handle(self, data: bytes, source: str) -> bytes | None:
        """The reply to the request ``data`` that came from IP address ``source``, or None."""
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
        return self._encode_reply(reply, envelope)

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
            return Names(tuple(table.names()))
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

    def _encode_reply(self, reply: Body, envelope: Envelope) -> bytes:
        """Encode ``reply``, cutting a long answer down until it fits in one message."""
        for _ in range(64):  # halving 1024 items reaches none well within this
            try:
                return encode(reply, envelope.rid, self.key)
            except MessageError:
                if isinstance(reply, Providers) and reply.addresses:
                    reply = Providers(reply.addresses[: len(reply.addresses) // 2])
                elif isinstance(reply, Names) and reply.names:
                    reply = Names(reply.names[: len(reply.names) // 2])
                else:
                    break
        return encode(Nack("the reply does not fit in one message"), envelope.rid, self.key)

    def drop(self, source: str, reason: str) -> None:
        """Count and log (rate-limited) a message dropped without a reply."""
        with self._lock:
            self.dropped += 1
            count = self.dropped
        if count <= _QUIET_AFTER or count % _LOG_EVERY == 0:
            self.logger.warning("dropped a message from %s: %s (%d dropped so far)", source, reason, count)

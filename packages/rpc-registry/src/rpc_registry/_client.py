"""The registry clients: ask registries who serves a name, and announce servers to them.

Owns :class:`RegistryClient` (what both transports share: the four requests, checking that a
reply answers *our* request and, with a key, that the registry signed it, and choosing the
address a server advertises), :class:`UDPRegistryClient` (broadcast by default, or unicast;
collects every reply within the timeout when broadcasting) and :class:`TCPRegistryClient`.
Each client is an ``rpc_service.Registrar``: pass one to a server as ``registrar=`` and the
server registers all its aliases, refreshes the lease every ``REREGISTER_INTERVAL`` seconds
and unregisters when it closes. Socket errors become :class:`RegistryUnavailableError`. It
must not hold module-level state or depend on the registry servers.
"""

from __future__ import annotations

import builtins
import ipaddress
import logging
import socket
import threading
import time
from typing import Callable, Sequence

from ._auth import KeyArg, check_key
from ._errors import MessageError, RegistryRefusedError, RegistryUnavailableError
from ._messages import (
    DEFAULT_PORT,
    MAX_MESSAGE_SIZE,
    PADDED_REQUEST_SIZE,
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
from ._stream import LENGTH_PREFIX, recv_exact

__all__ = ["RegistryClient", "TCPRegistryClient", "UDPRegistryClient", "facing_address"]

Address = tuple[str, int]
BROADCAST = "255.255.255.255"
_MAX_REPLIES = 256  # replies read for one request (a broadcast may be answered many times)
_UNREGISTER_WAIT = 1.0  # at most this long for an unregister's ack: servers wait on it to close
_REPLY_TYPES = (Ack, Nack, Providers, Names)
_UNSPECIFIED = ("", "0.0.0.0", "::")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def facing_address(ip: str, port: int) -> str:
    """The local IPv4 address of the interface that packets to ``ip`` leave from ("" if none).

    Found by "connecting" a UDP socket (which sends nothing) and reading its local address.
    """
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            probe.connect((ip, port))
            address: str = probe.getsockname()[0]
    except OSError:
        return ""
    return "" if address == "0.0.0.0" else address


class RegistryClient:
    """What the UDP and TCP clients share; use one of them.

    ``ip``/``port``: where the registry is; ``timeout``: seconds to wait for replies; ``key``:
    the registry's shared secret. With a key, register and unregister requests are signed and
    only replies signed by the registry are believed (a client with a key does not trust a
    registry without it). ``REREGISTER_INTERVAL`` (60 s) is how often a server refreshes its
    registration; keep it well below the registry's pruning timeout (180 s by default).
    """

    REREGISTER_INTERVAL: float = 60.0

    def __init__(
        self,
        ip: str,
        port: int = DEFAULT_PORT,
        timeout: float = 2.0,
        *,
        key: KeyArg = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be a whole number between 1 and 65535, not {port!r}")
        if not isinstance(ip, str):
            raise TypeError(f"ip must be a host name or address string, not {ip!r}")
        self.ip = ip
        self.port = port
        self.timeout = timeout
        self.key = check_key(key)
        self.logger = logger or logging.getLogger(f"rpc_registry.{type(self).__name__}")
        self._lock = threading.Lock()
        self._advertised: dict[int, str] = {}  # port -> host we registered it under

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ip}:{self.port}>"

    # -- the requests ---------------------------------------------------------------------

    def discover(self, name: str) -> builtins.list[Address]:
        """Every live ``(host, port)`` serving ``name`` (any letter case); [] when none does.

        Raises :class:`RegistryUnavailableError` when no registry answered at all.
        """
        found: builtins.list[Address] = []
        for body in self._answers(Query(name), Providers):
            assert isinstance(body, Providers)
            found.extend(address for address in body.addresses if address not in found)
        return found

    def list(self, filter_host: str | None = None) -> builtins.list[str]:
        """Every live name the registry knows, sorted (the registry must allow listing);
        with ``filter_host``, only the names of servers registered at exactly that host.

        Raises :class:`RegistryRefusedError` when listing is disabled.
        """
        if filter_host is not None and (type(filter_host) is not str or not filter_host):
            raise ValueError("filter_host must be a non-empty host string or None")
        names: set[str] = set()
        for body in self._answers(ListNames(filter_host or ""), Names):
            assert isinstance(body, Names)
            names.update(body.names)
        return sorted(names)

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        """Register (or refresh) ``aliases`` as served on ``port``; True when a registry acked.

        The address advertised is ``interface`` when given, else the local address of the
        interface that faces the registry (not 0.0.0.0, and not whatever source address the
        registry happens to see).
        """
        if isinstance(aliases, str):
            raise TypeError("aliases must be a sequence of names, not a single string")
        facing = facing_address(self._destination, self.port)
        host = facing if interface in _UNSPECIFIED else interface
        with self._lock:
            first = self._advertised.get(port) != host
            self._advertised[port] = host
        if first and _is_loopback(host) and facing and not _is_loopback(facing):
            self.logger.warning(
                "port %d is advertised as %s to the registry at %s: other hosts cannot reach it there "
                "(bind the server to a reachable address, e.g. hostname='0.0.0.0')", port, host, self.ip,
            )
        try:
            replies, ignored = self._ask(Register(tuple(aliases), port, host), stop=self._until_acked)
        except RegistryUnavailableError as exc:
            self.logger.warning("could not register port %d: %s", port, exc)
            return False
        return self._acked("register", replies, ignored)

    def unregister(self, port: int) -> None:
        """Withdraw every name registered for ``port`` (from this host); never raises for
        network trouble, which is only logged."""
        with self._lock:
            host = self._advertised.pop(port, None)
        if host is None:
            host = facing_address(self._destination, self.port)
        try:
            replies, ignored = self._ask(
                Unregister(port, host), stop=self._until_acked, timeout=min(self.timeout, _UNREGISTER_WAIT)
            )
        except RegistryUnavailableError as exc:
            self.logger.warning("could not unregister port %d: %s", port, exc)
            return
        self._acked("unregister", replies, ignored)

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _destination(self) -> str:
        return self.ip

    def _answers(self, request: Body, kind: type) -> builtins.list[Body]:
        replies, ignored = self._ask(request, stop=lambda body: not self._collects_all)
        if not replies:
            why = f" (ignored: {'; '.join(ignored)})" if ignored else ""
            raise RegistryUnavailableError(f"no registry answered at {self.ip}:{self.port} within {self.timeout:g} s{why}")
        answers = [body for body in replies if isinstance(body, kind)]
        if not answers:
            reasons = sorted({body.reason for body in replies if isinstance(body, Nack)})
            raise RegistryRefusedError("; ".join(reasons) or "unexpected reply")
        return answers

    def _acked(self, what: str, replies: builtins.list[Body], ignored: builtins.list[str]) -> bool:
        if any(isinstance(body, Ack) for body in replies):
            return True
        reasons = [body.reason for body in replies if isinstance(body, Nack)]
        if reasons:
            self.logger.warning("the registry at %s:%d refused to %s: %s", self.ip, self.port, what, "; ".join(reasons))
        else:
            why = f" (ignored: {'; '.join(ignored)})" if ignored else ""
            self.logger.warning("no registry acknowledged %s at %s:%d within %g s%s", what, self.ip, self.port, self.timeout, why)
        return False

    @property
    def _collects_all(self) -> bool:
        """True when several registries may answer one request (broadcast)."""
        return False

    def _until_acked(self, body: Body) -> bool:
        """Stop waiting at the first ack, or at the first reply when only one registry answers."""
        return isinstance(body, Ack) or not self._collects_all

    def _ask(
        self, request: Body, *, stop: Callable[[Body], bool], timeout: float | None = None
    ) -> tuple[builtins.list[Body], builtins.list[str]]:
        """Send ``request``; return the replies to it, until ``stop(reply)`` or the timeout,
        and why other messages that arrived meanwhile were ignored."""
        rid = new_rid()
        data = self._encode(request, rid)
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        ignored: builtins.list[str] = []

        def accept(reply: bytes, source: str) -> Body | None:
            body, why = self._accept(reply, rid)
            if why:
                self.logger.debug("ignored a reply from %s: %s", source, why)
                ignored.append(f"{source}: {why}")
            return body

        return self._exchange(data, accept, stop, deadline), ignored

    def _encode(self, request: Body, rid: bytes) -> bytes:
        """The request's bytes: register and unregister are signed when we hold a key."""
        return encode(request, rid, self.key if isinstance(request, (Register, Unregister)) else None)

    def _exchange(
        self, data: bytes, accept: Callable[[bytes, str], Body | None], stop: Callable[[Body], bool], deadline: float
    ) -> builtins.list[Body]:
        """Send ``data``; return what ``accept(reply, source)`` makes of the replies."""
        raise NotImplementedError

    def _accept(self, data: bytes, rid: bytes) -> tuple[Body | None, str]:
        """The body of a reply to request ``rid``, or None and why it is not one."""
        try:
            envelope = decode(data, self.key)
        except MessageError as exc:
            return None, f"malformed reply: {exc}"
        if envelope.rid != rid or not isinstance(envelope.body, _REPLY_TYPES):
            return None, "not an answer to our request"
        if self.key is not None and envelope.signature != VALID:
            return None, f"{envelope.signature} reply, but we hold a key"
        return envelope.body, ""


class UDPRegistryClient(RegistryClient):
    """Talks to registries over UDP: broadcast to ``255.255.255.255`` by default, or unicast.

    When broadcasting (``broadcast=None`` guesses from ``ip``: the limited broadcast address
    or one ending in ``.255``), every reply that arrives within ``timeout`` is collected, so
    ``discover`` merges the answers of every registry on the network, and takes the whole
    timeout; unicast returns as soon as the registry answers.
    """

    def __init__(
        self,
        ip: str = BROADCAST,
        port: int = DEFAULT_PORT,
        timeout: float = 2.0,
        *,
        broadcast: bool | None = None,
        key: KeyArg = None,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__(ip, port, timeout, key=key, logger=logger)
        if broadcast is None:
            broadcast = ip in (BROADCAST, "<broadcast>") or ip.endswith(".255")
        self.broadcast = broadcast

    @property
    def _destination(self) -> str:
        return BROADCAST if self.ip == "<broadcast>" else self.ip

    @property
    def _collects_all(self) -> bool:
        return self.broadcast

    def _encode(self, request: Body, rid: bytes) -> bytes:
        """Queries and lists may draw long replies, which a UDP registry sends only to a request
        signed with its key, or padded to a third of the largest reply (no amplification)."""
        if isinstance(request, (Query, ListNames)):
            if self.key is not None:
                return encode(request, rid, self.key)
            return encode(request, rid, pad_to=PADDED_REQUEST_SIZE)
        return super()._encode(request, rid)

    def _exchange(
        self, data: bytes, accept: Callable[[bytes, str], Body | None], stop: Callable[[Body], bool], deadline: float
    ) -> builtins.list[Body]:
        replies: builtins.list[Body] = []
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                sock.sendto(data, (self._destination, self.port))
                for _ in range(_MAX_REPLIES):
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    sock.settimeout(remaining)
                    try:
                        reply, address = sock.recvfrom(MAX_MESSAGE_SIZE + 1)
                    except TimeoutError:
                        break
                    body = accept(reply, address[0])
                    if body is not None:
                        replies.append(body)
                        if stop(body):
                            break
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot reach a registry at {self.ip}:{self.port}: {exc}") from exc
        return replies


class TCPRegistryClient(RegistryClient):
    """Talks to one registry over TCP (a connection per request)."""

    def _exchange(
        self, data: bytes, accept: Callable[[bytes, str], Body | None], stop: Callable[[Body], bool], deadline: float
    ) -> builtins.list[Body]:
        try:
            with socket.create_connection((self.ip, self.port), timeout=max(0.001, deadline - time.monotonic())) as sock:
                sock.sendall(LENGTH_PREFIX.pack(len(data)) + data)
                header = recv_exact(sock, LENGTH_PREFIX.size, deadline)
                if header is None:
                    raise EOFError("the registry closed the connection without answering")
                (size,) = LENGTH_PREFIX.unpack(header)
                if size > MAX_MESSAGE_SIZE:
                    raise EOFError(f"the registry announced a reply of {size} bytes")
                reply = recv_exact(sock, size, deadline)
                if reply is None:
                    raise EOFError("the registry closed the connection in the middle of a reply")
                source: str = sock.getpeername()[0]
        except (OSError, EOFError) as exc:
            raise RegistryUnavailableError(f"cannot talk to the registry at {self.ip}:{self.port}: {exc}") from exc
        body = accept(reply, source)
        return [] if body is None else [body]

"""The registry's lease table: which names are served where, and until when.

Owns :class:`RegistryTable`, a pure data structure driven by the registry servers: a server
(``host``, ``port``) holds one *lease* on a set of names; registering again refreshes the lease
and replaces the names; a lease not refreshed within ``pruning_timeout`` seconds disappears
from queries and listings. Names compare case-insensitively (stored upper-cased, like
``rpc_service`` reports them). Time comes from the injected ``clock``, so tests advance it
instead of sleeping. Sizes are bounded. It does no I/O, no logging and no locking (its
callers serialize access).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable

__all__ = ["DEFAULT_PRUNING_TIMEOUT", "Lease", "RegistryTable"]

#: Three times the registry clients' default ``REREGISTER_INTERVAL`` (60 s): a server may
#: miss two refreshes before it disappears.
DEFAULT_PRUNING_TIMEOUT = 180.0

Address = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Lease:
    """One server's registration: its names, since when it is known, and when it expires."""

    host: str
    port: int
    names: frozenset[str]
    since: float
    expires: float

    @property
    def address(self) -> Address:
        return (self.host, self.port)


def normalize_name(name: str) -> str:
    """The form in which names are stored and compared (upper case)."""
    return name.upper()


class RegistryTable:
    """Leases of servers on service names, with expiry on an injected clock.

    ``max_servers`` bounds the number of leases, ``max_names`` the names per lease and
    ``max_name_length`` each name. :meth:`register` raises ``ValueError`` for names it cannot
    accept and returns False when the table is full of live leases.
    """

    def __init__(
        self,
        pruning_timeout: float = DEFAULT_PRUNING_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_servers: int = 4096,
        max_names: int = 32,
        max_name_length: int = 128,
    ) -> None:
        if not pruning_timeout > 0:
            raise ValueError("pruning_timeout must be > 0")
        if max_servers < 1 or max_names < 1 or max_name_length < 1:
            raise ValueError("the table's limits must be >= 1")
        self.pruning_timeout = float(pruning_timeout)
        self.clock = clock
        self.max_servers = max_servers
        self.max_names = max_names
        self.max_name_length = max_name_length
        self._leases: dict[Address, Lease] = {}

    def __len__(self) -> int:
        """The number of live leases."""
        return len(self.leases())

    def __repr__(self) -> str:
        return f"<RegistryTable {len(self)} servers, pruning after {self.pruning_timeout:g} s>"

    def register(self, names: Iterable[str], host: str, port: int) -> bool:
        """Lease ``names`` to ``host:port`` for ``pruning_timeout`` seconds from now.

        A server that registers again refreshes its lease and its names become exactly the
        ones given (aliases it dropped are withdrawn). Returns False when the table is full.
        """
        wanted = self._check_names(names)
        now = self.clock()
        address = (host, port)
        old = self._leases.get(address)
        if old is None or old.expires <= now:
            if old is not None:
                del self._leases[address]  # a lapsed lease comes back as a new one, last in order
                old = None
            if len(self._leases) >= self.max_servers:
                self.prune()
                if len(self._leases) >= self.max_servers:
                    return False
        since = now if old is None else old.since
        self._leases[address] = Lease(host, port, wanted, since, now + self.pruning_timeout)
        return True

    def unregister(self, host: str, port: int) -> bool:
        """Drop the lease of ``host:port``; True when there was a live one."""
        lease = self._leases.pop((host, port), None)
        return lease is not None and lease.expires > self.clock()

    def lease(self, host: str, port: int) -> Lease | None:
        """The live lease of ``host:port``, if any."""
        lease = self._leases.get((host, port))
        return lease if lease is not None and lease.expires > self.clock() else None

    def query(self, name: str) -> list[Address]:
        """Every live ``(host, port)`` serving ``name`` (any letter case), oldest lease first."""
        key = normalize_name(name)
        return [lease.address for lease in self.leases() if key in lease.names]

    def names(self, host: str | None = None) -> list[str]:
        """Every live name, sorted; with ``host``, only those of servers registered at it."""
        return sorted({name for lease in self.leases() if host is None or lease.host == host for name in lease.names})

    def services(self) -> dict[str, list[Address]]:
        """Every live name with its providers, oldest lease first."""
        found: dict[str, list[Address]] = {}
        for lease in self.leases():
            for name in sorted(lease.names):
                found.setdefault(name, []).append(lease.address)
        return dict(sorted(found.items()))

    def leases(self) -> list[Lease]:
        """The live leases, oldest first."""
        now = self.clock()
        live = [lease for lease in self._leases.values() if lease.expires > now]
        live.sort(key=lambda lease: lease.since)  # stable: equal ages stay in registration order
        return live

    def prune(self) -> int:
        """Forget every expired lease; return how many were dropped."""
        now = self.clock()
        expired = [address for address, lease in self._leases.items() if lease.expires <= now]
        for address in expired:
            del self._leases[address]
        return len(expired)

    def _check_names(self, names: Iterable[str]) -> frozenset[str]:
        if isinstance(names, str):
            raise TypeError("names must be an iterable of names, not a single string")
        wanted: set[str] = set()
        for name in names:
            if not isinstance(name, str) or not name or not name.isprintable() or name != name.strip():
                raise ValueError(f"invalid service name {name!r:.60}")
            if len(name) > self.max_name_length:
                raise ValueError(f"service name longer than {self.max_name_length} characters")
            wanted.add(normalize_name(name))
            if len(wanted) > self.max_names:
                raise ValueError(f"more than {self.max_names} names for one server")
        if not wanted:
            raise ValueError("no names to register")
        return frozenset(wanted)

"""Discovery for users: find servers by service name and connect to one of them.

Owns the module functions :func:`discover`, :func:`list_services` and
:func:`connect_by_service`. Without a ``registrar`` they ask by UDP broadcast
(``UDPRegistryClient()``). ``connect_by_service`` tries each provider in the registry's order
until one completes the handshake, and raises ``rpc_service.ServiceNotFoundError`` naming
every failure when none does. It must not talk to sockets itself: the clients and
``rpc_service.connect`` do.
"""

from __future__ import annotations

import builtins
import logging
from typing import Protocol

from rpc_protocol import RPCError
from rpc_service import ConfigArg, Connection, ServiceArg, ServiceNotFoundError, VoidService, connect

from ._client import UDPRegistryClient
from ._errors import RegistryError

__all__ = ["connect_by_service", "discover", "list_services"]

Address = tuple[str, int]

_logger = logging.getLogger("rpc_registry")


class Lookup(Protocol):
    """What discovery asks of a registrar: the UDP/TCP clients and ``RedisRegistry`` have it."""

    def discover(self, name: str) -> builtins.list[Address]: ...

    def list(self, filter_host: str | None = None) -> builtins.list[str]: ...


def discover(name: str, registrar: Lookup | None = None) -> list[Address]:
    """Every ``(host, port)`` that serves ``name`` (any letter case); [] when none does.

    Raises :class:`RegistryUnavailableError` when no registry answered.
    """
    return _registry(registrar, "discover").discover(name)


def list_services(registrar: Lookup | None = None, *, filter_host: str | None = None) -> list[str]:
    """Every service name the registry knows (it must allow listing), sorted; with
    ``filter_host``, only the names of servers registered at exactly that host.

    ``registrar`` may be any registry client with ``list(filter_host=...)`` (the UDP, TCP
    and Redis registrars)."""
    return _registry(registrar, "list").list(filter_host=filter_host)


def _registry(registrar: Lookup | None, method: str) -> Lookup:
    """``registrar``, or the UDP broadcast client when None; TypeError when it cannot answer."""
    if registrar is None:
        return UDPRegistryClient()
    if not callable(getattr(registrar, method, None)):
        raise TypeError(f"registrar must be a registry client with {method}() (UDPRegistryClient, TCPRegistryClient, RedisRegistry), not {registrar!r}")
    return registrar


def connect_by_service(
    name: str,
    registrar: Lookup | None = None,
    service: ServiceArg = VoidService,
    config: ConfigArg = None,
    *,
    timeout: float | None = 10.0,
) -> Connection:
    """Connect to a server offering ``name``: each provider is tried in turn until one answers.

    ``service``/``config`` are this side's, as for ``rpc_service.connect``; ``timeout`` bounds
    each connection attempt. Raises ``ServiceNotFoundError`` when the registry cannot be asked,
    knows no provider, or no provider answers.
    """
    try:
        addresses = discover(name, registrar)
    except RegistryError as exc:
        raise ServiceNotFoundError(f"cannot look up service {name!r}: {exc}") from exc
    if not addresses:
        raise ServiceNotFoundError(f"no server offers service {name!r}")
    failures: list[str] = []
    for host, port in addresses:
        try:
            return connect(host, port, service, config, timeout=timeout)
        except (RPCError, OSError) as exc:
            _logger.info("provider %s:%d of %r did not answer: %s", host, port, name, exc)
            failures.append(f"{host}:{port}: {exc}")
    raise ServiceNotFoundError(
        f"none of the {len(addresses)} servers offering service {name!r} answered: " + "; ".join(failures)
    )

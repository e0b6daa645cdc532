"""Hooks the upper layers implement: :class:`Registrar` and :class:`Authenticator`.

Declared here, as protocols, so ``rpc_service`` never imports the packages that implement
them (``rpc_registry`` provides registrars, ``rpc_tls`` an authenticator).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Protocol, Sequence, Union, runtime_checkable

if TYPE_CHECKING:
    from ._streams import Stream

__all__ = ["Authenticator", "Registrar", "check_hooks"]


@runtime_checkable
class Registrar(Protocol):
    """Announces a server's service names to a registry (leases refreshed periodically)."""

    REREGISTER_INTERVAL: float

    def register(self, aliases: Sequence[str], port: int, interface: str = "") -> bool:
        """Register (or refresh) ``aliases`` as served on ``port``; True when acknowledged."""
        ...

    def unregister(self, port: int) -> None:
        """Withdraw every name registered for ``port``."""
        ...


class Authenticator(Protocol):
    """Called on each accepted socket, off the accept loop, before the protocol handshake.

    Returns what to talk over from then on, a socket (possibly wrapped) or a ready
    :class:`Stream` (e.g. a TLS stream), and the peer's credentials, which the service
    sees as ``conn.credentials``. Raises
    :class:`AuthenticationError` (or any exception) to refuse the peer.
    """

    def __call__(self, sock: socket.socket) -> tuple[Union[socket.socket, Stream], Any]: ...


def check_hooks(authenticator: object, registrar: object) -> None:
    """TypeError for a server's ``authenticator`` that is not callable or ``registrar``
    without ``register``/``unregister`` (each None when not wanted), at construction: later,
    every client would be dropped, or the registration only logged as failing."""
    if authenticator is not None and not callable(authenticator):
        raise TypeError(f"authenticator must be a callable taking the accepted socket, not {authenticator!r}")
    if registrar is not None and not all(callable(getattr(registrar, name, None)) for name in ("register", "unregister")):
        raise TypeError(f"registrar must be a Registrar (register, unregister: e.g. rpc_registry.UDPRegistryClient()), not {registrar!r}")

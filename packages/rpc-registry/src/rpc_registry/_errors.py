"""The exceptions of the registry layer, under the stack's root ``RPCError``.

Owns the errors a user of registry clients and servers can meet. Socket errors (``OSError``)
are translated where they enter, in the client and server modules; "no server offers this
name" is ``rpc_service.ServiceNotFoundError``, raised by :func:`connect_by_service`::

    RPCError (rpc_protocol)
    ├── ServiceNotFoundError        (rpc_service) no provider of a name answered
    └── RegistryError               a registry could not be used
        ├── RegistryUnavailableError    no registry answered within the timeout
        ├── RegistryRefusedError        a registry answered with a refusal (listing disabled,
        │                               authentication failed, table full...)
        └── MessageError                bytes that are not a valid registry message (malformed,
                                        oversized, wrong magic or version, bad signature)

This module must not hold state or import anything but ``rpc_protocol``.
"""

from __future__ import annotations

from rpc_protocol import RPCError

__all__ = ["MessageError", "RegistryError", "RegistryRefusedError", "RegistryUnavailableError"]


class RegistryError(RPCError):
    """A registry could not be used (unreachable, refusing, or speaking nonsense)."""


class RegistryUnavailableError(RegistryError):
    """No registry answered at the address asked within the timeout."""


class RegistryRefusedError(RegistryError):
    """A registry answered, but refused the request; ``reason`` is what it said."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MessageError(RegistryError):
    """Bytes that are not a valid registry message: the registry drops them and logs why."""

"""The exceptions of the service layer, under the stack's root ``RPCError``.

Owns the errors a user of connections, proxies and servers can meet. Errors from below
(``OSError`` from sockets and pipes) are translated where they enter, in the stream and
connection modules; protocol errors come from ``rpc_protocol`` unchanged::

    RPCError (rpc_protocol)
    ├── ProtocolError ...          (rpc_protocol: malformed bytes, handshake failures)
    │   └── EncodeError ...        (rpc_protocol: a value cannot be put on the wire)
    │       └── LentObjectsLimitError  lending one more object would pass max_lent_objects
    ├── ConnectionFailedError      could not connect (also a ConnectionError/OSError)
    │   └── ConnectionRejectedError    the server refused us: its on_connect raised (the reason says why)
    ├── HandshakeTimeout           the handshake did not finish in time (also a TimeoutError)
    ├── ConnectionClosedError      the connection is closed, or closed while waiting
    ├── AsyncResultTimeout         a reply did not arrive in time (also a TimeoutError)
    ├── DeadlineExceeded           the deadline of a call ran out (also a TimeoutError)
    ├── AuthenticationError        an authenticator rejected the peer
    ├── ServiceNotFoundError       no service by that name (discovery, connect_by_service)
    └── RemoteError                a remote exception whose type is not a builtin

Every failure to open a connection (``connect`` and the other factories) is an
``RPCError``: ConnectionFailedError, ConnectionRejectedError, HandshakeTimeout,
ConnectionClosedError (the peer hung up mid-handshake) or a ProtocolError.

A remote exception of a builtin type (``ValueError``, ``KeyError``...) is re-raised as that
very type, with the remote traceback attached as ``remote_traceback`` and as a note.
"""

from __future__ import annotations

from rpc_protocol import EncodeError, RPCError

__all__ = [
    "AsyncResultTimeout",
    "AuthenticationError",
    "ConnectionClosedError",
    "ConnectionFailedError",
    "ConnectionRejectedError",
    "DeadlineExceeded",
    "HandshakeTimeout",
    "LentObjectsLimitError",
    "RemoteError",
    "ServiceNotFoundError",
]


class ConnectionFailedError(RPCError, ConnectionError):
    """A connection could not be established (refused, unreachable, name not found)."""


class ConnectionRejectedError(ConnectionFailedError):
    """The accepting side refused the connection during the handshake (its ``on_connect``
    raised); the message carries the reason it sent: the exception's type and message."""


class HandshakeTimeout(RPCError, TimeoutError):
    """The handshake (or, from a factory's ``timeout``, the connect and the handshake) did
    not finish in time."""


class ConnectionClosedError(RPCError, EOFError):
    """The connection is closed (by either side), or closed while a call was waiting."""


class AsyncResultTimeout(RPCError, TimeoutError):
    """The reply to a request did not arrive within the allowed time."""


class DeadlineExceeded(RPCError, TimeoutError):
    """The deadline of a call (``rpc_service.deadline``) ran out before its answer came; the
    peer was told to cancel it. Raised at the deadline, without waiting for the peer."""


class AuthenticationError(RPCError):
    """An authenticator refused the peer (raised inside authenticators, logged by servers)."""


class ServiceNotFoundError(RPCError):
    """No server offers a service by the requested name."""


class LentObjectsLimitError(EncodeError):
    """Sending a value would lend the peer more distinct objects than ``max_lent_objects``.

    Raised where the value is sent (a call's arguments, or a reply, which then reaches the
    peer as this error); the objects the peer already holds stay lent until it releases them.
    """


class RemoteError(RPCError):
    """An exception raised on the peer whose type is not a Python builtin.

    ``remote_type`` is the exception's qualified name on the peer (``module.Class``),
    ``remote_args`` its arguments (values that could not cross are given as their repr),
    ``remote_traceback`` the peer's traceback text (empty when the peer withholds it).
    """

    def __init__(self, remote_type: str, remote_args: tuple[object, ...] = (), remote_traceback: str = "") -> None:
        super().__init__(remote_type, *remote_args)
        self.remote_type = remote_type
        self.remote_args = remote_args
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        args = ", ".join(repr(arg) for arg in self.remote_args)
        text = f"{self.remote_type}({args})"
        if self.remote_traceback:
            text += "\n\n========= remote traceback =========\n" + self.remote_traceback.rstrip()
        return text

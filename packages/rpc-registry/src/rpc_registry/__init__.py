"""rpc_registry: service discovery for the rpc stack.

Servers announce their services by name to a registry; clients find them by name. A registry
is a :class:`UDPRegistryServer` (it hears broadcasts) or a :class:`TCPRegistryServer`; a
registration is a lease that the server refreshes and that lapses after ``pruning_timeout``.
The clients, :class:`UDPRegistryClient` and :class:`TCPRegistryClient`, are the
``rpc_service.Registrar`` a server takes as ``registrar=``, and they answer
:func:`discover`, :func:`list_services` and :func:`connect_by_service`::

    import rpc_registry, rpc_service

    registrar = rpc_registry.UDPRegistryClient()            # broadcast to 255.255.255.255:18811
    with rpc_service.ThreadedServer(EchoService, hostname="0.0.0.0", registrar=registrar) as server:
        server.start_in_thread()                             # registers ECHO, refreshes, unregisters
        ...
    conn = rpc_registry.connect_by_service("echo")           # from any host on the network

On Redis, :class:`RedisRegistry` (extra ``rpc-registry[redis]``) is the registry and the
registrar at once: servers hold leases on keys that expire, clients ask Redis directly.

Messages travel in the ``rpc_protocol`` value codec; register and unregister can be signed
with a shared key (HMAC-SHA256, timestamp and nonce against replay).
"""

from __future__ import annotations

from .__about__ import __version__
from ._auth import load_key
from ._client import RegistryClient, TCPRegistryClient, UDPRegistryClient
from ._discovery import connect_by_service, discover, list_services
from ._errors import MessageError, RegistryError, RegistryRefusedError, RegistryUnavailableError
from ._handler import RegistryHandler, RegistryLimits
from ._messages import DEFAULT_PORT, UDP_REPLY_FACTOR
from ._redis import DEFAULT_REDIS_URL, DEFAULT_TTL, RedisRegistry
from ._server import RegistryServer, TCPRegistryServer, UDPRegistryServer
from ._table import DEFAULT_PRUNING_TIMEOUT, Lease, RegistryTable

#: RPyC's name for the default registry port.
REGISTRY_PORT = DEFAULT_PORT

__all__ = [
    "__version__",
    # servers
    "RegistryServer",
    "TCPRegistryServer",
    "UDPRegistryServer",
    "RegistryHandler",
    "RegistryLimits",
    "RegistryTable",
    "Lease",
    # clients and discovery
    "RegistryClient",
    "TCPRegistryClient",
    "UDPRegistryClient",
    "RedisRegistry",
    "connect_by_service",
    "discover",
    "list_services",
    "load_key",
    # constants
    "DEFAULT_PORT",
    "DEFAULT_PRUNING_TIMEOUT",
    "DEFAULT_REDIS_URL",
    "DEFAULT_TTL",
    "REGISTRY_PORT",
    "UDP_REPLY_FACTOR",
    # errors
    "MessageError",
    "RegistryError",
    "RegistryRefusedError",
    "RegistryUnavailableError",
]

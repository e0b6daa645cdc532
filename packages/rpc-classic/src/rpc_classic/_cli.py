"""The ``rpc-classic`` command: serve a :class:`SlaveService` (threaded, forking, oneshot, stdio).

Owns parsing the command line, choosing and starting the server, the loud warning when a
Slave listens on TCP without TLS client certificates, and the optional registry lease. With
no address option it listens on a unix socket, mode 0600, in a fresh private (0700)
directory whose path it prints; TCP (127.0.0.1 unless told otherwise) takes an explicit
``--host``/``--port``, TLS or registry option. ``rpc_tls`` and ``rpc_registry`` are imported only when
their options are used, so the command works with neither installed. Nothing here runs on
import; ``main`` is the entry point.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from typing import Any, Sequence

import rpc_service

from .__about__ import __version__
from ._cli_args import OneLineParser, configure_logging, host_address, port_number
from ._factories import DEFAULT_PORT, DEFAULT_TLS_PORT
from ._service import SlaveService, classic_config

__all__ = ["main", "build_parser", "bind_warning", "private_socket_path"]

DEFAULT_REGISTRY_PORT = 18811
SOCKET_NAME = "classic.sock"


def _server_class(mode: str) -> type[rpc_service.Server]:
    if mode == "forking":
        return rpc_service.ForkingServer
    if mode == "oneshot":
        return rpc_service.OneShotServer
    return rpc_service.ThreadedServer


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rpc-classic",
        description="Serve a classic-mode SlaveService: whoever connects can import, eval and exec "
        "anything as this user. Without --host/--port/--socket-path it listens on a unix socket "
        "(mode 0600) in a new private directory and prints its path; TCP needs an explicit --host "
        "or --port and warns loudly unless clients must present TLS certificates (--ca-certs).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--mode", choices=("threaded", "forking", "oneshot", "stdio"), default="threaded",
        help="threaded (default): a thread per client; forking: a process per client; oneshot: serve "
        "one client, after printing HOST<TAB>PORT; stdio: one client on stdin/stdout",
    )
    parser.add_argument("--host", type=host_address, default=None, help="serve TCP on this address (with --port alone: 127.0.0.1, ::1 with --ipv6)")
    parser.add_argument("--port", type=port_number, default=None, help=f"serve TCP on this port (default {DEFAULT_PORT}, {DEFAULT_TLS_PORT} with TLS; 0 picks one)")
    parser.add_argument("--ipv6", action="store_true", help="listen on IPv6")
    parser.add_argument("--socket-path", default=None, help="listen on this unix socket instead of TCP")
    tls = parser.add_argument_group("TLS (needs rpc-classic[tls])")
    tls.add_argument("--certfile", default=None, help="the server's certificate (PEM)")
    tls.add_argument("--keyfile", default=None, help="the server's private key (PEM)")
    tls.add_argument("--ca-certs", default=None, help="CA certificates: clients must present a certificate they sign")
    registry = parser.add_argument_group("registry (needs rpc-classic[registry])")
    registry.add_argument("--register", action="store_true", help="announce the server to a registry")
    registry.add_argument("--registry-type", choices=("udp", "tcp"), default="udp", help="the registry's transport (default: udp)")
    registry.add_argument("--registry-host", type=host_address, default=None, help="the registry (UDP default: broadcast)")
    registry.add_argument(
        "--registry-port", type=port_number, default=DEFAULT_REGISTRY_PORT, help=f"the registry's port (default: {DEFAULT_REGISTRY_PORT})"
    )
    registry.add_argument(
        "--register-redis", metavar="URL", default=None,
        help="announce the server on Redis (redis://[user:password@]host[:port][/db], rediss://...; "
        "needs rpc-registry[redis])",
    )
    logs = parser.add_argument_group("logging (default: INFO and above, to stderr)")
    verbosity = logs.add_mutually_exclusive_group()
    verbosity.add_argument("--quiet", "-q", action="store_true", help="log warnings and errors only")
    verbosity.add_argument("--verbose", "-v", action="store_true", help="log DEBUG records too (every connection and registration)")
    logs.add_argument("--logfile", metavar="PATH", default=None, help="append the log to PATH instead of stderr")
    return parser


def is_loopback(host: str | None) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if not host or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def bind_warning(host: str | None, tls: bool, ca_certs: bool, socket_path: str | None = None) -> str | None:
    """The warning to print for this binding: None only for a unix socket or TCP that
    requires TLS client certificates (``--ca-certs``). A loopback TCP port is reachable by
    every local account, so it warns too."""
    if socket_path is not None or (tls and ca_certs):
        return None
    if is_loopback(host):
        who, remedy = (
            "every account on this machine",
            "Prefer the default private unix socket (no --host/--port), --socket-path in a directory only you can enter",
        )
    else:
        who, remedy = f"anyone who can reach {host}", "Bind 127.0.0.1 or a unix socket"
    if not tls:
        return (
            f"WARNING: rpc-classic serves a SlaveService on TCP {host or 'localhost'} WITHOUT TLS client "
            f"certificates: {who} can connect and run any code as this user. {remedy}, or use "
            "--certfile/--keyfile with --ca-certs so that only clients holding a certificate signed by "
            "your CA get in."
        )
    return (
        f"WARNING: rpc-classic serves a SlaveService on TCP {host or 'localhost'} over TLS but without "
        f"--ca-certs: traffic is encrypted, yet any client can connect ({who}) and run any code as this user."
    )


def wants_tcp(args: argparse.Namespace) -> bool:
    """Whether the options ask for TCP (an address, TLS or a registry lease), or the platform
    has no unix sockets."""
    explicit = args.host is not None or args.port is not None or args.ipv6 or args.certfile or args.keyfile or args.register or args.register_redis
    return bool(explicit) or not hasattr(socket, "AF_UNIX")


def private_socket_path() -> str:
    """A unix socket path inside a new directory only this user can enter (mode 0700), under
    ``$XDG_RUNTIME_DIR`` when it is set, else the temporary directory."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = runtime if runtime and os.path.isdir(runtime) else None
    return os.path.join(tempfile.mkdtemp(prefix="rpc-classic-", dir=base), SOCKET_NAME)


def _shout(text: str) -> None:
    bar = "!" * 78
    print(f"{bar}\n{text}\n{bar}", file=sys.stderr, flush=True)


def _authenticator(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    if not (args.certfile or args.keyfile):
        if args.ca_certs:
            parser.error("--ca-certs needs --certfile and --keyfile")
        return None
    if not (args.certfile and args.keyfile):
        parser.error("TLS needs both --certfile and --keyfile")
    try:
        import rpc_tls
    except ImportError:
        parser.error("TLS options need rpc-tls: pip install 'rpc-classic[tls]'")
    try:
        return rpc_tls.TLSAuthenticator(args.keyfile, args.certfile, ca_certs=args.ca_certs)
    except (rpc_tls.TLSError, OSError, ValueError) as exc:  # a missing or unreadable certificate/key file
        parser.error(str(exc))


def _registrar(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    if not (args.register or args.register_redis):
        return None
    try:
        import rpc_registry
    except ImportError:
        parser.error("--register needs rpc-registry: pip install 'rpc-classic[registry]'")
    if args.register_redis:
        try:
            return rpc_registry.RedisRegistry(args.register_redis)
        except (ImportError, ValueError) as exc:
            parser.error(f"--register-redis: {exc}")
    if args.registry_type == "tcp":
        if not args.registry_host:
            parser.error("--registry-type tcp needs --registry-host")
        return rpc_registry.TCPRegistryClient(args.registry_host, port=args.registry_port)
    if args.registry_host:
        return rpc_registry.UDPRegistryClient(args.registry_host, port=args.registry_port)
    return rpc_registry.UDPRegistryClient(port=args.registry_port)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.mode == "stdio" and (
        args.certfile or args.keyfile or args.ca_certs or args.register or args.register_redis or args.socket_path or args.host or args.port is not None
    ):
        parser.error("--mode stdio serves stdin/stdout: it takes no address, TLS or registry options")
    authenticator = None if args.mode == "stdio" else _authenticator(args, parser)
    registrar = None if args.mode == "stdio" else _registrar(args, parser)
    try:
        configure_logging(logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO, args.logfile)
    except OSError as exc:
        parser.error(f"cannot open --logfile {args.logfile}: {exc.strerror or exc}")
    if args.mode == "stdio":
        rpc_service.serve_stdio(SlaveService, classic_config())
        return 0

    tls = authenticator is not None
    port = args.port if args.port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT)
    socket_path = args.socket_path
    private = socket_path is None and not wants_tcp(args)
    if private:
        socket_path = private_socket_path()
    warning = bind_warning(args.host, tls, bool(args.ca_certs), socket_path)
    if warning:
        _shout(warning)
    try:
        return _serve(args, socket_path, port, authenticator, registrar)
    finally:
        if private and socket_path is not None:
            shutil.rmtree(os.path.dirname(socket_path), ignore_errors=True)


def _serve(args: argparse.Namespace, socket_path: str | None, port: int, authenticator: Any, registrar: Any) -> int:
    try:
        server = _server_class(args.mode)(
            SlaveService,
            hostname=args.host,
            port=port,
            socket_path=socket_path,
            ipv6=args.ipv6,
            authenticator=authenticator,
            registrar=registrar,
            protocol_config=classic_config(),
            logger=logging.getLogger(f"rpc_classic.{args.mode}"),
        )
    except OSError as exc:
        where = socket_path or f"{args.host or 'localhost'}:{port}"
        print(f"rpc-classic: cannot listen on {where}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    if socket_path is not None:
        with contextlib.suppress(OSError):
            os.chmod(socket_path, 0o600)  # only this user may connect (inside a 0700 directory when private)
    if threading.current_thread() is threading.main_thread():  # (before saying where: whoever reads that may stop us at once)
        signal.signal(signal.SIGTERM, _exit_on_signal)  # so that close() runs (forking: ends the children)
    try:
        if args.mode == "oneshot" or (socket_path is not None and args.socket_path is None):
            print(socket_path or f"{server.host}\t{server.port}", flush=True)
        server.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
    return 0

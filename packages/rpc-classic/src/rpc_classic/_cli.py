"""The ``rpc-classic`` command: serve a :class:`SlaveService` (threaded, forking, oneshot, stdio).

Owns parsing the command line, choosing and starting the server, the loud warning when a
Slave is reachable from other hosts without TLS, and the optional registry lease. It binds
127.0.0.1 unless told otherwise. ``rpc_tls`` and ``rpc_registry`` are imported only when
their options are used, so the command works with neither installed. Nothing here runs on
import; ``main`` is the entry point.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import sys
import threading
from typing import Any, Sequence

import rpc_service

from .__about__ import __version__
from ._cli_args import OneLineParser, configure_logging, host_address, port_number
from ._factories import DEFAULT_PORT, DEFAULT_TLS_PORT
from ._service import SlaveService, classic_config

__all__ = ["main", "build_parser", "bind_warning"]

DEFAULT_REGISTRY_PORT = 18811


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
        "anything as this user. Binds 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--mode", choices=("threaded", "forking", "oneshot", "stdio"), default="threaded",
        help="threaded (default): a thread per client; forking: a process per client; oneshot: serve "
        "one client, after printing HOST<TAB>PORT; stdio: one client on stdin/stdout",
    )
    parser.add_argument("--host", type=host_address, default=None, help="address to bind (default 127.0.0.1, ::1 with --ipv6)")
    parser.add_argument("--port", type=port_number, default=None, help=f"port (default {DEFAULT_PORT}, {DEFAULT_TLS_PORT} with TLS; 0 picks one)")
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
    """The warning to print for this binding, or None when it stays on this machine."""
    if socket_path is not None or is_loopback(host):
        return None
    where = f"{host}"
    if not tls:
        return (
            f"WARNING: rpc-classic serves a SlaveService on {where} WITHOUT TLS. Anyone who can reach "
            "this address can run any code as this user. Bind 127.0.0.1, or use --certfile/--keyfile "
            "with --ca-certs so that only clients holding a certificate signed by your CA get in."
        )
    if not ca_certs:
        return (
            f"WARNING: rpc-classic serves a SlaveService on {where} over TLS but without --ca-certs: "
            "traffic is encrypted, yet any client can connect and run any code as this user."
        )
    return None


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
    if not args.register:
        return None
    try:
        import rpc_registry
    except ImportError:
        parser.error("--register needs rpc-registry: pip install 'rpc-classic[registry]'")
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
        args.certfile or args.keyfile or args.ca_certs or args.register or args.socket_path or args.host or args.port is not None
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
    warning = bind_warning(args.host, tls, bool(args.ca_certs), args.socket_path)
    if warning:
        _shout(warning)
    try:
        server = _server_class(args.mode)(
            SlaveService,
            hostname=args.host,
            port=port,
            socket_path=args.socket_path,
            ipv6=args.ipv6,
            authenticator=authenticator,
            registrar=registrar,
            protocol_config=classic_config(),
            logger=logging.getLogger(f"rpc_classic.{args.mode}"),
        )
    except OSError as exc:
        where = args.socket_path or f"{args.host or 'localhost'}:{port}"
        print(f"rpc-classic: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    if args.mode == "oneshot":
        print(args.socket_path or f"{server.host}\t{server.port}", flush=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_signal)  # so that close() runs (forking: ends the children)
    try:
        server.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.close()
    return 0

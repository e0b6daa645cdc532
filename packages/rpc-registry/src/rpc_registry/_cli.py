"""The ``rpc-registry`` command: run a registry, or ask one what it knows.

Owns argument parsing and the three subcommands: ``serve`` (a UDP or TCP registry until
interrupted), ``list`` (every name, when the registry allows listing) and ``lookup NAME``
(every ``host:port`` serving a name); ``list`` and ``lookup`` ask Redis instead with
``--redis URL``. It prints results on stdout, errors on stderr, and
returns an exit status (0 ok, 1 nothing found, 2 error); it must not hold registry logic.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import NoReturn, Sequence

from .__about__ import __version__
from ._auth import load_key
from ._client import BROADCAST, RegistryClient, TCPRegistryClient, UDPRegistryClient
from ._errors import RegistryError
from ._messages import DEFAULT_PORT
from ._redis import RedisRegistry
from ._server import RegistryServer, TCPRegistryServer, UDPRegistryServer
from ._table import DEFAULT_PRUNING_TIMEOUT

__all__ = ["main"]

_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (exit status 2); subcommand parsers are of this class too."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def _port(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rpc-registry", description="Service discovery for the rpc stack.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{serve,list,lookup}")

    def common(sub: argparse.ArgumentParser, host_help: str) -> None:
        sub.add_argument("-m", "--mode", type=str.lower, choices=("udp", "tcp"), default="udp", help="transport (default: udp)")
        sub.add_argument("--host", default=None, help=host_help)
        sub.add_argument("-p", "--port", type=_port, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
        sub.add_argument("--key-file", default=None, help="file holding the shared key that signs registrations")
        sub.add_argument(
            "--log-level", type=str.lower, choices=_LOG_LEVELS, default="warning",
            help="default: warning; info shows registrations, debug every query",
        )

    serve = commands.add_parser("serve", help="run a registry until interrupted")
    common(serve, "address to bind (default: 0.0.0.0 for udp, to hear broadcasts; 127.0.0.1 for tcp)")
    serve.add_argument(
        "-t", "--pruning-timeout", type=float, default=DEFAULT_PRUNING_TIMEOUT,
        help=f"seconds a registration lives without a refresh (default: {DEFAULT_PRUNING_TIMEOUT:g})",
    )
    serve.add_argument("-l", "--allow-listing", action="store_true", help="answer requests to list every name")

    def redis(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--redis", metavar="URL", default=None,
            help="ask Redis instead (redis://[user:password@]host[:port][/db], rediss://..., unix://...; "
            "needs rpc-registry[redis]); --mode, --host, --port and --key-file are then ignored",
        )
        sub.add_argument("--redis-prefix", default="rpc:", help="prefix of the registry's Redis keys (default: rpc:)")

    listing = commands.add_parser("list", help="print every name a registry knows (it must allow listing)")
    common(listing, f"registry address (default: {BROADCAST} for udp, 127.0.0.1 for tcp)")
    listing.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for replies (default: 2)")
    redis(listing)

    lookup = commands.add_parser("lookup", help="print every host:port serving a name")
    common(lookup, f"registry address (default: {BROADCAST} for udp, 127.0.0.1 for tcp)")
    lookup.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for replies (default: 2)")
    redis(lookup)
    lookup.add_argument("name", help="the service name (any letter case)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        if args.command == "serve":
            return _serve(args, None if args.key_file is None else load_key(args.key_file))
        client = _client(args)
        if args.command == "list":
            for name in client.list():
                print(name)
            return 0
        addresses = client.discover(args.name)
        for host, port in addresses:
            print(f"{host}:{port}")
        if not addresses:
            print(f"rpc-registry: no server offers {args.name!r}", file=sys.stderr)
        return 0 if addresses else 1
    except (RegistryError, OSError, ValueError, ImportError) as exc:
        print(f"rpc-registry: {exc}", file=sys.stderr)
        return 2


def _client(args: argparse.Namespace) -> RegistryClient | RedisRegistry:
    if args.redis is not None:
        return RedisRegistry(args.redis, prefix=args.redis_prefix, timeout=args.timeout)
    key = None if args.key_file is None else load_key(args.key_file)
    if args.mode == "tcp":
        return TCPRegistryClient(args.host or "127.0.0.1", args.port, args.timeout, key=key)
    return UDPRegistryClient(args.host or BROADCAST, args.port, args.timeout, key=key)


def _serve(args: argparse.Namespace, key: bytes | None) -> int:
    kind: type[RegistryServer] = TCPRegistryServer if args.mode == "tcp" else UDPRegistryServer
    try:
        server = kind(args.host, args.port, args.pruning_timeout, args.allow_listing, key=key)
    except OSError as exc:
        raise OSError(f"cannot listen on {args.host or kind.DEFAULT_HOST}:{args.port}: {exc.strerror or exc}") from exc
    if threading.current_thread() is threading.main_thread():  # (before saying where: whoever reads that may stop us at once)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        print(f"rpc-registry: {args.mode} registry on {server.host}:{server.port}", flush=True)
        server.start()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``rpc-tls`` command: make a CA, issue server and client certificates, show certificates.

Owns argument parsing and the file names (``<dir>/<name>.pem`` for a certificate,
``<dir>/<name>.key`` for its key); the work itself is :mod:`rpc_tls._certs`. It never
overwrites a file unless ``--force`` is given, and prints what it wrote. It must not start
servers or open connections.

    rpc-tls ca                                   # ./ca.pem, ./ca.key
    rpc-tls server localhost 127.0.0.1           # ./server.pem, ./server.key (signed by ./ca.*)
    rpc-tls client alice                         # ./alice.pem, ./alice.key
    rpc-tls show server.pem
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta
from typing import Sequence

from .__about__ import __version__
from ._certs import CertificateAuthority, CertifiedKey
from ._errors import CertificateFileError
from ._identity import PeerIdentity

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rpc-tls", description="Make a private CA and the certificates of rpc servers and clients.")
    parser.add_argument("--version", action="version", version=f"rpc-tls {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def outputs(command: argparse.ArgumentParser, default_name: str | None, days: int) -> None:
        command.add_argument("--dir", default=".", help="where to write the files (default: the current directory)")
        help_name = f"default: {default_name}" if default_name else "default: the common name"
        command.add_argument("--name", default=default_name, help=f"file name stem: NAME.pem and NAME.key ({help_name})")
        command.add_argument("--days", type=int, default=days, help=f"validity in days (default: {days})")
        command.add_argument("--key-type", choices=("ec", "rsa"), default="ec", help="ECDSA P-256 (default) or RSA 3072")
        command.add_argument("--organization", help="O= in the subject")
        command.add_argument("--force", action="store_true", help="overwrite existing files")

    def signer(command: argparse.ArgumentParser) -> None:
        command.add_argument("--ca-cert", help="the CA certificate (default: DIR/ca.pem)")
        command.add_argument("--ca-key", help="the CA private key (default: DIR/ca.key)")

    ca = commands.add_parser("ca", help="create a certificate authority (ca.pem, ca.key)")
    ca.add_argument("--common-name", default="rpc-tls CA", help="the CA's name (default: %(default)s)")
    outputs(ca, "ca", 3650)

    server = commands.add_parser("server", help="issue a server certificate for host names and IP addresses")
    server.add_argument("hosts", nargs="+", metavar="HOST", help="DNS names and IP addresses clients connect to")
    server.add_argument("--common-name", help="default: the first HOST")
    outputs(server, "server", 365)
    signer(server)

    client = commands.add_parser("client", help="issue a client certificate (its common name is the client's identity)")
    client.add_argument("common_name", metavar="COMMON_NAME", help="the identity servers see (e.g. alice)")
    client.add_argument("--host", action="append", default=[], help="also name this DNS name or IP address (repeatable)")
    outputs(client, None, 365)
    signer(client)

    show = commands.add_parser("show", help="print what a certificate says (subject, names, validity, fingerprint)")
    show.add_argument("files", nargs="+", metavar="FILE", help="PEM certificate files")
    return parser


def _paths(args: argparse.Namespace, name: str) -> tuple[str, str]:
    cert, key = os.path.join(args.dir, f"{name}.pem"), os.path.join(args.dir, f"{name}.key")
    existing = [path for path in (cert, key) if os.path.exists(path)]
    if existing and not args.force:
        raise FileExistsError(f"{' and '.join(existing)} {'exists' if len(existing) == 1 else 'exist'} already; pass --force to overwrite")
    return cert, key


def _save(item: CertifiedKey, cert: str, key: str) -> None:
    item.save(cert, key)
    print(f"wrote {cert} (certificate) and {key} (private key, mode 0600)")
    _describe(item.identity)


def _describe(identity: PeerIdentity) -> None:
    print(f"  subject:  {identity.subject}")
    print(f"  issuer:   {identity.issuer}")
    names = [*identity.dns_names, *identity.ip_addresses, *identity.uris, *identity.emails]
    if names:
        print(f"  names:    {', '.join(names)}")
    print(f"  valid:    {identity.not_before:%Y-%m-%d %H:%M} .. {identity.not_after:%Y-%m-%d %H:%M} UTC")
    print(f"  sha256:   {identity.fingerprint_sha256}")


def _authority(args: argparse.Namespace) -> CertificateAuthority:
    cert = args.ca_cert or os.path.join(args.dir, "ca.pem")
    key = args.ca_key or os.path.join(args.dir, "ca.key")
    return CertificateAuthority.load(cert, key)


def _run(args: argparse.Namespace) -> None:
    days = timedelta(days=args.days)
    if args.days <= 0:
        raise ValueError("--days must be positive")
    if args.command == "ca":
        cert, key = _paths(args, args.name)
        ca = CertificateAuthority.create(args.common_name, organization=args.organization, valid_for=days, key_type=args.key_type)
        _save(ca, cert, key)
        print(f"give {cert} to the peers as ca_certs; keep {key} secret")
    elif args.command == "server":
        authority = _authority(args)
        cert, key = _paths(args, args.name)
        issued = authority.issue_server(
            *args.hosts, common_name=args.common_name, organization=args.organization, valid_for=days, key_type=args.key_type
        )
        _save(issued, cert, key)
    elif args.command == "client":
        authority = _authority(args)
        cert, key = _paths(args, args.name or args.common_name)
        issued = authority.issue_client(
            args.common_name, *args.host, organization=args.organization, valid_for=days, key_type=args.key_type
        )
        _save(issued, cert, key)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rpc-tls`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "show":
            for path in args.files:
                with open(path, "rb") as file:
                    identity = PeerIdentity.from_pem(file.read())
                print(path)
                _describe(identity)
        else:
            _run(args)
    except (OSError, ValueError, CertificateFileError) as exc:
        print(f"rpc-tls: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

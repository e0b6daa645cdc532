"""Argument checks and logging set-up for the ``rpc-classic`` command line.

Owns what turns a bad ``--port``, ``--host`` or ``--logfile`` into a one-line usage error
instead of a traceback (argparse types and a parser whose errors fit on one line), and the
logging of ``--verbose``/``--quiet``/``--logfile``. It holds no server logic and runs
nothing on import; ``_cli`` uses it.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import socket
import sys
from typing import NoReturn

__all__ = ["OneLineParser", "port_number", "host_address", "configure_logging", "LOG_FORMAT"]

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit status 2), not the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def port_number(text: str) -> int:
    """A TCP/UDP port, 0-65535 (0: the system picks one)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535)")
    return value


def host_address(text: str) -> str:
    """An IP address, or a host name that resolves now (before anything is printed or bound)."""
    bare = text.strip("[]")
    try:
        ipaddress.ip_address(bare)
        return text
    except ValueError:
        pass
    try:
        socket.getaddrinfo(bare, None)
    except (OSError, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise argparse.ArgumentTypeError(f"{text!r} is neither an IP address nor a host name that resolves ({reason})") from None
    return text


def configure_logging(level: int, logfile: str | None) -> None:
    """Log records of ``level`` and above to ``logfile`` (appended to), else to stderr.

    Raises OSError when the file cannot be opened, before anything else has started.
    """
    handler: logging.Handler = logging.FileHandler(logfile, encoding="utf-8") if logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)

"""The child side of the ``connect_subproc`` tests: serves :class:`PeerService` on stdio.

Run as a script (``python stdio_child.py``) with ``rpc_protocol`` and ``rpc_service`` on
``PYTHONPATH``; the parent talks to it over the child's stdin/stdout. The service class is
also imported by the factory tests, so every transport serves the same thing.
"""

from __future__ import annotations

import os
from typing import Any

import rpc_service


class PeerService(rpc_service.Service):
    """What the far end of every factory test offers."""

    def on_connect(self, conn: rpc_service.Connection) -> None:
        self._conn = conn

    def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_pid(self) -> int:
        return os.getpid()

    def exposed_ask_client(self) -> Any:
        """Call back into the client's own service (checks the client's ``service=``)."""
        return self._conn.root.whoami()

    def exposed_read_client_attr(self, name: str) -> Any:
        """Read a non-exposed public attribute of the client's service (checks ``config=``)."""
        return getattr(self._conn.root, name)

    def exposed_print_to_stdout(self, text: str) -> str:
        """A stray print must not corrupt the stdio stream (serve_stdio redirects fd 1)."""
        print(text, flush=True)
        return text


if __name__ == "__main__":
    rpc_service.serve_stdio(PeerService)

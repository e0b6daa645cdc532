"""Classic mode: drive another Python interpreter as if it were local.

A classic server (``SlaveService``) lets whoever connects import modules, evaluate expressions,
run statements and move files on its side: only ever serve it to people who may run code as
you (it binds 127.0.0.1 here). The server runs in this process for the example; ``rpc-classic``
runs one as a command. Run it with ``hatch run demo:python examples/classic_mode.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import rpc_classic
import rpc_service


def main() -> None:
    with rpc_service.ThreadedServer(
        rpc_classic.SlaveService, protocol_config=rpc_classic.classic_config()
    ) as server, tempfile.TemporaryDirectory() as workdir:
        server.start_in_thread()
        print(f"[server] classic server on 127.0.0.1:{server.port}")
        with rpc_classic.connect("127.0.0.1", server.port, service=rpc_service.VoidService) as conn:
            # (service=VoidService: this client does not let the server run code on it)
            remote_os = conn.modules.os  # a remote import
            print(f"[client] the server's pid: {remote_os.getpid()}")
            print(f"[client] eval: {conn.eval('sum(range(10))')}")
            conn.execute("import math; area = math.pi * 2 ** 2")
            print(f"[client] execute, then read the namespace: area = {conn.namespace['area']:.3f}")

            local = Path(workdir) / "notes.txt"
            local.write_text("written here, read there\n", encoding="utf-8")
            remote = os.path.join(workdir, "uploaded.txt")
            rpc_classic.upload(conn, str(local), remote)
            print(f"[client] uploaded; the server reads: {conn.modules.builtins.open(remote).read().strip()!r}")
            back = Path(workdir) / "downloaded.txt"
            rpc_classic.download(conn, remote, str(back))
            assert back.read_text(encoding="utf-8") == local.read_text(encoding="utf-8")
            print("[client] downloaded it back, identical")

            numbers = conn.eval("[3, 1, 2]")  # a proxy of a list that lives on the server
            print(f"[client] obtain() copies a proxied value here: {sorted(rpc_classic.obtain(numbers))}")
    print("[example] done")


if __name__ == "__main__":
    main()

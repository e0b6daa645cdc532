"""Broadcast discovery across two network namespaces joined by a veth pair.

Namespace A runs a UDP registry (``rpc-registry serve``, bound to 0.0.0.0:18811, the default
port being unavoidable for broadcast); namespace B runs a ``ThreadedServer`` on 0.0.0.0 whose
registrar broadcasts to 255.255.255.255. Then a client in each namespace finds the server by
broadcast and calls it. The addresses (10.77.0.1/24, 10.77.0.2/24) exist only inside the
namespaces this test creates, and it deletes them in ``finally``. Skipped, with the reason,
where namespaces cannot be created (not Linux, no ``ip``, not root / no CAP_SYS_ADMIN).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from typing import Iterator

import pytest

from tests.registry.helpers import source_path

pytestmark = pytest.mark.timeout(60)

STEP_TIMEOUT = 15.0

SERVER = textwrap.dedent(
    """
    import sys
    import rpc_registry, rpc_service

    class EchoService(rpc_service.Service):
        ALIASES = ["Echo", "NetnsEcho"]
        def exposed_echo(self, value):
            return value

    registrar = rpc_registry.UDPRegistryClient(timeout=1.0)   # broadcast, the default
    with rpc_service.ThreadedServer(EchoService, hostname="0.0.0.0", registrar=registrar) as server:
        server.start_in_thread()
        print(server.port, flush=True)
        sys.stdin.readline()                                     # until the test says stop
    """
)

CLIENT = textwrap.dedent(
    """
    import time
    import rpc_registry
    client = rpc_registry.UDPRegistryClient(timeout=0.5)      # broadcast, the default
    for _ in range(10):                                          # the server may still be registering
        found = rpc_registry.discover("netnsecho", client)
        if found:
            break
        time.sleep(0.2)
    with rpc_registry.connect_by_service("NETNSECHO", client) as conn:
        print(found, conn.root.echo("across"), flush=True)
    """
)


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=STEP_TIMEOUT, check=check)


@pytest.fixture
def namespaces() -> Iterator[tuple[str, str]]:
    if not sys.platform.startswith("linux"):
        pytest.skip("network namespaces are a Linux feature")
    if shutil.which("ip") is None:
        pytest.skip("the `ip` command (iproute2) is not installed")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"rpcreg{tag}a", f"rpcreg{tag}b"
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            result = ip("netns", "add", ns, check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot create a network namespace (needs root or CAP_SYS_ADMIN): {result.stderr.strip()}")
            made.append(ns)
        veth_a, veth_b = f"rr{tag}a", f"rr{tag}b"
        try:
            ip("link", "add", veth_a, "type", "veth", "peer", "name", veth_b)
            for ns, veth, address in ((ns_a, veth_a, "10.77.0.1/24"), (ns_b, veth_b, "10.77.0.2/24")):
                ip("link", "set", veth, "netns", ns)
                ip("-n", ns, "addr", "add", address, "dev", veth)
                ip("-n", ns, "link", "set", "lo", "up")
                ip("-n", ns, "link", "set", veth, "up")
                # 255.255.255.255 needs a route to leave by; inside the namespace only
                ip("-n", ns, "route", "add", "default", "dev", veth)
        except subprocess.CalledProcessError as exc:
            ip("link", "del", veth_a, check=False)  # in case it never moved into a namespace
            pytest.skip(f"cannot wire the namespaces with a veth pair: {' '.join(exc.cmd)}: {exc.stderr.strip()}")
        yield ns_a, ns_b
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and so the pair
            ip("netns", "del", ns, check=False)


def in_namespace(ns: str, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": source_path()},
    )


def test_broadcast_discovery_across_namespaces(namespaces: tuple[str, str]) -> None:
    ns_a, ns_b = namespaces
    processes: list[subprocess.Popen[str]] = []
    try:
        registry = in_namespace(ns_a, "-m", "rpc_registry", "serve", "--mode", "udp", "--log-level", "info")
        processes.append(registry)
        assert registry.stdout is not None
        assert "registry on 0.0.0.0:18811" in registry.stdout.readline()

        server = in_namespace(ns_b, "-c", SERVER, stdin=subprocess.PIPE)
        processes.append(server)
        assert server.stdout is not None
        port = int(server.stdout.readline())

        for ns in (ns_b, ns_a):  # the server's own namespace, then across the veth pair
            client = in_namespace(ns, "-c", CLIENT)
            out, err = client.communicate(timeout=STEP_TIMEOUT)
            assert client.returncode == 0, err
            # the address the server advertised: its interface facing the registry, not 0.0.0.0
            assert out.strip() == f"[('10.77.0.2', {port})] across"

        assert server.stdin is not None
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.communicate(timeout=STEP_TIMEOUT)
        assert server.returncode == 0
        registry.terminate()
        _, log = registry.communicate(timeout=STEP_TIMEOUT)
        assert f"registered ECHO, NETNSECHO at 10.77.0.2:{port} (from 10.77.0.2)" in log
        assert f"unregistered 10.77.0.2:{port}" in log
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=STEP_TIMEOUT)

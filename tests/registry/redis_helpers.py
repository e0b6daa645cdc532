"""A private, real ``redis-server`` for the Redis registry tests, and what they share.

Owns :class:`RedisProcess`: a redis-server of its own in a temp dir, bound to 127.0.0.1 on a
free port (picked by binding port 0 and closing it, retried when another process takes it
first), with persistence off, optionally a password, an ACL user, a unix socket and a TLS port.
It can be stopped, killed and started again on the same port (as after a crash, it comes back
empty). :func:`need_redis_server` skips a test when redis-server is missing, but fails it under
``CI=true``, where ``.ci/run`` must have installed it. Every wait here is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.registry.helpers import source_path, wait_for

REDIS_SERVER = "redis-server"
PASSWORD = "s3cret-registry-password"
ACL_USER = "rpcsvc"
ACL_PASSWORD = "acl-user-password"
#: the least a registry's ACL user needs (the README quotes it): the scripts and what they run
ACL_COMMANDS = (
    "+evalsha +script|load +time +zadd +zrange +zrangebyscore +zremrangebyscore +zrem +zscore "
    "+hset +hdel +hmget +del +pexpireat"
)
#: an ACL user that may connect but not run scripts
LIMITED_USER = "readonly"
LIMITED_PASSWORD = "readonly-password"


def need_redis_server() -> str:
    """The path of redis-server; skips the test without one, or fails it under CI=true."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        message = "redis-server is not installed (Debian: apt-get install -y redis-server)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; under CI=true .ci/run must install it")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass
class RedisProcess:
    """One redis-server of the test's own; :meth:`start` before use, :meth:`stop` after."""

    directory: Path
    password: str | None = None
    acl: bool = False
    tls: TLSFiles | None = None
    port: int = 0
    tls_port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    def url(self, *, user: str | None = None, password: str | None = None, db: int = 0) -> str:
        """A redis:// URL of this server; the password defaults to the server's."""
        secret = self.password if password is None else password
        auth = f"{user or ''}:{secret}@" if secret or user else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def _config(self) -> str:
        lines = [
            "bind 127.0.0.1",
            f"port {self.port}",
            f"dir {self.directory}",
            'save ""',
            "appendonly no",
            "daemonize no",
            f"logfile {self.directory / 'redis.log'}",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
        ]
        if self.password is not None:
            lines.append(f"requirepass {self.password}")
        if self.acl:
            lines.append(f"user {ACL_USER} on >{ACL_PASSWORD} ~rpc:* ~acl:* {ACL_COMMANDS}")
            lines.append(f"user {LIMITED_USER} on >{LIMITED_PASSWORD} ~* +ping +get +info +client +hello")
        if self.tls is not None:
            lines += [
                f"tls-port {self.tls_port}",
                f"tls-cert-file {self.tls.cert}",
                f"tls-key-file {self.tls.key}",
                f"tls-ca-cert-file {self.tls.ca}",
                "tls-auth-clients no",
            ]
        return "\n".join(lines) + "\n"

    def start(self, attempts: int = 5) -> RedisProcess:
        """Start (or start again, on the same ports once chosen); wait until it answers."""
        executable = need_redis_server()
        keep_ports = self.port != 0
        for _ in range(attempts):
            if not keep_ports:
                self.port = free_port()
                self.tls_port = free_port() if self.tls is not None else 0
            config = self.directory / "redis.conf"
            config.write_text(self._config())
            self.process = subprocess.Popen(
                [executable, str(config)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if wait_for(lambda: self.process is not None and (self.process.poll() is not None or self._answers()), 10.0):
                if self.process.poll() is None:
                    return self
            self._reap()
            if keep_ports:
                time.sleep(0.2)  # the old server's port may still be closing
        log = self.directory / "redis.log"
        raise RuntimeError(f"redis-server did not start: {log.read_text()[-2000:] if log.exists() else 'no log'}")

    def _answers(self) -> bool:
        """True once the server answers PING on its unix socket (a NOAUTH error is an answer)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(1.0)
                sock.connect(str(self.socket_path))
                sock.sendall(b"PING\r\n")
                return bool(sock.recv(64))
        except OSError:
            return False

    def _reap(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); its data is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._reap()

    def restart(self) -> None:
        """Stop and start again on the same port, empty (persistence is off)."""
        self.stop()
        self.start()


def make_tls_files(directory: Path) -> TLSFiles:
    """A CA and a certificate for 127.0.0.1/localhost, made with rpc_tls (skips without it)."""
    rpc_tls = pytest.importorskip("rpc_tls")
    ca = rpc_tls.CertificateAuthority.create("redis test CA")
    server = ca.issue_server("127.0.0.1", "localhost")
    files = TLSFiles(directory / "ca.pem", directory / "redis.pem", directory / "redis.key")
    files.ca.write_bytes(ca.cert_pem)
    server.save(files.cert, files.key)
    return files


SERVE_SCRIPT = """
import sys, time, logging
import rpc_service, rpc_registry
logging.basicConfig(level=logging.WARNING)
url, name, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])

class Hello(rpc_service.Service):
    ALIASES = [name, name + "-alias"]
    def exposed_whoami(self):
        return name

registry = rpc_registry.RedisRegistry(url, ttl=ttl, timeout=1.0)
server = rpc_service.ThreadedServer(Hello, hostname="127.0.0.1", port=0, registrar=registry)
server.start_in_thread()
print(server.port, flush=True)
sys.stdin.read()   # serve until the test closes our stdin (or kills us)
server.close()
"""


@dataclass
class ServerProcess:
    """A ThreadedServer registered on Redis, in a process of its own."""

    process: subprocess.Popen[str]
    port: int

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                stream.close()

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


def spawn_server(url: str, name: str, ttl: float) -> ServerProcess:
    """Start a server offering ``name`` (and ``name-alias``) registered at ``url``."""
    env = dict(os.environ, PYTHONPATH=source_path())
    process = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, url, name, str(ttl)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # bounded by the test timeout; the child prints at once
    if not line.strip():
        process.kill()
        process.wait(timeout=10)
        raise RuntimeError("the server process died before listening")
    return ServerProcess(process, int(line))

"""TLS on the asyncio driver: ``aio.connect(..., ssl=context)`` and ``aio.Server(..., ssl=context)``
with stdlib ``ssl`` contexts (rpc-service never imports rpc-tls), interoperating with
``rpc_tls.tls_connect`` and with a ThreadedServer behind ``TLSAuthenticator``."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

import rpc_service
import rpc_tls
from rpc_service import aio

from .conftest import Pki


class Echo(rpc_service.Service):
    async def exposed_echo(self, value: Any) -> Any:
        return value

    def exposed_whoami(self) -> str:
        return "plain"


def _server_context(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.server.cert, pki.server.key)
    return context


def _run(coro: Any) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, 30)

    return asyncio.run(bounded())


def test_aio_tls_both_ends_and_sync_tls_client(pki: Pki) -> None:
    async def main() -> None:
        async with aio.Server(Echo, ssl=_server_context(pki)) as server:
            client = ssl.create_default_context(cafile=pki.ca)
            async with await aio.connect("127.0.0.1", server.port, ssl=client) as conn:
                assert await conn.root.echo(b"secret") == b"secret"
                big = bytes(range(256)) * 8192  # 2 MiB: read straight into the protocol's buffer
                assert await conn.root.echo(big) == big
                assert await conn.root.whoami() == "plain"
            sync_result = await asyncio.to_thread(_sync_tls_call, server.port, pki)
            assert sync_result == "over tls"

    _run(main())


def _sync_tls_call(port: int, pki: Pki) -> Any:
    with rpc_tls.tls_connect("127.0.0.1", port, ca_certs=pki.ca) as conn:
        return conn.root.echo("over tls")


def test_aio_tls_refuses_an_untrusted_server(pki: Pki) -> None:
    async def main() -> None:
        async with aio.Server(Echo, ssl=_server_context(pki)) as server:
            untrusting = ssl.create_default_context(cafile=pki.other_ca)
            with pytest.raises(rpc_service.ConnectionFailedError):
                await aio.connect("127.0.0.1", server.port, ssl=untrusting)
            plain_ok = ssl.create_default_context(cafile=pki.ca)
            async with await aio.connect("127.0.0.1", server.port, ssl=plain_ok) as conn:
                assert await conn.root.echo(1) == 1  # the failed attempt did not hurt the server

    _run(main())


def test_aio_tls_client_against_threaded_tls_server(pki: Pki) -> None:
    authenticator = rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, pki.ca, require_client_cert=True)
    server = rpc_service.ThreadedServer(Echo, authenticator=authenticator)
    server.start_in_thread()

    async def main() -> None:
        client = ssl.create_default_context(cafile=pki.ca)
        client.load_cert_chain(pki.alice.cert, pki.alice.key)
        async with await aio.connect("127.0.0.1", server.port, ssl=client) as conn:
            assert await conn.root.whoami() == "plain"

    try:
        _run(main())
    finally:
        server.close()


def test_aio_server_refuses_a_tls_authenticator_and_takes_its_context_as_ssl(pki: Pki) -> None:
    authenticator = rpc_tls.TLSAuthenticator(pki.server.key, pki.server.cert, pki.ca)
    with pytest.raises(TypeError, match="ssl="):
        aio.Server(Echo, authenticator=authenticator)

    async def main() -> None:
        async with aio.Server(Echo, ssl=authenticator.context) as server:
            assert await asyncio.to_thread(_sync_mutual_tls_call, server.port, pki) == "plain"

    _run(main())


def _sync_mutual_tls_call(port: int, pki: Pki) -> Any:
    with rpc_tls.tls_connect("127.0.0.1", port, keyfile=pki.alice.key, certfile=pki.alice.cert, ca_certs=pki.ca) as conn:
        return conn.root.whoami()

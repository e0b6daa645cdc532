"""Tests of ``rpc_tls``: TLS connections, authenticator, identities, certificate tooling and CLI."""

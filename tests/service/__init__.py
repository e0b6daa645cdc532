"""Tests of ``rpc_service``: services, proxies, connections, factories and servers."""

"""Listing filtered by host (issue 16 item 7): ``list(filter_host=...)`` on the UDP and TCP
clients and ``list_services(..., filter_host=...)``: only names of servers registered at
exactly that host; a list request without a filter keeps its original (field-less) form."""

from __future__ import annotations

import os
import time

import pytest

from rpc_protocol import ValueEncoder
from rpc_registry import MessageError, RegistryClient, list_services
from rpc_registry._messages import ListNames, decode
from tests.registry.helpers import MakeRegistry, client_for


def populate(make_registry: MakeRegistry) -> RegistryClient:
    server = make_registry(allow_listing=True)
    client = client_for(server)
    assert client.register(["Alpha", "Shared"], 18861, interface="10.0.0.1")
    assert client.register(["Beta", "Shared"], 18862, interface="10.0.0.2")
    assert client.register(["Gamma"], 18863, interface="10.0.0.1")
    return client


def test_list_filters_by_host(make_registry: MakeRegistry) -> None:
    client = populate(make_registry)
    assert client.list() == ["ALPHA", "BETA", "GAMMA", "SHARED"]
    assert client.list(filter_host="10.0.0.1") == ["ALPHA", "GAMMA", "SHARED"]
    assert client.list(filter_host="10.0.0.2") == ["BETA", "SHARED"]
    assert client.list(filter_host="10.0.0.3") == []


def test_list_services_passes_the_filter_on(make_registry: MakeRegistry) -> None:
    client = populate(make_registry)
    assert list_services(client, filter_host="10.0.0.2") == ["BETA", "SHARED"]
    assert list_services(client) == ["ALPHA", "BETA", "GAMMA", "SHARED"]


@pytest.mark.parametrize("bad", ["", 5])
def test_a_bad_filter_is_refused_before_sending(make_registry: MakeRegistry, bad: object) -> None:
    client = populate(make_registry)
    with pytest.raises(ValueError):
        client.list(filter_host=bad)  # type: ignore[arg-type]  # what a careless caller passes
    with pytest.raises(MessageError):
        client.list(filter_host="not a host!")


def test_an_unfiltered_list_request_has_no_host_field() -> None:
    body = b"".join(ValueEncoder().encode(("list", os.urandom(16), time.time())))
    data = b"".join(ValueEncoder().encode((b"RPCREG", 1, body, b"")))
    assert decode(data).body == ListNames("")

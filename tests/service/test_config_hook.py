"""Service.connection_config: a service can widen (or narrow) the config of its own side."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

import rpc_service
from tests.service.conftest import ConnectTo


class Holder:
    def __init__(self) -> None:
        self.value = 41


class OpenService(rpc_service.Service):
    """Needs public attributes of the objects it hands out, whatever the server was given."""

    def connection_config(self, config: rpc_service.Config) -> rpc_service.Config:
        return replace(config, allow_public_attrs=True)

    def exposed_holder(self) -> Holder:
        return Holder()


class PlainService(rpc_service.Service):
    def exposed_holder(self) -> Holder:
        return Holder()


def test_the_hook_widens_the_servers_side(connect_to: ConnectTo) -> None:
    conn = connect_to(OpenService)
    holder: Any = conn.root.holder()
    assert holder.value == 41


def test_without_the_hook_the_default_config_holds(connect_to: ConnectTo) -> None:
    conn = connect_to(PlainService)
    holder: Any = conn.root.holder()
    with pytest.raises(AttributeError, match="no exposed attribute 'value'"):
        holder.value


def test_the_hook_sees_the_config_it_was_given(connect_to: ConnectTo) -> None:
    seen: list[rpc_service.Config] = []

    class Recorder(rpc_service.Service):
        def connection_config(self, config: rpc_service.Config) -> rpc_service.Config:
            seen.append(config)
            return config

    conn = connect_to(Recorder, {"iter_batch": 7})
    conn.ping()
    assert [config.iter_batch for config in seen] == [7]

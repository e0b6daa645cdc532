"""``rpc-registry list|lookup --redis URL``: the command line asks Redis (run in-process)."""

from __future__ import annotations

from typing import Callable

import pytest

from rpc_registry import RedisRegistry
from rpc_registry._cli import main
from tests.registry.redis_helpers import PASSWORD, RedisProcess, free_port


def test_list_and_lookup_on_redis(make_redis: Callable[..., RedisProcess], capsys: pytest.CaptureFixture[str]) -> None:
    server = make_redis(password=PASSWORD)
    url = server.url()
    with RedisRegistry(url) as registry, RedisRegistry(url, prefix="other:") as other:
        registry.register(["Echo", "Alias"], 4001, "10.0.0.1")
        registry.register(["echo"], 4002, "10.0.0.2")
        other.register(["Elsewhere"], 4003, "10.0.0.3")

        assert main(["list", "--redis", url]) == 0
        assert capsys.readouterr().out.split() == ["ALIAS", "ECHO"]
        assert main(["lookup", "--redis", url, "eChO"]) == 0
        assert capsys.readouterr().out.split() == ["10.0.0.1:4001", "10.0.0.2:4002"]
        assert main(["list", "--redis", url, "--redis-prefix", "other:"]) == 0
        assert capsys.readouterr().out.split() == ["ELSEWHERE"]

        assert main(["lookup", "--redis", url, "nobody"]) == 1
        captured = capsys.readouterr()
        assert captured.out == "" and "no server offers 'nobody'" in captured.err


def test_redis_errors_exit_2_naming_the_url_not_the_password(make_redis: Callable[..., RedisProcess], capsys: pytest.CaptureFixture[str]) -> None:
    server = make_redis(password=PASSWORD)
    assert main(["list", "--redis", server.url(password="guessed-wrong"), "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert f"redis://:***@127.0.0.1:{server.port}/0" in err and "guessed-wrong" not in err

    port = free_port()
    assert main(["lookup", "--redis", f"redis://127.0.0.1:{port}/0", "--timeout", "1", "echo"]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err

    assert main(["list", "--redis", "http://127.0.0.1/"]) == 2
    assert "not a Redis URL" in capsys.readouterr().err

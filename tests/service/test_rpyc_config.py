"""RPyC compatibility of config keys (issue 16): ``allow_safe_attrs``, ``allow_exposed_attrs``
and ``before_closed``."""

from __future__ import annotations

import threading
from typing import Any

import pytest

import rpc_service
from rpc_service import Config, Service, exposed
from rpc_service._config import make_config

from .conftest import ConnectTo

pytestmark = pytest.mark.timeout(60)


class Box:
    def __init__(self) -> None:
        self.items = [1, 2, 3]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> int:
        return self.items[index]

    def exposed_size(self) -> int:
        return len(self.items)

    @exposed
    def marked(self) -> str:
        return "marked"

    def public(self) -> str:
        return "public"


class BoxService(Service):
    def exposed_box(self) -> Box:
        return Box()

    def public_method(self) -> str:
        return "public method"

    def make_box(self) -> Box:
        return Box()


def test_defaults_are_on() -> None:
    config = Config()
    assert config.allow_safe_attrs and config.allow_exposed_attrs and config.before_closed is None


def test_safe_attrs_off_refuses_special_methods(connect_to: ConnectTo) -> None:
    conn = connect_to(BoxService, {"allow_safe_attrs": False})
    box = conn.root.box()
    assert box.size() == 3  # exposed names still work
    with pytest.raises(TypeError):
        len(box)  # the proxy is not told the type has __len__
    with pytest.raises(TypeError):
        box[0]
    with pytest.raises(AttributeError):
        box.__getitem__(0)  # nor does asking by name get through
    assert "size" in dir(box) and "__len__" not in dir(box)


def test_safe_attrs_on_by_default(connect_to: ConnectTo) -> None:
    box = connect_to(BoxService).root.box()
    assert len(box) == 3 and box[1] == 2
    assert "__len__" in dir(box)


def test_exposed_attrs_off_refuses_prefixed_and_marked_names(connect_to: ConnectTo) -> None:
    conn = connect_to(BoxService, {"allow_exposed_attrs": False, "allow_public_attrs": True})
    box = conn.root.make_box()
    with pytest.raises(AttributeError):
        box.size  # no longer the name of exposed_size
    assert box.exposed_size() == 3  # ... which is only a public name now
    assert box.marked() == "marked"  # a public name: allow_public_attrs reaches it
    assert box.public() == "public"
    assert len(box) == 3  # safe specials unaffected
    assert "size" not in dir(box)
    with pytest.raises(AttributeError):
        conn.root.box  # the root's exposed_ methods are off too
    assert conn.root.public_method() == "public method"


def test_exposed_attrs_off_without_public_attrs_reaches_nothing_named(connect_to: ConnectTo) -> None:
    conn = connect_to(BoxService, {"allow_exposed_attrs": False})
    with pytest.raises(AttributeError):
        conn.root.box()
    with pytest.raises(AttributeError):
        conn.root.get_service_name()


class Recorder(Service):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def exposed_note(self, text: str) -> None:
        self.calls.append(text)


def test_before_closed_runs_with_the_peer_root_before_closing(connect_to: ConnectTo) -> None:
    recorder = Recorder()
    seen: list[Any] = []

    def before_closed(root: Any) -> None:
        seen.append(root)
        root.note("goodbye")  # the connection is still usable

    conn = connect_to(recorder, client_config={"before_closed": before_closed})
    assert recorder.calls == []
    conn.close()
    conn.close()  # once only
    assert recorder.calls == ["goodbye"]
    assert len(seen) == 1 and rpc_service.is_proxy(seen[0])
    assert conn.closed


def test_before_closed_failure_still_closes(connect_to: ConnectTo, caplog: pytest.LogCaptureFixture) -> None:
    def failing(root: Any) -> None:
        raise RuntimeError("hook failed")

    conn = connect_to(Recorder, client_config={"before_closed": failing})
    conn.close()
    assert conn.closed
    assert "before_closed raised" in caplog.text


def test_before_closed_runs_once_under_concurrent_close(connect_to: ConnectTo) -> None:
    recorder = Recorder()
    conn = connect_to(recorder, client_config={"before_closed": lambda root: root.note("bye")})
    threads = [threading.Thread(target=conn.close) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert recorder.calls == ["bye"]


def test_before_closed_must_be_callable() -> None:
    with pytest.raises(ValueError, match="before_closed"):
        Config(before_closed="not callable")  # type: ignore[arg-type]  # the error under test


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("include_local_traceback", "no"),  # a truthy string must not turn tracebacks on
        ("allow_pickle", 1),
        ("allow_public_attrs", None),
        ("tracing", "off"),
        ("max_depth", "64"),
        ("max_frame_size", "big"),
        ("max_pending_requests", 0),
        ("max_lent_objects", 1.5),
        ("iter_batch", True),
        ("sync_request_timeout", "30"),
        ("sync_request_timeout", float("nan")),
        ("handshake_timeout", None),
        ("write_timeout", -1),
        ("exposed_prefix", 5),
        ("connid", 7),
        ("forward_dunders", "__name__"),
        ("forward_dunders", 3),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_where_it_is_given(key: str, value: object) -> None:
    """Regression: values were not checked, so {"include_local_traceback": "no"} sent
    tracebacks, and {"max_depth": "64"} was accepted by a server whose every client then
    saw only "the peer closed the connection"."""
    with pytest.raises(ValueError, match=key):
        rpc_service.connect_thread(config={key: value})
    with pytest.raises(ValueError, match=key):
        rpc_service.ThreadedServer(rpc_service.VoidService, protocol_config={key: value})


def test_values_of_the_right_kind_are_kept() -> None:
    config = Config(sync_request_timeout=None, handshake_timeout=2, write_timeout=0.5, max_depth=8, tracing=False, connid="c")
    assert (config.sync_request_timeout, config.handshake_timeout, config.write_timeout, config.max_depth) == (None, 2, 0.5, 8)


def test_a_config_dict_is_checked_each_time_whatever_was_built_before() -> None:
    """Configs built from dicts are shared (immutable), never a check skipped: 1 is not a
    flag even after an equal True was accepted; unhashable values still work."""
    from rpc_service._config import make_config

    assert make_config({"allow_pickle": True}).allow_pickle is True
    with pytest.raises(ValueError, match="allow_pickle"):
        make_config({"allow_pickle": 1})
    assert make_config({"sync_request_timeout": 3}) == make_config({"sync_request_timeout": 3.0})
    assert make_config(None) == rpc_service.Config()
    hook_a: list[Any] = []
    hook_b: list[Any] = []
    assert make_config({"before_closed": hook_a.append}).before_closed == hook_a.append
    assert make_config({"before_closed": hook_b.append}).before_closed == hook_b.append


def test_a_config_dict_seen_before_gives_the_config_it_made() -> None:
    """The same dict again is found without being checked anew (the config is immutable);
    a dict with an unknown key or a value of the wrong kind is refused every time."""
    first = make_config({"sync_request_timeout": 120, "max_depth": 9})
    assert make_config({"sync_request_timeout": 120, "max_depth": 9}) is first
    assert make_config({"max_depth": 9, "sync_request_timeout": 120}) == first  # (another order)
    for _ in range(2):
        with pytest.raises(ValueError, match="unknown config keys"):
            make_config({"max_depth": 9, "no_such_key": 1})
        with pytest.raises(ValueError, match="max_depth"):
            make_config({"sync_request_timeout": 120, "max_depth": True})  # (equal to 1, not a count)


def test_what_a_name_resolves_to_follows_each_connections_settings(connect_to: ConnectTo) -> None:
    """Connections with the same exposure settings share what names resolved to; one with
    other settings resolves them its own way, whichever came first."""
    for _ in range(2):
        assert connect_to(BoxService).root.box().size() == 3  # exposed_size, resolved once
        conn = connect_to(BoxService, {"allow_exposed_attrs": False, "allow_public_attrs": True})
        box = conn.root.make_box()
        with pytest.raises(AttributeError):
            box.size()
        assert box.exposed_size() == 3
        renamed = connect_to(BoxService, {"exposed_prefix": "remote_"})
        with pytest.raises(AttributeError):
            renamed.root.box()

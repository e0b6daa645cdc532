"""Hostile peers against ``rpc_classic.upload``/``download`` (issue 13, items 1 and 16).

A malicious classic server lists a tree whose names escape the target directory, or serves
files with setuid bits; a client that passed ``service=VoidService`` must still never write
outside the tree it asked for nor apply those bits. The same rules hold on the peer for
``upload``. A transfer that fails half-way leaves the old file intact and no temporary file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, ClassVar, Iterator

import pytest

import rpc_classic
from rpc_classic import ClassicConnection, SlaveService, UnsafePathError, download, upload
from rpc_service import VoidService


class HostileSlave(SlaveService):
    """A classic server whose directory listing is whatever the test puts in ``TREE``."""

    TREE: ClassVar[object] = ()

    def exposed_walk(self, path: str) -> Any:
        return type(self).TREE


def hostile_conn(tree: object) -> ClassicConnection:
    cls = type("Hostile", (HostileSlave,), {"TREE": tree})
    return rpc_classic.connect_thread(service=VoidService, remote_service=cls)


@pytest.fixture
def served(tmp_path: Path) -> Path:
    """The 'server's' directory, with a file that a hostile listing points at."""
    root = tmp_path / "served"
    (root / "sub" / "sub").mkdir(parents=True)
    (root / "payload").write_bytes(b"owned\n")
    (root / "escape").write_bytes(b"owned\n")  # where the hostile names lead on the server
    return root


def everything_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")}


@pytest.mark.parametrize(
    "tree",
    [
        pytest.param(lambda escape: (((), (), ("../escape",)),), id="dotdot-file"),
        pytest.param(lambda escape: (((), (), (str(escape),)),), id="absolute-file"),
        pytest.param(lambda escape: (((), ("..",), ()), (("..",), (), ("escape",))), id="dotdot-dir"),
        pytest.param(lambda escape: ((("..",), (), ("escape",)),), id="unannounced-dotdot-dir"),
        pytest.param(lambda escape: (((), ("sub",), ()), (("sub",), (), ("../../escape",))), id="nested-dotdot"),
    ],
)
def test_download_refuses_names_that_escape_the_target(tree: Any, served: Path, tmp_path: Path) -> None:
    target = tmp_path / "inbox" / "target"
    target.parent.mkdir()
    escape = tmp_path / "inbox" / "escape"
    with hostile_conn(tree(escape)) as conn:
        with pytest.raises(UnsafePathError):
            download(conn, str(served / "sub"), target)
    assert not escape.exists()
    assert not (tmp_path / "escape").exists()
    assert everything_under(tmp_path / "inbox") <= {"target"}


@pytest.mark.parametrize("name", ["a/b", "a\\..\\..\\x", "C:x", "", ".", "..", "x\0y"])
def test_download_refuses_every_non_plain_name(name: str, served: Path, tmp_path: Path) -> None:
    with hostile_conn((((), (), (name,)),)) as conn:
        with pytest.raises(UnsafePathError):
            download(conn, str(served), tmp_path / "target")
    assert everything_under(tmp_path / "target") == set()


def test_download_refuses_a_local_symlink_out_of_the_tree(served: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    target.mkdir()
    (target / "sub").symlink_to(outside, target_is_directory=True)
    with rpc_classic.connect_thread(service=VoidService) as conn:
        with pytest.raises(UnsafePathError):
            download(conn, str(served), target)
    assert list(outside.iterdir()) == []


def test_upload_refuses_a_peer_symlink_out_of_the_tree(served: Path, tmp_path: Path) -> None:
    outside = tmp_path / "peer-outside"
    outside.mkdir()
    remote = tmp_path / "peer-target"
    remote.mkdir()
    (remote / "sub").symlink_to(outside, target_is_directory=True)
    with rpc_classic.connect_thread(service=VoidService) as conn:
        with pytest.raises(UnsafePathError):
            upload(conn, served, str(remote))
    assert list(outside.iterdir()) == []


@pytest.fixture
def umask() -> Iterator[int]:
    old = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(old)


def test_download_drops_setuid_setgid_sticky_and_applies_the_umask(served: Path, tmp_path: Path, umask: int) -> None:
    os.chmod(served / "payload", 0o7777)
    assert stat.S_IMODE(os.stat(served / "payload").st_mode) & 0o6000, "cannot set setuid bits here"
    with hostile_conn((((), (), ("payload",)),)) as conn:
        download(conn, str(served), tmp_path / "tree")
        download(conn, str(served / "payload"), tmp_path / "single")
    for copy in (tmp_path / "tree" / "payload", tmp_path / "single"):
        assert stat.S_IMODE(os.stat(copy).st_mode) == 0o777 & ~umask, oct(os.stat(copy).st_mode)


def test_upload_drops_setuid_setgid_sticky_on_the_peer(served: Path, tmp_path: Path, umask: int) -> None:
    os.chmod(served / "payload", 0o7755)
    with rpc_classic.connect_thread(service=VoidService) as conn:
        upload(conn, served / "payload", str(tmp_path / "single"))
        upload(conn, served, str(tmp_path / "tree"))
    for copy in (tmp_path / "tree" / "payload", tmp_path / "single"):
        assert stat.S_IMODE(os.stat(copy).st_mode) == 0o755 & ~umask, oct(os.stat(copy).st_mode)


# -- atomicity (item 16) ----------------------------------------------------------------------


class FailingReader:
    """The peer's file being downloaded: one good chunk, then an I/O error."""

    def __init__(self) -> None:
        self.reads = 0

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise OSError(5, "Input/output error")
        return b"N" * min(size, 10)

    def close(self) -> None:
        pass


class FailingWriter:
    """The peer's file being uploaded: one good write, then the disk fails."""

    def __init__(self, fd: int) -> None:
        self.file = os.fdopen(fd, "wb")
        self.writes = 0

    def write(self, data: bytes) -> int:
        self.writes += 1
        if self.writes > 1:
            raise OSError(28, "No space left on device")
        return self.file.write(data)

    def close(self) -> None:
        self.file.close()


class FailingBuiltins:
    def open(self, file: Any, mode: str = "r") -> Any:
        return FailingReader() if "r" in mode else FailingWriter(file)


class FailingSlave(SlaveService):
    """A peer whose files fail half-way through a transfer."""

    def exposed_getmodule(self, name: str) -> Any:
        return FailingBuiltins() if name == "builtins" else super().exposed_getmodule(name)


def test_a_failed_download_leaves_the_old_file_and_no_temporary(served: Path, tmp_path: Path) -> None:
    target = tmp_path / "keep" / "payload"
    target.parent.mkdir()
    target.write_bytes(b"old contents\n")
    with rpc_classic.connect_thread(service=VoidService, remote_service=FailingSlave) as conn:
        with pytest.raises(OSError):
            download(conn, str(served / "payload"), target, chunk_size=10)
    assert target.read_bytes() == b"old contents\n"
    assert os.listdir(target.parent) == ["payload"]


def test_a_failed_upload_leaves_the_peers_old_file_and_no_temporary(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"x" * 100)
    remote = tmp_path / "peer" / "payload"
    remote.parent.mkdir()
    remote.write_bytes(b"old contents\n")
    with rpc_classic.connect_thread(service=VoidService, remote_service=FailingSlave) as conn:
        with pytest.raises(OSError):
            upload(conn, source, str(remote), chunk_size=10)
    assert remote.read_bytes() == b"old contents\n"
    assert os.listdir(remote.parent) == ["payload"]


def test_a_completed_download_leaves_no_temporary(served: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "payload"
    target.parent.mkdir()
    target.write_bytes(b"old")
    with rpc_classic.connect_thread(service=VoidService) as conn:
        download(conn, str(served / "payload"), target)
    assert target.read_bytes() == b"owned\n"
    assert os.listdir(target.parent) == ["payload"]


def test_download_replaces_a_symlinked_target_instead_of_writing_through_it(served: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious\n")
    target = tmp_path / "target"
    target.mkdir()
    (target / "payload").symlink_to(outside)
    with hostile_conn((((), (), ("payload",)),)) as conn:
        download(conn, str(served), target)
    assert outside.read_bytes() == b"precious\n"
    assert not (target / "payload").is_symlink() and (target / "payload").read_bytes() == b"owned\n"


def test_no_listed_name_writes_outside_the_target(served: Path, tmp_path: Path) -> None:
    """Property: whatever names a hostile listing holds, download either refuses them or
    writes only inside the target directory."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    parts = st.sampled_from(["..", ".", "", "/", "\\", "C:", "escape", "sub", "a", "\0", "~"])
    # never absolute ("/..."): a regression must not write at the file system's root
    names = st.lists(parts, min_size=1, max_size=4).map("".join).filter(lambda name: not name.startswith("/"))
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    hostile: type[HostileSlave] = type("Hostile", (HostileSlave,), {"TREE": ()})
    with rpc_classic.connect_thread(service=VoidService, remote_service=hostile) as conn:

        @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
        @given(dirs=st.lists(names, max_size=2), files=st.lists(names, min_size=1, max_size=2))
        def check(dirs: list[str], files: list[str]) -> None:
            hostile.TREE = (((), tuple(dirs), tuple(files)), *(((d,), (), tuple(files)) for d in dirs))
            target = inbox / "target"
            try:
                download(conn, str(served / "sub"), target)
            except (UnsafePathError, OSError):
                pass
            assert everything_under(tmp_path / "inbox") <= {"target"} | {
                str(p.relative_to(inbox)) for p in target.rglob("*")
            }
            assert not (tmp_path / "escape").exists() and not (inbox / "escape").exists()

        check()

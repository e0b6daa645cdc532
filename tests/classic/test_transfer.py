"""upload/download: byte-exact copies of files and trees, in large chunks with requests in flight."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rpc_classic import ClassicConnection, download, upload
from tests.service.helpers import count_requests


def make_tree(root: Path) -> dict[str, bytes]:
    """A tree with nesting, an empty file, an empty directory and a multi-chunk binary file."""
    files = {
        "top.txt": b"hello\n",
        "empty.bin": b"",
        "sub/data.bin": os.urandom(3 * 1024 * 1024 + 12345),
        "sub/deeper/more/notes.md": "ünïcödé\r\n".encode() * 100,
        "sub/deeper/crlf.txt": b"a\r\nb\rc\n",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty-dir").mkdir()
    os.chmod(root / "top.txt", 0o751)
    return files


def snapshot(root: Path) -> tuple[set[str], dict[str, bytes]]:
    dirs = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir()}
    files = {str(p.relative_to(root)).replace(os.sep, "/"): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    return dirs, files


def test_upload_then_download_a_tree_byte_exact(subproc_conn: ClassicConnection, tmp_path: Path) -> None:
    source = tmp_path / "source"
    files = make_tree(source)
    remote = str(tmp_path / "on-the-peer")
    upload(subproc_conn, source, remote)
    assert snapshot(Path(remote)) == snapshot(source)
    assert stat.S_IMODE(os.stat(Path(remote) / "top.txt").st_mode) == 0o751

    back = tmp_path / "back"
    download(subproc_conn, remote, back)
    dirs, copied = snapshot(back)
    assert copied == files
    assert "empty-dir" in dirs
    assert stat.S_IMODE(os.stat(back / "top.txt").st_mode) == 0o751


def test_single_files_and_small_chunks(thread_conn: ClassicConnection, tmp_path: Path) -> None:
    data = os.urandom(100_001)
    (tmp_path / "one.bin").write_bytes(data)
    upload(thread_conn, tmp_path / "one.bin", str(tmp_path / "copy.bin"), chunk_size=4096)  # 25 chunks, 4 in flight
    assert (tmp_path / "copy.bin").read_bytes() == data
    download(thread_conn, str(tmp_path / "copy.bin"), tmp_path / "again.bin", chunk_size=1000)
    assert (tmp_path / "again.bin").read_bytes() == data


def test_large_file_costs_few_requests(thread_conn: ClassicConnection, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    calls = count_requests(thread_conn)
    upload(thread_conn, tmp_path / "big.bin", str(tmp_path / "big-copy.bin"))
    assert (tmp_path / "big-copy.bin").read_bytes() == data
    assert calls[0] < 20  # 5 writes of 1 MiB plus open/close/chmod, not one per 64 KiB


def test_filter_skips_files_and_whole_directories(thread_conn: ClassicConnection, tmp_path: Path) -> None:
    source = tmp_path / "source"
    make_tree(source)
    target = tmp_path / "filtered"
    upload(thread_conn, source, str(target), filter=lambda path: not path.endswith(("deeper", ".txt")))
    _, files = snapshot(target)
    assert sorted(files) == ["empty.bin", "sub/data.bin"]
    assert not (target / "sub" / "deeper").exists()


def test_invalid_paths(thread_conn: ClassicConnection, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a file or a directory"):
        upload(thread_conn, tmp_path / "missing", str(tmp_path / "x"))
    upload(thread_conn, tmp_path / "missing", str(tmp_path / "x"), ignore_invalid=True)
    with pytest.raises(ValueError, match="on the peer"):
        download(thread_conn, str(tmp_path / "missing"), tmp_path / "y")
    with pytest.raises(ValueError, match="chunk_size"):
        upload(thread_conn, tmp_path, str(tmp_path / "z"), chunk_size=0)


def test_remote_errors_surface_and_leave_no_open_file(thread_conn: ClassicConnection, tmp_path: Path) -> None:
    (tmp_path / "f.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError):
        upload(thread_conn, tmp_path / "f.bin", str(tmp_path / "no" / "such" / "dir" / "f.bin"))
    assert thread_conn.eval("1") == 1  # the connection is still usable

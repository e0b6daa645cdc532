"""File transfer: :func:`upload` and :func:`download` of files and directory trees.

Owns copying bytes between this side's file system and the peer's through the peer's own
``open``/``os`` (so it needs a classic peer): files stream in large chunks (1 MiB by
default) with a few requests in flight, so a transfer costs a round trip per several MiB,
never holds a whole file in memory, and is byte-exact. Trees keep their structure; the
permission bits of each file are copied where the platform allows. Symbolic links to
directories are not followed, and entries that are neither regular files nor directories
are skipped. It never interprets file contents.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from functools import partial
from typing import Any, Callable, Final, Iterable

from rpc_service import AsyncResult, async_

__all__ = ["upload", "download", "walk_tree", "DEFAULT_CHUNK_SIZE"]

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
_WINDOW: Final = 4  # requests in flight per file

Tree = tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...]
PathFilter = Callable[[str], bool]


def walk_tree(root: str) -> Tree:
    """Every directory under ``root``, top-down: ``(relative parts, subdirs, regular files)``."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        parts = () if rel == os.curdir else tuple(rel.split(os.sep))
        dirnames[:] = sorted(d for d in dirnames if not os.path.islink(os.path.join(dirpath, d)))
        files = tuple(sorted(f for f in filenames if os.path.isfile(os.path.join(dirpath, f))))
        entries.append((parts, tuple(dirnames), files))
    return tuple(entries)


def _settle(conn: Any, result: AsyncResult) -> Any:
    result.set_expiry(conn.config.sync_request_timeout)
    return result.value


def _check_chunk(chunk_size: int) -> None:
    if type(chunk_size) is not int or chunk_size < 1:
        raise ValueError("chunk_size must be a positive int")


def _join(sep: str) -> Callable[..., str]:
    def join(root: str, *parts: str) -> str:
        return sep.join((root.rstrip(sep) or sep, *parts)) if parts else root

    return join


def _copy_tree(
    tree: Tree,
    src_root: str,
    dst_root: str,
    src_join: Callable[..., str],
    dst_join: Callable[..., str],
    makedirs: Callable[[str], object],
    copy_file: Callable[[str, str], None],
    keep: PathFilter | None,
) -> None:
    makedirs(dst_root)
    pruned: set[tuple[str, ...]] = set()
    for rel, dirs, files in tree:
        if any(rel[:depth] in pruned for depth in range(1, len(rel) + 1)):
            continue
        for name in dirs:
            if keep is not None and not keep(src_join(src_root, *rel, name)):
                pruned.add((*rel, name))
            else:
                makedirs(dst_join(dst_root, *rel, name))
        for name in files:
            source = src_join(src_root, *rel, name)
            if keep is None or keep(source):
                copy_file(source, dst_join(dst_root, *rel, name))


def _paths(*paths: Any) -> Iterable[str]:
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"paths are str or os.PathLike, not {type(path).__name__}")
        yield str(os.fspath(path))


# -- upload ----------------------------------------------------------------------------


def upload(
    conn: Any,
    localpath: str | os.PathLike[str],
    remotepath: str | os.PathLike[str],
    *,
    filter: PathFilter | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_invalid: bool = False,
) -> None:
    """Copy the local file or directory tree ``localpath`` to ``remotepath`` on the peer.

    A directory's contents land inside ``remotepath`` (created as needed); ``filter(path)``
    returning False skips a local file or directory. Anything else than a file or a
    directory raises ValueError unless ``ignore_invalid``.
    """
    _check_chunk(chunk_size)
    local, remote = _paths(localpath, remotepath)
    if not (os.path.isdir(local) or os.path.isfile(local)):
        if ignore_invalid:
            return
        raise ValueError(f"cannot upload {local!r}: not a file or a directory")
    ros = conn.root.getmodule("os")
    copy = partial(_upload_file, conn, conn.root.getmodule("builtins").open, ros.chmod, chunk_size=chunk_size)
    if os.path.isdir(local):
        makedirs = partial(ros.makedirs, exist_ok=True)
        _copy_tree(walk_tree(local), local, remote, os.path.join, _join(ros.sep), makedirs, copy, filter)
    else:
        copy(local, remote)


def _upload_file(conn: Any, ropen: Any, rchmod: Any, local: str, remote: str, *, chunk_size: int) -> None:
    with open(local, "rb") as src:
        dst = ropen(remote, "wb")
        try:
            write = async_(dst.write)
            pending: deque[AsyncResult] = deque()
            while chunk := src.read(chunk_size):
                pending.append(write(chunk))
                if len(pending) >= _WINDOW:
                    _settle(conn, pending.popleft())
            while pending:
                _settle(conn, pending.popleft())
        finally:
            if not conn.closed:
                dst.close()
        mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)
    with contextlib.suppress(OSError, NotImplementedError):
        rchmod(remote, mode)


# -- download --------------------------------------------------------------------------


def download(
    conn: Any,
    remotepath: str | os.PathLike[str],
    localpath: str | os.PathLike[str],
    *,
    filter: PathFilter | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    ignore_invalid: bool = False,
) -> None:
    """Copy the peer's file or directory tree ``remotepath`` to ``localpath`` here.

    The mirror of :func:`upload`; ``filter`` is given the peer's paths.
    """
    _check_chunk(chunk_size)
    remote, local = _paths(remotepath, localpath)
    ros = conn.root.getmodule("os")
    is_dir = ros.path.isdir(remote)
    if not (is_dir or ros.path.isfile(remote)):
        if ignore_invalid:
            return
        raise ValueError(f"cannot download {remote!r}: not a file or a directory on the peer")
    copy = partial(_download_file, conn, conn.root.getmodule("builtins").open, ros.stat, chunk_size=chunk_size)
    if is_dir:
        makedirs = partial(os.makedirs, exist_ok=True)
        _copy_tree(conn.root.walk(remote), remote, local, _join(ros.sep), os.path.join, makedirs, copy, filter)
    else:
        copy(remote, local)


def _download_file(conn: Any, ropen: Any, rstat: Any, remote: str, local: str, *, chunk_size: int) -> None:
    src = ropen(remote, "rb")
    try:
        with open(local, "wb") as dst:
            read = async_(src.read)
            pending = deque(read(chunk_size) for _ in range(_WINDOW))
            while pending:
                data = _settle(conn, pending.popleft())
                if type(data) is not bytes:
                    raise TypeError(f"the peer's file returned {type(data).__name__}, not bytes")
                if not data:
                    break
                dst.write(data)
                pending.append(read(chunk_size))
            for extra in pending:  # reads past the end: empty, but let them land
                _settle(conn, extra)
    finally:
        if not conn.closed:
            src.close()
    with contextlib.suppress(OSError, NotImplementedError):
        os.chmod(local, stat.S_IMODE(rstat(remote).st_mode))

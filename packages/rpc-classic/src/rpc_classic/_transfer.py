"""File transfer: :func:`upload` and :func:`download` of files and directory trees.

Owns copying bytes between this side's file system and the peer's through the peer's own
``open``/``os`` (so it needs a classic peer): files stream in large chunks (1 MiB by
default) with a few requests in flight, so a transfer costs a round trip per several MiB,
never holds a whole file in memory, and is byte-exact. Trees keep their structure.

It treats the *peer's* answers as untrusted (a hostile server must not write outside the
target of a ``download``): every name in a tree must be a plain name (no path separator of
either flavour, no ``.``/``..``, nothing absolute or drive-qualified), every directory
written into must resolve inside the target root (no symbolic link out of the tree), and
only the permission bits ``0o777`` are carried over -- never setuid, setgid or sticky --
through the creating ``open`` so the receiving side's umask applies. Each file is written
to a temporary file beside its target and renamed over it only when complete, so a failed
or killed transfer leaves the old file intact. Symbolic links to directories are not
followed, and entries that are neither regular files nor directories are skipped. It never
interprets file contents.
"""

from __future__ import annotations

import contextlib
import ntpath
import os
import posixpath
import secrets
import stat
from collections import deque
from typing import Any, Callable, Final, Iterable

from rpc_service import AsyncResult, async_

from ._errors import UnsafePathError
from ._mock import need_peer

__all__ = ["upload", "download", "walk_tree", "check_name", "DEFAULT_CHUNK_SIZE", "PERMISSION_BITS"]

DEFAULT_CHUNK_SIZE: Final = 1024 * 1024
#: The only mode bits a transfer carries over (never setuid 0o4000, setgid 0o2000, sticky 0o1000).
PERMISSION_BITS: Final = 0o777
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


def check_name(name: object) -> str:
    """``name`` if it is a plain file or directory name on every platform, else
    :class:`UnsafePathError` (separators ``/`` and ``\\``, ``.``, ``..``, empty, NUL,
    absolute or drive-qualified names)."""
    if type(name) is not str:
        raise UnsafePathError(f"a tree entry name must be a str, not {type(name).__name__}")
    if name in ("", os.curdir, os.pardir, ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UnsafePathError(f"refusing the entry name {name!r}: not a plain name")
    if ntpath.splitdrive(name)[0] or os.path.isabs(name):
        raise UnsafePathError(f"refusing the entry name {name!r}: absolute or drive-qualified")
    return name


def _checked_tree(tree: object) -> Tree:
    """The peer's listing, validated: tuples of plain names, each directory announced by its parent."""
    if type(tree) is not tuple:
        raise UnsafePathError(f"the peer's tree listing is a {type(tree).__name__}, not a tuple")
    known: set[tuple[str, ...]] = {()}
    entries = []
    for entry in tree:
        if type(entry) is not tuple or len(entry) != 3 or any(type(group) is not tuple for group in entry):
            raise UnsafePathError("malformed entry in the peer's tree listing")
        rel = tuple(check_name(part) for part in entry[0])
        if rel not in known:
            raise UnsafePathError(f"the peer's tree lists {'/'.join(rel)!r} without its parent")
        dirs = tuple(check_name(name) for name in entry[1])
        files = tuple(check_name(name) for name in entry[2])
        known.update((*rel, name) for name in dirs)
        entries.append((rel, dirs, files))
    return tuple(entries)


def _settle(conn: Any, result: AsyncResult) -> Any:
    result.set_expiry(conn.config.sync_request_timeout)
    return result.value


def _check_chunk(chunk_size: int) -> None:
    if type(chunk_size) is not int or chunk_size < 1:
        raise ValueError("chunk_size must be a positive int")


def _paths(*paths: Any) -> Iterable[str]:
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"paths are str or os.PathLike, not {type(path).__name__}")
        yield str(os.fspath(path))


def _temp_name(path: str, seps: str) -> str:
    """A fresh hidden name in the directory of ``path`` (``seps``: that side's separators)."""
    cut = max(path.rfind(sep) for sep in seps) + 1
    return f"{path[:cut]}.{path[cut:]}.{secrets.token_hex(6)}.part"


class _Side:
    """One side's file system, as the copy needs it (this process's, or the peer's via proxies)."""

    def __init__(self, conn: Any, remote: bool, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self.conn = conn
        self.remote = remote
        self.chunk_size = chunk_size
        if remote:
            ros = conn.root.getmodule("os")
            self.os: Any = ros
            self.open: Any = conn.root.getmodule("builtins").open
            self.flavor: Any = ntpath if ros.name == "nt" else posixpath
            self.create_flags = ros.O_WRONLY | ros.O_CREAT | ros.O_EXCL
            with contextlib.suppress(AttributeError):
                self.create_flags |= ros.O_BINARY
        else:
            self.os, self.open, self.flavor = os, open, os.path
            self.create_flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        self.seps = self.flavor.sep + (self.flavor.altsep or "")
        self.root_real = ""

    def join(self, root: str, *parts: str) -> str:
        return root.rstrip(self.seps) + self.flavor.sep + self.flavor.sep.join(parts) if parts else root

    def makedirs(self, path: str) -> None:
        self.os.makedirs(path, exist_ok=True)

    def enter_root(self, root: str) -> None:
        self.makedirs(root)
        self.root_real = str(self.os.path.realpath(root))

    def check_inside(self, path: str) -> None:
        """Refuse a directory that resolves outside the root (a symbolic link out of the tree)."""
        flavor = self.flavor
        real = str(self.os.path.realpath(path))
        try:
            common = flavor.commonpath([self.root_real, real])
        except ValueError:  # different drives
            common = ""
        if flavor.normcase(common) != flavor.normcase(self.root_real):
            raise UnsafePathError(f"refusing to write into {path!r}: it resolves outside the target tree ({real!r})")

    def create(self, path: str, mode: int) -> tuple[str, Any]:
        """A new temporary file beside ``path``, created with ``mode`` (the umask applies)."""
        temp = _temp_name(path, self.seps)
        fd = self.os.open(temp, self.create_flags, mode & PERMISSION_BITS)
        try:
            return temp, self.open(fd, "wb")
        except BaseException:
            self.os.close(fd)
            self.discard(temp)
            raise

    def discard(self, temp: str) -> None:
        if not (self.remote and self.conn.closed):
            with contextlib.suppress(Exception):
                self.os.unlink(temp)

    def commit(self, temp: str, path: str) -> None:
        self.os.replace(temp, path)


def _copy_tree(tree: Tree, src_root: str, dst_root: str, src: _Side, dst: _Side, keep: PathFilter | None) -> None:
    dst.enter_root(dst_root)
    pruned: set[tuple[str, ...]] = set()
    for rel, dirs, files in tree:
        if any(rel[:depth] in pruned for depth in range(1, len(rel) + 1)):
            continue
        for name in dirs:
            if keep is not None and not keep(src.join(src_root, *rel, name)):
                pruned.add((*rel, name))
            else:
                target = dst.join(dst_root, *rel, name)
                dst.makedirs(target)
                dst.check_inside(target)
        for name in files:
            source = src.join(src_root, *rel, name)
            if keep is None or keep(source):
                _copy_file(src, dst, source, dst.join(dst_root, *rel, name))


def _mode_of(side: _Side, path: str) -> int:
    mode = side.os.stat(path).st_mode
    if type(mode) is not int:
        raise TypeError(f"the peer's stat returned a {type(mode).__name__} mode, not an int")
    return stat.S_IMODE(mode) & PERMISSION_BITS


def _copy_file(src: _Side, dst: _Side, source: str, target: str) -> None:
    conn = src.conn
    mode = _mode_of(src, source)
    reader = src.open(source, "rb")
    try:
        temp, writer = dst.create(target, mode)
        done = False
        try:
            _pump(conn, dst, reader, writer, src.chunk_size)
            writer.close()
            dst.commit(temp, target)
            done = True
        finally:
            if not done:
                if not (dst.remote and conn.closed):
                    with contextlib.suppress(Exception):
                        writer.close()
                dst.discard(temp)
    finally:
        if not (src.remote and conn.closed):
            reader.close()


def _pump(conn: Any, dst: _Side, reader: Any, writer: Any, chunk_size: int) -> None:
    if dst.remote:  # writes in flight, reads local
        write = async_(writer.write)
        pending: deque[AsyncResult] = deque()
        while chunk := reader.read(chunk_size):
            pending.append(write(chunk))
            if len(pending) >= _WINDOW:
                _settle(conn, pending.popleft())
        while pending:
            _settle(conn, pending.popleft())
        return
    read = async_(reader.read)  # reads in flight, writes local
    reads = deque(read(chunk_size) for _ in range(_WINDOW))
    try:
        while reads:
            data = _settle(conn, reads.popleft())
            if type(data) is not bytes:
                raise TypeError(f"the peer's file returned {type(data).__name__}, not bytes")
            if not data:
                break
            writer.write(data)
            reads.append(read(chunk_size))
    finally:
        for extra in reads:  # reads past the end (or after a failure): let them land
            with contextlib.suppress(Exception):
                _settle(conn, extra)


# -- upload and download ---------------------------------------------------------------


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
    directory raises ValueError unless ``ignore_invalid``. Names that are not plain on the
    peer, and peer directories that resolve outside ``remotepath``, raise
    :class:`UnsafePathError`; only the ``0o777`` permission bits are copied.
    """
    need_peer(conn, "upload()")
    _check_chunk(chunk_size)
    local, remote = _paths(localpath, remotepath)
    if not (os.path.isdir(local) or os.path.isfile(local)):
        if ignore_invalid:
            return
        raise ValueError(f"cannot upload {local!r}: not a file or a directory")
    src, dst = _Side(conn, remote=False, chunk_size=chunk_size), _Side(conn, remote=True)
    if os.path.isdir(local):
        _copy_tree(_checked_tree(walk_tree(local)), local, remote, src, dst, filter)
    else:
        _copy_file(src, dst, local, remote)


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

    The mirror of :func:`upload`; ``filter`` is given the peer's paths. The peer's listing is
    not trusted: a name with a separator, ``..``, an absolute or drive-qualified path, or a
    local directory resolving outside ``localpath`` raises :class:`UnsafePathError` before
    anything is written there; setuid/setgid/sticky bits are never applied.
    """
    need_peer(conn, "download()")
    _check_chunk(chunk_size)
    remote, local = _paths(remotepath, localpath)
    src, dst = _Side(conn, remote=True, chunk_size=chunk_size), _Side(conn, remote=False)
    is_dir = src.os.path.isdir(remote) is True
    if not (is_dir or src.os.path.isfile(remote) is True):
        if ignore_invalid:
            return
        raise ValueError(f"cannot download {remote!r}: not a file or a directory on the peer")
    if is_dir:
        _copy_tree(_checked_tree(conn.root.walk(remote)), remote, local, src, dst, filter)
    else:
        _copy_file(src, dst, remote, local)

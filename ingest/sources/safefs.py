"""Read a source file as its reader would meet it: one descriptor, no links followed.

The indexer usually runs with more rights than the people who search, and a user who
can write somewhere in a watched tree can swap a file for a symlink (or a FIFO, or a
directory) between any two looks at it by name. So a file is looked at **once**:

* its root is resolved once (``realpath``); from the root's descriptor each directory
  below it is opened with ``openat(O_PATH | O_DIRECTORY | O_NOFOLLOW)`` and the file
  itself with ``openat(O_PATH | O_NOFOLLOW)``: a symlink anywhere below the root is
  never followed (the component is refused), and opening a FIFO or a device has no
  side effect (``O_PATH`` opens nothing);
* ``fstat`` of that descriptor decides the type (only regular files are documents);
* the POSIX mode/owner/group and the POSIX.1e ACL are read from the same inode
  (``/proc/self/fd/N``), and so are those of every directory from the root down;
  the directories above the root are read by their (resolved) names;
* the content is read through a reopen of that same inode (``O_NONBLOCK``); its hash
  and the parser's input (a private copy in the parse work folder, hashed while it is
  written) come from that read, so the text indexed, its version and its ACL all
  belong to one inode.

Sidecar label files (``x.pdf.labels``) are opened the same way beside the file: a
sidecar that is a symlink, a FIFO, not regular, hard-linked elsewhere or over
:data:`MAX_SIDECAR_BYTES` is refused with an error that names it and never quotes
its content.
"""
from __future__ import annotations

import hashlib
import os
import stat as stat_mod
from pathlib import Path

from acl.model import ACL
from acl.posix import Entries, acl_from_entries, fd_path, read_entries, read_entries_fd

O_PATH = getattr(os, "O_PATH", 0o10000000)
_DIR_FLAGS = O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
BLOCK = 1 << 20
MAX_SIDECAR_BYTES = 64 * 1024


class NotRegular(OSError):
    """The path is (or passes through) something other than a regular file and real
    directories: a symlink, a FIFO, a socket, a device or a directory."""


def _kind(mode: int) -> str:
    for test, name in ((stat_mod.S_ISLNK, "a symbolic link"), (stat_mod.S_ISFIFO, "a FIFO"),
                       (stat_mod.S_ISDIR, "a directory"), (stat_mod.S_ISSOCK, "a socket"),
                       (stat_mod.S_ISCHR, "a character device"), (stat_mod.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def components(rel: str) -> list[str]:
    """The names of a relative path; ``..``, ``.``, empty names and absolute paths are refused."""
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"{rel!r} is not a plain relative path")
    return parts


def _open_dir_fd(path: str) -> int:
    return os.open(path, _DIR_FLAGS)


class SourceFile:
    """One regular file under a root, held by an ``O_PATH`` descriptor (see module doc).
    Use as a context manager; :func:`open_source` makes one."""

    def __init__(self, root: str, rel: str, fd: int, dir_fd: int, st: os.stat_result, dirs: list[Entries]):
        self.root, self.rel, self.fd, self.dir_fd, self.st, self._dirs = root, rel, fd, dir_fd, st, dirs
        self.name = rel.rsplit("/", 1)[-1]

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self.fd = self.dir_fd = -1

    def __enter__(self) -> "SourceFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- permissions -------------------------------------------------------------
    def acl(self) -> ACL:
        """Who may read this inode: its entries and those of every directory above it
        (below the root from the descriptors walked, above it by resolved name)."""
        where = self.rel
        try:
            file_entries = read_entries_fd(self.fd, self.st)
            dirs = list(self._dirs)
            for d in Path(self.root).parents:
                where = str(d)
                dirs.append(read_entries(d))
        except OSError as e:
            return ACL.unknown(f"cannot read permissions of {where}: {e.strerror}")
        except ValueError as e:
            return ACL.unknown(f"{where}: {e}")
        return acl_from_entries(file_entries, dirs)

    # -- content -------------------------------------------------------------------
    def open_read(self) -> int:
        """A read descriptor of this same inode (``ValueError`` if it is not the same any more)."""
        fd = os.open(fd_path(self.fd), _READ_FLAGS)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (self.st.st_dev, self.st.st_ino) or not stat_mod.S_ISREG(st.st_mode):
            os.close(fd)
            raise NotRegular(f"{self.rel}: the file changed while it was opened")
        return fd

    def sha256(self, max_bytes: int | None = None) -> str:
        return self.copy_to(None, max_bytes)

    def copy_to(self, dest: "str | os.PathLike | None", max_bytes: int | None = None) -> str:
        """Hash the content (and write it to ``dest``, a new private file, when given);
        reads at most ``max_bytes`` (+1, to tell it is over: then ``ValueError``)."""
        fd = self.open_read()
        out = None
        try:
            if dest is not None:
                out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            h, n = hashlib.sha256(), 0
            while True:
                block = os.read(fd, BLOCK)
                if not block:
                    break
                n += len(block)
                if max_bytes is not None and n > max_bytes:
                    raise ValueError(f"over the {max_bytes} byte limit")
                h.update(block)
                if out is not None:
                    view = memoryview(block)
                    while view:
                        view = view[os.write(out, view):]
            return h.hexdigest()
        finally:
            os.close(fd)
            if out is not None:
                os.close(out)


def resolve_root(root: str | os.PathLike) -> str:
    """A root as configured -> the real directory it names now (resolved once, at configuration)."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(root))))


def open_source(root: str, rel: str) -> SourceFile:
    """Open ``root/rel`` without following any link below ``root`` (see module doc).

    Raises ``FileNotFoundError`` when it does not exist, :class:`NotRegular` when it is (or
    its path passes through) anything but a regular file and real directories, another
    ``OSError`` when it cannot be examined, ``ValueError`` for a path with ``..``."""
    parts = components(rel)
    real = os.path.realpath(root)
    dirs: list[Entries] = []
    fd = _open_dir_fd(real)
    try:
        for i, name in enumerate(parts[:-1]):
            dirs.append(read_entries_fd(fd))
            try:
                nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (20, 40):  # ENOTDIR, ELOOP: a link or a file where a directory was
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    raise NotRegular(f"{'/'.join(parts[:i + 1])} is {_kind(st.st_mode)}") from None
                raise
            os.close(fd)
            fd = nfd
        dirs.append(read_entries_fd(fd))
        ffd = os.open(parts[-1], _FILE_FLAGS, dir_fd=fd)
    except BaseException:
        os.close(fd)
        raise
    try:
        st = os.fstat(ffd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise NotRegular(f"{rel} is {_kind(st.st_mode)}")
    except BaseException:
        os.close(ffd)
        os.close(fd)
        raise
    return SourceFile(real, rel, ffd, fd, st, dirs)


def is_regular_file(path: str | os.PathLike) -> bool:
    """``lstat`` says a regular file (a symlink to one is not)."""
    try:
        return stat_mod.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def read_sidecar(dir_fd: int, name: str, limit: int = MAX_SIDECAR_BYTES) -> bytes | None:
    """The bytes of the sidecar ``name`` in the directory ``dir_fd``, or None if there is none.
    ``ValueError`` (naming the file, never its content) when it is a link, not regular,
    hard-linked, or over ``limit`` bytes."""
    try:
        pfd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        st = os.fstat(pfd)
        if not stat_mod.S_ISREG(st.st_mode):
            raise ValueError(f"{name}: is {_kind(st.st_mode)}; a labels sidecar must be a regular file")
        if st.st_nlink > 1:
            raise ValueError(f"{name}: has {st.st_nlink} hard links; a labels sidecar must have one")
        if st.st_size > limit:
            raise ValueError(f"{name}: {st.st_size} bytes is over the {limit} byte limit for labels")
        fd = os.open(fd_path(pfd), _READ_FLAGS)
        try:
            data = os.read(fd, limit + 1)
        finally:
            os.close(fd)
        if len(data) > limit:
            raise ValueError(f"{name}: over the {limit} byte limit for labels")
        return data
    finally:
        os.close(pfd)

"""Permission changes that no inotify watch on a root reports, polled cheaply.

The folder watcher sees chmod/chown/setfacl of the files and directories *inside* a
root (IN_ATTRIB). Two things that also decide who may read a file are outside it:

* the directories **above** the root (search permission on each of them);
* the OS group database (``/etc/group``, ``/etc/passwd``): an index-time ACL may hold
  user tokens that come from group memberships (an intersection of a group and an
  owner, or a group's members denied one by one).

:class:`PermissionWatch` stats those (mode, owner, group, POSIX.1e ACL of each
ancestor; inode, size, mtime and ctime of the two database files) each time it is
asked; ``ingest run`` asks every 0.5 s and rescans a root whose ancestors changed,
or every root when the group database changed. So a change there takes effect
within the poll interval plus one rescan of the root (measured in
``bench/results/perm_latency.json``), instead of the periodic rescan (600 s).
"""
from __future__ import annotations

import os
from pathlib import Path

from acl.posix import XATTR_ACCESS, group_db_stamp


def _dir_stamp(d: Path):
    try:
        st = os.stat(d, follow_symlinks=False)
    except OSError as e:
        return ("error", e.errno)
    try:
        acl = os.getxattr(d, XATTR_ACCESS, follow_symlinks=False)
    except OSError:
        acl = None
    return (st.st_ino, st.st_mode, st.st_uid, st.st_gid, acl)


def ancestors_stamp(root: str) -> tuple:
    """Permissions of the root and every directory above it."""
    p = Path(root)
    return tuple(_dir_stamp(d) for d in (p, *p.parents))


class PermissionWatch:
    def __init__(self, roots: list[str]):
        self.roots = list(roots)
        self._groups = group_db_stamp()
        self._dirs = {r: ancestors_stamp(r) for r in self.roots}

    def changed(self) -> list[str]:
        """The roots to rescan since the last call: all of them after a group database change,
        else those whose ancestors' permissions changed."""
        groups = group_db_stamp()
        dirs = {r: ancestors_stamp(r) for r in self.roots}
        out = self.roots if groups != self._groups else [r for r in self.roots if dirs[r] != self._dirs[r]]
        self._groups, self._dirs = groups, dirs
        return list(out)

"""POSIX permissions -> normalised ACL, the kernel's rules included: owner/group/mode
bits and POSIX.1e ACL entries (``setfacl``), of the file and every directory above it.

To open ``/a/b/f`` a user needs search (x) on ``/``, ``/a``, ``/a/b`` and read (r) on
``f``. For each of these the kernel (``posix_acl_permission``) decides with the
first class that matches, without fall-through:

1. the owner: the owner entry (never masked);
2. a named user entry (``user:bob:r--``): that entry, masked;
3. the owning group and the named group entries: if the user is in *any* of
   them, access is granted when one of those it is in grants the bit (masked),
   and otherwise **denied** -- it never falls through to ``other``;
4. other.

A file without extended entries is the minimal ACL its mode bits spell (owner,
group, other, no mask). Each component gives an (allow, deny) pair:

* users with a decision of their own (owner, named users) who lack the bit are
  denied by user token;
* other has the bit -> allow everyone, and deny every group entry that matches
  but grants nothing (a group entry that blocks ``other``). When such a group
  has a member that must still read (the owner, a named user that may, or a
  member of a granting group), a group deny would hit that member too (deny
  wins), so that group's other members are denied one by one instead, from the
  OS database at index time;
* other lacks the bit -> allow the owner and the named users that have it, and
  the groups that grant it.

The components are combined with AND: denies are united, allows intersected. An
intersection of a user and a group (or of two groups) needs membership, which is
looked up in the OS group database at index time (``/etc/group``, primary gids).
One Linux quirk is kept: when the mask is empty (``m::---``), the kernel skips the
ACL and decides by the mode bits, so named entries then fall through to other.
Default ACLs need no rule of their own: the kernel copies them into a new file's
access ACL, which is what is read. The superuser's bypass (CAP_DAC_OVERRIDE) is
not modelled. An ACL that cannot be read or parsed makes the ACL *unknown*
(visible to no one, flagged).
"""
from __future__ import annotations

import errno
import grp
import os
import pwd
import struct
from dataclasses import dataclass
from pathlib import Path

from .model import ACL, EVERYONE, group_token, user_token

_UNIVERSE = None  # an allow set that matches everyone

XATTR_ACCESS = "system.posix_acl_access"
XATTR_DEFAULT = "system.posix_acl_default"
# include/uapi/linux/posix_acl_xattr.h and posix_acl.h
ACL_XATTR_VERSION = 2
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
READ, EXECUTE = 4, 1
_TAGS = {ACL_USER_OBJ: "user_obj", ACL_USER: "user", ACL_GROUP_OBJ: "group_obj", ACL_GROUP: "group",
         ACL_MASK: "mask", ACL_OTHER: "other"}


# Group membership from the OS database, cached only while /etc/group and /etc/passwd
# are unchanged: every lookup compares their (inode, size, mtime) with what the cache
# was filled from, so ``gpasswd -d`` is seen by the next ACL computed in this process.
GROUP_FILES = ("/etc/group", "/etc/passwd")
_members_cache: dict[int, frozenset[int]] = {}
_members_stamp: tuple | None = None


def group_db_stamp() -> tuple:
    """Identity of the OS user/group database files (changes when either is rewritten)."""
    out = []
    for f in GROUP_FILES:
        try:
            st = os.stat(f)
            out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _group_members(gid: int) -> frozenset[int]:
    global _members_stamp
    stamp = group_db_stamp()
    if stamp != _members_stamp:
        _members_cache.clear()
        _members_stamp = stamp
    got = _members_cache.get(gid)
    if got is None:
        got = _members_cache[gid] = _read_group_members(gid)
    return got


def _read_group_members(gid: int) -> frozenset[int]:
    uids: set[int] = set()
    try:
        g = grp.getgrgid(gid)
        for name in g.gr_mem:
            try:
                uids.add(pwd.getpwnam(name).pw_uid)
            except KeyError:
                pass
    except KeyError:
        pass
    for p in pwd.getpwall():
        if p.pw_gid == gid:
            uids.add(p.pw_uid)
    return frozenset(uids)


def clear_caches() -> None:
    """Forget OS group memberships (they are also forgotten whenever /etc/group or
    /etc/passwd changes)."""
    global _members_stamp
    _members_cache.clear()
    _members_stamp = None


@dataclass(frozen=True)
class Entries:
    """One inode's access ACL: owner uid and group gid from stat, perms as rwx bits (4/2/1)."""

    uid: int
    gid: int
    user_obj: int
    group_obj: int
    other: int
    mask: int | None = None
    users: tuple[tuple[int, int], ...] = ()   # (uid, perm) of named user entries
    groups: tuple[tuple[int, int], ...] = ()  # (gid, perm) of named group entries

    @classmethod
    def from_mode(cls, st: os.stat_result) -> "Entries":
        m = st.st_mode
        return cls(st.st_uid, st.st_gid, (m >> 6) & 7, (m >> 3) & 7, m & 7)


def parse_acl_xattr(data: bytes, st: os.stat_result) -> Entries:
    """Parse the kernel's ``system.posix_acl_access`` value (little-endian: u32 version 2,
    then entries of u16 tag, u16 perm, u32 id). Raises ValueError on a malformed value."""
    if len(data) < 4 or (len(data) - 4) % 8:
        raise ValueError(f"POSIX ACL xattr of {len(data)} bytes is not a header plus 8-byte entries")
    (version,) = struct.unpack_from("<I", data)
    if version != ACL_XATTR_VERSION:
        raise ValueError(f"POSIX ACL xattr version {version} is not {ACL_XATTR_VERSION}")
    seen: dict[int, int] = {}
    users: list[tuple[int, int]] = []
    groups: list[tuple[int, int]] = []
    for tag, perm, ident in struct.iter_unpack("<HHI", data[4:]):
        if tag not in _TAGS:
            raise ValueError(f"POSIX ACL entry with unknown tag 0x{tag:x}")
        perm &= 7
        if tag == ACL_USER:
            users.append((ident, perm))
        elif tag == ACL_GROUP:
            groups.append((ident, perm))
        elif tag in seen:
            raise ValueError(f"POSIX ACL has two {_TAGS[tag]} entries")
        else:
            seen[tag] = perm
    missing = [_TAGS[t] for t in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER) if t not in seen]
    if missing:
        raise ValueError(f"POSIX ACL lacks its {', '.join(missing)} entr{'y' if len(missing) == 1 else 'ies'}")
    if (users or groups) and ACL_MASK not in seen:
        raise ValueError("POSIX ACL has named entries but no mask entry")
    mask = seen.get(ACL_MASK)
    if mask == 0:
        # Linux consults the ACL only when the group class bits (= the mask) are not all
        # clear (fs/namei.c, acl_permission_check); otherwise the mode bits decide, so named
        # entries fall through to other and the owning group gets the (empty) group bits.
        return Entries(st.st_uid, st.st_gid, seen[ACL_USER_OBJ], 0, seen[ACL_OTHER])
    return Entries(st.st_uid, st.st_gid, seen[ACL_USER_OBJ], seen[ACL_GROUP_OBJ], seen[ACL_OTHER],
                   mask, tuple(users), tuple(groups))


def read_entries(path: str | os.PathLike, st: os.stat_result | None = None) -> Entries:
    """The access ACL of ``path`` (its mode bits when it has no extended entries)."""
    st = st if st is not None else os.stat(path, follow_symlinks=False)
    try:
        data = os.getxattr(path, XATTR_ACCESS, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return Entries.from_mode(st)
        raise
    return parse_acl_xattr(data, st)


def fd_path(fd: int) -> str:
    """A name for the inode behind ``fd`` (also an ``O_PATH`` one) that the kernel resolves
    to that very inode, whatever happens to the file's names meanwhile."""
    return f"/proc/self/fd/{fd}"


def read_entries_fd(fd: int, st: os.stat_result | None = None) -> Entries:
    """The access ACL of the inode behind ``fd`` (an ``O_PATH`` descriptor will do)."""
    st = st if st is not None else os.fstat(fd)
    try:
        data = os.getxattr(fd_path(fd), XATTR_ACCESS)
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return Entries.from_mode(st)
        raise
    return parse_acl_xattr(data, st)


def _component(e: Entries, bit: int) -> tuple[set[str] | None, set[str]]:
    """Who has ``bit`` on this inode, as (allow or everyone, deny) -- see the module doc."""
    masked = (lambda p: bool(p & bit)) if e.mask is None else (lambda p: bool(p & e.mask & bit))
    owner_yes = bool(e.user_obj & bit)
    named: dict[int, bool] = {}
    for uid, perm in e.users:
        if uid != e.uid:  # the owner entry comes first
            named[uid] = named.get(uid, False) or masked(perm)
    grants: dict[int, bool] = {e.gid: masked(e.group_obj)}
    for gid, perm in e.groups:
        grants[gid] = grants.get(gid, False) or masked(perm)
    yes_users = ({e.uid} if owner_yes else set()) | {u for u, v in named.items() if v}
    no_users = ({e.uid} if not owner_yes else set()) | {u for u, v in named.items() if not v}
    yes_groups = {g for g, v in grants.items() if v}
    deny = {user_token(u) for u in no_users}
    if not e.other & bit:
        return {user_token(u) for u in yes_users} | {group_token(g) for g in yes_groups}, deny
    may_read = set(yes_users)
    for g in yes_groups:
        may_read |= _group_members(g)
    for g in set(grants) - yes_groups:
        members = _group_members(g)
        if members & may_read:
            # "this group, except some of its members" is not expressible with a group
            # token and deny-wins: deny the members that the group entry blocks, one by one.
            deny.update(user_token(m) for m in members - may_read - no_users)
        else:
            deny.add(group_token(g))
    return _UNIVERSE, deny


def _meet(a: str, b: str) -> set[str]:
    if a == b:
        return {a}
    ka, kb = a.split(":")[0], b.split(":")[0]
    if ka == "user" and kb == "user":
        return set()
    if ka == "group" and kb == "user":
        a, b = b, a
        ka, kb = kb, ka
    if ka == "user" and kb == "group":
        uid, gid = int(a.rsplit(":", 1)[1]), int(b.rsplit(":", 1)[1])
        return {a} if uid in _group_members(gid) else set()
    # two different groups: the users in both
    ga, gb = int(a.rsplit(":", 1)[1]), int(b.rsplit(":", 1)[1])
    return {user_token(u) for u in _group_members(ga) & _group_members(gb)}


def _intersect(a: set[str] | None, b: set[str] | None) -> set[str] | None:
    if a is _UNIVERSE:
        return None if b is _UNIVERSE else set(b)
    if b is _UNIVERSE:
        return set(a)
    out: set[str] = set()
    for x in a:
        for y in b:
            out |= _meet(x, y)
    return out


def acl_for_path(path: str | os.PathLike, *, stat_cache: dict[str, Entries] | None = None,
                 file_stat: os.stat_result | None = None) -> ACL:
    """The ACL that says who may open ``path`` for reading (see module doc), by name.
    The directories are those of the resolved real path (a symlinked directory above
    the file does not stand in for the directory it points to); ``path`` itself is not
    followed. ``stat_cache`` (any dict, reused across calls) remembers the directories'
    ACLs. The indexer takes a file's ACL from its descriptor instead (:func:`acl_for_fd`)."""
    p = Path(os.path.abspath(path))
    p = Path(os.path.realpath(p.parent)) / p.name
    cache = stat_cache if stat_cache is not None else {}
    where = p
    try:
        file_entries = read_entries(p, file_stat)
        dirs = []
        for d in p.parents:
            where = d
            key = str(d)
            entries = cache.get(key)
            if entries is None:
                entries = cache[key] = read_entries(d)
            dirs.append(entries)
    except OSError as e:
        return ACL.unknown(f"cannot read permissions of {where}: {e.strerror}")
    except ValueError as e:
        return ACL.unknown(f"{where}: {e}")
    return acl_from_entries(file_entries, dirs)


def acl_from_entries(file_entries: Entries, dirs: "list[Entries]") -> ACL:
    """The ACL of a file from its own entries (read) and those of every directory above it
    up to ``/`` (search), in any order."""
    try:
        allow, deny = _component(file_entries, READ)
        for entries in dirs:
            a2, d2 = _component(entries, EXECUTE)
            allow = _intersect(allow, a2)
            deny |= d2
    except ValueError as e:
        return ACL.unknown(str(e))
    if allow is _UNIVERSE:
        allow = {EVERYONE}
    return ACL(frozenset(allow), frozenset(deny))

"""POSIX owner/group/mode bits -> normalised ACL, the kernel's rules included.

To open ``/a/b/f`` a user needs search (x) on ``/``, ``/a``, ``/a/b`` and read (r) on
``f``. For each of these the kernel picks exactly one class: owner if the uid
matches, else group if the user is in the group, else other; there is no
fall-through. Each component gives an (allow, deny) pair:

* other has the bit -> allow everyone; deny the owner (if owner lacks it) and the
  group (if group lacks it);
* other lacks it -> allow the owner (if owner has it) and the group (if group has
  it); if the group has it but the owner does not, deny the owner.

The components are combined with AND: denies are united, allows intersected. An
intersection of a user and a group (or of two groups) needs membership, which is
looked up in the OS group database at index time (``/etc/group``, primary gids).

One case needs care: a mode like 0604 whose owner is also in the file's group
("everyone but the group, yet the owner") is not expressible with a group deny
(deny wins, and would hit the owner), so the group's other members are denied by
user token instead, from the OS database at index time. The superuser's bypass
(CAP_DAC_OVERRIDE) is not modelled.

Files carrying POSIX.1e ACL entries (``system.posix_acl_access``) are not
translated yet: their ACL is *unknown* (visible to no one, flagged).
"""
from __future__ import annotations

import grp
import os
import pwd
import stat as stat_mod
from functools import lru_cache
from pathlib import Path

from .model import ACL, EVERYONE, group_token, user_token

_UNIVERSE = None  # an allow set that matches everyone


@lru_cache(maxsize=4096)
def _group_members(gid: int) -> frozenset[int]:
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
    """Forget OS group memberships (tests that add users call this)."""
    _group_members.cache_clear()


def _component(st: os.stat_result, bits: tuple[int, int, int]) -> tuple[set[str] | None, set[str]]:
    ubit, gbit, obit = bits
    mode = st.st_mode
    O, G, X = bool(mode & ubit), bool(mode & gbit), bool(mode & obit)
    u, g = user_token(st.st_uid), group_token(st.st_gid)
    deny: set[str] = set()
    if X:
        if not O:
            deny.add(u)
        if not G:
            members = _group_members(st.st_gid)
            if O and st.st_uid in members:
                # "group minus its owner" is not expressible with a group token and
                # deny-wins: deny the other members one by one (from the OS database).
                deny.update(user_token(m) for m in members if m != st.st_uid)
            else:
                deny.add(g)
        return _UNIVERSE, deny
    allow: set[str] = set()
    if O:
        allow.add(u)
    if G:
        allow.add(g)
        if not O:
            deny.add(u)
    return allow, deny


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


_R = (stat_mod.S_IRUSR, stat_mod.S_IRGRP, stat_mod.S_IROTH)
_X = (stat_mod.S_IXUSR, stat_mod.S_IXGRP, stat_mod.S_IXOTH)


def _has_extended_acl(path: Path) -> bool:
    try:
        return "system.posix_acl_access" in os.listxattr(path, follow_symlinks=False)
    except OSError:
        return False


def acl_for_path(path: str | os.PathLike, *, stat_cache: dict[str, os.stat_result] | None = None,
                 file_stat: os.stat_result | None = None) -> ACL:
    """The ACL that says who may open ``path`` for reading (see module doc)."""
    p = Path(os.path.abspath(path))
    cache = stat_cache if stat_cache is not None else {}
    try:
        st = file_stat if file_stat is not None else os.stat(p, follow_symlinks=False)
        if _has_extended_acl(p):
            return ACL.unknown("POSIX.1e ACL entries are not translated yet")
        allow, deny = _component(st, _R)
        for d in p.parents:
            key = str(d)
            dst = cache.get(key)
            if dst is None:
                dst = os.stat(d)
                cache[key] = dst
            if _has_extended_acl(d):
                return ACL.unknown(f"POSIX.1e ACL entries on {d} are not translated yet")
            a2, d2 = _component(dst, _X)
            allow = _intersect(allow, a2)
            deny |= d2
    except OSError as e:
        return ACL.unknown(f"cannot read permissions: {e.strerror}")
    if allow is _UNIVERSE:
        allow = {EVERYONE}
    return ACL(frozenset(allow), frozenset(deny))

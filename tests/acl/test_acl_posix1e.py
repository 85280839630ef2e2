"""POSIX.1e ACLs (setfacl) -> ACL tokens, checked against the kernel for real OS users.

Users (conftest ``os_users``): alice and bob in ingt_team, carol in ingt_other; this
module adds dave (primary ingt_team, also in ingt_other), the member of two groups
that the "group entry blocks other" rules must not over-deny.
"""
import grp
import itertools
import os
import pwd
import struct
import subprocess
import sys

import pytest
from tests.support.ci import in_ci

from acl.directory import resolve
from acl.posix import Entries, acl_for_path, clear_caches, parse_acl_xattr, read_entries

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/bin/setfacl") and not in_ci(),
                                reason="setfacl (Debian package acl) is not installed")

DAVE = "ingt_dave"


@pytest.fixture(scope="module")
def users(os_users):
    try:
        pwd.getpwnam(DAVE)
        created = False
    except KeyError:
        subprocess.run(["useradd", "-M", "-N", "-g", "ingt_team", "-G", "ingt_other", "-s", "/usr/sbin/nologin",
                        DAVE], check=True)
        created = True
    clear_caches()
    yield [*os_users, DAVE]
    if created:
        subprocess.run(["userdel", DAVE], check=False)
    clear_caches()


def setfacl(path, *args):
    subprocess.run(["setfacl", *args, str(path)], check=True, capture_output=True)


def kernel_reads(user: str, paths: list[str]) -> list[bool]:
    """One child process per user: which of ``paths`` can it open for reading?"""
    pw = pwd.getpwnam(user)
    code = ("import os,sys\n"
            f"os.setgroups(os.getgrouplist({pw.pw_name!r}, {pw.pw_gid}))\n"
            f"os.setgid({pw.pw_gid}); os.setuid({pw.pw_uid})\n"
            "for p in sys.stdin.read().split('\\0'):\n"
            " try:\n  open(p,'rb').close(); print('yes')\n"
            " except PermissionError: print('no')\n")
    out = subprocess.run([sys.executable, "-c", code], input="\0".join(paths), capture_output=True, text=True,
                         check=True)
    return [line == "yes" for line in out.stdout.split()]


def assert_agrees_with_kernel(users, files: dict[str, object]) -> int:
    """For every file and user, the ACL decision must equal open(); returns the cases checked."""
    paths = list(files)
    acls = [acl_for_path(p) for p in paths]
    assert all(a.known for a in acls), [a.reason for a in acls if not a.known]
    n = 0
    for u in users:
        tokens = resolve(u)
        for p, acl, kernel in zip(paths, acls, kernel_reads(u, paths)):
            assert acl.permits(tokens) == kernel, (u, files[p], sorted(acl.allow), sorted(acl.deny))
            n += 1
    return n


def test_parse_binary_xattr_and_malformed_values():
    st = os.stat("/")
    ent = lambda tag, perm, ident=0xFFFFFFFF: struct.pack("<HHI", tag, perm, ident)  # noqa: E731
    data = struct.pack("<I", 2) + ent(1, 6) + ent(2, 4, 1234) + ent(4, 4) + ent(8, 0, 99) + ent(0x10, 4) + ent(0x20, 0)
    e = parse_acl_xattr(data, st)
    assert e == Entries(st.st_uid, st.st_gid, 6, 4, 0, 4, ((1234, 4),), ((99, 0),))
    with pytest.raises(ValueError, match="version 1"):
        parse_acl_xattr(struct.pack("<I", 1) + data[4:], st)
    with pytest.raises(ValueError, match="8-byte entries"):
        parse_acl_xattr(data[:-3], st)
    with pytest.raises(ValueError, match="no mask"):
        parse_acl_xattr(data[:-16] + ent(0x20, 0), st)
    with pytest.raises(ValueError, match="unknown tag 0x40"):
        parse_acl_xattr(data + ent(0x40, 0), st)
    with pytest.raises(ValueError, match="lacks its other"):
        parse_acl_xattr(data[:-8], st)


def _file_with_acl(world_dir, mode: int, entries: str):
    """``world_dir/f.txt`` with mode ``mode`` and the POSIX.1e ACL ``entries`` (``setfacl -m``)."""
    f = world_dir / "f.txt"
    f.write_text("x")
    os.chmod(f, mode)
    setfacl(f, "-m", entries)
    return f


def test_named_user(world_dir, users):
    f = _file_with_acl(world_dir, 0o600, "u:ingt_bob:r")
    acl = acl_for_path(f)
    assert acl.permits(resolve("ingt_bob")) and not acl.permits(resolve("ingt_alice"))
    assert_agrees_with_kernel(users, {str(f): "u:bob:r"})


def test_named_group_with_mask(world_dir, users):
    f = _file_with_acl(world_dir, 0o600, "g:ingt_other:r,m::-")  # the mask takes the group's read away
    assert not acl_for_path(f).permits(resolve("ingt_carol"))
    assert_agrees_with_kernel(users, {str(f): "g:other:r, mask none"})
    setfacl(f, "-m", "m::r")
    assert acl_for_path(f).permits(resolve("ingt_carol"))
    assert_agrees_with_kernel(users, {str(f): "g:other:r, mask r"})


def test_group_entry_blocks_other(world_dir, users):
    """Other may read, but a matching group entry that grants nothing denies -- no fall-through."""
    f = _file_with_acl(world_dir, 0o644, "g:ingt_other:-")
    acl = acl_for_path(f)
    assert acl.permits(resolve("everyone")) and acl.permits(resolve("ingt_alice"))
    assert not acl.permits(resolve("ingt_carol"))
    assert f"group:posix:{grp.getgrnam('ingt_other').gr_gid}" in acl.deny  # a group deny, not per-user
    # the file is root:root, so dave (ingt_team + ingt_other) is blocked too; overlaps: see the matrix
    assert_agrees_with_kernel(users, {str(f): "o:r, g:other:-"})


def test_default_acl_is_inherited_by_new_files(world_dir, users):
    d = world_dir / "shared"
    d.mkdir()
    os.chmod(d, 0o755)
    setfacl(d, "-d", "-m", "u::rw,g::-,o::r,u:ingt_carol:r,g:ingt_team:-,m::r")
    f = d / "new.txt"
    f.write_text("created after the default ACL")  # the kernel copies the default ACL into the new file
    e = read_entries(f)
    assert (pwd.getpwnam("ingt_carol").pw_uid, 4) in e.users and e.mask == 4
    acl = acl_for_path(f)
    assert acl.permits(resolve("ingt_carol")) and not acl.permits(resolve("ingt_alice"))
    sub = d / "sub"
    sub.mkdir()  # a new directory inherits the default ACL as its default and access ACL
    (sub / "deep.txt").write_text("x")
    assert_agrees_with_kernel(users, {str(f): "inherited", str(sub / "deep.txt"): "inherited twice"})


# (mode, setfacl -m spec, owner, group) -- owner/group None: root / ingt_team
FILE_SPECS = [
    (0o600, "u:ingt_bob:r", None, None),
    (0o640, "u:ingt_bob:-", None, None),            # a named user blocks a reading group member
    (0o600, "g:ingt_other:r", None, None),
    (0o600, "g:ingt_other:r,m::-", None, None),
    (0o600, "u:ingt_bob:r,m::-", None, None),
    (0o604, "u:ingt_bob:r,g:ingt_other:r,m::-", None, None),  # empty mask: named entries fall to other
    (0o604, "", None, None),                         # mode only: the owning group blocks other
    (0o604, "g:ingt_other:r", None, None),           # dave: blocked by team, granted by other
    (0o644, "g:ingt_other:-", None, None),
    (0o604, "u:ingt_alice:r", None, None),           # a named user inside a blocking group
    (0o004, "", "ingt_alice", None),                 # owner blocked, everyone else reads
    (0o074, "", "ingt_carol", None),
    (0o604, "", "ingt_alice", None),                 # owner reads, the rest of its group does not
    (0o644, "g:ingt_team:-,m::r", None, "root"),     # named group entry that blocks
    (0o640, "g:ingt_team:-,g:ingt_other:r", None, "root"),
    (0o000, "u:ingt_dave:r,g:ingt_other:-,o::r", None, None),
]
# directories above the file: (mode, setfacl -m spec)
DIR_SPECS = [
    (0o755, ""),
    (0o700, "u:ingt_alice:x"),
    (0o701, "g:ingt_team:-"),
    (0o710, "g:ingt_other:x,m::x"),
    (0o711, "u:ingt_carol:-"),
]


def test_matrix_agrees_with_kernel(world_dir, users):
    """Every (directory ACL, file ACL) pair and every user: the decision equals open()."""
    files = {}
    for i, ((dmode, dspec), (fmode, fspec, owner, group)) in enumerate(itertools.product(DIR_SPECS, FILE_SPECS)):
        d = world_dir / f"d{i}"
        d.mkdir()
        os.chmod(d, dmode)
        if dspec:
            setfacl(d, "-m", dspec)
        f = d / "f.txt"
        f.write_text("x")
        os.chown(f, pwd.getpwnam(owner).pw_uid if owner else 0, grp.getgrnam(group or "ingt_team").gr_gid)
        os.chmod(f, fmode)
        if fspec:
            setfacl(f, "-m", fspec)
        files[str(f)] = (oct(dmode), dspec, oct(fmode), fspec, owner, group)
    n = assert_agrees_with_kernel(users, files)
    assert n == len(DIR_SPECS) * len(FILE_SPECS) * 4

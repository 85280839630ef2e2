"""POSIX mode bits -> ACL tokens, checked against the kernel for real OS users."""
import itertools
import os

import pytest

from acl.directory import resolve
from acl.model import ACL, EVERYONE, Principal
from acl.posix import acl_for_path
from tests.support.common import kernel_can_read


def test_acl_version_distinguishes_unknown_from_empty():
    assert ACL.unknown("x").version != ACL().version
    assert ACL(frozenset({"a", "b"})).version == ACL(frozenset({"b", "a"})).version


def test_deny_wins():
    acl = ACL(frozenset({EVERYONE}), frozenset({"group:posix:7"}))
    assert acl.permits(frozenset({EVERYONE}))
    assert not acl.permits(frozenset({EVERYONE, "group:posix:7"}))


def test_explicit_principal_tokens():
    assert Principal("1001", groups=("50",)).tokens() == {EVERYONE, "user:posix:1001", "group:posix:50"}
    assert resolve("everyone") == {EVERYONE}


def test_unknown_user_is_a_clear_error():
    with pytest.raises(LookupError, match="unknown user"):
        resolve("no_such_user_xyz")


def test_unreadable_permissions_fail_closed(world_dir):
    acl = acl_for_path(world_dir / "missing.txt")
    assert not acl.known and acl.allow == frozenset()
    assert not acl.permits(frozenset({EVERYONE}))


def test_private_directory_hides_world_readable_file(world_dir, os_users):
    d = world_dir / "private"
    d.mkdir()
    f = d / "f.txt"
    f.write_text("x")
    alice = os_users["ingt_alice"]
    os.chown(d, alice.pw_uid, alice.pw_gid)
    os.chmod(d, 0o700)
    os.chmod(f, 0o644)
    acl = acl_for_path(f)
    assert not acl.permits(resolve("everyone"))
    assert acl.permits(resolve("ingt_alice"))
    assert not acl.permits(resolve("ingt_bob"))


FILE_MODES = [0o600, 0o640, 0o644, 0o604, 0o060, 0o400, 0o004]
DIR_MODES = [0o755, 0o750, 0o711, 0o700, 0o705]


def test_search_agrees_with_kernel_for_every_mode(world_dir, os_users):
    """For each (dir mode, file mode, owner, group) and user, the ACL decision equals open()."""
    users = list(os_users)
    alice, carol = os_users["ingt_alice"], os_users["ingt_carol"]
    n = 0
    for i, (dmode, fmode, owner) in enumerate(itertools.product(DIR_MODES, FILE_MODES, (alice, carol))):
        d = world_dir / f"d{i}"
        d.mkdir()
        f = d / "f.txt"
        f.write_text("x")
        os.chown(d, owner.pw_uid, alice.pw_gid)  # group: ingt_team (alice, bob)
        os.chown(f, owner.pw_uid, owner.pw_gid)
        os.chmod(d, dmode)
        os.chmod(f, fmode)
        acl = acl_for_path(f)
        for u in users:
            assert acl.permits(resolve(u)) == kernel_can_read(u, str(f)), (oct(dmode), oct(fmode), owner.pw_name, u)
            n += 1
    assert n > 150

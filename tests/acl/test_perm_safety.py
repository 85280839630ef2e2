"""Permissions that hold against a local attacker (issue 13, defects 1-8 and 12).

The indexer runs as root; the attackers are real OS users (prefix ``h13a``), the links,
FIFOs and directories are real, and the kernel is the oracle: every "may X read it"
below is asked of ``open()`` in a child process running as X. Races are driven
deterministically by a hook on a function the pipeline calls between its looks at
the file (the swap happens there), never by mocking what is checked.
"""
from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from acl.directory import Directory
from tests.support.common import kernel_can_read
from ingest.search.access import explain
from ingest.pipeline.document import Pipeline
from ingest.search.index import Index
from ingest.sources.base import DELETE, UPSERT, ChangeEvent
from ingest.sources.reconcile import reconcile
from tests.support.attackers import USERS, ensure_users  # noqa: F401

@pytest.fixture(scope="module")
def users():
    if os.geteuid() != 0:
        from tests.support.ci import missing

        missing("permission tests need root to create OS test users")
    return ensure_users()


@pytest.fixture
def tree():
    d = Path(tempfile.mkdtemp(prefix="h13a-", dir="/tmp"))
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def pipe(tree, embedder):
    from ingest.stores.sqlite import SQLiteStore

    store = SQLiteStore(tree / "index.db")
    yield Pipeline(store, embedder, sandbox=False)
    store.close()


def _own(path, user, mode):
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid, follow_symlinks=False)
    if not os.path.islink(path):
        os.chmod(path, mode)


def _rescan(pipe, root):
    outs = []
    for ev in reconcile(pipe.store, str(root)):
        outs.extend(pipe.handle(ev))
    return outs


def _texts(pipe, query, user, mode="hybrid"):
    return [h.text for h in Index(pipe.store, Directory()).search(query, principal=user, k=20, mode=mode, audit=False)]


def _world(tree, users):
    """bob's folder (world readable) inside the watched root; alice's 0600 secret outside it."""
    root = tree / "root"
    root.mkdir()
    bobdir = root / "bob"
    bobdir.mkdir()
    _own(bobdir, "h13a_bob", 0o755)
    home = tree / "alice"
    home.mkdir()
    _own(home, "h13a_alice", 0o755)
    secret = home / "diary.txt"
    secret.write_text("zanzibar moonlight confession of alice\n")
    _own(secret, "h13a_alice", 0o600)
    return root, bobdir, secret


# -- 1. symlink swap between the looks at a file ------------------------------------------
def test_symlink_swapped_in_between_checks_never_indexes_the_target(tree, users, pipe, monkeypatch):
    root, bobdir, secret = _world(tree, users)
    y = bobdir / "y.txt"
    y.write_text("ordinary bob text about gardening\n")
    _own(y, "h13a_bob", 0o644)
    import acl.posix as posix

    real = posix._component
    swapped = []

    def swap_then(*a, **kw):  # the attacker's rename lands between the pipeline's looks at y.txt
        if not swapped:
            link = bobdir / ".y.tmp"
            os.symlink(secret, link)
            os.rename(link, y)
            swapped.append(True)
        return real(*a, **kw)

    monkeypatch.setattr(posix, "_component", swap_then)
    pipe.handle(ChangeEvent(UPSERT, str(root), "bob/y.txt"))
    monkeypatch.setattr(posix, "_component", real)
    assert swapped
    assert not kernel_can_read("h13a_bob", str(y))  # the kernel: bob cannot read what y.txt names now
    for mode in ("bm25", "vector", "hybrid"):  # the diary's text is nowhere in the index, for anyone
        for user in USERS:
            assert not any("zanzibar" in t for t in _texts(pipe, "zanzibar moonlight confession", user, mode)), mode
    # the next event for y.txt (the rename) finds a symlink: the document goes
    outs = pipe.handle(ChangeEvent(UPSERT, str(root), "bob/y.txt"))
    assert outs[0].action in ("deleted", "ignored")
    assert pipe.store.get_doc(f"folder:{root}", "bob/y.txt") is None


# -- 2. label sidecars are not followed, and never quoted -----------------------------------
def test_sidecar_symlink_is_not_followed_nor_quoted(tree, users, pipe):
    root, bobdir, secret = _world(tree, users)
    note = bobdir / "note.txt"
    note.write_text("bob's note about the quarterly picnic\n")
    _own(note, "h13a_bob", 0o644)
    shadow = tree / "alice" / "shadow"
    shadow.write_text("h13a_alice:$6$saltsalt$hashhashhash:19000:0:99999:7:::\n")
    _own(shadow, "h13a_alice", 0o600)
    (bobdir / "note.txt.labels").symlink_to(shadow)
    out = pipe.handle(ChangeEvent(UPSERT, str(root), "bob/note.txt"))[0]
    assert out.action == "error" and "bad-labels" in out.detail
    assert "$6$" not in out.detail and "saltsalt" not in out.detail
    row = pipe.store.get_doc(f"folder:{root}", "bob/note.txt")
    assert "saltsalt" not in (row["error"] or "") and "symbolic link" in row["error"]
    # a sidecar linking a readable-only-by-alice diary: its lines never become labels
    os.unlink(bobdir / "note.txt.labels")
    (bobdir / "note.txt.labels").symlink_to(secret)
    pipe.handle(ChangeEvent(UPSERT, str(root), "bob/note.txt"))
    row = pipe.store.get_doc(f"folder:{root}", "bob/note.txt")
    assert "zanzibar" not in (row["source_labels"] or "") and "zanzibar" not in (row["error"] or "")
    # a regular sidecar still works
    os.unlink(bobdir / "note.txt.labels")
    (bobdir / "note.txt.labels").write_text("team:picnic\n")
    out = pipe.handle(ChangeEvent(UPSERT, str(root), "bob/note.txt"))[0]
    assert out.action == "indexed"
    hits = Index(pipe.store, Directory()).search("quarterly picnic", principal="h13a_bob", k=5, audit=False)
    assert hits and hits[0].labels[:1] == ["team:picnic"]


# -- 3. a symlinked root does not bypass the permissions of the directory it points into -----
def test_symlinked_root_uses_the_real_directories(tree, users, pipe):
    real = tree / "real"
    (real / "pub").mkdir(parents=True)
    f = real / "pub" / "f.txt"
    f.write_text("hidden orchard inventory\n")
    os.chmod(real / "pub", 0o755)
    os.chmod(f, 0o644)
    _own(real, "h13a_alice", 0o700)
    (tree / "link").symlink_to(real)
    root = tree / "link" / "pub"
    _rescan(pipe, root)
    assert not kernel_can_read("h13a_bob", str(f)) and kernel_can_read("h13a_alice", str(f))
    for mode in ("bm25", "vector", "hybrid"):
        assert _texts(pipe, "hidden orchard inventory", "h13a_bob", mode) == [], mode
    assert _texts(pipe, "hidden orchard inventory", "h13a_alice")
    from ingest.sources.safefs import resolve_root

    assert resolve_root(root) == str(real / "pub")


# -- 4. a file replaced by a symlink, FIFO or directory leaves the index -----------------
@pytest.mark.parametrize("replacement", ["symlink", "fifo", "dir"])
def test_file_replaced_by_non_regular_is_removed(tree, users, pipe, embedder, replacement):
    root, bobdir, secret = _world(tree, users)
    for name in ("a.txt", "b.txt"):
        p = bobdir / name
        p.write_text(f"public words about {name[0]}-lighthouse keeping\n")
        _own(p, "h13a_bob", 0o644)
    _rescan(pipe, root)
    src = f"folder:{root}"
    assert pipe.store.get_doc(src, "bob/a.txt") and pipe.store.get_doc(src, "bob/b.txt")

    def replace(p):
        os.unlink(p)
        if replacement == "symlink":
            p.symlink_to(secret)
        elif replacement == "fifo":
            os.mkfifo(p)
        else:
            p.mkdir()

    replace(bobdir / "a.txt")  # seen by an event
    assert pipe.handle(ChangeEvent(UPSERT, str(root), "bob/a.txt"))[0].action == "deleted"
    assert pipe.store.get_doc(src, "bob/a.txt") is None
    replace(bobdir / "b.txt")  # seen by a rescan (the event was lost), in a fresh process
    from ingest.stores.sqlite import SQLiteStore

    store2 = SQLiteStore(pipe.store.path)
    try:
        p2 = Pipeline(store2, embedder, sandbox=False)
        evs = reconcile(store2, str(root))
        assert any(ev.kind == DELETE and ev.key == "bob/b.txt" for ev in evs)
        for ev in evs:
            p2.handle(ev)
        assert store2.get_doc(src, "bob/b.txt") is None
    finally:
        store2.close()
    assert _texts(pipe, "lighthouse keeping", "h13a_bob") == []


# -- 5. group membership changes are followed in a running process -----------------------
def test_group_membership_removal_is_followed_without_restart(tree, users, pipe):
    subprocess.run(["gpasswd", "-a", "h13a_bob", "h13a_x"], check=True, capture_output=True)
    try:
        root = tree / "root"
        d = root / "team"
        d.mkdir(parents=True)
        f = d / "plan.txt"
        f.write_text("intersection plan for the harbour festival\n")
        os.chown(d, 0, grp.getgrnam("h13a_team").gr_gid)
        os.chmod(d, 0o710)  # search: team
        os.chown(f, 0, grp.getgrnam("h13a_x").gr_gid)
        os.chmod(f, 0o640)  # read: x -> the readers are the members of both (bob)
        from ingest.sources.permwatch import PermissionWatch

        watch = PermissionWatch([str(root)])
        _rescan(pipe, root)
        assert kernel_can_read("h13a_bob", str(f))
        assert _texts(pipe, "harbour festival", "h13a_bob")
        subprocess.run(["gpasswd", "-d", "h13a_bob", "h13a_x"], check=True, capture_output=True)
        assert not kernel_can_read("h13a_bob", str(f))
        assert watch.changed() == [str(root)]  # ingest run rescans on this
        _rescan(pipe, root)  # same process: no stale membership cache
        for mode in ("bm25", "vector", "hybrid"):
            assert _texts(pipe, "harbour festival", "h13a_bob", mode) == [], mode
    finally:
        subprocess.run(["gpasswd", "-d", "h13a_bob", "h13a_x"], capture_output=True)


# -- 6. a FIFO sidecar does not hang the worker ------------------------------------------
def test_fifo_sidecar_does_not_hang(tree, users, pipe):
    root, bobdir, _ = _world(tree, users)
    x = bobdir / "x.txt"
    x.write_text("plain text next to a fifo\n")
    os.mkfifo(str(x) + ".labels")
    result = []
    t = threading.Thread(target=lambda: result.append(pipe.handle(ChangeEvent(UPSERT, str(root), "bob/x.txt"))),
                         daemon=True)
    t.start()
    t.join(20)
    if t.is_alive():  # unblock the old code's open() so the test process can end
        fd = os.open(str(x) + ".labels", os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("indexing a file with a FIFO sidecar hung")
    out = result[0][0]
    assert out.action == "error" and "FIFO" in out.detail


# -- 7. names that are not UTF-8; poison messages; a missing passwords file -----------------
def test_name_that_is_not_utf8_is_indexed_and_removed(tree, users, pipe):
    root = tree / "root"
    root.mkdir()
    bad = os.path.join(os.fsencode(root), b"caf\xe9-\xff.txt")
    with open(bad, "wb") as fh:
        fh.write(b"latin one named file about zeppelins\n")
    good = root / "good.txt"
    good.write_text("utf8 named file about zeppelins\n")
    outs = _rescan(pipe, root)
    assert sorted(o.action for o in outs) == ["indexed", "indexed"]
    uris = {h.uri for h in Index(pipe.store, Directory()).search("zeppelins", principal="h13a_bob", k=5, audit=False)}
    assert len(uris) == 2 and any("%E9-%FF" in u for u in uris)
    assert _rescan(pipe, root) == []  # stable: a rescan finds nothing to do
    os.unlink(bad)
    outs = _rescan(pipe, root)
    assert [o.action for o in outs] == ["deleted"]


def test_poison_message_is_dead_lettered_once(tree, users):
    from ingest.stores import open_store

    from workers import tasks

    store_url = str(tree / "index.db")
    res = tasks.change.apply(args=(store_url, "bogus-kind", str(tree), "caf\udce9.txt"))
    assert res.get() == ["dead-letter"]
    letters = open_store(store_url).dead_letters()
    assert len(letters) == 1 and "unknown change kind" in letters[0]["reason"]
    assert "caf\\xe9.txt" in letters[0]["args"]


def test_missing_passwords_file_is_a_per_document_error(tree, users, embedder, monkeypatch):
    from ingest.stores.sqlite import SQLiteStore

    monkeypatch.setenv("INGEST_PASSWORDS_FILE", str(tree / "no-such-passwords.json"))
    root = tree / "root"
    root.mkdir()
    (root / "a.txt").write_text("an ordinary text about kites\n")
    store = SQLiteStore(tree / "index.db")
    try:
        p = Pipeline(store, embedder, sandbox=False)  # no crash at start
        assert "no-such-passwords.json" in p.passwords_error
        assert [o.action for o in _rescan(p, root)] == ["indexed"]
        enc = next(iter(sorted(Path(__file__).resolve().parents[3].glob("shared/corpora/**/*encrypt*.docx"))), None)
        if enc is not None:
            shutil.copy(enc, root / "locked.docx")
            out = p.handle(ChangeEvent(UPSERT, str(root), "locked.docx"))[0]
            assert out.action == "error" and "passwords-file" in out.detail
    finally:
        store.close()


# -- 8. two `ingest add` on one store at once ---------------------------------------------
@pytest.mark.slow
def test_two_concurrent_adds_both_finish(tree):
    dirs = []
    for n in ("one", "two"):
        d = tree / n
        d.mkdir()
        for i in range(20):
            (d / f"{n}-{i}.txt").write_text(f"document {i} of folder {n} about {n}-topic {i}\n")
        dirs.append(d)
    store = tree / "index.db"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [sys.executable, "-m", "ingest.cli.main", "add", "--store", str(store), "--concurrency", "1"]
    procs = [subprocess.Popen([*cmd, str(d)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for d in dirs]
    try:
        rcs = [p.wait(timeout=300) for p in procs]
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        pytest.fail("a concurrent `ingest add` hung")
    assert rcs == [0, 0], [p.stdout.read().decode()[-2000:] for p in procs]
    from tests.support.common import indexed_count

    assert indexed_count(store) == 40


# -- 12. permission changes above the watched root ------------------------------------
def test_permission_change_above_root_is_seen(tree, users, pipe):
    from ingest.sources.permwatch import PermissionWatch

    top = tree / "top"
    root = top / "root"
    root.mkdir(parents=True)
    os.chmod(top, 0o755)
    f = root / "f.txt"
    f.write_text("a note about the northern orchard\n")
    os.chmod(f, 0o644)
    watch = PermissionWatch([str(root)])
    _rescan(pipe, root)
    assert _texts(pipe, "northern orchard", "h13a_carol")
    assert watch.changed() == []
    os.chmod(top, 0o700)  # above the root: no inotify event inside it
    assert not kernel_can_read("h13a_carol", str(f))
    assert watch.changed() == [str(root)]
    _rescan(pipe, root)
    assert _texts(pipe, "northern orchard", "h13a_carol") == []
    out = explain(pipe.store, str(f), "h13a_carol", Directory())
    assert out["decision"] == "deny"

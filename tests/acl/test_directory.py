"""Principal directory backends (OS, YAML/JSON file, synced DMS groups), search through
them, and ``ingest access DOC --as USER``."""
import json
import os
import subprocess
import sys

import pytest

from acl.directory import Directory, FileBackend, OSBackend, SyncBackend
from acl.model import ACL, EVERYONE
from acl.posix import acl_for_path
from ingest.search.access import explain
from ingest.search.index import Index
from ingest.stores.sqlite import SQLiteStore
from tests.support.no_leak import chunk_records, doc_record

YAML = """
users:
  alice: {groups: [eng], tokens: ["user:dms1:a.smith"]}
groups:
  eng: {users: [bob], groups: [platform]}
  platform: [carol]
  staff: {groups: [eng, eng2]}   # with loop and eng2 below: a cycle
  loop: {groups: [staff]}
  eng2: {groups: [loop]}
"""


@pytest.fixture
def sstore(tmp_path):
    s = SQLiteStore(tmp_path / "index.db", model_id="stub")
    yield s
    s.close()


def test_file_backend_nested_groups_yaml_and_json(tmp_path):
    y = tmp_path / "people.yaml"
    y.write_text(YAML)
    d = Directory([FileBackend(y)])
    # carol is in platform; platform is in eng; eng in staff; staff in loop; loop in eng2; eng2 in staff
    assert d.resolve("carol") == {EVERYONE, "user:file:carol", "group:file:platform", "group:file:eng",
                                  "group:file:staff", "group:file:loop", "group:file:eng2"}
    assert "group:file:platform" not in d.resolve("alice")
    assert "user:dms1:a.smith" in d.resolve("alice") and "group:file:staff" in d.resolve("alice")
    j = tmp_path / "people.json"
    j.write_text(json.dumps({"groups": {"a": ["zed"], "b": {"groups": ["a"]}}}))
    assert Directory([FileBackend(j, source="hr")]).resolve("zed") == {EVERYONE, "user:hr:zed", "group:hr:a",
                                                                       "group:hr:b"}
    with pytest.raises(LookupError, match="unknown user 'nobody'.*file"):
        Directory([FileBackend(j)]).resolve("nobody")


def test_file_backend_rereads_a_changed_file_and_rejects_bad_ones(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"users": {"zed": ["a"]}}))
    fb = FileBackend(j)
    assert "group:file:a" in fb.tokens("zed")
    j.write_text(json.dumps({"users": {"zed": ["bb"]}}))
    os.utime(j, ns=(1, 1))  # a different mtime even on a coarse clock
    assert fb.tokens("zed") == {EVERYONE, "user:file:zed", "group:file:bb"}
    j.write_text("{not json")
    with pytest.raises(ValueError, match="p.json: not valid json"):
        FileBackend(j)
    j.write_text(json.dumps({"people": {}}))
    with pytest.raises(ValueError, match="expected a mapping with 'users'"):
        FileBackend(j)
    j.write_text(json.dumps({"groups": {"a": {"users": "zed"}}}))
    with pytest.raises(ValueError, match="group 'a' users must be a list"):
        FileBackend(j)
    with pytest.raises(ValueError, match="No such file"):
        FileBackend(tmp_path / "missing.yaml")


def test_group_sync_nested_and_replaced(sstore):
    d = Directory([SyncBackend(sstore)])
    n = d.sync_groups("dms1", {"eng": ["alice", "group:platform"], "platform": ["carol"],
                               "all": ["group:eng"], "cyc": ["group:all"], "all2": ["group:cyc"]})
    assert n == 6
    assert d.resolve("carol") == {EVERYONE, "user:dms1:carol", "group:dms1:platform", "group:dms1:eng",
                                  "group:dms1:all", "group:dms1:cyc", "group:dms1:all2"}
    d.sync_groups("dms2", {"x": ["carol"]})
    assert "group:dms2:x" in d.resolve("carol") and "user:dms2:carol" in d.resolve("carol")
    d.sync_groups("dms1", {"eng": ["alice"]})  # a new sync replaces the source's groups
    assert d.resolve("carol") == {EVERYONE, "user:dms2:carol", "group:dms2:x"}
    assert d.resolve("alice") == {EVERYONE, "user:dms1:alice", "group:dms1:eng"}
    with pytest.raises(ValueError, match="source must be a non-empty name without ':'"):
        d.sync_groups("a:b", {})
    with pytest.raises(ValueError, match="members of 'g' must be a list"):
        d.sync_groups("dms1", {"g": "alice"})
    with pytest.raises(ValueError, match="names no group"):
        d.sync_groups("dms1", {"g": ["group:"]})
    with pytest.raises(ValueError, match="no 'sync' backend"):
        Directory([OSBackend()]).sync_groups("dms1", {})
    assert SQLiteStore(sstore.path).groups_of("alice") == [("dms1", "eng")]  # persisted in the store


def test_directory_from_config(tmp_path, sstore):
    y = tmp_path / "p.yaml"
    y.write_text(YAML)
    d = Directory.from_config({"backends": ["file", "sync", "os"], "file": str(y), "file_source": "corp"}, sstore)
    d.sync_groups("dms1", {"g": ["alice"]})
    assert d.explain("alice")["group:corp:eng"] == ["file"]
    import pwd

    try:  # test_readme.py creates an OS user alice for the README's `--as alice` example
        pwd.getpwnam("alice")
        os_too = ["os"]
    except KeyError:
        os_too = []
    assert d.explain("alice")[EVERYONE] == ["file", "sync", *os_too]
    assert [b.name for b in Directory.from_config({}, sstore).backends] == ["os", "sync"]
    assert [b.name for b in Directory.from_config(None).backends] == ["os"]
    with pytest.raises(ValueError, match="unknown backend 'ldap'"):
        Directory.from_config({"backends": ["ldap"]})
    with pytest.raises(ValueError, match="needs file"):
        Directory.from_config({"backends": ["file"]})
    with pytest.raises(ValueError, match="must be a list"):
        Directory.from_config({"backends": "os"})


def test_search_resolves_principals_through_the_directory(sstore, tmp_path):
    d = Directory([SyncBackend(sstore)])
    d.sync_groups("dms1", {"eng": ["group:platform"], "platform": ["carol"]})
    sstore.apply(doc_record("e", ACL(frozenset({"group:dms1:eng"}))), chunk_records("e", ["roadmap eng"]))
    sstore.apply(doc_record("x", ACL(frozenset({EVERYONE}), frozenset({"group:dms1:platform"}))),
                 chunk_records("x", ["roadmap public"]))
    index = Index(sstore, d)
    assert [h.doc_id for h in index.search("roadmap", principal="carol", mode="bm25")] == ["e"]
    d.sync_groups("dms1", {"eng": ["dave"], "platform": ["carol"]})  # membership change: no re-indexing
    assert [h.doc_id for h in index.search("roadmap", principal="carol", mode="bm25")] == []
    assert [h.doc_id for h in index.search("roadmap", principal="everyone", mode="bm25")] == ["x"]


def _access(store_path, *args):
    return subprocess.run([sys.executable, "-m", "ingest.cli.main", "access", *args, "--store", str(store_path)],
                          capture_output=True, text=True, timeout=120)


def test_ingest_access_explains_posix_acl_decisions(world_dir, os_users):
    f = world_dir / "plan.txt"
    f.write_text("x")
    os.chmod(f, 0o644)
    subprocess.run(["setfacl", "-m", "g:ingt_other:-", str(f)], check=True)
    store_path = world_dir / "index.db"
    store = SQLiteStore(store_path)
    acl = acl_for_path(f)
    store.apply(doc_record("doc1", acl, uri=f.as_uri()), chunk_records("doc1", ["plan"]))
    carol_gid = os_users["ingt_carol"].pw_gid

    r = _access(store_path, str(f), "--as", "ingt_carol", "--json")
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "deny" and out["denied_by"] == [f"group:posix:{carol_gid}"]
    assert out["allowed_by"] == [EVERYONE] and out["names"][f"group:posix:{carol_gid}"] == "ingt_other"
    assert "stale" not in out

    r = _access(store_path, "doc1", "--as", "ingt_alice")  # by doc id, readable text
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ALLOW  ingt_alice -> " + f.as_uri()) and "allowed by everyone" in r.stdout

    r = _access(store_path, f.as_uri(), "--as", "ingt_carol")  # by URI; the deny names the group
    assert r.returncode == 1 and f"denied by group:posix:{carol_gid} (ingt_other)" in r.stdout

    os.chmod(f, 0o600)  # changed on disk, not yet re-indexed: the explanation says so
    out = json.loads(_access(store_path, str(f), "--as", "ingt_alice", "--json").stdout)
    assert out["decision"] == "allow" and out["stale"]["current_decision"] == "deny"

    r = _access(store_path, str(world_dir / "nope.txt"), "--as", "ingt_alice")
    assert r.returncode == 2 and "no document" in r.stderr and "nope.txt" in r.stderr
    r = _access(store_path, "doc1", "--as", "no_such_user_xyz")
    assert r.returncode == 2 and "unknown user 'no_such_user_xyz'" in r.stderr


def test_access_with_file_directory_from_config(sstore, tmp_path):
    y = tmp_path / "p.yaml"
    y.write_text(YAML)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[directory]\nbackends = ["file"]\nfile = "{y}"\n')
    sstore.apply(doc_record("d", ACL(frozenset({"group:file:staff"}), frozenset({"user:file:bob"}))),
                 chunk_records("d", ["x"]))
    r = _access(sstore.path, "d", "--as", "carol", "--json", "--config", str(cfg))
    assert r.returncode == 0 and json.loads(r.stdout)["allowed_by"] == ["group:file:staff"], r.stderr
    r = _access(sstore.path, "d", "--as", "bob", "--json", "--config", str(cfg))
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["denied_by"] == ["user:file:bob"] and out["allowed_by"] == ["group:file:staff"]
    assert out["principal_tokens"]["group:file:staff"] == ["file"]
    r = _access(sstore.path, "d", "--as", "carol", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_explain_unknown_acl_is_denied_for_everyone(sstore):
    sstore.apply(doc_record("u", ACL.unknown("cannot read permissions")), chunk_records("u", ["x"]))
    out = explain(sstore, "u", "everyone", Directory())
    assert out["decision"] == "deny" and out["reason"].startswith("ACL unknown (cannot read permissions)")

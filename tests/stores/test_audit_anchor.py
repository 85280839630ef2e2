"""The audit chain anchored outside the store (defect 11 of issue 13). Each tampering the issue
reproduced, done as an attacker with write access to the store would (drop the append-only triggers,
delete, move ``audit_head``, rewrite and re-chain with the public hash function): passes
``ingest audit --verify`` without an anchor (the documented limit), is found with one."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest

from ingest.stores.lineage_sql import ANCHOR_ENV, audit_hash


def cli(*args, anchor=None):
    env = {k: v for k, v in os.environ.items() if k != ANCHOR_ENV}
    if anchor:
        env[ANCHOR_ENV] = str(anchor)
    return subprocess.run([sys.executable, "-m", "ingest.cli.main", "audit", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def make_log(db, anchor, n=5):
    from ingest.stores.sqlite import SQLiteStore

    s = SQLiteStore(db)
    s._anchor_file = str(anchor) if anchor else None
    for i in range(n):
        s.audit("alice", f"query {i}", {"labels": ["x"]} if i % 2 else None, [(f"c{i}", "v1")])
    s.close()


def rows(raw):
    raw.row_factory = sqlite3.Row
    return [dict(r) for r in raw.execute("SELECT * FROM audit ORDER BY id")]


def delete_everything(raw):
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit")
    raw.execute("DELETE FROM meta WHERE key='audit_head'")


def cut_tail_and_move_head(raw):
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE id>3")
    last = rows(raw)[-1]
    raw.execute("UPDATE meta SET value=? WHERE key='audit_head'", (json.dumps([last["id"], last["hash"]]),))


def rewrite_and_rechain(raw):
    raw.execute("DROP TRIGGER audit_no_update")
    prev = ""
    for r in rows(raw):
        if r["id"] == 2:
            r["results"] = "[]"  # hide what record 2 returned
        r["prev_hash"] = prev
        r["hash"] = audit_hash(r)
        raw.execute("UPDATE audit SET results=?, prev_hash=?, hash=? WHERE id=?",
                    (r["results"], r["prev_hash"], r["hash"], r["id"]))
        prev = r["hash"]
    raw.execute("UPDATE meta SET value=? WHERE key='audit_head'", (json.dumps([r["id"], prev]),))


TAMPERING = {"delete_all": (delete_everything, "missing from it"),
             "cut_tail_move_head": (cut_tail_and_move_head, "missing from it"),
             "rewrite_rechain": (rewrite_and_rechain, "rewritten and re-chained")}


@pytest.mark.parametrize("how", sorted(TAMPERING))
def test_tampering_is_found_with_the_anchor_and_only_with_it(tmp_path, how):
    tamper, why = TAMPERING[how]
    anchor = tmp_path / "outside" / "audit.anchor"
    anchor.parent.mkdir()
    db = tmp_path / "index.db"
    make_log(db, anchor)
    assert [json.loads(x)["id"] for x in anchor.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert os.stat(anchor).st_mode & 0o777 == 0o600
    ok = cli("--verify", "--store", str(db), anchor=anchor)
    assert ok.returncode == 0 and "anchored at record 5" in ok.stdout, ok.stdout + ok.stderr

    raw = sqlite3.connect(db)
    tamper(raw)
    raw.commit()
    raw.close()
    blind = cli("--verify", "--store", str(db))  # the store alone cannot tell
    assert blind.returncode == 0 and "no anchor configured" in blind.stdout, blind.stdout + blind.stderr
    seen = cli("--verify", "--json", "--store", str(db), anchor=anchor)
    v = json.loads(seen.stdout)
    assert seen.returncode == 1 and not v["ok"] and why in v["reason"], seen.stdout + seen.stderr


def test_checkpoint_late_anchor_and_a_linked_anchor_is_refused(tmp_path):
    db = tmp_path / "index.db"
    make_log(db, None, n=3)  # written before any anchor was configured
    anchor = tmp_path / "audit.anchor"
    for state in ("missing", "empty"):  # records the anchor does not vouch for are not trusted silently
        late = cli("--verify", "--store", str(db), anchor=anchor)
        assert late.returncode == 1 and "--checkpoint" in late.stdout, state
        anchor.write_text("")
    assert cli("--checkpoint", "--store", str(db), anchor=anchor).returncode == 0
    assert json.loads(anchor.read_text()) == {"id": 3, "hash": rows(sqlite3.connect(db))[-1]["hash"]}
    assert cli("--verify", "--store", str(db), anchor=anchor).returncode == 0
    link = tmp_path / "link.anchor"
    link.symlink_to(anchor)
    bad = cli("--verify", "--store", str(db), anchor=link)
    assert bad.returncode == 1 and "cannot be read" in bad.stdout


def test_postgres_store_is_anchored_too(pg_store_url, tmp_path, monkeypatch):
    import psycopg

    from ingest.stores import open_store

    anchor = tmp_path / "pg.anchor"
    monkeypatch.setenv(ANCHOR_ENV, str(anchor))
    s = open_store(pg_store_url)
    for i in range(4):
        s.audit("bob", f"q{i}", None, [(f"c{i}", "v")])
    v = s.audit_verify()
    assert v["ok"] and v["anchored"] == 4
    with psycopg.connect(pg_store_url, autocommit=True) as c:
        c.execute("DROP TRIGGER audit_no_update ON audit")
        c.execute("DELETE FROM audit WHERE id>2")
        c.execute("UPDATE meta SET value=(SELECT json_build_array(id, hash)::text FROM audit WHERE id=2)"
                  " WHERE key='audit_head'")
    v = s.audit_verify()
    assert not v["ok"] and "record 4 is anchored outside the store but missing" in v["reason"]

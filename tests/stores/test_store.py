"""SQLite store: schema migration in place, and child documents living with their parent."""
import json
import sqlite3

import numpy as np

from acl.model import ACL, EVERYONE
from ingest.stores import sqlite as sq
from ingest.stores.base import ChunkRecord, DocRecord


def _doc(doc_id, ext, parent=None, acl=ACL(frozenset({EVERYONE}))):
    return DocRecord(doc_id=doc_id, source="folder:/r", external_id=ext, uri=f"file:///r/{ext}", mime="text/plain",
                     size=1, mtime_ns=1, content_version="v1", acl=acl, parent_id=parent)


def _chunk(doc_id, text):
    v = np.ones(384, dtype=np.float32) / np.sqrt(384)
    return ChunkRecord(f"{doc_id}-0", 0, text, text, 3, None, "", v.tobytes(), "t", "m")


def test_store_written_by_schema_1_migrates_and_keeps_everything(tmp_path):
    db = tmp_path / "old.db"
    c = sqlite3.connect(db)
    for stmt in sq._SCHEMA.split(";"):  # the first released schema, as version 1 wrote it
        if stmt.strip():
            c.execute(stmt)
    c.execute("INSERT INTO meta VALUES('schema_version','1'),('gen','0'),('model_id','m')")
    c.execute("INSERT INTO documents(doc_id, source, external_id, uri, status, acl) VALUES('d1','s','a.txt',"
              "'file:///a.txt','indexed',?)", (ACL(frozenset({EVERYONE})).to_json(),))
    c.execute("INSERT INTO doc_acl VALUES('d1','everyone',1)")
    c.execute("INSERT INTO chunks(chunk_id, doc_id, idx, text, text_hash, vec) VALUES('c1','d1',0,'old words','h',?)",
              (np.ones(384, dtype=np.float32).tobytes(),))
    c.execute("INSERT INTO chunks_fts(rowid, text, section) VALUES(1,'old words','')")
    c.commit()
    c.close()
    store = sq.SQLiteStore(db)
    assert store.schema_version() == sq.SCHEMA_VERSION == 10
    assert store.get_doc_by_id("d1")["parent_id"] is None
    # version 4 (observability): outcome traces, quality snapshots and alerts
    store.log_outcome(action="indexed", source="s", external_id="a.txt", doc_id="d1", trace={"stages": {"fetch": 1}})
    assert store.db.execute("SELECT trace FROM outcomes").fetchone()[0] == '{"stages": {"fetch": 1}}'
    assert store.db.execute("SELECT COUNT(*) FROM quality_snapshots").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM quality_alerts").fetchone()[0] == 0
    assert store.get_doc_by_id("d1")["source_seq"] is None and store.dead_letters() == []  # version 7 (queue)
    assert [r for r, _ in store.bm25("old words", frozenset({EVERYONE}), 5)] == [1]
    sq.SQLiteStore(db)  # opening again is a no-op


def test_newer_schema_is_refused(tmp_path):
    store = sq.SQLiteStore(tmp_path / "x.db")
    store.db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    import pytest

    with pytest.raises(RuntimeError, match="newer"):
        sq.SQLiteStore(tmp_path / "x.db")


def test_children_follow_their_parent(tmp_path):
    store = sq.SQLiteStore(tmp_path / "x.db")
    store.apply(_doc("p", "mail.eml"), [_chunk("p", "parent text")])
    store.apply(_doc("c", "mail.eml!report.pdf", parent="p"), [_chunk("c", "child text")])
    store.apply(_doc("g", "mail.eml!report.pdf!inner.txt", parent="c"), [_chunk("g", "grandchild text")])
    assert set(store.docs_for_source("folder:/r")) == {"mail.eml"}  # the scan sees only real files
    store.move("p", "moved.eml", "file:///r/moved.eml")
    assert store.get_doc_by_id("g")["external_id"] == "moved.eml!report.pdf!inner.txt"
    assert store.get_doc_by_id("c")["uri"] == "file:///r/moved.eml!report.pdf"
    private = ACL(frozenset({"user:posix:1"}))
    store.set_acl("p", private)
    assert all(json.loads(store.get_doc_by_id(d)["acl"])["allow"] == ["user:posix:1"] for d in "pcg")
    assert store.bm25("grandchild", frozenset({EVERYONE}), 5) == []
    store.delete("p")
    assert store.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0
    assert store.db.execute("SELECT COUNT(*) FROM chunks_fts").fetchone()[0] == 0


def test_dead_letters_and_source_versions(tmp_path):
    store = sq.SQLiteStore(tmp_path / "x.db")
    store.db.execute("INSERT INTO documents(doc_id, source, external_id, uri, status) VALUES('d1','s','a','u','indexed')")
    store.set_source_seq("d1", 20)
    store.set_source_seq("d1", 10)  # never goes back: a late task cannot lower it
    assert store.get_doc_by_id("d1")["source_seq"] == 20
    i = store.add_dead_letter(task="ingest.change", lane="bulk", args=["s", "upsert"], kwargs={"version": 3},
                              fault="permanent", reason="ValueError: bad", attempts=1)
    [d] = store.dead_letters()
    assert (d["id"], d["args"], d["kwargs"], d["fault"]) == (i, ["s", "upsert"], {"version": 3}, "permanent")
    store.mark_requeued(i)
    assert store.dead_letters() == [] and len(store.dead_letters(include_requeued=True)) == 1

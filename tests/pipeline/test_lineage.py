"""Labels through the real pipeline (real model, real SQLite store), redaction before
storing/FTS/embedding, provenance, `ingest lineage`, the hash-chained audit log and
`ingest audit --verify`, and the schema 2 -> 3 migration."""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from tests.support.common import RecordingEmbedder, run_events
from ingest.pipeline.classify import CARD, EMAIL, LabelPolicy
from ingest.sources.labels import XATTR
from ingest.pipeline.document import Pipeline, folder_source
from ingest.search.index import Index
from ingest.sources.base import UPSERT, ChangeEvent
from ingest.stores import sqlite as sq
from ingest.stores.lineage_sql import audit_hash

CARD_NO = "4111 1111 1111 1111"
MAIL = "jane.doe@example.com"
PAY = (f"# Invoice 2291\n\nPlease charge the corporate card {CARD_NO} for the Oslo workshop and send the "
       f"receipt to {MAIL} by Friday.\n")


def cli(*args):
    return subprocess.run([sys.executable, "-m", "ingest.cli.main", *args], capture_output=True, text=True, timeout=120)


@pytest.fixture
def root(world_dir):
    r = world_dir / "docs"
    r.mkdir()
    (r / "pay.md").write_text(PAY)
    (r / "notes.md").write_text("# Notes\n\nThe Oslo workshop starts on Monday; bring the slides.\n")
    return r


def _chunks(store, root, rel):
    doc = store.get_doc(folder_source(str(root)), rel)
    return doc, [dict(r) for r in store.db.execute("SELECT * FROM chunks WHERE doc_id=? ORDER BY idx",
                                                    (doc["doc_id"],))]


def _fts(store, word):
    return store.db.execute("SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?", (f'"{word}"',)).fetchall()


def test_redact_policy_keeps_card_and_email_out_of_text_fts_and_embedding(world_dir, root, embedder):
    store = sq.SQLiteStore(world_dir / "redact.db")
    rec = RecordingEmbedder(embedder)
    policy = LabelPolicy({"pii:payment_card": "redact", "pii:email": "redact"})
    outs = run_events(Pipeline(store, rec, sandbox=False, policy=policy), root)
    assert sorted(o.action for o in outs) == ["indexed", "indexed"]
    doc, chunks = _chunks(store, root, "pay.md")
    assert chunks and all({CARD, EMAIL} <= set(json.loads(c["labels"])) for c in chunks)
    assert json.loads(doc["redactions"]) == {CARD: 1, EMAIL: 1}
    text = " ".join(c["text"] for c in chunks)
    assert "[REDACTED pii:payment_card]" in text and "[REDACTED pii:email]" in text and "Oslo workshop" in text
    # embedding input: the model never saw them
    assert rec.inputs and not any("4111" in t or MAIL in t for t in rec.inputs)
    # FTS index: no token of the number or the address; an ordinary word still matches
    assert _fts(store, "4111") == [] and _fts(store, "jane") == [] and _fts(store, "example") == []
    assert _fts(store, "workshop")
    # searching for them finds nothing that holds them
    idx = Index(store)
    for q in (CARD_NO, CARD_NO.replace(" ", ""), MAIL):
        for mode in ("bm25", "hybrid"):
            hits = idx.search(q, principal="everyone", mode=mode, audit=False)
            assert all("4111" not in h.text and MAIL not in h.text for h in hits)
    assert idx.search(CARD_NO, principal="everyone", mode="bm25", audit=False) == []
    # the store file itself: not in any table, index or the WAL
    store.db.execute("PRAGMA wal_checkpoint(FULL)")
    for f in (store.path, store.path.with_name(store.path.name + "-wal")):
        if f.exists():
            data = f.read_bytes()
            for needle in (CARD_NO, CARD_NO.replace(" ", ""), MAIL):
                assert needle.encode() not in data, (f, needle)
    # labels reach every hit of the document
    hits = idx.search("corporate card receipt Oslo workshop", principal="everyone", k=5, audit=False)
    pay_hits = [h for h in hits if h.doc_id == doc["doc_id"]]
    assert pay_hits and all({CARD, EMAIL} <= set(h.labels) for h in pay_hits)
    assert all(CARD not in h.labels for h in hits if h.doc_id != doc["doc_id"])

    # control: with the default policy (index) the same document keeps the number, so the checks above can fail
    plain = sq.SQLiteStore(world_dir / "plain.db")
    run_events(Pipeline(plain, embedder, sandbox=False, policy=LabelPolicy()), root)
    _, pchunks = _chunks(plain, root, "pay.md")
    assert CARD_NO in pchunks[0]["text"] and {CARD, EMAIL} <= set(json.loads(pchunks[0]["labels"]))
    assert _fts(plain, "4111")
    assert any(CARD_NO in h.text for h in Index(plain).search(CARD_NO, principal="everyone", mode="bm25",
                                                              audit=False))


def test_skip_policy_and_source_labels_from_sidecar_and_xattr(world_dir, root, embedder):
    store = sq.SQLiteStore(world_dir / "src.db")
    (root / "key.txt").write_text("deploy key\n-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n"
                                  "-----END RSA PRIVATE KEY-----\n")
    (root / "notes.md.labels").write_text("confidential\n")
    os.setxattr(root / "notes.md", XATTR, b"project:apollo")
    pipe = Pipeline(store, embedder, sandbox=False, policy=LabelPolicy({"secret:*": "skip"}))
    run_events(pipe, root)
    key = store.get_doc(folder_source(str(root)), "key.txt")
    assert key["status"] == "quarantined" and key["error_code"] == "policy-skip"
    assert "secret:private_key" in key["error"] and key["n_chunks"] == 0
    assert store.db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id=?", (key["doc_id"],)).fetchone()[0] == 0
    assert store.get_doc(folder_source(str(root)), "notes.md.labels") is None  # a sidecar is no document
    doc, chunks = _chunks(store, root, "notes.md")
    assert json.loads(doc["source_labels"]) == ["confidential", "project:apollo"]
    assert all(json.loads(c["labels"]) == ["confidential", "project:apollo"] for c in chunks)
    hits = Index(store).search("Oslo workshop slides", principal="everyone", audit=False)
    assert {"confidential", "project:apollo"} <= set(next(h for h in hits if h.doc_id == doc["doc_id"]).labels)
    # a changed sidecar re-labels the document although its bytes did not change (no re-embedding)
    n0 = embedder.computed
    (root / "notes.md.labels").write_text("public\n")
    outs = pipe.handle(ChangeEvent(UPSERT, str(root), "notes.md.labels"))
    assert [o.action for o in outs] == ["indexed"] and embedder.computed == n0
    _, chunks = _chunks(store, root, "notes.md")
    assert all(json.loads(c["labels"]) == ["public", "project:apollo"] for c in chunks)


def test_lineage_and_audit_show_the_exact_chunks_and_versions_and_tampering_is_found(world_dir, root, embedder):
    db = world_dir / "audit.db"
    store = sq.SQLiteStore(db)
    run_events(Pipeline(store, embedder, sandbox=False, policy=LabelPolicy()), root)
    idx = Index(store)
    assert idx.search("zebra quartz", principal="nobody", k=3, mode="bm25") == []  # audited too
    hits = idx.search("Oslo workshop", principal="root", k=3)
    idx.search("zebra quartz", principal="everyone", k=3, mode="bm25")
    assert hits
    want = [{"chunk_id": h.chunk_id, "doc_version": h.doc_version} for h in hits]
    doc = store.get_doc_by_id(hits[0].doc_id)
    assert hits[0].doc_version == doc["content_version"]

    out = cli("audit", "--store", str(db), "--principal", "root", "--json")
    assert out.returncode == 0, out.stderr
    recs = json.loads(out.stdout)
    assert len(recs) == 1 and recs[0]["query"] == "Oslo workshop" and recs[0]["results"] == want
    text = cli("audit", "--store", str(db), "--since", "1h").stdout
    assert f"{hits[0].chunk_id}@{hits[0].doc_version}" in text and '"zebra quartz"' in text
    assert cli("audit", "--store", str(db), "--until", "2000-01-01T00:00").stdout.strip() == "no audit records match"
    bad = cli("audit", "--store", str(db), "--since", "yesterday")
    assert bad.returncode == 2 and "use an ISO time" in bad.stderr

    out = cli("lineage", hits[0].chunk_id, "--store", str(db), "--json")
    assert out.returncode == 0, out.stderr
    lin = json.loads(out.stdout)
    (ch,) = lin["chunks"]
    assert ch["chunk_id"] == hits[0].chunk_id and ch["doc_version"] == hits[0].doc_version
    assert ch["source"] == folder_source(str(root)) and ch["extractor"] == doc["extractor"]
    assert ch["extractor_version"] == doc["extractor_version"] and "max=254" in ch["chunker"]
    assert ch["model_id"] == store.model_id and ch["vector_dim"] == 384 and ch["embedded_at"] >= ch["created_at"]
    assert lin["document"]["uri"] == hits[0].uri and lin["document"]["content_version"] == hits[0].doc_version
    assert [s["principal"] for s in lin["searches"]] == ["root"]
    assert lin["searches"][0]["returned"] == [want[0]]
    text = cli("lineage", str(root / "notes.md"), "--store", str(db)).stdout  # by local path
    assert hits[0].doc_version in text and "audit #2" in text and "model " in text
    miss = cli("lineage", "nope", "--store", str(db))
    assert miss.returncode == 1 and "neither a chunk id nor a document URI" in miss.stderr

    ok = cli("audit", "--verify", "--store", str(db))
    assert ok.returncode == 0 and "3 records" in ok.stdout
    raw = sqlite3.connect(db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("UPDATE audit SET query='x' WHERE id=2")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw.execute("DELETE FROM audit WHERE id=2")
    # someone with the file drops the guard and rewrites what root got back
    raw.execute("DROP TRIGGER audit_no_update")
    raw.execute("UPDATE audit SET results='[]' WHERE id=2")
    raw.commit()
    broken = cli("audit", "--verify", "--store", str(db))
    assert broken.returncode == 1 and "BROKEN at record 2" in broken.stdout and "altered" in broken.stdout
    # ... and recomputes that record's hash: the next record's link breaks instead
    row = dict(zip(("id", "ts", "principal", "query", "filters", "results", "prev_hash", "v"),
                   raw.execute("SELECT id, ts, principal, query, filters, results, prev_hash, v FROM audit"
                               " WHERE id=2").fetchone()))
    raw.execute("UPDATE audit SET hash=? WHERE id=2", (audit_hash(row),))
    raw.commit()
    v = json.loads(cli("audit", "--verify", "--json", "--store", str(db)).stdout)
    assert v["ok"] is False and v["first_broken"] == 3 and "prev_hash" in v["reason"]


def test_removing_records_is_detected(world_dir):
    store = sq.SQLiteStore(world_dir / "cut.db")
    for i in range(4):
        store.audit("alice", f"q{i}", None, [(f"c{i}", "v1")])
    assert store.audit_verify()["ok"]
    raw = sqlite3.connect(store.path)
    raw.execute("DROP TRIGGER audit_no_delete")
    raw.execute("DELETE FROM audit WHERE id=4")  # the tail
    raw.commit()
    v = store.audit_verify()
    assert not v["ok"] and v["first_broken"] == 4 and "removed from the end" in v["reason"]
    raw.execute("DELETE FROM audit WHERE id=2")  # the middle
    raw.commit()
    v = store.audit_verify()
    assert not v["ok"] and v["first_broken"] == 3 and "removed" in v["reason"]


def test_schema_2_store_migrates_to_current_and_keeps_its_audit_chain(tmp_path):
    db = tmp_path / "v2.db"
    c = sqlite3.connect(db)
    for stmt in sq._SCHEMA.split(";"):
        if stmt.strip():
            c.execute(stmt)
    for stmt in sq.MIGRATIONS[2]:
        c.execute(stmt)
    c.execute("INSERT INTO meta VALUES('schema_version','2'),('gen','0'),('model_id','m')")
    c.execute("INSERT INTO documents(doc_id, source, external_id, uri, status, acl, labels) VALUES('d1','folder:/r',"
              "'a.txt','file:///r/a.txt','indexed','{}','[\"pii:email\"]')")
    c.execute("INSERT INTO doc_acl VALUES('d1','everyone',1)")
    c.execute("INSERT INTO chunks(chunk_id, doc_id, idx, text, text_hash, vec, model_id, created_at, labels)"
              " VALUES('c1','d1',0,'old words','h',?, 'm', 5.0, '[\"pii:email\"]')",
              (np.ones(384, dtype=np.float32).tobytes(),))
    prev = ""
    for i, (ts, who) in enumerate([(1.5, "alice"), (2.5, "bob")], 1):  # schema 2's audit rule
        body = json.dumps([ts, who, "q", {}, [["c1", "v1"]]], sort_keys=True)
        h = hashlib.sha256((prev + body).encode()).hexdigest()
        c.execute("INSERT INTO audit VALUES(?,?,?,?,?,?,?,?)", (i, ts, who, "q", "{}", '[["c1", "v1"]]', prev, h))
        prev = h
    c.commit()
    c.close()
    store = sq.SQLiteStore(db)
    assert store.schema_version() >= 4 and store.schema_version() == sq.SCHEMA_VERSION
    row = store.db.execute("SELECT source, embedded_at, labels FROM chunks WHERE chunk_id='c1'").fetchone()
    assert tuple(row) == ("folder:/r", 5.0, '["pii:email"]')
    assert store.get_doc_by_id("d1")["source_labels"] == "[]"
    assert store.audit_verify() == {"ok": True, "records": 2, "first_broken": None, "reason": None}
    store.audit("carol", "after", {"x": 1}, [("c1", "v1")])  # format 1 continues the old chain
    recs = store.audit_records()
    assert [r["v"] for r in recs] == [None, None, 1] and recs[2]["prev_hash"] == prev
    assert store.audit_verify()["ok"] and store.audit_verify()["records"] == 3
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute("DELETE FROM audit")
    assert sq.SQLiteStore(db).schema_version() == sq.SCHEMA_VERSION  # opening again is a no-op


def test_archive_members_inherit_source_labels_and_follow_a_relabel(world_dir, embedder):
    import zipfile

    root = world_dir / "docs"
    root.mkdir()
    with zipfile.ZipFile(root / "bundle.zip", "w") as z:
        z.writestr("a.txt", "The alpha memo about the harbour budget.\n")
        z.writestr("b.txt", "The beta memo about the mountain budget.\n")
    (root / "bundle.zip.labels").write_text("sensitivity:internal\n")
    store = sq.SQLiteStore(world_dir / "zip.db")
    pipe = Pipeline(store, embedder, sandbox=False, policy=LabelPolicy())
    run_events(pipe, root)

    def member_labels():
        return {r[0]: json.loads(r[1]) for r in store.db.execute(
            "SELECT d.external_id, c.labels FROM chunks c JOIN documents d ON d.doc_id=c.doc_id")}

    members = {"bundle.zip", "bundle.zip!a.txt", "bundle.zip!b.txt"}
    assert member_labels() == dict.fromkeys(members, ["sensitivity:internal"])
    n0 = embedder.computed
    (root / "bundle.zip.labels").write_text("sensitivity:restricted\n")
    pipe.handle(ChangeEvent(UPSERT, str(root), "bundle.zip.labels"))
    assert member_labels() == dict.fromkeys(members, ["sensitivity:restricted"])
    assert embedder.computed == n0  # re-labelled, not re-embedded

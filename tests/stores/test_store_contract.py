"""The store contract, one suite, run unchanged against every store: the embedded SQLite
store and the PostgreSQL store (a real server, see tests/support/servers.py). Sections are headed by the
protocols of ingest.stores.base they test; the last test checks every protocol method is called here.

Vectors here are synthetic unit vectors (a seeded direction per text), so the suite needs no
model; which chunk is nearest is known by construction.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time

import numpy as np
import pytest

from acl.model import ACL, EVERYONE
from tests.support.store_data import ALICE, BOB, DIM, chunks, doc, unit  # noqa: F401

@pytest.fixture(params=["sqlite", "postgres"])
def any_store(request, tmp_path):
    """A fresh store of each kind; ``.reopen()`` gives a second handle on the same store."""
    if request.param == "sqlite":
        from ingest.stores.sqlite import SQLiteStore

        url = str(tmp_path / "index.db")
        make = SQLiteStore
    else:
        from ingest.stores.postgres import PostgresStore

        url = request.getfixturevalue("pg_store_url")
        make = PostgresStore
    s = make(url)
    s.reopen = lambda: make(url)
    s.kind = request.param
    yield s
    s.close()


def readable_ids(store, tokens, k, mode, query="report", qvec=None):
    if mode == "bm25":
        ranked = store.bm25(query, tokens, k)
    else:
        ranked = store.vector(qvec if qvec is not None else unit("query"), tokens, k)
    return [h.doc_id for h in store.hits([(r, s, None, None) for r, s in ranked])]


def n_chunks(store) -> int:
    return store.status()["chunks"]


# -- Registry: apply ---------------------------------------------------------------------------
def test_apply_replaces_all_chunks_of_a_document(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["alpha report one", "alpha report two", "alpha report three"]))
    s.apply(doc("d1", version="v2"), chunks("d1", ["beta report one", "beta report two"]))
    st = s.export_docs(["d1"])["d1"]
    assert [c["text"] for c in st["chunks"]] == ["beta report one", "beta report two"]
    assert st["doc"]["content_version"] == "v2" and st["doc"]["n_chunks"] == 2
    assert n_chunks(s) == 2
    assert s.bm25("alpha", ALICE, 10) == []
    assert len(s.bm25("beta", ALICE, 10)) == 2


def test_a_failed_apply_changes_nothing(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["kept text here"]))
    bad = chunks("d1", ["new text one", "new text two"])
    bad[1].chunk_id = bad[0].chunk_id  # violates chunk id uniqueness halfway through the transaction
    with pytest.raises(Exception):
        s.apply(doc("d1", version="v2"), bad)
    st = s.export_docs(["d1"])["d1"]
    assert [c["text"] for c in st["chunks"]] == ["kept text here"]
    assert st["doc"]["content_version"] == "v1"
    s.apply(doc("d2"), chunks("d2", ["the store still works"]))  # no transaction left open
    assert n_chunks(s) == 2


def test_ids_are_deterministic(any_store, tmp_path):
    from ingest.pipeline.document import new_doc_id
    from ingest.stores.sqlite import SQLiteStore

    other = SQLiteStore(tmp_path / "other.db")
    assert new_doc_id(any_store, "folder:/r", "a.txt") == new_doc_id(other, "folder:/r", "a.txt")
    any_store.apply(doc("d1"), chunks("d1", ["one text", "two text"]))
    first = [c["chunk_id"] for c in any_store.export_docs(["d1"])["d1"]["chunks"]]
    any_store.apply(doc("d1"), chunks("d1", ["one text", "two text"]))
    assert [c["chunk_id"] for c in any_store.export_docs(["d1"])["d1"]["chunks"]] == first
    assert first == [c.chunk_id for c in chunks("d1", ["one text", "two text"])]
    assert any_store.doc_id_taken("d1") and not any_store.doc_id_taken("d9")


def test_record_failure_keeps_the_reason_and_drops_the_chunks(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["some report text"]))
    s.record_failure(doc("d1", status="quarantined", error_code="corrupt", error="bad xref at 12"))
    row = s.get_doc("folder:/r", "d1.txt")
    assert (row["status"], row["error_code"], row["error"]) == ("quarantined", "corrupt", "bad xref at 12")
    assert n_chunks(s) == 0
    st = s.status()
    assert st["by_status"] == {"quarantined": 1}
    assert st["errors"][0]["error_code"] == "corrupt"
    assert st["by_reason"]["folder:/r"] == {"quarantined:corrupt": 1}


# -- Registry + ChunkIndex: ACL ---------------------------------------------------------------------------
def test_set_acl_changes_visibility_without_reembedding(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["quarterly report text", "second report part"]))
    before = s.export_docs(["d1"])["d1"]["chunks"]
    private = ACL(frozenset({"user:posix:1002"}))
    s.set_acl("d1", private, size=11, mtime_ns=2)
    after = s.export_docs(["d1"])["d1"]
    assert [(c["chunk_id"], c["vec"], c["created_at"]) for c in after["chunks"]] == \
        [(c["chunk_id"], c["vec"], c["created_at"]) for c in before]
    assert after["doc"]["acl_version"] == private.version and (after["doc"]["size"], after["doc"]["mtime_ns"]) == (11, 2)
    assert readable_ids(s, ALICE, 10, "bm25") == [] and readable_ids(s, ALICE, 10, "vector") == []
    assert readable_ids(s, BOB, 10, "bm25") == ["d1", "d1"]
    assert readable_ids(s, BOB, 10, "vector") == ["d1", "d1"]
    s.set_acl("d1", ACL.unknown("unreadable"))  # fail closed, and flagged
    assert readable_ids(s, BOB, 10, "bm25") == []
    assert json.loads(s.get_doc_by_id("d1")["flags"]) == ["acl-unknown"]


def test_deny_wins_and_everyone_token(any_store):
    s = any_store
    s.apply(doc("open"), chunks("open", ["report for everyone"]))
    s.apply(doc("team", acl=ACL(frozenset({"group:posix:100"}), frozenset({"user:posix:1001"}))),
            chunks("team", ["report for the team but not alice"]))
    s.apply(doc("nobody", acl=ACL(frozenset())), chunks("nobody", ["report nobody reads"]))
    carol = frozenset({EVERYONE, "user:posix:1003", "group:posix:100"})
    for mode in ("bm25", "vector"):
        assert sorted(readable_ids(s, ALICE, 10, mode)) == ["open"]  # in the group, but denied
        assert sorted(readable_ids(s, carol, 10, mode)) == ["open", "team"]
        assert sorted(readable_ids(s, frozenset({EVERYONE}), 10, mode)) == ["open"]
        assert readable_ids(s, frozenset(), 10, mode) == []


@pytest.mark.parametrize("mode", ["bm25", "vector"])
def test_search_returns_exactly_the_readable_chunks(any_store, mode):
    """k below and above the readable count: k results are k readable results, and when fewer
    are readable, all of them and nothing else (most chunks are unreadable and nearer)."""
    s = any_store
    q = unit("query")
    readable = set()
    for i in range(60):
        mine = i % 6 == 0  # 10 readable documents, 50 that alice may not read
        acl = ACL(frozenset({"user:posix:1001" if mine else "user:posix:1002"}))
        vec = unit(f"v{i}", near=q, noise=2.0 if mine else 0.5)  # unreadable ones rank higher
        s.apply(doc(f"d{i:02d}", acl=acl), chunks(f"d{i:02d}", [f"report number {i}"], [vec]))
        if mine:
            readable.add(f"d{i:02d}")
    for k in (3, 10, 25):
        got = readable_ids(s, ALICE, k, mode, qvec=q)
        assert len(got) == min(k, len(readable)), (k, got)
        assert set(got) <= readable
    assert set(readable_ids(s, ALICE, 25, mode, qvec=q)) == readable
    if mode == "vector":  # the exact nearest readable chunks, in order
        sims = {d: float(np.dot(q, unit(f"v{int(d[1:])}", near=q, noise=2.0))) for d in readable}
        best = sorted(readable, key=lambda d: -sims[d])[:3]
        assert readable_ids(s, ALICE, 3, mode, qvec=q) == best


# -- Registry: children, move, delete ----------------------------------------------------------
def test_children_follow_their_parent(any_store):
    s = any_store
    s.apply(doc("p", "mail.eml"), chunks("p", ["parent text"]))
    s.apply(doc("c", "mail.eml!report.pdf", parent="p"), chunks("c", ["child text"]))
    s.apply(doc("g", "mail.eml!report.pdf!inner.txt", parent="c"), chunks("g", ["grandchild text"]))
    assert set(s.docs_for_source("folder:/r")) == {"mail.eml"}
    assert set(s.children_of("p")) == {"mail.eml!report.pdf"}
    s.move("p", "moved.eml", "file:///r/moved.eml")
    assert s.get_doc_by_id("g")["external_id"] == "moved.eml!report.pdf!inner.txt"
    assert s.get_doc_by_id("c")["uri"] == "file:///r/moved.eml!report.pdf"
    assert s.get_doc("folder:/r", "mail.eml") is None
    assert len(s.bm25("grandchild", ALICE, 5)) == 1  # a move keeps the chunks
    s.set_acl("p", ACL(frozenset({"user:posix:1"})))
    assert all(json.loads(s.get_doc_by_id(d)["acl"])["allow"] == ["user:posix:1"] for d in "pcg")
    assert s.bm25("grandchild", ALICE, 5) == []
    s.delete("p")
    assert s.status()["documents"] == 0 and n_chunks(s) == 0
    assert s.all_doc_ids() == []


def test_held_child_writes_land_with_their_parent_or_not_at_all(any_store):
    """store.hold()/store.unit() (issue 15): a container's children are written only in its
    own transaction; a failure anywhere in the unit leaves the store as it was."""
    s = any_store
    with s.hold() as held:
        s.apply(doc("c1", "mail.eml!a.txt", parent="p"), chunks("c1", ["first child text"]))
        s.apply(doc("c2", "mail.eml!b.txt", parent="p"), chunks("c2", ["second child text"]))
    assert len(held) == 2 and s.status()["documents"] == 0  # held, not written
    with s.unit(held):
        s.apply(doc("p", "mail.eml"), chunks("p", ["parent text"]))
    assert set(s.children_of("p")) == {"mail.eml!a.txt", "mail.eml!b.txt"} and n_chunks(s) == 3
    # a new version: b.txt dropped, c.txt new; the parent's write fails: nothing changes
    with s.hold() as held:
        s.delete("c2")
        s.apply(doc("c3", "mail.eml!c.txt", parent="p"), chunks("c3", ["third child text"]))
    bad = chunks("p", ["new parent one", "new parent two"])
    bad[1].chunk_id = bad[0].chunk_id  # fails halfway through the parent's write
    with pytest.raises(Exception):
        with s.unit(held):
            s.apply(doc("p", "mail.eml", version="v2"), bad)
    assert set(s.children_of("p")) == {"mail.eml!a.txt", "mail.eml!b.txt"} and n_chunks(s) == 3
    assert s.get_doc_by_id("p")["content_version"] == "v1"
    with s.unit(held):  # the same unit, with a parent that works
        s.apply(doc("p", "mail.eml", version="v2"), chunks("p", ["new parent text"]))
    assert set(s.children_of("p")) == {"mail.eml!a.txt", "mail.eml!c.txt"}
    assert s.bm25("second", ALICE, 5) == [] and len(s.bm25("third", ALICE, 5)) == 1
    # a container inside a container: the inner unit is held for the outer one
    with s.hold() as outer:
        with s.hold() as inner:
            s.apply(doc("g", "mail.eml!z.zip!in.txt", parent="z"), chunks("g", ["grandchild text"]))
        with s.unit(inner):
            s.apply(doc("z", "mail.eml!z.zip", parent="p"), chunks("z", ["zip member list"]))
    assert len(outer) == 2 and s.get_doc_by_id("z") is None
    with s.unit(outer):
        s.record_failure(doc("p", "mail.eml", version="v3", status="quarantined", error_code="garbled",
                             error="judged so"))
    assert s.get_doc_by_id("p")["status"] == "quarantined" and s.get_doc_by_id("g")["parent_id"] == "z"
    s.apply(doc("d", "other.txt"), chunks("d", ["the store still works"]))  # no transaction left open
    assert len(s.bm25("works", ALICE, 5)) == 1


def test_move_over_a_failed_document_replaces_it(any_store):
    s = any_store
    s.apply(doc("a", "a.txt"), chunks("a", ["text of a"]))
    s.record_failure(doc("b", "b.txt", status="error", error_code="corrupt", error="x"))
    s.move("a", "b.txt", "file:///r/b.txt")
    assert s.all_doc_ids() == ["a"]
    assert s.get_doc("folder:/r", "b.txt")["doc_id"] == "a"


# -- EmbeddingCache, OperationsLog (outcomes, status), AuditLog ----------------------------------------------------
def test_embedding_cache(any_store):
    s = any_store
    v = unit("x").tobytes()
    s.cache_vectors("m", [("h1", v), ("h2", unit("y").tobytes())])
    s.cache_vectors("m", [("h1", unit("other").tobytes())])  # first write wins: same hash, same text
    got = s.cached_vectors("m", ["h1", "h3"])
    assert got == {"h1": v}
    assert s.cached_vectors("other-model", ["h1"]) == {}


def test_outcomes_and_status_counts(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["one", "two"]))
    s.apply(doc("d2", flags=["quality:low-chars"]), chunks("d2", ["three"]))
    s.record_failure(doc("d3", status="error", error_code="timeout", error="timeout after 120 s in pdf"))
    for i, action in enumerate(["indexed", "indexed", "error"]):
        s.log_outcome(action=action, source="folder:/r", external_id=f"f{i}", doc_id=None, batch="b1",
                      parsed=1, embedded=2 if action == "indexed" else 0)
    s.log_outcome(action="indexed", source="folder:/r", external_id="f0", doc_id=None, batch="b1")
    assert s.batch_progress("b1") == 3
    assert s.batch_done("b1") == {"f0", "f1", "f2"}
    assert s.batch_done("another batch") == set()
    assert s.batch_outcomes("b1") == {"indexed": 3, "error": 1}
    assert s.counters() == {"parsed": 3, "embedded": 4, "last_id": s.counters()["last_id"]}
    st = s.status()
    assert (st["documents"], st["chunks"], st["by_status"]) == (3, 3, {"indexed": 2, "error": 1})
    assert st["by_reason"]["folder:/r"] == {"error:timeout": 1, "flagged:quality:low-chars": 1}
    assert [f["flags"] for f in st["flagged"]] == [["quality:low-chars"]]


def test_search_through_the_index_is_audited(any_store):
    from ingest.search.index import Index

    any_store.apply(doc("d1"), chunks("d1", ["the quarterly revenue report"]))
    idx = Index(any_store)
    hits = idx.search("quarterly revenue", principal="everyone", k=5, mode="bm25")
    assert [h.doc_id for h in hits] == ["d1"] and hits[0].bm25_rank == 1
    idx.search("revenue", principal="everyone", k=5, mode="bm25")
    rows = any_store.db.execute("SELECT principal, query, results, prev_hash, hash FROM audit ORDER BY id").fetchall()
    assert [r["query"] for r in rows] == ["quarterly revenue", "revenue"]
    assert rows[1]["prev_hash"] == rows[0]["hash"] != ""
    assert json.loads(rows[0]["results"])[0][0] == hits[0].chunk_id


# -- Outbox ----------------------------------------------------------------------------
def test_every_change_writes_an_outbox_row_in_its_transaction(any_store):
    s = any_store
    s.apply(doc("p", "a.zip"), chunks("p", ["parent"]))
    s.apply(doc("c", "a.zip!x.txt", parent="p"), chunks("c", ["child"]))
    s.set_acl("p", ACL(frozenset({"user:posix:1"})))
    s.touch("p", 5, 6)
    s.move("p", "b.zip", "file:///r/b.zip")
    s.delete("p")
    rows = [d for _, d, _ in s.outbox_entries(0, 100)]
    assert rows == ["p", "c", "p", "c", "p", "p", "c", "p", "c"]
    bad = chunks("q", ["x", "y"])
    bad[1].chunk_id = bad[0].chunk_id
    with pytest.raises(Exception):
        s.apply(doc("q"), bad)
    assert len(s.outbox_entries(0, 100)) == 9  # a rolled-back change leaves no row
    head = s.outbox_head()
    assert head == s.outbox_entries(0, 100)[-1][0]
    assert s.prune_outbox() == 9 and s.outbox_entries(0, 100) == []  # no sink registered: all of it
    s.apply(doc("r"), chunks("r", ["after pruning"]))
    assert s.outbox_entries(0, 100)[0][0] > head  # ids are never reused: sink cursors point into them


# -- Lifecycle: schema and locks ------------------------------------------------------------------
def test_schema_version_and_migrate_twice_is_a_noop(any_store):
    from ingest.stores import postgres, sqlite

    want = sqlite.SCHEMA_VERSION if any_store.kind == "sqlite" else postgres.SCHEMA_VERSION
    any_store.apply(doc("d1"), chunks("d1", ["survives migrations"]))
    assert any_store.schema_version() == want
    any_store.migrate()
    any_store.migrate()
    again = any_store.reopen()
    assert again.schema_version() == want
    assert again.export_docs(["d1"])["d1"]["chunks"][0]["text"] == "survives migrations"
    again.close()


def test_concurrent_first_opens_migrate_once(any_store):
    errors, stores = [], []

    def open_one():
        try:
            stores.append(any_store.reopen())
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {st.schema_version() for st in stores} == {any_store.schema_version()}
    for st in stores:
        st.close()


def test_lock_serialises_one_document_across_handles(any_store):
    other = any_store.reopen()
    order = []
    with any_store.lock("folder:/r\0a.txt"):
        def contend():
            with other.lock("folder:/r\0a.txt"):
                order.append("other")

        t = threading.Thread(target=contend)
        t.start()
        time.sleep(0.3)
        order.append("first")
        with other.lock("folder:/r\0b.txt"):  # another document is not blocked
            order.append("b")
    t.join(10)
    assert order == ["first", "b", "other"]
    other.close()


def test_full_text_with_common_and_rare_words_and_hostile_input(any_store):
    s = any_store
    for i in range(120):
        words = "protein expression in cells" + (" zebrafish regeneration" if i == 77 else "")
        s.apply(doc(f"d{i:03d}"), chunks(f"d{i:03d}", [f"{words} sample {i}"]))
    if s.kind == "postgres":  # the statistics the common-terms cut-off reads (autovacuum does this in time)
        s.db.execute("ANALYZE chunks")
        assert s._term_freqs().get("protein", 0) > s.COMMON_TERM_FREQ
    ids = readable_ids(s, ALICE, 5, "bm25", query="protein cells zebrafish")
    assert ids[0] == "d077" and len(ids) == 5  # the rare word decides the top; common words still rank
    assert len(readable_ids(s, ALICE, 10, "bm25", query="protein cells")) == 10  # only common words: still found
    for q in ("it's a (test) & | ! \\ 'x' :*", "the of and", "ünïcödé naïve café", "!!!"):
        s.bm25(q, ALICE, 5)  # no syntax error from any input
    assert s.bm25("the of and", ALICE, 5) == []


# -- OperationsLog (DMS cursors), GroupSync ------------------------------------------------------
def test_dms_cursors_persist_per_source_and_can_be_forgotten(any_store):
    s = any_store
    assert s.get_cursor("dms:a") is None
    s.set_cursor("dms:a", "token-1")
    s.set_cursor("dms:b", "delta?x=1&y='2'")
    s.set_cursor("dms:a", "token-2")  # overwritten, not duplicated
    other = s.reopen()
    assert (other.get_cursor("dms:a"), other.get_cursor("dms:b")) == ("token-2", "delta?x=1&y='2'")
    other.set_cursor("dms:a", None)
    assert s.get_cursor("dms:a") is None and s.get_cursor("dms:b") == "delta?x=1&y='2'"
    other.close()


def test_synced_groups_resolve_nested_membership_and_a_sync_replaces_a_source(any_store):
    s = any_store
    s.sync_groups("dms:x", [("eng", "alice", "user"), ("staff", "eng", "group"), ("all", "staff", "group"),
                            ("all", "all", "group"),  # a cycle must not loop
                            ("ops", "bob", "user"), ("eng", "alice", "user")])  # a duplicate edge is ignored
    s.sync_groups("dms:y", [("eng", "alice", "user")])
    assert s.groups_of("alice") == [("dms:x", "all"), ("dms:x", "eng"), ("dms:x", "staff"), ("dms:y", "eng")]
    assert s.groups_of("bob") == [("dms:x", "ops")]
    s.sync_groups("dms:x", [("ops", "alice", "user")])  # replaces every edge of dms:x, none of dms:y
    assert s.groups_of("alice") == [("dms:x", "ops"), ("dms:y", "eng")]
    assert s.groups_of("bob") == [] and s.groups_of("nobody") == []


def test_get_doc_by_uri_prefers_the_top_level_document(any_store):
    s = any_store
    s.apply(doc("kid", "k.txt", parent="top"), chunks("kid", ["child text"]))
    s.apply(doc("top", "t.txt"), chunks("top", ["top text"]))
    s.db.execute("UPDATE documents SET uri='file:///r/t.txt' WHERE doc_id='kid'")
    assert s.get_doc_by_uri("file:///r/t.txt")["doc_id"] == "top"
    assert s.get_doc_by_uri("file:///r/none.txt") is None


# -- Registry + AuditLog: labels and provenance ---------------------------------------------------------------
def test_labels_travel_into_hits_and_provenance_into_lineage(any_store):
    from ingest.search.index import Index

    s = any_store
    d = doc("d1", labels=["pii:email", "source:confidential"], source_labels=["confidential"],
            redactions={"pii:credit_card": 2}, flags=["quality:low-chars"])
    s.apply(d, chunks("d1", ["quarterly revenue by region", "contact sheet"]))
    s.apply(doc("kid", "d1.txt!a.txt", parent="d1", source_labels=["internal"]), chunks("kid", ["attached"]))
    hits = Index(s).search("quarterly revenue", principal="everyone", k=5, mode="bm25", audit=False)
    assert hits[0].labels == ["pii:email", "source:confidential", "flag:quality:low-chars"]
    assert json.loads(s.children_of("d1")["d1.txt!a.txt"]["source_labels"]) == ["internal"]
    lin = s.lineage(hits[0].chunk_id)
    assert lin["document"]["source_labels"] == ["confidential"]
    assert lin["document"]["redactions"] == {"pii:credit_card": 2}
    (ch,) = lin["chunks"]
    assert ch["chunk_id"] == hits[0].chunk_id and ch["source"] == "folder:/r" and ch["vector_dim"] == DIM
    assert ch["embedded_at"] >= ch["created_at"] > 0 and ch["doc_version"] == "v1" and ch["chunker"] == "c1"
    assert [c["idx"] for c in s.lineage("file:///r/d1.txt")["chunks"]] == [0, 1]
    assert s.lineage("no-such-thing") is None
    s.record_failure(doc("d1", status="error", error_code="timeout", source_labels=["secret"]))
    assert s.lineage("d1")["document"]["source_labels"] == ["secret"] and s.lineage("d1")["chunks"] == []


# -- AuditLog: audit chain ---------------------------------------------------------------------------
def _tamper(store, sql: str) -> None:
    """Run ``sql`` on the audit table with its append-only triggers out of the way (an attacker
    with direct database access); the chain, not the triggers, must reveal it."""
    if store.kind == "postgres":
        store.db.execute("ALTER TABLE audit DISABLE TRIGGER USER")
        store.db.execute(sql)
        store.db.execute("ALTER TABLE audit ENABLE TRIGGER USER")
    else:
        store.db.execute("DROP TRIGGER IF EXISTS audit_no_update")
        store.db.execute("DROP TRIGGER IF EXISTS audit_no_delete")
        store.db.execute(sql)


def test_audit_chain_is_append_only_and_verifies(any_store):
    s = any_store
    ids = [s.audit("alice", "q1", {"labels": ["pii"]}, [("c1", "v1"), ("c2", None)]),
           s.audit("bob", "q2", None, [("c3", "v1")]),
           s.audit("alice", "q3 ünï", {}, [])]
    assert ids == [1, 2, 3]
    assert s.audit_verify() == {"ok": True, "records": 3, "first_broken": None, "reason": None}
    for sql in ("UPDATE audit SET query='x' WHERE id=1", "DELETE FROM audit WHERE id=3"):
        with pytest.raises(Exception, match="append-only"):
            s.db.execute(sql)
    recs = s.audit_records(principal="alice")
    assert [r["query"] for r in recs] == ["q1", "q3 ünï"]
    assert recs[0]["filters"] == {"labels": ["pii"]}
    assert recs[0]["results"] == [{"chunk_id": "c1", "doc_version": "v1"}, {"chunk_id": "c2", "doc_version": None}]
    assert [r["id"] for r in s.audit_records(chunk_ids=["c3", "c2"])] == [1, 2]
    assert s.audit_records(chunk_ids=[]) == [] and [r["id"] for r in s.audit_records(limit=1)] == [3]
    assert [r["id"] for r in s.audit_records(since=recs[1]["ts"])] == [3]


def test_audit_tampering_is_found(any_store):
    s = any_store
    for i in range(4):
        s.audit("alice", f"q{i}", None, [(f"c{i}", "v1")])
    _tamper(s, "UPDATE audit SET query='innocent' WHERE id=2")
    v = s.audit_verify()
    assert (v["ok"], v["first_broken"]) == (False, 2) and "altered" in v["reason"]
    _tamper(s, "DELETE FROM audit WHERE id=2")
    v = s.audit_verify()
    assert (v["ok"], v["first_broken"]) == (False, 3) and "prev_hash" in v["reason"]
    other = s.reopen()  # a cut-off tail is seen too (the head marker)
    _tamper(s, "DELETE FROM audit WHERE id>=2")
    assert other.audit_verify()["ok"] is False and "removed from the end" in other.audit_verify()["reason"]
    other.close()


# -- ModelSwitch ------------------------------------------------------------------
def test_model_switch_is_all_or_nothing_and_old_model_chunks_are_refused(any_store):
    from ingest.stores.base import ModelChanged

    s = any_store
    old = s.model_id
    texts = ["alpha one", "bravo two", "charlie three"]
    s.apply(doc("d1"), chunks("d1", texts[:2]))
    s.apply(doc("d2"), chunks("d2", texts[2:]))
    hashes = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
    dim = 8  # the new model's vectors have another size: a new vector column / blob size
    new = {t: (np.eye(dim, dtype=np.float32)[i]) for i, t in enumerate(texts)}
    s.set_reembed_target("new-model")
    s.cache_vectors("new-model", [(hashes[t], new[t].tobytes()) for t in texts[:2]])
    assert s.model_coverage("new-model") == (2, 3)
    assert s.model_missing("new-model", 10) == [(hashes["charlie three"], "charlie three")]
    assert s.switch_model("new-model") is None and s.model_id == old  # incomplete: nothing switched
    assert readable_ids(s, ALICE, 1, "vector", qvec=unit("bravo two")) == ["d1"]
    s.cache_vectors("new-model", [(hashes["charlie three"], new["charlie three"].tobytes())])
    assert s.switch_model("new-model") == 3
    assert s.model_id == "new-model" and s.model_missing("new-model", 10) == []
    ranked = s.vector(new["charlie three"], ALICE, 3)
    assert [h.doc_id for h in s.hits([(r, sc, None, None) for r, sc in ranked])][0] == "d2"
    assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    lin = s.lineage("d1")
    assert {c["model_id"] for c in lin["chunks"]} == {"new-model"} and lin["chunks"][0]["vector_dim"] == dim
    assert [(m["from_model"], m["to_model"], m["chunks"]) for m in lin["model_history"]] == [(old, "new-model", 3)]
    late = chunks("d3", ["late worker"])
    for c in late:
        c.model_id = old
    with pytest.raises(ModelChanged, match="new-model"):
        s.apply(doc("d3"), late)
    assert s.get_doc_by_id("d3") is None


def test_model_switch_embeds_and_looks_up_what_the_model_embeds(any_store, tmp_path):
    """Chunks keep their section context and embed hash; the model switch asks for (embed hash,
    embed text) pairs, the pipeline's embedding input and cache key, and swaps by embed hash."""
    from ingest.pipeline.chunking import embed_text
    from ingest.stores.sqlite import SQLiteStore

    s = any_store
    texts, ctx = ["Book trains for short trips.", "Receipts are filed monthly."], "Staff handbook > Travel"
    recs = chunks("d1", texts)
    for c in recs:
        c.context = ctx
    s.apply(doc("d1"), recs)
    s.apply(doc("d2"), chunks("d2", ["no heading here"]))  # no context: embeds its bare text
    inputs = {t: embed_text(t, ctx) for t in texts} | {"no heading here": "no heading here"}
    key = {t: hashlib.sha256(e.encode()).hexdigest() for t, e in inputs.items()}
    assert inputs[texts[0]] == f"{ctx}\n\n{texts[0]}"
    got = {c["text"]: (c["context"], c["embed_hash"]) for c in s.export_docs(["d1", "d2"])["d1"]["chunks"]}
    assert got == {t: (ctx, key[t]) for t in texts}
    assert sorted(s.model_missing("m2", 10)) == sorted((key[t], e) for t, e in inputs.items())
    # a vector cached under a bare text's hash is not that chunk's vector
    bare = {t: hashlib.sha256(t.encode()).hexdigest() for t in texts}
    s.cache_vectors("m2", [(bare[t], unit("decoy " + t).tobytes()) for t in texts])
    assert s.model_coverage("m2") == (0, 3) and s.switch_model("m2") is None
    s.cache_vectors("m2", [(key[t], unit("m2 " + e).tobytes()) for t, e in inputs.items()])
    assert s.model_missing("m2", 10) == [] and s.switch_model("m2") == 3
    for t, e in inputs.items():
        ranked = s.vector(unit("m2 " + e), ALICE, 1)
        assert s.hits([(r, sc, None, None) for r, sc in ranked])[0].text == t
        assert ranked[0][1] == pytest.approx(1.0, abs=1e-5)
    sink = SQLiteStore(tmp_path / "sink.db")  # replication carries them
    sink.replicate(s.export_docs(["d1"]))
    assert [(c["context"], c["embed_hash"]) for c in sink.export_docs(["d1"])["d1"]["chunks"]] == \
        [(ctx, key[t]) for t in texts]
    # a row whose key is not the hash of its context and text (not written by apply) is refused by name
    s.db.execute("UPDATE chunks SET embed_hash='bogus' WHERE text='no heading here'")
    with pytest.raises(ValueError, match="embed_hash 'bogus' is not the hash of its section context and text"):
        s.model_missing("m3", 10)


# -- QualityLog, OperationsLog: quality over time, traces --------------------------------------------
def test_quality_snapshots_and_alerts_per_source(any_store):
    from ingest.obs import quality

    s = any_store
    day = quality.DAY
    now = 1_700_000_000.0
    for i in range(4):
        s.apply(doc(f"d{i}", quality={"ocr_confidence": 90.0, "bad_char_ratio": 0.01}), chunks(f"d{i}", [f"t{i}"]))
    for back in (3, 2, 1):
        quality.snapshot(s, now - back * day)
    g = quality.snapshot(s, now)["folder:/r"]
    assert g == {"documents": 4, "share_empty": 0.0, "share_flagged": 0.0, "share_quarantined": 0.0,
                 "ocr_confidence": 90.0, "garbage_ratio": pytest.approx(0.01)}
    assert quality.evaluate(s, {}, now) == []
    for i in range(2):  # half the source degrades today
        s.apply(doc(f"d{i}", flags=["quality:garbage"], quality={"ocr_confidence": 30.0, "bad_char_ratio": 0.3}),
                chunks(f"d{i}", [f"t{i}"]))
    s.record_failure(doc("d9", status="quarantined", error_code="empty-file"))
    alerts = quality.refresh(s, {}, now + 60)
    assert {a["measure"] for a in alerts} == {"share-flagged", "ocr-confidence", "garbage-ratio",
                                              "share-empty", "share-quarantined"}
    hist = quality.history(s, "folder:/r")["folder:/r"]
    assert len(hist) == 4 and hist[-1]["documents"] == 5 and hist[-1]["share_flagged"] == pytest.approx(0.4)
    assert quality.evaluate(s, {}, now + 120) == alerts  # held alerts are kept, not raised again
    for i in range(2):
        s.apply(doc(f"d{i}", quality={"ocr_confidence": 90.0, "bad_char_ratio": 0.01}), chunks(f"d{i}", [f"t{i}"]))
    s.delete("d9")
    assert quality.refresh(s, {}, now + 180) == []  # all cleared


def test_outcome_traces_and_document_counts(any_store):
    from ingest.obs.trace import doc_trip

    s = any_store
    s.apply(doc("d1"), chunks("d1", ["one"]))
    s.record_failure(doc("d2", status="error", error_code="timeout", error="timeout after 120 s"))
    s.log_outcome(action="error", source="folder:/r", external_id="d1.txt", doc_id=None, detail="first try")
    s.log_outcome(action="indexed", source="folder:/r", external_id="d1.txt", doc_id="d1", parsed=1, embedded=1,
                  trace={"stages": {"extract": 0.25}, "changed_at": 5.0, "lane": "bulk"})
    s.log_outcome(action="error", source="folder:/r", external_id="d2.txt", doc_id="d2", detail="timeout")
    trip = doc_trip(s, "file:///r/d1.txt")
    assert trip["document"]["doc_id"] == "d1"
    assert [(st["action"], st.get("lane")) for st in trip["steps"]] == [("error", None), ("indexed", "bulk")]
    assert trip["steps"][1]["stages"] == {"extract": 0.25}
    rows = s.outcomes_after(0)
    assert [r["action"] for r in rows] == ["error", "indexed", "error"]
    assert s.outcomes_after(rows[1]["id"])[0]["action"] == "error"
    (last,) = s.last_indexed_outcomes()
    assert last["source"] == "folder:/r" and json.loads(last["trace"])["changed_at"] == 5.0
    assert s.doc_counts() == [("folder:/r", "error", 1), ("folder:/r", "indexed", 1)]
    assert [(r["uri"], r["error_code"]) for r in s.not_indexed()] == [("file:///r/d2.txt", "timeout")]


# -- Registry + OperationsLog: source versions and dead letters -----------------------------------------------
def test_source_versions_never_go_back_and_dead_letters_requeue(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["one"]))
    assert s.get_doc("folder:/r", "d1.txt")["source_seq"] is None
    s.set_source_seq("d1", 20)
    s.set_source_seq("d1", 10)  # a late task cannot lower it
    s.apply(doc("d1", version="v2"), chunks("d1", ["two"]))  # a re-index keeps it
    assert s.get_doc_by_id("d1")["source_seq"] == 20 and s.get_doc("folder:/r", "d1.txt")["source_seq"] == 20
    a = s.add_dead_letter(task="ingest.change", lane="bulk", args=["s", "upsert"], kwargs={"version": 3},
                          fault="permanent", reason="ValueError: bad", attempts=1)
    b = s.add_dead_letter(task="ingest.change", lane=None, args=[], kwargs={}, fault="transient",
                          reason="retries exhausted", attempts=5)
    assert b > a
    assert [(d["id"], d["args"], d["kwargs"], d["lane"]) for d in s.dead_letters()] == [
        (a, ["s", "upsert"], {"version": 3}, "bulk"), (b, [], {}, None)]
    assert [d["id"] for d in s.dead_letters([b])] == [b] and s.dead_letters([]) == []
    s.mark_requeued(a)
    assert [d["id"] for d in s.dead_letters()] == [b]
    assert s.dead_letters([a], include_requeued=True)[0]["requeued_at"] > 0


# -- ChunkIndex: rows to documents, highlights, neighbouring chunks ------------------------------
def test_chunk_index_maps_rows_highlights_terms_and_adds_neighbours(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["alpha intro", "the budget report", "closing words"]))
    s.apply(doc("d2", acl=ACL(frozenset({"user:posix:1002"}))), chunks("d2", ["another budget line"]))
    ranked = s.bm25("budget", ALICE, 10)
    assert len(ranked) == 1  # d2 is not readable by alice
    rowid = ranked[0][0]
    assert s.doc_ids([rowid]) == {rowid: "d1"}
    (hit,) = s.hits([(rowid, 1.0, 1, None)])
    assert hit.text == "the budget report" and hit.doc_id == "d1"
    spans = s.highlights("budget", [rowid])
    assert [hit.text[a:b] for a, b in spans[hit.chunk_id]] == ["budget"]
    s.neighbours([hit], 1, ALICE)
    assert (hit.context_before, hit.context_after) == (["alpha intro"], ["closing words"])
    bob_hits = s.hits([(r, sc, None, None) for r, sc in s.bm25("budget", BOB, 10)])
    s.neighbours(bob_hits, 2, ALICE)  # alice may not read d2: no context from it
    assert all(h.context_before == h.context_after == [] for h in bob_hits if h.doc_id == "d2")


# -- Lifecycle: one committed state per snapshot -------------------------------------------------
def test_read_snapshot_sees_one_committed_state(any_store):
    s = any_store
    s.apply(doc("d1"), chunks("d1", ["one"]))
    other = s.reopen()
    try:
        with s.read_snapshot() as db:
            before = db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()["n"]
            other.apply(doc("d2"), chunks("d2", ["two", "three"]))
            assert db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()["n"] == before == 1
        assert n_chunks(s) == 3
    finally:
        other.close()


# -- Entities: facets over readable chunks, the entity cache --------------------------------------
def test_entity_facets_count_only_readable_chunks_and_the_entity_cache(any_store):
    s = any_store
    c1 = chunks("d1", ["Acme met Globex", "Acme again"])
    c1[0].entities = {"ORG:acme": ["Acme", 1], "ORG:globex": ["Globex", 1]}
    c1[1].entities = {"ORG:acme": ["Acme", 2]}
    s.apply(doc("d1"), c1)
    c2 = chunks("d2", ["Initech secret"])
    c2[0].entities = {"ORG:initech": ["Initech", 5]}
    s.apply(doc("d2", acl=ACL(frozenset({"user:posix:1002"}))), c2)
    got = s.facets("org", ALICE, k=10)
    assert [(f["name"], f["count"], f["chunks"], f["docs"]) for f in got] == [("ORG:Acme", 3, 2, 1),
                                                                            ("ORG:Globex", 1, 1, 1)]
    assert [f["name"] for f in s.facets("ORG", BOB, k=1)] == ["ORG:Initech"]
    assert s.facets("ORG", frozenset()) == []
    with pytest.raises(ValueError, match="entity type"):
        s.facets("ORG:x", ALICE)
    s.cache_entities("ner-1", [("h1", {"ORG:acme": ["Acme", 1]})])
    s.cache_entities("ner-1", [("h1", {"ORG:other": ["Other", 1]})])  # first write wins
    assert s.cached_entities("ner-1", ["h1", "h2"]) == {"h1": {"ORG:acme": ["Acme", 1]}}
    assert s.cached_entities("ner-2", ["h1"]) == {}


def test_entities_owed_are_claimed_for_a_lease_and_settled_with_the_chunk(any_store):
    """Chunks applied with ``entities=None`` are owed: claimed oldest first for a lease (a second
    claimer never gets the same rows until it runs out), settled with the chunk in one transaction,
    dropped when their chunk is replaced; they count in no facet until then."""
    s = any_store
    c1 = chunks("d1", ["Acme met Globex", "Acme again", "nothing here"])
    for c in c1:
        c.entities = None
    s.apply(doc("d1"), c1)
    assert s.entities_owed() == 3 and s.facets("ORG", ALICE) == []
    a, na = s.claim_entities(2, lease_s=600)
    b, nb = s.claim_entities(10, lease_s=600)
    assert (na, nb) == (2, 1) and {x[0] for x in a + b} == {c.chunk_id for c in c1}
    assert {(cid, h, t) for cid, h, t in a + b} == {(c.chunk_id, c.text_hash, c.text) for c in c1}
    assert s.claim_entities(10, lease_s=600) == ([], 0)  # all held
    assert len(s.claim_entities(10, lease_s=0)[0]) == 3  # the lease ran out: taken again
    head = s.outbox_head()
    assert s.set_entities([(c1[0].chunk_id, {"ORG:acme": ["Acme", 1]}), (c1[1].chunk_id, {"ORG:acme": ["Acme", 2]})]) == 2
    assert s.entities_owed() == 1 and s.outbox_head() > head  # the sinks hear of it
    assert [(f["name"], f["count"]) for f in s.facets("ORG", ALICE)] == [("ORG:Acme", 3)]
    assert s.set_entities([(c1[0].chunk_id, {"ORG:x": ["X", 1]})]) == 0  # settled already: not written again
    s.apply(doc("d1", version="v2"), chunks("d1", ["Acme replaced it"]))  # entities {}: nothing owed
    assert s.entities_owed() == 0
    assert s.set_entities([(c1[2].chunk_id, {"ORG:x": ["X", 1]})]) == 0  # its chunk is gone
    c3 = chunks("d3", ["late one"])
    c3[0].entities = None
    s.apply(doc("d3"), c3)
    s.delete("d3")
    assert s.claim_entities(10, lease_s=600) == ([], 1) and s.entities_owed() == 0  # a deleted chunk's row goes


# -- AuditLog: checkpoint into the anchor ----------------------------------------------------------
def test_audit_checkpoint_appends_the_head_to_the_anchor(any_store, tmp_path, monkeypatch):
    from ingest.stores.lineage_sql import ANCHOR_ENV

    s = any_store
    monkeypatch.delenv(ANCHOR_ENV, raising=False)
    s._anchor_file = None
    with pytest.raises(ValueError, match="no audit anchor configured"):
        s.audit_checkpoint()
    anchor = tmp_path / "anchor.jsonl"
    s._anchor_file = str(anchor)
    assert s.audit_checkpoint() == {"anchor": str(anchor), "id": None}
    rid = s.audit("alice", "q", None, [])
    assert s.audit_checkpoint() == {"anchor": str(anchor), "id": rid}
    assert json.loads(anchor.read_text().splitlines()[-1])["id"] == rid
    assert s.audit_verify()["ok"]


# -- Outbox: sink cursors, errors and lag -----------------------------------------------------------
def test_sink_cursors_errors_and_lag(any_store):
    s = any_store
    assert s.sink_cursor("replica") is None and s.sink_lag() == []
    s.apply(doc("d1"), chunks("d1", ["one"]))
    s.set_sink_cursor("replica", "postgresql://u:secret@db/x", -1)
    (lag,) = s.sink_lag()
    assert lag["snapshot_pending"] and lag["lag_rows"] == 1 and "secret" not in lag["url"]
    s.sink_error("replica", "postgresql://u:secret@db/x", "connection refused")
    assert s.sink_lag()[0]["last_error"] == "connection refused" and s.sink_cursor("replica") == -1
    s.set_sink_cursor("replica", "postgresql://u:secret@db/x", s.outbox_head())
    (lag,) = s.sink_lag()
    assert (lag["lag_rows"], lag["lag_seconds"], lag["last_error"], lag["snapshot_pending"]) == (0, 0.0, None, False)
    assert s.sink_cursor("replica") == s.outbox_head()


# -- OperationsLog: how each document of a batch ended, one document's outcomes ---------------------
def test_batch_ends_and_doc_outcomes(any_store):
    s = any_store
    s.apply(doc("ok"), chunks("ok", ["fine"]))
    s.apply(doc("fl", flags=["quality:garbage"]), chunks("fl", ["garbled"]))
    s.record_failure(doc("qu", status="quarantined", error_code="corrupt"))
    for ext, action, detail in [("ok.txt", "error", "first try"), ("ok.txt", "indexed", None),
                                ("fl.txt", "indexed", None), ("qu.txt", "error", "corrupt"),
                                ("gone.txt", "dead-letter", "retries exhausted"), ("same.txt", "skipped", None)]:
        s.log_outcome(action=action, source="folder:/r", external_id=ext, doc_id=None, batch="b", detail=detail)
    ends = s.batch_ends("b")
    assert ends == {"indexed": [("ok.txt", None)], "flagged": [("fl.txt", None)],
                    "quarantined": [("qu.txt", "corrupt")], "failed": [],
                    "dead-lettered": [("gone.txt", "retries exhausted")], "unchanged": [("same.txt", None)]}
    assert [r["action"] for r in s.doc_outcomes("ok", "folder:/r", "ok.txt")] == ["error", "indexed"]


# -- QualityLog: gauges, snapshots, alerts (direct; ingest.obs.quality builds on these) -------------
def test_quality_log_gauges_snapshots_and_alerts(any_store):
    s = any_store
    s.apply(doc("d1", quality={"ocr_confidence": 80.0, "bad_char_ratio": 0.1}), chunks("d1", ["one"]))
    s.record_failure(doc("d2", status="quarantined", error_code="no-text"))
    g = s.quality_gauges()["folder:/r"]
    assert g["documents"] == 2 and g["share_empty"] == 0.5 and g["share_quarantined"] == 0.5
    assert g["ocr_confidence"] == 80.0
    s.save_quality_snapshot("2026-01-01", 1.0, {"folder:/r": g})
    s.save_quality_snapshot("2026-01-01", 2.0, {"folder:/r": g})  # rewritten, not doubled
    assert [(r["period"], r["ts"]) for r in s.quality_snapshots("folder:/r")] == [("2026-01-01", 2.0)]
    assert s.quality_snapshots("other") == []
    alert = {"baseline": 0.0, "value": 0.5, "since": "2026-01-01", "message": "half empty"}
    raised, cleared = s.sync_quality_alerts({("folder:/r", "share-empty"): alert}, 10.0)
    assert (raised, cleared) == ([alert], [])
    assert s.sync_quality_alerts({("folder:/r", "share-empty"): {**alert, "value": 0.6}}, 11.0) == ([], [])
    assert [(a["measure"], a["value"]) for a in s.open_quality_alerts()] == [("share-empty", 0.6)]
    assert s.sync_quality_alerts({}, 12.0) == ([], [("folder:/r", "share-empty")])
    assert s.open_quality_alerts() == []


# -- every protocol has its share of this suite ----------------------------------------------------
def test_every_protocol_method_is_called_by_this_suite():
    """Each method of each store protocol (ingest.stores.base) is called directly by a test here."""
    import re
    from pathlib import Path

    from ingest.stores.base import PROTOCOLS, members

    src = Path(__file__).read_text()
    missing = {p.__name__: sorted(m for m in members(p) if not re.search(rf"\.{m}\b", src)) for p in PROTOCOLS}
    assert {k: v for k, v in missing.items() if v} == {}

"""The store contract, one suite, run unchanged against every store: the embedded SQLite
store and the PostgreSQL store (a real server, see tests/servers.py).

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
from ingest.stores.base import ChunkRecord, DocRecord

DIM = 384
ALICE = frozenset({EVERYONE, "user:posix:1001", "group:posix:100"})
BOB = frozenset({EVERYONE, "user:posix:1002", "group:posix:200"})


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


def unit(seed: str, near: np.ndarray | None = None, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    v = rng.standard_normal(DIM).astype(np.float32)
    if near is not None:
        v = near + noise * v / np.linalg.norm(v)
    return (v / np.linalg.norm(v)).astype(np.float32)


def doc(doc_id, ext=None, acl=ACL(frozenset({EVERYONE})), parent=None, version="v1", **kw) -> DocRecord:
    ext = ext or f"{doc_id}.txt"
    return DocRecord(doc_id=doc_id, source="folder:/r", external_id=ext, uri=f"file:///r/{ext}", mime="text/plain",
                     size=10, mtime_ns=1, content_version=version, acl=acl, parent_id=parent, extractor="text",
                     extractor_version="1", **kw)


def chunks(doc_id, texts, vecs=None) -> list[ChunkRecord]:
    from ingest.chunking import chunk_id

    out = []
    for i, t in enumerate(texts):
        h = hashlib.sha256(t.encode()).hexdigest()
        v = vecs[i] if vecs is not None else unit(t)
        out.append(ChunkRecord(chunk_id(doc_id, i, h), i, t, h, len(t.split()), 1, "Intro", v.tobytes(), "c1", "m"))
    return out


def readable_ids(store, tokens, k, mode, query="report", qvec=None):
    if mode == "bm25":
        ranked = store.bm25(query, tokens, k)
    else:
        ranked = store.vector(qvec if qvec is not None else unit("query"), tokens, k)
    return [h.doc_id for h in store.hits([(r, s, None, None) for r, s in ranked])]


def n_chunks(store) -> int:
    return store.status()["chunks"]


# -- apply ---------------------------------------------------------------------------
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
    from ingest.pipeline import new_doc_id
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


# -- ACL ---------------------------------------------------------------------------
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
    assert s.readable_doc_count(ALICE) == 1 and s.readable_doc_count(carol) == 2


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


# -- children, move, delete ----------------------------------------------------------
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


def test_move_over_a_failed_document_replaces_it(any_store):
    s = any_store
    s.apply(doc("a", "a.txt"), chunks("a", ["text of a"]))
    s.record_failure(doc("b", "b.txt", status="error", error_code="corrupt", error="x"))
    s.move("a", "b.txt", "file:///r/b.txt")
    assert s.all_doc_ids() == ["a"]
    assert s.get_doc("folder:/r", "b.txt")["doc_id"] == "a"


# -- cache, outcomes, status, audit ----------------------------------------------------
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
    assert s.batch_outcomes("b1") == {"indexed": 3, "error": 1}
    assert s.counters() == {"parsed": 3, "embedded": 4, "last_id": s.counters()["last_id"]}
    st = s.status()
    assert (st["documents"], st["chunks"], st["by_status"]) == (3, 3, {"indexed": 2, "error": 1})
    assert st["by_reason"]["folder:/r"] == {"error:timeout": 1, "flagged:quality:low-chars": 1}
    assert [f["flags"] for f in st["flagged"]] == [["quality:low-chars"]]


def test_search_through_the_index_is_audited(any_store):
    from ingest.search import Index

    any_store.apply(doc("d1"), chunks("d1", ["the quarterly revenue report"]))
    idx = Index(any_store)
    hits = idx.search("quarterly revenue", principal="everyone", k=5, mode="bm25")
    assert [h.doc_id for h in hits] == ["d1"] and hits[0].bm25_rank == 1
    idx.search("revenue", principal="everyone", k=5, mode="bm25")
    rows = any_store.db.execute("SELECT principal, query, results, prev_hash, hash FROM audit ORDER BY id").fetchall()
    assert [r["query"] for r in rows] == ["quarterly revenue", "revenue"]
    assert rows[1]["prev_hash"] == rows[0]["hash"] != ""
    assert json.loads(rows[0]["results"])[0][0] == hits[0].chunk_id


# -- outbox ----------------------------------------------------------------------------
def test_every_change_writes_an_outbox_row_in_its_transaction(any_store):
    s = any_store
    s.apply(doc("p", "a.zip"), chunks("p", ["parent"]))
    s.apply(doc("c", "a.zip!x.txt", parent="p"), chunks("c", ["child"]))
    s.set_acl("p", ACL(frozenset({"user:posix:1"})))
    s.touch("p", 5, 6)
    s.move("p", "b.zip", "file:///r/b.zip")
    s.delete("p")
    rows = [d for _, d in s.outbox_rows(0, 100)]
    assert rows == ["p", "c", "p", "c", "p", "p", "c", "p", "c"]
    bad = chunks("q", ["x", "y"])
    bad[1].chunk_id = bad[0].chunk_id
    with pytest.raises(Exception):
        s.apply(doc("q"), bad)
    assert len(s.outbox_rows(0, 100)) == 9  # a rolled-back change leaves no row
    head = s.outbox_head()
    assert head == s.outbox_rows(0, 100)[-1][0]
    assert s.prune_outbox() == 9 and s.outbox_rows(0, 100) == []  # no sink registered: all of it
    s.apply(doc("r"), chunks("r", ["after pruning"]))
    assert s.outbox_rows(0, 100)[0][0] > head  # ids are never reused: sink cursors point into them


# -- schema and locks ------------------------------------------------------------------
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

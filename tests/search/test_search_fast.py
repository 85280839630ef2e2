"""The fast retrieval paths give the results of the plain ones.

SQLite: BM25 from per-word scored postings plus the cached readable-row mask must equal the
single FTS5 ``OR`` query joined to ``chunks`` (the SQL it replaced), scores included; the
bfloat16 vector pre-scoring with exact re-scoring must find the exact top-k; both caches
follow writes (new text, deletes, ACL changes). PostgreSQL: the document-frequency cache of
the ``max_df`` cut-off follows every write of chunk text, COPY included.
"""
from __future__ import annotations

import random

import numpy as np
import pytest

from acl.model import ACL, EVERYONE
from tests.support.store_data import ALICE, BOB, DIM, chunks, doc, unit

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         "quebec romeo sierra tango protein proteins expression cells cell").split()
GROUPS = ["group:posix:100", "group:posix:200", "group:posix:300", "user:posix:1001", "user:posix:1002"]


def random_acl(rnd: random.Random) -> ACL:
    allow = set(rnd.sample(GROUPS + [EVERYONE], rnd.randint(1, 3)))
    deny = set(rnd.sample(GROUPS, rnd.randint(0, 1)))
    return ACL(frozenset(allow), frozenset(deny))


def fill(store, n_docs: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    for d in range(n_docs):
        texts = [" ".join(rnd.choices(WORDS, k=rnd.randint(3, 12))) for _ in range(rnd.randint(1, 3))]
        r = doc(f"d{d:04d}", acl=random_acl(rnd))
        r.mime = "application/pdf" if d % 3 == 0 else "text/plain"
        store.apply(r, chunks(f"d{d:04d}", texts))


def sql_bm25(store, query, tokens, limit, filters=None, max_df=None):
    """The SQL the fast path replaced: one FTS5 OR query, the ACL and filters joined in."""
    from ingest.stores.filters import Filters, sqlite_where
    from ingest.stores.sqlite import fts_query

    if max_df is not None:
        query = store._common_terms_dropped(query, max_df)
    fq = fts_query(query)
    if not fq:
        return []
    rsql, rargs = store._readable_sql(tokens)
    fsql, fargs = sqlite_where(filters or Filters())
    return [(r[0], -r[1]) for r in store.db.execute(
        "SELECT f.rowid, bm25(chunks_fts, 1.0, 0.5) AS s FROM chunks_fts f JOIN chunks c ON c.rowid=f.rowid"
        f" JOIN documents d ON d.doc_id=c.doc_id WHERE chunks_fts MATCH ? AND c.doc_id IN ({rsql}) AND {fsql}"
        " ORDER BY s LIMIT ?", (fq, *rargs, *fargs, limit)).fetchall()]


def same_ranking(fast, plain):
    """Equal scores position by position (as doubles), and the same rows above the last score
    (rows tied with the last one may be any of the tied ones)."""
    assert [s for _, s in fast] == [s for _, s in plain]
    if plain:
        last = plain[-1][1]
        assert {r for r, s in fast if s != last} == {r for r, s in plain if s != last}


@pytest.fixture
def sqlite_store(tmp_path):
    from ingest.stores.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "index.db")
    yield s
    s.close()


def test_sqlite_bm25_equals_the_single_fts5_query(sqlite_store):
    from ingest.stores.filters import normalise

    s = sqlite_store
    fill(s, 150)
    principals = [ALICE, BOB, frozenset({"group:posix:300"}), frozenset({EVERYONE})]
    rnd = random.Random(3)
    checked = nonempty = 0
    for _ in range(60):
        q = " ".join(rnd.sample(WORDS, rnd.randint(1, 4)))
        tokens = rnd.choice(principals)
        limit = rnd.choice([1, 5, 20, 200])
        f = normalise(rnd.choice([None, {"mime": "application/pdf"}, {"doc_ids": ["d0001", "d0002", "d0040"]}]))
        max_df = rnd.choice([None, 0.1, 0.5])
        fast = s.bm25(q, tokens, limit, filters=f, max_df=max_df)
        same_ranking(fast, sql_bm25(s, q, tokens, limit, f, max_df))
        checked += 1
        nonempty += bool(fast)
    assert checked == 60 and nonempty >= 40


def test_sqlite_word_scores_are_fts5s_own_doubles(sqlite_store):
    """Each word's scores computed from the instance list equal FTS5's ``bm25()`` for that word
    bit for bit: section-column hits (weight 0.5), stems, rows of 128+ tokens (multi-byte
    docsize varints), words the tokenizer splits (scored by FTS5 itself), after deletes."""
    from dataclasses import replace

    s = sqlite_store
    rnd = random.Random(11)
    for d in range(60):
        texts = [" ".join(rnd.choices(WORDS + ["café", "naïve", "foo_bar"], k=rnd.randint(2, 14)))
                 for _ in range(rnd.randint(1, 3))]
        if d % 7 == 0:
            texts.append(" ".join(rnd.choices(WORDS, k=300)))  # docsize varint of two bytes
        cs = [replace(c, section=" ".join(rnd.choices(WORDS, k=rnd.randint(0, 3))) or "Intro") for c in chunks(f"w{d}", texts)]
        s.apply(doc(f"w{d}", acl=random_acl(rnd)), cs)
    for d in range(0, 60, 9):
        s.delete(f"w{d}")
    words = list(WORDS) + ["cafe", "café", "naïve", "foo_bar", "expressed", "zzz-not-there", "cells"]
    m = s._rowmap()
    fast = s._postings_many(m, words)
    assert m.bm25 is not None and int(m.bm25[0].max()) >= 300  # the long rows were read
    long_rows = multi = 0
    for w, (pos, score) in zip(words, fast):
        ref_pos, ref_score = s._match_scores(s.db, m, w)
        o, r = np.argsort(pos), np.argsort(ref_pos)
        assert np.array_equal(pos[o], ref_pos[r]), w
        assert np.array_equal(score[o], ref_score[r]), w  # the same doubles, not merely close
        long_rows += int((m.bm25[0][pos] >= 128).sum())
        multi += len(pos) if w == "foo_bar" else 0
    assert long_rows > 0 and multi > 0


def test_sqlite_bm25_only_returns_readable_rows_and_follows_writes(sqlite_store):
    s = sqlite_store
    s.apply(doc("a"), chunks("a", ["zebrafish regeneration study"]))
    s.apply(doc("b", acl=ACL(frozenset({EVERYONE}), frozenset({"user:posix:1002"}))),
            chunks("b", ["zebrafish fins"]))
    assert {h for h, _ in s.bm25("zebrafish", ALICE, 10)} == {r for r, _ in sql_bm25(s, "zebrafish", ALICE, 10)}
    assert len(s.bm25("zebrafish", ALICE, 10)) == 2
    assert len(s.bm25("zebrafish", BOB, 10)) == 1  # deny wins
    s.apply(doc("c"), chunks("c", ["zebrafish again"]))  # the cached postings of "zebrafish" are stale now
    assert len(s.bm25("zebrafish", ALICE, 10)) == 3
    s.set_acl("a", ACL(frozenset({"group:posix:200"})))  # the cached readable mask is stale now
    assert len(s.bm25("zebrafish", ALICE, 10)) == 2
    s.delete("c")
    assert len(s.bm25("zebrafish", ALICE, 10)) == 1
    assert s.bm25("zebrafish", frozenset(), 10) == [] and s.bm25("!!!", ALICE, 10) == []


def test_sqlite_bfloat16_prefilter_finds_the_exact_top_k(sqlite_store, monkeypatch):
    from ingest.stores import sqlite_search

    monkeypatch.setattr(sqlite_search, "PREFILTER_MIN", 500)
    s = sqlite_store
    rnd = np.random.default_rng(5)
    centres = [unit(f"topic{i}") for i in range(20)]
    for d in range(400):  # 1200 chunks: clustered vectors, close neighbours within a topic
        vecs = [unit(f"v{d}.{i}", near=centres[(d + i) % 20], noise=0.6) for i in range(3)]
        acl = ACL(frozenset({EVERYONE})) if d % 4 else ACL(frozenset({"group:posix:300"}))
        s.apply(doc(f"d{d:04d}", acl=acl), chunks(f"d{d:04d}", [f"text {d} {i}" for i in range(3)], vecs))
    m = s._vectors()
    assert m.mat16 is not None and len(m.rowids) == 1200
    for t in range(15):
        q = unit(f"q{t}", near=centres[t % 20], noise=float(rnd.uniform(0.3, 1.0)))
        for tokens in (ALICE, frozenset({"group:posix:300"})):
            fast = s.vector(q, tokens, 10)
            mat16, m.mat16 = m.mat16, None
            try:
                exact = s.vector(q, tokens, 10)
            finally:
                m.mat16 = mat16
            assert [r for r, _ in fast] == [r for r, _ in exact]
            assert np.allclose([x for _, x in fast], [x for _, x in exact], atol=1e-6)


def test_postgres_document_frequencies_follow_every_write(pg_store_url):
    from ingest.stores.postgres import PostgresStore

    s = PostgresStore(pg_store_url, dim=DIM)
    try:
        for i in range(20):
            s.apply(doc(f"d{i:02d}"), chunks(f"d{i:02d}", [f"protein sample {i}" + (" zebrafish" if i == 3 else "")]))
        assert s._doc_freqs(["zebrafish", "protein"]) == (20, {"zebrafish": 1, "protein": 20})
        ranked = s.bm25("zebrafish protein", ALICE, 5, max_df=0.1)  # protein (20/20) is dropped
        assert len(ranked) == 1
        for i in range(20, 24):  # zebrafish in 5 of 24 chunks now: over 10 %, so dropped too
            s.apply(doc(f"d{i:02d}"), chunks(f"d{i:02d}", [f"zebrafish tank {i}"]))
        assert s._doc_freqs(["zebrafish"]) == (24, {"zebrafish": 5})
        assert len(s.bm25("zebrafish protein", ALICE, 50, max_df=0.1)) == 24  # the two rarest stay: all match
        s.delete("d20")
        assert s._doc_freqs(["zebrafish"]) == (23, {"zebrafish": 4})
        s.db.execute("DELETE FROM chunks WHERE doc_id IN ('d21', 'd22')")  # any writer, not only the store
        assert s._doc_freqs(["zebrafish"]) == (21, {"zebrafish": 2})
    finally:
        s.close()


def test_postgres_acl_indexes_keep_no_pending_list(pg_store_url):
    """New ACL entries go straight into the GIN trees (no pending list that every search would
    scan until a VACUUM), on a new store and on one migrated from schema 7."""
    from ingest.stores.postgres import PostgresStore

    s = PostgresStore(pg_store_url, dim=DIM)
    try:
        s.db.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")

        def state():
            return {r["relname"]: (r["reloptions"], r["pending"]) for r in s.db.execute(
                "SELECT c.relname, c.reloptions, (pgstatginindex(c.oid)).pending_pages AS pending"
                " FROM pg_class c WHERE c.relname IN ('chunks_allow', 'documents_allow', 'chunks_tsv')")}

        for i in range(300):
            s.apply(doc(f"d{i:03d}", acl=ACL(frozenset({f"group:posix:{i % 7}", EVERYONE}))),
                    chunks(f"d{i:03d}", [f"protein sample {i}", f"cell line {i}"]))
        st = state()
        for ix in ("chunks_allow", "documents_allow"):
            assert st[ix] == (["fastupdate=off"], 0), st
        assert st["chunks_tsv"][1] > 0  # the full-text index does keep one: the check above can fail
        # a store made by schema 7: its ACL indexes had a pending list; migrating merges it
        for ix in ("chunks_allow", "documents_allow"):
            s.db.execute(f"ALTER INDEX {ix} RESET (fastupdate)")
        for i in range(300, 400):
            s.apply(doc(f"d{i:03d}", acl=ACL(frozenset({f"group:posix:{i % 7}"}))), chunks(f"d{i:03d}", [f"t {i}"]))
        assert state()["chunks_allow"][1] > 0
        s.db.execute("UPDATE meta SET value='7' WHERE key='schema_version'")
        s.migrate()
        st = state()
        for ix in ("chunks_allow", "documents_allow"):
            assert st[ix] == (["fastupdate=off"], 0), st
        assert len(s.bm25("protein", frozenset({"group:posix:3"}), 500)) == len([i for i in range(300) if i % 7 == 3])
    finally:
        s.close()

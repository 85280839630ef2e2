"""Search filters together with ACLs, in both retrievals, against an independent oracle.

The index is a real SQLite store filled with real embeddings (all-MiniLM-L6-v2). Every
document matches the query words, so what comes back is decided by the ACL and the
filters alone; the expected set is computed in Python from the documents' attributes,
not from SQL. A filter must never widen access: the results are exactly
``readable(principal) & matches(filter)``, and ``k`` results are ``k`` such results.
"""
import json
import random
from datetime import datetime, timezone

import pytest

from acl.model import ACL, Principal
from ingest.pipeline.chunking import chunk_id, text_hash
from ingest.search.index import Index, Ranking
from ingest.stores.base import ChunkRecord, DocRecord
from ingest.stores.filters import normalise

ALICE = Principal(user="1001", groups=("100",))        # in group 100 (team)
BOB = Principal(user="1002", groups=("200",))          # in group 200
NOBODY = None                                          # anonymous: "everyone" only
PRINCIPALS = {"alice": ALICE, "bob": BOB, "anon": NOBODY}
TOKENS = {"alice": ALICE.tokens(), "bob": BOB.tokens(), "anon": frozenset({"everyone"})}

ACLS = [
    ACL(frozenset({"user:posix:1001"})),                                    # alice only
    ACL(frozenset({"user:posix:1002"})),                                    # bob only
    ACL(frozenset({"everyone"})),                                           # anybody
    ACL(frozenset({"group:posix:100", "group:posix:200"})),                 # both groups
    ACL(frozenset({"everyone"}), frozenset({"user:posix:1001"})),           # all but alice (deny wins)
    ACL(frozenset(), frozenset()),                                          # nobody
]
SOURCES = ["folder:/srv/a", "folder:/srv/b", "dms:sharepoint"]
MIMES = ["application/pdf", "text/plain", "text/markdown", "image/png"]
LABELS = [[], ["pii:email"], ["secret"], ["pii:email", "secret"], ["public"]]
YEARS = [2019, 2021, 2023, 2025]
TOPICS = ["the budget review for the harbour project", "budget cuts in the research lab",
          "the annual budget of the city library", "a budget plan for the school canteen"]


def _mtime_ns(year: int) -> int:
    return int(datetime(year, 6, 1, tzinfo=timezone.utc).timestamp()) * 1_000_000_000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def corpus(request, tmp_path_factory, embedder):
    """The same corpus in each store: the filter contract is the stores' (ingest.stores.filters)."""
    rnd = random.Random(7)
    if request.param == "sqlite":
        from ingest.stores.sqlite import SQLiteStore

        store = SQLiteStore(tmp_path_factory.mktemp("filters") / "index.db")
    else:
        import uuid

        from ingest.stores.postgres import PostgresStore

        server = request.getfixturevalue("postgres_server")
        name = "filters_" + uuid.uuid4().hex[:12]
        store = PostgresStore(server.create_db(name))
        request.addfinalizer(lambda: server.drop_db(name))
    docs = []
    for i in range(48):
        src = SOURCES[i % 3]
        folder = "x" if i % 2 else "y"
        uri = (f"file:///srv/{src[-1]}/{folder}/doc{i}.txt" if src.startswith("folder:")
               else f"https://dms.example/sites/{folder}/doc{i}")
        d = {"doc_id": f"d{i:02d}", "source": src, "uri": uri, "mime": MIMES[(i // 3) % 4],
             "labels": LABELS[(i // 2) % 5], "mtime_ns": _mtime_ns(YEARS[(i // 5) % 4]),
             "acl": ACLS[i % 6], "flags": ["quality:low-text"] if i % 7 == 0 else []}
        texts = [f"Document {i}: {TOPICS[i % 4]}. Paragraph {j} about the budget." for j in range(1 + i % 3)]
        vecs = embedder.encode(texts)
        rec = DocRecord(doc_id=d["doc_id"], source=src, external_id=f"doc{i}", uri=uri, mime=d["mime"], size=100,
                        mtime_ns=d["mtime_ns"], content_version=f"v{i}", acl=d["acl"], labels=d["labels"],
                        flags=d["flags"])
        chunks = [ChunkRecord(chunk_id(rec.doc_id, j, text_hash(t)), j, t, text_hash(t), 20, None, "Budget", vecs[j].tobytes(),
                              "test", embedder.model_id) for j, t in enumerate(texts)]
        store.apply(rec, chunks)
        d["n_chunks"] = len(texts)
        docs.append(d)
    rnd.shuffle(docs)
    yield store, docs
    store.close()


def _readable(d, who) -> bool:
    return d["acl"].permits(TOKENS[who])


def _labels(d) -> set:
    return set(d["labels"]) | {f"flag:{f}" for f in d["flags"]}


def _ns(v) -> int:
    return normalise({"modified_after": v}).modified_after_ns


def _matches(d, f: dict) -> bool:
    def many(v):
        return [v] if isinstance(v, str) else list(v)

    for key, v in f.items():
        if key == "source" and d["source"] not in many(v):
            return False
        if key == "uri_prefix" and not any(d["uri"].startswith(p) for p in many(v)):
            return False
        if key == "path_prefix" and not any(d["uri"].startswith("file://" + p) for p in many(v)):
            return False
        if key == "mime" and not any(d["mime"] == m or (m.endswith("/*") and d["mime"].startswith(m[:-1]))
                                     for m in many(v)):
            return False
        if key == "labels" and not set(many(v)) <= _labels(d):
            return False
        if key == "labels_any" and not set(many(v)) & _labels(d):
            return False
        if key == "exclude_labels" and set(many(v)) & _labels(d):
            return False
        if key == "doc_ids" and d["doc_id"] not in many(v):
            return False
        if key == "modified_after" and not d["mtime_ns"] >= _ns(v):
            return False
        if key == "modified_before" and not d["mtime_ns"] < _ns(v):
            return False
    return True


FILTERS = [
    {},
    {"source": "folder:/srv/a"},
    {"source": ["folder:/srv/b", "dms:sharepoint"]},
    {"uri_prefix": "file:///srv/a/x/"},
    {"uri_prefix": ["https://dms.example/sites/y/", "file:///srv/b/"]},
    {"path_prefix": "/srv/a/y/"},
    {"mime": "application/pdf"},
    {"mime": ["text/*"]},
    {"labels": "pii:email"},
    {"labels": ["pii:email", "secret"]},
    {"labels_any": ["secret", "public"]},
    {"exclude_labels": ["pii:email"]},
    {"exclude_labels": "flag:quality:low-text"},
    {"modified_after": "2021-01-01"},
    {"modified_before": datetime(2023, 1, 1, tzinfo=timezone.utc)},
    {"modified_after": datetime(2020, 1, 1).timestamp(), "modified_before": "2024-01-01T00:00:00Z"},
    {"doc_ids": ["d00", "d01", "d02", "d03", "d04", "d05", "d12"]},
    {"source": "folder:/srv/a", "mime": "text/*", "exclude_labels": "secret", "modified_after": "2020-01-01"},
]


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
@pytest.mark.parametrize("filt", FILTERS, ids=[json.dumps(f, default=str)[:60] for f in FILTERS])
def test_filter_with_acl_is_exactly_readable_and_matching(corpus, filt, mode):
    store, docs = corpus
    index = Index(store)
    for who, principal in PRINCIPALS.items():
        expect = {d["doc_id"] for d in docs if _readable(d, who) and _matches(d, filt)}
        hits = index.search("budget", principal=principal, k=200, filters=filt, mode=mode, audit=False)
        got = {h.doc_id for h in hits}
        assert got == expect, (who, filt, mode, sorted(got ^ expect))
        # and every chunk of those documents (no chunk lost, none extra)
        assert len(hits) == sum(d["n_chunks"] for d in docs if d["doc_id"] in expect)
        # never wider than the unfiltered, ACL-only result
        if filt:
            unfiltered = {h.doc_id for h in index.search("budget", principal=principal, k=200, mode=mode,
                                                         audit=False)}
            assert got <= unfiltered


@pytest.mark.parametrize("mode", ["hybrid", "bm25", "vector"])
def test_k_results_are_k_readable_matching_results(corpus, mode):
    """The filter and the ACL apply before ranking and limiting: asking for 3 gives 3."""
    store, docs = corpus
    index = Index(store)
    filt = {"labels": "secret", "mime": "text/*"}
    for who, principal in PRINCIPALS.items():
        expect = {d["doc_id"] for d in docs if _readable(d, who) and _matches(d, filt)}
        n_chunks = sum(d["n_chunks"] for d in docs if d["doc_id"] in expect)
        hits = index.search("budget", principal=principal, k=3, filters=filt, mode=mode, audit=False)
        assert len(hits) == min(3, n_chunks), who
        assert {h.doc_id for h in hits} <= expect


def test_filters_are_audited_and_neighbours_respect_acl_and_filters(corpus):
    store, docs = corpus
    index = Index(store)
    multi = [d for d in docs if d["n_chunks"] == 3 and _readable(d, "alice")]
    assert multi
    hits = index.search("Paragraph 1 about the budget", principal=ALICE, k=200, context=1,
                        filters={"doc_ids": [d["doc_id"] for d in multi]})
    middle = [h for h in hits if "Paragraph 1 " in h.text]
    assert middle
    for h in middle:
        assert len(h.context_before) == 1 and "Paragraph 0 " in h.context_before[0]
        assert len(h.context_after) == 1 and "Paragraph 2 " in h.context_after[0]
    row = store.db.execute("SELECT filters FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    assert json.loads(row["filters"]) == {"doc_ids": sorted(d["doc_id"] for d in multi)}
    # neighbours never come from a document the principal cannot read: bob's view of the
    # same query has no alice-only text, in hits or in their context
    for h in index.search("Paragraph 1 about the budget", principal=BOB, k=200, context=2, audit=False):
        doc = next(d for d in docs if d["doc_id"] == h.doc_id)
        assert _readable(doc, "bob")
        for t in h.context_before + h.context_after:
            assert t.startswith(f"Document {int(doc['doc_id'][1:])}:")


@pytest.mark.parametrize("bad, message", [
    ({"sources": "x"}, "unknown filter key"),
    ({"source": []}, "list is empty"),
    ({"source": 3}, "expected a string or a list"),
    ({"labels": ["ok", ""]}, "non-empty string"),
    ({"modified_after": "last tuesday"}, "not an ISO-8601"),
    ({"modified_after": True}, "got a bool"),
    ({"modified_after": "2024-01-01", "modified_before": "2023-01-01"}, "earlier than"),
    ({"path_prefix": "relative/dir"}, "not an absolute path"),
    ("source=x", "filters must be a dict"),
])
def test_bad_filters_are_rejected_with_a_clear_error(corpus, bad, message):
    store, _ = corpus
    with pytest.raises(ValueError, match=message):
        Index(store).search("budget", principal=ALICE, filters=bad)


def test_fusion_weights_from_config(corpus):
    store, _ = corpus
    bm25_only = Index(store, config={"search": {"vector_weight": 0, "bm25_weight": 1.0, "rrf_k": 5}})
    assert bm25_only.ranking == Ranking(vector_weight=0, bm25_weight=1.0, rrf_k=5)
    q = "harbour project budget"
    a = [h.chunk_id for h in bm25_only.search(q, principal=ALICE, k=10, audit=False)]
    b = [h.chunk_id for h in Index(store).search(q, principal=ALICE, k=10, mode="bm25", audit=False)]
    assert a == b
    with pytest.raises(ValueError, match="unknown key"):
        Index(store, config={"search": {"weight": 1}})
    with pytest.raises(ValueError, match="both be 0"):
        Ranking(bm25_weight=0, vector_weight=0)


def test_bm25_skips_words_common_to_most_chunks(corpus):
    """bm25_max_df: words (as stemmed by the index) in more than that share of chunks are left
    out of the BM25 query unless nothing would be left; the ACL still applies."""
    store, docs = corpus
    toks = ALICE.tokens()
    n = store.db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()["n"]
    if hasattr(store, "path"):  # SQLite: the FTS5 index
        sql = "SELECT COUNT(*) AS n FROM chunks_fts WHERE chunks_fts MATCH '\"' || ? || '\"'"
    else:  # PostgreSQL: the tsvector column
        sql = "SELECT COUNT(*) AS n FROM chunks WHERE tsv @@ plainto_tsquery('english', %s)"
    df = {w: store.db.execute(sql, (w,)).fetchone()["n"] for w in ("budget", "harbour")}
    assert df["budget"] == n and df["harbour"] < 0.3 * n
    pruned = store.bm25("Budgets for the harbour", toks, 500, max_df=0.3)
    assert pruned == store.bm25("harbour", toks, 500) and pruned
    assert len(store.bm25("Budgets for the harbour", toks, 500)) > len(pruned)  # unpruned: every chunk
    # all words common: the two rarest stay
    assert store.bm25("the budget", toks, 500, max_df=0.01) == store.bm25("the budget", toks, 500)
    readable = {d["doc_id"] for d in docs if _readable(d, "alice")}
    assert {store.doc_ids([r for r, _ in pruned])[r] for r, _ in pruned} <= readable
    with pytest.raises(ValueError, match="bm25_max_df"):
        Ranking(bm25_max_df=0)

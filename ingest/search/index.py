"""Permission-aware hybrid search: BM25 (FTS5) and vectors, fused by reciprocal rank.

The caller's principal is resolved to tokens at query time, and the store applies
the ACL and the filters (``ingest.stores.filters``) inside both retrievals, before
ranking and limiting: ``k`` results are ``k`` readable, matching results. Every
search writes an audit record.

Fusion is weighted reciprocal rank fusion; ``rrf_k`` and the two weights come from
the ``[search]`` table of the configuration (see :class:`Ranking`).
"""
from __future__ import annotations

from dataclasses import dataclass

from acl.model import Principal

from ingest import config as config_mod
from ingest.config import section
from ingest.search.access import default_directory
from ingest.search.query_cache import QueryCache
from ingest.stores import open_store
from ingest.stores.base import Hit
from ingest.stores.common import process_executor
from ingest.stores.filters import normalise, to_dict

RRF_K = 60


def rrf(lists: list[list[tuple]], weights: list[float] | None = None, k: int = RRF_K):
    """Reciprocal rank fusion: key -> (score, rank in each list or None), best first.
    Each list holds (key, score) pairs, best first."""
    weights = weights or [1.0] * len(lists)
    fused: dict = {}
    for li, (lst, w) in enumerate(zip(lists, weights)):
        for rank, (key, _) in enumerate(lst, 1):
            entry = fused.setdefault(key, [0.0] + [None] * len(lists))
            entry[0] += w / (k + rank)
            entry[1 + li] = rank
    return sorted(fused.items(), key=lambda kv: (-kv[1][0], kv[0]))


@dataclass(frozen=True)
class Ranking:
    """How the two retrievals are fused. From the config's ``[search]`` table::

        [search]
        rrf_k = 20                  # RRF constant: larger flattens the rank curve
        bm25_weight = 1.25
        vector_weight = 1.0
        depth = 50                  # candidates per retrieval (at least 4 x k; 8 x k grouped)
        query_cache = 1024          # query embeddings kept for repeated queries
        bm25_max_df = 0.1           # BM25 ignores query words in more than this share of chunks
                                    # (unless nothing is left); 1.0 keeps every word
    """

    # defaults: the best on BEIR SciFact *train* queries with bm25_max_df = 0.1 (bench/retrieval.py)
    rrf_k: int = 20
    bm25_weight: float = 1.25
    vector_weight: float = 1.0
    depth: int = 50
    query_cache: int = 1024
    bm25_max_df: float = 0.1

    def __post_init__(self):
        if not (isinstance(self.rrf_k, int) and self.rrf_k >= 0):
            raise ValueError(f"search.rrf_k must be an integer >= 0, got {self.rrf_k!r}")
        for name in ("bm25_weight", "vector_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"search.{name} must be a number >= 0, got {v!r}")
        if isinstance(self.bm25_max_df, bool) or not isinstance(self.bm25_max_df, (int, float)) \
                or not 0 < self.bm25_max_df <= 1:
            raise ValueError(f"search.bm25_max_df must be a number in (0, 1], got {self.bm25_max_df!r}")
        if self.bm25_weight == 0 and self.vector_weight == 0:
            raise ValueError("search: bm25_weight and vector_weight cannot both be 0")
        for name in ("depth", "query_cache"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (1 if name == "depth" else 0):
                raise ValueError(f"search.{name} must be a positive integer, got {v!r}")

    @classmethod
    def from_config(cls, cfg: dict | None) -> "Ranking":
        s = section(cfg or {}, "search")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(s) - known)
        if unknown:
            raise ValueError(f"config [search]: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**s)


def fuse(lists, weights, rrf_k: int, k: int, doc_of=None) -> list[tuple]:
    """The ``k`` best of the fused lists as (rowid, score, rank in each list...).

    With ``doc_of`` (rowids -> {rowid: doc_id}) documents are fused instead of chunks: each
    list is cut to its first (best) chunk per document, the documents are fused by RRF, and
    each document is represented by its best-ranked chunk in any list."""
    if doc_of is None:
        return [(rowid, e[0], *e[1:]) for rowid, e in rrf(lists, weights, rrf_k)[:k]]
    docs = doc_of({rowid for lst in lists for rowid, _ in lst})
    per_doc_lists, best_chunk = [], {}
    for lst in lists:
        seen, dl = set(), []
        for rank, (rowid, score) in enumerate(lst, 1):
            d = docs.get(rowid)
            if d is None or d in seen:  # deleted meanwhile, or not the document's best chunk here
                continue
            seen.add(d)
            dl.append((d, score))
            if d not in best_chunk or rank < best_chunk[d][0]:
                best_chunk[d] = (rank, rowid)
        per_doc_lists.append(dl)
    return [(best_chunk[d][1], e[0], *e[1:]) for d, e in rrf(per_doc_lists, weights, rrf_k)[:k]]


class Index:
    """An opened index: ``search`` is the one public query entry point."""

    def __init__(self, store, directory=None, *, ranking: Ranking | None = None, config: dict | None = None):
        self.store = store
        self.ranking = ranking or Ranking.from_config(config)
        self.query_cache = QueryCache(self.ranking.query_cache)
        self._directory = directory  # acl.directory.Directory; default: the [directory] config

    @property
    def directory(self):
        if self._directory is None:
            self._directory = default_directory(self.store)
        return self._directory

    def _qvec(self, query: str):
        return self.query_cache.get(self.store.model_id, query)

    def search(self, query: str, principal: "str | Principal | None" = None, k: int = 10,
               filters: dict | None = None, mode: str = "hybrid", audit: bool = True, *,
               group_by_doc: bool = False, context: int = 0, highlight: bool = True) -> list[Hit]:
        """The ``k`` best chunks ``principal`` may read that match ``filters``.

        group_by_doc: one hit per document (its best chunk), ``k`` documents.
        context:      also return up to this many neighbouring chunks before and after each
                      hit (``hit.context_before`` / ``hit.context_after``), from the same
                      document and under the same filters.
        highlight:    ``hit.highlights``: (start, end) character spans of the query's terms in
                      ``hit.text``, as the full-text index matched them (stemmed).
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search: the query is empty")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"search: k must be an integer of at least 1, got {k!r}")
        if mode not in ("hybrid", "bm25", "vector"):
            raise ValueError(f"search: mode must be hybrid, bm25 or vector, not {mode!r}")
        if isinstance(context, bool) or not isinstance(context, int) or not 0 <= context <= 10:
            raise ValueError(f"search: context must be an integer from 0 to 10, got {context!r}")
        f = normalise(filters)
        tokens = self.directory.resolve(principal)
        r = self.ranking
        depth = max(r.depth, k * (8 if group_by_doc else 4))
        with self.store.read_snapshot():  # one committed state: the active model and its vectors, never a mix
            lists, weights = [], []
            if mode == "hybrid":  # BM25 (SQLite) beside query embedding + vector scoring (torch/numpy):
                # both release the GIL, so on two cores the search costs the slower of the two
                pending = process_executor("bm25", 4).submit(self.store.bm25, query, tokens, depth, filters=f, max_df=r.bm25_max_df)
                vec = self.store.vector(self._qvec(query), tokens, depth, filters=f)
                lists, weights = [pending.result(), vec], [r.bm25_weight, r.vector_weight]
            elif mode == "bm25":
                lists, weights = [self.store.bm25(query, tokens, depth, filters=f, max_df=r.bm25_max_df)], [r.bm25_weight]
            else:
                lists, weights = [self.store.vector(self._qvec(query), tokens, depth, filters=f)], [r.vector_weight]
            scored = fuse(lists, weights, r.rrf_k, k, self.store.doc_ids if group_by_doc else None)
            if mode == "bm25":
                scored = [(rowid, s, br, None) for rowid, s, br in scored]
            elif mode == "vector":
                scored = [(rowid, s, None, vr) for rowid, s, vr in scored]
            hits = self.store.hits(scored)
        if highlight and hits:
            spans = self.store.highlights(query, [s[0] for s in scored])
            for h in hits:
                h.highlights = spans.get(h.chunk_id, [])
        if context and hits:
            self.store.neighbours(hits, context, tokens, f)
        if audit:
            who = principal if isinstance(principal, str) or principal is None else repr(principal)
            self.store.audit(str(who), query, to_dict(f) or None, [(h.chunk_id, h.doc_version) for h in hits])
        return hits

    def facets(self, entity_type: str, principal: "str | Principal | None" = None, filters: dict | None = None,
               k: int = 20, audit: bool = True) -> list[dict]:
        """The ``k`` most mentioned entities of one type (``ORG``, ``PERSON``, ``GPE`` ...) in the
        chunks ``principal`` may read that match ``filters``, most first:
        ``[{"name": "ORG:Globex", "key": "ORG:globex", "count": mentions, "chunks": n, "docs": n}]``.
        Counted inside the store's SQL over readable chunks only (like ``search``), so a count
        never reveals that a hidden document mentions a name."""
        f = normalise(filters)
        tokens = self.directory.resolve(principal)
        out = self.store.facets(entity_type, tokens, k=k, filters=f)
        if audit:
            who = principal if isinstance(principal, str) or principal is None else repr(principal)
            self.store.audit(str(who), f"facets:{entity_type.strip().upper()}", to_dict(f) or None, [])
        return out

    def status(self) -> dict:
        return self.store.status()


def open_index(path_or_url: str | None = None, config: "dict | str | None" = None, directory=None, *,
               model_id: str | None = None, primary: str | None = None):
    """Open the index at a store path or URL. Fusion settings come from ``config`` (a dict,
    or a config file path), else from the default configuration file when one exists.

    A vector-database sink URL (``qdrant://``, ``chroma://``, ``milvus://``, ...; see
    ``ingest.stores.sinks``) opens a :class:`~ingest.search.sink_index.SinkIndex`: vector search inside
    that store under its native ACL filter, principals resolved through ``directory`` (default:
    the ``[directory]`` config, with the synced groups of the ``primary`` store when given);
    ``model_id`` defaults to the primary's model, else the one model the sink holds."""
    from ingest.stores.sinks import is_vector_sink, open_sink

    cfg = config if isinstance(config, dict) else config_mod.load(config)
    if path_or_url is not None and is_vector_sink(str(path_or_url)):
        from ingest.search.sink_index import SinkIndex

        store = open_store(primary) if primary is not None else None
        if directory is None:
            directory = default_directory(store, cfg)
        return SinkIndex(open_sink(str(path_or_url)), directory,
                         model_id or (store.model_id if store is not None else None))
    return Index(open_store(path_or_url), config=cfg, directory=directory)

"""Permission-aware hybrid search: BM25 (FTS5) and vectors, fused by reciprocal rank.

The caller's principal is resolved to tokens at query time, and the store applies
the ACL inside both retrievals, before ranking and limiting: ``k`` results are
``k`` readable results. Every search writes an audit record.
"""
from __future__ import annotations

from contextlib import nullcontext
from functools import lru_cache

from acl.model import Principal

from .stores.base import Hit

RRF_K = 60


def rrf(lists: list[list[tuple[int, float]]], weights: list[float] | None = None, k: int = RRF_K):
    """Reciprocal rank fusion: rowid -> (score, rank in each list or None)."""
    weights = weights or [1.0] * len(lists)
    fused: dict[int, list] = {}
    for li, (lst, w) in enumerate(zip(lists, weights)):
        for rank, (rowid, _) in enumerate(lst, 1):
            entry = fused.setdefault(rowid, [0.0] + [None] * len(lists))
            entry[0] += w / (k + rank)
            entry[1 + li] = rank
    return sorted(fused.items(), key=lambda kv: (-kv[1][0], kv[0]))


class Index:
    """An opened index: ``search`` is the one public query entry point."""

    def __init__(self, store, directory=None):
        self.store = store
        self._directory = directory  # acl.directory.Directory; default: the [directory] config

    @property
    def directory(self):
        if self._directory is None:
            from .access import default_directory

            self._directory = default_directory(self.store)
        return self._directory

    @lru_cache(maxsize=512)
    def _qvec(self, model_id: str, query: str):
        from .embed import get_embedder

        return get_embedder(model_id).encode([query])[0]

    def search(self, query: str, principal: "str | Principal | None" = None, k: int = 10,
               filters: dict | None = None, mode: str = "hybrid", audit: bool = True) -> list[Hit]:
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search: the query is empty")
        if k < 1:
            raise ValueError(f"search: k must be at least 1, got {k}")
        if mode not in ("hybrid", "bm25", "vector"):
            raise ValueError(f"search: mode must be hybrid, bm25 or vector, not {mode!r}")
        if filters:
            raise ValueError("search: filters are not supported yet")
        tokens = self.directory.resolve(principal)
        depth = max(50, k * 4)
        snapshot = getattr(self.store, "read_snapshot", None) or nullcontext
        with snapshot():  # one committed state: the active model and its vectors, never a mix
            lists = []
            if mode in ("hybrid", "bm25"):
                lists.append(self.store.bm25(query, tokens, depth))
            if mode in ("hybrid", "vector"):
                lists.append(self.store.vector(self._qvec(self.store.model_id, query), tokens, depth))
            fused = rrf(lists)[:k]
            if mode == "hybrid":
                scored = [(rowid, e[0], e[1], e[2]) for rowid, e in fused]
            elif mode == "bm25":
                scored = [(rowid, e[0], e[1], None) for rowid, e in fused]
            else:
                scored = [(rowid, e[0], None, e[1]) for rowid, e in fused]
            hits = self.store.hits(scored)
        if audit:
            who = principal if isinstance(principal, str) or principal is None else repr(principal)
            self.store.audit(str(who), query, filters, [(h.chunk_id, h.doc_version) for h in hits])
        return hits

    def status(self) -> dict:
        return self.store.status()


def open_index(path_or_url: str | None = None, directory=None) -> Index:
    from .stores import open_store

    return Index(open_store(path_or_url), directory)

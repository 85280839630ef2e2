"""Document metadata and named entities in the stores (SQLite schema 9, PostgreSQL schema 10).

* ``documents.metadata``: JSON object (title, authors, created, modified, subject, keywords,
  language, pages; mail from/to/cc/message_id; archive members), from ``extractors.metadata``;
* ``chunks.entities``: JSON object ``{"TYPE:key": [display, count]}`` (``ingest.pipeline.nlp``);
* ``ent_cache``: entities by (model id, chunk text hash), like ``emb_cache`` for vectors.

Both columns are text holding JSON, as ``labels`` is, so the outbox carries them to every sink
unchanged (``DOC_COLS``/``CHUNK_COLS``). Facets (:class:`FacetsMixin`) count entities over the
chunks a principal may read, with the ACL and the filters inside the one SQL query.
"""
from __future__ import annotations

import json

from ingest.stores.common import SQLBase
from ingest.stores.filters import Filters

# one self-contained migration per store
SQLITE_NLP = [
    "ALTER TABLE documents ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE chunks ADD COLUMN entities TEXT NOT NULL DEFAULT '{}'",
    "CREATE TABLE IF NOT EXISTS ent_cache(model_id TEXT NOT NULL, text_hash TEXT NOT NULL, entities TEXT NOT NULL,"
    " PRIMARY KEY(model_id, text_hash)) WITHOUT ROWID",
]
POSTGRES_NLP = [
    "ALTER TABLE documents ADD COLUMN IF NOT EXISTS metadata text NOT NULL DEFAULT '{}'",
    "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS entities text NOT NULL DEFAULT '{}'",
    "CREATE TABLE IF NOT EXISTS ent_cache(model_id text NOT NULL, text_hash text NOT NULL, entities text NOT NULL,"
    " PRIMARY KEY(model_id, text_hash))",
]


def facet_type(entity_type: str) -> str:
    if not isinstance(entity_type, str) or not entity_type.strip() or ":" in entity_type:
        raise ValueError(f"facets: the entity type must be a label such as ORG or PERSON, got {entity_type!r}")
    return entity_type.strip().upper()


def facet_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise ValueError(f"facets: k must be an integer from 1 to 1000, got {k!r}")
    return k


class FacetsMixin(SQLBase):
    """Entity facets and the entity cache, for both stores (``_PH``/``_q`` from SQLBase)."""

    def facets(self, entity_type: str, tokens: frozenset[str], k: int = 20, filters=None) -> list[dict]:
        """The ``k`` most mentioned entities of one type over the chunks ``tokens`` may read that
        match ``filters``: ``[{"name", "key", "count" (mentions), "chunks", "docs"}]``, most first."""
        prefix = facet_type(entity_type) + ":"
        k = facet_k(k)
        if not tokens:
            return []
        rows = self._facet_rows(prefix, tokens, k, filters or Filters())
        return [{"name": f"{prefix}{r['name']}", "key": r["key"], "count": int(r["n"]), "chunks": int(r["chunks"]),
                 "docs": int(r["docs"])} for r in rows]

    def _facet_rows(self, prefix: str, tokens: frozenset[str], k: int, f) -> list:
        """The dialect's facet query: rows (name, key, n, chunks, docs), most mentioned first."""
        raise NotImplementedError

    def cached_entities(self, model_id: str, hashes: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            q = ",".join([self._PH] * len(part))
            for r in self.db.execute(self._q(f"SELECT text_hash, entities FROM ent_cache WHERE model_id=%s"
                                             f" AND text_hash IN ({q})"), (model_id, *part)):
                out[r["text_hash"]] = json.loads(r["entities"])
        return out

    def cache_entities(self, model_id: str, items: list[tuple[str, dict]]) -> None:
        if items:
            with self.tx() as db:
                db.cursor().executemany(self._q("INSERT INTO ent_cache(model_id, text_hash, entities)"
                                                " VALUES(%s,%s,%s) ON CONFLICT DO NOTHING"),
                                        [(model_id, h, json.dumps(e, sort_keys=True)) for h, e in items])

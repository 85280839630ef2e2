"""Document metadata and named entities in the stores (SQLite schema 9, PostgreSQL schema 10;
the entity backlog: SQLite 10, PostgreSQL 11).

* ``documents.metadata``: JSON object (title, authors, created, modified, subject, keywords,
  language, pages; mail from/to/cc/message_id; archive members), from ``extractors.metadata``;
* ``chunks.entities``: JSON object ``{"TYPE:key": [display, count]}`` (``ingest.pipeline.nlp``);
* ``ent_cache``: entities by (model id, chunk text hash), like ``emb_cache`` for vectors;
* ``ent_pending``: the chunks whose entities are still owed (``[nlp] after_indexing``: a worker
  stores a document's text and vectors first and runs the entity model afterwards on the
  maintenance lane, ``workers.tasks.entities``). A row is claimed for a lease
  (:meth:`FacetsMixin.claim_entities`) and removed with the chunk's entities in one transaction
  (:meth:`FacetsMixin.set_entities`), so a worker killed in between loses nothing.

Both columns are text holding JSON, as ``labels`` is, so the outbox carries them to every sink
unchanged (``DOC_COLS``/``CHUNK_COLS``). Facets (:class:`FacetsMixin`) count entities over the
chunks a principal may read, with the ACL and the filters inside the one SQL query.
"""
from __future__ import annotations

import json
import time

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

ENT_PENDING = [  # {text}/{real}: the dialect's types
    "CREATE TABLE IF NOT EXISTS ent_pending(chunk_id {text} PRIMARY KEY, doc_id {text} NOT NULL,"
    " queued {real} NOT NULL, claimed {real})",
    "CREATE INDEX IF NOT EXISTS ent_pending_doc ON ent_pending(doc_id)",
    "CREATE INDEX IF NOT EXISTS ent_pending_queued ON ent_pending(queued)",
]
SQLITE_ENT_PENDING = [s.format(text="TEXT", real="REAL") for s in ENT_PENDING]
POSTGRES_ENT_PENDING = [s.format(text="text", real="double precision") for s in ENT_PENDING]


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

    # -- entities owed (computed after indexing) ------------------------------------------
    _SKIP_LOCKED = ""  # PostgreSQL: concurrent claimers skip each other's rows

    def _owe_entities(self, db, doc_id: str, chunks) -> None:
        """In ``apply``'s transaction: the document's chunks whose entities are ``None`` are owed."""
        db.execute(self._q("DELETE FROM ent_pending WHERE doc_id=%s"), (doc_id,))
        now = time.time()
        rows = [(c.chunk_id, doc_id, now) for c in chunks if c.entities is None]
        if rows:
            db.cursor().executemany(self._q("INSERT INTO ent_pending(chunk_id, doc_id, queued) VALUES(%s,%s,%s)"
                                            " ON CONFLICT DO NOTHING"), rows)

    def claim_entities(self, limit: int, lease_s: float) -> tuple[list[tuple[str, str, str]], int]:
        """(up to ``limit`` chunks whose entities are owed, as (chunk_id, text_hash, text), oldest first; how
        many backlog rows were claimed). A claim holds for ``lease_s``: other workers skip the rows
        meanwhile, and take them again after it (a worker killed before :meth:`set_entities`). Rows
        whose chunk is gone (the document changed or went) are dropped."""
        now = time.time()
        with self.tx() as db:
            ids = [r["chunk_id"] for r in db.execute(self._q(
                "SELECT chunk_id FROM ent_pending WHERE claimed IS NULL OR claimed < %s ORDER BY queued"
                " LIMIT %s" + self._SKIP_LOCKED), (now - lease_s, limit))]
            if not ids:
                return [], 0
            q = ",".join([self._PH] * len(ids))
            db.execute(self._q(f"UPDATE ent_pending SET claimed=%s WHERE chunk_id IN ({q})"), (now, *ids))
            have = {r["chunk_id"]: (r["text_hash"], r["text"]) for r in db.execute(
                self._q(f"SELECT chunk_id, text_hash, text FROM chunks WHERE chunk_id IN ({q})"), ids)}
            gone = [i for i in ids if i not in have]
            if gone:
                g = ",".join([self._PH] * len(gone))
                db.execute(self._q(f"DELETE FROM ent_pending WHERE chunk_id IN ({g})"), gone)
        return [(i, *have[i]) for i in ids if i in have], len(ids)

    def set_entities(self, items: list[tuple[str, dict]]) -> int:
        """Store owed entities ``[(chunk_id, {"TYPE:key": [display, count]})]`` and settle those
        chunks' backlog rows, in one transaction; the documents go to the outbox (sinks carry
        entities). A chunk replaced meanwhile is skipped. Returns how many chunks were updated."""
        if not items:
            return 0
        ids = [c for c, _ in items]
        q = ",".join([self._PH] * len(ids))
        with self.tx() as db:
            owed = {r["chunk_id"]: r["doc_id"] for r in db.execute(
                self._q(f"SELECT chunk_id, doc_id FROM ent_pending WHERE chunk_id IN ({q})"), ids)}
            rows = [(json.dumps(e, sort_keys=True), c) for c, e in items if c in owed]
            if rows:
                db.cursor().executemany(self._q("UPDATE chunks SET entities=%s WHERE chunk_id=%s"), rows)
                db.execute(self._q(f"DELETE FROM ent_pending WHERE chunk_id IN ({q})"), ids)
                self._bump(db)
                self._outbox(db, sorted(set(owed.values())), "apply")
        return len(rows)

    def entities_owed(self) -> int:
        """Chunks whose entities are still to be computed (``[nlp] after_indexing``)."""
        return int(next(iter(self.db.execute("SELECT COUNT(*) AS n FROM ent_pending")))["n"])

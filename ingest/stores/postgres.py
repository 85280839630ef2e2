"""The scale-out store: PostgreSQL with pgvector, shared by any number of workers.

The same contract as :class:`ingest.stores.sqlite.SQLiteStore` (registry, chunks, ACL,
embedding cache, outcome log, audit log, outbox), with

* full text: a stored ``tsvector`` column (text weight A, section weight B) and a GIN index;
* vectors: a ``vector(dim)`` column with an HNSW index (``vector_cosine_ops``);
* ACL: every chunk carries its document's ``allow_tokens``/``deny_tokens`` arrays (GIN
  indexed); both retrievals filter with ``allow && tokens AND NOT deny && tokens`` (deny wins)
  inside the SQL, before ORDER BY and LIMIT. Filtered HNSW uses pgvector's iterative index
  scan (``hnsw.iterative_scan``, pgvector >= 0.8) so ``k`` results are ``k`` readable results;
  when the index scan still returns fewer rows than asked (a very small readable set), the
  query is repeated without the index: an exact scan of the readable chunks;
* locks: per-document advisory locks (released by the server if the holder dies);
* schema: versioned migrations under a transaction-level advisory lock (idempotent and safe
  when many workers start at once).

One connection per thread and process (autocommit; transactions are explicit); a forked
child or a broken connection reconnects on next use.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from contextlib import contextmanager

from acl.model import ACL
from ingest.embedding import DEFAULT_MODEL, EmbedderBase, default_model_id, split_model_id

from ingest.stores.base import ChunkRecord, DocRecord, Hit
from ingest.stores.common import (CHUNK_COLS, DOC_COLS, HIT_SQL, OUTBOX_DDL, QUEUE_DDL, context_runs, doc_values,
                     flags_with_acl, flagged, marked_spans, redact, to_hits, upsert_doc_sql)
from ingest.stores.embed_inputs import POSTGRES_EMBED_INPUTS, run_migration
from ingest.stores.nlp_sql import POSTGRES_ENT_PENDING, POSTGRES_NLP, FacetsMixin
from ingest.stores.operations_sql import GroupsMixin, OperationsMixin
from ingest.stores.outbox_sql import OutboxMixin
from ingest.stores.quality_sql import QUALITY_DDL, QualityMixin
from ingest.stores.registry_sql import RegistryMixin
from ingest.stores.lineage_sql import LineageMixin
from ingest.stores.unit import UnitMixin, held_write
from ingest.stores.filters import Filters, postgres_where

SCHEMA_VERSION = 11
_MIGRATE_LOCK = 0x1A6E57  # advisory lock key for schema changes
_AUDIT_LOCK = 0x1A6E58  # serialises the audit hash chain
_OUTBOX_LOCK = 0x1A6E59  # outbox ids commit in order

def _schema(dim: int) -> list[str]:
    return [
        """CREATE TABLE documents(
          doc_id text PRIMARY KEY, source text NOT NULL, external_id text NOT NULL, uri text NOT NULL,
          mime text, size bigint, mtime_ns bigint, content_version text, acl_version text, acl text,
          status text NOT NULL, error_code text, error text, extractor text, extractor_version text,
          n_chunks integer NOT NULL DEFAULT 0, flags text NOT NULL DEFAULT '[]', labels text NOT NULL DEFAULT '[]',
          first_seen double precision, updated_at double precision, indexed_at double precision,
          parent_id text, quality text,
          allow_tokens text[] NOT NULL DEFAULT '{}', deny_tokens text[] NOT NULL DEFAULT '{}',
          UNIQUE(source, external_id))""",
        "CREATE INDEX documents_status ON documents(status)",
        "CREATE INDEX documents_parent ON documents(parent_id)",
        "CREATE INDEX documents_allow ON documents USING gin(allow_tokens)",
        f"""CREATE TABLE chunks(
          rowid bigserial PRIMARY KEY, chunk_id text NOT NULL UNIQUE, doc_id text NOT NULL, idx integer NOT NULL,
          text text NOT NULL, text_hash text NOT NULL, tokens integer, page integer, section text,
          doc_version text, extractor text, extractor_version text, chunker text, model_id text,
          labels text NOT NULL DEFAULT '[]', created_at double precision,
          embedding vector({dim}) NOT NULL,
          allow_tokens text[] NOT NULL DEFAULT '{{}}', deny_tokens text[] NOT NULL DEFAULT '{{}}',
          tsv tsvector GENERATED ALWAYS AS (setweight(to_tsvector('english', text), 'A')
                                            || setweight(to_tsvector('english', coalesce(section, '')), 'B')) STORED,
          UNIQUE(doc_id, idx))""",
        "CREATE INDEX chunks_tsv ON chunks USING gin(tsv)",
        "CREATE INDEX chunks_allow ON chunks USING gin(allow_tokens)",
        "CREATE INDEX chunks_embedding ON chunks USING hnsw(embedding vector_cosine_ops)",
        """CREATE TABLE emb_cache(model_id text NOT NULL, text_hash text NOT NULL, vec bytea NOT NULL,
          PRIMARY KEY(model_id, text_hash))""",
        """CREATE TABLE outcomes(id bigserial PRIMARY KEY, ts double precision NOT NULL, batch text, source text,
          external_id text, doc_id text, action text NOT NULL, parsed integer NOT NULL DEFAULT 0,
          embedded integer NOT NULL DEFAULT 0, detail text)""",
        "CREATE INDEX outcomes_batch ON outcomes(batch)",
        """CREATE TABLE audit(id bigserial PRIMARY KEY, ts double precision NOT NULL, principal text, query text,
          filters text, results text, prev_hash text, hash text)""",
        *[stmt.format(serial="bigserial PRIMARY KEY", real="double precision") for stmt in OUTBOX_DDL],
    ]


# version -> statements that bring a store from the version before up to it (1 is the first schema)
MIGRATIONS: dict[int, list[str]] = {
    2: ["ALTER TABLE outcomes ADD COLUMN IF NOT EXISTS trace text"],  # stage timings (ingest.obs.trace)
    3: [  # DMS change cursors (ingest.pipeline.connector_sync) and groups synced from DMS sources (acl.directory.SyncBackend)
        "CREATE TABLE IF NOT EXISTS cursors(source text PRIMARY KEY, cursor text NOT NULL, updated_at double precision)",
        "CREATE TABLE IF NOT EXISTS dir_groups(source text NOT NULL, grp text NOT NULL, member text NOT NULL,"
        " kind text NOT NULL, PRIMARY KEY(source, grp, kind, member))",
        "CREATE INDEX IF NOT EXISTS dir_groups_member ON dir_groups(kind, member, source, grp)",
        "CREATE INDEX IF NOT EXISTS documents_uri ON documents(uri)",
    ],
    4: [  # labels, provenance, audit format 1 and append-only audit, model history (SQLite's schema 4)
        "ALTER TABLE documents ADD COLUMN IF NOT EXISTS source_labels text NOT NULL DEFAULT '[]'",
        "ALTER TABLE documents ADD COLUMN IF NOT EXISTS redactions text NOT NULL DEFAULT '{}'",
        "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS source text",
        "ALTER TABLE chunks ADD COLUMN IF NOT EXISTS embedded_at double precision",
        "UPDATE chunks c SET source=d.source, embedded_at=c.created_at FROM documents d WHERE d.doc_id=c.doc_id",
        "ALTER TABLE audit ADD COLUMN IF NOT EXISTS v integer",
        "CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts)",
        "CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal, ts)",
        "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$",
        "CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit FOR EACH ROW"
        " EXECUTE FUNCTION audit_append_only()",
        "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit FOR EACH STATEMENT"
        " EXECUTE FUNCTION audit_append_only()",
        "CREATE TABLE IF NOT EXISTS model_history(id bigserial PRIMARY KEY, ts double precision NOT NULL,"
        " from_model text, to_model text NOT NULL, chunks integer NOT NULL)",
        # the head of the chain so far, so that a record removed from its end is seen
        "INSERT INTO meta(key, value) SELECT 'audit_head', json_build_array(id, hash)::text FROM audit"
        " WHERE id=(SELECT MAX(id) FROM audit) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
    ],
    5: [  # quality over time (ingest.obs.quality); outcomes by document (ingest status DOC)
        "CREATE INDEX IF NOT EXISTS outcomes_doc ON outcomes(doc_id)",
        *[stmt.format(serial="bigserial PRIMARY KEY", real="double precision") for stmt in QUALITY_DDL],
    ],
    # the queue: source version of the indexed state (stale tasks are dropped), dead letters (SQLite's 7)
    6: [stmt.format(serial="bigserial PRIMARY KEY", real="double precision", bigint="bigint") for stmt in QUEUE_DDL],
    # a change counter of the chunks' text (any writer, COPY too): keys the full-text document-frequency cache
    7: [
        "CREATE SEQUENCE IF NOT EXISTS chunks_gen",
        "CREATE OR REPLACE FUNCTION chunks_gen_bump() RETURNS trigger LANGUAGE plpgsql AS"
        " $$ BEGIN PERFORM nextval('chunks_gen'); RETURN NULL; END $$",
        "DROP TRIGGER IF EXISTS chunks_gen_bump ON chunks",
        "CREATE TRIGGER chunks_gen_bump AFTER INSERT OR DELETE OR UPDATE OF text, section ON chunks"
        " FOR EACH STATEMENT EXECUTE FUNCTION chunks_gen_bump()",
        "CREATE TRIGGER chunks_gen_truncate AFTER TRUNCATE ON chunks FOR EACH STATEMENT EXECUTE FUNCTION chunks_gen_bump()",
    ],
    # The ACL indexes without GIN's pending list. With fastupdate (PostgreSQL's default) new entries
    # wait in an unsorted list, up to gin_pending_list_limit (4 MB), that every search scans in full
    # until a VACUUM merges it: right after loading 100k chunks the ACL bitmap scan took 12 ms
    # instead of 0.8 ms, on every query (bench/README.md, scale_search.py). ACL arrays hold a few
    # tokens, so merging on write costs little (the COPY of 100k chunks: 21.5 s either way); the
    # full-text index keeps fastupdate (off doubled that COPY's time) and is left to autovacuum.
    8: [
        "ALTER INDEX chunks_allow SET (fastupdate = off)",
        "ALTER INDEX documents_allow SET (fastupdate = off)",
        "SELECT gin_clean_pending_list('chunks_allow'::regclass)",
        "SELECT gin_clean_pending_list('documents_allow'::regclass)",
    ],
    # what the model embeds per chunk: section context and embed hash (backfill: ingest.stores.embed_inputs)
    9: POSTGRES_EMBED_INPUTS,
    10: POSTGRES_NLP,  # document metadata, entities per chunk, entity cache (ingest.stores.nlp_sql)
    11: POSTGRES_ENT_PENDING,  # the chunks whose entities are computed after indexing (ingest.stores.nlp_sql)
}

_WORD = re.compile(r"\w+", re.UNICODE)


def ts_query(text: str) -> str | None:
    """User text -> a safe ``to_tsquery`` string: every word quoted, OR-ed (the ranking weighs them)."""
    words = dict.fromkeys(_WORD.findall(text.lower()))
    return " | ".join(f"'{w}'" for w in words) if words else None


def _lock_key(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big", signed=True)


def _dim_for(model_id: str) -> int:
    return 384 if split_model_id(model_id)[0] == DEFAULT_MODEL else EmbedderBase(model_id).dim


class _AdvisoryLock:
    def __init__(self, store: "PostgresStore", keys: tuple[str, ...]):
        self.store = store
        self.keys = sorted({_lock_key(k) for k in keys})  # sorted: no lock-order deadlock
        self.conn = None

    def __enter__(self):
        self.conn = self.store.db
        for k in self.keys:
            self.conn.execute("SELECT pg_advisory_lock(%s)", (k,))
        return self

    def __exit__(self, *exc):
        if not self.conn.closed and not self.conn.broken:
            for k in reversed(self.keys):
                self.conn.execute("SELECT pg_advisory_unlock(%s)", (k,))
        return False


class PostgresStore(UnitMixin, RegistryMixin, LineageMixin, QualityMixin, FacetsMixin, OperationsMixin, GroupsMixin,
                    OutboxMixin):
    _VEC_DIM = "vector_dims(embedding)"
    _SKIP_LOCKED = " FOR UPDATE SKIP LOCKED"  # concurrent entity claimers (ingest.stores.nlp_sql)

    _JSON_NUM = "({col}::jsonb ->> '{key}')::double precision"
    _HAS_FLAG_LIKE = "EXISTS(SELECT 1 FROM jsonb_array_elements_text(documents.flags::jsonb) j WHERE j LIKE %s)"

    def __init__(self, url: str, model_id: str | None = None, dim: int | None = None):
        """``model_id``/``dim``: the embedding model (and its vector size) of a new store; an
        existing store keeps its own (``dim`` spares loading a model just to learn its size)."""
        if not url.startswith(("postgresql://", "postgres://")):
            raise ValueError(f"not a PostgreSQL URL: {redact(url)!r}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ValueError(f"dim must be a whole number >= 1, got {dim!r}")
        self.url = url
        self._model_id = model_id or default_model_id()
        self._dim = dim
        self._local = threading.local()
        self._df_lock = threading.Lock()
        self.migrate()

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.url)!r})"

    # -- connections ----------------------------------------------------------------
    @property
    def db(self):
        c = getattr(self._local, "conn", None)
        if c is None or c.closed or c.broken or getattr(self._local, "pid", None) != os.getpid():
            import psycopg
            from psycopg.rows import dict_row

            if c is not None and getattr(self._local, "pid", None) == os.getpid():
                c.close()
            c = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, connect_timeout=10)
            if c.execute("SELECT 1 FROM pg_type WHERE typname='vector'").fetchone():
                from pgvector.psycopg import register_vector

                register_vector(c)
            self._local.conn, self._local.pid = c, os.getpid()
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None and getattr(self._local, "pid", None) == os.getpid():
            c.close()
        self._local.conn = None

    @contextmanager
    def tx(self):
        db = self.db
        with db.transaction():
            yield db

    @contextmanager
    def read_snapshot(self):
        """Every read inside sees one committed state (a REPEATABLE READ transaction)."""
        from psycopg.pq import TransactionStatus

        db = self.db
        if db.info.transaction_status != TransactionStatus.IDLE:  # already inside one: nest
            yield db
            return
        with db.transaction():
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield db

    def _bump(self, db) -> None:
        """Nothing to do: PostgreSQL keeps no in-process vector cache that a generation would invalidate."""

    # -- schema ---------------------------------------------------------------------
    def schema_version(self) -> int:
        row = self.db.execute("SELECT to_regclass('meta') IS NOT NULL AS t").fetchone()
        if not row["t"]:
            return 0
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row["value"]) if row else 0

    def migrate(self) -> None:
        """Create or bring the schema up to date. Safe to run twice and from many processes at once."""
        with self.tx() as db:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATE_LOCK,))
            db.execute("CREATE EXTENSION IF NOT EXISTS vector")
            db.execute("CREATE TABLE IF NOT EXISTS meta(key text PRIMARY KEY, value text)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row["value"]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"{redact(self.url)}: store schema {current} is newer than this version of "
                                   f"ingest understands ({SCHEMA_VERSION}); upgrade ingest")
            if current < 1:
                dim = self._dim or _dim_for(self._model_id)
                for stmt in _schema(dim):
                    db.execute(stmt)
                db.execute("INSERT INTO meta VALUES('model_id', %s), ('dim', %s)", (self._model_id, str(dim)))
                current = 1
            for version in range(current + 1, SCHEMA_VERSION + 1):
                run_migration(db, MIGRATIONS[version])
            db.execute("INSERT INTO meta VALUES('schema_version', %s) ON CONFLICT(key) DO UPDATE SET"
                       " value=excluded.value", (str(SCHEMA_VERSION),))
        self.close()  # reconnect: the vector type may be new to this connection

    @property
    def model_id(self) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key='model_id'").fetchone()["value"]

    def _outbox(self, db, doc_ids, op: str) -> None:
        """The last statement of every change: the lock (held to commit) makes outbox ids commit
        in id order, so a pump that has read row n never misses a row < n committed later."""
        if doc_ids:
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_OUTBOX_LOCK,))
            super()._outbox(db, doc_ids, op)

    def lock(self, *keys: str):
        """Per-document lock across processes and machines (advisory; released if we die)."""
        return _AdvisoryLock(self, keys)

    # -- registry -------------------------------------------------------------------
    _SEL_DOC = "SELECT " + ", ".join(DOC_COLS) + " FROM documents"  # what replication copies
    _SEL_ROW = "SELECT " + ", ".join(DOC_COLS) + ", source_labels, redactions, source_seq FROM documents"

    def get_doc(self, source: str, external_id: str) -> dict | None:
        return self.db.execute(self._SEL_ROW + " WHERE source=%s AND external_id=%s", (source, external_id)).fetchone()

    def get_doc_by_id(self, doc_id: str) -> dict | None:
        return self.db.execute(self._SEL_ROW + " WHERE doc_id=%s", (doc_id,)).fetchone()

    def docs_for_source(self, source: str) -> dict[str, dict]:
        """Top-level documents of a source (child documents live and die with their parent)."""
        rows = self.db.execute(
            "SELECT doc_id, external_id, size, mtime_ns, content_version, acl_version, status "
            "FROM documents WHERE source=%s AND parent_id IS NULL", (source,))
        return {r["external_id"]: r for r in rows}

    def children_of(self, doc_id: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT doc_id, external_id, content_version, acl_version, status, source_labels"
                               " FROM documents WHERE parent_id=%s", (doc_id,))
        return {r["external_id"]: r for r in rows}

    @held_write
    def apply(self, doc: DocRecord, chunks: list[ChunkRecord]) -> None:
        """Replace the document and all its chunks in one transaction."""
        import numpy as np

        now = time.time()
        flags = flags_with_acl(doc)
        allow, deny = sorted(doc.acl.allow), sorted(doc.acl.deny)
        with self.tx() as db:
            self._check_model(db, chunks)
            self._upsert_doc(db, doc, now, n_chunks=len(chunks), flags=flags, indexed=True)
            db.execute("DELETE FROM chunks WHERE doc_id=%s", (doc.doc_id,))
            labels = json.dumps(doc.labels)
            with db.cursor().copy(
                    "COPY chunks(chunk_id, doc_id, idx, text, text_hash, tokens, page, section, doc_version,"
                    " extractor, extractor_version, chunker, model_id, labels, created_at, embedding,"
                    " allow_tokens, deny_tokens, source, embedded_at, context, embed_hash, entities) FROM STDIN") as cp:
                for c in chunks:
                    cp.write_row((c.chunk_id, doc.doc_id, c.index, c.text, c.text_hash, c.tokens, c.page, c.section,
                                  doc.content_version, doc.extractor, doc.extractor_version, c.chunker, c.model_id,
                                  labels, now, _vec_text(np.frombuffer(c.vector, dtype=np.float32)), allow, deny,
                                  doc.source, now, c.context, c.embed_hash, json.dumps(c.entities or {}, sort_keys=True)))
            self._owe_entities(db, doc.doc_id, chunks)
            self._provenance(db, doc)  # the document's labels; the chunks' provenance went in above
            self._outbox(db, [doc.doc_id], "apply")

    def _upsert_doc(self, db, doc: DocRecord, now: float, *, n_chunks: int, flags: list[str],
                    indexed: bool) -> None:
        db.execute(upsert_doc_sql(("allow_tokens", "deny_tokens")),
                   doc_values(doc, now, n_chunks=n_chunks, flags=flags, indexed=indexed)
                   + [sorted(doc.acl.allow), sorted(doc.acl.deny)])

    @held_write
    def record_failure(self, doc: DocRecord) -> None:
        """A document that could not be indexed: registry row with the reason, no chunks."""
        with self.tx() as db:
            db.execute("DELETE FROM chunks WHERE doc_id=%s", (doc.doc_id,))
            self._upsert_doc(db, doc, time.time(), n_chunks=0, flags=list(doc.flags), indexed=False)
            self._provenance(db, doc)
            self._outbox(db, [doc.doc_id], "apply")

    @held_write
    def set_acl(self, doc_id: str, acl: ACL, *, size: int | None = None, mtime_ns: int | None = None) -> None:
        """ACL-only change: no re-extraction, no re-embedding. Child documents inherit it."""
        allow, deny = sorted(acl.allow), sorted(acl.deny)
        with self.tx() as db:
            ids = [doc_id, *self._descendants(db, doc_id)]
            for i, d in enumerate(ids):
                row = db.execute("SELECT flags FROM documents WHERE doc_id=%s", (d,)).fetchone()
                if row is None:
                    continue
                flags = [f for f in json.loads(row["flags"]) if f != "acl-unknown"]
                flags += [] if acl.known else ["acl-unknown"]
                db.execute("UPDATE documents SET acl=%s, acl_version=%s, flags=%s, updated_at=%s,"
                           " size=COALESCE(%s, size), mtime_ns=COALESCE(%s, mtime_ns), allow_tokens=%s,"
                           " deny_tokens=%s WHERE doc_id=%s",
                           (acl.to_json(), acl.version, json.dumps(flags), time.time(),
                            size if i == 0 else None, mtime_ns if i == 0 else None, allow, deny, d))
            db.execute("UPDATE chunks SET allow_tokens=%s, deny_tokens=%s WHERE doc_id = ANY(%s)", (allow, deny, ids))
            self._outbox(db, ids, "acl")

    def _drop_docs(self, db, doc_ids: list[str]) -> None:
        db.execute("DELETE FROM chunks WHERE doc_id = ANY(%s)", (doc_ids,))
        db.execute("DELETE FROM documents WHERE doc_id = ANY(%s)", (doc_ids,))

    # -- replication (outbox sinks) -------------------------------------------------
    def export_docs(self, doc_ids: list[str]) -> dict[str, dict | None]:
        """Current state of documents as plain data: {doc_id: {"doc": row, "chunks": [...]}} or None if gone."""
        import numpy as np

        out: dict[str, dict | None] = dict.fromkeys(doc_ids)
        with self.tx() as db:  # one snapshot of registry and chunks
            db.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            for r in db.execute(self._SEL_DOC + " WHERE doc_id = ANY(%s)", (doc_ids,)):
                out[r["doc_id"]] = {"doc": r, "chunks": []}
            for r in db.execute("SELECT doc_id, " + ", ".join(CHUNK_COLS) + ", embedding FROM chunks"
                                " WHERE doc_id = ANY(%s) ORDER BY doc_id, idx", (doc_ids,)):
                st = out.get(r.pop("doc_id"))
                if st is not None:
                    r["vec"] = np.asarray(r.pop("embedding").to_numpy(), dtype=np.float32).tobytes()
                    st["chunks"].append(r)
        return out

    def replicate(self, states: dict[str, dict | None]) -> None:
        """Make these documents exactly as given (None: absent), in one transaction. Used by the
        outbox pump on a sink; writes no outbox rows of its own, so sinks never feed back."""
        import numpy as np

        with self.tx() as db:
            gone = [d for d, st in states.items() if st is None]
            db.execute("DELETE FROM chunks WHERE doc_id = ANY(%s)", (list(states),))
            db.execute("DELETE FROM documents WHERE doc_id = ANY(%s)", (gone,))
            for doc_id, st in states.items():
                if st is None:
                    continue
                d = st["doc"]
                acl = ACL.from_json(d["acl"])
                allow, deny = sorted(acl.allow), sorted(acl.deny)
                # another document at this address in the sink has moved on in the primary; its own
                # outbox row (later in the stream) brings it back to where it is now
                stale = [r["doc_id"] for r in db.execute(
                    "DELETE FROM documents WHERE source=%s AND external_id=%s AND doc_id<>%s RETURNING doc_id",
                    (d["source"], d["external_id"], doc_id))]
                db.execute("DELETE FROM chunks WHERE doc_id = ANY(%s)", (stale,))
                cols = list(DOC_COLS) + ["allow_tokens", "deny_tokens"]
                db.execute(f"INSERT INTO documents({', '.join(cols)}) VALUES({', '.join(['%s'] * len(cols))})"
                           " ON CONFLICT(doc_id) DO UPDATE SET "
                           + ", ".join(f"{c}=excluded.{c}" for c in cols[1:]),
                           [d[c] for c in DOC_COLS] + [allow, deny])
                with db.cursor().copy("COPY chunks(doc_id, " + ", ".join(CHUNK_COLS)
                                      + ", embedding, allow_tokens, deny_tokens) FROM STDIN") as cp:
                    for c in st["chunks"]:
                        cp.write_row((doc_id, *[c[k] for k in CHUNK_COLS],
                                      _vec_text(np.frombuffer(c["vec"], dtype=np.float32)), allow, deny))

    # -- embedding cache ------------------------------------------------------------
    def cached_vectors(self, model_id: str, hashes: list[str]) -> dict[str, bytes]:
        rows = self.db.execute("SELECT text_hash, vec FROM emb_cache WHERE model_id=%s AND text_hash = ANY(%s)",
                               (model_id, hashes))
        return {r["text_hash"]: bytes(r["vec"]) for r in rows}

    def cache_vectors(self, model_id: str, items: list[tuple[str, bytes]]) -> None:
        if items:
            with self.tx() as db:
                db.cursor().executemany("INSERT INTO emb_cache VALUES(%s,%s,%s) ON CONFLICT DO NOTHING",
                                        [(model_id, h, v) for h, v in items])

    # -- status ---------------------------------------------------------------------
    def status(self) -> dict:
        db = self.db
        by_status = {r["status"]: r["n"] for r in db.execute(
            "SELECT status, COUNT(*) AS n FROM documents GROUP BY status")}
        errors = db.execute("SELECT uri, status, error_code, error, updated_at FROM documents WHERE status<>'indexed'"
                            " ORDER BY updated_at DESC LIMIT 200").fetchall()
        flags = flagged(db.execute("SELECT uri, flags, quality FROM documents WHERE flags<>'[]'"
                                   " ORDER BY updated_at DESC LIMIT 200"))
        n_chunks = db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()["n"]
        sources = {r["source"]: r["n"] for r in db.execute(
            "SELECT source, COUNT(*) AS n FROM documents GROUP BY source")}
        by_reason: dict[str, dict[str, int]] = {}
        for r in db.execute("SELECT source, status, error_code, COUNT(*) AS n FROM documents"
                            " WHERE status<>'indexed' GROUP BY source, status, error_code"):
            by_reason.setdefault(r["source"], {})[f"{r['status']}:{r['error_code']}"] = r["n"]
        for r in db.execute("SELECT source, j AS flag, COUNT(*) AS n FROM documents,"
                            " jsonb_array_elements_text(flags::jsonb) j GROUP BY source, j"):
            by_reason.setdefault(r["source"], {})[f"flagged:{r['flag']}"] = r["n"]
        return {"store": redact(self.url), "schema_version": self.schema_version(),
                "documents": sum(by_status.values()), "by_status": by_status, "chunks": n_chunks,
                "sources": sources, "by_reason": by_reason, "errors": errors, "flagged": flags,
                "sinks": self.sink_lag()}

    # -- search ---------------------------------------------------------------------
    # deny wins; over ``chunks c`` (or ``documents c``); its two placeholders both take the tokens
    _ACL = "c.allow_tokens && %s::text[] AND NOT (c.deny_tokens && %s::text[])"

    def _where(self, tokens: frozenset[str], filters) -> tuple[str, list]:
        """The ACL and the filters as one condition over ``chunks c`` (inside the query, before
        ranking and limiting), and its arguments."""
        fsql, fargs = postgres_where(filters or Filters())
        toks = sorted(tokens)
        return f"{self._ACL} AND {fsql}", [toks, toks, *fargs]


    # Query lexemes in more than this share of chunks (ANALYZE's most-common-elements statistics of
    # the tsvector column) do not select candidates when a rarer lexeme is present; they still count
    # in the ranking (a common-terms query). Measured at 100,000 SciFact chunks: full-text p50 78 ->
    # 23 ms, 88 % of the top 10 unchanged (bench/scale_search.py, bench/README.md).
    COMMON_TERM_FREQ = 0.05
    _STATS_TTL = 300.0

    def _term_freqs(self) -> dict[str, float]:
        cached = getattr(self, "_freqs", None)
        if cached is not None and time.monotonic() - cached[0] < self._STATS_TTL:
            return cached[1]
        r = self.db.execute("SELECT most_common_elems::text::text[] AS e, most_common_elem_freqs AS f FROM pg_stats"
                            " WHERE schemaname = current_schema() AND tablename='chunks' AND attname='tsv'").fetchone()
        freqs = dict(zip(r["e"], r["f"])) if r and r["e"] else {}
        self._freqs = (time.monotonic(), freqs)
        return freqs

    def _lexemes(self, query: str) -> list[str]:
        if not ts_query(query):
            return []
        return [r["lexeme"] for r in self.db.execute("SELECT lexeme FROM unnest(to_tsvector('english', %s))", (query,))]

    _DF_TTL = 60.0  # a backstop: the counter moves before its writer commits (see _doc_freqs)
    _DF_MAX = 50_000

    def _doc_freqs(self, lex: list[str]) -> tuple[int, dict[str, int]]:
        """(chunks, {lexeme: chunks holding it}), counted exactly and kept per value of the
        ``chunks_gen`` counter (a trigger moves it on every write of chunk text), for at most
        ``_DF_TTL`` seconds: a count taken while a writer had moved the counter but not yet
        committed is dropped by then. Counting a common lexeme at 100k chunks costs ms."""
        db = self.db
        gen = db.execute("SELECT last_value, is_called FROM chunks_gen").fetchone()
        key = (gen["last_value"], gen["is_called"])
        with self._df_lock:
            cache = self.__dict__.get("_df")
            if cache is None or cache[0] != key or time.monotonic() - cache[1] > self._DF_TTL \
                    or len(cache[3]) > self._DF_MAX:
                cache = None
            else:
                n, dfs = cache[2], cache[3]
                todo = [w for w in lex if w not in dfs]
        if cache is None:
            n, dfs, todo = db.execute("SELECT COUNT(*) AS n FROM chunks").fetchone()["n"], {}, lex
            with self._df_lock:
                self._df = cache = (key, time.monotonic(), n, dfs)
        for w in dict.fromkeys(todo):
            dfs[w] = db.execute("SELECT COUNT(*) AS n FROM chunks WHERE tsv @@ to_tsquery('simple', %s)",
                                (_or([w]),)).fetchone()["n"]
        return n, {w: dfs[w] for w in lex}

    STATS_MIN_ROWS = 20_000  # from this many chunks, ANALYZE's statistics decide the clear-cut lexemes

    def _rare_exact(self, lex: list[str], max_df: float) -> list[str]:
        """Lexemes in at most ``max_df`` of all chunks; the two rarest if none is.

        Counted exactly, except in a store of ``STATS_MIN_ROWS`` chunks or more with statistics:
        there a lexeme whose most-common-elements frequency is under half or over twice ``max_df``
        (or that is not in that list, when the list reaches below half of ``max_df``) is decided
        by the statistics, and only those near the cut-off are counted (counting a new common
        lexeme costs several ms at 100k chunks; statistics lag writes until autovacuum's ANALYZE)."""
        n, _ = self._doc_freqs([])
        df: dict[str, float] = {}
        freqs = self._term_freqs() if n >= self.STATS_MIN_ROWS else {}
        if freqs:
            floor = min(freqs.values())
            for w in lex:
                f = freqs.get(w)
                if f is None and floor < max_df / 2:
                    df[w] = 0
                elif f is not None and not max_df / 2 <= f <= 2 * max_df:
                    df[w] = f * n
        n, exact = self._doc_freqs([w for w in lex if w not in df])
        df.update(exact)
        keep = [w for w in lex if df[w] <= max_df * n]
        return keep or sorted(lex, key=lambda w: df[w])[:2]

    def bm25(self, query: str, tokens: frozenset[str], limit: int, filters=None,
             max_df: float | None = None) -> list[tuple[int, float]]:
        """``max_df``: words (as stemmed) in more than that share of chunks are left out of the
        query, unless nothing would be left (then the two rarest stay); without it, the
        common-terms candidate selection below."""
        if not tokens:
            return []
        lex = self._lexemes(query)
        if not lex:  # nothing but stop words or punctuation
            return []
        where, wargs = self._where(tokens, filters)
        sql = ("SELECT rowid, ts_rank(tsv, q) AS s FROM chunks c, to_tsquery('simple', %s) q,"
               f" to_tsquery('simple', %s) m WHERE {where} AND tsv @@ m ORDER BY s DESC, rowid LIMIT %s")
        if max_df is not None and 0 < max_df < 1:
            lex = rare = self._rare_exact(lex, max_df)
        else:
            freqs = self._term_freqs()
            rare = [w for w in lex if freqs.get(w, 0.0) <= self.COMMON_TERM_FREQ] or lex
        rows = self.db.execute(sql, [_or(lex), _or(rare), *wargs, limit]).fetchall()
        if len(rows) < limit and len(rare) < len(lex):  # fewer than asked: the common words may match more
            rows = self.db.execute(sql, [_or(lex), _or(lex), *wargs, limit]).fetchall()
        return [(r["rowid"], float(r["s"])) for r in rows]

    EF_SEARCH_MIN = 200  # HNSW candidate list (pgvector's hnsw.ef_search) at least this: recall vs speed

    def vector(self, qvec, tokens: frozenset[str], limit: int, filters=None) -> list[tuple[int, float]]:
        import numpy as np

        if not tokens:
            return []
        where, wargs = self._where(tokens, filters)
        args = [_vec_text(np.asarray(qvec, dtype=np.float32)), *wargs, limit]
        sql = f"SELECT rowid, embedding <=> %s::vector AS d FROM chunks c WHERE {where} ORDER BY d LIMIT %s"
        with self.tx() as db:
            db.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            db.execute(f"SET LOCAL hnsw.ef_search = {min(1000, max(self.EF_SEARCH_MIN, 2 * int(limit)))}")
            rows = db.execute(sql, args).fetchall()
            if len(rows) < limit:  # a small readable set: the index scan gave up; exact scan instead
                db.execute("SET LOCAL enable_indexscan = off")
                rows = db.execute(sql, args).fetchall()
                db.execute("SET LOCAL enable_indexscan = on")  # inside a read snapshot, later reads use indexes
        rows.sort(key=lambda r: (r["d"], r["rowid"]))  # relaxed order: re-sort the few rows we got
        return [(r["rowid"], 1.0 - float(r["d"])) for r in rows]

    def doc_ids(self, rowids) -> dict[int, str]:
        return {r["rowid"]: r["doc_id"] for r in self.db.execute(
            "SELECT rowid, doc_id FROM chunks WHERE rowid = ANY(%s)", (list(rowids),))}

    _MARK = "HighlightAll=true, StartSel=\x02, StopSel=\x03"

    def highlights(self, query: str, rowids: list[int]) -> dict[str, list[tuple[int, int]]]:
        """chunk_id -> (start, end) spans in its text of the terms full text matched (ts_headline
        with the index's configuration, so stems match as they do in the search)."""
        lex = self._lexemes(query)
        if not lex or not rowids:
            return {}
        rows = self.db.execute(
            "SELECT chunk_id, text, ts_headline('english', text, to_tsquery('simple', %s),"
            " 'HighlightAll=true, StartSel=' || chr(2) || ', StopSel=' || chr(3)) AS marked"
            " FROM chunks WHERE rowid = ANY(%s) AND tsv @@ to_tsquery('simple', %s)",
            (_or(lex), list(rowids), _or(lex))).fetchall()
        out = {}
        for r in rows:
            spans = marked_spans(r["marked"], r["text"])
            if spans:
                out[r["chunk_id"]] = spans
        return out

    def neighbours(self, hits: list[Hit], n: int, tokens: frozenset[str], filters=None) -> None:
        """Fill hit.context_before / context_after with up to ``n`` adjacent chunks of the same
        document, under the same ACL and filters (a gap ends the run)."""
        where, wargs = self._where(tokens, filters)
        for h in hits:
            rows = self.db.execute(
                "SELECT c.idx, c.text, h.idx AS hit_idx FROM chunks h JOIN chunks c ON c.doc_id=h.doc_id"
                f" AND c.idx<>h.idx AND c.idx BETWEEN h.idx-%s AND h.idx+%s WHERE h.chunk_id=%s AND {where}"
                " ORDER BY c.idx", [n, n, h.chunk_id, *wargs]).fetchall()
            if rows:
                h.context_before, h.context_after = context_runs({r["idx"]: r["text"] for r in rows},
                                                                 rows[0]["hit_idx"], n)

    def hits(self, scored: list[tuple[int, float, int | None, int | None]]) -> list[Hit]:
        if not scored:
            return []
        return to_hits({r["rowid"]: r for r in self.db.execute(HIT_SQL + "= ANY(%s)", ([x[0] for x in scored],))},
                       scored)

    def _facet_rows(self, prefix: str, tokens: frozenset[str], k: int, f) -> list:
        where, wargs = self._where(tokens, f)
        return self.db.execute(
            "SELECT j.key, SUM((j.value ->> 1)::bigint) AS n, COUNT(*) AS chunks, COUNT(DISTINCT c.doc_id) AS docs,"
            " MIN((j.value ->> 0) COLLATE \"C\") AS name FROM chunks c, jsonb_each(c.entities::jsonb) j"
            f" WHERE {where} AND left(j.key, %s) = %s GROUP BY j.key ORDER BY n DESC, j.key COLLATE \"C\" LIMIT %s",
            [*wargs, len(prefix), prefix, k]).fetchall()

    def _audit_lock(self, db) -> None:
        db.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))  # one chain, many writers

    # -- lineage: the dialect's parts (ingest.stores.lineage_sql) ------------------
    def _audit_chunk_filter(self, chunk_ids: list[str]) -> tuple[str, list]:
        return ("EXISTS (SELECT 1 FROM jsonb_array_elements(audit.results::jsonb) j WHERE j->>0 = ANY(%s))",
                [chunk_ids])

    def _swap_vectors(self, db, model_id: str, now: float) -> int:
        """Vectors come from ``emb_cache`` (float32 bytes) through a temporary table. Same size:
        one UPDATE. Another size: a new column beside the old one, filled, swapped in by rename,
        and its HNSW index built, all in this transaction (searches wait on its lock, then see
        the new model whole)."""
        import numpy as np

        rows = db.execute("SELECT e.text_hash, e.vec FROM emb_cache e WHERE e.model_id=%s AND e.text_hash IN"
                          " (SELECT embed_hash FROM chunks)", (model_id,)).fetchall()
        old_dim = int(db.execute("SELECT value FROM meta WHERE key='dim'").fetchone()["value"])
        dim = len(rows[0]["vec"]) // 4 if rows else old_dim
        db.execute(f"CREATE TEMP TABLE model_swap(text_hash text PRIMARY KEY, v vector({dim})) ON COMMIT DROP")
        with db.cursor().copy("COPY model_swap(text_hash, v) FROM STDIN") as cp:
            for r in rows:
                cp.write_row((r["text_hash"], _vec_text(np.frombuffer(bytes(r["vec"]), dtype=np.float32))))
        target = "embedding"
        if dim != old_dim:
            db.execute("DROP INDEX IF EXISTS chunks_embedding")
            db.execute(f"ALTER TABLE chunks ADD COLUMN embedding_new vector({dim})")
            target = "embedding_new"
        n = db.execute(f"UPDATE chunks c SET {target}=s.v, model_id=%s, embedded_at=%s FROM model_swap s"
                       " WHERE s.text_hash=c.embed_hash", (model_id, now)).rowcount
        if dim != old_dim:
            db.execute("ALTER TABLE chunks DROP COLUMN embedding")
            db.execute("ALTER TABLE chunks RENAME COLUMN embedding_new TO embedding")
            db.execute("ALTER TABLE chunks ALTER COLUMN embedding SET NOT NULL")
            db.execute("CREATE INDEX chunks_embedding ON chunks USING hnsw(embedding vector_cosine_ops)")
            db.execute("UPDATE meta SET value=%s WHERE key='dim'", (str(dim),))
        return n


def _or(lexemes: list[str]) -> str:
    """Normalised lexemes -> a tsquery text that ORs them (quoted: taken verbatim)."""
    return " | ".join("'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in lexemes)


def _vec_text(v) -> str:
    """pgvector's text form; float32 -> repr round-trips exactly."""
    return "[" + ",".join(map(repr, v.tolist())) + "]"

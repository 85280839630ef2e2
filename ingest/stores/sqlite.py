"""The embedded default store: one SQLite file (WAL) holding the registry, chunks,
an FTS5 index, vectors, the embedding cache, the outcome log and the audit log.

Applying a document is one transaction: the registry row, its ACL rows and all its
chunks (text, FTS, vector) change together or not at all. Safe for one writer and
many readers (WAL); writers from several processes serialise on SQLite's lock.

Vector search needs no SQLite extension: vectors are float32 blobs, scored exactly
with numpy over the chunks the caller may read (the ACL is applied to the candidate
set before scoring and limiting, so ``k`` results are ``k`` readable results). Both
retrievals live in ``ingest.stores.sqlite_search`` (fast paths at 100k+ chunks).
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from acl.model import ACL
from ingest.embedding import default_model_id

from ingest.stores.base import ChunkRecord, DocRecord, Hit
from ingest.stores.common import (CHUNK_COLS, DOC_COLS, HIT_SQL, OUTBOX_DDL, QUEUE_DDL, context_runs, doc_values,
                     flags_with_acl, flagged, marked_spans, to_hits, upsert_doc_sql, use_wal)
from ingest.stores.operations_sql import GroupsMixin, OperationsMixin
from ingest.stores.outbox_sql import OutboxMixin
from ingest.stores.quality_sql import QUALITY_DDL, QualityMixin
from ingest.stores.registry_sql import RegistryMixin
from ingest.stores.unit import UnitMixin, held_write
from ingest.stores.embed_inputs import SQLITE_EMBED_INPUTS, run_migration
from ingest.stores.lineage_sql import MIGRATION_4, LineageMixin
from ingest.stores.filters import Filters, sqlite_where
from ingest.stores.nlp_sql import SQLITE_ENT_PENDING, SQLITE_NLP, FacetsMixin
from ingest.stores.sqlite_search import SQLiteSearchMixin

SCHEMA_VERSION = 10

# version -> statements that bring a store from the version before up to it
MIGRATIONS: dict[int, list[str]] = {
    2: [  # child documents (attachments, archive members) and quality reports
        "ALTER TABLE documents ADD COLUMN parent_id TEXT",
        "ALTER TABLE documents ADD COLUMN quality TEXT",
        "CREATE INDEX IF NOT EXISTS documents_parent ON documents(parent_id)",
    ],
    3: [  # DMS connectors: one persisted change cursor per source (ingest.sources.connector)
        "CREATE TABLE IF NOT EXISTS cursors(source TEXT PRIMARY KEY, cursor TEXT NOT NULL, updated_at REAL)",
    ],
    4: MIGRATION_4,  # labels, provenance, audit format and append-only triggers, model history
    5: [  # observability (ingest.obs): stage timings and causing event per outcome; quality over time
        "ALTER TABLE outcomes ADD COLUMN trace TEXT",
        "CREATE INDEX IF NOT EXISTS outcomes_doc ON outcomes(doc_id)",
        *[stmt.format(serial="INTEGER PRIMARY KEY", real="REAL") for stmt in QUALITY_DDL],
    ],
    6: [stmt.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", real="REAL") for stmt in OUTBOX_DDL],  # outbox for secondary stores
    # the queue: source version of the indexed state (stale tasks are dropped), dead letters
    7: [stmt.format(serial="INTEGER PRIMARY KEY", real="REAL", bigint="INTEGER") for stmt in QUEUE_DDL],
    # what the model embeds per chunk: section context and embed hash (backfill: ingest.stores.embed_inputs)
    8: SQLITE_EMBED_INPUTS,
    9: SQLITE_NLP,  # document metadata, entities per chunk, entity cache (ingest.stores.nlp_sql)
    10: SQLITE_ENT_PENDING,  # the chunks whose entities are computed after indexing (ingest.stores.nlp_sql)
}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS documents(
  doc_id TEXT PRIMARY KEY,
  source TEXT NOT NULL,
  external_id TEXT NOT NULL,
  uri TEXT NOT NULL,
  mime TEXT,
  size INTEGER,
  mtime_ns INTEGER,
  content_version TEXT,
  acl_version TEXT,
  acl TEXT,
  status TEXT NOT NULL,
  error_code TEXT,
  error TEXT,
  extractor TEXT,
  extractor_version TEXT,
  n_chunks INTEGER NOT NULL DEFAULT 0,
  flags TEXT NOT NULL DEFAULT '[]',
  labels TEXT NOT NULL DEFAULT '[]',
  first_seen REAL,
  updated_at REAL,
  indexed_at REAL,
  UNIQUE(source, external_id)
);
CREATE INDEX IF NOT EXISTS documents_status ON documents(status);
CREATE TABLE IF NOT EXISTS doc_acl(
  doc_id TEXT NOT NULL,
  token TEXT NOT NULL,
  effect INTEGER NOT NULL,          -- 1 allow, 0 deny
  PRIMARY KEY(doc_id, token, effect)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_acl_token ON doc_acl(token, effect, doc_id);
CREATE TABLE IF NOT EXISTS chunks(
  rowid INTEGER PRIMARY KEY,
  chunk_id TEXT NOT NULL UNIQUE,
  doc_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  text TEXT NOT NULL,
  text_hash TEXT NOT NULL,
  tokens INTEGER,
  page INTEGER,
  section TEXT,
  doc_version TEXT,
  extractor TEXT,
  extractor_version TEXT,
  chunker TEXT,
  model_id TEXT,
  labels TEXT NOT NULL DEFAULT '[]',
  created_at REAL,
  vec BLOB NOT NULL,
  UNIQUE(doc_id, idx)
);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, section, tokenize='porter unicode61');
CREATE TABLE IF NOT EXISTS emb_cache(
  model_id TEXT NOT NULL,
  text_hash TEXT NOT NULL,
  vec BLOB NOT NULL,
  PRIMARY KEY(model_id, text_hash)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS outcomes(
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  batch TEXT,
  source TEXT,
  external_id TEXT,
  doc_id TEXT,
  action TEXT NOT NULL,             -- indexed | skipped | acl | moved | deleted | error
  parsed INTEGER NOT NULL DEFAULT 0,
  embedded INTEGER NOT NULL DEFAULT 0,
  detail TEXT
);
CREATE INDEX IF NOT EXISTS outcomes_batch ON outcomes(batch);
CREATE TABLE IF NOT EXISTS audit(
  id INTEGER PRIMARY KEY,
  ts REAL NOT NULL,
  principal TEXT,
  query TEXT,
  filters TEXT,
  results TEXT,
  prev_hash TEXT,
  hash TEXT
);
"""

# Groups that DMS connectors sync (acl.directory.SyncBackend); created in every store, old ones too.
_DIR_GROUPS = """
CREATE TABLE IF NOT EXISTS dir_groups(
  source TEXT NOT NULL, grp TEXT NOT NULL, member TEXT NOT NULL,
  kind TEXT NOT NULL,               -- user | group (a nested group of the same source)
  PRIMARY KEY(source, grp, kind, member)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dir_groups_member ON dir_groups(kind, member, source, grp)
"""

_WORD = re.compile(r"\w+", re.UNICODE)


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 query: every word quoted, OR-ed (BM25 ranks them)."""
    words = _WORD.findall(text.lower())
    if not words:
        return None
    seen = dict.fromkeys(words)
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in seen)


class _FileLock:
    """Striped fcntl locks: the kernel releases them if the holder dies."""

    STRIPES = 256

    def __init__(self, folder: Path, keys: tuple[str, ...]):
        import hashlib

        folder.mkdir(exist_ok=True)
        stripes = sorted({int(hashlib.sha1(k.encode()).hexdigest()[:8], 16) % self.STRIPES for k in keys})
        self.files = [folder / f"{n:03d}.lock" for n in stripes]
        self.fds: list[int] = []

    def __enter__(self):
        import fcntl

        for f in self.files:  # sorted: no lock-order deadlock
            fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.fds.append(fd)
        return self

    def __exit__(self, *exc):
        import fcntl

        for fd in reversed(self.fds):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        self.fds.clear()
        return False


class SQLiteStore(UnitMixin, SQLiteSearchMixin, RegistryMixin, LineageMixin, QualityMixin, FacetsMixin, OperationsMixin,
                  GroupsMixin, OutboxMixin):
    _PH = "?"

    _JSON_NUM = "json_extract({col}, '$.{key}')"
    _HAS_FLAG_LIKE = "EXISTS(SELECT 1 FROM json_each(documents.flags) j WHERE j.value LIKE ?)"

    def __init__(self, path: str | os.PathLike, model_id: str | None = None):
        self._model_id = model_id or default_model_id()  # a new store's; an existing one keeps its own
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self.migrate()

    # -- connections ----------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None or getattr(self._local, "pid", None) != os.getpid():
            c = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                check_same_thread=False)
            c.row_factory = sqlite3.Row
            use_wal(c)
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=60000")
            self._local.conn, self._local.pid = c, os.getpid()
        return c

    def close(self) -> None:
        c = getattr(self._local, "conn", None)
        if c is not None:
            c.close()
            self._local.conn = None

    class _Tx:
        """A write transaction; one inside another joins it (a unit of work: ``unit``)."""
        def __init__(self, db, local):
            self.db, self.local = db, local

        def __enter__(self):
            depth = getattr(self.local, "tx_depth", 0)
            if not depth:
                self.db.execute("BEGIN IMMEDIATE")
            self.local.tx_depth = depth + 1
            return self.db

        def __exit__(self, et, ev, tb):
            self.local.tx_depth -= 1
            if not self.local.tx_depth:
                self.db.execute("COMMIT" if et is None else "ROLLBACK")
            return False

    def tx(self):
        return self._Tx(self.db, self._local)

    @contextmanager
    def read_snapshot(self):
        """Every read inside sees one committed state (a WAL read transaction)."""
        db = self.db
        if db.in_transaction:  # already inside one: nest
            yield db
            return
        db.execute("BEGIN")
        try:
            yield db
        finally:
            db.execute("COMMIT")

    # -- schema ---------------------------------------------------------------------
    def schema_version(self) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _current(self, db) -> bool:
        """Nothing to migrate: the schema is this version's, the tables every store gets exist and
        the store has its uid. Read only, so opening a current store takes no write lock and
        commits nothing (``ingest search`` opens it once per process)."""
        try:
            row = db.execute("SELECT (SELECT value FROM meta WHERE key='schema_version'),"
                             " (SELECT value FROM meta WHERE key='uid'),"
                             " (SELECT COUNT(*) FROM sqlite_master WHERE name IN ('dir_groups', 'dir_groups_member'))"
                             ).fetchone()
        except sqlite3.OperationalError:  # no meta table: a new store
            return False
        return row[0] == str(SCHEMA_VERSION) and row[1] is not None and row[2] == 2

    def migrate(self) -> None:
        db = self.db
        if self._current(db):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT)")
            row = db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path}: store schema {current} is newer than this "
                                   f"version of ingest understands ({SCHEMA_VERSION}); upgrade ingest")
            if current < 1:  # a new store: the first schema, then every migration
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                db.execute("INSERT OR IGNORE INTO meta VALUES('gen', '0')")
                db.execute("INSERT OR IGNORE INTO meta VALUES('model_id', ?)", (self._model_id,))
                current = 1
            for version in range(current + 1, SCHEMA_VERSION + 1):
                run_migration(db, MIGRATIONS[version])
            for stmt in _DIR_GROUPS.split(";"):
                db.execute(stmt)
            # this store's identity (caches beside it are keyed by it: a store made again at the same path
            # and generation is not the same store)
            db.execute("INSERT OR IGNORE INTO meta VALUES('uid', ?)", (os.urandom(16).hex(),))
            db.execute("INSERT OR REPLACE INTO meta VALUES('schema_version', ?)", (str(SCHEMA_VERSION),))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    @property
    def model_id(self) -> str:
        return self.db.execute("SELECT value FROM meta WHERE key='model_id'").fetchone()[0]

    def lock(self, *keys: str):
        """Per-document lock across processes (fcntl, released by the kernel if we die)."""
        return _FileLock(self.path.with_name(self.path.name + ".locks"), keys)

    def _bump(self, db) -> None:
        db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key='gen'")

    def _generation(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key='gen'").fetchone()[0])

    # -- registry -------------------------------------------------------------------
    def get_doc(self, source: str, external_id: str) -> dict | None:
        r = self.db.execute("SELECT * FROM documents WHERE source=? AND external_id=?",
                            (source, external_id)).fetchone()
        return dict(r) if r else None

    def get_doc_by_id(self, doc_id: str) -> dict | None:
        r = self.db.execute("SELECT * FROM documents WHERE doc_id=?", (doc_id,)).fetchone()
        return dict(r) if r else None

    def docs_for_source(self, source: str) -> dict[str, dict]:
        """Top-level documents of a source (child documents live and die with their parent)."""
        rows = self.db.execute(
            "SELECT doc_id, external_id, size, mtime_ns, content_version, acl_version, status "
            "FROM documents WHERE source=? AND parent_id IS NULL", (source,))
        return {r["external_id"]: dict(r) for r in rows}

    def children_of(self, doc_id: str) -> dict[str, dict]:
        rows = self.db.execute("SELECT doc_id, external_id, content_version, acl_version, status, source_labels"
                               " FROM documents WHERE parent_id=?", (doc_id,))
        return {r["external_id"]: dict(r) for r in rows}

    @staticmethod
    def _acl_rows(db, doc_id: str, acl: ACL) -> None:
        db.execute("DELETE FROM doc_acl WHERE doc_id=?", (doc_id,))
        db.executemany("INSERT INTO doc_acl VALUES(?,?,1)", [(doc_id, t) for t in sorted(acl.allow)])
        db.executemany("INSERT INTO doc_acl VALUES(?,?,0)", [(doc_id, t) for t in sorted(acl.deny)])

    @held_write
    def apply(self, doc: DocRecord, chunks: list[ChunkRecord]) -> None:
        """Replace the document and all its chunks in one transaction."""
        now = time.time()
        flags = flags_with_acl(doc)
        with self.tx() as db:
            self._check_model(db, chunks)
            self._upsert_doc(db, doc, now, n_chunks=len(chunks), flags=flags, indexed=True)
            old = [r[0] for r in db.execute("SELECT rowid FROM chunks WHERE doc_id=?", (doc.doc_id,))]
            db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(r,) for r in old])
            db.execute("DELETE FROM chunks WHERE doc_id=?", (doc.doc_id,))
            labels = json.dumps(doc.labels)
            for c in chunks:
                cur = db.execute(
                    "INSERT INTO chunks(chunk_id, doc_id, idx, text, text_hash, tokens, page, section,"
                    " doc_version, extractor, extractor_version, chunker, model_id, labels, created_at, vec,"
                    " context, embed_hash, entities) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (c.chunk_id, doc.doc_id, c.index, c.text, c.text_hash, c.tokens, c.page, c.section,
                     doc.content_version, doc.extractor, doc.extractor_version, c.chunker, c.model_id,
                     labels, now, c.vector, c.context, c.embed_hash, json.dumps(c.entities or {}, sort_keys=True)))
                db.execute("INSERT INTO chunks_fts(rowid, text, section) VALUES(?,?,?)",
                           (cur.lastrowid, c.text, c.section))
            self._owe_entities(db, doc.doc_id, chunks)
            self._provenance(db, doc, now)
            self._acl_rows(db, doc.doc_id, doc.acl)
            self._outbox(db, [doc.doc_id], "apply")
            self._bump(db)

    def _upsert_doc(self, db, doc: DocRecord, now: float, *, n_chunks: int, flags: list[str],
                    indexed: bool) -> None:
        db.execute(self._q(upsert_doc_sql()), doc_values(doc, now, n_chunks=n_chunks, flags=flags, indexed=indexed))

    @held_write
    def record_failure(self, doc: DocRecord) -> None:
        """A document that could not be indexed: registry row with the reason, no chunks."""
        with self.tx() as db:
            old = [r[0] for r in db.execute("SELECT rowid FROM chunks WHERE doc_id=?", (doc.doc_id,))]
            db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(r,) for r in old])
            db.execute("DELETE FROM chunks WHERE doc_id=?", (doc.doc_id,))
            self._upsert_doc(db, doc, time.time(), n_chunks=0, flags=list(doc.flags), indexed=False)
            self._provenance(db, doc)
            self._acl_rows(db, doc.doc_id, doc.acl)
            self._outbox(db, [doc.doc_id], "apply")
            self._bump(db)

    @held_write
    def set_acl(self, doc_id: str, acl: ACL, *, size: int | None = None, mtime_ns: int | None = None) -> None:
        """ACL-only change: no re-extraction, no re-embedding. Child documents inherit it."""
        with self.tx() as db:
            ids = [doc_id, *self._descendants(db, doc_id)]
            for i, d in enumerate(ids):
                flags = json.loads(db.execute("SELECT flags FROM documents WHERE doc_id=?", (d,)).fetchone()[0])
                flags = [f for f in flags if f != "acl-unknown"] + ([] if acl.known else ["acl-unknown"])
                db.execute("UPDATE documents SET acl=?, acl_version=?, flags=?, updated_at=?,"
                           " size=COALESCE(?, size), mtime_ns=COALESCE(?, mtime_ns) WHERE doc_id=?",
                           (acl.to_json(), acl.version, json.dumps(flags), time.time(),
                            size if i == 0 else None, mtime_ns if i == 0 else None, d))
                self._acl_rows(db, d, acl)
            self._outbox(db, ids, "acl")
            self._bump(db)

    def _drop_docs(self, db, doc_ids: list[str]) -> None:
        for d in doc_ids:
            self._drop(db, d)

    @staticmethod
    def _drop(db, doc_id: str) -> None:
        old = [r[0] for r in db.execute("SELECT rowid FROM chunks WHERE doc_id=?", (doc_id,))]
        db.executemany("DELETE FROM chunks_fts WHERE rowid=?", [(r,) for r in old])
        db.execute("DELETE FROM chunks WHERE doc_id=?", (doc_id,))
        db.execute("DELETE FROM doc_acl WHERE doc_id=?", (doc_id,))
        db.execute("DELETE FROM documents WHERE doc_id=?", (doc_id,))

    # -- replication (outbox sinks) -------------------------------------------------
    def export_docs(self, doc_ids: list[str]) -> dict[str, dict | None]:
        """Current state of documents as plain data: {doc_id: {"doc": row, "chunks": [...]}} or None if gone."""
        out: dict[str, dict | None] = dict.fromkeys(doc_ids)
        with self.tx() as db:  # one snapshot of registry and chunks
            for d in doc_ids:
                r = db.execute(f"SELECT {', '.join(DOC_COLS)} FROM documents WHERE doc_id=?", (d,)).fetchone()
                if r is not None:
                    out[d] = {"doc": dict(r), "chunks": [dict(c) for c in db.execute(
                        f"SELECT {', '.join(CHUNK_COLS)}, vec FROM chunks WHERE doc_id=? ORDER BY idx", (d,))]}
        return out

    def replicate(self, states: dict[str, dict | None]) -> None:
        """Make these documents exactly as given (None: absent), in one transaction. Used by the
        outbox pump on a sink; writes no outbox rows of its own, so sinks never feed back."""
        with self.tx() as db:
            for doc_id, st in states.items():
                self._drop(db, doc_id)
                if st is None:
                    continue
                d = st["doc"]
                for (other,) in db.execute("SELECT doc_id FROM documents WHERE source=? AND external_id=?"
                                           " AND doc_id<>?", (d["source"], d["external_id"], doc_id)).fetchall():
                    self._drop(db, other)  # moved on in the primary; its own outbox row follows
                db.execute(f"INSERT INTO documents({', '.join(DOC_COLS)}) VALUES({', '.join('?' * len(DOC_COLS))})",
                           [d[c] for c in DOC_COLS])
                self._acl_rows(db, doc_id, ACL.from_json(d["acl"]))
                for c in st["chunks"]:
                    cur = db.execute(f"INSERT INTO chunks(doc_id, {', '.join(CHUNK_COLS)}, vec)"
                                     f" VALUES({', '.join('?' * (len(CHUNK_COLS) + 2))})",
                                     [doc_id, *[c[k] for k in CHUNK_COLS], c["vec"]])
                    db.execute("INSERT INTO chunks_fts(rowid, text, section) VALUES(?,?,?)",
                               (cur.lastrowid, c["text"], c["section"]))
            self._bump(db)

    # -- embedding cache ------------------------------------------------------------
    def cached_vectors(self, model_id: str, hashes: list[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            q = ",".join("?" * len(part))
            for r in self.db.execute(f"SELECT text_hash, vec FROM emb_cache WHERE model_id=? AND text_hash IN ({q})",
                                     (model_id, *part)):
                out[r[0]] = r[1]
        return out

    def cache_vectors(self, model_id: str, items: list[tuple[str, bytes]]) -> None:
        if items:
            with self.tx() as db:
                db.executemany("INSERT OR IGNORE INTO emb_cache VALUES(?,?,?)",
                               [(model_id, h, v) for h, v in items])

    # -- status ---------------------------------------------------------------------
    def status(self) -> dict:
        db = self.db
        by_status = {r[0]: r[1] for r in db.execute("SELECT status, COUNT(*) FROM documents GROUP BY status")}
        errors = [dict(r) for r in db.execute(
            "SELECT uri, status, error_code, error, updated_at FROM documents WHERE status<>'indexed'"
            " ORDER BY updated_at DESC LIMIT 200")]
        flags = flagged(db.execute(
            "SELECT uri, flags, quality FROM documents WHERE flags<>'[]' ORDER BY updated_at DESC LIMIT 200"))
        n_chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        sources = {r[0]: r[1] for r in db.execute("SELECT source, COUNT(*) FROM documents GROUP BY source")}
        by_reason: dict[str, dict[str, int]] = {}
        for r in db.execute("SELECT source, status, error_code, COUNT(*) FROM documents WHERE status<>'indexed'"
                            " GROUP BY source, status, error_code"):
            by_reason.setdefault(r[0], {})[f"{r[1]}:{r[2]}"] = r[3]
        for r in db.execute("SELECT source, j.value, COUNT(*) FROM documents, json_each(documents.flags) j"
                            " GROUP BY source, j.value"):
            by_reason.setdefault(r[0], {})[f"flagged:{r[1]}"] = r[2]
        return {"store": str(self.path), "schema_version": self.schema_version(),
                "documents": sum(by_status.values()), "by_status": by_status, "chunks": n_chunks,
                "sources": sources, "by_reason": by_reason, "errors": errors, "flagged": flags,
                "sinks": self.sink_lag()}

    # -- search ---------------------------------------------------------------------
    _READABLE = ("SELECT doc_id FROM doc_acl WHERE effect=1 AND token IN ({t})"
                 " EXCEPT SELECT doc_id FROM doc_acl WHERE effect=0 AND token IN ({t})")

    def _readable_sql(self, tokens: frozenset[str]) -> tuple[str, list[str]]:
        toks = sorted(tokens)
        q = ",".join("?" * len(toks))
        return self._READABLE.format(t=q), toks + toks

    def _temp_fts(self):
        """This thread's connection with its scratch FTS tables (temp: per connection, never
        in the store file), tokenised exactly as ``chunks_fts``."""
        db = self.db
        if getattr(self._local, "qt", None) is not db:
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.ingest_qt USING fts5(t, tokenize='porter unicode61')")
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.ingest_qt_v USING fts5vocab(temp, ingest_qt, instance)")
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.ingest_vocab USING fts5vocab(main, chunks_fts, row)")
            db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.ingest_inst"
                       " USING fts5vocab(main, chunks_fts, instance)")
            self._local.qt = db
        return db

    _TERMS_MAX = 100_000  # words whose index terms are kept (the tokenizer never changes)

    def _terms(self, words: list[str]) -> list[list[str]]:
        """Each word's terms as ``chunks_fts`` indexes it (porter stems, unicode61 splits), in
        order; through the scratch FTS table once per word and process."""
        db = self._temp_fts()  # this thread's connection with its scratch tables, cached words or not
        cache = self.__dict__.setdefault("_terms_cache", {})
        out = {w: cache[w] for w in words if w in cache}
        todo = [w for w in dict.fromkeys(words) if w not in out]
        if todo:
            db.execute("DELETE FROM temp.ingest_qt")
            db.executemany("INSERT INTO temp.ingest_qt(rowid, t) VALUES(?,?)", list(enumerate(todo)))
            found: dict[int, list[str]] = {}
            for i, term in db.execute("SELECT doc, term FROM temp.ingest_qt_v ORDER BY doc, offset"):
                found.setdefault(i, []).append(term)
            out.update((w, found.get(i, [])) for i, w in enumerate(todo))
            if len(cache) + len(todo) > self._TERMS_MAX:
                cache.clear()
            cache.update((w, out[w]) for w in todo)
        return [out[w] for w in words]

    def _common_terms_dropped(self, query: str, max_df: float) -> str:
        """The query without words whose stem is in more than ``max_df`` of all chunks (as the
        FTS index stems them: porter), unless nothing would be left (then the two rarest stay).

        BM25 gives such words little weight anyway (idf), but an OR over them matches most
        of the index, and FTS5 scores every match: at 100k chunks a query holding "of" or
        "the" would cost over 100 ms. Document frequencies are cached per store generation."""
        words = list(dict.fromkeys(_WORD.findall(query.lower())))
        if len(words) < 2:
            return query
        stems = [(i, term) for i, terms in enumerate(self._terms(words)) for term in terms]
        db = self._temp_fts()  # this thread's connection, with the vocabulary table
        gen = self._generation()
        cache = self.__dict__.get("_df_cache")
        if cache is None or cache[0] != gen:
            n = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
            dfs0: dict[str, int] = {}
            cache = self._df_cache = (gen, n, dfs0)
        _, n, dfs = cache
        df_of_word: dict[int, int] = {}
        for i, term in stems:
            df = dfs.get(term)
            if df is None:
                row = db.execute("SELECT doc FROM temp.ingest_vocab WHERE term=?", (term,)).fetchone()
                df = dfs[term] = row[0] if row else 0
            df_of_word[i] = min(df, df_of_word.get(i, df))
        keep = [w for i, w in enumerate(words) if df_of_word.get(i, 0) <= max_df * n]
        if not keep:
            keep = [words[i] for i in sorted(df_of_word, key=lambda i: df_of_word[i])[:2]]
        return " ".join(keep)

    def doc_ids(self, rowids) -> dict[int, str]:
        rowids = list(rowids)
        out: dict[int, str] = {}
        for i in range(0, len(rowids), 500):
            part = rowids[i:i + 500]
            out.update(self.db.execute(f"SELECT rowid, doc_id FROM chunks WHERE rowid IN ({','.join('?' * len(part))})",
                                       part).fetchall())
        return out

    def highlights(self, query: str, rowids: list[int]) -> dict[str, list[tuple[int, int]]]:
        """chunk_id -> (start, end) spans in its text of the terms the FTS index matched."""
        fq = fts_query(query)
        if not fq or not rowids:
            return {}
        # the hits' texts go through a scratch FTS table with the same tokenizer: exactly the
        # index's matching (stems included), at the cost of k rows, not of every match
        db = self._temp_fts()
        texts = db.execute(f"SELECT rowid, chunk_id, text FROM chunks WHERE rowid IN ({','.join('?' * len(rowids))})",
                           rowids).fetchall()
        db.execute("DELETE FROM temp.ingest_qt")
        db.executemany("INSERT INTO temp.ingest_qt(rowid, t) VALUES(?,?)", [(r[0], r[2]) for r in texts])
        by_rowid = {r[0]: (r[1], r[2]) for r in texts}
        out = {}
        for rowid, marked in db.execute("SELECT rowid, highlight(ingest_qt, 0, char(2), char(3)) FROM temp.ingest_qt"
                                        " WHERE ingest_qt MATCH ?", (fq,)).fetchall():
            chunk, text = by_rowid[rowid]
            spans = marked_spans(marked, text)
            if spans:
                out[chunk] = spans
        db.execute("DELETE FROM temp.ingest_qt")
        return out

    def neighbours(self, hits: list[Hit], n: int, tokens: frozenset[str], filters=None) -> None:
        """Fill hit.context_before / context_after with up to ``n`` adjacent chunks of the same
        document, under the same ACL and filters (a gap ends the run)."""
        rsql, rargs = self._readable_sql(tokens)
        fsql, fargs = sqlite_where(filters or Filters())
        for h in hits:
            rows = self.db.execute(
                "SELECT c.idx, c.text, h.idx FROM chunks h JOIN chunks c ON c.doc_id=h.doc_id AND c.idx<>h.idx"
                " AND c.idx BETWEEN h.idx-? AND h.idx+? JOIN documents d ON d.doc_id=c.doc_id"
                f" WHERE h.chunk_id=? AND c.doc_id IN ({rsql}) AND {fsql} ORDER BY c.idx",
                (n, n, h.chunk_id, *rargs, *fargs)).fetchall()
            by_idx = {r[0]: r[1] for r in rows}
            if not rows:
                continue
            h.context_before, h.context_after = context_runs(by_idx, rows[0][2], n)

    def hits(self, scored: list[tuple[int, float, int | None, int | None]]) -> list[Hit]:
        if not scored:
            return []
        q = ",".join("?" * len(scored))
        return to_hits({r["rowid"]: r for r in self.db.execute(HIT_SQL + f"IN ({q})", [x[0] for x in scored])}, scored)

    # -- lineage: the dialect's parts (ingest.stores.lineage_sql) ------------------
    def _audit_chunk_filter(self, chunk_ids: list[str]) -> tuple[str, list]:
        q = ",".join("?" * len(chunk_ids)) or "NULL"
        return ("EXISTS (SELECT 1 FROM json_each(audit.results) j"
                f" WHERE json_extract(j.value, '$[0]') IN ({q}))", chunk_ids)

    @staticmethod
    def _swap_vectors(db, model_id: str, now: float) -> int:
        return db.execute("UPDATE chunks SET vec=(SELECT vec FROM emb_cache e WHERE e.model_id=?"
                          " AND e.text_hash=chunks.embed_hash), model_id=?, embedded_at=?",
                          (model_id, model_id, now)).rowcount

    def _facet_rows(self, prefix: str, tokens: frozenset[str], k: int, f: Filters) -> list:
        rsql, rargs = self._readable_sql(tokens)
        fsql, fargs = sqlite_where(f)
        return self.db.execute(
            "SELECT j.key AS key, SUM(json_extract(j.value, '$[1]')) AS n, COUNT(*) AS chunks,"
            " COUNT(DISTINCT c.doc_id) AS docs, MIN(json_extract(j.value, '$[0]')) AS name"
            " FROM chunks c JOIN documents d ON d.doc_id=c.doc_id, json_each(c.entities) j"
            f" WHERE c.doc_id IN ({rsql}) AND {fsql} AND substr(j.key, 1, ?) = ?"
            " GROUP BY j.key ORDER BY n DESC, j.key LIMIT ?", (*rargs, *fargs, len(prefix), prefix, k)).fetchall()

"""SQL shared by both stores (the outbox, sink cursors, outcome summaries): written once with
``%s`` placeholders; the SQLite store swaps them for ``?``. Rows are read by column name,
which both ``sqlite3.Row`` and psycopg's ``dict_row`` support."""
from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from ingest.stores.base import Hit

# Same columns, same order as the SQLite store's documents table: registry rows compare equal.
_EXECUTORS: dict = {}
_EXECUTORS_LOCK = threading.Lock()


def process_executor(name: str, workers: int):
    """A thread pool by name, one per process (a forked child makes its own: threads do not
    survive a fork)."""
    with _EXECUTORS_LOCK:
        pid, ex = _EXECUTORS.get(name, (None, None))
        if pid != os.getpid():
            from concurrent.futures import ThreadPoolExecutor

            ex = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"ingest-{name}")
            _EXECUTORS[name] = (os.getpid(), ex)
        return ex


DOC_COLS = ("doc_id", "source", "external_id", "uri", "mime", "size", "mtime_ns", "content_version", "acl_version",
            "acl", "status", "error_code", "error", "extractor", "extractor_version", "n_chunks", "flags", "labels",
            "first_seen", "updated_at", "indexed_at", "parent_id", "quality", "metadata")
CHUNK_COLS = ("chunk_id", "idx", "text", "text_hash", "tokens", "page", "section", "doc_version", "extractor",
              "extractor_version", "chunker", "model_id", "labels", "created_at", "context", "embed_hash", "entities")

OUTBOX_DDL = [
    # every change of a document in a primary store, written in the change's own transaction; ids never
    # reused (AUTOINCREMENT in SQLite), since sink cursors point into them and pruning may empty the table
    """CREATE TABLE IF NOT EXISTS outbox(id {serial}, ts {real} NOT NULL, doc_id TEXT NOT NULL,
      op TEXT NOT NULL)""",
    # how far each secondary store (sink) has come; position -1: registered, never synced
    """CREATE TABLE IF NOT EXISTS sink_cursors(name TEXT PRIMARY KEY, url TEXT, position BIGINT NOT NULL DEFAULT 0,
      synced_at {real}, last_error TEXT, error_at {real})""",
]

QUEUE_DDL = [  # {serial} / {real} / {bigint} per dialect
    "ALTER TABLE documents ADD COLUMN source_seq {bigint}",
    "CREATE TABLE IF NOT EXISTS dead_letters(id {serial}, ts {real} NOT NULL, task TEXT NOT NULL,"
    " lane TEXT, args TEXT NOT NULL, kwargs TEXT NOT NULL, fault TEXT NOT NULL, reason TEXT NOT NULL,"
    " attempts INTEGER NOT NULL DEFAULT 0, requeued_at {real})",
]


def redact(url: str) -> str:
    """A URL without its password, for status output and logs."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", str(url))


# registry upsert; a store may add columns (PostgreSQL: allow_tokens, deny_tokens) after these
def find_doc(store, ref: str) -> dict:
    """A document by doc id, URI, or file path."""
    row = store.get_doc_by_id(ref)
    if row is None and "://" in ref:
        row = store.get_doc_by_uri(ref)
    if row is None and "://" not in ref:
        row = store.get_doc_by_uri(Path(os.path.abspath(os.path.expanduser(ref))).as_uri())
    if row is None:
        raise LookupError(f"no document {ref!r} in the store (looked it up as doc id, URI and path)")
    return row


_UPSERT_SET = ("source", "external_id", "uri", "mime", "size", "mtime_ns", "content_version", "acl_version", "acl",
               "status", "error_code", "error", "extractor", "extractor_version", "n_chunks", "flags", "labels",
               "updated_at", "parent_id", "quality", "metadata")


def upsert_doc_sql(extra: tuple[str, ...] = ()) -> str:
    cols = DOC_COLS + extra
    return (f"INSERT INTO documents({', '.join(cols)}) VALUES({', '.join(['%s'] * len(cols))})"
            " ON CONFLICT(doc_id) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in _UPSERT_SET + extra)
            + ", indexed_at=COALESCE(excluded.indexed_at, documents.indexed_at)")


def doc_values(doc, now: float, *, n_chunks: int, flags: list[str], indexed: bool) -> list:
    """A DocRecord as the values of DOC_COLS."""
    return [doc.doc_id, doc.source, doc.external_id, doc.uri, doc.mime, doc.size, doc.mtime_ns, doc.content_version,
            doc.acl.version, doc.acl.to_json(), str(doc.status), None if doc.error_code is None else str(doc.error_code), doc.error, doc.extractor,
            doc.extractor_version, n_chunks, json.dumps(flags), json.dumps(doc.labels), now, now,
            now if indexed else None, doc.parent_id, json.dumps(doc.quality) if doc.quality is not None else None,
            json.dumps(doc.metadata or {}, sort_keys=True)]


HIT_SQL = ("SELECT c.rowid, c.chunk_id, c.doc_id, c.text, c.page, c.section, c.doc_version, c.labels, c.extractor,"
           " c.model_id, d.uri, d.acl, d.flags, d.metadata, c.entities FROM chunks c JOIN documents d ON d.doc_id=c.doc_id WHERE c.rowid ")


def to_hits(rows: dict, scored: list[tuple[int, float, int | None, int | None]]) -> list[Hit]:
    """Rows of HIT_SQL by rowid -> hits in the ranked order (rows deleted meanwhile are skipped)."""
    out = []
    for rowid, score, br, vr in scored:
        r = rows.get(rowid)
        if r is None:  # deleted between ranking and fetch
            continue
        acl = json.loads(r["acl"]) if r["acl"] else {}
        labels = json.loads(r["labels"]) + [f"flag:{f}" for f in json.loads(r["flags"])]
        out.append(Hit(r["chunk_id"], r["doc_id"], score, r["text"], r["uri"], r["page"], r["section"] or "",
                       r["doc_version"], labels, acl, r["extractor"], r["model_id"], br, vr,
                       metadata=json.loads(r["metadata"] or "{}"), entities=hit_entities(r["entities"])))
    return out


def hit_entities(stored: str | None) -> dict[str, int]:
    """A chunk's stored entities (``{"TYPE:key": [display, count]}``) as ``{"TYPE:display": count}``."""
    out: dict[str, int] = {}
    for key, (display, n) in json.loads(stored or "{}").items():
        name = f"{key.split(':', 1)[0]}:{display}"
        out[name] = out.get(name, 0) + n
    return out


def marked_spans(marked: str, text: str) -> list[tuple[int, int]]:
    """(start, end) spans of a text whose matches are wrapped in \x02 ... \x03; none when the
    unmarked text differs from ``text`` (a text holding the marker characters gets none)."""
    spans: list[tuple[int, int]] = []
    plain: list[str] = []
    start = 0
    for ch in marked:
        if ch == "\x02":
            start = len(plain)
        elif ch == "\x03":
            spans.append((start, len(plain)))
        else:
            plain.append(ch)
    return spans if "".join(plain) == text else []


def context_runs(by_idx: dict[int, str], i: int, n: int) -> tuple[list[str], list[str]]:
    """Texts of up to ``n`` chunks right before and after chunk ``i`` (a gap ends a run)."""
    before: list[str] = []
    after: list[str] = []
    for j in range(i - 1, i - n - 1, -1):
        if j not in by_idx:
            break
        before.insert(0, by_idx[j])
    for j in range(i + 1, i + n + 1):
        if j not in by_idx:
            break
        after.append(by_idx[j])
    return before, after


def flagged(rows) -> list[dict]:
    out = []
    for r in rows:
        f = dict(r)
        q = f.pop("quality")
        f["flags"] = json.loads(f["flags"])
        f["reasons"] = (json.loads(q) or {}).get("reasons", []) if q else []
        out.append(f)
    return out


def diff_by_doc(a, b, differ, limit: int) -> list[str]:
    """At most ``limit`` lines saying how ``a`` and ``b`` (each with ``all_doc_ids()``) differ:
    ``differ(doc_ids)`` yields one line per differing document of a batch of 200 ids."""
    ids = sorted(set(a.all_doc_ids()) | set(b.all_doc_ids()))
    out: list[str] = []
    for i in range(0, len(ids), 200):
        for line in differ(ids[i:i + 200]):
            out.append(line)
            if len(out) >= limit:
                return out
    return out


def flags_with_acl(doc) -> list[str]:
    """A document's flags, with ``acl-unknown`` when its ACL could not be read."""
    flags = list(doc.flags)
    if not doc.acl.known and "acl-unknown" not in flags:
        flags.append("acl-unknown")
    return flags


class SQLBase:
    """What every SQL mixin needs from its store: ``db`` (a connection), ``tx()`` (a transaction),
    ``_q`` (the driver's placeholder for the ``%s`` the shared SQL is written with)."""

    _PH = "%s"  # the driver's placeholder
    db: Any

    def tx(self) -> Any:
        raise NotImplementedError

    def read_snapshot(self) -> Any:
        raise NotImplementedError

    def _bump(self, db) -> None:
        """Advance the store's generation (caches keyed by it are dropped)."""
        raise NotImplementedError

    def _outbox(self, db, doc_ids, op: str) -> None:
        """Queue a change of these documents for the secondary stores (in ``db``'s transaction)."""
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        return sql if self._PH == "%s" else sql.replace("%s", self._PH)

    def _audit_lock(self, db) -> None:
        """Serialise the audit hash chain (SQLite's BEGIN IMMEDIATE already does)."""


def use_wal(conn: sqlite3.Connection, timeout: float = 60.0) -> None:
    """Put a SQLite connection's file in WAL mode (the mode persists in the file).

    Switching takes the file alone for a moment, and SQLite answers "database is locked" at
    once, without its busy handler, while another process is opening the same new file (two
    ``ingest add`` on one new store, each with its embedded broker): retried here until
    ``timeout``. A file already in WAL mode costs one read and takes no lock."""
    deadline, delay = time.monotonic() + timeout, 0.005
    while True:
        try:
            if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.25, delay * 2)

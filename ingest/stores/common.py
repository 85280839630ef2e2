"""SQL shared by both stores (the outbox, sink cursors, outcome summaries): written once with
``%s`` placeholders; the SQLite store swaps them for ``?``. Rows are read by column name,
which both ``sqlite3.Row`` and psycopg's ``dict_row`` support."""
from __future__ import annotations

import json
import os
import re
import threading
import time

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
            doc.acl.version, doc.acl.to_json(), doc.status, doc.error_code, doc.error, doc.extractor,
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
    spans, plain, start = [], [], 0
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
    before, after = [], []
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


class OutboxMixin:
    """SQL both stores run as is: outbox, sink cursors, the outcome log, DMS cursors, synced groups."""

    _PH = "%s"  # the driver's placeholder

    def _q(self, sql: str) -> str:
        return sql if self._PH == "%s" else sql.replace("%s", self._PH)

    def _audit_lock(self, db) -> None:
        """Serialise the audit hash chain (SQLite's BEGIN IMMEDIATE already does)."""

    def _outbox(self, db, doc_ids, op: str) -> None:
        now = time.time()
        db.cursor().executemany(self._q("INSERT INTO outbox(ts, doc_id, op) VALUES(%s,%s,%s)"),
                                [(now, d, op) for d in doc_ids])

    # -- outcomes (progress, counters) ----------------------------------------------
    def log_outcome(self, *, action: str, source: str | None, external_id: str | None,
                    doc_id: str | None, batch: str | None = None, parsed: int = 0, embedded: int = 0,
                    detail: str | None = None, trace: dict | None = None) -> None:
        """``trace``: stage timings, versions and the causing event (ingest.obs.trace)."""
        self.db.execute(self._q("INSERT INTO outcomes(ts, batch, source, external_id, doc_id, action, parsed,"
                                " embedded, detail, trace) VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"),
                        (time.time(), batch, source, external_id, doc_id, action, parsed, embedded, detail,
                         json.dumps(trace) if trace is not None else None))

    def batch_progress(self, batch: str) -> int:
        return self.db.execute(self._q("SELECT COUNT(DISTINCT external_id) AS n FROM outcomes WHERE batch=%s"),
                               (batch,)).fetchone()["n"]

    def counters(self, since_id: int = 0) -> dict:
        r = self.db.execute(self._q("SELECT COALESCE(SUM(parsed),0) AS p, COALESCE(SUM(embedded),0) AS e,"
                                    " COALESCE(MAX(id),0) AS m FROM outcomes WHERE id>%s"), (since_id,)).fetchone()
        return {"parsed": int(r["p"]), "embedded": int(r["e"]), "last_id": int(r["m"])}

    def all_doc_ids(self) -> list[str]:
        return [r["doc_id"] for r in self.db.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def batch_outcomes(self, batch: str) -> dict[str, int]:
        rows = self.db.execute(self._q("SELECT action, COUNT(*) AS n FROM outcomes WHERE batch=%s GROUP BY action"),
                               (batch,))
        return {r["action"]: r["n"] for r in rows}

    def batch_ends(self, batch: str) -> dict[str, list[tuple[str, str | None]]]:
        """How each document of a batch ended (its last outcome): ``indexed``, ``flagged``
        (indexed with quality flags), ``quarantined`` (with a reason), ``failed``,
        ``dead-lettered``, or ``unchanged`` (skipped, moved, deleted, ...); each a list of
        (external id, reason)."""
        rows = self.db.execute(self._q(
            "SELECT o.id, o.external_id, o.action, o.detail, d.status, d.flags FROM outcomes o"
            " LEFT JOIN documents d ON d.source=o.source AND d.external_id=o.external_id"
            " WHERE o.batch=%s ORDER BY o.id"), (batch,))
        last = {r["external_id"]: r for r in rows}
        ends: dict[str, list] = {k: [] for k in ("indexed", "flagged", "quarantined", "failed", "dead-lettered",
                                                 "unchanged")}
        for ext, r in last.items():
            if r["action"] == "indexed":
                k = "flagged" if r["flags"] and r["flags"] != "[]" else "indexed"
            elif r["action"] == "dead-letter":
                k = "dead-lettered"
            elif r["action"] == "error":
                k = "quarantined" if r["status"] == "quarantined" else "failed"
            else:
                k = "unchanged"
            ends[k].append((ext, r["detail"]))
        return ends

    # -- outbox cursors (this store as a primary) -----------------------------------
    def outbox_rows(self, after: int, limit: int) -> list[tuple[int, str]]:
        return [(r["id"], r["doc_id"]) for r in self.db.execute(
            self._q("SELECT id, doc_id FROM outbox WHERE id>%s ORDER BY id LIMIT %s"), (after, limit))]

    def outbox_entries(self, after: int, limit: int) -> list[tuple[int, str, str]]:
        """(id, doc_id, op) after ``after``, in id order."""
        return [(r["id"], r["doc_id"], r["op"]) for r in self.db.execute(
            self._q("SELECT id, doc_id, op FROM outbox WHERE id>%s ORDER BY id LIMIT %s"), (after, limit))]

    def outbox_head(self) -> int:
        return self.db.execute("SELECT COALESCE(MAX(id), 0) AS m FROM outbox").fetchone()["m"]

    def sink_cursor(self, name: str) -> int | None:
        r = self.db.execute(self._q("SELECT position FROM sink_cursors WHERE name=%s"), (name,)).fetchone()
        return None if r is None else r["position"]

    def set_sink_cursor(self, name: str, url: str, position: int) -> None:
        self.db.execute(self._q(
            "INSERT INTO sink_cursors(name, url, position, synced_at) VALUES(%s,%s,%s,%s)"
            " ON CONFLICT(name) DO UPDATE SET url=excluded.url, position=excluded.position,"
            " synced_at=excluded.synced_at, last_error=NULL, error_at=NULL"), (name, redact(url), position, time.time()))

    def sink_error(self, name: str, url: str, error: str) -> None:
        self.db.execute(self._q(
            "INSERT INTO sink_cursors(name, url, position, last_error, error_at) VALUES(%s,%s,-1,%s,%s)"
            " ON CONFLICT(name) DO UPDATE SET last_error=excluded.last_error, error_at=excluded.error_at"),
            (name, redact(url), error, time.time()))

    def prune_outbox(self) -> int:
        """Drop the rows every registered sink has (all rows when no sink is registered: a sink
        added later starts from a full snapshot)."""
        return self.db.execute("DELETE FROM outbox WHERE id <= COALESCE((SELECT MIN(position) FROM sink_cursors),"
                               " (SELECT MAX(id) FROM outbox))").rowcount

    # -- DMS change cursors (ingest.sources.connector) ----------------------------------
    def get_cursor(self, source: str) -> str | None:
        r = self.db.execute(self._q("SELECT cursor FROM cursors WHERE source=%s"), (source,)).fetchone()
        return r["cursor"] if r else None

    def set_cursor(self, source: str, cursor: str | None) -> None:
        """Persist (or with None, forget) a source's change cursor."""
        if cursor is None:
            self.db.execute(self._q("DELETE FROM cursors WHERE source=%s"), (source,))
        else:
            self.db.execute(self._q("INSERT INTO cursors(source, cursor, updated_at) VALUES(%s,%s,%s) ON CONFLICT(source)"
                                    " DO UPDATE SET cursor=excluded.cursor, updated_at=excluded.updated_at"),
                            (source, cursor, time.time()))

    # -- the queue: source versions, dead letters (workers) ------------------------------
    def set_source_seq(self, doc_id: str, seq: int) -> None:
        """The source's version (e.g. ctime_ns, a DMS revision) of the state just indexed."""
        self.db.execute(self._q("UPDATE documents SET source_seq=%s WHERE doc_id=%s AND (source_seq IS NULL"
                                " OR source_seq<%s)"), (seq, doc_id, seq))

    def add_dead_letter(self, *, task: str, lane: str | None, args: list, kwargs: dict, fault: str, reason: str,
                        attempts: int) -> int:
        return self.db.execute(self._q(
            "INSERT INTO dead_letters(ts, task, lane, args, kwargs, fault, reason, attempts)"
            " VALUES(%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id"),
            (time.time(), task, lane, json.dumps(args), json.dumps(kwargs), fault, reason, attempts)).fetchone()["id"]

    def dead_letters(self, ids: list[int] | None = None, *, include_requeued: bool = False) -> list[dict]:
        sql, args = "SELECT * FROM dead_letters WHERE 1=1", []
        if not include_requeued:
            sql += " AND requeued_at IS NULL"
        if ids is not None:
            sql += f" AND id IN ({','.join(['%s'] * len(ids)) or 'NULL'})"
            args = list(ids)
        out = []
        for r in self.db.execute(self._q(sql + " ORDER BY id"), args):
            d = dict(r)
            d["args"], d["kwargs"] = json.loads(d["args"]), json.loads(d["kwargs"])
            out.append(d)
        return out

    def mark_requeued(self, dead_id: int) -> None:
        self.db.execute(self._q("UPDATE dead_letters SET requeued_at=%s WHERE id=%s"), (time.time(), dead_id))

    # -- synced groups (acl.directory.SyncBackend) ------------------------------------
    def sync_groups(self, source: str, edges: list[tuple[str, str, str]]) -> None:
        """Replace every (group, member, kind) of ``source`` in one transaction."""
        with self.tx() as db:
            db.execute(self._q("DELETE FROM dir_groups WHERE source=%s"), (source,))
            db.cursor().executemany(self._q("INSERT INTO dir_groups(source, grp, member, kind) VALUES(%s,%s,%s,%s)"
                                            " ON CONFLICT DO NOTHING"), [(source, *e) for e in edges])

    def groups_of(self, user: str) -> list[tuple[str, str]]:
        """(source, group) for every synced group that holds ``user``, directly or nested."""
        return [(r["source"], r["grp"]) for r in self.db.execute(self._q(
            "WITH RECURSIVE g(source, grp) AS (SELECT source, grp FROM dir_groups WHERE kind='user' AND member=%s"
            " UNION SELECT d.source, d.grp FROM dir_groups d JOIN g ON d.kind='group' AND d.source=g.source"
            " AND d.member=g.grp) SELECT source, grp FROM g ORDER BY source, grp"), (user,))]

    def get_doc_by_uri(self, uri: str) -> dict | None:
        """The document at ``uri`` (a top-level one before a child that shares it)."""
        r = self.db.execute(self._q(f"SELECT {', '.join(DOC_COLS)}, source_labels, redactions FROM documents"
                                    " WHERE uri=%s ORDER BY parent_id IS NOT NULL LIMIT 1"), (uri,)).fetchone()
        return dict(r) if r else None

    def sink_lag(self) -> list[dict]:
        """Per sink: cursor, rows not yet applied, age of the oldest of them (seconds), last error."""
        now = time.time()
        out = []
        for r in self.db.execute(
                "SELECT s.name, s.url, s.position, s.synced_at, s.last_error, s.error_at,"
                " (SELECT COUNT(*) FROM outbox o WHERE o.id > s.position) AS lag_rows,"
                " (SELECT MIN(ts) FROM outbox o WHERE o.id > s.position) AS oldest FROM sink_cursors s"
                " ORDER BY s.name"):
            r = dict(r)
            oldest = r.pop("oldest")
            r["lag_seconds"] = round(now - oldest, 3) if oldest is not None else 0.0
            r["snapshot_pending"] = r["position"] < 0  # registered, but never reached: a full copy comes first
            out.append(r)
        return out

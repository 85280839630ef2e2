"""Labels, provenance, the tamper-evident audit log and the embedding-model switch, kept
apart from the core stores. :class:`LineageMixin` is written once with ``%s`` placeholders
(``self._q`` swaps them for the driver's) and read by column name; both stores inherit it and
supply the few dialect-specific parts (``read_snapshot``, ``_audit_chunk_filter``,
``_VEC_DIM``, ``_swap_vectors``). The PostgreSQL migration that mirrors this one is
``ingest.stores.postgres.MIGRATIONS[3]``.

Schema 4 adds (see :data:`MIGRATION_4`):

* ``documents.source_labels`` (JSON list) and ``documents.redactions`` (JSON ``{label: n}``);
* ``chunks.source`` and ``chunks.embedded_at`` (provenance; ``created_at`` stays the chunking time);
* ``audit.v`` (record format: NULL for records written by schema 2, 1 from now on), indexes on
  ``audit(ts)`` and ``audit(principal)``, and triggers that refuse UPDATE and DELETE on ``audit``;
* ``model_history`` (every switch of the active embedding model);
* meta keys ``audit_head`` (``[id, hash]`` of the newest audit record, so a cut-off tail is
  seen) and ``reembed_target`` (a model being built, while ``ingest reembed`` runs).

Audit hash chain, format 1: ``hash = sha256(prev_hash + canonical_json(record))`` where the record
is ``{"v", "id", "ts", "principal", "query", "filters", "results", "prev"}`` and canonical JSON has
sorted keys, no spaces and UTF-8. Records of format 0 (schema 2) are checked with their own rule.

Anchor (outside the store): with ``$INGEST_AUDIT_ANCHOR`` or ``[audit] anchor`` set to a file path,
every audit record appends ``{"id", "hash"}`` to that file (opened ``O_APPEND | O_NOFOLLOW``, 0600),
once its transaction committed. ``audit_verify`` then also requires the newest anchored record to be in
the store with the anchored hash, so deleting every record, cutting the tail (and moving
``audit_head``), or rewriting a record and re-chaining everything after it are found: whoever can
write the store cannot rewrite the anchor, if the anchor is kept where they cannot write (another
user's file, ``chattr +a``, a log shipped off the host).

Model switch: vectors for the new model are built into ``emb_cache`` (keyed by model and the
chunk's ``embed_hash``, the hash of what the model embeds: section context and text, as the
pipeline embeds it; see ``ingest.stores.embed_inputs``) while searches keep using the vectors in
``chunks``; when every chunk has a vector for the new model, one transaction copies them into
``chunks``, sets the active model and bumps the generation. A search reads in one snapshot, so it
sees all old or all new.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

from ingest.config import settings
from ingest.embedding import embed_text, split_model_id, text_hash
from ingest.stores.base import ModelChanged
from ingest.stores.common import SQLBase

MIGRATION_4: list[str] = [
    "ALTER TABLE documents ADD COLUMN source_labels TEXT NOT NULL DEFAULT '[]'",
    "ALTER TABLE documents ADD COLUMN redactions TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE chunks ADD COLUMN source TEXT",
    "ALTER TABLE chunks ADD COLUMN embedded_at REAL",
    "UPDATE chunks SET source=(SELECT source FROM documents d WHERE d.doc_id=chunks.doc_id),"
    " embedded_at=created_at",
    "ALTER TABLE audit ADD COLUMN v INTEGER",
    "CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts)",
    "CREATE INDEX IF NOT EXISTS audit_principal ON audit(principal, ts)",
    "CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END",
    "CREATE TABLE IF NOT EXISTS model_history(id INTEGER PRIMARY KEY, ts REAL NOT NULL, from_model TEXT,"
    " to_model TEXT NOT NULL, chunks INTEGER NOT NULL)",
    # the head of a schema-2 chain, so that a record removed from its end is seen
    "INSERT OR REPLACE INTO meta(key, value) SELECT 'audit_head', json_array(id, hash) FROM audit"
    " WHERE id=(SELECT MAX(id) FROM audit)",
]

AUDIT_FORMAT = 1
ANCHOR_ENV = "INGEST_AUDIT_ANCHOR"
ANCHOR_TAIL = 1 << 16  # bytes read from the end of the anchor file (appenders may interleave a little)

log = logging.getLogger("ingest.audit")


def anchor_path() -> str | None:
    """The audit anchor file: ``$INGEST_AUDIT_ANCHOR``, else ``[audit] anchor`` in the configuration."""
    return settings().audit_anchor


def anchor_append(path: str, rid: int, digest: str) -> None:
    """One line ``{"id": .., "hash": ..}``, written in one ``write`` to a file opened for appending."""
    line = (json.dumps({"id": rid, "hash": digest}, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def anchor_newest(path: str) -> tuple[int, str] | None:
    """The (id, hash) with the highest id among the last lines of the anchor file; None when it has none.
    Raises ValueError when the file is not an anchor (a link, not a regular file, unreadable lines)."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"audit anchor {path} is not a regular file")
        start = max(0, st.st_size - ANCHOR_TAIL)
        data = os.pread(fd, st.st_size - start, start)
    finally:
        os.close(fd)
    lines = data.split(b"\n")
    if start:
        lines = lines[1:]  # the first may be cut
    best = None
    for raw in lines:
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
            rid, digest = int(rec["id"]), str(rec["hash"])
        except (ValueError, KeyError, TypeError):
            raise ValueError(f"audit anchor {path}: a line is not an anchor record") from None
        if best is None or rid > best[0]:
            best = (rid, digest)
    return best


def _jsonable(v):
    if isinstance(v, (set, frozenset)):
        return sorted(v, key=str)
    raise TypeError(f"audit: {type(v).__name__} value {v!r} cannot be recorded")


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_jsonable)


def audit_hash(row: dict) -> str:
    """The hash a stored audit row must carry, by its record format."""
    filters = json.loads(row["filters"]) if row["filters"] else {}
    results = json.loads(row["results"]) if row["results"] else []
    prev = row["prev_hash"] or ""
    if row["v"] is None:  # format 0, written by schema 2
        body = json.dumps([row["ts"], row["principal"], row["query"], filters, results], sort_keys=True)
        return hashlib.sha256((prev + body).encode()).hexdigest()
    if row["v"] == 1:
        rec = {"v": 1, "id": row["id"], "ts": row["ts"], "principal": row["principal"], "query": row["query"],
               "filters": filters, "results": results, "prev": prev}
        return hashlib.sha256((prev + canonical(rec)).encode()).hexdigest()
    raise ValueError(f"audit record {row['id']}: unknown record format {row['v']!r}")


class LineageMixin(SQLBase):
    """Needs from the store: ``db``, ``tx()``, ``_q()``, ``_audit_lock(db)``, ``_bump(db)``, and:"""

    _VEC_DIM = "length(vec) / 4"  # SQL: the dimension of a chunk's stored vector

    def _audit_chunk_filter(self, chunk_ids: list[str]) -> tuple[str, list]:
        """SQL (and its arguments) true for audit rows whose results hold one of ``chunk_ids``."""
        raise NotImplementedError

    def _swap_vectors(self, db, model_id: str, now: float) -> int:
        """Inside the switch's transaction: give every chunk its ``model_id`` vector from
        ``emb_cache``, set ``model_id`` and ``embedded_at``; returns the number of chunks."""
        raise NotImplementedError

    def _meta_set(self, db, key: str, value: str | None) -> None:
        if value is None:
            db.execute(self._q("DELETE FROM meta WHERE key=%s"), (key,))
        else:
            db.execute(self._q("INSERT INTO meta(key, value) VALUES(%s,%s) ON CONFLICT(key) DO UPDATE"
                               " SET value=excluded.value"), (key, value))

    def _meta_get(self, db, key: str) -> str | None:
        r = db.execute(self._q("SELECT value FROM meta WHERE key=%s"), (key,)).fetchone()
        return r["value"] if r else None

    # -- writing provenance (called inside apply / record_failure) ------------------------
    def _check_model(self, db, chunks) -> None:
        """Refuse chunks embedded with a model this store has switched away from (a worker
        that had not yet noticed the switch), or with the store's model run by another backend
        (``m`` vs ``m#onnx-int8``, see ingest.embedding): they would mix models in one index."""
        active = self._meta_get(db, "model_id")
        others = {c.model_id for c in chunks} - {active}
        if not others:
            return
        base = split_model_id(active)[0] if active else None
        same_weights = sorted(m for m in others if m and m.rpartition("#")[0 if "#" in m else 2] == base)
        if same_weights:
            raise ModelChanged(f"chunks embedded with {', '.join(same_weights)} but the store's model is {active}: "
                               "vectors of two embedding backends are never mixed in one store; embed with "
                               f"{active} or switch the store with `ingest reembed --model ID`")
        q = ",".join(["%s"] * len(others))
        wrong = {r["from_model"] for r in db.execute(
            self._q(f"SELECT from_model FROM model_history WHERE from_model IN ({q})"), sorted(others))}
        if wrong:
            raise ModelChanged(f"chunks embedded with {', '.join(sorted(wrong))} but the store's active model "
                               f"is {active}; embed again with the active model")

    def _provenance(self, db, doc, now: float | None = None) -> None:
        db.execute(self._q("UPDATE documents SET source_labels=%s, redactions=%s WHERE doc_id=%s"),
                   (json.dumps(list(doc.source_labels)), json.dumps(doc.redactions or {}), doc.doc_id))
        if now is not None:
            db.execute(self._q("UPDATE chunks SET source=%s, embedded_at=%s WHERE doc_id=%s"),
                       (doc.source, now, doc.doc_id))

    # -- audit ------------------------------------------------------------------------------
    def audit(self, principal: str, query: str, filters: dict | None, results: list[tuple[str, str | None]]) -> int:
        """Append one search record to the hash chain; returns its id."""
        with self.tx() as db:
            self._audit_lock(db)
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            rid, prev = (last["id"] + 1, last["hash"]) if last else (1, "")
            row: dict[str, Any] = {"id": rid, "ts": time.time(), "principal": principal, "query": query,
                   "filters": canonical(filters or {}), "results": canonical([list(r) for r in results]),
                   "prev_hash": prev, "v": AUDIT_FORMAT}
            row["hash"] = audit_hash(row)
            cols = ("id", "ts", "principal", "query", "filters", "results", "prev_hash", "hash", "v")
            db.execute(self._q(f"INSERT INTO audit({', '.join(cols)}) VALUES({', '.join(['%s'] * len(cols))})"),
                       [row[c] for c in cols])
            self._meta_set(db, "audit_head", json.dumps([rid, row["hash"]]))
        self._anchor(rid, row["hash"])
        return rid

    _anchor_file: str | None | bool = False  # False: not resolved yet

    def _anchor_path(self) -> str | None:
        if self._anchor_file is False:
            self._anchor_file = anchor_path()
        return self._anchor_file if isinstance(self._anchor_file, str) else None

    def _anchor(self, rid: int, digest: str) -> None:
        path = self._anchor_path()
        if path:
            try:
                anchor_append(path, rid, digest)
            except OSError as e:  # the record is committed; verify still holds up to the last anchored one
                log.error("audit: could not append record %d to the anchor %s: %s", rid, path, e.strerror or e)

    def audit_checkpoint(self) -> dict:
        """Append the current head to the anchor (e.g. when the anchor is first configured)."""
        path = self._anchor_path()
        if not path:
            raise ValueError(f"no audit anchor configured: set ${ANCHOR_ENV} or [audit] anchor")
        last = self.db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        if last is None:
            return {"anchor": path, "id": None}
        anchor_append(path, int(last["id"]), last["hash"])
        return {"anchor": path, "id": int(last["id"])}

    def audit_records(self, *, principal: str | None = None, since: float | None = None,
                      until: float | None = None, chunk_ids: list[str] | None = None,
                      limit: int | None = 100) -> list[dict]:
        """Audit records, oldest first (the newest ``limit`` of those that match)."""
        where: list[str] = []
        args: list = []
        if principal is not None:
            where.append("principal=%s")
            args.append(principal)
        if since is not None:
            where.append("ts>=%s")
            args.append(since)
        if until is not None:
            where.append("ts<%s")
            args.append(until)
        if chunk_ids is not None:
            sql, more = self._audit_chunk_filter(list(chunk_ids))
            where.append(sql)
            args.extend(more)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        out = []
        for r in reversed(self.db.execute(self._q(sql), args).fetchall()):
            d = dict(r)
            d["filters"] = json.loads(d["filters"]) if d["filters"] else {}
            d["results"] = [{"chunk_id": c, "doc_version": v} for c, v in json.loads(d["results"] or "[]")]
            out.append(d)
        return out

    def audit_verify(self) -> dict:
        """Walk the chain; report the first record whose content or link is wrong."""
        expected_prev, n, last = "", 0, None
        for r in self.db.execute("SELECT * FROM audit ORDER BY id"):
            row = dict(r)
            n += 1
            if (row["prev_hash"] or "") != expected_prev:
                why = ("the first record does not start the chain" if last is None else
                       f"its prev_hash does not match the hash of record {last}: a record was removed, "
                       f"inserted or rewritten before it")
                return {"ok": False, "records": n, "first_broken": row["id"], "reason": why}
            try:
                ok = audit_hash(row) == row["hash"]
            except (ValueError, TypeError) as e:
                return {"ok": False, "records": n, "first_broken": row["id"], "reason": str(e)}
            if not ok:
                return {"ok": False, "records": n, "first_broken": row["id"],
                        "reason": "its content does not match its hash: the record was altered"}
            expected_prev, last = row["hash"], row["id"]
        head = self._meta_get(self.db, "audit_head")
        if head is not None:
            hid, hhash = json.loads(head)
            if last is None or hid != last or hhash != expected_prev:
                return {"ok": False, "records": n, "first_broken": hid if last is None or hid > last else last,
                        "reason": f"the newest record should be {hid} with hash {hhash[:12]}…; "
                                  f"records were removed from the end of the log"}
        return self._verify_anchor(n, last)

    def _verify_anchor(self, n: int, last: int | None) -> dict:
        ok = {"ok": True, "records": n, "first_broken": None, "reason": None}
        path = self._anchor_path()
        if not path:
            return ok
        try:
            newest = anchor_newest(path)
        except FileNotFoundError:
            newest = None
        except (OSError, ValueError) as e:
            return {**ok, "ok": False, "anchor": path, "reason": f"the audit anchor cannot be read: {e}"}
        if newest is None:
            if last is None:
                return {**ok, "anchor": path}
            return {**ok, "ok": False, "anchor": path, "first_broken": 1,
                    "reason": f"the anchor {path} holds no record but the log has {n}: the anchor was lost, or "
                              f"was configured after these records (then run `ingest audit --checkpoint`)"}
        aid, ahash = newest
        r = self.db.execute(self._q("SELECT hash FROM audit WHERE id=%s"), (aid,)).fetchone()
        if r is None:
            return {**ok, "ok": False, "anchor": path, "first_broken": (last or 0) + 1,
                    "reason": f"record {aid} is anchored outside the store but missing from it: records were "
                              f"deleted (the log now ends at {last or 'nothing'})"}
        if r["hash"] != ahash:
            return {**ok, "ok": False, "anchor": path, "first_broken": aid,
                    "reason": f"record {aid}'s hash differs from the anchored one ({ahash[:12]}…): the log was "
                              f"rewritten and re-chained up to it"}
        return {**ok, "anchor": path, "anchored": aid}

    # -- lineage ------------------------------------------------------------------------------
    def lineage(self, ref: str, searches: int = 20) -> dict | None:
        """The chain behind a chunk id or a document URI: source -> document version ->
        extraction -> labels -> chunks (chunker, model, times) -> the searches that returned them."""
        db, q = self.db, self._q
        c = db.execute(q("SELECT doc_id FROM chunks WHERE chunk_id=%s"), (ref,)).fetchone()
        if c is not None:
            doc_id, only = c["doc_id"], ref
        else:
            d = db.execute(q("SELECT doc_id FROM documents WHERE uri=%s OR doc_id=%s"), (ref, ref)).fetchone()
            if d is None:
                return None
            doc_id, only = d["doc_id"], None
        doc = dict(db.execute(q("SELECT doc_id, source, external_id, uri, parent_id, mime, size, content_version,"
                                " acl_version, status, error_code, error, extractor, extractor_version, n_chunks,"
                                " flags, labels, source_labels, redactions, quality, first_seen, updated_at,"
                                " indexed_at FROM documents WHERE doc_id=%s"), (doc_id,)).fetchone())
        for k in ("flags", "labels", "source_labels", "redactions", "quality"):
            doc[k] = json.loads(doc[k]) if doc[k] else None
        sql = ("SELECT chunk_id, idx, page, section, tokens, text_hash, doc_version, source, extractor,"
               f" extractor_version, chunker, model_id, labels, created_at, embedded_at, {self._VEC_DIM} AS vector_dim"
               " FROM chunks WHERE doc_id=%s" + (" AND chunk_id=%s" if only else "") + " ORDER BY idx")
        chunks = []
        for r in db.execute(q(sql), (doc_id, only) if only else (doc_id,)):
            ch = dict(r)
            ch["labels"] = json.loads(ch["labels"])
            ch["vector_dim"] = int(ch["vector_dim"])
            chunks.append(ch)
        ids = {ch["chunk_id"] for ch in chunks}
        seen = [{"audit_id": rec["id"], "ts": rec["ts"], "principal": rec["principal"],
                 "returned": [r for r in rec["results"] if r["chunk_id"] in ids]}
                for rec in self.audit_records(chunk_ids=sorted(ids), limit=searches)]
        models = [dict(r) for r in db.execute("SELECT ts, from_model, to_model, chunks FROM model_history ORDER BY id")]
        return {"document": doc, "chunks": chunks, "searches": seen, "model_history": models}

    # -- model switch -----------------------------------------------------------------------------
    _MISSING = " FROM chunks c WHERE NOT EXISTS (SELECT 1 FROM emb_cache e WHERE e.model_id=%s AND e.text_hash=c.embed_hash)"

    def model_missing(self, model_id: str, limit: int) -> list[tuple[str, str]]:
        """(embed hash, embed text) of chunks that have no vector for ``model_id`` yet: what the
        pipeline embeds (``ingest.embedding.embed_text(text, context)``) and the key it caches it by."""
        rows = self.db.execute(self._q(
            "SELECT chunk_id, embed_hash, text, context FROM chunks WHERE rowid IN (SELECT MIN(c.rowid)"
            + self._MISSING + " GROUP BY c.embed_hash LIMIT %s)"), (model_id, limit)).fetchall()
        out = []
        for r in rows:
            t = embed_text(r["text"], r["context"])
            if text_hash(t) != r["embed_hash"]:
                raise ValueError(f"chunk {r['chunk_id']}: its embed_hash {r['embed_hash']!r} is not the hash of its "
                                 "section context and text; the row was not written by a store's apply (re-index "
                                 "its document)")
            out.append((r["embed_hash"], t))
        return out

    def model_coverage(self, model_id: str) -> tuple[int, int]:
        """(chunks that have a ``model_id`` vector, all chunks)."""
        r = self.db.execute(self._q("SELECT COUNT(*) AS n, (SELECT COUNT(*)" + self._MISSING + ") AS missing"
                                    " FROM chunks"), (model_id,)).fetchone()
        return int(r["n"]) - int(r["missing"]), int(r["n"])

    def set_reembed_target(self, model_id: str | None) -> None:
        with self.tx() as db:
            self._meta_set(db, "reembed_target", model_id)

    def switch_model(self, model_id: str) -> int | None:
        """Make ``model_id`` the active model in one transaction, if every chunk has its
        vector; returns the number of chunks switched, or None when some still lack one."""
        with self.tx() as db:
            if db.execute(self._q("SELECT EXISTS(SELECT 1" + self._MISSING + ") AS m"), (model_id,)).fetchone()["m"]:
                return None
            old = self._meta_get(db, "model_id")
            now = time.time()
            n = self._swap_vectors(db, model_id, now)
            self._meta_set(db, "model_id", model_id)
            self._meta_set(db, "reembed_target", None)
            db.execute(self._q("INSERT INTO model_history(ts, from_model, to_model, chunks) VALUES(%s,%s,%s,%s)"),
                       (now, old, model_id, n))
            self._bump(db)
            return n

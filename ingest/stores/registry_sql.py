"""Registry reads and writes both stores run as is (:class:`ingest.stores.base.Registry`); the
dialect-specific rest (apply, set_acl, dropping rows ...) lives in each store."""
from __future__ import annotations

import time

from ingest.stores.common import DOC_COLS, SQLBase
from ingest.stores.unit import held_write


class RegistryMixin(SQLBase):
    """Shared registry SQL."""

    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None:
        """Same content, new stat (e.g. `touch`): remember it so the next scan skips fast."""
        with self.tx() as db:
            db.execute(self._q("UPDATE documents SET size=%s, mtime_ns=%s, updated_at=%s WHERE doc_id=%s"),
                       (size, mtime_ns, time.time(), doc_id))
            self._outbox(db, [doc_id], "touch")

    def move(self, doc_id: str, external_id: str, uri: str) -> None:
        """A rename: the document keeps its id, chunks and vectors."""
        with self.tx() as db:
            gone = [r["doc_id"] for r in db.execute(self._q(
                "SELECT doc_id FROM documents WHERE source=(SELECT source FROM documents WHERE doc_id=%s)"
                " AND external_id=%s AND doc_id<>%s AND status<>'indexed'"), (doc_id, external_id, doc_id))]
            for d in gone:
                db.execute(self._q("DELETE FROM documents WHERE doc_id=%s"), (d,))
            self._outbox(db, gone, "delete")
            old = db.execute(self._q("SELECT external_id, uri FROM documents WHERE doc_id=%s"), (doc_id,)).fetchone()
            db.execute(self._q("UPDATE documents SET external_id=%s, uri=%s, updated_at=%s WHERE doc_id=%s"),
                       (external_id, uri, time.time(), doc_id))
            kids = self._descendants(db, doc_id)
            for d in kids:  # children are addressed <parent>!<member>
                db.execute(self._q("UPDATE documents SET external_id=%s || substr(external_id, %s),"
                                   " uri=%s || substr(uri, %s) WHERE doc_id=%s"),
                           (external_id, len(old["external_id"]) + 1, uri, len(old["uri"]) + 1, d))
            self._outbox(db, [doc_id, *kids], "move")
            self._bump(db)

    @held_write
    def delete(self, doc_id: str) -> None:
        """Remove a document, its chunks, and its child documents, in one transaction."""
        with self.tx() as db:
            ids = [doc_id, *self._descendants(db, doc_id)]
            self._drop_docs(db, ids)
            self._outbox(db, ids, "delete")
            self._bump(db)

    def _descendants(self, db, doc_id: str) -> list[str]:
        """Every document below ``doc_id`` (attachments, archive members, theirs ...)."""
        return [r["id"] for r in db.execute(self._q(
            "WITH RECURSIVE d(id) AS (SELECT doc_id FROM documents WHERE parent_id=%s"
            " UNION SELECT documents.doc_id FROM documents JOIN d ON documents.parent_id=d.id) SELECT id FROM d"),
            (doc_id,))]

    def doc_id_taken(self, doc_id: str) -> bool:
        return self.db.execute(self._q("SELECT 1 FROM documents WHERE doc_id=%s"), (doc_id,)).fetchone() is not None

    def _drop_docs(self, db, doc_ids: list[str]) -> None:
        """Delete these documents and every row that belongs to them (in ``db``'s transaction)."""
        raise NotImplementedError

    def all_doc_ids(self) -> list[str]:
        return [r["doc_id"] for r in self.db.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def get_doc_by_uri(self, uri: str) -> dict | None:
        """The document at ``uri`` (a top-level one before a child that shares it)."""
        r = self.db.execute(self._q(f"SELECT {', '.join(DOC_COLS)}, source_labels, redactions FROM documents"
                                    " WHERE uri=%s ORDER BY parent_id IS NOT NULL LIMIT 1"), (uri,)).fetchone()
        return dict(r) if r else None

    def set_source_seq(self, doc_id: str, seq: int) -> None:
        """The source's version (e.g. ctime_ns, a DMS revision) of the state just indexed."""
        self.db.execute(self._q("UPDATE documents SET source_seq=%s WHERE doc_id=%s AND (source_seq IS NULL"
                                " OR source_seq<%s)"), (seq, doc_id, seq))

    def doc_counts(self) -> list[tuple[str, str, int]]:
        """(source, status, documents) for every pair that has documents."""
        return [(r["source"], r["status"], int(r["n"])) for r in self.db.execute(
            "SELECT source, status, COUNT(*) AS n FROM documents GROUP BY source, status ORDER BY source, status")]

    def not_indexed(self, limit: int = 200) -> list[dict]:
        """Documents that are not indexed (errors, quarantined), newest first."""
        return [dict(r) for r in self.db.execute(self._q(
            "SELECT source, uri, status, error_code, error, updated_at FROM documents WHERE status<>'indexed'"
            " ORDER BY updated_at DESC LIMIT %s"), (limit,))]

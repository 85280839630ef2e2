"""Registry reads and writes both stores run as is (:class:`ingest.stores.base.Registry`); the
dialect-specific rest (apply, set_acl, move, delete ...) lives in each store."""
from __future__ import annotations

import time

from ingest.stores.common import DOC_COLS, SQLBase


class RegistryMixin(SQLBase):
    """Shared registry SQL."""

    def touch(self, doc_id: str, size: int, mtime_ns: int) -> None:
        """Same content, new stat (e.g. `touch`): remember it so the next scan skips fast."""
        with self.tx() as db:
            db.execute(self._q("UPDATE documents SET size=%s, mtime_ns=%s, updated_at=%s WHERE doc_id=%s"),
                       (size, mtime_ns, time.time(), doc_id))
            self._outbox(db, [doc_id], "touch")

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

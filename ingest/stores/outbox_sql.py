"""The outbox (every change of a document, in the change's own transaction) and the cursors of
the secondary stores fed from it (:class:`ingest.stores.base.Outbox`), for both stores."""
from __future__ import annotations

import time

from ingest.stores.common import SQLBase, redact


class OutboxMixin(SQLBase):
    """Outbox rows and sink cursors (ingest.stores.outbox)."""

    def _outbox(self, db, doc_ids, op: str) -> None:
        now = time.time()
        db.cursor().executemany(self._q("INSERT INTO outbox(ts, doc_id, op) VALUES(%s,%s,%s)"),
                                [(now, d, op) for d in doc_ids])

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

"""What happened to each document and what the queue keeps, for both stores:
:class:`ingest.stores.base.OperationsLog` (outcomes with traces, batches, dead letters, DMS change
cursors) and :class:`ingest.stores.base.GroupSync` (groups that DMS connectors report)."""
from __future__ import annotations

import json
import time

from ingest.stores.base import Action, BatchEnd
from ingest.stores.common import SQLBase


class OperationsMixin(SQLBase):
    """The outcome log, dead letters and DMS change cursors."""

    def log_outcome(self, *, action: str, source: str | None, external_id: str | None,
                    doc_id: str | None, batch: str | None = None, parsed: int = 0, embedded: int = 0,
                    detail: str | None = None, trace: dict | None = None) -> None:
        """``trace``: stage timings, versions and the causing event (ingest.obs.trace)."""
        self.db.execute(self._q("INSERT INTO outcomes(ts, batch, source, external_id, doc_id, action, parsed,"
                                " embedded, detail, trace) VALUES(%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"),
                        (time.time(), batch, source, external_id, doc_id, str(action), parsed, embedded, detail,
                         json.dumps(trace) if trace is not None else None))

    def counters(self, since_id: int = 0) -> dict:
        r = self.db.execute(self._q("SELECT COALESCE(SUM(parsed),0) AS p, COALESCE(SUM(embedded),0) AS e,"
                                    " COALESCE(MAX(id),0) AS m FROM outcomes WHERE id>%s"), (since_id,)).fetchone()
        return {"parsed": int(r["p"]), "embedded": int(r["e"]), "last_id": int(r["m"])}

    def batch_progress(self, batch: str) -> int:
        return self.db.execute(self._q("SELECT COUNT(DISTINCT external_id) AS n FROM outcomes WHERE batch=%s"),
                               (batch,)).fetchone()["n"]

    def batch_done(self, batch: str) -> set[str]:
        """The external ids of a batch's documents that have an outcome (what ``batch_progress`` counts)."""
        rows = self.db.execute(self._q("SELECT DISTINCT external_id FROM outcomes WHERE batch=%s"), (batch,))
        return {r["external_id"] for r in rows}

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
        ends: dict[str, list] = {k.value: [] for k in BatchEnd}
        for ext, r in last.items():
            if r["action"] == Action.INDEXED:
                k = BatchEnd.FLAGGED if r["flags"] and r["flags"] != "[]" else BatchEnd.INDEXED
            elif r["action"] == Action.DEAD_LETTER:
                k = BatchEnd.DEAD_LETTERED
            elif r["action"] == Action.ERROR:
                k = BatchEnd.QUARANTINED if r["status"] == "quarantined" else BatchEnd.FAILED
            else:
                k = BatchEnd.UNCHANGED
            ends[k].append((ext, r["detail"]))
        return ends

    def doc_outcomes(self, doc_id: str, source: str, external_id: str) -> list[dict]:
        """Every outcome of one document (also those logged before it had an id), oldest first."""
        return [dict(r) for r in self.db.execute(self._q(
            "SELECT id, ts, batch, action, parsed, embedded, detail, trace, external_id FROM outcomes"
            " WHERE doc_id=%s OR (doc_id IS NULL AND source=%s AND external_id=%s) ORDER BY id"),
            (doc_id, source, external_id))]

    def outcomes_after(self, last_id: int) -> list[dict]:
        """Outcomes (id, ts, source, action, trace) newer than ``last_id``, oldest first."""
        return [dict(r) for r in self.db.execute(self._q(
            "SELECT id, ts, source, action, trace FROM outcomes WHERE id>%s ORDER BY id"), (last_id,))]

    def last_indexed_outcomes(self) -> list[dict]:
        """Per source, its newest ``indexed`` outcome (source, ts, trace)."""
        return [dict(r) for r in self.db.execute(self._q(
            "SELECT source, ts, trace FROM outcomes WHERE id IN"
            " (SELECT MAX(id) FROM outcomes WHERE action=%s GROUP BY source)"), (Action.INDEXED.value,))]

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


class GroupsMixin(SQLBase):
    """Synced groups (acl.directory.SyncBackend)."""

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

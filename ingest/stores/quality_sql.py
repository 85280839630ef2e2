"""Extraction quality over time (:class:`ingest.stores.base.QualityLog`), as store methods: written once with ``%s``
placeholders (``self._q`` swaps them for the driver's), read by column name. ingest/obs
speaks no SQL; each store supplies two dialect parts: ``QualityMixin._JSON_NUM`` (a number
inside a JSON text column) and ``QualityMixin._HAS_FLAG_LIKE`` (a flag in the JSON list of
``documents.flags`` matching a LIKE pattern). Literals travel as parameters."""
from __future__ import annotations

from ingest.stores.common import SQLBase

# quality over time (SQLite schema 5, PostgreSQL schema 5); {serial} / {real} per dialect
QUALITY_DDL = [
    "CREATE TABLE IF NOT EXISTS quality_snapshots(source TEXT NOT NULL, period TEXT NOT NULL, ts {real} NOT NULL,"
    " documents INTEGER NOT NULL, share_empty {real}, share_flagged {real}, share_quarantined {real},"
    " ocr_confidence {real}, garbage_ratio {real}, PRIMARY KEY(source, period))",
    "CREATE TABLE IF NOT EXISTS quality_alerts(id {serial}, source TEXT NOT NULL,"
    " measure TEXT NOT NULL, baseline {real}, value {real}, since TEXT, message TEXT NOT NULL,"
    " raised_at {real} NOT NULL, cleared_at {real})",
]

GAUGES = ("share_empty", "share_flagged", "share_quarantined", "ocr_confidence", "garbage_ratio")
_ALERT_COLS = "source, measure, baseline, value, since, message, raised_at"


class QualityMixin(SQLBase):
    """Quality gauges, snapshots and alerts (ingest.obs.quality)."""

    # SQL: the number at ``{key}`` of the JSON object in ``{col}`` (NULL when absent)
    _JSON_NUM: str = ""
    # SQL: true when ``documents.flags`` holds a flag LIKE the pattern given as its one parameter
    _HAS_FLAG_LIKE: str = ""

    def _json_num(self, col: str, key: str) -> str:
        return self._JSON_NUM.format(col=col, key=key)

    def quality_gauges(self) -> dict[str, dict]:
        """Every source's gauges over its documents now: ``{source: {"documents": n, "share_empty": ...}}``."""
        from extractors.errors import EMPTY_CODES  # here: the extractors package is heavy to import

        def share(cond: str) -> str:
            return f"CAST(SUM(CASE WHEN {cond} THEN 1 ELSE 0 END) AS DOUBLE PRECISION) / COUNT(*)"

        rows = self.db.execute(self._q(
            "SELECT source, COUNT(*) AS documents,"
            f" {share('COALESCE(error_code, %s) IN (%s, %s)')} AS share_empty,"
            f" {share(self._HAS_FLAG_LIKE)} AS share_flagged,"
            f" {share('status = %s')} AS share_quarantined,"
            f" AVG({self._json_num('quality', 'ocr_confidence')}) AS ocr_confidence,"
            f" AVG({self._json_num('quality', 'bad_char_ratio')}) AS garbage_ratio"
            " FROM documents GROUP BY source"), ("", *[c.value for c in EMPTY_CODES], "quality:%", "quarantined")).fetchall()
        return {r["source"]: {k: (float(r[k]) if r[k] is not None and k != "documents" else r[k])
                              for k in ("documents", *GAUGES)} for r in rows}

    def save_quality_snapshot(self, period: str, ts: float, gauges: dict[str, dict]) -> None:
        """Write (or rewrite) the snapshot of every source in ``gauges`` for ``period``."""
        cols = ("source", "period", "ts", "documents", *GAUGES)
        with self.tx() as db:
            db.cursor().executemany(self._q(
                f"INSERT INTO quality_snapshots({', '.join(cols)}) VALUES({', '.join(['%s'] * len(cols))})"
                " ON CONFLICT(source, period) DO UPDATE SET "
                + ", ".join(f"{c}=excluded.{c}" for c in cols[2:])),
                [(s, period, ts, g["documents"], *[g[k] for k in GAUGES]) for s, g in gauges.items()])

    def quality_snapshots(self, source: str | None = None) -> list[dict]:
        """Snapshots (of one source or all), by source then period."""
        q = "SELECT * FROM quality_snapshots" + (" WHERE source=%s" if source else "") + " ORDER BY source, period"
        return [dict(r) for r in self.db.execute(self._q(q), (source,) if source else ())]

    def sync_quality_alerts(self, found: dict[tuple[str, str], dict], now: float) -> tuple[list[dict], list[tuple]]:
        """Make the open alerts exactly ``found`` ((source, measure) -> alert) in one transaction:
        update those still open, raise the new ones, clear the rest. Returns (raised, cleared keys)."""
        raised, cleared = [], []
        with self.tx() as db:
            open_ = {(r["source"], r["measure"]): r["id"] for r in db.execute(
                "SELECT id, source, measure FROM quality_alerts WHERE cleared_at IS NULL")}
            for key, a in found.items():
                if key in open_:
                    db.execute(self._q("UPDATE quality_alerts SET baseline=%s, value=%s, since=%s, message=%s"
                                       " WHERE id=%s"), (a["baseline"], a["value"], a["since"], a["message"], open_[key]))
                else:
                    db.execute(self._q(f"INSERT INTO quality_alerts({_ALERT_COLS}) VALUES(%s,%s,%s,%s,%s,%s,%s)"),
                               (*key, a["baseline"], a["value"], a["since"], a["message"], now))
                    raised.append(a)
            for key, id_ in open_.items():
                if key not in found:
                    db.execute(self._q("UPDATE quality_alerts SET cleared_at=%s WHERE id=%s"), (now, id_))
                    cleared.append(key)
        return raised, cleared

    def open_quality_alerts(self) -> list[dict]:
        return [dict(r) for r in self.db.execute(
            f"SELECT {_ALERT_COLS} FROM quality_alerts WHERE cleared_at IS NULL ORDER BY raised_at, source, measure")]

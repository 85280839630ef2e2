"""Lane depth and oldest-item age, read from the broker.

Every producer stamps its messages with an ``ingest_queued_at`` header (:func:`queued_header`);
the age of a lane is now minus the stamp of its oldest waiting message. Embedded SQLite broker
(kombu's SQL transport) and Redis (kombu keeps a lane as a list: LPUSH in, BRPOP out, so the
oldest message is at index -1) are read directly; other brokers report nothing.
"""
from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

HEADER = "ingest_queued_at"
LANES = ("interactive", "bulk", "maintenance")


def queued_header() -> dict:
    return {HEADER: time.time()}


def _stamp(payload: str | bytes | None) -> float | None:
    if not payload:
        return None
    try:
        v = (json.loads(payload).get("headers") or {}).get(HEADER)
    except (ValueError, AttributeError):
        return None
    return float(v) if isinstance(v, (int, float)) else None


def lane_stats(broker_url: str, now: float | None = None) -> dict[str, dict]:
    """``{lane: {"depth": n, "oldest_age": seconds | None}}`` for every lane."""
    now = time.time() if now is None else now
    if broker_url.startswith("sqla+sqlite:///"):
        raw = _sqlite(Path(broker_url[len("sqla+sqlite:///"):]))
    elif broker_url.startswith(("redis://", "rediss://", "unix://")):
        raw = _redis(broker_url)
    else:
        return {}
    out = {}
    for lane in sorted(set(LANES) | set(raw)):
        depth, stamp = raw.get(lane, (0, None))
        out[lane] = {"depth": depth, "oldest_age": None if stamp is None else max(0.0, now - stamp)}
    return out


def _sqlite(db: Path) -> dict[str, tuple[int, float | None]]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as c:
            rows = c.execute(
                "SELECT q.name, COUNT(m.id), (SELECT payload FROM kombu_message o WHERE o.queue_id=q.id"
                " AND o.visible=1 ORDER BY o.id LIMIT 1) FROM kombu_queue q LEFT JOIN kombu_message m"
                " ON m.queue_id=q.id AND m.visible=1 GROUP BY q.id").fetchall()
    except sqlite3.OperationalError:  # no broker tables yet: nothing was ever queued
        return {}
    return {name: (n, _stamp(payload)) for name, n, payload in rows}


def _redis(url: str) -> dict[str, tuple[int, float | None]]:
    import redis

    r = redis.Redis.from_url(url, socket_timeout=5)
    try:
        out = {}
        for lane in LANES:
            n = r.llen(lane)
            out[lane] = (n, _stamp(r.lindex(lane, -1)) if n else None)
        return out
    finally:
        r.close()

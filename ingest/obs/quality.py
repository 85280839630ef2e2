"""Quality over time: a snapshot per source and day, and alerts when a measure moves.

Each snapshot holds a source's gauges over its documents as they are now: the share that is
empty (``empty-file``, ``no-text``), flagged (a ``quality:*`` flag), quarantined, the mean OCR
confidence and the mean share of replacement/control characters. The current day's snapshot is
rewritten whenever someone looks (``ingest status``, ``/metrics``, the status page, the end of
``ingest add``), so each earlier day keeps the last state it had.

An alert compares today's value with the median of the source's snapshots in the trailing
window (``window_days``); it is raised when the value moved the wrong way by more than the
measure's threshold, logged once at WARNING, kept in ``quality_alerts`` while it holds, and
cleared when it no longer does. Configuration (all optional)::

    [quality.alerts]
    window_days = 7            # trailing window of daily snapshots
    min_documents = 3          # sources with fewer documents are not judged
    share-empty = 0.10         # absolute rise of a share (0.10 = 10 percentage points)
    share-flagged = 0.10
    share-quarantined = 0.10
    garbage-ratio = 0.05
    ocr-confidence = 15.0      # drop in mean confidence points (0-100)
    # a measure set to false is not alerted on
"""
from __future__ import annotations

import logging
import statistics
import time

from ingest.config import ConfigError, section

log = logging.getLogger("ingest.pipeline.quality")

# measure -> (column, +1 if a rise is bad / -1 if a drop is bad, default threshold, shown as a percentage)
MEASURES: dict[str, tuple[str, int, float, bool]] = {
    "share-empty": ("share_empty", 1, 0.10, True),
    "share-flagged": ("share_flagged", 1, 0.10, True),
    "share-quarantined": ("share_quarantined", 1, 0.10, True),
    "ocr-confidence": ("ocr_confidence", -1, 15.0, False),
    "garbage-ratio": ("garbage_ratio", 1, 0.05, True),
}
DAY = 86400.0


def period_of(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def rules(cfg: dict) -> tuple[dict[str, float], int, int]:
    """(measure -> threshold, window_days, min_documents) from ``[quality.alerts]``."""
    s = section(cfg, "quality.alerts")
    unknown = set(s) - set(MEASURES) - {"window_days", "min_documents"}
    if unknown:
        raise ConfigError(f"config [quality.alerts]: unknown key(s) {', '.join(sorted(unknown))}; "
                          f"known: window_days, min_documents, {', '.join(MEASURES)}")
    thresholds = {}
    for m, (_, _, default, _) in MEASURES.items():
        v = s.get(m, default)
        if v is False:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"config [quality.alerts] {m} = {v!r}: must be a number >= 0 or false")
        thresholds[m] = float(v)
    out = []
    for key, default in (("window_days", 7), ("min_documents", 3)):
        v = s.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"config [quality.alerts] {key} = {v!r}: must be a whole number >= 1")
        out.append(v)
    return thresholds, out[0], out[1]


def measure(store) -> dict[str, dict]:
    """Every source's quality gauges now: ``{source: {"documents": n, "share_empty": ...}}``."""
    return store.quality_gauges()


def snapshot(store, now: float | None = None, period: str | None = None) -> dict[str, dict]:
    """Write (or rewrite) the snapshot of every source for ``period`` (default: today, UTC)."""
    now = time.time() if now is None else now
    gauges = measure(store)
    store.save_quality_snapshot(period or period_of(now), now, gauges)
    return gauges


def history(store, source: str | None = None, limit: int = 60) -> dict[str, list[dict]]:
    """Snapshots per source, oldest first (the last ``limit`` periods of each)."""
    out: dict[str, list[dict]] = {}
    for r in store.quality_snapshots(source):
        out.setdefault(r["source"], []).append(r)
    return {s: rows[-limit:] for s, rows in out.items()}


def _fmt(v: float, pct: bool) -> str:
    return f"{v:.0%}" if pct else f"{v:.0f}"


def judge(store, cfg: dict, now: float | None = None) -> list[dict]:
    """The alerts that hold now (not persisted): one per (source, measure) that moved too far."""
    now = time.time() if now is None else now
    thresholds, window_days, min_docs = rules(cfg)
    today, start = period_of(now), period_of(now - window_days * DAY)
    found = []
    for source, rows in history(store, limit=10_000).items():
        cur = next((r for r in rows if r["period"] == today), None)
        window = [r for r in rows if start <= r["period"] < today]
        if cur is None or not window or cur["documents"] < min_docs:
            continue
        for m, thr in thresholds.items():
            col, sign, _, pct = MEASURES[m]
            vals = [r[col] for r in window if r[col] is not None]
            if cur[col] is None or not vals:
                continue
            base = statistics.median(vals)
            if (cur[col] - base) * sign <= thr:
                continue
            good = [r["period"] for r in window if r[col] is not None and (r[col] - base) * sign <= thr]
            since = (good or [window[-1]["period"]])[-1]
            found.append({"source": source, "measure": m, "baseline": base, "value": cur[col], "since": since,
                          "message": f"{m} for source {source} {'rose' if sign > 0 else 'fell'} from "
                                     f"{_fmt(base, pct)} to {_fmt(cur[col], pct)} since {since}"})
    return found


def evaluate(store, cfg: dict, now: float | None = None) -> list[dict]:
    """Persist what :func:`judge` finds: raise new alerts (WARNING, once), update held ones, clear
    the rest. Returns the open alerts."""
    now = time.time() if now is None else now
    found = {(a["source"], a["measure"]): a for a in judge(store, cfg, now)}
    raised, cleared = store.sync_quality_alerts(found, now)
    for a in raised:
        log.warning("quality alert: %s", a["message"],
                    extra={"alert": {k: a[k] for k in ("source", "measure", "baseline", "value", "since")}})
    for source, m in cleared:
        log.warning("quality alert cleared: %s for source %s is back within its threshold", m, source)
    return open_alerts(store)


def open_alerts(store) -> list[dict]:
    return store.open_quality_alerts()


def refresh(store, cfg: dict, now: float | None = None) -> list[dict]:
    """Today's snapshot, then the alerts: what every reader of quality calls."""
    snapshot(store, now)
    return evaluate(store, cfg, now)

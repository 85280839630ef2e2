"""A document's trip: each outcome row carries a ``trace`` (the causing event, lane, task,
queue wait, stage timings, the versions it left behind), written by :func:`record`;
``ingest status DOC`` reads them back (:func:`doc_trip`, :func:`render_trip`).

The log line per document outcome is written here too (logger ``ingest.outcome``): doc id,
source, action, stage timings and the reason; never document text.
"""
from __future__ import annotations

import json
import logging
import time

from ingest.stores.base import Action
from ingest.stores.common import find_doc

log = logging.getLogger("ingest.outcome")


def record(store, o, *, source: str, external_id: str | None, batch: str | None = None,
           event: dict | None = None, ctx: dict | None = None, started: float | None = None) -> dict:
    """Write one outcome row with its trace, and its log line. Returns the trace."""
    ctx = ctx or {}
    row = store.get_doc_by_id(o.doc_id) if o.doc_id else None
    stages = dict(getattr(o, "timings", None) or {})
    queued = ctx.get("queued_at")
    if queued is not None and started is not None:
        stages["queue"] = max(0.0, started - float(queued))
    n_own = o.chunks if o.action == Action.INDEXED else 0
    tr = {
        "event": event, "lane": ctx.get("lane"), "task": ctx.get("task"), "queued_at": queued,
        "started_at": started, "stages": {k: round(v, 6) for k, v in stages.items()},
        "version": row and row["content_version"], "acl_version": row and row["acl_version"],
        "status": row and row["status"],
        "changed_at": row["mtime_ns"] / 1e9 if row and row["mtime_ns"] else None,
        "chunks": n_own, "computed": n_own - o.cached if n_own else 0, "cached": o.cached if n_own else 0,
    }
    if getattr(o, "notes", None):
        tr["notes"] = list(o.notes)
    warned = row and row["quality"] and json.loads(row["quality"]).get("third_party_warnings")
    if warned and o.action == Action.INDEXED:  # the parsing libraries' warnings, counted, not logged
        tr["third_party_warnings"] = warned
    store.log_outcome(action=o.action, source=source, external_id=external_id, doc_id=o.doc_id, batch=batch,
                      parsed=o.parsed, embedded=o.embedded, detail=o.detail, trace=tr)
    timing = " ".join(f"{k}={v:.3f}s" for k, v in tr["stages"].items())
    log.info("%s %s %s doc=%s parsed=%d embedded=%d %s%s", o.action, source, external_id, o.doc_id, o.parsed,
             o.embedded, timing, f" ({o.detail})" if o.detail else "",
             extra={"outcome": {"doc_id": o.doc_id, "source": source, "external_id": external_id,
                                "action": o.action, "stages": tr["stages"], "reason": o.detail,
                                "lane": tr["lane"], "version": tr["version"]}})
    return tr


def doc_trip(store, ref: str) -> dict:
    """The document (by doc id, URI or path) and every outcome recorded for it, oldest first."""
    doc = find_doc(store, ref)
    rows = store.doc_outcomes(doc["doc_id"], doc["source"], doc["external_id"])
    steps = []
    for r in rows:
        step = {k: r[k] for k in ("id", "ts", "batch", "action", "parsed", "embedded", "detail", "external_id")}
        step.update(json.loads(r["trace"]) if r["trace"] else {"stages": {}})
        steps.append(step)
    keep = ("doc_id", "source", "external_id", "uri", "mime", "status", "error_code", "error", "content_version",
            "acl_version", "extractor", "extractor_version", "n_chunks", "indexed_at", "updated_at", "parent_id")
    d = {k: doc[k] for k in keep}
    d["flags"] = json.loads(doc["flags"] or "[]")
    d["quality"] = json.loads(doc["quality"]) if doc["quality"] else None
    return {"document": d, "steps": steps}


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"


def render_trip(trip: dict) -> str:
    d = trip["document"]
    out = [f"document {d['doc_id']}  {d['uri']}",
           f"  source   {d['source']}  ({d['external_id']})",
           f"  now      {d['status']}" + (f" {d['error_code']}: {d['error']}" if d["error_code"] else "")
           + f"  version {(d['content_version'] or '-')[:12]}  acl {(d['acl_version'] or '-')[:12]}"
           + f"  {d['n_chunks']} chunk(s)" + (f"  flags {', '.join(d['flags'])}" if d["flags"] else ""),
           f"  trip     {len(trip['steps'])} step(s)"]
    for s in trip["steps"]:
        ev = s.get("event") or {}
        cause = ev.get("kind", "?") + " " + str(ev.get("path") or s["external_id"] or "")
        if ev.get("dest"):
            cause += f" -> {ev['dest']}"
        where = "  ".join(f"{k}={v}" for k, v in (("lane", s.get("lane")), ("task", s.get("task")),
                                                  ("batch", s.get("batch"))) if v)
        out.append(f"  {_when(s['ts'])}  {cause}" + (f"  [{where}]" if where else ""))
        if s.get("queued_at"):
            out.append(f"      queued   {_when(s['queued_at'])}")
        if s.get("changed_at"):
            out.append(f"      changed  {_when(s['changed_at'])} (source)")
        stages = s.get("stages") or {}
        order = ("queue", "fetch", "extract", "quality", "chunk", "embed", "store")
        if stages:
            out.append("      stages   " + "  ".join(f"{k} {stages[k] * 1000:.1f} ms" for k in
                                                    sorted(stages, key=lambda k: order.index(k) if k in order else 99)))
        res = f"      result   {s['action']}"
        if s.get("version"):
            res += f"  version {s['version'][:12]}"
        if s.get("chunks"):
            res += f"  {s['chunks']} chunk(s): {s.get('computed', 0)} embedded, {s.get('cached', 0)} from cache"
        if s.get("detail"):
            res += f"  ({s['detail']})"
        if s.get("third_party_warnings"):  # the parsers' own warnings (logged at DEBUG only)
            res += f"  {s['third_party_warnings']} parser warning(s)"
        out.append(res)
    return "\n".join(out)

"""``ingest lineage``, ``ingest audit`` and ``ingest reembed`` (registered by ingest.cli.main).

Nothing heavy is imported here: the store and the model load inside the commands.
"""
from __future__ import annotations

import json
import re
import sys
import time
from datetime import datetime, timezone

from ingest.pipeline.reembed import reembed
from ingest.stores import open_store


def add_parsers(sub, store_arg) -> None:
    p = sub.add_parser("lineage", help="where a chunk or document came from, and which searches returned it")
    p.add_argument("ref", metavar="CHUNK_ID|URI", help="a chunk id, a document URI (file:///...) or a local path")
    store_arg(p)
    p.add_argument("--searches", type=int, default=20, help="most recent searches to list (default 20)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("audit", help="query or verify the append-only, hash-chained search audit log")
    store_arg(p)
    p.add_argument("--principal", default=None, help="only searches made as this principal")
    p.add_argument("--since", default=None, metavar="TIME",
                   help="ISO time (2025-01-31T12:00), epoch seconds, or an age like 30m, 2h, 7d")
    p.add_argument("--until", default=None, metavar="TIME", help="like --since; records before it")
    p.add_argument("--chunk", default=None, metavar="CHUNK_ID", help="only searches that returned this chunk")
    p.add_argument("--limit", type=int, default=100, help="newest N matching records (0: all; default 100)")
    p.add_argument("--verify", action="store_true",
                   help="check the hash chain (and the anchor outside the store, when configured); exit 1 and "
                        "name the first broken record if it was altered")
    p.add_argument("--checkpoint", action="store_true",
                   help="append the newest record to the audit anchor ($INGEST_AUDIT_ANCHOR or [audit] anchor)")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("reembed", help="switch the embedding model: build the new vectors beside the old, "
                                       "then switch atomically")
    store_arg(p)
    p.add_argument("--model", required=True, metavar="ID",
                   help="the model: the default id or a local sentence-transformers directory")
    p.add_argument("--batch", type=int, default=64, help="texts per model call (default 64)")
    p.add_argument("--json", action="store_true")


_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")


def parse_time(value: str | None, now: float | None = None) -> float | None:
    if value is None:
        return None
    v = value.strip()
    m = _AGE.match(v)
    if m:
        return (now or time.time()) - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise ValueError(f"time {value!r}: use an ISO time (2025-01-31T12:00), epoch seconds, "
                         "or an age like 30m, 2h, 7d") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time, as a person typing it means
    return dt.timestamp()


def _iso(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")


def cmd_lineage(a) -> int:
    import os
    from pathlib import Path

    store = open_store(a.store)
    ref = a.ref
    if "://" not in ref and os.path.exists(ref):  # a local path -> its file URI
        ref = Path(os.path.abspath(ref)).as_uri()
    out = store.lineage(ref, searches=a.searches)
    if out is None:
        print(f"ingest lineage: {a.ref!r} is neither a chunk id nor a document URI in this store", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(out, indent=2, ensure_ascii=False))
        return 0
    d = out["document"]
    print(f"source      {d['source']}  ({d['external_id']})")
    print(f"document    {d['uri']}  id={d['doc_id']}" + (f"  parent={d['parent_id']}" if d["parent_id"] else ""))
    print(f"version     {d['content_version']}  status={d['status']}"
          + (f" ({d['error_code']}: {d['error']})" if d["error_code"] else "") + f"  indexed {_iso(d['indexed_at'])}")
    print(f"extractor   {d['extractor']} {d['extractor_version'] or ''}".rstrip())
    print(f"labels      {', '.join(d['labels'] or []) or '-'}  (from source: {', '.join(d['source_labels'] or []) or '-'})"
          + (f"  redacted: {', '.join(f'{k} x{v}' for k, v in d['redactions'].items())}" if d["redactions"] else ""))
    for c in out["chunks"]:
        where = " ".join(x for x in (f"p.{c['page']}" if c["page"] else "", f"§ {c['section']}" if c["section"] else "")
                         if x)
        print(f"chunk       {c['chunk_id']}  #{c['idx']} {where}".rstrip())
        print(f"  doc version {c['doc_version']}  text sha256 {c['text_hash'][:16]}…  {c['tokens']} tokens")
        print(f"  extractor   {c['extractor']} {c['extractor_version'] or ''}".rstrip())
        print(f"  chunker     {c['chunker']}  chunked {_iso(c['created_at'])}")
        print(f"  model       {c['model_id']} (dim {c['vector_dim']})  embedded {_iso(c['embedded_at'])}")
    for s in out["searches"]:
        got = ", ".join(f"{r['chunk_id']}@{r['doc_version']}" for r in s["returned"])
        print(f"search      audit #{s['audit_id']} {_iso(s['ts'])} as {s['principal']}: {got}")
    for m in out["model_history"]:
        print(f"model switch {_iso(m['ts'])}: {m['from_model']} -> {m['to_model']} ({m['chunks']} chunks)")
    return 0


def cmd_audit(a) -> int:
    store = open_store(a.store)
    if a.checkpoint:
        c = store.audit_checkpoint()
        print(json.dumps(c) if a.json else f"anchored record {c['id']} in {c['anchor']}")
        if not a.verify:
            return 0
    if a.verify:
        v = store.audit_verify()
        if a.json:
            print(json.dumps(v, indent=2))
        elif v["ok"]:
            where = (f"; anchored at record {v['anchored']} in {v['anchor']}" if v.get("anchored") else
                     f"; anchor {v['anchor']} holds nothing yet" if v.get("anchor") else
                     "; no anchor configured (deleting every record, or the tail with the head moved, or a "
                     "rewrite re-chained with the public hash would not be seen)")
            print(f"audit log OK: {v['records']} records, hash chain intact{where}")
        else:
            print(f"audit log BROKEN at record {v['first_broken']}: {v['reason']}")
        return 0 if v["ok"] else 1
    if a.limit < 0:
        raise ValueError(f"--limit must be 0 or more, got {a.limit}")
    recs = store.audit_records(principal=a.principal, since=parse_time(a.since), until=parse_time(a.until),
                               chunk_ids=[a.chunk] if a.chunk else None, limit=a.limit or None)
    if a.json:
        print(json.dumps(recs, indent=2, ensure_ascii=False))
        return 0
    if not recs:
        print("no audit records match")
    for r in recs:
        got = ", ".join(f"{x['chunk_id']}@{x['doc_version']}" for x in r["results"]) or "nothing"
        filt = f" filters={json.dumps(r['filters'])}" if r["filters"] else ""
        print(f"#{r['id']} {_iso(r['ts'])} {r['principal']} {json.dumps(r['query'], ensure_ascii=False)}{filt}"
              f" -> {len(r['results'])}: {got}")
    return 0


def cmd_reembed(a) -> int:
    store = open_store(a.store)

    def progress(done, total):
        if not a.json and sys.stderr.isatty():
            print(f"\r{done}/{total} chunks have {a.model} vectors", end="", file=sys.stderr, flush=True)

    out = reembed(store, a.model, batch=a.batch, progress=progress)
    if a.json:
        print(json.dumps(out, indent=2))
    elif out["switched"]:
        print(f"switched {out['previous']} -> {out['model']}: {out['chunks']} chunks, "
              f"{out['embedded']} texts embedded in {out['seconds']} s")
    else:
        print(out["detail"])
    return 0


COMMANDS = {"lineage": cmd_lineage, "audit": cmd_audit, "reembed": cmd_reembed}

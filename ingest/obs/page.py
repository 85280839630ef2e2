"""The status page (``ingest serve`` at ``/``): lanes, freshness, sinks, sources with their quality
trend as small inline SVG charts, open quality alerts, and the documents that are not indexed with
their reasons. Read-only; one self-contained HTML document (no scripts, no external assets, a
Content-Security-Policy that forbids them).

Served by ``ingest.serve.obs_http.status_app``, authenticated like the other endpoints: ``Authorization: Bearer <token>`` from ``[serve.tokens]``;
a browser signs in once at ``login`` with the same token, kept in an HttpOnly, SameSite=Strict
cookie. ``[serve.status] principals = ["alice", ...]`` limits the page to those principals.
"""
from __future__ import annotations

import html
import json
import time

from ingest.stores.common import redact
from ingest.obs import quality
from ingest.obs.lanes import lane_stats

CHARTS = (("share-empty", "share_empty", True), ("share-flagged", "share_flagged", True),
          ("share-quarantined", "share_quarantined", True), ("ocr-confidence", "ocr_confidence", False))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= n:
            return f"{seconds / n:.1f} {unit}"
    return f"{seconds:.1f} s"


def sparkline(values: list[float | None], *, pct: bool, label: str, w: int = 132, h: int = 34) -> str:
    """A small inline SVG line chart of ``values`` (oldest first); the last value is marked."""
    pts = [(i, v) for i, v in enumerate(values) if v is not None]
    if not pts:
        return '<span class="na">no data</span>'
    lo, hi = (0.0, 1.0) if pct else (0.0, 100.0)
    pad = 4
    span = max(1, len(values) - 1)

    def xy(i, v):
        y = h - pad - (min(max(v, lo), hi) - lo) / (hi - lo) * (h - 2 * pad)
        return (pad + i / span * (w - 2 * pad), y)

    coords = [xy(i, v) for i, v in pts]
    if len(coords) == 1:  # one snapshot: a flat line, so there is something to see
        coords = [(pad, coords[0][1]), (w - pad, coords[0][1])]
    last = pts[-1][1]
    shown = f"{last:.0%}" if pct else f"{last:.0f}"
    title = f"{label}: " + ", ".join((f"{v:.0%}" if pct else f"{v:.0f}") for _, v in pts)
    poly = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    cx, cy = coords[-1]
    return (f'<svg class="spark" data-measure="{html.escape(label)}" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" role="img" aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>'
            f'<rect x="0" y="0" width="{w}" height="{h}" fill="#f8fafc"/>'
            f'<polyline points="{poly}" fill="none" stroke="#2563eb" stroke-width="1.8"/>'
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.6" fill="#1d4ed8"/></svg>'
            f'<span class="val">{shown}</span>')


def state(store, cfg: dict, broker_url: str | None, now: float | None = None) -> dict:
    """Everything the page shows, as data."""
    now = time.time() if now is None else now
    alerts = quality.refresh(store, cfg, now)
    by_status: dict[str, dict[str, int]] = {}
    for source, status, n in store.doc_counts():
        by_status.setdefault(source, {})[status] = n
    fresh = {}
    for r in store.last_indexed_outcomes():
        t = json.loads(r["trace"]) if r["trace"] else {}
        fresh[r["source"]] = {"last_indexed": r["ts"],
                              "lag": r["ts"] - t["changed_at"] if t.get("changed_at") else None}
    return {
        "store": str(getattr(store, "path", None) or redact(getattr(store, "url", ""))), "now": now, "alerts": alerts,
        "lanes": lane_stats(broker_url, now) if broker_url else {},
        "sinks": [{"sink": r["name"], "pending": r["lag_rows"], "lag": r["lag_seconds"]} for r in store.sink_lag()],
        "sources": {s: {"by_status": by_status.get(s, {}), "freshness": fresh.get(s),
                        "history": quality.history(store, s).get(s, [])} for s in sorted(by_status)},
        "not_indexed": store.not_indexed(200),
    }


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#0f172a;background:#fff}
header{background:#0f172a;color:#fff;padding:10px 20px}header h1{font-size:18px;margin:0}
header .sub{color:#cbd5e1;font-size:12px}main{padding:8px 20px 30px}
h2{font-size:15px;margin:22px 0 6px;border-bottom:1px solid #e2e8f0;padding-bottom:3px}
table{border-collapse:collapse}td,th{padding:4px 10px 4px 0;text-align:left;vertical-align:middle}
th{font-weight:600;color:#475569;font-size:12px}.num{text-align:right;font-variant-numeric:tabular-nums}
.alert{background:#fef2f2;border-left:4px solid #dc2626;padding:6px 10px;margin:4px 0}
.ok{color:#15803d}.na{color:#94a3b8}.val{font-size:12px;margin-left:4px;color:#334155}
svg.spark{vertical-align:middle}.reason{color:#b91c1c}.uri{font-family:ui-monospace,monospace;font-size:12px}
"""


def _section(anchor: str, title: str, head: str, rows: list[str], empty: str) -> str:
    """A heading and a table of ``rows``, or ``empty`` when there are none."""
    body = f"<table><tr>{head}</tr>{''.join(rows)}</table>" if rows else empty
    return f'<h2 id="{anchor}">{title}</h2>{body}'


def render(st: dict, principal: str) -> str:
    e = html.escape
    out = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>ingest status</title>"
           f"<style>{_STYLE}</style></head><body><header><h1>ingest status</h1><div class=sub>"
           f"{e(st['store'])} · {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(st['now']))} · "
           f"signed in as {e(principal)}</div></header><main>"]
    out.append('<h2 id="alerts">Quality alerts</h2>')
    if st["alerts"]:
        out += [f'<div class="alert" data-source="{e(a["source"])}" data-measure="{e(a["measure"])}">'
                f'{e(a["message"])}</div>' for a in st["alerts"]]
    else:
        out.append('<p class="ok">No quality alerts.</p>')
    out.append('<h2 id="lanes">Lanes</h2><table><tr><th>lane</th><th class=num>waiting</th>'
               '<th class=num>oldest</th></tr>')
    for lane, s in st["lanes"].items():
        out.append(f"<tr><td>{e(lane)}</td><td class=num>{s['depth']}</td>"
                   f"<td class=num>{_age(s['oldest_age'])}</td></tr>")
    if not st["lanes"]:
        out.append('<tr><td colspan=3 class=na>broker not readable</td></tr>')
    out.append("</table>")
    out.append(_section("sinks", "Sinks", "<th>sink</th><th class=num>pending</th><th class=num>lag</th>",
                        [f"<tr><td>{e(s['sink'])}</td><td class=num>{s.get('pending', 0)}</td>"
                         f"<td class=num>{_age(s.get('lag'))}</td></tr>" for s in st["sinks"] or []],
                        '<p class="na">No secondary sinks: the store is the only one.</p>'))
    out.append('<h2 id="sources">Sources</h2><table><tr><th>source</th><th>documents</th>'
               '<th>freshness lag</th><th>last indexed</th>'
               + "".join(f"<th>{m}</th>" for m, _, _ in CHARTS) + "</tr>")
    for source, s in st["sources"].items():
        counts = ", ".join(f"{n} {k}" for k, n in sorted(s["by_status"].items()))
        f = s["freshness"] or {}
        last = f.get("last_indexed")
        out.append(f'<tr class="source" data-source="{e(source)}"><td class=uri>{e(source)}</td><td>{e(counts)}</td>'
                   f"<td class=num>{_age(f.get('lag'))}</td>"
                   f"<td class=num>{_age(st['now'] - last) + ' ago' if last else '–'}</td>")
        for m, col, pct in CHARTS:
            out.append(f"<td>{sparkline([h[col] for h in s['history']], pct=pct, label=m)}</td>")
        out.append("</tr>")
    out.append("</table>")
    out.append(_section("not-indexed", "Quarantined and failed documents",
                        "<th>document</th><th>status</th><th>reason</th>",
                        [f'<tr class="quarantined"><td class=uri>{e(d["uri"])}</td><td>{e(d["status"])}</td>'
                         f'<td class=reason>{e(str(d["error_code"]))}: {e(str(d["error"]))}</td></tr>'
                         for d in st["not_indexed"]],
                        '<p class="ok">Every document is indexed.</p>'))
    out.append("</main></body></html>")
    return "".join(out)


def login_page(msg: str) -> str:
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>ingest status: sign in</title>"
            f"<style>{_STYLE}</style></head><body><header><h1>ingest status</h1></header><main>"
            f"<h2>Sign in</h2><p>{html.escape(msg)}</p><form method=post action=\"login\">"
            "<label>Token <input type=password name=token id=token autocomplete=off></label> "
            "<button type=submit id=signin>Sign in</button></form></main></body></html>")

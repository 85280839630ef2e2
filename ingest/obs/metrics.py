"""Prometheus metrics, computed from the store at scrape time (see :mod:`ingest.obs`).

Histograms of stage durations and freshness lag are accumulated from the ``outcomes`` rows
(each row read once per serving process, so a scrape costs only the rows written since the
last one); gauges (documents by status, lanes, quality, alerts) are read fresh every scrape.

Served by ``ingest serve`` at ``/metrics`` (``ingest.serve.obs_http.metrics_app``; bearer token from ``[serve.tokens]`` required unless
``[serve.metrics] public = true``) and by ``ingest worker --metrics-port N``.
"""
from __future__ import annotations

import json
import math
import threading
import time

from ingest.obs.clock import STAGES
from ingest.obs import quality
from ingest.obs.lanes import lane_stats

STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, math.inf)
LAG_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, math.inf)


class _Hist:
    def __init__(self, buckets):
        self.buckets, self.counts, self.sum = buckets, [0] * len(buckets), 0.0

    def observe(self, v: float) -> None:
        self.sum += v
        for i, le in enumerate(self.buckets):
            if v <= le:
                self.counts[i] += 1
                break

    def cumulative(self) -> list[tuple[str, int]]:
        out, n = [], 0
        for le, c in zip(self.buckets, self.counts):
            n += c
            out.append(("+Inf" if le == math.inf else repr(float(le)), n))
        return out


class StoreCollector:
    """A prometheus_client collector over one store (and its broker)."""

    def __init__(self, store, cfg: dict, broker_url: str | None, refresh_every: float = 60.0):
        self.store, self.cfg, self.broker_url = store, cfg, broker_url
        self.refresh_every = refresh_every
        self._lock = threading.Lock()
        self._last_id = 0
        self._last_refresh = -math.inf
        self.stage = {s: _Hist(STAGE_BUCKETS) for s in STAGES}
        self.lag: dict[str, _Hist] = {}
        self.last_lag: dict[str, float] = {}
        self.outcomes: dict[tuple[str, str], int] = {}
        self.embeddings = {"computed": 0, "cached": 0}

    def _consume(self) -> None:
        for r in self.store.outcomes_after(self._last_id):
            self._last_id = r["id"]
            key = (r["source"] or "", r["action"])
            self.outcomes[key] = self.outcomes.get(key, 0) + 1
            if not r["trace"]:
                continue
            t = json.loads(r["trace"])
            for stage, secs in (t.get("stages") or {}).items():
                self.stage.setdefault(stage, _Hist(STAGE_BUCKETS)).observe(secs)
            self.embeddings["computed"] += t.get("computed") or 0
            self.embeddings["cached"] += t.get("cached") or 0
            if r["action"] == "indexed" and t.get("changed_at"):
                lag = max(0.0, r["ts"] - t["changed_at"])
                self.lag.setdefault(r["source"], _Hist(LAG_BUCKETS)).observe(lag)
                self.last_lag[r["source"]] = lag

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        with self._lock:
            self._consume()
            now = time.monotonic()
            if now - self._last_refresh >= self.refresh_every:
                quality.refresh(self.store, self.cfg)
                self._last_refresh = now
            g = GaugeMetricFamily("ingest_documents", "Documents by source and status", labels=["source", "status"])
            for source, status, n in self.store.doc_counts():
                g.add_metric([source, status], n)
            yield g

            depth = GaugeMetricFamily("ingest_lane_depth", "Messages waiting per lane", labels=["lane"])
            age = GaugeMetricFamily("ingest_lane_oldest_age_seconds",
                                    "Age of the oldest waiting message per lane (0 when empty)", labels=["lane"])
            for lane, st in (lane_stats(self.broker_url) if self.broker_url else {}).items():
                depth.add_metric([lane], st["depth"])
                age.add_metric([lane], st["oldest_age"] or 0.0)
            yield depth
            yield age

            h = HistogramMetricFamily("ingest_stage_duration_seconds",
                                      "Per-document time in each pipeline stage", labels=["stage"])
            for stage, hist in self.stage.items():
                h.add_metric([stage], hist.cumulative(), hist.sum)
            yield h

            c = CounterMetricFamily("ingest_outcomes", "Document outcomes by source and action",
                                    labels=["source", "action"])
            for (source, action), n in sorted(self.outcomes.items()):
                c.add_metric([source, action], n)
            yield c

            e = CounterMetricFamily("ingest_embeddings", "Chunk vectors computed vs served from the cache",
                                    labels=["result"])
            for k, n in self.embeddings.items():
                e.add_metric([k], n)
            yield e

            fl = HistogramMetricFamily("ingest_freshness_lag_seconds",
                                       "Source change time to searchable, per indexed document", labels=["source"])
            last = GaugeMetricFamily("ingest_freshness_last_lag_seconds",
                                     "Freshness lag of the latest indexed document", labels=["source"])
            for source, hist in self.lag.items():
                fl.add_metric([source], hist.cumulative(), hist.sum)
                last.add_metric([source], self.last_lag[source])
            yield fl
            yield last

            lag = GaugeMetricFamily("ingest_sink_lag_seconds", "Age of the oldest outbox entry a secondary "
                                    "store has not applied yet", labels=["sink"])
            pend = GaugeMetricFamily("ingest_sink_pending", "Outbox entries a secondary store has not applied yet",
                                     labels=["sink"])
            for s in self.store.sink_lag():
                lag.add_metric([s["name"]], s["lag_seconds"])
                pend.add_metric([s["name"]], s["lag_rows"])
            yield lag
            yield pend

            share = GaugeMetricFamily("ingest_quality_share", "Share of a source's documents that are empty, "
                                      "flagged or quarantined", labels=["source", "measure"])
            ocr = GaugeMetricFamily("ingest_quality_ocr_confidence", "Mean OCR confidence (0-100) of a source's "
                                    "OCR'd documents", labels=["source"])
            garbage = GaugeMetricFamily("ingest_quality_garbage_ratio", "Mean share of replacement/control "
                                        "characters of a source's documents", labels=["source"])
            for source, q in quality.measure(self.store).items():
                for m in ("empty", "flagged", "quarantined"):
                    share.add_metric([source, m], q[f"share_{m}"] or 0.0)
                if q["ocr_confidence"] is not None:
                    ocr.add_metric([source], q["ocr_confidence"])
                if q["garbage_ratio"] is not None:
                    garbage.add_metric([source], q["garbage_ratio"])
            yield share
            yield ocr
            yield garbage

            al = GaugeMetricFamily("ingest_quality_alert", "1 while a quality alert holds for a source and measure",
                                   labels=["source", "measure"])
            for a in quality.open_alerts(self.store):
                al.add_metric([a["source"], a["measure"]], 1)
            yield al


def registry_for(store, cfg: dict, broker_url: str | None, refresh_every: float = 60.0):
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(store, cfg, broker_url, refresh_every))
    return reg

"""/metrics scraped during a real ingest: SQLite broker, a real `ingest worker` process (prefork,
real model), `ingest serve`'s dispatcher on a loopback port."""
import os
import subprocess
import sys
import time

import pytest

from tests.support.common import wait_for
from tests.support.obs_helpers import Server, free_port, get, samples, write_docs

pytestmark = pytest.mark.slow
TOKEN = "tok-metrics-7c1e"


def test_metrics_during_an_ingest_match_what_happened(world_dir, monkeypatch):
    from ingest.cli.runner import Queue, stop_worker
    from ingest.sources.reconcile import reconcile
    from ingest.stores import open_store
    from workers.app import embedded_broker

    monkeypatch.delenv("INGEST_BROKER", raising=False)
    src = world_dir / "inbox"
    write_docs(src, 5, "doc")
    (src / "empty.md").write_bytes(b"")
    os.chmod(src / "empty.md", 0o644)
    store_url = str(world_dir / "index.db")
    broker = embedded_broker(store_url)
    cfg_file = world_dir / "config.toml"
    cfg_file.write_text(f'[serve.tokens]\n"{TOKEN}" = "prometheus"\n[serve.metrics]\nrefresh_seconds = 0\n')
    from ingest import config

    cfg = config.load(cfg_file)
    store = open_store(store_url)
    source = f"folder:{src}"
    events = list(reconcile(store, str(src)))
    assert len(events) == 6
    Queue(store_url, broker).send(events, "bulk", batch="b1")  # one task per document
    queued_at = time.time()
    with Server(store_url, cfg) as srv:
        status, headers, _ = get(srv.url + "/metrics")
        assert status == 401 and headers.get("WWW-Authenticate") == "Bearer"
        assert get(srv.url + "/metrics", "wrong-token")[0] == 401
        time.sleep(1.0)
        status, _, text = get(srv.url + "/metrics", TOKEN)
        assert status == 200, text
        depth = samples(text, "ingest_lane_depth")
        assert depth[(("lane", "bulk"),)] == 6 and depth[(("lane", "interactive"),)] == 0
        age = samples(text, "ingest_lane_oldest_age_seconds")[(("lane", "bulk"),)]
        assert 1.0 <= age <= time.time() - queued_at + 5, age

        mport = free_port()
        log = open(world_dir / "worker.log", "wb")
        worker = subprocess.Popen([sys.executable, "-m", "ingest.cli.main", "worker", "--store", store_url, "--broker",
                                   broker, "--concurrency", "1", "--metrics-port", str(mport), "--config",
                                   str(cfg_file)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: store.batch_progress("b1") == 6 or worker.poll() is not None, timeout=300,
                     what="the worker to finish the batch")
            assert worker.poll() is None, (world_dir / "worker.log").read_text()[-3000:]
            waited = time.time() - queued_at
            status, _, text = get(srv.url + "/metrics", TOKEN)
            assert status == 200
            _, _, wtext = get(f"http://127.0.0.1:{mport}/metrics", TOKEN)  # the same figures from the worker
        finally:
            stop_worker(worker, timeout=60)
            log.close()

    depth = samples(text, "ingest_lane_depth")
    assert depth[(("lane", "bulk"),)] == 0
    count = {k[0][1]: v for k, v in samples(text, "ingest_stage_duration_seconds_count").items()}
    total = {k[0][1]: v for k, v in samples(text, "ingest_stage_duration_seconds_sum").items()}
    # every document was fetched, extracted, stored and waited in the queue; only the 5 with text
    # were assessed, chunked and embedded (the empty one was quarantined at extraction)
    assert count["queue"] == count["fetch"] == count["extract"] == count["store"] == 6, count
    assert count["quality"] == count["chunk"] == count["embed"] == 5, count
    assert 6 * 1.0 <= total["queue"] <= 6 * waited, total  # each waited >= 1 s before the worker started
    assert all(total[s] > 0 for s in ("fetch", "extract", "chunk", "embed", "store")), total
    inf = samples(text, "ingest_stage_duration_seconds_bucket")[(("le", "+Inf"), ("stage", "extract"))]
    assert inf == 6

    out = samples(text, "ingest_outcomes_total")
    assert out[(("action", "indexed"), ("source", source))] == 5
    assert out[(("action", "error"), ("source", source))] == 1
    docs = samples(text, "ingest_documents")
    assert docs[(("source", source), ("status", "indexed"))] == 5
    assert docs[(("source", source), ("status", "quarantined"))] == 1
    distinct, n_chunks = store.db.execute("SELECT COUNT(DISTINCT text_hash), COUNT(*) FROM chunks").fetchone()
    emb = samples(text, "ingest_embeddings_total")
    assert emb[(("result", "computed"),)] == distinct
    assert emb[(("result", "computed"),)] + emb[(("result", "cached"),)] == n_chunks
    share = samples(text, "ingest_quality_share")
    assert share[(("measure", "empty"), ("source", source))] == pytest.approx(1 / 6)
    assert share[(("measure", "quarantined"), ("source", source))] == pytest.approx(1 / 6)
    assert share[(("measure", "flagged"), ("source", source))] == 0
    assert samples(text, "ingest_quality_garbage_ratio")[(("source", source),)] == 0
    lag = samples(text, "ingest_freshness_lag_seconds_count")
    assert lag[(("source", source),)] == 5
    assert samples(text, "ingest_quality_alert") == {}  # one day of history: nothing to compare with

    wcount = {k[0][1]: v for k, v in samples(wtext, "ingest_stage_duration_seconds_count").items()}
    assert wcount == count

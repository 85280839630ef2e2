"""Downstream fan-out through the outbox, against real stores: a SQLite primary feeding a
PostgreSQL secondary (and the reverse), the secondary stopped mid-ingest and restarted later,
then the two compared document by document."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.support.common import REPO, acl_delete_move, run_events, wait_for
from ingest.stores.outbox import Pump, Sink, configured_sinks, diff_stores

PAUSE = float(os.environ.get("INGEST_TEST_SINK_PAUSE", "3"))


def _compare(primary, secondary) -> int:
    """Doc ids, versions, ACL, chunk ids and chunk text equal, document by document."""
    ids = primary.all_doc_ids()
    assert ids == secondary.all_doc_ids()
    a, b = primary.export_docs(ids), secondary.export_docs(ids)
    for d in ids:
        da, db = a[d]["doc"], b[d]["doc"]
        for f in ("external_id", "uri", "content_version", "acl_version", "acl", "status", "parent_id", "n_chunks"):
            assert da[f] == db[f], (d, f)
        assert [(c["chunk_id"], c["text"], c["vec"]) for c in a[d]["chunks"]] == \
            [(c["chunk_id"], c["text"], c["vec"]) for c in b[d]["chunks"]], d
    assert diff_stores(primary, secondary) == []  # and every other field
    return len(ids)


def _write(root, i, words="alpha"):
    (root / f"doc{i:02d}.txt").write_text(f"Document {i} about {words}.\n\n" + f"The keyword is kw{i}. " * 20)


@pytest.mark.parametrize("pause", [PAUSE, pytest.param(30.0, marks=pytest.mark.slow)],
                         ids=lambda p: f"pause{p:g}s")
def test_secondary_stopped_mid_ingest_converges_to_the_primary(world_dir, embedder, postgres_server, pg_store_url,
                                                               pause):
    from ingest.pipeline.document import Pipeline
    from ingest.stores.postgres import PostgresStore
    from ingest.stores.sqlite import SQLiteStore

    root = world_dir / "docs"
    root.mkdir()
    primary = SQLiteStore(world_dir / "index.db")
    pipe = Pipeline(primary, embedder, sandbox=False)
    sink = Sink("pg", pg_store_url)
    pump = Pump(primary, [sink], interval=0.1, max_backoff=2.0).start()
    try:
        for i in range(12):
            _write(root, i)
        run_events(pipe, root)
        wait_for(lambda: primary.sink_lag() and primary.sink_lag()[0]["lag_rows"] == 0, 60, what="first sync")

        # phase 2 runs in a thread; the secondary goes down while it runs
        done = threading.Event()

        def more():
            for i in range(12, 30):
                _write(root, i, "beta")
                run_events(pipe, root, subtree=f"doc{i:02d}.txt")
            for i in range(0, 4):
                _write(root, i, "edited")  # content edits
            acl_delete_move(pipe, root)
            done.set()

        t = threading.Thread(target=more)
        t.start()
        wait_for(lambda: primary.status()["documents"] >= 16, 60, what="ingest under way")
        postgres_server.stop()
        stopped = time.monotonic()
        t.join(300)
        assert done.is_set()
        wait_for(lambda: primary.sink_lag()[0]["last_error"], 30, what="the pump to notice the sink is down")
        lag = primary.sink_lag()[0]
        assert lag["lag_rows"] > 0 and lag["lag_seconds"] > 0
        time.sleep(max(0.0, pause - (time.monotonic() - stopped)))
        assert primary.sink_lag()[0]["lag_rows"] > 0  # nothing got through while it was down
        postgres_server.start()
        wait_for(lambda: primary.sink_lag()[0]["lag_rows"] == 0, 60, what="the secondary to catch up")
    finally:
        pump.stop()
        if not postgres_server.running():
            postgres_server.start()
    assert primary.sink_lag()[0]["last_error"] is None
    secondary = PostgresStore(pg_store_url)
    n = _compare(primary, secondary)
    assert n == 28  # 30 written, 2 deleted; the renamed one kept its id
    assert primary.get_doc(f"folder:{root}", "renamed09.txt")["doc_id"] == \
        secondary.get_doc(f"folder:{root}", "renamed09.txt")["doc_id"]
    # and the secondary answers searches as the primary does (same readable documents)
    from acl.model import EVERYONE

    for q in ("kw5", "beta", "edited"):
        ra = {primary.hits([(r, s, None, None)])[0].doc_id for r, s in primary.bm25(q, frozenset({EVERYONE}), 50)}
        rb = {secondary.hits([(r, s, None, None)])[0].doc_id for r, s in secondary.bm25(q, frozenset({EVERYONE}), 50)}
        assert ra == rb, q
    assert primary.prune_outbox() >= 0 and primary.outbox_entries(primary.sink_cursor("pg"), 10) == []
    secondary.close()


def _synthetic(store, n, start=0, acl=None):
    """n documents with one chunk each, straight through the store contract (no model)."""
    from acl.model import ACL, EVERYONE
    from ingest.stores.base import ChunkRecord, DocRecord

    for i in range(start, start + n):
        d = f"d{i:04d}"
        v = np.random.default_rng(i).standard_normal(384).astype(np.float32)
        v /= np.linalg.norm(v)
        store.apply(DocRecord(d, "folder:/r", f"{d}.txt", f"file:///r/{d}.txt", "text/plain", 1, 1, f"v{i}",
                              acl or ACL(frozenset({EVERYONE}))),
                    [ChunkRecord(f"{d}-0", 0, f"text of {d}", f"h{i}", 3, None, "", v.tobytes(), "c", "m")])


def test_postgres_primary_feeds_a_new_sqlite_sink_with_a_snapshot_then_the_outbox(pg_store_url, tmp_path):
    """The reverse direction; a sink added late starts from a full snapshot; concurrent
    writers on the PostgreSQL primary never make the pump skip a row."""
    from acl.model import ACL
    from ingest.stores.postgres import PostgresStore
    from ingest.stores.sqlite import SQLiteStore

    primary = PostgresStore(pg_store_url)
    _synthetic(primary, 20)
    primary.prune_outbox()  # no sink registered: the snapshot must find these documents anyway
    sink_path = tmp_path / "sink.db"
    stray = SQLiteStore(sink_path)
    _synthetic(stray, 1, start=500)  # the sink holds a document the primary never had
    pump = Pump(primary, [Sink("lite", str(sink_path))], interval=0.05).start()
    try:
        def writer(k):
            s = PostgresStore(pg_store_url)
            _synthetic(s, 15, start=100 + 100 * k)
            for i in range(3):
                s.set_acl(f"d{100 + 100 * k + i:04d}", ACL(frozenset({"user:posix:7"})))
                s.delete(f"d{100 + 100 * k + 5 + i:04d}")
            s.close()

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        primary.move("d0001", "moved.txt", "file:///r/moved.txt")
        wait_for(lambda: primary.sink_lag()[0]["lag_rows"] == 0, 60, what="sink caught up")
    finally:
        pump.stop()
    assert _compare(primary, SQLiteStore(sink_path)) == 20 + 3 * 12
    assert "d0500" not in SQLiteStore(sink_path).all_doc_ids()


def test_cli_sync_check_and_status_lag(tmp_path, pg_store_url):
    from ingest.stores.sqlite import SQLiteStore

    db = tmp_path / "p.db"
    primary = SQLiteStore(db)
    _synthetic(primary, 5)
    env = dict(os.environ, PYTHONPATH=str(REPO), INGEST_CONFIG=str(tmp_path / "none.toml"))
    (tmp_path / "none.toml").write_text("")

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "ingest.cli.main", *args], capture_output=True, text=True,
                              env=env, timeout=120)

    r = cli("sync", "--store", str(db), "--sink", pg_store_url, "--check", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["differences"] == {pg_store_url: []}
    assert out["sinks"][0]["lag_rows"] == 0
    _synthetic(primary, 2, start=10)
    time.sleep(0.05)
    r = cli("status", "--store", str(db), "--json")
    assert r.returncode == 0, r.stderr
    lag = json.loads(r.stdout)["sinks"]
    assert [(s["name"], s["lag_rows"]) for s in lag] == [(pg_store_url, 2)] and lag[0]["lag_seconds"] > 0
    dead = "postgresql://postgres@127.0.0.1:1/nothing"
    r = cli("sync", "--store", str(db), "--sink", dead, "--timeout", "1")
    assert r.returncode == 1
    assert f"sink    {dead}: lag 2 row(s)" in r.stdout and "(initial snapshot pending)" in r.stdout
    assert "OperationalError" in r.stdout
    r = cli("status", "--store", str(db))
    assert f"sink    {pg_store_url}: lag 2 row(s)" in r.stdout
    r = cli("sync", "--store", str(db), "--sink", pg_store_url, "--check")
    assert r.returncode == 1  # the dead sink is registered too and still lags
    assert f"check   {pg_store_url}: identical" in r.stdout


def test_sinks_from_config_and_errors(monkeypatch):
    from ingest.config import ConfigError

    monkeypatch.setenv("PG_SINK_URL", "postgresql://u:secret@db/x")
    sinks = configured_sinks({"sinks": {"replica": {"url": "env:PG_SINK_URL"}}}, ["/tmp/b.db"])
    assert [(s.name, s.url) for s in sinks] == [("replica", "postgresql://u:secret@db/x"), ("/tmp/b.db", "/tmp/b.db")]
    assert configured_sinks(None, ["postgresql://u:pw@h/d"])[0].name == "postgresql://u:***@h/d"
    with pytest.raises(ConfigError, match=r"\[sinks.bad\] needs url"):
        configured_sinks({"sinks": {"bad": {"uri": "x"}}})
    with pytest.raises(ConfigError, match="duplicate"):
        configured_sinks(None, ["/a.db", "/a.db"])


def test_postgres_store_without_broker_is_a_clear_error(pg_store_url, tmp_path):
    from ingest.cli.runner import broker_for
    from ingest.stores import store_path, store_url

    with pytest.raises(ValueError, match="needs --broker"):
        broker_for(pg_store_url, None)
    assert broker_for(pg_store_url, "redis://x:6379/0") == "redis://x:6379/0"
    with pytest.raises(ValueError, match="no local file"):
        store_path(pg_store_url)
    assert store_url(pg_store_url) == pg_store_url
    assert store_url(str(tmp_path / "a.db")) == str((tmp_path / "a.db").resolve())
    r = subprocess.run([sys.executable, "-m", "ingest.cli.main", "add", str(tmp_path), "--store", pg_store_url],
                       capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 2 and "needs --broker" in r.stderr


@pytest.mark.slow
def test_ingest_run_pumps_to_a_sink_in_a_thread(world_dir):
    """`ingest run --sink PATH`: the pump thread inside the runner feeds the sink while it watches."""
    from tests.support.common import IngestRun
    from ingest.stores.sqlite import SQLiteStore

    inbox, db, sink = world_dir / "inbox", world_dir / "index.db", world_dir / "sink.db"
    inbox.mkdir()
    with IngestRun([inbox], db, "--sink", str(sink)):
        for i in range(3):
            _write(inbox, i)
        wait_for(lambda: sink.exists() and len(SQLiteStore(sink).all_doc_ids()) == 3, 180, what="sink fed")
        (inbox / "doc01.txt").unlink()
        wait_for(lambda: len(SQLiteStore(sink).all_doc_ids()) == 2, 60, what="delete reaches the sink")
    assert _compare(SQLiteStore(db), SQLiteStore(sink)) == 2
    assert SQLiteStore(db).sink_lag()[0]["lag_rows"] == 0

"""Vector-database sinks (ingest.stores.sinks) against the real stores: Qdrant local mode, a
Chroma server started here, Milvus Lite. A SQLite primary feeds each through the outbox pump.

* the contract: a shortened document leaves no orphan; an ACL-only change (and a move) sends
  no vector; a delete removes every point; ``diff`` finds the sink equal;
* no leak: the property of tests/search/test_no_leak.py run against each sink's own search (its
  native filter), principals resolved through a real directory file;
* convergence: the sink made unavailable for a while in the middle of an ingest with edits,
  renames, ACL changes and deletes; after it returns ``ingest sync --check`` finds it equal;
* ``ingest sync --rebuild NAME`` after the collection was dropped.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tests.support.common import REPO, acl_delete_move, run_events, wait_for
from tests.support.sink_helpers import KINDS, ChromaServer, SinkSetup, Wire, synthetic_docs

PAUSE = float(os.environ.get("INGEST_TEST_SINK_PAUSE", "3"))
EXAMPLES = int(os.environ.get("SINK_NO_LEAK_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    srv = ChromaServer(tmp_path_factory.mktemp("chroma")).start()
    yield srv
    srv.stop()


@pytest.fixture(params=KINDS)
def sink(request, world_dir):
    chroma = request.getfixturevalue("chroma_server") if request.param == "chroma" else None
    s = SinkSetup(request.param, world_dir, chroma)
    yield s
    s.up()


def _cli(*args, env_extra=None):
    env = dict(os.environ, PYTHONPATH=str(REPO), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "ingest.cli.main", *args], capture_output=True, text=True, env=env,
                          timeout=300)


_PAYLOAD_CALLS = {"qdrant": {"batch_update_points"}, "chroma": {"update"}, "milvus": {"upsert"}}  # milvus: partial


def _points(target) -> int:
    return sum(len(pts) for pts in target.export(target.all_doc_ids()).values())


def _chunks(primary) -> int:
    return sum(len(st["chunks"]) for st in primary.export_docs(primary.all_doc_ids()).values())


def test_contract_no_orphans_acl_only_sends_no_vectors(sink, world_dir):
    from acl.model import ACL
    from ingest.stores.outbox import Pump, Sink
    from ingest.stores.sqlite import SQLiteStore

    primary = SQLiteStore(world_dir / "p.db", model_id="m")
    synthetic_docs(primary, [f"d{i}" for i in range(6)], n_chunks=4)
    s = Sink("vec", sink.url)
    pump = Pump(primary, [s])
    try:
        assert pump.drain(60) == {"vec": 6}
        target = s.store
        assert target.diff(primary) == []
        assert sorted(target.export(["d1"])["d1"][i][0]["chunk_id"] for i in range(4)) == \
            [f"d1-v1-{j}" for j in range(4)]

        wire = Wire(target, 24)  # counts the vectors in every call into the database's client library
        mark = wire.mark()
        synthetic_docs(primary, ["d1"], n_chunks=1, version="v2")  # a shorter new version
        pump.drain(60)
        assert wire.since(mark)[0] == 1  # the one new chunk's vector went out (the count is not vacuous)
        assert [p["chunk_id"] for p, _ in target.export(["d1"])["d1"]] == ["d1-v2-0"]  # no orphan of v1
        assert _points(target) == _chunks(primary) == 21  # nor anywhere else in the collection

        before, mark = dict(target.stats), wire.mark()
        primary.set_acl("d2", ACL(frozenset({"user:file:u1"}), frozenset({"group:file:g1"})))  # ACL-only
        primary.move("d3", "moved.txt", "file:///r/moved.txt")  # a rename
        pump.drain(60)
        assert s.store is target  # the same client: every call went through the wire counter
        sent = {k: target.stats[k] - before.get(k, 0) for k in ("calls", "points", "vectors", "vector_bytes")}
        assert sent["vectors"] == 0 and sent["vector_bytes"] == 0, sent  # no vector re-sent
        assert sent["points"] == 8 and 0 < sent["calls"] <= 4, sent  # payloads of d2's and d3's 4 chunks
        vectors, methods = wire.since(mark)
        assert vectors == 0 and methods, methods  # nor any vector in the client calls themselves
        assert set(methods) & _PAYLOAD_CALLS[sink.kind], methods  # the payload-only update of each store
        (p, _), *_ = target.export(["d2"])["d2"]
        assert (p["allow"], p["deny"]) == (["user:file:u1"], ["group:file:g1"])
        assert target.export(["d3"])["d3"][0][0]["uri"] == "file:///r/moved.txt"

        primary.delete("d4")
        pump.drain(60)
        assert "d4" not in target.all_doc_ids() and target.export(["d4"]) == {}
        assert target.diff(primary) == []
        assert target.all_doc_ids() == primary.all_doc_ids()
        # and the check is not vacuous: a point changed behind the pump's back is found
        p, v = target.export(["d5"])["d5"][0]
        name = target.collection("m")
        target._upsert(name, [(dict(p, text="tampered"), v)])
        assert target.diff(primary) == ["d5: chunk d5-v1-0: text differ"]
        target._upsert(name, [(p, v + 1e-3)])
        assert target.diff(primary) == ["d5: chunk d5-v1-0: vector differs"]
    finally:
        pump.stop()


# -- no leak: the property of test_no_leak.py against each sink's own search ------------------
def test_no_search_of_a_sink_returns_an_unreadable_chunk(sink, world_dir):
    from tests.support import no_leak as nl
    from acl.directory import Directory, FileBackend
    from ingest.stores.outbox import Pump, Sink
    from ingest.search.sink_index import SinkIndex
    from ingest.stores.sqlite import SQLiteStore

    class StubSinkIndex(SinkIndex):
        def _qvec(self, model_id, query):
            return nl.fake_vector(query)

    primary = SQLiteStore(world_dir / "p.db", model_id="stub")
    s = Sink("vec", sink.url)
    pump = Pump(primary, [s])
    stats: dict = {}

    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(nl.scenarios())
    def prop(sc):
        sc = nl.Scenario(sc.user_groups, sc.group_parents, sc.docs,
                         [(p, q, k, "vector") for p, q, k, _ in sc.searches])  # a sink answers vector searches
        path = world_dir / "directory.json"
        nl.directory_file(sc, path)  # membership changes from one example to the next
        nl.load(primary, sc)
        pump.drain(60)
        assert primary.sink_lag()[0]["lag_rows"] == 0 and primary.sink_lag()[0]["last_error"] is None
        index = StubSinkIndex(s.store, Directory([FileBackend(path)]), "stub")
        problems = nl.find_violations(index, sc, stats, facets=False)  # a sink has no facets: the primary's
        assert not problems, "\n".join(problems)

    try:
        prop()
    finally:
        pump.stop()
    assert stats["searches"] >= EXAMPLES and stats["hits"] >= EXAMPLES, stats  # exact counts: find_violations
    assert stats["deny_decides"] >= EXAMPLES // 10, stats
    print(f"no-leak property on {sink.kind}:", stats)


# -- convergence after an outage in the middle of an ingest --------------------------------
def _write(root, i, words="alpha"):
    (root / f"doc{i:02d}.txt").write_text(f"Document {i} about {words}.\n\n" + f"The keyword is kw{i}. " * 20)


@pytest.mark.parametrize("pause", [PAUSE, pytest.param(30.0, marks=pytest.mark.slow)], ids=lambda p: f"pause{p:g}s")
def test_sink_down_mid_ingest_converges(sink, world_dir, embedder, pause, request):
    from ingest.pipeline.document import Pipeline
    from ingest.stores.outbox import Pump, Sink
    from ingest.stores.sqlite import SQLiteStore

    root = world_dir / "docs"
    root.mkdir()
    db = world_dir / "index.db"
    primary = SQLiteStore(db)
    pipe = Pipeline(primary, embedder, sandbox=False)
    pump = Pump(primary, [Sink("vec", sink.url)], interval=0.1, max_backoff=2.0, release_idle=0.5).start()
    try:
        for i in range(10):
            _write(root, i)
        run_events(pipe, root)
        wait_for(lambda: primary.sink_lag() and primary.sink_lag()[0]["lag_rows"] == 0, 120, what="first sync")
        done, went_down = threading.Event(), threading.Event()

        def more():
            for i in range(10, 24):
                _write(root, i, "beta")
                run_events(pipe, root, subtree=f"doc{i:02d}.txt")
                if i == 14:  # the rest of the ingest happens while the sink is down (an embedded sink's
                    went_down.wait(180)  # files are taken by another process once the pump lets them go)
            for i in range(0, 3):
                _write(root, i, "edited " * 40)  # content edits (doc00..02 grow)
            (root / "doc03.txt").write_text("Short now.")  # a shorter version
            acl_delete_move(pipe, root)
            done.set()

        t = threading.Thread(target=more)
        t.start()
        wait_for(lambda: primary.status()["documents"] >= 12, 120, what="ingest under way")
        sink.down()  # Chroma: server stopped; Qdrant/Milvus Lite: another process holds the files
        went_down.set()
        stopped = time.monotonic()
        t.join(300)
        assert done.is_set()
        wait_for(lambda: primary.sink_lag()[0]["last_error"], 60, what="the pump to notice the sink is down")
        time.sleep(max(0.0, pause - (time.monotonic() - stopped)))
        lag = primary.sink_lag()[0]
        assert lag["lag_rows"] > 0 and lag["lag_seconds"] > 0 and lag["last_error"]  # nothing got through
        assert time.monotonic() - stopped >= pause
        sink.up()
        wait_for(lambda: primary.sink_lag()[0]["lag_rows"] == 0, 120, what="the sink to catch up")
    finally:
        pump.stop()  # and lets the embedded files go, for the CLI below
        sink.up()
    assert primary.sink_lag()[0]["last_error"] is None
    (world_dir / "none.toml").write_text("")
    r = _cli("sync", "--store", str(db), "--sink", sink.url, "--check", "--json",
             env_extra={"INGEST_CONFIG": str(world_dir / "none.toml")})
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["differences"] == {sink.url: []}
    from ingest.stores.sinks import open_sink

    target = open_sink(sink.url)
    try:
        assert target.all_doc_ids() == sorted(d for d in primary.all_doc_ids()
                                               if primary.export_docs([d])[d]["chunks"])
        assert len(target.all_doc_ids()) == 22  # 24 written, 2 deleted; the renamed one kept its id
        renamed = primary.get_doc(f"folder:{root}", "renamed09.txt")
        assert target.export([renamed["doc_id"]])[renamed["doc_id"]][0][0]["uri"] == renamed["uri"]
    finally:
        target.close()


def test_cli_rebuild_after_the_collection_was_dropped(sink, world_dir):
    from ingest.stores.sinks import open_sink
    from ingest.stores.sqlite import SQLiteStore

    db = world_dir / "p.db"
    primary = SQLiteStore(db, model_id="m")
    synthetic_docs(primary, [f"d{i}" for i in range(30)])
    (world_dir / "c.toml").write_text(f'[sinks.vec]\nurl = "{sink.url}"\n')
    env = {"INGEST_CONFIG": str(world_dir / "c.toml")}
    r = _cli("sync", "--store", str(db), "--check", env_extra=env)
    assert r.returncode == 0 and "check   vec: identical" in r.stdout, r.stdout + r.stderr
    target = open_sink(sink.url)
    target.drop()
    target.close()
    r = _cli("sync", "--store", str(db), "--check", env_extra=env)
    assert r.returncode == 1 and "check   vec: 30 difference(s)" in r.stdout, r.stdout + r.stderr
    r = _cli("sync", "--store", str(db), "--rebuild", "vec", "--check", env_extra=env)
    assert r.returncode == 0 and "check   vec: identical" in r.stdout, r.stdout + r.stderr
    assert "rebuild vec" in r.stderr and "30/30" in r.stderr  # the progress bar
    r = _cli("sync", "--store", str(db), "--rebuild", "nope", env_extra=env)
    assert r.returncode != 0 and "--rebuild nope: no such sink" in r.stderr
    r = _cli("status", "--store", str(db), env_extra=env)
    assert "sink    vec: lag 0 row(s)" in r.stdout


def test_open_index_on_a_sink_url(world_dir):
    """ingest.open_index(SINK_URL): vector search in the sink, as the principal."""
    import ingest
    from acl.directory import Directory, FileBackend
    from acl.model import ACL
    from ingest.stores.outbox import Pump, Sink
    from ingest.search.sink_index import SinkIndex
    from ingest.stores.sinks import SinkError, open_sink, sink_class
    from ingest.stores.sqlite import SQLiteStore

    primary = SQLiteStore(world_dir / "p.db", model_id="m")
    synthetic_docs(primary, ["a", "b"], acl=ACL(frozenset({"group:file:team"})))
    url = f"qdrant+local://{world_dir}/q"
    pump = Pump(primary, [Sink("q", url)])
    pump.drain(60)
    pump.stop()
    (world_dir / "dir.json").write_text(json.dumps({"users": {"ann": {"groups": ["team"]}, "bob": {"groups": []}},
                                                   "groups": {"team": {"groups": []}}}))
    idx = ingest.open_index(url, directory=Directory([FileBackend(world_dir / "dir.json")]))
    assert isinstance(idx, SinkIndex) and idx.model_id == "m"
    idx._qvec = lambda model, q: np.frombuffer(primary.export_docs(["a"])["a"]["chunks"][0]["vec"], np.float32)
    hits = idx.search("anything", principal="ann", k=3)
    assert [h.chunk_id for h in hits][0] == "a-v1-0" and len(hits) == 3
    assert hits[0].acl == {"allow": ["group:file:team"], "deny": []} and "pii:email" in hits[0].labels
    assert idx.search("anything", principal="bob", k=3) == []
    with pytest.raises(ValueError, match="vector searches only"):
        idx.search("x", principal="ann", mode="hybrid")
    idx.sink.close()
    with pytest.raises(SinkError, match="no sink for this URL scheme"):
        sink_class("weaviate://h:1")
    with pytest.raises(SinkError, match="collection="):
        open_sink(f"qdrant+local://{world_dir}/q2?collection=bad-name")
    with pytest.raises(SinkError, match="absolute path ending in .db"):
        open_sink("milvus+lite://relative.db")


def test_status_metrics_and_check_cover_every_sink(world_dir, chroma_server):
    """Three sinks of three kinds in one config: ``ingest sync --check``, ``ingest status`` and
    ``/metrics`` report each by name; one that is down shows its lag and last error, the others
    none, and it catches up when it returns."""
    from prometheus_client import CollectorRegistry, generate_latest

    from ingest.obs.metrics import StoreCollector
    from ingest.stores.sqlite import SQLiteStore

    db = world_dir / "p.db"
    primary = SQLiteStore(db, model_id="m")
    synthetic_docs(primary, [f"d{i}" for i in range(5)])
    sinks = {kind: SinkSetup(kind, world_dir, chroma_server) for kind in KINDS}
    (world_dir / "c.toml").write_text("".join(f'[sinks.{k}]\nurl = "{s.url}"\n' for k, s in sinks.items()))
    env = {"INGEST_CONFIG": str(world_dir / "c.toml")}
    reg = CollectorRegistry()
    reg.register(StoreCollector(primary, {}, None, refresh_every=0))

    def pending(text):
        return {k: float(v) for k, v in re.findall(r'ingest_sink_pending\{sink="(\w+)"\} ([0-9.]+)', text)}

    r = _cli("sync", "--store", str(db), "--check", "--json", env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["differences"] == {k: [] for k in sorted(KINDS)}
    assert sorted((s["name"], s["lag_rows"]) for s in out["sinks"]) == [(k, 0) for k in sorted(KINDS)]
    assert pending(generate_latest(reg).decode()) == {k: 0.0 for k in KINDS}

    synthetic_docs(primary, ["d7", "d8"])
    try:
        sinks["chroma"].down()
        r = _cli("sync", "--store", str(db), "--timeout", "3", env_extra=env)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "sink    chroma: lag 2 row(s)" in r.stdout and "last error" in r.stdout, r.stdout
        for k in ("qdrant", "milvus"):
            assert f"sink    {k}: lag 0 row(s)" in r.stdout, r.stdout
        r = _cli("status", "--store", str(db), "--json", env_extra=env)
        lag = {s["name"]: s for s in json.loads(r.stdout)["sinks"]}
        assert {k: v["lag_rows"] for k, v in lag.items()} == {"chroma": 2, "qdrant": 0, "milvus": 0}
        assert lag["chroma"]["last_error"] and lag["chroma"]["lag_seconds"] > 0
        assert lag["qdrant"]["last_error"] is None and lag["milvus"]["last_error"] is None
        assert pending(generate_latest(reg).decode()) == {"chroma": 2.0, "qdrant": 0.0, "milvus": 0.0}
        r = _cli("sync", "--store", str(db), "--check", "--timeout", "3", env_extra=env)
        assert r.returncode == 1 and "check   qdrant: identical" in r.stdout and "check   milvus: identical" \
            in r.stdout, r.stdout + r.stderr
        assert "check   chroma: 1 difference(s)" in r.stdout and "cannot check: " in r.stdout  # the error is its line
    finally:
        sinks["chroma"].up()
    r = _cli("sync", "--store", str(db), "--check", env_extra=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert all(f"check   {k}: identical" in r.stdout for k in KINDS), r.stdout
    assert pending(generate_latest(reg).decode()) == {k: 0.0 for k in KINDS}

"""The real pipeline (real model, real extraction) writing to a real PostgreSQL store, and
`ingest add` against it through a real Redis broker and Celery worker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.support.common import REPO, run_events


def test_pipeline_on_postgres_incremental_and_permission_aware(world_dir, embedder, pg_store_url):
    from ingest.pipeline.document import Pipeline, folder_source
    from ingest.search.index import Index
    from ingest.stores import open_store

    root = world_dir / "docs"
    root.mkdir()
    (root / "a.md").write_text("# Budget\n\nThe launch code word is periwinkle. Revenue grew in the north.\n")
    (root / "b.txt").write_text("Minutes of the meeting about the harbour crane maintenance schedule.\n")
    store = open_store(pg_store_url)
    pipe = Pipeline(store, embedder, sandbox=False)
    assert sorted(o.action for o in run_events(pipe, root)) == ["indexed", "indexed"]
    assert run_events(pipe, root) == []  # unchanged: skipped without reading
    idx = Index(store)
    hits = idx.search("what is the launch code word", principal="everyone", k=3)
    assert hits[0].uri.endswith("/a.md") and "periwinkle" in hits[0].text
    assert hits[0].bm25_rank == 1 and hits[0].vector_rank == 1

    os.chmod(root / "a.md", 0o600)  # ACL-only change: no parse, no embedding
    outs = run_events(pipe, root)
    assert [(o.action, o.parsed, o.embedded) for o in outs] == [("acl", 0, 0)]
    assert all(not h.uri.endswith("/a.md") for h in idx.search("periwinkle launch code", principal="everyone"))
    os.rename(root / "b.txt", root / "c.txt")
    doc_b = store.get_doc(folder_source(str(root)), "b.txt")["doc_id"]
    from ingest.sources.base import MOVE, ChangeEvent

    outs = pipe.handle(ChangeEvent(MOVE, str(root), "b.txt", "c.txt"))
    assert outs[0].action == "moved" and store.get_doc(folder_source(str(root)), "c.txt")["doc_id"] == doc_b
    (root / "c.txt").unlink()
    assert [o.action for o in run_events(pipe, root)] == ["deleted"]
    st = store.status()
    assert (st["documents"], st["by_status"]) == (1, {"indexed": 1})
    ops = [r["op"] for r in store.db.execute("SELECT op FROM outbox ORDER BY id")]
    assert ops == ["apply", "apply", "acl", "move", "delete"]


@pytest.mark.slow
def test_ingest_add_with_postgres_store_and_redis_broker(world_dir, pg_store_url, redis_server):
    root = world_dir / "docs"
    root.mkdir()
    for i in range(3):
        (root / f"n{i}.txt").write_text(f"Note {i}: the shipment of turbine blades number {i} from Siemens Energy "
                                        f"arrives in Hamburg on Monday.\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), INGEST_TORCH_THREADS="1")
    worker = subprocess.Popen([sys.executable, "-m", "ingest.cli.main", "worker", "--store", pg_store_url, "--broker",
                               redis_server.url, "--concurrency", "1"], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        r = subprocess.run([sys.executable, "-m", "ingest.cli.main", "add", str(root), "--store", pg_store_url,
                            "--broker", redis_server.url, "--no-progress", "--json"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        summary = json.loads(r.stdout[r.stdout.index("{"):])
        assert summary["outcomes"] == {"indexed": 3}
        # the worker stored text and vectors first and the entities after, on the maintenance lane;
        # `ingest add` returned once they were in
        assert summary["entities_owed"] == 0 and summary["seconds"]["indexed"] > 0
        from ingest.stores.postgres import PostgresStore

        st_pg = PostgresStore(pg_store_url)
        try:
            assert st_pg.entities_owed() == 0
            ents = [json.loads(r["entities"]) for r in st_pg.db.execute("SELECT entities FROM chunks")]
            assert len(ents) == 3 and all("GPE:hamburg" in e for e in ents), ents
        finally:
            st_pg.close()
        r = subprocess.run([sys.executable, "-m", "ingest.cli.main", "search", "turbine blades number 2", "--store",
                            pg_store_url, "--as", "everyone", "-k", "1", "--json"], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.loads(r.stdout)[0]["uri"].endswith("/n2.txt")
        r = subprocess.run([sys.executable, "-m", "ingest.cli.main", "status", "--store", pg_store_url, "--json"],
                           env=env, capture_output=True, text=True, timeout=120)
        st = json.loads(r.stdout)
        assert st["documents"] == 3 and st["store"] == pg_store_url
    finally:
        import signal

        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

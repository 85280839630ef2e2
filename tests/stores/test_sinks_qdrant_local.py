"""Qdrant local mode (``qdrant+local://``), what makes it usable beyond a few hundred chunks:

* replacing, shortening, re-ACLing and deleting documents in a populated collection evaluates no
  payload filter (local mode has no payload index: a filter is a Python scan of every point), yet
  leaves no orphan and keeps the sink equal to the primary;
* the sink's map of each document's chunks is read from the files, so a new sink object on the
  same directory (the pump reopens it after each idle release) replaces a document without
  orphans, and ``sync --check`` sees a point written by another client;
* a batch is committed to the collection's file (WAL) when ``replicate`` returns: another
  connection reads it.
"""
from __future__ import annotations

import sqlite3

import pytest

from tests.support.sink_helpers import synthetic_docs
from tests.support.ci import missing

pytestmark = pytest.mark.qdrant


@pytest.fixture
def qdrant_local():
    try:
        import qdrant_client.local.local_collection as lc
    except ImportError:
        missing("qdrant-client is not installed")
    return lc


def _url(world_dir) -> str:
    return f"qdrant+local://{world_dir}/q?collection=t"


def test_changes_scan_no_point_and_leave_no_orphan(world_dir, qdrant_local, monkeypatch):
    from acl.model import ACL
    from ingest.stores.outbox import Pump, Sink
    from ingest.stores.sqlite import SQLiteStore

    primary = SQLiteStore(world_dir / "p.db", model_id="m")
    synthetic_docs(primary, [f"d{i}" for i in range(30)], n_chunks=3)
    s = Sink("q", _url(world_dir))
    pump = Pump(primary, [s])
    scans = []
    real = qdrant_local.calculate_payload_mask

    def counted(payloads, payload_filter, *a, **kw):
        if payload_filter is not None:
            scans.append(len(payloads))
        return real(payloads, payload_filter, *a, **kw)

    monkeypatch.setattr(qdrant_local, "calculate_payload_mask", counted)
    try:
        assert pump.drain(60) == {"q": 30}
        synthetic_docs(primary, ["d1"], n_chunks=1, version="v2")  # shorter
        synthetic_docs(primary, ["d2"], n_chunks=5, version="v2")  # longer
        primary.set_acl("d3", ACL(frozenset({"user:file:u1"}), frozenset()))  # ACL-only
        primary.delete("d4")
        pump.drain(60)
        assert scans == []  # every write and read went by point id
        target = s.store
        assert [p["chunk_id"] for p, _ in target.export(["d1"])["d1"]] == ["d1-v2-0"]
        assert len(target.export(["d2"])["d2"]) == 5 and "d4" not in target.all_doc_ids()
        assert target.export(["d3"])["d3"][0][0]["allow"] == ["user:file:u1"]
        assert sum(len(v) for v in target.export(target.all_doc_ids()).values()) == 27 * 3 + 1 + 5
        assert target.diff(primary) == []
        assert scans == []
    finally:
        pump.stop()


def test_chunk_map_is_read_from_the_files(world_dir, qdrant_local):
    from qdrant_client import QdrantClient
    from qdrant_client import models as m

    from ingest.stores.sinks import open_sink
    from ingest.stores.sinks.qdrant import point_id
    from ingest.stores.sqlite import SQLiteStore

    primary = SQLiteStore(world_dir / "p.db", model_id="m")
    synthetic_docs(primary, ["a", "b"], n_chunks=4)
    first = open_sink(_url(world_dir))
    first.replicate(primary.export_docs(["a", "b"]))
    name = first.collection("m")
    first.close()

    synthetic_docs(primary, ["a"], n_chunks=2, version="v2")
    second = open_sink(_url(world_dir))  # a new object: knows nothing of what the first wrote
    second.replicate(primary.export_docs(["a"]))
    assert [p["chunk_id"] for p, _ in second.export(["a"])["a"]] == ["a-v2-0", "a-v2-1"]
    assert second.diff(primary) == []
    second.close()

    c = QdrantClient(path=f"{world_dir}/q")  # another client writes a point behind the sink's back
    p = dict(primary.export_docs(["b"])["b"]["chunks"][0])
    c.upsert(name, [m.PointStruct(id=point_id("stray"), vector=[1.0] + [0.0] * 23,
                                  payload={"doc_id": "zz", "chunk_id": "stray", "idx": 0, "model_id": p["model_id"]})])
    c.close()
    third = open_sink(_url(world_dir))
    assert third.diff(primary) == ["zz: in the sink, not in the primary"]
    third.replicate({"zz": None})  # and the sink removes it as it would any document the primary lacks
    assert third.diff(primary) == []
    third.close()


def test_a_batch_is_in_the_file_when_replicate_returns(world_dir, qdrant_local):
    from ingest.stores.sinks import open_sink
    from ingest.stores.sqlite import SQLiteStore

    primary = SQLiteStore(world_dir / "p.db", model_id="m")
    synthetic_docs(primary, [f"d{i}" for i in range(5)], n_chunks=3)
    sink = open_sink(_url(world_dir))
    try:
        sink.replicate(primary.export_docs(primary.all_doc_ids()))
        path = world_dir / "q" / "collection" / sink.collection("m") / "storage.sqlite"
        with sqlite3.connect(path) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert other.execute("SELECT count(*) FROM points").fetchone()[0] == 15
    finally:
        sink.close()

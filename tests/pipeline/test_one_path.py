"""One path for every document (issue 14): the same documents (content, permissions, labels) sent
through a folder, a WebDAV server (wsgidav, Nextcloud-like) and an S3 server (moto) come out the same:
chunk texts, labels, redaction, flags, status and ACL decisions. A DMS update older than what is
indexed is dropped as ``stale``, and a DMS backfill embeds its documents in batches."""
from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from tests.support.dms_servers import NextcloudLike, moto_server

PAN = "4111 1111 1111 1111"  # a test card number (Luhn-valid): redacted by the policy below
DOCS = {  # name -> (text, labels sidecar or None, readable by everyone)
    "plan.txt": (f"The quokka rollout plan for the quarter. Pay the vendor with card {PAN} before May.\n"
                 "Second paragraph: the quokka team meets on Tuesdays in the north building.", "team:quokka\n",
                 False),
    "faq.txt": ("Frequently asked questions about the quokka rollout, for everyone in the company.", None, True),
    "secret.txt": ("The quokka acquisition price is not public yet.", '["sensitivity:secret"]', False),
}


@pytest.fixture
def moto_s3():
    with moto_server() as (url, client):
        yield url, client


def s3_cfg(url, bucket, **extra):
    return {"type": "s3", "bucket": bucket, "endpoint_url": url, "access_key": "k", "secret_key": "s", **extra}


def policy():
    from ingest.pipeline.classify import LabelPolicy

    return LabelPolicy({"pii:payment_card": "redact", "sensitivity:secret": "skip"})


def _pipeline(store, embedder):
    from ingest.pipeline.document import Pipeline

    return Pipeline(store, embedder, policy=policy(), nlp=False)


def _state(store_path: Path, source: str) -> dict:
    """name -> what a reader of the store sees of that document: status, error code, labels, flags,
    chunk texts, and the ACL decision (readable by everyone, or only by named principals)."""
    out = {}
    with sqlite3.connect(store_path) as c:
        c.row_factory = sqlite3.Row
        for d in c.execute("SELECT * FROM documents WHERE source=?", (source,)):
            name = d["uri"].rsplit("/", 1)[-1]
            acl = json.loads(d["acl"] or "null")
            allow = set((acl or {}).get("allow") or [])
            texts = [r[0] for r in c.execute("SELECT text FROM chunks WHERE doc_id=? ORDER BY idx", (d["doc_id"],))]
            out[name] = {"status": d["status"], "error_code": d["error_code"], "labels": json.loads(d["labels"]),
                         "flags": json.loads(d["flags"]), "chunks": texts,
                         "public": "everyone" in allow, "restricted": bool(allow) and "everyone" not in allow,
                         "deny": sorted((acl or {}).get("deny") or [])}
    return out


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_folder_webdav_and_s3_documents_come_out_the_same(world_dir, store, embedder, moto_s3, monkeypatch):
    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.sources.base import folder_source
    from ingest.sources.connector import make_connector
    from ingest.sources.reconcile import reconcile

    pipeline = _pipeline(store, embedder)
    # folder: permissions are the file modes (world-readable, or the owner's only)
    folder = world_dir / "share"
    folder.mkdir()
    for name, (text, labels, public) in DOCS.items():
        _write(folder / name, text)
        os.chmod(folder / name, 0o644 if public else 0o600)
        if labels is not None:
            _write(folder / (name + ".labels"), labels)
    for ev in reconcile(store, str(folder)):
        pipeline.handle(ev)
    # WebDAV: owner alice, bob by a share, everyone by a public link (public_links = true)
    nc = world_dir / "nc"
    (nc / "Docs").mkdir(parents=True)
    for name, (text, labels, public) in DOCS.items():
        _write(nc / "Docs" / name, text)
        if labels is not None:
            _write(nc / "Docs" / (name + ".labels"), labels)
    dav = NextcloudLike(nc).start()
    try:
        for name, (_, _, public) in DOCS.items():
            dav.share(f"Docs/{name}", 0, "bob")
            if public:
                dav.share(f"Docs/{name}", 3, None)
        dav_sync = ConnectorSync(pipeline, make_connector("nc", dav.source_cfg(public_links=True)))
        rep = dav_sync.poll()
        assert rep.outcomes == {"indexed": 2, "error": 1}, rep
        # S3: bob by a grant, everyone by public-read
        url, s3 = moto_s3
        s3.create_bucket(Bucket="docs")
        owner = s3.get_bucket_acl(Bucket="docs")["Owner"]["ID"]
        for name, (text, labels, public) in DOCS.items():
            grants = {"ACL": "public-read"} if public else {"GrantFullControl": f"id={owner}",
                                                            "GrantRead": "id=bob-id"}
            s3.put_object(Bucket="docs", Key=f"Docs/{name}", Body=text.encode(), **grants)
            if labels is not None:
                s3.put_object(Bucket="docs", Key=f"Docs/{name}.labels", Body=labels.encode(), **grants)
        s3_sync = ConnectorSync(pipeline, make_connector("bkt", s3_cfg(url, "docs")))
        rep = s3_sync.poll()
        assert rep.outcomes == {"indexed": 2, "error": 1}, rep

        path = world_dir / "index.db"
        by_folder = _state(path, folder_source(str(folder)))
        by_dav, by_s3 = _state(path, "webdav:nc"), _state(path, "s3:bkt")
        assert set(by_folder) == set(DOCS), by_folder
        plan = by_folder["plan.txt"]
        assert "team:quokka" in plan["labels"] and "pii:payment_card" in plan["labels"]
        assert PAN not in " ".join(plan["chunks"]) and "quokka rollout plan" in plan["chunks"][0]  # redacted
        assert by_folder["secret.txt"]["error_code"] == "policy-skip" and by_folder["secret.txt"]["chunks"] == []
        assert by_folder["faq.txt"]["public"] and plan["restricted"]
        assert by_dav == by_folder, (by_dav, by_folder)
        assert by_s3 == by_folder, (by_s3, by_folder)

        # a sidecar edit re-labels its document on the DMS as in the folder
        s3.put_object(Bucket="docs", Key="Docs/faq.txt.labels", Body=b"team:all\n", ACL="public-read")
        rep = s3_sync.poll()
        assert rep.outcomes == {"indexed": 1}, rep
        assert _state(path, "s3:bkt")["faq.txt"]["labels"][:1] == ["team:all"]

        # an out-of-order update older than the indexed state is dropped as stale
        from ingest.sources.base import UPSERT, ChangeEvent

        row = store.get_doc("webdav:nc", next(iter(store.docs_for_source("webdav:nc"))))
        assert row["source_seq"], row
        old = ChangeEvent(UPSERT, "webdav:nc", row["external_id"], seq=row["source_seq"] - 10**9)
        out = dav_sync.apply(old)
        assert out.action == "stale", out
        assert store.get_doc("webdav:nc", row["external_id"])["content_version"] == row["content_version"]

        # a DMS item's event takes the entry every change task takes (ingest.pipeline.changes), as a
        # folder's does: the connector comes from [sources.nc] of the config
        from ingest.pipeline import changes

        monkeypatch.setattr("ingest.config.load",
                            lambda *a, **k: {"sources": {"nc": dav.source_cfg(public_links=True)}})
        assert [o.action for o in changes.handle(pipeline, old)] == ["stale"]
        same = ChangeEvent(UPSERT, "webdav:nc", row["external_id"])
        assert [o.action for o in changes.handle(pipeline, same)] == ["skipped"]
        assert [o.action for o in changes.handle_many(pipeline, [same])] == ["skipped"]
    finally:
        dav.stop()


def test_dms_backfill_embeds_in_batches(world_dir, store, embedder, moto_s3):
    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.sources.connector import make_connector

    url, s3 = moto_s3
    s3.create_bucket(Bucket="backfill")
    n = 12
    stamp = time.time_ns()
    for i in range(n):
        s3.put_object(Bucket="backfill", Key=f"d{i:02d}.txt", ACL="public-read",
                      Body=f"Backfill document {i} ({stamp}) about the harbour crane number {i * 7919}.".encode())
    pipeline = _pipeline(store, embedder)
    calls = []
    encode = embedder.encode

    def counted(texts, *a, **kw):
        calls.append(len(texts))
        return encode(texts, *a, **kw)

    embedder.encode = counted
    try:
        rep = ConnectorSync(pipeline, make_connector("bf", s3_cfg(url, "backfill"))).poll()
    finally:
        del embedder.encode
    assert rep.outcomes == {"indexed": n}, rep
    # one embedding call for the whole backfill (one per document before: n calls)
    assert len(calls) == 1 and calls[0] == n, calls
    with sqlite3.connect(world_dir / "index.db") as c:
        (traced,) = c.execute("SELECT COUNT(*) FROM outcomes WHERE source='s3:bf' AND action='indexed'").fetchone()
    assert traced == n

"""WebDAV (wsgidav + Nextcloud properties + OCS shares) and S3 (moto server) through the real pipeline:
create, edit, move, delete and permission changes reach search with the right ACL by polling; pruning;
the cursor survives a restart without a re-crawl."""
from __future__ import annotations

import os
import shutil
import sys
import time

import pytest

from tests.support.dms_servers import NextcloudLike, free_port
from acl.model import Principal  # noqa: E402


def who(user, ns, *groups):
    return Principal(user=user, groups=groups, namespace=ns)


def find(store, query, principal):
    from ingest.search.index import Index

    return {h.uri for h in Index(store).search(query, principal=principal, k=20, mode="bm25", audit=False)}


@pytest.fixture
def store(either_store):
    """The connectors run against both stores (cursors, synced groups, moves, ACL changes)."""
    return either_store


@pytest.fixture
def dav(world_dir):
    root = world_dir / "nc"
    (root / "Projects").mkdir(parents=True)
    s = NextcloudLike(root).start()
    yield s
    s.stop()


def _sync(pipeline, cfg, name="nc"):
    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.sources.connector import make_connector

    return ConnectorSync(pipeline, make_connector(name, cfg))


def write(p, text):
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    t = time.time_ns()
    os.utime(p, ns=(t, t))


def test_webdav_lifecycle_by_polling(dav, pipeline, store):
    root = dav.root
    from pathlib import Path

    doc = Path(root) / "Projects" / "plan.txt"
    write(doc, "The zanzibar rollout plan for the quarter.")
    write(Path(root) / "private.txt", "Salary table for quokka department.")
    dav.share("Projects", 0, "bob")
    dav.share("Projects", 1, "eng")
    sync = _sync(pipeline, dav.source_cfg())
    rep = sync.poll()
    assert rep.resync and rep.downloads == 2 and rep.outcomes == {"indexed": 2}
    bob, carol, eve, alice = who("bob", "nc"), who("carol", "nc"), who("eve", "nc", "eng"), who("alice", "nc")
    assert find(store, "zanzibar", bob) == {dav.dav_url() + "/Projects/plan.txt"}
    assert find(store, "zanzibar", eve) == {dav.dav_url() + "/Projects/plan.txt"}  # via group share
    assert find(store, "zanzibar", carol) == set()
    assert find(store, "quokka", bob) == set() and len(find(store, "quokka", alice)) == 1  # owner only

    # edit
    write(doc, "The zanzibar rollout plan, revised: now with pangolin milestones.")
    rep = sync.poll()
    assert rep.outcomes == {"indexed": 1} and rep.downloads == 1
    assert len(find(store, "pangolin", bob)) == 1

    # move: metadata only (same doc id, no download, no parse, no embedding)
    row = store.get_doc(sync.source, str(os.stat(doc).st_ino))
    (Path(root) / "Archive").mkdir()
    shutil.move(doc, Path(root) / "Archive" / "plan-old.txt")
    before = store.counters()
    rep = sync.poll()
    assert rep.outcomes == {"moved": 1} and rep.downloads == 0
    after = store.counters(before["last_id"])
    assert after["parsed"] == 0 and after["embedded"] == 0
    moved = store.get_doc(sync.source, row["external_id"])
    assert moved["doc_id"] == row["doc_id"] and moved["uri"] == dav.dav_url() + "/Archive/plan-old.txt"
    # the move left the shared folder: bob and the eng group lose it; the owner keeps it
    assert find(store, "pangolin", bob) == set() and find(store, "pangolin", eve) == set()
    assert find(store, "pangolin", alice) == {dav.dav_url() + "/Archive/plan-old.txt"}

    # permission-only change: share the archive with bob -> bob sees it, no re-embedding
    dav.share("Archive/plan-old.txt", 0, "bob")
    before = store.counters()
    rep = sync.poll()
    assert rep.outcomes == {"acl": 1} and rep.downloads == 0
    assert store.counters(before["last_id"])["embedded"] == 0
    assert len(find(store, "pangolin", bob)) == 1
    # a user who loses access stops seeing it after the next sync, no re-embedding
    dav.unshare("Archive/plan-old.txt", "bob")
    before = store.counters()
    assert sync.poll().outcomes == {"acl": 1}
    c = store.counters(before["last_id"])
    assert c["embedded"] == 0 and c["parsed"] == 0
    assert find(store, "pangolin", bob) == set()

    # delete
    os.remove(Path(root) / "Archive" / "plan-old.txt")
    assert sync.poll().outcomes == {"deleted": 1}
    assert find(store, "pangolin", alice) == set()
    assert store.get_doc(sync.source, row["external_id"]) is None


def test_webdav_cursor_survives_restart_without_recrawl(dav, pipeline, store, world_dir):
    from pathlib import Path

    from ingest.pipeline.document import Pipeline

    for i in range(5):
        write(Path(dav.root) / "Projects" / f"n{i}.txt", f"note number {i} about walrus {i}")
    dav.share("", 1, "staff")
    assert _sync(pipeline, dav.source_cfg()).poll().downloads == 5
    store.close()
    # a restart: new store handle, new pipeline, new connector
    store2 = store.reopen()
    p2 = Pipeline(store2, pipeline.embedder)
    gets = dav.requests["GET"]
    rep = _sync(p2, dav.source_cfg()).poll()
    assert not rep.resync and rep.events == 0 and rep.downloads == 0
    assert dav.requests["GET"] == gets  # no file was fetched again
    write(Path(dav.root) / "Projects" / "n3.txt", "note number 3 now about narwhal")
    rep = _sync(p2, dav.source_cfg()).poll()
    assert rep.downloads == 1 and dav.requests["GET"] == gets + 1
    assert len(find(store2, "narwhal", who("x", "nc", "staff"))) == 1
    store2.close()


def test_webdav_prune_and_failed_listing_prunes_nothing(dav, pipeline, store):
    from pathlib import Path

    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.sources.connector import ListingError, make_connector

    write(Path(dav.root) / "Projects" / "a.txt", "alpha ocelot")
    write(Path(dav.root) / "Projects" / "b.txt", "beta ocelot")
    dav.share("", 1, "staff")
    conn = make_connector("nc", dav.source_cfg())
    sync = ConnectorSync(pipeline, conn)
    sync.poll()
    assert len(store.docs_for_source(sync.source)) == 2
    os.remove(Path(dav.root) / "Projects" / "b.txt")
    dav.fail = True
    with pytest.raises(ListingError, match="nothing pruned"):
        sync.prune()
    assert len(store.docs_for_source(sync.source)) == 2
    dav.fail = False
    assert sync.prune() == 1  # found by the id listing alone (no change feed involved)
    assert find(store, "ocelot", who("x", "nc", "staff")) == {dav.dav_url() + "/Projects/a.txt"}


def test_webdav_credentials_and_folder_access(dav):
    from ingest.sources.connector import ConnectorError, make_connector

    bad = make_connector("nc", {**dav.source_cfg(), "password": "wrong"})
    with pytest.raises(ConnectorError, match="HTTP 401"):
        bad.changes(None)
    other = make_connector("nc", {**dav.source_cfg(), "url": dav.url + "/remote.php/dav/files/bob"})
    with pytest.raises(ConnectorError, match="HTTP 401"):  # crawler has no access to bob's folder
        other.changes(None)
    with pytest.raises(ValueError, match="webdav needs url"):
        make_connector("nc", {"type": "webdav"})


def test_webdav_without_ocs_uses_configured_acl_or_fails_closed(world_dir, pipeline, store):
    from pathlib import Path

    root = world_dir / "plain"
    root.mkdir()
    write(Path(root) / "x.txt", "kinkajou report")
    s = NextcloudLike(root, ocs=False).start()
    try:
        _sync(pipeline, s.source_cfg(), "p1").poll()
        row = next(iter(store.docs_for_source("webdav:p1").values()))
        assert store.get_doc_by_id(row["doc_id"])["acl"] and find(store, "kinkajou", who("a", "p1", "g")) == set()
        assert "acl-unknown" in store.get_doc_by_id(row["doc_id"])["flags"]
        _sync(pipeline, s.source_cfg(acl=["group:g"]), "p2").poll()
        assert len(find(store, "kinkajou", who("a", "p2", "g"))) == 1
    finally:
        s.stop()


# -- S3 (moto in server mode) ---------------------------------------------------------------------------
@pytest.fixture
def moto_s3():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    url = f"http://127.0.0.1:{port}"
    import urllib.request

    # moto keeps its buckets in this process across server instances: every test starts from none
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=10).close()
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                          aws_secret_access_key="s")
    yield url, client
    server.stop()


def s3_cfg(url, bucket, **extra):
    return {"type": "s3", "bucket": bucket, "endpoint_url": url, "access_key": "k", "secret_key": "s", **extra}


@pytest.mark.parametrize("versioned", [False, True])
def test_s3_lifecycle_by_polling(moto_s3, pipeline, store, versioned):
    url, s3 = moto_s3
    s3.create_bucket(Bucket="docs")
    if versioned:
        s3.put_bucket_versioning(Bucket="docs", VersioningConfiguration={"Status": "Enabled"})
    owner = s3.get_bucket_acl(Bucket="docs")["Owner"]["ID"]
    s3.put_object(Bucket="docs", Key="team/plan.txt", Body=b"axolotl launch plan")
    s3.put_object_acl(Bucket="docs", Key="team/plan.txt", GrantFullControl=f"id={owner}", GrantRead="id=bob-id")
    s3.put_object(Bucket="docs", Key="public/faq.txt", Body=b"axolotl faq for all", ACL="public-read")
    sync = _sync(pipeline, s3_cfg(url, "docs"), "bkt")
    rep = sync.poll()
    assert rep.outcomes == {"indexed": 2}
    bob, carol = who("bob-id", "bkt"), who("carol-id", "bkt")
    assert find(store, "axolotl", bob) == {f"{url}/docs/team/plan.txt", f"{url}/docs/public/faq.txt"}
    assert find(store, "axolotl", carol) == {f"{url}/docs/public/faq.txt"}
    # edit
    s3.put_object(Bucket="docs", Key="team/plan.txt", Body=b"axolotl launch plan with capybara",
                  GrantFullControl=f"id={owner}", GrantRead="id=bob-id")
    rep = sync.poll()
    assert rep.outcomes == {"indexed": 1} and rep.downloads == 1
    assert len(find(store, "capybara", bob)) == 1
    # permission-only: bob loses access, carol gains it; no download, no embedding
    before = store.counters()
    s3.put_object_acl(Bucket="docs", Key="team/plan.txt", GrantFullControl=f"id={owner}", GrantRead="id=carol-id")
    rep = sync.poll()
    assert rep.outcomes == {"acl": 1} and rep.downloads == 0
    assert store.counters(before["last_id"])["embedded"] == 0
    assert find(store, "capybara", bob) == set() and len(find(store, "capybara", carol)) == 1
    # move (copy + delete: S3 has no item ids): the new key is indexed from the embedding cache
    s3.copy_object(Bucket="docs", Key="archive/plan.txt", CopySource={"Bucket": "docs", "Key": "team/plan.txt"})
    s3.put_object_acl(Bucket="docs", Key="archive/plan.txt", GrantRead="id=carol-id")
    s3.delete_object(Bucket="docs", Key="team/plan.txt")
    before = store.counters()
    rep = sync.poll()
    assert rep.outcomes == {"indexed": 1, "deleted": 1}
    assert store.counters(before["last_id"])["embedded"] == 0
    assert find(store, "capybara", carol) == {f"{url}/docs/archive/plan.txt"}
    # delete (a delete marker when versioned)
    s3.delete_object(Bucket="docs", Key="archive/plan.txt")
    if versioned:
        markers = s3.list_object_versions(Bucket="docs", Prefix="archive/").get("DeleteMarkers", [])
        assert [m["IsLatest"] for m in markers] == [True]  # the key still has versions below its marker
    assert sync.poll().outcomes == {"deleted": 1}
    assert find(store, "capybara", carol) == set()
    # restart: no fetch at all
    from ingest.pipeline.document import Pipeline

    rep = _sync(Pipeline(store, pipeline.embedder), s3_cfg(url, "docs"), "bkt").poll()
    assert rep.events == 0 and rep.downloads == 0


def test_s3_prune_mapping_acl_and_errors(moto_s3, pipeline, store):
    from ingest.sources.connector import ConnectorError, ListingError, make_connector

    url, s3 = moto_s3
    s3.create_bucket(Bucket="mapped")
    s3.put_object(Bucket="mapped", Key="hr/a.txt", Body=b"gecko payroll")
    s3.put_object(Bucket="mapped", Key="eng/b.txt", Body=b"gecko design")
    cfg = s3_cfg(url, "mapped", acl_mode="mapping", acl_map={"hr/": ["group:hr"], "": ["group:all"]})
    sync = _sync(pipeline, cfg, "map")
    sync.poll()
    assert find(store, "gecko", who("u", "map", "hr")) == {f"{url}/mapped/hr/a.txt"}
    assert find(store, "gecko", who("u", "map", "all")) == {f"{url}/mapped/eng/b.txt"}
    s3.delete_object(Bucket="mapped", Key="eng/b.txt")
    bad = make_connector("map", {**cfg, "bucket": "nope"})
    with pytest.raises(ListingError, match="NoSuchBucket"):
        bad.list_ids()
    assert sync.prune() == 1
    assert find(store, "gecko", who("u", "map", "all")) == set()
    with pytest.raises(ConnectorError, match="NoSuchBucket"):
        bad.changes(None)


# -- the folder source behind the same contract; the CLI ------------------------------------------------------
def test_folder_connector_contract(world_dir, pipeline, store):
    from ingest.pipeline.connector_sync import ConnectorSync
    from ingest.pipeline.document import folder_source
    from ingest.sources.connector import ListingError, make_connector

    root = world_dir / "share"
    root.mkdir()
    os.chmod(root, 0o755)
    (root / "a.txt").write_text("folder tamarin notes")
    (root / "b.txt").write_text("folder tamarin list")
    for p in root.iterdir():
        os.chmod(p, 0o644)
    conn = make_connector("f", {"type": "folder", "path": str(root)})
    assert conn.source == folder_source(root)  # one registry with the watcher
    sync = ConnectorSync(pipeline, conn)
    assert sync.poll().outcomes == {"indexed": 2}
    os.chmod(root / "b.txt", 0o600)  # permission-only: everyone loses it
    before = store.counters()
    assert sync.poll().outcomes == {"acl": 1}
    assert store.counters(before["last_id"])["embedded"] == 0
    assert len(find(store, "tamarin", "everyone")) == 1
    os.remove(root / "a.txt")
    assert sync.poll().outcomes == {"deleted": 1}
    shutil.rmtree(root)
    with pytest.raises(ListingError, match="nothing pruned"):
        sync.prune()
    assert len(store.docs_for_source(conn.source)) == 1


def test_cli_poll_persists_cursor_across_processes(dav, world_dir):
    import json as _json
    import subprocess
    from pathlib import Path

    write(Path(dav.root) / "Projects" / "c.txt", "cli jerboa text")
    dav.share("", 1, "staff")
    cfg = world_dir / "cfg.toml"
    cfg.write_text(f'[sources.nc]\ntype = "webdav"\nurl = "{dav.dav_url()}"\nocs_url = "{dav.url + dav.OCS}"\n'
                   f'user = "crawler"\npassword = "env:NC_PW"\n')
    env = dict(os.environ, NC_PW="crawlpw")
    cmd = [sys.executable, "-m", "ingest.cli.main", "poll", "nc", "--store", str(world_dir / "cli.db"), "--config",
           str(cfg), "--json", "--inline"]
    r1 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr
    assert _json.loads(r1.stdout)["outcomes"] == {"indexed": 1}
    gets = dav.requests["GET"]
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    rep = _json.loads(r2.stdout)
    assert rep["events"] == 0 and not rep["resync"] and dav.requests["GET"] == gets
    assert "crawlpw" not in r1.stderr + r2.stderr
    r3 = subprocess.run(cmd[:4] + ["nope"] + cmd[5:], env=env, capture_output=True, text=True, timeout=60)
    assert r3.returncode == 2 and "no source 'nope'" in r3.stderr
    # without --inline it queues the pass through the producer, as a webhook does (nothing runs here)
    from tests.support.queue_helpers import queued

    broker = f"sqla+sqlite:///{world_dir}/cli-broker.sqlite"
    benv = dict(env, INGEST_BROKER=broker)
    r4 = subprocess.run(cmd[:-1], env=benv, capture_output=True, text=True, timeout=120)
    assert r4.returncode == 0, r4.stderr
    assert _json.loads(r4.stdout) == {"source": "nc", "queued": True, "lane": "interactive"}
    assert queued(broker) == [("ingest.poll", [str(world_dir / "cli.db"), "nc"])]
    assert dav.requests["GET"] == gets  # nothing fetched: the worker does that
    r5 = subprocess.run(cmd[:4] + ["nope"] + cmd[5:-1], env=benv, capture_output=True, text=True, timeout=60)
    assert r5.returncode == 2 and "no source 'nope'" in r5.stderr and len(queued(broker)) == 1
